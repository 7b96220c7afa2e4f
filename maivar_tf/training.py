"""MAiVAR's three heads trained with ``model.fit``: the paper's Algorithm 1.

Algorithm 1 (Shaikh et al. 2024) on frozen backbone features:

1. train the audio MLP on audio-image features (``train.audio``: epochs, Adam learning rate,
   global batch);
2. train the VMLP on the K segment features (``train.video``; the paper: 1e-4, batch 512);
3. build the fusion model of ``model.fusion`` (:func:`maivar_tf.models.fusion.build_fusion`;
   the default ``vmlp_init`` is the paper's fusion MLP from the trained VMLP: video rows and
   classifier copied, audio rows zero);
4. train it on ``[video, audio]`` (``train.fusion``; the paper: 3e-5, batch 768), except
   ``late``, which is not fitted: its audio weight is chosen on the validation split (on the
   training split when there is none) and recorded in the stage info;
5. with ``model.localisation`` (temporal binding only), a fourth stage ``localiser``
   (``train.localisation``, seed ``train.seed + 3``): the per-segment head of
   :func:`maivar_tf.models.temporal.build_localiser` on the frozen fusion model's per-segment
   features, trained on the segment labels ``[N, K]`` (class ``C`` = background); skipped, with
   a log line, when the features hold no segment labels;
6. with ``model.selection: audio_topk``, a last stage ``saliency`` (``train.saliency``, seed
   ``train.seed + 4``): the saliency scorer on the preview backbone's per-segment features
   (:mod:`maivar_tf.saliency_stage`).

``train.fusion.modality_dropout`` (``p > 0``) makes the fusion model replace each training
clip's audio input by the silent audio-image's features with probability ``p``
(:mod:`maivar_tf.models.modality`).

Then the fusion logits' temperature is fitted on the validation split (Guo et al. 2017,
:mod:`maivar_tf.calibration`; held out of ``train`` when ``train.val_fraction > 0``) and
recorded in ``run_info.json``; without validation data it is 1.0.

The loss is sparse categorical cross-entropy on logits plus the heads' L1 kernel penalties.
Inputs are standardised inside each model with the training set's per-feature mean and variance.
Stage ``i`` (0, 1, 2 in the order above) seeds initialisation, dropout and data order with
``train.seed + i``, so a repeated run reproduces its figures; the data order and the dropout
masks of each epoch are functions of that seed and the epoch (:mod:`maivar_tf.seeds`), so a
run killed at any epoch and resumed ends with the weights of the uninterrupted run.

Distribution (:mod:`maivar_tf.distribute`): every model is built and compiled inside
``strategy.scope()``, batch sizes are global, and the datasets are sharded per worker.
Fault tolerance (:mod:`maivar_tf.callbacks`): each stage writes under ``run_dir/<stage>/``
(backup, CSV log, TensorBoard, best/last checkpoint) and resumes from its backup when killed;
a finished stage is saved as ``run_dir/<stage>.keras`` and skipped when the run is repeated.
``run_info.json`` (:class:`maivar_tf.artifacts.RunInfo`) is rewritten after every stage.

Example:
    >>> from maivar_tf.features import load_features
    >>> train = load_features(cfg.data.features_dir, "train", cfg.model.representation)
    >>> run = run_algorithm1(cfg, train)
    >>> run.fusion({"video_features": v, "audio_features": a})
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from maivar_tf.artifacts import RunInfo
from maivar_tf.calibration import calibration_record, holdout_validation
from maivar_tf.config import STAGE_SECTIONS, ExperimentConfig, TrainConfig
from maivar_tf.distribute import (
    WorkerInfo,
    get_strategy,
    training_precision,
    worker_info,
    worker_run_dir,
)
from maivar_tf.evaluation import evaluate_arrays, model_outputs
from maivar_tf.feature_checks import check_compatible, check_features, check_segment_features
from maivar_tf.late_stage import choose_late_stage
from maivar_tf.localisation import localisation_labels, localisation_metrics, segment_audio
from maivar_tf.models.fusion import build_fusion
from maivar_tf.models.heads import (
    AUDIO_INPUT,
    AUDIO_SEGMENTS_INPUT,
    VIDEO_INPUT,
    build_audio_mlp,
    build_video_mlp,
    feature_statistics,
)
from maivar_tf.models.temporal import build_localiser
from maivar_tf.runs import (
    LOCALISER_STAGE,
    SALIENCY_STAGE,
    STAGES,
    TrainedRun,
    read_csv_log,
    stage_log_path,
)
from maivar_tf.stage_fit import ExtraCallbacks, StageHooks, StagePlan, train_stage

logger = logging.getLogger(__name__)

def stage_plans(tc: TrainConfig) -> dict[str, StagePlan]:
    """The three stages of ``tc`` by stage name, in training order (seeds ``seed + 0, 1, 2``)."""
    plans = {}
    for index, (section, name) in enumerate(STAGE_SECTIONS):
        sc = tc.stage(section)
        plans[name] = StagePlan(name, sc.epochs, sc.learning_rate, sc.batch_size, tc.seed + index)
    return plans


def localiser_plan(tc: TrainConfig) -> StagePlan:
    """The ``localiser`` stage (``train.localisation``; seed ``train.seed + 3``)."""
    sc = tc.localisation
    return StagePlan(LOCALISER_STAGE, sc.epochs, sc.learning_rate, sc.batch_size,
                     tc.seed + len(STAGE_SECTIONS))


def stage_inputs(stage: str, features: Any, method: str = "vmlp_init") -> Any:
    """What the head of ``stage`` takes from a FeatureSet (an array, or a dict for fusion; the
    per-segment audio for a ``temporal_binding`` fusion ``method`` and the localiser)."""
    if stage == "audio_mlp":
        return np.asarray(features.audio, np.float32)
    if stage == "vmlp":
        return np.asarray(features.video, np.float32)
    video = np.asarray(features.video, np.float32)
    if stage == LOCALISER_STAGE or method == "temporal_binding":
        return {VIDEO_INPUT: video, AUDIO_SEGMENTS_INPUT: segment_audio(features)}
    return {VIDEO_INPUT: video, AUDIO_INPUT: np.asarray(features.audio, np.float32)}


def run_algorithm1(cfg: ExperimentConfig, train: Any, val: Any = None,
                   run_dir: str | Path | None = None, *,
                   strategy: tf.distribute.Strategy | None = None, verbose: Any = "auto",
                   extra_callbacks: ExtraCallbacks | None = None,
                   preview: Any = None) -> TrainedRun:
    """Trains the audio MLP, the VMLP and the fusion model (the paper's Algorithm 1).

    The fusion model is ``cfg.model.fusion``'s (:func:`maivar_tf.models.fusion.build_fusion`);
    ``run_info.json`` records it in ``config.model.fusion`` and ``stages.fusion.method``.

    Stages whose ``run_dir/<stage>.keras`` exists are loaded instead of trained; an interrupted
    stage resumes from its ``BackupAndRestore`` backup. ``run_info.json`` is rewritten after
    every stage with the class names, representation, K, feature widths, the config, the
    per-stage training settings and final metrics (computed exactly in this process).

    Args:
        cfg: the experiment (``model`` builds the heads; ``train`` sets the three stages,
            strategy, precision and seed).
        train: a :class:`maivar_tf.features.FeatureSet` (``video [N, K, Dv]``,
            ``audio [N, Da]``, ``labels [N]``, ``class_names``, ``representation``); its
            statistics standardise every model's inputs.
        val: an optional FeatureSet for validation metrics, best-checkpoint selection and
            the fusion temperature; default: ``train.val_fraction`` of ``train`` held out
            (:func:`maivar_tf.calibration.holdout_validation`), or none when it is 0.
        run_dir: where the run lives (default ``cfg.train.output_dir``).
        strategy: a strategy to use instead of ``get_strategy(cfg.train.strategy)``.
        verbose: ``model.fit`` verbosity; ``"auto"``: one line per epoch on a terminal, a
            line every 30 s (and one per stage at the end) otherwise.
        extra_callbacks: a function of the stage name returning more callbacks for its fit.
        preview: ``audio_topk``: the training split's preview FeatureSet (default: loaded
            from ``data.features_dir``).

    Returns:
        The :class:`~maivar_tf.runs.TrainedRun` (its ``run_dir`` is this worker's folder).

    Raises:
        ValueError: inconsistent features (shapes, NaN or Inf values, labels outside the class
            list).
    """
    check_features(train, "train")
    check_segment_features(train, "train", cfg)
    if val is None and cfg.train.val_fraction > 0:
        train, val = holdout_validation(train, cfg.train.val_fraction)
    if val is not None:
        check_compatible(train, val)
        check_segment_features(val, "val", cfg)
    if train.representation != cfg.model.representation:
        warnings.warn(f"training on {train.representation!r} audio features but "
                      f"model.representation is {cfg.model.representation!r}", stacklevel=2)
    strategy = strategy or get_strategy(cfg.train.strategy)
    info = worker_info(strategy)
    out_dir = worker_run_dir(run_dir or cfg.train.output_dir, info)
    out_dir.mkdir(parents=True, exist_ok=True)
    with training_precision(cfg.train.mixed_precision):
        return _run(cfg, train, val, out_dir, strategy, info, verbose, extra_callbacks, preview)


def _run_info(cfg: ExperimentConfig, train: Any, val: Any, strategy: tf.distribute.Strategy,
              info: WorkerInfo) -> RunInfo:
    return RunInfo(
        class_names=tuple(train.class_names), representation=train.representation,
        num_segments=int(train.video.shape[1]), video_feature_dim=int(train.video.shape[2]),
        audio_feature_dim=int(train.audio.shape[1]), config=cfg.to_dict(),
        features_dir=str(cfg.data.features_dir), num_train=int(len(train.labels)),
        num_val=int(len(val.labels)) if val is not None else 0,
        strategy=type(strategy).__name__, num_replicas=strategy.num_replicas_in_sync,
        num_workers=info.num_workers, mixed_precision=keras.mixed_precision.global_policy().name,
        versions={"tensorflow": tf.__version__, "keras": keras.__version__})


def _builders(cfg: ExperimentConfig, train: Any) -> dict[str, Callable[..., keras.Model]]:
    """Per stage, a builder of its head (fusion's takes the trained VMLP)."""
    mc, num_classes = cfg.model, len(train.class_names)
    num_segments, video_dim = int(train.video.shape[1]), int(train.video.shape[2])
    audio_dim = int(train.audio.shape[1])
    v_mean, v_var = feature_statistics(train.video)
    a_mean, a_var = feature_statistics(train.audio)
    f_mean, f_var = a_mean, a_var  # the fusion's audio: per segment for temporal binding
    if mc.fusion == "temporal_binding":
        f_mean, f_var = feature_statistics(segment_audio(train))
    dropout = cfg.train.fusion.modality_dropout
    silent = getattr(train, "silent_audio", None) if dropout else None
    return {
        LOCALISER_STAGE: None,  # built from the trained fusion model (localiser_stage)
        "audio_mlp": lambda: build_audio_mlp(num_classes, mc, a_mean, a_var,
                                             feature_dim=audio_dim),
        "vmlp": lambda: build_video_mlp(num_classes, num_segments, mc, v_mean, v_var,
                                        feature_dim=video_dim),
        "fusion": lambda vmlp, audio_mlp, **kw: build_fusion(
            mc.fusion, vmlp, audio_mlp, mc, f_mean, f_var, audio_dim=audio_dim,
            seed=cfg.train.seed, modality_dropout=dropout, silent_audio=silent, **kw),
    }


def _check_same_fusion(old: RunInfo, cfg: ExperimentConfig, out_dir: Path) -> None:
    """A saved fusion stage is reused only by a run of the same ``model.fusion``."""
    method = old.config.get("model", {}).get("fusion", "vmlp_init")  # older runs: vmlp_init
    if method != cfg.model.fusion and (out_dir / "fusion.keras").exists():
        raise ValueError(f"{out_dir} holds a fusion stage made with model.fusion={method!r}, "
                         f"not {cfg.model.fusion!r}; use another run folder (train.output_dir)")


def _stage_metrics(model: keras.Model, stage: str, train: Any, val: Any,
                   method: str) -> dict[str, Any]:
    if stage == LOCALISER_STAGE:
        return {split: localisation_metrics(data.segment_labels,
                                            model_outputs(model, stage_inputs(stage, data)))
                for split, data in (("train", train), ("val", val))
                if data is not None and getattr(data, "segment_labels", None) is not None}
    metrics = {"train": evaluate_arrays(model, stage_inputs(stage, train, method), train.labels)}
    if val is not None:
        metrics["val"] = evaluate_arrays(model, stage_inputs(stage, val, method), val.labels)
    return metrics


def _localiser_xy(features: Any) -> tuple[Any, np.ndarray] | None:
    labels = getattr(features, "segment_labels", None) if features is not None else None
    if labels is None:
        return None
    return (stage_inputs(LOCALISER_STAGE, features),
            localisation_labels(labels, len(features.class_names)))


def localiser_stage(cfg: ExperimentConfig, fusion: keras.Model, train: Any, val: Any,
                    strategy: tf.distribute.Strategy, run_dir: Path, *, verbose: Any = "auto",
                    extra_callbacks: ExtraCallbacks | None = None
                    ) -> tuple[keras.Model | None, dict[str, Any] | None]:
    """The ``localiser`` stage (:func:`train_stage` on the segment labels), or ``(None, None)``
    with a log line when the training features hold no segment labels."""
    train_xy = _localiser_xy(train)
    if train_xy is None:
        logger.warning("stage %s: the training features hold no segment labels (no spans in "
                       "the TFRecords); not training the localiser (model.localisation)",
                       LOCALISER_STAGE)
        return None, None
    num_classes = len(train.class_names)
    return train_stage(localiser_plan(cfg.train),
                       lambda: build_localiser(fusion, num_classes, cfg.model), train_xy,
                       _localiser_xy(val), strategy, run_dir, verbose=verbose,
                       extra_callbacks=extra_callbacks)


def _train_one(name: str, cfg: ExperimentConfig, build: Callable[..., keras.Model],
               plans: dict[str, StagePlan], models: dict[str, keras.Model], train: Any,
               val: Any, strategy: tf.distribute.Strategy, out_dir: Path, verbose: Any,
               extra_callbacks: ExtraCallbacks | None) -> tuple[Any, Any]:
    """One stage of :func:`_run` (``(None, None)``: the localiser, not asked for or skipped)."""
    if name == LOCALISER_STAGE:
        if not cfg.model.localisation:
            return None, None
        return localiser_stage(cfg, models["fusion"], train, val, strategy, out_dir,
                               verbose=verbose, extra_callbacks=extra_callbacks)
    if name == "fusion":
        build = functools.partial(build, models["vmlp"], models["audio_mlp"])
        if cfg.model.fusion == "late":
            return choose_late_stage(plans[name], build, models, train, val, strategy, out_dir)
    method = cfg.model.fusion
    return train_stage(
        plans[name], build, (stage_inputs(name, train, method), np.asarray(train.labels, np.int64)),
        None if val is None else (stage_inputs(name, val, method),
                                  np.asarray(val.labels, np.int64)),
        strategy, out_dir, verbose=verbose, extra_callbacks=extra_callbacks)


def _run(cfg: ExperimentConfig, train: Any, val: Any, out_dir: Path,
         strategy: tf.distribute.Strategy, info: WorkerInfo, verbose: Any,
         extra_callbacks: ExtraCallbacks | None, preview: Any = None) -> TrainedRun:
    record = _run_info(cfg, train, val, strategy, info)
    stages: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    if RunInfo.exists(out_dir):  # keep what earlier (resumed) invocations recorded
        old = RunInfo.read(out_dir)
        _check_same_fusion(old, cfg, out_dir)
        stages.update(old.stages)
        metrics.update(old.metrics)
    builders = _builders(cfg, train)
    plans = stage_plans(cfg.train)
    val_labels = None if val is None else np.asarray(val.labels, np.int64)
    models: dict[str, keras.Model] = {}
    method = cfg.model.fusion
    for name in (*STAGES, LOCALISER_STAGE):
        model, stage_info = _train_one(name, cfg, builders[name], plans, models, train, val,
                                       strategy, out_dir, verbose, extra_callbacks)
        if model is None:
            break
        if name == "fusion":
            stage_info = {"method": cfg.model.fusion, **stage_info}
        models[name] = model
        if not stage_info["skipped"] or name not in stages:
            stages[name] = stage_info
            metrics[name] = _stage_metrics(model, name, train, val, method)
            logger.info("stage %s: %s", name, metrics[name])
        record = dataclasses.replace(record, stages=dict(stages), metrics=dict(metrics))
        record.write(out_dir)
    if cfg.model.selection == "audio_topk":
        from maivar_tf.saliency_stage import record_saliency_stage

        record = record_saliency_stage(cfg, train, val, strategy, out_dir, preview, models,
                                       record, verbose=verbose, extra_callbacks=extra_callbacks)
    val_logits = None if val is None else model_outputs(models["fusion"],
                                                        stage_inputs("fusion", val, method))
    record = dataclasses.replace(record, calibration=calibration_record(val_logits, val_labels))
    record.write(out_dir)
    histories = {s: read_csv_log(stage_log_path(out_dir, s)) for s in models}
    return TrainedRun(models["audio_mlp"], models["vmlp"], models["fusion"], histories,
                      out_dir, record, localiser=models.get(LOCALISER_STAGE),
                      saliency=models.get(SALIENCY_STAGE))


__all__ = [
    "ExtraCallbacks", "StageHooks", "StagePlan", "check_features", "choose_late_stage", "localiser_plan",
    "localiser_stage", "run_algorithm1", "stage_inputs", "stage_plans", "train_stage",
]
