"""How Algorithm 1's training is spread over devices and workers (``tf.distribute``).

Contracts:

* :func:`get_strategy` turns ``train.strategy`` into a strategy; every model is built and
  compiled inside ``strategy.scope()`` and trained with ``model.fit``.
* Configured batch sizes are **global** (summed over all replicas of all workers), as in the
  paper's Algorithm 1 (Shaikh et al. 2024: batch 512 for the VMLP, 768 for fusion);
  :func:`global_batch_size` caps one at the data and rounds it to the replica count.
* :func:`make_distributed_dataset` builds the input with
  ``strategy.distribute_datasets_from_function``: each input pipeline (one per worker) keeps
  its ``input_pipeline_id``-th shard of the example indices and batches them with
  ``InputContext.get_per_replica_batch_size(global_batch)``, so one step consumes exactly one
  global batch across the cluster, and gathers the feature rows of each batch from tensors
  built once. (``experimental_distribute_dataset`` over a globally batched dataset, which Keras
  does with a plain ``tf.data.Dataset``, is also correct, but for in-memory data its
  auto-sharding falls back to ``DATA`` sharding, where every worker reads the whole dataset and
  discards the other workers' share; sharding the indices ourselves says plainly who reads
  what.) Training data runs a fixed ``steps = ceil(N / global_batch)`` per epoch, so every
  worker runs the same number of steps; validation data is padded to whole global batches with
  zero-weight examples, so every example counts exactly once.
* The training order of epoch ``e`` is a function of ``(seed, e)`` only
  (:func:`training_index_batches`): one permutation of the examples, seeded by ``e``, wrapped
  around to fill ``steps`` global batches; step ``s`` takes its ``s``-th global batch and worker
  ``i`` its ``i``-th slice of it. So a resumed fit that starts its dataset at the backup's
  epoch sees the order of the uninterrupted one (:mod:`maivar_tf.seeds`), and the global
  batches do not depend on the number of workers.
* Under ``MultiWorkerMirroredStrategy`` the chief writes the run folder and worker ``i`` writes
  ``run_dir/workers/worker-i`` (:func:`worker_run_dir`), so no two processes write one file.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from maivar_tf import seeds
from maivar_tf.config import STRATEGIES

_MULTI_WORKER_STRATEGY: tf.distribute.Strategy | None = None
#: Dtypes the cross-worker collectives do not reduce.
_NOT_REDUCIBLE = (tf.uint8, tf.int8, tf.uint16, tf.int16, tf.bool)


class NestReducingMultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """``MultiWorkerMirroredStrategy`` whose ``reduce`` Keras 3's ``fit`` can call.

    Keras 3 drives ``strategy.reduce`` in two ways that ``tf.distribute`` rejects once there is
    more than one worker (keras-team/keras#20585, #20329; ``MirroredStrategy`` takes a
    different path and is unaffected):

    * to build the model it averages the whole first batch ``(x, y[, w])`` with one call, but
      ``reduce`` handles a single value (a TODO in ``distribute_lib``): "Attempt to convert a
      value (PerReplica ...)";
    * it averages the per-replica scalar logs (loss, metrics) with ``axis=0``, which a scalar
      does not have: "Invalid reduction dimension 0 for input with 0 dimensions".

    This subclass reduces nested structures leaf by leaf and treats ``axis`` as ``None`` for
    scalars, which is what both calls mean (the mean over replicas). The collectives take no
    ``uint8`` (an end-to-end model's frames and audio-images): those leaves are reduced as
    float32, which only serves to build the model. Every worker makes the same calls in the
    same order, so the collectives match. Nothing else changes.
    """

    def reduce(self, reduce_op, value, axis=None):  # noqa: D102 - see the class docstring
        parent = super()

        def reduce_one(v):
            rank = getattr(getattr(v, "shape", None), "rank", None)
            parts = getattr(v, "values", None) or (v,)
            if getattr(parts[0], "dtype", None) in _NOT_REDUCIBLE:
                v = self.run(lambda t: tf.cast(t, tf.float32), args=(v,))
            return parent.reduce(reduce_op, v, None if rank == 0 else axis)

        return tf.nest.map_structure(reduce_one, value)


def get_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy named by ``train.strategy``.

    Args:
        name: ``auto`` (``MirroredStrategy`` over all GPUs when any is visible, else the default
            strategy), ``default`` (no distribution), ``mirrored`` (``MirroredStrategy`` over all
            visible GPUs; on a CPU-only host over every logical CPU device, so CPU runs can be
            split with ``tf.config.set_logical_device_configuration``), or ``multi_worker``
            (:class:`NestReducingMultiWorkerMirroredStrategy`; the cluster and this process's
            task come from the ``TF_CONFIG`` environment variable, which must be set before the
            first call. The strategy is created once per process and reused, as TensorFlow
            requires; create it before other TensorFlow work).

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


def mixed_policy(cpu_bfloat16: bool = False) -> str | None:
    """The mixed policy of this host: ``mixed_float16`` where a GPU is visible; with
    ``cpu_bfloat16``, ``mixed_bfloat16`` on a CPU with native bfloat16 (AVX512-BF16 or AMX,
    :func:`maivar_tf.models.precision.bfloat16_support`); else None (float32)."""
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    if cpu_bfloat16:
        from maivar_tf.models.precision import bfloat16_support

        if bfloat16_support(gpus=[])[0]:
            return "mixed_bfloat16"
    return None


def configure_precision(mixed: bool, *, cpu_bfloat16: bool = False) -> keras.DTypePolicy | None:
    """Sets the global mixed policy of :func:`mixed_policy` when asked.

    The heads on precomputed features gain nothing from ``mixed_bfloat16`` on a CPU (they are
    memory-bound), so only an end-to-end run asks for it (``cpu_bfloat16``); where no mixed
    policy applies this warns and keeps float32. The heads keep their logits in float32 either
    way, and Keras wraps the optimizer in a loss-scale optimizer under ``mixed_float16``.

    Args:
        mixed: ``train.mixed_precision``.
        cpu_bfloat16: allow ``mixed_bfloat16`` on a CPU with native bfloat16.

    Returns:
        The policy to restore afterwards, or None when nothing was changed.
    """
    if not mixed:
        return None
    policy = mixed_policy(cpu_bfloat16)
    if policy is None:
        warnings.warn("train.mixed_precision=true but no GPU is visible"
                      + (" and the CPU has no native bfloat16" if cpu_bfloat16 else "")
                      + ": training in float32", stacklevel=3)
        return None
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    return previous


@contextlib.contextmanager
def training_precision(mixed: bool, *, cpu_bfloat16: bool = False) -> Iterator[str]:
    """:func:`configure_precision` for the duration of a ``with`` block (a training run), the
    previous global policy restored afterwards, also when the run fails.

    Yields:
        The global policy's name inside the block.
    """
    previous = configure_precision(mixed, cpu_bfloat16=cpu_bfloat16)
    try:
        yield keras.mixed_precision.global_policy().name
    finally:
        if previous is not None:
            keras.mixed_precision.set_global_policy(previous)


@dataclass(frozen=True)
class WorkerInfo:
    """Where this process sits in a (possibly multi-worker) cluster.

    Args:
        is_chief: this process writes the run folder itself.
        task_type: ``worker``/``chief`` from the cluster resolver (None outside a cluster).
        task_id: the task index (None outside a cluster).
        num_workers: worker processes in the cluster (1 outside one).
    """

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
    """The global batch actually used.

    The configured one, capped at the number of examples (a batch of 768 over 200 examples
    would only repeat them), rounded up to a multiple of the number of replicas (every replica
    gets the same per-replica batch).
    """
    batch = max(1, min(int(configured), int(num_examples)))
    return int(math.ceil(batch / num_replicas) * num_replicas)


def training_index_batches(n: int, global_batch: int, seed: int, *, first_epoch: int = 0,
                           num_pipelines: int = 1, pipeline_id: int = 0,
                           per_replica: int | None = None) -> tf.data.Dataset:
    """Per-replica batches of example indices for the epochs ``first_epoch, first_epoch + 1, ...``.

    Epoch ``e`` is the permutation of ``range(n)`` seeded by
    ``[seeds.stream_seed(seed, seeds.DATA_ORDER), e]`` (a stateless shuffle), repeated to fill
    ``steps = ceil(n / global_batch)`` global batches. Input pipeline ``pipeline_id`` of
    ``num_pipelines`` keeps its slice of each global batch and splits it into batches of
    ``per_replica`` (default: its whole slice). Nothing depends on where a previous iterator
    stopped, so a dataset built for ``first_epoch = k`` yields what one built for epoch 0
    yields after ``k`` epochs.

    Raises:
        ValueError: ``global_batch`` is not a multiple of ``num_pipelines``, or a pipeline's
            slice not of ``per_replica``.
    """
    if global_batch % num_pipelines:
        raise ValueError(f"global batch {global_batch} is not a multiple of the "
                         f"{num_pipelines} input pipelines")
    share = global_batch // num_pipelines
    per_replica = share if per_replica is None else int(per_replica)
    if share % per_replica:
        raise ValueError(f"a pipeline's {share} examples per step are not a multiple of the "
                         f"per-replica batch {per_replica}")
    steps = max(1, math.ceil(n / global_batch))
    span = steps * global_batch
    key = tf.constant(seeds.stream_seed(seed, seeds.DATA_ORDER), tf.int64)
    examples = tf.range(n, dtype=tf.int64)

    def epoch_order(epoch):
        order = tf.random.experimental.stateless_shuffle(examples, seed=tf.stack([key, epoch]))
        order = tf.tile(order, [math.ceil(span / n)])[:span]
        return tf.reshape(tf.reshape(order, [steps, num_pipelines, share])[:, pipeline_id], [-1])

    ds = tf.data.Dataset.range(int(first_epoch), 2**62).map(epoch_order).unbatch()
    return ds.batch(per_replica, drop_remainder=True)


@dataclass(frozen=True)
class ArrayInput:
    """A stage's in-memory inputs and labels, as :func:`maivar_tf.stage_fit.train_stage` takes
    them (the feature path; :class:`maivar_tf.end_to_end_data.TFRecordInput` is the
    TFRecord twin with the same two members).

    Args:
        inputs: a NumPy array or a dict of arrays (first axis: examples).
        labels: int labels ``[N]`` (or ``[N, ...]``).
    """

    inputs: Any
    labels: Any

    @property
    def num_examples(self) -> int:
        """N."""
        return int(len(self.labels))

    def distributed(self, strategy: tf.distribute.Strategy, global_batch: int, *,
                    training: bool, seed: int = 0, first_epoch: int = 0) -> tuple[Any, int]:
        """:func:`make_distributed_dataset` of these arrays."""
        return make_distributed_dataset(strategy, self.inputs, np.asarray(self.labels, np.int64),
                                        global_batch, training=training, seed=seed,
                                        first_epoch=first_epoch)


def make_distributed_dataset(strategy: tf.distribute.Strategy, inputs: Any, labels: np.ndarray,
                             global_batch: int, *, training: bool, seed: int = 0,
                             first_epoch: int = 0) -> tuple[Any, int]:
    """An in-memory ``(inputs, labels[, weights])`` dataset distributed over ``strategy``.

    Every input pipeline takes its share of the example indices, batches them with the
    per-replica batch size (``global_batch // num_replicas_in_sync``) and gathers the features
    of each batch.

    Args:
        strategy: the strategy whose replicas consume the batches.
        inputs: a NumPy array or a dict of arrays (first axis: examples).
        labels: int labels ``[N]`` (or ``[N, ...]``, e.g. segment labels ``[N, K]``: the
            validation weights then have the labels' shape).
        global_batch: examples per step over all replicas; a multiple of the replica count.
        training: every ``steps`` steps are one epoch of :func:`training_index_batches`,
            forever; otherwise the data is padded with zero-weight copies of example 0 to whole
            global batches, repeated (each ``steps`` steps are one exact pass) and yields sample
            weights.
        seed: the stage seed of the training order.
        first_epoch: the epoch the training data starts at (a resumed fit's first epoch).

    Returns:
        ``(distributed_dataset, steps)``.

    Raises:
        ValueError: ``global_batch`` is not a multiple of the replica count.
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
    pad = steps * global_batch - n
    index = np.concatenate([np.arange(n), np.zeros(pad)]).astype(np.int64)
    weight = np.concatenate([np.ones(n), np.zeros(pad)]).astype(np.float32)

    def gather(idx, w=None):
        x = tf.nest.map_structure(lambda t: tf.gather(t, idx), feats)
        y = tf.gather(label_t, idx)
        if w is not None and label_t.shape.rank > 1:  # e.g. segment labels [N, K]: per label
            w = tf.broadcast_to(tf.reshape(w, [-1] + [1] * (label_t.shape.rank - 1)),
                                tf.shape(y))
        return (x, y) if w is None else (x, y, w)

    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        per_replica = ctx.get_per_replica_batch_size(global_batch)
        if training:
            ds = training_index_batches(n, global_batch, seed, first_epoch=first_epoch,
                                        num_pipelines=ctx.num_input_pipelines,
                                        pipeline_id=ctx.input_pipeline_id,
                                        per_replica=per_replica)
        else:
            ds = tf.data.Dataset.from_tensor_slices((index, weight))
            if ctx.num_input_pipelines > 1:
                ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
            ds = ds.repeat().batch(per_replica, drop_remainder=True)
        ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.prefetch(tf.data.AUTOTUNE)

    return strategy.distribute_datasets_from_function(dataset_fn), steps


__all__ = [
    "ArrayInput", "NestReducingMultiWorkerMirroredStrategy", "WorkerInfo",
    "configure_precision", "get_strategy", "global_batch_size", "make_distributed_dataset",
    "mixed_policy", "training_index_batches", "training_precision", "worker_info",
    "worker_run_dir",
]
