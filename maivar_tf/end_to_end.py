"""Algorithm 1 end to end: the heads trained on the TFRecords' frames and audio-images.

``train.end_to_end`` runs the three stages of :mod:`maivar_tf.training` (Shaikh et al. 2024,
Algorithm 1: audio MLP, VMLP, fusion MLP initialised from the trained VMLP) with the backbones
inside each stage's model (:func:`maivar_tf.models.end_to_end.build_stage_model`):

* the **VMLP stage** reads the frames of every training clip from the TFRecords with TSN's
  augmentation (random segment offsets when the shards store more frames than K, multi-scale
  crops, horizontal flips: :class:`maivar_tf.end_to_end_data.TFRecordInput`), runs BNInception
  on each of the K segments and the VMLP on their consensus;
* the **audio stage** reads the audio-images (never augmented) through the audio backbone
  when it is fine-tuned; a frozen audio backbone sees the same image every epoch, so its
  features are the features folder's and the stage is the feature path's;
* the **fusion stage** starts from the trained VMLP (Algorithm 1) and from the backbones the
  earlier stages left, and reads frames plus audio-images (fine-tuned audio) or the cached
  audio features (frozen audio).

``train.finetune`` (``none``, ``video``, ``audio``, ``both``) says which backbones train, with
TSN's partial BatchNorm (``train.partial_bn``) and a learning rate ``train.backbone_lr_multiplier``
times the stage's (:class:`~maivar_tf.models.end_to_end.BackboneAdam`). With ``none`` the
models are the feature path's (same logits on the same inputs), trained on augmented frames.

The run starts from a features folder (``maivar extract``, ``data.features_dir``): its
backbones are the initial ones, its training features give the heads' input statistics, the
validation hold-out (``train.val_fraction``) and the cached audio features. The run folder is
the feature path's (``<stage>.keras`` heads, ``<stage>/`` logs and backups, ``run_info.json``)
plus ``<stage>/<kind>.weights.h5``, the backbones a stage trained (written before its
``.keras``); serving loads the last stage's (:mod:`maivar_tf.run_backbones`).

Distribution, precision and resume are the feature path's: the models are built and compiled
inside ``strategy.scope()``, batches are global, ``train.mixed_precision`` is
``mixed_float16`` on a GPU and ``mixed_bfloat16`` on a CPU with native bfloat16,
``train.jit_compile`` compiles the step with XLA, and a killed stage resumes from its
``BackupAndRestore`` backup with the data order, augmentation and dropout of each epoch
functions of ``(seed, stage, epoch)`` only.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from maivar_tf.artifacts import FeatureInfo, RunInfo
from maivar_tf.calibration import calibration_record, holdout_validation
from maivar_tf.config import ExperimentConfig
from maivar_tf.distribute import (
    get_strategy,
    training_precision,
    worker_info,
    worker_run_dir,
)
from maivar_tf.feature_checks import check_compatible, check_features
from maivar_tf.run_backbones import backbone_weights_path, trained_backbone_path
from maivar_tf.runs import STAGES, TrainedRun, read_csv_log, stage_log_path
from maivar_tf.stage_fit import ExtraCallbacks, StageHooks, StagePlan, train_stage

logger = logging.getLogger(__name__)

#: Which backbones each ``train.finetune`` value trains.
FINETUNED = {"none": (), "video": ("video",), "audio": ("audio",), "both": ("video", "audio")}
#: The backbones each stage's model holds (the audio one only when it is fine-tuned).
STAGE_BACKBONES = {"audio_mlp": ("audio",), "vmlp": ("video",), "fusion": ("video", "audio")}


@dataclasses.dataclass(frozen=True)
class BackboneSource:
    """How to build one backbone of the run: its architecture, input side and weights."""

    kind: str
    architecture: str
    image_size: int
    weights: str


def initial_backbones(features_dir: str | Path, audio_backbone: str) -> dict[str, BackboneSource]:
    """The backbones the features folder's features came from (the run's initial ones).

    Raises:
        FileNotFoundError: no ``feature_info.json`` (run ``maivar extract`` first).
        WeightsError: a backbone whose weights cannot be recovered.
    """
    from maivar_tf.models.weights import WeightsError

    if not FeatureInfo.exists(features_dir):
        raise FileNotFoundError(
            f"train.end_to_end starts from the backbones and training features of "
            f"{features_dir}, which holds no {FeatureInfo.FILE}; run `maivar extract` first")
    info = FeatureInfo.read(features_dir)
    out = {}
    for kind in ("video", "audio"):
        spec = info.backbone(kind, audio_backbone if kind == "audio" else None)
        weights = spec.weights_to_load(features_dir)
        if weights is None:
            raise WeightsError(f"{FeatureInfo.path(features_dir)}: the {kind} backbone's "
                               f"weights ({spec.weights!r}) cannot be recovered; re-extract")
        out[kind] = BackboneSource(kind, spec.architecture, int(spec.image_size), str(weights))
    return out


def _stage_backbone(run_dir: Path, source: BackboneSource, stage: str) -> BackboneSource:
    """The ``kind`` backbone stage ``stage`` starts from: the earlier stage's that trained it."""
    path = trained_backbone_path(run_dir, source.kind, before=stage)
    return source if path is None else dataclasses.replace(source, weights=str(path))


