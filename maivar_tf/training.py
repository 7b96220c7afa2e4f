"""Distributed training of MAiVAR's three heads: the paper's Algorithm 1 with ``model.fit``.

Algorithm 1 (Shaikh et al. 2024) on frozen backbone features:

1. train the audio MLP on audio-image features (Adam ``train.audio_lr``);
2. train the VMLP on the K segment features (Adam ``train.vmlp_lr``, paper: 1e-4, batch 512);
3. build the fusion MLP from the trained VMLP (:func:`maivar_tf.models.heads.build_fusion_mlp`:
   video rows and classifier copied, audio rows zero);
4. train the fusion MLP on ``[video, audio]`` (Adam ``train.fusion_lr``, paper: 3e-5, batch 768).

The loss is sparse categorical cross-entropy on logits plus the heads' L1 kernel penalties.
Inputs are standardised inside each model with the training set's per-feature mean and variance.

Distribution. :func:`get_strategy` picks a ``tf.distribute`` strategy; every model is built and
compiled inside ``strategy.scope()`` and trained with ``model.fit``. Configured batch sizes are
**global** (summed over all replicas of all workers), as in the paper. Datasets are built with
``strategy.distribute_datasets_from_function``: each input pipeline (one per worker) reads the
in-memory features, keeps its ``input_pipeline_id``-th shard, and batches with
``InputContext.get_per_replica_batch_size(global_batch)``, so one step consumes exactly one
global batch across the cluster. (``experimental_distribute_dataset`` over a dataset batched
with the global batch, which is what Keras does with a plain ``tf.data.Dataset``, is also
correct: it splits each global batch into per-replica batches. But for in-memory data its
auto-sharding falls back to ``DATA`` sharding, where every worker reads the whole dataset and
discards the other workers' share; sharding the example indices ourselves avoids that and says
plainly who reads what.) The pipeline batches example indices and gathers the feature rows of
each batch from tensors built once. Training data is shuffled and repeated with a fixed
``steps_per_epoch = ceil(N / global_batch)``, so every worker runs the same number of steps.
Validation data is padded to whole global batches with zero-weight examples, so every example
counts exactly once and every worker runs the same number of validation steps.

Fault tolerance. Each stage writes under ``run_dir/<stage>/``: ``backup/``
(``keras.callbacks.BackupAndRestore``: weights, optimizer state and epoch after every epoch, so a
killed run resumes at the next epoch), ``log.csv`` (``CSVLogger``, appended across resumes and
trimmed to the restored epoch so every epoch appears once), ``logs/`` (TensorBoard) and
``best.keras`` (with validation data, best ``val_loss``) or ``last.keras`` (``ModelCheckpoint``).
A finished stage is saved as ``run_dir/<stage>.keras`` and skipped when the run is repeated.
Under ``MultiWorkerMirroredStrategy`` the chief writes ``run_dir``; worker ``i`` writes
``run_dir/workers/worker-i`` (same layout), so no two processes write one file.

Example:
    >>> from maivar_tf.features import load_features
    >>> train = load_features(cfg.data.features_dir, "train", cfg.model.representation)
    >>> result = run_algorithm1(cfg, train)
    >>> result.fusion({"video_features": v, "audio_features": a})
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from maivar_tf.config import STRATEGIES, ExperimentConfig
from maivar_tf.models.heads import (
    AUDIO_INPUT,
    VIDEO_INPUT,
    build_audio_mlp,
    build_fusion_mlp,
    build_video_mlp,
    feature_statistics,
)
from maivar_tf.utils import write_json_atomic

logger = logging.getLogger(__name__)

#: Algorithm 1's stages, in training order; each is saved as ``run_dir/<stage>.keras``.
STAGES: tuple[str, ...] = ("audio_mlp", "vmlp", "fusion")
RUN_INFO = "run_info.json"

_MULTI_WORKER_STRATEGY: tf.distribute.Strategy | None = None


class NestReducingMultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """``MultiWorkerMirroredStrategy`` whose ``reduce`` Keras 3's ``fit`` can call.

    Keras 3 (3.15) drives ``strategy.reduce`` in two ways that ``tf.distribute`` rejects once
    there is more than one worker (keras-team/keras#20585, #20329; ``MirroredStrategy`` takes a
    different path and is unaffected):

    * to build the model it averages the whole first batch ``(x, y[, w])`` with one call, but
      ``reduce`` handles a single value (a TODO in ``distribute_lib``): "Attempt to convert a
      value (PerReplica ...)";
    * it averages the per-replica scalar logs (loss, metrics) with ``axis=0``, which a scalar
      does not have: "Invalid reduction dimension 0 for input with 0 dimensions".

    This subclass reduces nested structures leaf by leaf and treats ``axis`` as ``None`` for
    scalars, which is what both calls mean (the mean over replicas). Every worker makes the same
    calls in the same order, so the collectives match. Nothing else changes.
    """

    def reduce(self, reduce_op, value, axis=None):  # noqa: D102 - see the class docstring
        parent = super()

        def reduce_one(v):
            rank = getattr(getattr(v, "shape", None), "rank", None)
            return parent.reduce(reduce_op, v, None if rank == 0 else axis)

        return tf.nest.map_structure(reduce_one, value)


# ----------------------------------------------------------------------------- strategies


def get_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy named by ``train.strategy``.

    Args:
        name: ``auto`` (``MirroredStrategy`` over all GPUs when any is visible, else the default
            strategy), ``default`` (no distribution), ``mirrored`` (``MirroredStrategy`` over all
            visible GPUs; on a CPU-only host over every logical CPU device, so CPU runs can be
            split with ``tf.config.set_logical_device_configuration``), or ``multi_worker``
            (``MultiWorkerMirroredStrategy``, see :class:`NestReducingMultiWorkerMirroredStrategy`;
            the cluster and this process's task come from the
            ``TF_CONFIG`` environment variable, which must be set before the first call. The
            strategy is created once per process and reused, as TensorFlow requires; create it
            before other TensorFlow work).

    Returns:
        The strategy.

    Raises:
        ValueError: an unknown name.
    """
    if name not in STRATEGIES:
        raise ValueError(f"train.strategy: invalid value {name!r}; allowed: {', '.join(STRATEGIES)}")
    if name == "multi_worker":
        global _MULTI_WORKER_STRATEGY
        if _MULTI_WORKER_STRATEGY is None:
            if not os.environ.get("TF_CONFIG"):
                warnings.warn("train.strategy=multi_worker without TF_CONFIG: running as a "
                              "single-worker cluster", stacklevel=2)
            _MULTI_WORKER_STRATEGY = NestReducingMultiWorkerMirroredStrategy()
        return _MULTI_WORKER_STRATEGY
    gpus = tf.config.list_physical_devices("GPU")
    if name == "default" or (name == "auto" and not gpus):
        return tf.distribute.get_strategy()
    if gpus:
        return tf.distribute.MirroredStrategy()
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=cpus)


