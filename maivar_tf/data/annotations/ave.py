"""AVE annotation reader (Tian et al., ECCV 2018): ``Annotations.txt`` and its split files.

The Audio-Visual Event dataset (``AVE_Dataset/``) annotates each untrimmed 10-s video with
the span where its event is both audible and visible. Its files share one line layout::

    Category&VideoID&Quality&StartTime&EndTime
    Church bell&RUhOCu3LNXM&good&0&10
    Female speech, woman speaking&0lFf-HP86Q0&good&5&10

``Annotations.txt`` lists every video (it starts with the header line above);
``trainSet.txt``, ``testSet.txt`` and ``valSet.txt`` list which videos are in which split
(a header line is accepted in them too). Videos are ``<video_root>/<VideoID>.mp4``. AVE's
boundaries are whole seconds; fractional ones (the untrimmed embedded dataset writes
``2.40``) are read as well. A video may have several lines (spans) of one category.

The 28 categories are the sorted unique categories of ``Annotations.txt`` unless a class
list is given; a record whose category is outside it gets ``label_index=-1`` (the Beam job
dead-letters it as ``unknown_label``). Malformed lines raise :class:`ValueError` naming the
file and the line number.

Example:
    >>> ann = read_ave("/datasets/AVE_Dataset", "/datasets/AVE_Dataset/AVE")
    >>> ann.records[0].path, ann.records[0].spans
    ('RUhOCu3LNXM.mp4', ((0.0, 10.0),))
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from maivar_tf.data.annotations.records import Annotations, VideoRecord, make_example_id

__all__ = ["AVE_HEADER", "AVE_SPLIT_FILES", "AnnotationLine", "attach_spans", "read_ave",
           "read_ave_lines"]

#: The header line of AVE's ``Annotations.txt``.
AVE_HEADER = "Category&VideoID&Quality&StartTime&EndTime"
#: Split name -> AVE split file (``valSet.txt`` may be absent).
AVE_SPLIT_FILES = {"train": "trainSet.txt", "test": "testSet.txt", "val": "valSet.txt"}
_ANNOTATIONS = "Annotations.txt"


@dataclass(frozen=True)
class AnnotationLine:
    """One parsed line of an AVE-layout file.

    Args:
        where: ``<file>:<line number>``, for messages.
        category: the event's class name.
        video_id: the video's id (a path without extension for the embedded dataset).
        quality: AVE's quality field (``good``).
        start_s, end_s: the span in seconds from the file start (``0 <= start < end``).
    """

    where: str
    category: str
    video_id: str
    quality: str
    start_s: float
    end_s: float


def _seconds(text: str, where: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: {name} {text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}: {name} {text!r} must be a finite number >= 0")
    return value


def read_ave_lines(path: str | os.PathLike) -> list[AnnotationLine]:
    """Parses one AVE-layout file (``Category&VideoID&Quality&StartTime&EndTime`` lines).

    A first line equal to :data:`AVE_HEADER` is skipped; blank lines are skipped; CRLF and a
    UTF-8 BOM are tolerated.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: naming file and line: not five ``&``-separated fields, an empty category
            or video id, a time that is not a number >= 0, or an end not after the start.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from e
    out = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or (lineno == 1 and line.lower() == AVE_HEADER.lower()):
            continue
        where = f"{path}:{lineno}"
        parts = [p.strip() for p in line.split("&")]
        if len(parts) != 5:
            raise ValueError(f"{where}: expected 5 '&'-separated fields "
                             f"({AVE_HEADER}), got {len(parts)}: {line!r}")
        category, video_id, quality, start, end = parts
        if not category or not video_id:
            raise ValueError(f"{where}: empty Category or VideoID in {line!r}")
        start_s = _seconds(start, where, "StartTime")
        end_s = _seconds(end, where, "EndTime")
        if end_s <= start_s:
            raise ValueError(f"{where}: EndTime {end} is not after StartTime {start}")
        out.append(AnnotationLine(where, category, video_id, quality, start_s, end_s))
    return out


def _spans_by_video(lines: Sequence[AnnotationLine]
                    ) -> dict[str, tuple[AnnotationLine, tuple[tuple[float, float], ...]]]:
    """VideoID -> (its first line, its spans in time order); one category per video."""
    by_video: dict[str, list[AnnotationLine]] = {}
    for ln in lines:
        first = by_video.setdefault(ln.video_id, [ln])[0]
        if first is not ln:
            if ln.category != first.category:
                raise ValueError(f"{ln.where}: video {ln.video_id!r} has category "
                                 f"{ln.category!r} here but {first.category!r} at {first.where}")
            by_video[ln.video_id].append(ln)
    return {vid: (group[0], tuple(sorted((g.start_s, g.end_s) for g in group)))
            for vid, group in by_video.items()}