@dataclasses.dataclass
class _Context:
    cfg: ExperimentConfig
    run_dir: Path
    strategy: tf.distribute.Strategy
    sources: dict[str, BackboneSource]
    train: Any
    val: Any
    builders: dict[str, Callable[..., keras.Model]]
    verbose: Any
    extra_callbacks: ExtraCallbacks | None

    @property
    def finetuned(self) -> tuple[str, ...]:
        return FINETUNED[self.cfg.train.finetune]


def _inputs(ctx: _Context, stage: str, split: Any):
    """The TFRecord input of ``stage`` over the examples of FeatureSet ``split``."""
    from maivar_tf.end_to_end_data import TFRecordInput

    rep = ctx.cfg.model.representation
    audio_image = rep if stage != "vmlp" and "audio" in ctx.finetuned else None
    cached = None
    if stage == "fusion" and "audio" not in ctx.finetuned:
        cached = (split.ids, split.audio)  # TFRecordInput pairs the rows by id
    return TFRecordInput(ctx.cfg.data.output_dir, "train", ctx.cfg.data, ids=split.ids,
                         frames=stage != "audio_mlp", audio_image=audio_image,
                         audio_features=cached)


def _backbones(ctx: _Context, stage: str) -> dict[str, Any]:
    """The stage's backbones, built (inside the strategy scope) and frozen or not."""
    from maivar_tf.models.end_to_end import build_training_backbone, set_finetune

    out = {}
    for kind in STAGE_BACKBONES[stage]:
        if kind == "audio" and kind not in ctx.finetuned:
            continue  # frozen audio: the cached features
        src = _stage_backbone(ctx.run_dir, ctx.sources[kind], stage)
        model = build_training_backbone(kind, src.weights, src.image_size,
                                        architecture=src.architecture)
        set_finetune(model, kind in ctx.finetuned, partial_bn=ctx.cfg.train.partial_bn,
                     num_replicas=ctx.strategy.num_replicas_in_sync)
        out[kind] = model
    return out


def _stage_model(ctx: _Context, stage: str, heads: dict[str, Any], held: dict[str, Any]):
    """A builder of stage ``stage``'s end-to-end model; ``held`` gets its backbones."""
    from maivar_tf.models.end_to_end import build_stage_model

    def build() -> keras.Model:
        build_head = ctx.builders[stage]
        head = build_head(heads["vmlp"], heads["audio_mlp"]) if stage == "fusion" else build_head()
        held.clear()
        held.update(_backbones(ctx, stage))
        data = ctx.cfg.data
        return build_stage_model(stage, head, video_backbone=held.get("video"),
                                 audio_backbone=held.get("audio"),
                                 num_segments=int(data.num_segments),
                                 crop_size=int(data.crop_size),
                                 image_size=int(ctx.sources["audio"].image_size))

    return build


def _hooks(ctx: _Context, stage: str, held: dict[str, Any]) -> StageHooks:
    from maivar_tf.late_stage import save_model_atomic
    from maivar_tf.models.end_to_end import BackboneAdam
    from maivar_tf.models.weights import save_weights_atomic
    from maivar_tf.runs import load_head

    def optimizer(model: keras.Model, plan: StagePlan):
        trained = [v for kind, m in held.items() if kind in ctx.finetuned
                   for v in m.trainable_variables]
        return BackboneAdam(plan.learning_rate, backbone_variables=trained,
                            multiplier=ctx.cfg.train.backbone_lr_multiplier)

    def save(model: keras.Model, final: Path) -> None:
        for kind, backbone in held.items():
            if kind in ctx.finetuned:  # before <stage>.keras, the stage's completion mark
                save_weights_atomic(backbone, backbone_weights_path(final.parent, stage, kind))
        save_model_atomic(model.get_layer(stage), final)  # the head: named as its stage

    return StageHooks(optimizer=optimizer, save=save, load=load_head,
                      jit_compile=ctx.cfg.train.jit_compile)


