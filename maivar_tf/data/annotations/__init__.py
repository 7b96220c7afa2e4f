"""Annotation readers: UCF101 / UCF51 split files, Kinetics CSVs and a generic CSV.

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

Modules: :mod:`.records` (records and ids), :mod:`.ucf` (UCF101 / UCF51), :mod:`.csv_readers`
(Kinetics and generic CSVs).
"""

from __future__ import annotations

from maivar_tf.data.annotations.csv_readers import (
    KINETICS_SOUNDS_CLASSES,
    read_generic_csv,
    read_kinetics_csv,
)
from maivar_tf.data.annotations.records import SPLITS, Annotations, VideoRecord, make_example_id
from maivar_tf.data.annotations.ucf import UCF51_CLASSES, read_ucf51, read_ucf101

__all__ = [
    "KINETICS_SOUNDS_CLASSES",
    "SPLITS",
    "UCF51_CLASSES",
    "Annotations",
    "VideoRecord",
    "make_example_id",
    "read_annotations",
    "read_generic_csv",
    "read_kinetics_csv",
    "read_ucf51",
    "read_ucf101",
]


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
