"""Annotation readers: UCF101 / UCF51 split files, Kinetics CSVs and a generic CSV.

Every reader returns :class:`Annotations`: the class list and one :class:`VideoRecord` per
video, in file order (train list before test list). Class indices are 0-based (UCF101's
``classInd.txt`` is 1-based on disk).

Two different things can put a record outside the class list, and they are treated differently:

* a *subset* (UCF51 inside UCF101, Kinetics-Sounds inside Kinetics) is a deliberate selection:
  records of the dataset's other classes are not part of the experiment and are left out;
* a label that is not a class at all (a folder missing from ``classInd.txt``, a typo, an empty
  label) is a data problem: the record is kept with ``label_index=-1`` so the Beam job can send
  it to the dead-letter file with reason ``unknown_label``.

Malformed lines raise :class:`ValueError` naming the file and the line number.

Example ids are derived from the video's relative path (and its time range), never from the
order of lines, so they are stable across runs, machines and split files
(:func:`make_example_id`).

Example:
    >>> ann = read_ucf51("/datasets/ucfTrainTestlist", split=1, video_root="/datasets/UCF-101")
    >>> len(ann.class_names), ann.records[0].path
    (51, 'ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi')
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from maivar_tf.resources import read_class_list

logger = logging.getLogger(__name__)

#: The 51 UCF101 classes with an audio track, in ``classInd.txt`` order (see the resource file
#: for the source).
UCF51_CLASSES: tuple[str, ...] = read_class_list("ucf51_classes.txt")
#: Kinetics-Sounds (Arandjelovic & Zisserman 2017) under Kinetics-400 class names, sorted.
KINETICS_SOUNDS_CLASSES: tuple[str, ...] = read_class_list("kinetics_sounds_classes.txt")

SPLITS = ("train", "test", "val")
_SPLIT_ALIASES = {"train": "train", "training": "train", "test": "test", "testing": "test",
                  "val": "val", "valid": "val", "validate": "val", "validation": "val"}
_KINETICS_NAME = "{youtube_id}_{start:06d}_{end:06d}.mp4"


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
    """

    path: str
    label_index: int
    label_string: str
    split: str
    start_s: float = 0.0
    end_s: float = 0.0
    example_id: str = ""


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


# ----------------------------------------------------------------------------- helpers


def _norm(name: str) -> str:
    """Case-, underscore- and whitespace-insensitive form of a class or folder name."""
    return " ".join(name.strip().strip('"').replace("_", " ").split()).lower()


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers; CRLF and a UTF-8 BOM are tolerated."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from e
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), 1) if line.strip()]


class _CaseInsensitiveFS:
    """Resolves relative paths under a root case-insensitively, listing each folder once."""

    def __init__(self, root: Path):
        self.root = root
        self._listing: dict[Path, tuple[set[str], dict[str, str]]] = {}

    def _entries(self, folder: Path) -> tuple[set[str], dict[str, str]]:
        if folder not in self._listing:
            try:
                names = sorted(os.listdir(folder))
            except OSError:
                names = []
            lowered: dict[str, str] = {}
            for n in names:
                lowered.setdefault(n.lower(), n)
            self._listing[folder] = (set(names), lowered)
        return self._listing[folder]

    def resolve(self, rel: str) -> str | None:
        """The on-disk spelling of ``rel`` (POSIX, relative), or None when it does not exist."""
        folder, parts = self.root, []
        for part in PurePosixPath(rel).parts:
            exact, lowered = self._entries(folder)
            actual = part if part in exact else lowered.get(part.lower())
            if actual is None:
                return None
            parts.append(actual)
            folder = folder / actual
        return "/".join(parts)


# ----------------------------------------------------------------------------- UCF101 / UCF51


