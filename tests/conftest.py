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

from maivar_tf.console import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()  # the test log starts without TensorFlow's native banner

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


def write_test_media(path: Path, *, seconds: float = 1.0, fps: int = 10, width: int = 64,
                     height: int = 48, video: bool = True, audio: bool = True,
                     audio_rate: int = 22050, audio_channels: int = 1,
                     audio_codec: str = "aac", tone_hz: float = 440.0,
                     num_frames: int | None = None, options: dict | None = None) -> Path:
    """Writes a small synthetic media file with PyAV (moving gradient video, sine audio).

    Args:
        path: the output file; the extension picks the container (``.mp4``, ``.mkv``, ...).
        seconds: audio length (and video length unless ``num_frames`` is given).
        fps: video frame rate.
        width: frame width.
        height: frame height.
        video: write an MPEG-4 Part 2 video stream.
        audio: write an audio stream.
        audio_rate: audio sample rate.
        audio_channels: 1 (mono) or 2 (stereo: the right channel is a tone at 1.5x).
        audio_codec: ``aac``, ``pcm_s16le``, ``libopus``, ``libmp3lame``, ...
        tone_hz: the left/mono channel's sine frequency.
        num_frames: video frames to write (default ``seconds * fps``).
        options: container (muxer) options, e.g. ``{"movflags": "faststart"}``.

    Returns:
        ``path``.
    """
    import av
    import numpy as np

    with av.open(str(path), mode="w", options=options or {}) as out:
        vs = aus = None
        if video:
            vs = out.add_stream("mpeg4", rate=fps)
            vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        if audio:
            layout = "mono" if audio_channels == 1 else "stereo"
            aus = out.add_stream(audio_codec, rate=audio_rate, layout=layout)
        if vs is not None:
            n = num_frames if num_frames is not None else int(round(seconds * fps))
            xx = np.arange(width)[None, :, None]
            for i in range(n):
                img = ((xx * 4 + i * 16 + np.arange(3) * 60) % 256).astype(np.uint8)
                img = np.broadcast_to(img, (height, width, 3)).copy()
                for packet in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(packet)
            for packet in vs.encode(None):
                out.mux(packet)
        if aus is not None:
            total = int(round(seconds * audio_rate))
            t = np.arange(total) / audio_rate
            chans = [0.5 * np.sin(2 * np.pi * tone_hz * t)]
            if audio_channels == 2:
                chans.append(0.25 * np.sin(2 * np.pi * 1.5 * tone_hz * t))
            samples = np.stack(chans).astype(np.float32)
            fmt = aus.codec_context.format.name
            step = aus.codec_context.frame_size or 1024
            for start in range(0, total, step):
                chunk = samples[:, start:start + step]
                planar = fmt.endswith("p")
                ints = {"s16": np.int16, "s32": np.int32}.get(fmt.rstrip("p"))
                arr = chunk if planar else chunk.T.reshape(1, -1)
                if ints is not None:
                    arr = arr * float(np.iinfo(ints).max)
                arr = np.ascontiguousarray(arr.astype(ints or np.float32))
                frame = av.AudioFrame.from_ndarray(arr, format=fmt, layout=layout)
                frame.sample_rate = audio_rate
                frame.pts = start
                for packet in aus.encode(frame):
                    out.mux(packet)
            for packet in aus.encode(None):
                out.mux(packet)
    return path


@pytest.fixture
def media_factory(tmp_path: Path):
    """``media_factory(name, **kwargs)`` writes :func:`write_test_media` into ``tmp_path``."""

    def make(name: str, **kwargs) -> Path:
        return write_test_media(tmp_path / name, **kwargs)

    return make