def _annotation_file(annotation_dir: str | os.PathLike) -> Path:
    p = Path(annotation_dir)
    path = p if p.name == _ANNOTATIONS and p.is_file() else p / _ANNOTATIONS
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; the AVE layout needs {_ANNOTATIONS}, "
                                f"trainSet.txt and testSet.txt in {p}")
    return path


def read_ave(annotation_dir: str | os.PathLike, video_root: str | os.PathLike | None = None,
             classes: Sequence[str] | None = None) -> Annotations:
    """Reads AVE's ``Annotations.txt`` and split files into records with spans.

    Args:
        annotation_dir: the folder holding ``Annotations.txt`` and the split files (or the
            ``Annotations.txt`` path itself).
        video_root: unused for the paths (records name ``<VideoID>.mp4`` relative to it); kept
            for symmetry with the other readers.
        classes: the class list (``data.class_list``); None: the sorted unique categories of
            ``Annotations.txt``.

    Returns:
        One record per split line (train, then test, then val), ``path="<VideoID>.mp4"``,
        with every span ``Annotations.txt`` gives its video.

    Raises:
        FileNotFoundError: ``Annotations.txt``, ``trainSet.txt`` or ``testSet.txt`` missing.
        ValueError: naming file and line: a malformed line, a split line whose video is not
            in ``Annotations.txt`` or whose category disagrees with it, a video in two splits.
    """
    del video_root
    ann_path = _annotation_file(annotation_dir)
    folder = ann_path.parent
    spans = _spans_by_video(read_ave_lines(ann_path))
    class_names = (tuple(classes) if classes is not None
                   else tuple(sorted({first.category for first, _ in spans.values()})))
    index = {c: i for i, c in enumerate(class_names)}
    records: list[VideoRecord] = []
    seen: dict[str, str] = {}
    for split, fname in AVE_SPLIT_FILES.items():
        path = folder / fname
        if not path.is_file():
            if split == "val":
                continue
            raise FileNotFoundError(f"{path}: missing; the AVE layout needs {fname} next to "
                                    f"{_ANNOTATIONS}")
        for ln in read_ave_lines(path):
            if ln.video_id not in spans:
                raise ValueError(f"{ln.where}: video {ln.video_id!r} is not in {ann_path}")
            first, video_spans = spans[ln.video_id]
            if ln.category != first.category:
                raise ValueError(f"{ln.where}: category {ln.category!r} disagrees with "
                                 f"{first.category!r} at {first.where}")
            if ln.video_id in seen:
                if seen[ln.video_id].startswith(str(path) + ":"):
                    continue  # a further span line of the same video in the same split
                raise ValueError(f"{ln.where}: video {ln.video_id!r} is already in another "
                                 f"split ({seen[ln.video_id]})")
            seen[ln.video_id] = ln.where
            rel = f"{ln.video_id}.mp4"
            records.append(VideoRecord(path=rel, label_index=index.get(ln.category, -1),
                                       label_string=ln.category, split=split,
                                       example_id=make_example_id(rel), spans=video_spans))
    return Annotations(class_names=class_names, records=tuple(records))


def attach_spans(annotations: Annotations, path: str | os.PathLike) -> Annotations:
    """Gives every record the spans an AVE-layout ``Annotations.txt`` holds for its video.

    The join key is the record's path without its extension (the untrimmed embedded dataset's
    VideoID, e.g. ``Slide_Chime/v_Slide_Chime_g01_c01``).

    Raises:
        ValueError: a malformed line (file and line named), a category that disagrees with the
            record's label, or a record the file has no span for.
    """
    spans = _spans_by_video(read_ave_lines(path))
    out = []
    for r in annotations.records:
        key = str(PurePosixPath(r.path).with_suffix(""))
        if key not in spans:
            raise ValueError(f"{path}: no span for video {key!r} ({r.split} list)")
        first, video_spans = spans[key]
        if r.label_index >= 0 and first.category.lower() != r.label_string.lower():
            raise ValueError(f"{first.where}: category {first.category!r} disagrees with the "
                             f"video's class {r.label_string!r}")
        out.append(dataclasses.replace(r, spans=video_spans))
    return Annotations(class_names=annotations.class_names, records=tuple(out))