def _find_ucf_dir(annotation_dir: Path) -> Path:
    for cand in (annotation_dir, annotation_dir / "ucfTrainTestlist"):
        if (cand / "classInd.txt").is_file():
            return cand
    raise FileNotFoundError(
        f"{annotation_dir}: no classInd.txt here or in ucfTrainTestlist/; expected the UCF101 "
        "annotation folder with classInd.txt, trainlist0N.txt and testlist0N.txt"
    )


def _read_class_ind(path: Path) -> tuple[str, ...]:
    by_index: dict[int, str] = {}
    for lineno, line in _read_lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise ValueError(f"{path}:{lineno}: expected '<index> <ClassName>', got {line!r}")
        idx, name = int(parts[0]), parts[1]
        if idx in by_index:
            raise ValueError(f"{path}:{lineno}: class index {idx} appears twice")
        by_index[idx] = name
    n = len(by_index)
    if n == 0:
        raise ValueError(f"{path}: no classes")
    if sorted(by_index) != list(range(1, n + 1)):
        raise ValueError(f"{path}: class indices must be 1..{n} (1-based, no gaps); "
                         f"got {sorted(by_index)[:5]}...")
    names = tuple(by_index[i] for i in range(1, n + 1))
    lowered = [s.lower() for s in names]
    if len(set(lowered)) != n:
        raise ValueError(f"{path}: class names must be unique (case-insensitively)")
    return names


def _read_ucf_list(path: Path, split: str, all_classes: Sequence[str],
                   with_labels: bool) -> list[tuple[int, str, str, int | None]]:
    """Parses a train/test list into ``(lineno, rel_path, folder, given_index0)`` tuples."""
    out = []
    for lineno, line in _read_lines(path):
        parts = line.split()
        if len(parts) not in (1, 2):
            raise ValueError(f"{path}:{lineno}: expected '<Class>/<video> [label]', got {line!r}")
        rel = parts[0].replace("\\", "/")
        pp = PurePosixPath(rel)
        if len(pp.parts) < 2 or pp.is_absolute():
            raise ValueError(f"{path}:{lineno}: expected a relative '<Class>/<video>' path, "
                             f"got {rel!r}")
        given: int | None = None
        if len(parts) == 2:
            if not parts[1].lstrip("-").isdigit():
                raise ValueError(f"{path}:{lineno}: label {parts[1]!r} is not an integer "
                                 f"(classInd indices are 1..{len(all_classes)})")
            given = int(parts[1]) - 1
        elif with_labels:
            raise ValueError(f"{path}:{lineno}: a {split} list line needs a 1-based label, "
                             f"got {line!r}")
        out.append((lineno, rel, pp.parts[-2], given))
    return out


