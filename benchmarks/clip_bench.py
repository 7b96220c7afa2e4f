"""What the per-clip benchmarks share: the real clips they read and the TF thread setting."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The real clips with sound the project reads (never copied into it).
DEFAULT_CLIPS = REPO_ROOT / ".." / "shared" / "testdata" / "clips"
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".webm", ".mov")


def video_files(folder: str | Path) -> list[Path]:
    """The video files of ``folder``, sorted."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)


def add_threads_flag(parser) -> None:
    """``--threads N``: TF intra/inter-op threads (0: TF's default, all cores)."""
    parser.add_argument("--threads", type=int, default=0,
                        help="TF intra/inter-op threads (0: TF's default, all cores)")


def set_threads(threads: int) -> None:
    """Applies ``--threads`` (imports TensorFlow)."""
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
