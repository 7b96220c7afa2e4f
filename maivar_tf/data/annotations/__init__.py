"""Annotation readers: UCF101 / UCF51 split files, AVE, Kinetics CSVs and a generic CSV.

Every reader returns :class:`Annotations`: the class list and one :class:`VideoRecord` per
video, in file order (train list before test list), with 0-based class indices and stable
example ids (:func:`make_example_id`). MAiVAR (Shaikh et al. 2024) evaluates on UCF51 and
Kinetics-Sounds; :func:`read_annotations` picks the reader a data config names.

Two different things can put a record outside the class list, and they are treated differently:

* a *subset* (UCF51 inside UCF101, Kinetics-Sounds inside Kinetics) is a deliberate selection:
  records of the dataset's other classes are not part of the experiment and are left out;
* a label that is not a class at all (a folder missing from ``classInd.txt``, a typo, an empty
  label) is a data problem: the record is kept with ``label_index=-1`` so the Beam job can send
  it to the dead-letter file with reason ``unknown_label``.

Modules: :mod:`.records` (records and ids), :mod:`.ucf` (UCF101 / UCF51), :mod:`.ave` (AVE's
``Annotations.txt`` spans, also the untrimmed embedded dataset's), :mod:`.csv_readers`
(Kinetics and generic CSVs).
"""

from __future__ import annotations

from pathlib import Path

from maivar_tf.data.annotations.ave import AVE_HEADER, attach_spans, read_ave, read_ave_lines
from maivar_tf.data.annotations.csv_readers import (
    KINETICS_SOUNDS_CLASSES,
    read_generic_csv,
    read_kinetics_csv,
)
from maivar_tf.data.annotations.records import SPLITS, Annotations, VideoRecord, make_example_id
from maivar_tf.data.annotations.ucf import UCF51_CLASSES, read_ucf51, read_ucf101

__all__ = [
    "AVE_HEADER",
    "KINETICS_SOUNDS_CLASSES",
    "SPLITS",
    "UCF51_CLASSES",
    "Annotations",
    "VideoRecord",
    "attach_spans",
    "class_list_source",
    "default_class_list",
    "make_example_id",
    "read_annotations",
    "read_ave",
    "read_ave_lines",
    "read_generic_csv",
    "read_kinetics_csv",
    "read_ucf51",
    "read_ucf101",
]


def default_class_list(dataset: str) -> tuple[str, ...] | None:
    """The class list a dataset uses when ``data.class_list`` is empty.

    ``ucf51`` and ``kinetics_sounds``: the shipped lists (:data:`UCF51_CLASSES`, the 31-class
    :data:`KINETICS_SOUNDS_CLASSES`); ``ucf101`` and ``synthetic``: None (``classInd.txt``);
    ``csv``: None (the sorted labels of the CSV).
    """
    return {"ucf51": UCF51_CLASSES, "kinetics_sounds": KINETICS_SOUNDS_CLASSES}.get(dataset)


def class_list_source(cfg) -> str:
    """Where a :class:`~maivar_tf.config.DataConfig`'s class list comes from, in words."""
    if cfg.class_list:
        return f"from data.class_list {cfg.class_list}"
    if default_class_list(cfg.dataset) is not None:
        return f"the shipped {cfg.dataset} list"
    if cfg.dataset == "csv":
        return "derived from the CSV's labels; set data.class_list to fix it"
    if cfg.dataset == "ave":
        return "the sorted categories of Annotations.txt"
    return "from classInd.txt"


def read_annotations(cfg) -> Annotations:
    """Reads the annotations a :class:`~maivar_tf.config.DataConfig` names.

    ``synthetic``, ``ucf101`` and ``ucf51`` read UCF101-style lists from ``cfg.annotations``
    (empty: ``cfg.video_root``); for ``synthetic`` an ``Annotations.txt`` beside them (the
    untrimmed embedded dataset) gives every record its span; ``ave`` reads AVE's
    ``Annotations.txt`` and split files from ``cfg.annotations`` (empty: ``cfg.video_root``);
    ``kinetics_sounds`` reads the Kinetics CSV ``cfg.annotations``
    restricted to its class list; ``csv`` reads a generic CSV. The class list is
    ``cfg.class_list`` when set, else :func:`default_class_list`. For the subsets (UCF
    classes in ``classInd.txt``, Kinetics-Sounds) records of the dataset's other classes are
    left out; in a ``csv`` every label outside the list is an ``unknown_label`` record.

    Args:
        cfg: a ``DataConfig``.

    Returns:
        The dataset's :class:`Annotations`.

    Raises:
        ConfigError: ``data.class_list`` names a missing file, an empty list or duplicates.
    """
    ds = cfg.dataset
    classes = cfg.read_class_list()
    if classes is None:
        classes = default_class_list(ds)
    ann_dir = cfg.annotations or cfg.video_root
    if ds in ("synthetic", "ucf101", "ucf51"):
        split = 1 if ds == "synthetic" else cfg.split
        ann = read_ucf101(ann_dir, split, cfg.video_root, classes=classes)
        spans = Path(ann_dir) / "Annotations.txt"
        if ds == "synthetic" and spans.is_file():
            ann = attach_spans(ann, spans)
        return ann
    if ds == "ave":
        return read_ave(ann_dir, cfg.video_root, classes=classes)
    if ds in ("kinetics_sounds", "csv"):
        if not cfg.annotations:
            raise ValueError(f"data.annotations: empty; dataset {ds!r} needs the path of its "
                             "annotation CSV")
        if ds == "csv":
            return read_generic_csv(cfg.annotations, classes=classes)
        return read_kinetics_csv(cfg.annotations, cfg.video_root, classes=classes)
    raise ValueError(f"data.dataset: invalid value {ds!r}; allowed: synthetic, ucf101, ucf51, "
                     "ave, kinetics_sounds, csv")