def _train_stage(ctx: _Context, stage: str, plan: StagePlan, heads: dict[str, Any]):
    """One stage: the feature path's for a frozen audio stage, else end to end."""
    labels = np.asarray(ctx.train.labels, np.int64)
    if stage == "audio_mlp" and "audio" not in ctx.finetuned:
        from maivar_tf.training import stage_inputs

        val = None if ctx.val is None else (stage_inputs(stage, ctx.val),
                                            np.asarray(ctx.val.labels, np.int64))
        head, info = train_stage(plan, ctx.builders[stage],
                                 (stage_inputs(stage, ctx.train), labels), val, ctx.strategy,
                                 ctx.run_dir, verbose=ctx.verbose,
                                 extra_callbacks=ctx.extra_callbacks)
        return head, {**info, "end_to_end": False}, None
    held: dict[str, Any] = {}
    build = _stage_model(ctx, stage, heads, held)
    val_in = None if ctx.val is None else _inputs(ctx, stage, ctx.val)
    model, info = train_stage(plan, build, _inputs(ctx, stage, ctx.train), val_in,
                              ctx.strategy, ctx.run_dir, verbose=ctx.verbose,
                              extra_callbacks=ctx.extra_callbacks,
                              hooks=_hooks(ctx, stage, held))
    head = model if info["skipped"] else model.get_layer(stage)
    info = {**info, "end_to_end": True,
            "trained_backbones": [k for k in STAGE_BACKBONES[stage] if k in ctx.finetuned]}
    return head, info, (None if info["skipped"] else model)


def _fit_metrics(run_dir: Path, stage: str) -> dict[str, Any]:
    """The stage's last-epoch metrics from its CSV log (the fit's running means)."""
    log = read_csv_log(stage_log_path(run_dir, stage))
    out: dict[str, Any] = {}
    for split, prefix in (("train", ""), ("val", "val_")):
        values = {m: log[prefix + m][-1] for m in ("loss", "accuracy")
                  if log.get(prefix + m) and np.isfinite(log[prefix + m][-1])}
        if values:
            out[split] = {**values, "source": "fit log (last epoch)"}
    return out


def _val_logits(ctx: _Context, fusion_model: keras.Model | None) -> tuple[Any, Any]:
    """The fusion model's logits and labels on the validation examples (None without them)."""
    if ctx.val is None or fusion_model is None:
        return None, None
    data = _inputs(ctx, "fusion", ctx.val)
    default = tf.distribute.get_strategy()
    ds, steps = data.distributed(default, 32, training=False)
    logits, labels = [], []
    for x, y, w in ds.take(steps):
        keep = np.asarray(w) > 0
        logits.append(np.asarray(fusion_model(x, training=False), np.float32)[keep])
        labels.append(np.asarray(y)[keep])
    return np.concatenate(logits), np.concatenate(labels)


def run_end_to_end(cfg: ExperimentConfig, run_dir: str | Path | None = None, *,
                   strategy: tf.distribute.Strategy | None = None, verbose: Any = "auto",
                   extra_callbacks: ExtraCallbacks | None = None) -> TrainedRun:
    """Trains Algorithm 1 end to end from ``cfg.data.output_dir``'s TFRecords.

    Args:
        cfg: the experiment (``train.end_to_end`` and ``train.finetune``; ``data.features_dir``
            the features folder the run starts from).
        run_dir: where the run lives (default ``cfg.train.output_dir``).
        strategy: a strategy to use instead of ``get_strategy(cfg.train.strategy)``.
        verbose: ``model.fit`` verbosity (see :func:`maivar_tf.training.run_algorithm1`).
        extra_callbacks: a function of the stage name returning more callbacks for its fit.

    Returns:
        The :class:`~maivar_tf.runs.TrainedRun` (the heads; the run's backbones are in its
        folder).

    Raises:
        FileNotFoundError: no features folder (run ``maivar extract`` first) or no shards.
        ValueError: inconsistent training features.
    """
    from maivar_tf.localisation import load_split
    from maivar_tf.training import _builders  # the feature path's head builders

    strategy = strategy or get_strategy(cfg.train.strategy)
    out_dir = worker_run_dir(run_dir or cfg.train.output_dir, worker_info(strategy))
    rep, audio_backbone = cfg.model.representation, cfg.model.audio_backbone
    sources = initial_backbones(cfg.data.features_dir, audio_backbone)
    train = load_split(cfg.data.features_dir, "train", rep, audio_backbone)
    check_features(train, "train")
    val = None
    if cfg.train.val_fraction > 0:
        train, val = holdout_validation(train, cfg.train.val_fraction)
        if val is not None:
            check_compatible(train, val)
    out_dir.mkdir(parents=True, exist_ok=True)
    with training_precision(cfg.train.mixed_precision, cpu_bfloat16=True):
        return _run(_Context(cfg, out_dir, strategy, sources, train, val, _builders(cfg, train),
                             verbose, extra_callbacks))