@dataclass(frozen=True)
class WorkerInfo:
    """Where this process sits in a (possibly multi-worker) cluster."""

    is_chief: bool
    task_type: str | None
    task_id: int | None
    num_workers: int


def worker_info(strategy: tf.distribute.Strategy) -> WorkerInfo:
    """Reads the task of this process from the strategy's cluster resolver (chief when none)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None) if resolver is not None else None
    if not task_type:
        return WorkerInfo(True, None, None, 1)
    task_id = int(resolver.task_id or 0)
    cluster = resolver.cluster_spec().as_dict()
    num_workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    is_chief = task_type == "chief" or (task_type == "worker" and task_id == 0
                                        and "chief" not in cluster)
    return WorkerInfo(is_chief, task_type, task_id, max(num_workers, 1))


def worker_run_dir(run_dir: str | Path, info: WorkerInfo) -> Path:
    """The directory this worker writes: ``run_dir`` for the chief, a sub-folder otherwise."""
    run_dir = Path(run_dir)
    if info.is_chief:
        return run_dir
    return run_dir / "workers" / f"{info.task_type}-{info.task_id}"


def global_batch_size(configured: int, num_examples: int, num_replicas: int) -> int:
    """The global batch actually used: the configured one, capped at the number of examples
    (a batch of 768 over 200 examples would only repeat them), rounded up to a multiple of the
    number of replicas (every replica gets the same per-replica batch)."""
    batch = max(1, min(int(configured), int(num_examples)))
    return int(math.ceil(batch / num_replicas) * num_replicas)


# ----------------------------------------------------------------------------- datasets


def make_distributed_dataset(strategy: tf.distribute.Strategy, inputs: Any, labels: np.ndarray,
                             global_batch: int, *, training: bool, seed: int = 0
                             ) -> tuple[Any, int]:
    """An in-memory ``(inputs, labels[, weights])`` dataset distributed over ``strategy``.

    Built with ``strategy.distribute_datasets_from_function``: every input pipeline shards the
    example indices by ``input_pipeline_id``, batches them with the per-replica batch size
    (``global_batch // num_replicas_in_sync``), and gathers the features of each batch.

    Args:
        strategy: the strategy whose replicas consume the batches.
        inputs: a NumPy array or a dict of arrays (first axis: examples).
        labels: int labels ``[N]``.
        global_batch: examples per step over all replicas; a multiple of the replica count.
        training: shuffle and repeat forever (``steps`` = steps per epoch); otherwise the data
            is padded with zero-weight copies of example 0 to whole global batches, repeated
            (each ``steps`` steps are one exact pass) and yields sample weights.
        seed: the shuffle seed.

    Returns:
        ``(distributed_dataset, steps)``.
    """
    n = int(len(labels))
    replicas = strategy.num_replicas_in_sync
    if global_batch % replicas:
        raise ValueError(f"global batch {global_batch} is not a multiple of the "
                         f"{replicas} replicas")
    steps = max(1, math.ceil(n / global_batch))
    with tf.device("/cpu:0"):
        feats = tf.nest.map_structure(lambda a: tf.convert_to_tensor(np.asarray(a)), inputs)
        label_t = tf.convert_to_tensor(np.asarray(labels, np.int64))
    if training:
        index = np.arange(n, dtype=np.int64)
        weight = None
    else:
        pad = steps * global_batch - n
        index = np.concatenate([np.arange(n), np.zeros(pad)]).astype(np.int64)
        weight = np.concatenate([np.ones(n), np.zeros(pad)]).astype(np.float32)

    def gather(idx, w=None):
        x = tf.nest.map_structure(lambda t: tf.gather(t, idx), feats)
        y = tf.gather(label_t, idx)
        return (x, y) if w is None else (x, y, w)

    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        per_replica = ctx.get_per_replica_batch_size(global_batch)
        ds = tf.data.Dataset.from_tensor_slices(index if weight is None else (index, weight))
        if ctx.num_input_pipelines > 1:
            ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        if training:
            ds = ds.shuffle(max(1, math.ceil(n / ctx.num_input_pipelines)),
                            seed=seed, reshuffle_each_iteration=True)
        ds = ds.repeat()
        ds = ds.batch(per_replica, drop_remainder=True)
        ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.prefetch(tf.data.AUTOTUNE)

    return strategy.distribute_datasets_from_function(dataset_fn), steps


# ----------------------------------------------------------------------------- results


@dataclass
class Algorithm1Result:
    """The three trained heads of one run.

    Args:
        audio_mlp: the audio MLP (input ``audio_features``).
        vmlp: the VMLP (input ``video_features``).
        fusion: the fusion MLP (inputs ``video_features``, ``audio_features``).
        histories: per stage, the CSV log as ``{column: [values per epoch]}`` (all epochs,
            including those before a resume).
        run_dir: where the run lives.
        info: the contents of ``run_info.json``.
    """

    audio_mlp: keras.Model
    vmlp: keras.Model
    fusion: keras.Model
    histories: dict[str, dict[str, list[float]]]
    run_dir: Path
    info: dict[str, Any] = field(default_factory=dict)


def read_csv_log(path: str | Path) -> dict[str, list[float]]:
    """A ``CSVLogger`` file as ``{column: [float per row]}`` (empty when missing)."""
    path = Path(path)
    if not path.exists():
        return {}
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    out: dict[str, list[float]] = {k: [] for k in rows[0]}
    for row in rows:
        for k in out:
            try:
                out[k].append(float(row[k]))
            except (TypeError, ValueError):
                out[k].append(float("nan"))
    return out


def load_run(run_dir: str | Path, compile: bool = False) -> Algorithm1Result:
    """Loads a finished (or partly finished) :func:`run_algorithm1` run.

    Args:
        run_dir: the run directory holding ``audio_mlp.keras``, ``vmlp.keras``,
            ``fusion.keras`` and ``run_info.json``.
        compile: also restore the training configuration and optimizer state.

    Raises:
        FileNotFoundError: naming every missing file.
    """
    run_dir = Path(run_dir)
    needed = [run_dir / RUN_INFO] + [run_dir / f"{s}.keras" for s in STAGES]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise FileNotFoundError(f"incomplete run in {run_dir}: missing {', '.join(missing)} "
                                "(train it with `maivar train` / run_algorithm1)")
    info = json.loads((run_dir / RUN_INFO).read_text())
    models = {s: keras.saving.load_model(run_dir / f"{s}.keras", compile=compile) for s in STAGES}
    histories = {s: read_csv_log(run_dir / s / "log.csv") for s in STAGES}
    return Algorithm1Result(models["audio_mlp"], models["vmlp"], models["fusion"], histories,
                            run_dir, info)


# ----------------------------------------------------------------------------- helpers


def _check_features(fs: Any, name: str) -> None:
    video, audio, labels = np.asarray(fs.video), np.asarray(fs.audio), np.asarray(fs.labels)
    if video.ndim != 3:
        raise ValueError(f"{name}.video: shape {video.shape}; expected [N, K, D]")
    if audio.ndim != 2:
        raise ValueError(f"{name}.audio: shape {audio.shape}; expected [N, D]")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name}.labels: {labels.dtype} {labels.shape}; expected int [N]")
    if not (len(video) == len(audio) == len(labels)) or len(labels) == 0:
        raise ValueError(f"{name}: {len(video)} video rows, {len(audio)} audio rows, "
                         f"{len(labels)} labels; expected the same non-zero count")
    num_classes = len(fs.class_names)
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise ValueError(f"{name}.labels: {int(bad.sum())} labels outside [0, {num_classes}) "
                         f"(e.g. {int(labels[bad][0])}); drop examples whose class is not in "
                         "class_names before training")


def _check_compatible(train: Any, val: Any) -> None:
    _check_features(val, "val")
    if tuple(val.class_names) != tuple(train.class_names):
        raise ValueError("val.class_names differ from train.class_names")
    if val.video.shape[1:] != train.video.shape[1:] or val.audio.shape[1:] != train.audio.shape[1:]:
        raise ValueError(f"val features {val.video.shape[1:]}/{val.audio.shape[1:]} differ from "
                         f"train features {train.video.shape[1:]}/{train.audio.shape[1:]}")


def _stage_inputs(stage: str, fs: Any) -> Any:
    if stage == "audio_mlp":
        return np.asarray(fs.audio, np.float32)
    if stage == "vmlp":
        return np.asarray(fs.video, np.float32)
    return {VIDEO_INPUT: np.asarray(fs.video, np.float32),
            AUDIO_INPUT: np.asarray(fs.audio, np.float32)}


def evaluate_arrays(model: keras.Model, inputs: Any, labels: np.ndarray,
                    batch_size: int = 1024) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` (logits) on in-memory data, in this process.

    Runs the model eagerly in inference mode batch by batch, outside any strategy, so it is
    exact (no padding) and needs no other worker.
    """
    labels = np.asarray(labels, np.int64)
    n = len(labels)
    correct, ce = 0, 0.0
    for start in range(0, n, batch_size):
        sl = slice(start, start + batch_size)
        x = tf.nest.map_structure(lambda a, sl=sl: a[sl], inputs)
        logits = np.asarray(keras.ops.convert_to_numpy(model(x, training=False)), np.float64)
        logits = logits - logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        y = labels[sl]
        ce += float(-log_p[np.arange(len(y)), y].sum())
        correct += int((logits.argmax(axis=1) == y).sum())
    return {"accuracy": correct / n, "cross_entropy": ce / n, "num_examples": n}


def _backup_epoch(backup_dir: Path) -> int:
    """Completed epochs recorded by BackupAndRestore (0 when there is no backup)."""
    for name in ("training_metadata.json", "training_metadata.json.bkp"):
        path = backup_dir / name
        if path.exists():
            try:
                return int(json.loads(path.read_text())["epoch"])
            except (ValueError, KeyError, TypeError):
                logger.warning("unreadable %s; resuming as BackupAndRestore decides", path)
    return 0


def _trim_csv_log(path: Path, epochs_done: int) -> None:
    """Keeps the header and the rows of the epochs a resume will not redo."""
    if not path.exists():
        return
    if epochs_done == 0:
        path.unlink()
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    col = header.index("epoch") if "epoch" in header else 0
    kept = [r for r in body if r and r[col].strip().isdigit() and int(r[col]) < epochs_done]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *kept])


