"""Shared pytest fixtures.

The six real clips with sound in ``../shared/testdata/clips`` (relative to the repository
root) exercise real containers and codecs: MP4/H.264/AAC at 16-44.1 kHz mono and stereo,
Matroska/H.264/Opus 48 kHz and AVI/MPEG-4/MP3. Tests read them in place; they are never
copied into the repository.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
CLIPS_DIR = REPO_ROOT / ".." / "shared" / "testdata" / "clips"
#: The six test clips (see ``SOURCES.tsv`` beside them for origin and codecs).
CLIP_NAMES = (
    "ave_0lFf-HP86Q0_female_speech.mp4",
    "kinetics_flipping_pancake_decord.mkv",
    "ucf101_ApplyEyeMakeup_mmaction2_test.avi",
    "vas_baby_01951.mp4",
    "vas_dog_02677.mp4",
    "veba_-2RPPODqLy4_guitar.mp4",
)


@pytest.fixture(scope="session")
def clips_dir() -> Path:
    """``../shared/testdata/clips``, resolved; fails if it is missing."""
    path = CLIPS_DIR.resolve()
    assert path.is_dir(), f"test clips not found at {path} (expected ../shared/testdata/clips)"
    return path


@pytest.fixture(scope="session")
def clip_paths(clips_dir: Path) -> list[Path]:
    """The six real test clips, in name order; fails if any is missing."""
    paths = [clips_dir / name for name in CLIP_NAMES]
    missing = [p.name for p in paths if not p.is_file()]
    assert not missing, f"missing test clips in {clips_dir}: {missing}"
    return paths
