"""The ``saliency`` stage of a run with ``model.selection: audio_topk`` (issue 12).

After Algorithm 1's stages (and the localiser), :func:`saliency_stage` trains the scorer of
:mod:`maivar_tf.models.saliency` on the preview backbone's per-segment features
(``model.preview_backbone``; ``train.saliency``; seed ``train.seed + 4``) through the same
:func:`maivar_tf.training.train_stage` machinery (resume, logs, ``run_dir/saliency.keras``).
The preview features are loaded from ``data.features_dir`` (``load_features(...,
audio_backbone=preview, segments=True)``) unless given, and paired with the run's training and
validation features by example id. Kept apart from :mod:`maivar_tf.training` so that module
stays short.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from maivar_tf.models.saliency import build_saliency_scorer, event_targets, preview_scale
from maivar_tf.runs import SALIENCY_STAGE
from maivar_tf.selection import load_preview, preview_rows

logger = logging.getLogger(__name__)

#: The saliency stage's seed offset from ``train.seed`` (after the localiser's 3).
SALIENCY_SEED_OFFSET = 4


def saliency_plan(tc: Any) -> Any:
    """The ``saliency`` stage's :class:`~maivar_tf.training.StagePlan` (``train.saliency``)."""
    from maivar_tf.training import StagePlan

    sc = tc.saliency
    return StagePlan(SALIENCY_STAGE, sc.epochs, sc.learning_rate, sc.batch_size,
                     tc.seed + SALIENCY_SEED_OFFSET)


def saliency_xy(features: Any, preview: Any, supervision: str) -> tuple[np.ndarray, np.ndarray]:
    """The scorer's ``(preview [N, K, Dp], targets)`` for ``features``' examples: the clip
    labels ``[N]`` (``clip``) or the event indicator ``[N, K]`` (``segments``).

    Raises:
        ValueError: ``segments`` supervision on features without segment labels, or examples
            without preview features.
    """
    x = preview_rows(preview, features.ids)
    if x.shape[1] != np.asarray(features.video).shape[1]:
        raise ValueError(f"preview features have K={x.shape[1]}, the run's features "
                         f"K={np.asarray(features.video).shape[1]}")
    if supervision == "segments":
        labels = getattr(features, "segment_labels", None)
        if labels is None:
            raise ValueError("model.saliency: 'segments' trains the saliency scorer on segment "
                             "labels, but these features hold none (no annotated spans in the "
                             "TFRecords); use model.saliency: clip")
        return x, event_targets(labels)
    return x, np.asarray(features.labels, np.int64)


def saliency_stage(cfg: Any, train: Any, val: Any, strategy: Any, run_dir: Path, *,
                   preview: Any = None, verbose: Any = "auto",
                   extra_callbacks: Any = None) -> tuple[Any, dict[str, Any]]:
    """Trains (or loads) ``run_dir/saliency.keras``; returns ``(scorer, stage_info)``.

    Args:
        cfg: the experiment (``model.saliency``, ``model.preview_backbone``,
            ``train.saliency``, ``model.dropout`` / ``l1``).
        train, val: the run's FeatureSets (val may be None).
        strategy: the distribution strategy.
        run_dir: the run folder.
        preview: the preview FeatureSet of the training split (every id of ``train`` and
            ``val``); default: loaded from ``cfg.data.features_dir``.
        verbose, extra_callbacks: as :func:`maivar_tf.training.train_stage`.
    """
    from maivar_tf.models.heads import feature_statistics
    from maivar_tf.training import train_stage

    mc = cfg.model
    if preview is None:
        preview = load_preview(cfg.data.features_dir, "train", cfg.model.representation,
                               mc.preview_backbone)
    train_xy = saliency_xy(train, preview, mc.saliency)
    val_xy = None if val is None else saliency_xy(val, preview, mc.saliency)
    scale = preview_scale(train_xy[0])
    mean, var = feature_statistics(train_xy[0] * np.float32(scale))
    k, dp = int(train_xy[0].shape[1]), int(train_xy[0].shape[2])

    def build():
        return build_saliency_scorer(len(train.class_names), k, dp, mc.saliency, mean, var,
                                     scale=scale, dropout=mc.dropout, l1=mc.l1)

    model, info = train_stage(saliency_plan(cfg.train), build, train_xy, val_xy, strategy,
                              run_dir, verbose=verbose, extra_callbacks=extra_callbacks)
    info = {"supervision": mc.saliency, "preview_backbone": mc.preview_backbone, **info}
    return model, info


def saliency_metrics(model: Any, train: Any, val: Any, preview: Any,
                     supervision: str) -> dict[str, Any]:
    """The scorer's accuracy (clip class, or event/background per segment) per split."""
    from maivar_tf.evaluation import model_outputs

    out = {}
    for split, data in (("train", train), ("val", val)):
        if data is None:
            continue
        x, y = saliency_xy(data, preview, supervision)
        pred = np.argmax(model_outputs(model, x), axis=-1)
        out[split] = {"accuracy": float(np.mean(pred == y)) if y.size else None,
                      "num_examples": int(len(x))}
    return out


def record_saliency_stage(cfg: Any, train: Any, val: Any, strategy: Any, out_dir: Path,
                          preview: Any, models: dict[str, Any], record: Any,
                          **kw: Any) -> Any:
    """:func:`saliency_stage` inside a run: loads the preview features when not given, puts
    the scorer into ``models``, records its settings and metrics in the run info (written)."""
    if preview is None:
        preview = load_preview(cfg.data.features_dir, "train", cfg.model.representation,
                               cfg.model.preview_backbone)
    model, info = saliency_stage(cfg, train, val, strategy, out_dir, preview=preview, **kw)
    models[SALIENCY_STAGE] = model
    stages, metrics = dict(record.stages), dict(record.metrics)
    if not info["skipped"] or SALIENCY_STAGE not in stages:
        stages[SALIENCY_STAGE] = info
        metrics[SALIENCY_STAGE] = saliency_metrics(model, train, val, preview, cfg.model.saliency)
        logger.info("stage %s: %s", SALIENCY_STAGE, metrics[SALIENCY_STAGE])
    record = dataclasses.replace(record, stages=stages, metrics=metrics)
    record.write(out_dir)
    return record


__all__ = ["SALIENCY_SEED_OFFSET", "record_saliency_stage", "saliency_metrics", "saliency_plan",
           "saliency_stage", "saliency_xy"]
