"""CSV annotation readers: Kinetics (``label,youtube_id,time_start,time_end,split``) and generic.

MAiVAR (Shaikh et al. 2024) evaluates on Kinetics-Sounds (Arandjelovic & Zisserman 2017), a
subset of Kinetics-400 (:data:`KINETICS_SOUNDS_CLASSES`). Kinetics clips are cut from
untrimmed YouTube videos: a record keeps the CSV's time range when only the untrimmed video
is on disk, so the decoder cuts it. The generic CSV (``path,label,split[,start_s,end_s]``)
serves any other dataset.

Rows of another class of a subset are left out; rows with an empty label are kept with
``label_index=-1`` (dead-lettered as ``unknown_label``). Malformed rows raise
:class:`ValueError` naming the file and the line number.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from maivar_tf.data.annotations.records import SPLITS, Annotations, VideoRecord, make_example_id
from maivar_tf.resources import read_class_list

__all__ = ["KINETICS_SOUNDS_CLASSES", "read_generic_csv", "read_kinetics_csv"]

logger = logging.getLogger(__name__)

#: Kinetics-Sounds (Arandjelovic & Zisserman 2017) under Kinetics-400 class names, sorted.
KINETICS_SOUNDS_CLASSES: tuple[str, ...] = read_class_list("kinetics_sounds_classes.txt")

_SPLIT_ALIASES = {"train": "train", "training": "train", "test": "test", "testing": "test",
                  "val": "val", "valid": "val", "validate": "val", "validation": "val"}
_KINETICS_NAME = "{youtube_id}_{start:06d}_{end:06d}.mp4"


def _norm(name: str) -> str:
    """Case-, underscore- and whitespace-insensitive form of a class or folder name."""
    return " ".join(name.strip().strip('"').replace("_", " ").split()).lower()


def _parse_seconds(value: str, where: str, column: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {column} {value!r} is not a number") from e
    if x < 0 or x != x:
        raise ValueError(f"{where}: {column} {value!r} must be >= 0")
    return x


def _parse_range(start: str, end: str, where: str, columns: tuple[str, str]
                 ) -> tuple[float, float]:
    """``(start, end)`` seconds from two cells; ``end`` is 0 (to the end) or after ``start``."""
    start_s = _parse_seconds(start, where, columns[0])
    end_s = _parse_seconds(end, where, columns[1])
    if end_s and end_s <= start_s:
        raise ValueError(f"{where}: {columns[1]} {end_s} <= {columns[0]} {start_s}")
    return start_s, end_s


def _parse_split(value: str | None, where: str) -> str:
    split = _SPLIT_ALIASES.get((value or "").strip().lower())
    if split is None:
        raise ValueError(f"{where}: split {value!r} is not one of {', '.join(SPLITS)}")
    return split


def _csv_rows(csv_path: Path, required: Iterable[str]) -> Iterator[tuple[str, dict[str, str]]]:
    """Yields ``(where, row)`` per data row (``where`` = ``file:line``) of a CSV with a header.

    Raises (on the first ``next``) for a missing file or a header without ``required``, and
    for a row with more or fewer fields than the header.
    """
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: annotation CSV not found")
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        missing = [c for c in required if c not in header]
        if missing:
            raise ValueError(f"{csv_path}:1: header {header} lacks column(s) {missing}; "
                             f"required: {', '.join(required)}")
        for row in reader:
            where = f"{csv_path}:{reader.line_num}"
            if None in row:
                raise ValueError(f"{where}: more fields than the header's {len(header)} "
                                 f"({', '.join(header)})")
            if any(v is None for v in row.values()):
                raise ValueError(f"{where}: fewer fields than the header's {len(header)} "
                                 f"({', '.join(header)})")
            yield where, row


class _KineticsRow(NamedTuple):
    where: str
    label: str
    youtube_id: str
    start: float
    end: float
    split: str

    @property
    def seconds(self) -> tuple[int, int]:
        """The time range rounded to whole seconds, as Kinetics file names spell it."""
        return int(round(self.start)), int(round(self.end))


def _read_kinetics_rows(csv_path: Path) -> list[_KineticsRow]:
    rows = []
    for where, row in _csv_rows(csv_path, ("youtube_id", "time_start", "time_end", "split")):
        label = " ".join((row.get("label") or "").strip().split())
        ytid = row["youtube_id"].strip()
        if not ytid:
            raise ValueError(f"{where}: empty youtube_id")
        start, end = _parse_range(row["time_start"], row["time_end"], where,
                                  ("time_start", "time_end"))
        rows.append(_KineticsRow(where, label, ytid, start, end, _parse_split(row["split"],
                                                                              where)))
    return rows


def _csv_labels(rows: list[_KineticsRow]) -> tuple[str, ...]:
    """The sorted unique labels, labels equal under :func:`_norm` counted once (smallest)."""
    spellings: dict[str, str] = {}
    for r in rows:
        if r.label:
            key = _norm(r.label)
            spellings[key] = min(spellings.get(key, r.label), r.label)
    return tuple(sorted(spellings.values()))


class _KineticsIndex:
    """Finds clips under the video root; every ``*.mp4`` by YouTube id is listed on a miss."""

    def __init__(self, root: Path):
        self.root = root
        self._by_id: dict[str, list[str]] | None = None

    def candidates(self, youtube_id: str) -> list[str]:
        if self._by_id is None:
            self._by_id = {}
            for dirpath, dirnames, filenames in os.walk(self.root):
                dirnames.sort()
                rel_dir = Path(dirpath).relative_to(self.root).as_posix()
                for name in sorted(filenames):
                    if name.lower().endswith(".mp4") and len(name) >= 11:
                        rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                        self._by_id.setdefault(name[:11], []).append(rel)
        return self._by_id.get(youtube_id, [])

    def resolve(self, row: _KineticsRow) -> tuple[str, bool] | None:
        """Finds a row's clip on disk: ``(relative path, trimmed)`` or None."""
        start, end = row.seconds
        label, youtube_id = row.label, row.youtube_id
        name = _KINETICS_NAME.format(youtube_id=youtube_id, start=start, end=end)
        for folder in dict.fromkeys([label, label.replace(" ", "_")]):
            rel = f"{row.split}/{folder}/{name}"
            if (self.root / rel).is_file():
                return rel, True
        trimmed_stem = name[:-4]
        other_clip = re.compile(re.escape(youtube_id) + r"_\d+_\d+$")
        best: tuple[str, bool] | None = None
        for rel in self.candidates(youtube_id):
            pp = PurePosixPath(rel)
            if label and (len(pp.parts) < 2 or _norm(pp.parts[-2]) != _norm(label)):
                continue  # only under a folder named after the label
            stem = pp.stem
            if stem == trimmed_stem:
                return rel, True
            if other_clip.match(stem):
                continue  # a trimmed clip of another time range of the same video
            if best is None:
                best = (rel, False)  # the untrimmed video: decode start..end
        return best