def _atomic_save(model: keras.Model, path: Path) -> None:
    tmp = path.with_name(path.stem + ".partial.keras")
    model.save(tmp)
    os.replace(tmp, path)


@dataclass(frozen=True)
class _Stage:
    name: str
    epochs: int
    lr: float
    batch: int
    seed: int


def _train_stage(stage: _Stage, build: Callable[[], keras.Model], train_x: Any,
                 train_y: np.ndarray, val_xy: tuple[Any, np.ndarray] | None,
                 strategy: tf.distribute.Strategy, out_dir: Path, verbose: Any,
                 extra_callbacks: Callable[[str], Sequence[keras.callbacks.Callback]] | None
                 ) -> tuple[keras.Model, dict[str, Any]]:
    """Trains one stage with fit (resuming from its backup) and saves ``<stage>.keras``."""
    final = out_dir / f"{stage.name}.keras"
    if final.exists():
        logger.info("stage %s: %s exists, skipping", stage.name, final)
        return keras.saving.load_model(final), {"skipped": True}
    stage_dir = out_dir / stage.name
    stage_dir.mkdir(parents=True, exist_ok=True)
    backup_dir = stage_dir / "backup"
    log_path = stage_dir / "log.csv"
    epochs_done = _backup_epoch(backup_dir)
    _trim_csv_log(log_path, epochs_done)
    if epochs_done:
        logger.info("stage %s: resuming after epoch %d of %d", stage.name, epochs_done,
                    stage.epochs)

    keras.utils.set_random_seed(stage.seed)
    replicas = strategy.num_replicas_in_sync
    batch = global_batch_size(stage.batch, len(train_y), replicas)
    with strategy.scope():
        model = build()
        model.compile(
            optimizer=keras.optimizers.Adam(stage.lr),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    train_ds, steps = make_distributed_dataset(strategy, train_x, train_y, batch, training=True,
                                               seed=stage.seed)
    val_ds, val_steps = None, None
    if val_xy is not None:
        val_ds, val_steps = make_distributed_dataset(strategy, val_xy[0], val_xy[1], batch,
                                                     training=False)

    if val_ds is not None:
        previous = read_csv_log(log_path).get("val_loss", [])
        best = min((v for v in previous if math.isfinite(v)), default=None)
        checkpoint = keras.callbacks.ModelCheckpoint(
            stage_dir / "best.keras", monitor="val_loss", save_best_only=True,
            initial_value_threshold=best)
    else:
        checkpoint = keras.callbacks.ModelCheckpoint(stage_dir / "last.keras")
    # CSVLogger before BackupAndRestore: a kill between the two leaves a logged epoch that the
    # backup does not cover; the resume redoes it and _trim_csv_log drops the stale row. The
    # other order could lose a row for good.
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.CSVLogger(str(log_path), append=True),
        keras.callbacks.BackupAndRestore(str(backup_dir), double_checkpoint=True,
                                         delete_checkpoint=False),
        checkpoint,
    ]
    if _tensorboard_available():
        callbacks.append(keras.callbacks.TensorBoard(str(stage_dir / "logs"), write_graph=False,
                                                     profile_batch=0))
    if extra_callbacks is not None:
        callbacks.extend(extra_callbacks(stage.name))

    t0 = time.time()
    model.fit(train_ds, epochs=stage.epochs, steps_per_epoch=steps, validation_data=val_ds,
              validation_steps=val_steps, callbacks=callbacks, verbose=verbose,
              shuffle=False)  # the dataset shuffles itself
    _atomic_save(model, final)
    shutil.rmtree(backup_dir, ignore_errors=True)
    return model, {
        "skipped": False, "epochs": stage.epochs, "resumed_after_epoch": epochs_done,
        "learning_rate": stage.lr, "global_batch_size": batch,
        "per_replica_batch_size": batch // replicas, "steps_per_epoch": steps,
        "seconds": round(time.time() - t0, 3),
    }