def read_ucf101(annotation_dir: str | os.PathLike, split: int = 1,
                video_root: str | os.PathLike | None = None,
                classes: Sequence[str] | None = None) -> Annotations:
    """Reads UCF101's ``classInd.txt``, ``trainlist0N.txt`` and ``testlist0N.txt``.

    Labels come from each path's folder part and are matched to ``classInd.txt``
    case-insensitively (UCF101 stores ``HandstandPushups/v_HandStandPushups_g01_c01.avi``).
    Test lists have no label column; a train list's 1-based label must agree with the folder.
    When ``video_root`` is given, each path is resolved on disk case-insensitively so the
    returned ``path`` exists whenever the video does (a missing video keeps its listed path;
    the Beam job reports it as ``missing``).

    Args:
        annotation_dir: the folder with ``classInd.txt`` (or its parent holding
            ``ucfTrainTestlist/``).
        split: the split number N of ``trainlist0N.txt`` / ``testlist0N.txt``.
        video_root: the folder of class sub-folders, used to resolve on-disk spelling.
        classes: a subset of ``classInd.txt`` classes to keep, renumbered 0..len-1 in
            ``classInd`` order; records of other ``classInd`` classes are left out.

    Returns:
        The class names and train+test records.

    Raises:
        FileNotFoundError: the annotation files are missing.
        ValueError: a malformed line (naming file and line), a duplicate video, a label that
            disagrees with its folder, or a ``classes`` name missing from ``classInd.txt``.
    """
    if not isinstance(split, int) or split < 1:
        raise ValueError(f"read_ucf101: split must be a positive integer, got {split!r}")
    adir = _find_ucf_dir(Path(annotation_dir))
    all_classes = _read_class_ind(adir / "classInd.txt")
    lower_to_all = {c.lower(): i for i, c in enumerate(all_classes)}

    if classes is None:
        class_names = all_classes
    else:
        missing = [c for c in classes if c.lower() not in lower_to_all]
        if missing:
            raise ValueError(f"read_ucf101: classes {missing[:5]} are not in "
                             f"{adir / 'classInd.txt'}")
        wanted = {c.lower() for c in classes}
        class_names = tuple(c for c in all_classes if c.lower() in wanted)
    subset_index = {c.lower(): i for i, c in enumerate(class_names)}

    fs = _CaseInsensitiveFS(Path(video_root)) if video_root is not None else None
    records: list[VideoRecord] = []
    seen: dict[str, str] = {}
    for split_name, fname, with_labels in (("train", f"trainlist{split:02d}.txt", True),
                                           ("test", f"testlist{split:02d}.txt", False)):
        list_path = adir / fname
        if not list_path.is_file():
            raise FileNotFoundError(f"{list_path}: missing; split {split} needs {fname} next "
                                    f"to classInd.txt in {adir}")
        for lineno, rel, folder, given in _read_ucf_list(list_path, split_name, all_classes,
                                                         with_labels):
            where = f"{list_path}:{lineno}"
            key = rel.lower()
            if key in seen:
                raise ValueError(f"{where}: video {rel!r} is listed twice (first at {seen[key]})")
            seen[key] = where
            full_idx = lower_to_all.get(folder.lower())
            if full_idx is not None and given is not None and given != full_idx:
                named = all_classes[given] if 0 <= given < len(all_classes) else "no class"
                raise ValueError(f"{where}: label {given + 1} ({named}) disagrees with the "
                                 f"folder {folder!r} (class {full_idx + 1} in classInd.txt)")
            if full_idx is None:
                label_index, label_string = -1, folder  # unknown: kept for the dead-letter file
            elif folder.lower() in subset_index:
                label_index = subset_index[folder.lower()]
                label_string = class_names[label_index]
            else:
                continue  # a classInd class outside the requested subset
            path = rel
            if fs is not None:
                path = fs.resolve(rel) or rel
            records.append(VideoRecord(path=path, label_index=label_index,
                                       label_string=label_string, split=split_name,
                                       example_id=make_example_id(rel)))
    return Annotations(class_names=tuple(class_names), records=tuple(records))


def read_ucf51(annotation_dir: str | os.PathLike, split: int = 1,
               video_root: str | os.PathLike | None = None) -> Annotations:
    """UCF51: the UCF101 classes with sound (:data:`UCF51_CLASSES`), renumbered 0..50.

    Args:
        annotation_dir: the UCF101 annotation folder (see :func:`read_ucf101`).
        split: the UCF101 split number.
        video_root: the UCF-101 video folder, for case-insensitive path resolution.

    Returns:
        51 classes in ``classInd.txt`` order and the records of those classes (plus any record
        whose folder is not a UCF101 class at all, with ``label_index=-1``).
    """
    return read_ucf101(annotation_dir, split=split, video_root=video_root,
                       classes=UCF51_CLASSES)


# ----------------------------------------------------------------------------- Kinetics