def _check_same_training(old: RunInfo, cfg: ExperimentConfig, run_dir: Path) -> None:
    """Finished stages are reused only by a run that trains them the same way."""
    train = old.config.get("train", {}) if isinstance(old.config, dict) else {}
    was = (bool(train.get("end_to_end", False)), str(train.get("finetune", "none")))
    if was != (True, cfg.train.finetune) and any((run_dir / f"{s}.keras").exists()
                                                  for s in STAGES):
        raise ValueError(f"{run_dir} holds stages trained with train.end_to_end={was[0]}, "
                         f"train.finetune={was[1]!r}, not end to end with "
                         f"{cfg.train.finetune!r}; use another run folder (train.output_dir)")


def _run(ctx: _Context) -> TrainedRun:
    from maivar_tf.training import _run_info, stage_plans

    cfg = ctx.cfg
    record = _run_info(cfg, ctx.train, ctx.val, ctx.strategy, worker_info(ctx.strategy))
    stages: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    old_calibration: dict[str, Any] = {}
    if RunInfo.exists(ctx.run_dir):
        old = RunInfo.read(ctx.run_dir)
        _check_same_training(old, cfg, ctx.run_dir)
        stages.update(old.stages)
        metrics.update(old.metrics)
        old_calibration = dict(old.calibration)
    plans = stage_plans(cfg.train)
    heads: dict[str, Any] = {}
    fusion_model = None
    for stage in STAGES:
        head, info, model = _train_stage(ctx, stage, plans[stage], heads)
        if stage == "fusion":
            info, fusion_model = {"method": cfg.model.fusion, **info}, model
        heads[stage] = head
        if not info["skipped"] or stage not in stages:
            stages[stage] = info
            metrics[stage] = _fit_metrics(ctx.run_dir, stage)
        record = dataclasses.replace(record, stages=dict(stages), metrics=dict(metrics))
        record.write(ctx.run_dir)
    if fusion_model is None and ctx.val is not None:  # loaded: keep what its run fitted
        calibration = old_calibration
    else:
        calibration = calibration_record(*_val_logits(ctx, fusion_model))
    record = dataclasses.replace(record, calibration=calibration)
    record.write(ctx.run_dir)
    histories = {s: read_csv_log(stage_log_path(ctx.run_dir, s)) for s in STAGES}
    return TrainedRun(heads["audio_mlp"], heads["vmlp"], heads["fusion"], histories,
                      ctx.run_dir, record)


def train_from_config(cfg: ExperimentConfig, run_dir: str | Path) -> TrainedRun:
    """``maivar train``: :func:`run_end_to_end` with ``train.end_to_end``, else Algorithm 1 on
    the features of ``data.features_dir`` (:func:`maivar_tf.training.run_algorithm1`)."""
    if cfg.train.end_to_end:
        return run_end_to_end(cfg, run_dir)
    from maivar_tf.localisation import load_split, needs_segments
    from maivar_tf.training import run_algorithm1

    train = load_split(cfg.data.features_dir, "train", cfg.model.representation,
                       cfg.model.audio_backbone, segments=needs_segments(cfg))
    return run_algorithm1(cfg, train, val=None, run_dir=run_dir)


__all__ = ["FINETUNED", "STAGE_BACKBONES", "BackboneSource", "backbone_weights_path",
           "initial_backbones", "run_end_to_end", "train_from_config", "trained_backbone_path"]
