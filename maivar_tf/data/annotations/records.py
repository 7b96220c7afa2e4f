"""Annotation records and stable example ids, shared by every annotation reader.

A :class:`VideoRecord` is one video (or one clip of an untrimmed video) with its label and
split; :class:`Annotations` is a dataset's class list and its records. MAiVAR (Shaikh et al.
2024) trains and evaluates on UCF51 and Kinetics-Sounds; every reader of this package returns
the same two types, so the Beam job never knows which dataset it reads.

Example ids are derived from the video's relative path (and its time range), never from the
order of lines, so they are stable across runs, machines and split files
(:func:`make_example_id`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

__all__ = ["SPLITS", "Annotations", "VideoRecord", "make_example_id"]

#: The splits a record can belong to.
SPLITS = ("train", "test", "val")


@dataclass(frozen=True)
class VideoRecord:
    """One video of an annotation file.

    Args:
        path: the video's path relative to ``DataConfig.video_root`` (absolute paths allowed).
        label_index: index into ``Annotations.class_names``; -1 when the label is not a class.
        label_string: the label as named by the class list (or as written, when unknown).
        split: ``train``, ``test`` or ``val``.
        start_s: clip start in seconds (untrimmed Kinetics videos); 0 = start of file.
        end_s: clip end in seconds; 0 = end of file.
        example_id: stable unique id derived from the path (+ time range).
        spans: the annotated action spans ``(start_s, end_s)`` in seconds from the file start
            (untrimmed videos: AVE's ``Annotations.txt``, the untrimmed embedded dataset), each
            of the record's label; empty for trimmed videos.
    """

    path: str
    label_index: int
    label_string: str
    split: str
    start_s: float = 0.0
    end_s: float = 0.0
    example_id: str = ""
    spans: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        # tuples of floats whatever came in (lists after a round trip through a Beam coder)
        object.__setattr__(self, "spans", tuple((float(s), float(e)) for s, e in self.spans))


@dataclass(frozen=True)
class Annotations:
    """A dataset's class list and its videos.

    Args:
        class_names: class names; a record's ``label_index`` indexes this tuple.
        records: one record per video.
    """

    class_names: tuple[str, ...]
    records: tuple[VideoRecord, ...]

    def split(self, name: str) -> tuple[VideoRecord, ...]:
        """The records of one split (``train``, ``test`` or ``val``)."""
        return tuple(r for r in self.records if r.split == name)


def _fmt_seconds(x: float) -> str:
    return f"{float(x):.3f}".rstrip("0").rstrip(".")


def make_example_id(path: str, start_s: float = 0.0, end_s: float = 0.0) -> str:
    """A stable, readable example id: the normalised relative path plus the time range.

    The id is ``"Class/v_Class_g08_c01.avi"`` for a whole file and
    ``"train/label/xyz_000010_000020.mp4#t=10,20"`` (a Media Fragments time range) for a clip.

    Args:
        path: the video path as written in the annotations (relative to the video root).
        start_s: clip start in seconds (0 = start).
        end_s: clip end in seconds (0 = end).

    Returns:
        The id; equal inputs always give equal ids, different paths or ranges different ones.
    """
    p = str(path).replace("\\", "/")
    while p.startswith("./"):
        p = p[2:]
    p = str(PurePosixPath(p)) if p else p
    if not p or p == ".":
        raise ValueError(f"make_example_id: empty path {path!r}")
    if start_s or end_s:
        return f"{p}#t={_fmt_seconds(start_s)},{_fmt_seconds(end_s)}"
    return p