def _tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        if not getattr(_tensorboard_available, "warned", False):
            logger.warning("the tensorboard package is not installed: no TensorBoard logs")
            _tensorboard_available.warned = True  # type: ignore[attr-defined]
        return False
    return True


def configure_precision(mixed: bool) -> keras.DTypePolicy | None:
    """Sets the ``mixed_float16`` global policy when asked and a GPU is visible.

    On a CPU-only host mixed precision is slower, not faster: it warns and keeps float32.
    The heads keep their logits in float32 either way.

    Args:
        mixed: ``train.mixed_precision``.

    Returns:
        The policy to restore afterwards, or None when nothing was changed.
    """
    if not mixed:
        return None
    if not tf.config.list_physical_devices("GPU"):
        warnings.warn("train.mixed_precision=true but no GPU is visible: training in float32",
                      stacklevel=3)
        return None
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    return previous


# ----------------------------------------------------------------------------- Algorithm 1


def run_algorithm1(cfg: ExperimentConfig, train: Any, val: Any = None,
                   run_dir: str | Path | None = None, *,
                   strategy: tf.distribute.Strategy | None = None, verbose: Any = 2,
                   extra_callbacks: Callable[[str], Sequence[keras.callbacks.Callback]] | None
                   = None) -> Algorithm1Result:
    """Trains the audio MLP, the VMLP and the fusion MLP (the paper's Algorithm 1).

    Stages whose ``run_dir/<stage>.keras`` exists are loaded instead of trained; an interrupted
    stage resumes from its ``BackupAndRestore`` backup. ``run_info.json`` is rewritten after
    every stage with the class names, representation, K, feature widths, the config, the
    per-stage training settings and final metrics (computed exactly in this process).

    Args:
        cfg: the experiment (``model`` builds the heads, ``train`` sets epochs, learning rates,
            global batch sizes, strategy, precision and seed).
        train: a :class:`maivar_tf.features.FeatureSet` (``video [N, K, 1024]``,
            ``audio [N, 1536]``, ``labels [N]``, ``class_names``, ``representation``); its
            statistics standardise every model's inputs.
        val: an optional FeatureSet for validation metrics and best-checkpoint selection.
        run_dir: where the run lives (default ``cfg.train.output_dir``).
        strategy: a strategy to use instead of ``get_strategy(cfg.train.strategy)``.
        verbose: ``model.fit`` verbosity (2: one line per epoch).
        extra_callbacks: a function of the stage name returning more callbacks for its fit.

    Returns:
        An :class:`Algorithm1Result`.

    Raises:
        ValueError: inconsistent features (shapes, labels outside the class list).
    """
    _check_features(train, "train")
    if val is not None:
        _check_compatible(train, val)
    if train.representation != cfg.model.representation:
        warnings.warn(f"training on {train.representation!r} audio features but "
                      f"model.representation is {cfg.model.representation!r}", stacklevel=2)
    strategy = strategy or get_strategy(cfg.train.strategy)
    info = worker_info(strategy)
    out_dir = worker_run_dir(run_dir or cfg.train.output_dir, info)
    out_dir.mkdir(parents=True, exist_ok=True)
    previous_policy = configure_precision(cfg.train.mixed_precision)
    try:
        return _run(cfg, train, val, out_dir, strategy, info, verbose, extra_callbacks)
    finally:
        if previous_policy is not None:
            keras.mixed_precision.set_global_policy(previous_policy)


