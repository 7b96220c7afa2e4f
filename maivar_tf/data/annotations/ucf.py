"""UCF101 and UCF51 annotation readers: ``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt``.

MAiVAR (Shaikh et al. 2024) evaluates on UCF51, the 51 UCF101 classes with a sound track
(:data:`UCF51_CLASSES`). Class indices are 0-based (``classInd.txt`` is 1-based on disk).

A *subset* (UCF51 inside UCF101) is a deliberate selection: records of the other classes are
left out. A folder that is not a class at all is a data problem: the record is kept with
``label_index=-1`` so the Beam job sends it to the dead-letter file (``unknown_label``).
Malformed lines raise :class:`ValueError` naming the file and the line number.

Example:
    >>> ann = read_ucf51("/datasets/ucfTrainTestlist", split=1, video_root="/datasets/UCF-101")
    >>> len(ann.class_names), ann.records[0].path
    (51, 'ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi')
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from maivar_tf.data.annotations.records import Annotations, VideoRecord, make_example_id
from maivar_tf.resources import read_class_list

__all__ = ["UCF51_CLASSES", "read_ucf101", "read_ucf51"]

#: The 51 UCF101 classes with an audio track, in ``classInd.txt`` order (see the resource file
#: for the source).
UCF51_CLASSES: tuple[str, ...] = read_class_list("ucf51_classes.txt")


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