def _kinetics_id(row: _KineticsRow) -> str:
    start, end = row.seconds
    return make_example_id(f"{row.youtube_id}_{start:06d}_{end:06d}")


def _is_repeat(row: _KineticsRow, seen: dict[str, _KineticsRow]) -> bool:
    """True for a row repeating an earlier one (logged); an inconsistent repeat raises."""
    example_id = _kinetics_id(row)
    first = seen.setdefault(example_id, row)
    if first is row:
        return False
    if (first.label, first.split) != (row.label, row.split):
        start, end = row.seconds
        raise ValueError(f"{row.where}: clip {row.youtube_id} {start}-{end} is listed twice "
                         f"with different label/split (first at {first.where})")
    logger.warning("%s: duplicate of the row at %s; kept once", row.where, first.where)
    return True


def _kinetics_record(row: _KineticsRow, label_index: int, class_names: tuple[str, ...],
                     index: _KineticsIndex | None) -> VideoRecord:
    start, end = row.seconds
    name = _KINETICS_NAME.format(youtube_id=row.youtube_id, start=start, end=end)
    path = f"{row.split}/{row.label}/{name}" if row.label else f"{row.split}/{name}"
    start_s = end_s = 0.0
    found = index.resolve(row) if index is not None else None
    if found is not None:
        path, trimmed = found
        if not trimmed:
            start_s, end_s = row.start, row.end
    return VideoRecord(path=path, label_index=label_index,
                       label_string=class_names[label_index] if label_index >= 0 else row.label,
                       split=row.split, start_s=start_s, end_s=end_s,
                       example_id=_kinetics_id(row))