def _run(cfg: ExperimentConfig, train: Any, val: Any, out_dir: Path,
         strategy: tf.distribute.Strategy, info: WorkerInfo, verbose: Any,
         extra_callbacks: Any) -> Algorithm1Result:
    tc, mc = cfg.train, cfg.model
    num_classes = len(train.class_names)
    num_segments = int(train.video.shape[1])
    video_dim, audio_dim = int(train.video.shape[2]), int(train.audio.shape[1])
    v_mean, v_var = feature_statistics(train.video)
    a_mean, a_var = feature_statistics(train.audio)
    labels = np.asarray(train.labels, np.int64)

    run_info: dict[str, Any] = {
        "class_names": list(train.class_names), "representation": train.representation,
        "num_segments": num_segments, "num_classes": num_classes,
        "video_feature_dim": video_dim, "audio_feature_dim": audio_dim,
        "num_train": int(len(labels)), "num_val": int(len(val.labels)) if val is not None else 0,
        "strategy": type(strategy).__name__, "num_replicas": strategy.num_replicas_in_sync,
        "num_workers": info.num_workers, "mixed_precision": keras.mixed_precision.global_policy().name,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "config": cfg.to_dict(), "stages": {}, "metrics": {},
    }
    info_path = out_dir / RUN_INFO
    if info_path.exists():  # keep what earlier (resumed) invocations recorded
        old = json.loads(info_path.read_text())
        run_info["stages"].update(old.get("stages", {}))
        run_info["metrics"].update(old.get("metrics", {}))

    def val_xy(stage: str):
        return None if val is None else (_stage_inputs(stage, val), np.asarray(val.labels))

    builders: dict[str, Callable[[], keras.Model]] = {
        "audio_mlp": lambda: build_audio_mlp(num_classes, mc, a_mean, a_var, feature_dim=audio_dim),
        "vmlp": lambda: build_video_mlp(num_classes, num_segments, mc, v_mean, v_var,
                                        feature_dim=video_dim),
    }
    stages = {
        "audio_mlp": _Stage("audio_mlp", tc.audio_epochs, tc.audio_lr, tc.audio_batch_size,
                            tc.seed),
        "vmlp": _Stage("vmlp", tc.vmlp_epochs, tc.vmlp_lr, tc.vmlp_batch_size, tc.seed + 1),
        "fusion": _Stage("fusion", tc.fusion_epochs, tc.fusion_lr, tc.fusion_batch_size,
                         tc.seed + 2),
    }
    models: dict[str, keras.Model] = {}
    for name in STAGES:
        if name == "fusion":
            vmlp = models["vmlp"]
            builders["fusion"] = lambda vmlp=vmlp: build_fusion_mlp(
                vmlp, mc, a_mean, a_var, audio_dim=audio_dim, seed=tc.seed)
        model, stage_info = _train_stage(stages[name], builders[name], _stage_inputs(name, train),
                                         labels, val_xy(name), strategy, out_dir, verbose,
                                         extra_callbacks)
        models[name] = model
        if not stage_info["skipped"] or name not in run_info["stages"]:
            run_info["stages"][name] = stage_info
            metrics = {"train": evaluate_arrays(model, _stage_inputs(name, train), labels)}
            if val is not None:
                metrics["val"] = evaluate_arrays(model, *val_xy(name))
            run_info["metrics"][name] = metrics
            logger.info("stage %s: %s", name, metrics)
        write_json_atomic(info_path, run_info)

    histories = {s: read_csv_log(out_dir / s / "log.csv") for s in STAGES}
    return Algorithm1Result(models["audio_mlp"], models["vmlp"], models["fusion"], histories,
                            out_dir, run_info)


__all__ = [
    "STAGES", "Algorithm1Result", "NestReducingMultiWorkerMirroredStrategy", "WorkerInfo",
    "configure_precision", "evaluate_arrays", "get_strategy",
    "global_batch_size", "load_run", "make_distributed_dataset", "read_csv_log",
    "run_algorithm1", "worker_info", "worker_run_dir",
]