def _parse_seconds(value: str, where: str, column: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {column} {value!r} is not a number") from e
    if x < 0 or x != x:
        raise ValueError(f"{where}: {column} {value!r} must be >= 0")
    return x


def _parse_split(value: str | None, where: str) -> str:
    split = _SPLIT_ALIASES.get((value or "").strip().lower())
    if split is None:
        raise ValueError(f"{where}: split {value!r} is not one of {', '.join(SPLITS)}")
    return split


def _open_csv(csv_path: Path, required: Iterable[str]) -> tuple[csv.DictReader, object]:
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: annotation CSV not found")
    f = open(csv_path, newline="", encoding="utf-8-sig")  # closed by the caller
    reader = csv.DictReader(f)
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    missing = [c for c in required if c not in header]
    if missing:
        f.close()
        raise ValueError(f"{csv_path}:1: header {header} lacks column(s) {missing}; "
                         f"required: {', '.join(required)}")
    return reader, f


class _KineticsIndex:
    """Every ``*.mp4`` under the video root by YouTube id (built once, on the first miss)."""

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


def _resolve_kinetics(root: Path, index: _KineticsIndex, split: str, label: str,
                      youtube_id: str, start: int, end: int) -> tuple[str, bool] | None:
    """Finds a clip on disk: ``(relative path, trimmed)`` or None."""
    name = _KINETICS_NAME.format(youtube_id=youtube_id, start=start, end=end)
    for folder in dict.fromkeys([label, label.replace(" ", "_")]):
        rel = f"{split}/{folder}/{name}"
        if (root / rel).is_file():
            return rel, True
    trimmed_stem = name[:-4]
    other_clip = re.compile(re.escape(youtube_id) + r"_\d+_\d+$")
    best: tuple[str, bool] | None = None
    for rel in index.candidates(youtube_id):
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
    csv_path = Path(csv_path)
    reader, handle = _open_csv(csv_path, ("youtube_id", "time_start", "time_end", "split"))
    rows = []
    try:
        for row in reader:
            where = f"{csv_path}:{reader.line_num}"
            if None in row:
                raise ValueError(f"{where}: more fields than the header's {len(reader.fieldnames)}")
            if any(v is None for v in row.values()):
                raise ValueError(f"{where}: fewer fields than the header's "
                                 f"{len(reader.fieldnames)}")
            label = " ".join((row.get("label") or "").strip().split())
            ytid = row["youtube_id"].strip()
            if not ytid:
                raise ValueError(f"{where}: empty youtube_id")
            start = _parse_seconds(row["time_start"], where, "time_start")
            end = _parse_seconds(row["time_end"], where, "time_end")
            if end and end <= start:
                raise ValueError(f"{where}: time_end {end} <= time_start {start}")
            rows.append((where, label, ytid, start, end, _parse_split(row["split"], where)))
    finally:
        handle.close()

    if classes is None:
        spellings: dict[str, str] = {}
        for r in rows:
            if r[1]:
                key = _norm(r[1])
                spellings[key] = min(spellings.get(key, r[1]), r[1])
        class_names = tuple(sorted(spellings.values()))
    else:
        class_names = tuple(classes)
    by_norm = {_norm(c): i for i, c in enumerate(class_names)}
    if len(by_norm) != len(class_names):
        raise ValueError("read_kinetics_csv: class names collide after normalisation")

    root = Path(video_root) if video_root is not None else None
    index = _KineticsIndex(root) if root is not None else None
    records, seen, dropped = [], {}, 0
    for where, label, ytid, start, end, split in rows:
        idx = by_norm.get(_norm(label), -1) if label else -1
        if idx < 0 and label and drop_unlisted and classes is not None:
            dropped += 1
            continue
        s, e = int(round(start)), int(round(end))
        name = _KINETICS_NAME.format(youtube_id=ytid, start=s, end=e)
        canonical = f"{split}/{label}/{name}" if label else f"{split}/{name}"
        example_id = make_example_id(f"{ytid}_{s:06d}_{e:06d}")
        if example_id in seen:
            first_where, first_label, first_split = seen[example_id]
            if (first_label, first_split) != (label, split):
                raise ValueError(f"{where}: clip {ytid} {s}-{e} is listed twice with different "
                                 f"label/split (first at {first_where})")
            logger.warning("%s: duplicate of the row at %s; kept once", where, first_where)
            continue
        seen[example_id] = (where, label, split)
        path, start_s, end_s = canonical, 0.0, 0.0
        if root is not None:
            found = _resolve_kinetics(root, index, split, label, ytid, s, e)
            if found is not None:
                path, trimmed = found
                if not trimmed:
                    start_s, end_s = start, end
        records.append(VideoRecord(path=path, label_index=idx,
                                   label_string=class_names[idx] if idx >= 0 else label,
                                   split=split, start_s=start_s, end_s=end_s,
                                   example_id=example_id))
    if dropped:
        logger.info("%s: left out %d rows of classes outside the %d-class list", csv_path,
                    dropped, len(class_names))
    return Annotations(class_names=class_names, records=tuple(records))


# ----------------------------------------------------------------------------- generic CSV


def read_generic_csv(csv_path: str | os.PathLike) -> Annotations:
    """Reads a CSV with columns ``path,label,split`` (optional ``start_s,end_s``).

    Paths are relative to ``DataConfig.video_root`` (absolute paths are allowed). The class
    list is the sorted set of non-empty labels; rows with an empty label get ``label_index=-1``.

    Args:
        csv_path: the CSV file with a header row.

    Returns:
        The class names and one record per row.

    Raises:
        FileNotFoundError: the CSV is missing.
        ValueError: a missing column, empty path, bad split or time, or duplicate video, naming
            the file and line.
    """
    csv_path = Path(csv_path)
    reader, handle = _open_csv(csv_path, ("path", "label", "split"))
    rows = []
    try:
        for row in reader:
            where = f"{csv_path}:{reader.line_num}"
            if None in row or any(v is None for v in row.values()):
                raise ValueError(f"{where}: expected {len(reader.fieldnames)} fields "
                                 f"({', '.join(reader.fieldnames)})")
            path = row["path"].strip()
            if not path:
                raise ValueError(f"{where}: empty path")
            start = _parse_seconds(row.get("start_s") or "0", where, "start_s")
            end = _parse_seconds(row.get("end_s") or "0", where, "end_s")
            if end and end <= start:
                raise ValueError(f"{where}: end_s {end} <= start_s {start}")
            rows.append((where, path, row["label"].strip(), _parse_split(row["split"], where),
                         start, end))
    finally:
        handle.close()
    class_names = tuple(sorted({r[2] for r in rows if r[2]}))
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


# ----------------------------------------------------------------------------- dispatch


def read_annotations(cfg) -> Annotations:
    """Reads the annotations a :class:`~maivar_tf.config.DataConfig` names.

    ``synthetic``, ``ucf101`` and ``ucf51`` read UCF101-style lists from ``cfg.annotations``
    (empty: ``cfg.video_root``); ``kinetics_sounds`` reads the Kinetics CSV ``cfg.annotations``
    restricted to :data:`KINETICS_SOUNDS_CLASSES`; ``csv`` reads a generic CSV.

    Args:
        cfg: a ``DataConfig``.

    Returns:
        The dataset's :class:`Annotations`.
    """
    ds = cfg.dataset
    ann_dir = cfg.annotations or cfg.video_root
    if ds == "synthetic":
        return read_ucf101(ann_dir, 1, cfg.video_root)
    if ds == "ucf101":
        return read_ucf101(ann_dir, cfg.split, cfg.video_root)
    if ds == "ucf51":
        return read_ucf51(ann_dir, cfg.split, cfg.video_root)
    if ds in ("kinetics_sounds", "csv"):
        if not cfg.annotations:
            raise ValueError(f"data.annotations: empty; dataset {ds!r} needs the path of its "
                             "annotation CSV")
        if ds == "csv":
            return read_generic_csv(cfg.annotations)
        return read_kinetics_csv(cfg.annotations, cfg.video_root,
                                 classes=KINETICS_SOUNDS_CLASSES)
    raise ValueError(f"data.dataset: invalid value {ds!r}; allowed: synthetic, ucf101, ucf51, "
                     "kinetics_sounds, csv")