def read_kinetics_csv(csv_path: str | os.PathLike, video_root: str | os.PathLike | None = None,
                      classes: Sequence[str] | None = None, *,
                      drop_unlisted: bool = True) -> Annotations:
    """Reads a Kinetics CSV (``label,youtube_id,time_start,time_end,split[,is_cc]``).

    Each clip's path is ``<split>/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4`` under
    ``video_root`` (the label folder may use spaces or underscores). When that file does not
    exist, ``<youtube_id>*.mp4`` is looked for under any folder named after the label: a
    trimmed clip gets ``start_s = end_s = 0``; an untrimmed video keeps the CSV's time range so
    the decoder cuts it. Missing videos keep the canonical path (the Beam job reports them as
    ``missing``).

    Args:
        csv_path: the CSV file; a ``label`` column is optional (Kinetics test lists lack it).
        video_root: the folder holding ``<split>/<label>/`` trees (None: no disk look-up).
        classes: the class list (e.g. :data:`KINETICS_SOUNDS_CLASSES`), matched ignoring case,
            underscores and repeated spaces; None uses the sorted unique labels of the CSV
            (labels equal under that matching count once).
        drop_unlisted: with ``classes``, leave out rows whose label is another class of the
            dataset (a subset such as Kinetics-Sounds inside Kinetics-400). False keeps them
            with ``label_index=-1``. Rows with an empty label are always kept with -1.

    Returns:
        The class names and one record per CSV row kept.

    Raises:
        FileNotFoundError: the CSV is missing.
        ValueError: a missing column, a bad number or split (naming file and line), or a
            duplicate clip.
    """
    rows = _read_kinetics_rows(Path(csv_path))
    class_names = tuple(classes) if classes is not None else _csv_labels(rows)
    by_norm = {_norm(c): i for i, c in enumerate(class_names)}
    if len(by_norm) != len(class_names):
        raise ValueError("read_kinetics_csv: class names collide after normalisation")
    index = _KineticsIndex(Path(video_root)) if video_root is not None else None
    records, seen, dropped = [], {}, 0
    for row in rows:
        idx = by_norm.get(_norm(row.label), -1) if row.label else -1
        if idx < 0 and row.label and drop_unlisted and classes is not None:
            dropped += 1
            continue
        if not _is_repeat(row, seen):
            records.append(_kinetics_record(row, idx, class_names, index))
    if dropped:
        logger.info("%s: left out %d rows of classes outside the %d-class list", csv_path,
                    dropped, len(class_names))
    return Annotations(class_names=class_names, records=tuple(records))


def read_generic_csv(csv_path: str | os.PathLike,
                     classes: Sequence[str] | None = None) -> Annotations:
    """Reads a CSV with columns ``path,label,split`` (optional ``start_s,end_s``).

    Paths are relative to ``DataConfig.video_root`` (absolute paths are allowed). Without
    ``classes`` the class list is the sorted set of non-empty labels; rows with an empty label
    get ``label_index=-1``.

    Args:
        csv_path: the CSV file with a header row.
        classes: the class list (``data.class_list``), matched exactly; label indices follow
            its order and a row whose label is not in it gets ``label_index=-1`` (the Beam
            job's ``unknown_label`` dead letter). None derives the list from the labels.

    Returns:
        The class names and one record per row.

    Raises:
        FileNotFoundError: the CSV is missing.
        ValueError: a missing column, empty path, bad split or time, or duplicate video, naming
            the file and line.
    """
    rows = []
    for where, row in _csv_rows(Path(csv_path), ("path", "label", "split")):
        path = row["path"].strip()
        if not path:
            raise ValueError(f"{where}: empty path")
        start, end = _parse_range(row.get("start_s") or "0", row.get("end_s") or "0", where,
                                  ("start_s", "end_s"))
        rows.append((where, path, row["label"].strip(), _parse_split(row["split"], where),
                     start, end))
    class_names = (tuple(classes) if classes is not None
                   else tuple(sorted({r[2] for r in rows if r[2]})))
    unlisted = sorted({r[2] for r in rows if r[2] and r[2] not in class_names})
    if classes is not None and unlisted:
        logger.warning("%s: labels outside the %d-class list (their rows are unknown_label): "
                       "%s", csv_path, len(class_names), ", ".join(unlisted[:10]))
    index = {c: i for i, c in enumerate(class_names)}
    records, seen = [], {}
    for where, path, label, split, start, end in rows:
        example_id = make_example_id(path, start, end)
        if example_id in seen:
            raise ValueError(f"{where}: {example_id!r} is listed twice (first at "
                             f"{seen[example_id]})")
        seen[example_id] = where
        records.append(VideoRecord(path=path, label_index=index.get(label, -1),
                                   label_string=label, split=split, start_s=start, end_s=end,
                                   example_id=example_id))
    return Annotations(class_names=class_names, records=tuple(records))
