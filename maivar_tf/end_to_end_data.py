"""End-to-end training input: decoded clips from the TFRecord shards, distributed by epoch.

The end-to-end stages of Algorithm 1 (Shaikh et al. 2024) train the backbones with the heads, so
they read frames and audio-images from the shards instead of cached features.
:class:`TFRecordInput` has the contract of :func:`maivar_tf.distribute.make_distributed_dataset`
(the in-memory input of the feature path), so a stage trains from either:

* ``num_examples`` and ``distributed(strategy, global_batch, *, training, seed, first_epoch)
  -> (distributed_dataset, steps)`` with ``steps = max(1, ceil(N / global_batch))``;
* training: epoch ``e`` is a function of ``(seed, e)`` only. The shard files are put in the
  order of a stateless shuffle seeded by ``[stream_seed(seed, DATA_ORDER), e]`` and read
  interleaved (deterministically); the examples whose id is kept are shuffled in windows of
  ``shuffle_window`` consecutive records, each window by a stateless permutation. That stream
  of the ``N`` kept examples is repeated to fill ``steps`` global batches (the last one is
  completed with the start of the same epoch's order, as
  :func:`~maivar_tf.distribute.training_index_batches` does) and element ``j`` goes to input
  pipeline ``(j // share) % num_pipelines`` (``share = global_batch / num_pipelines``). So
  global batches do not depend on the number of workers, and a dataset built for
  ``first_epoch = k`` yields what an uninterrupted one yields from epoch ``k``. Every pipeline
  reads (and parses the id of) every record; each decodes only its own share;
* augmentation (``data.train_augment``, frames only): TSN's multi-scale crop and flip
  (``crop="random"`` of the one decoder, :func:`maivar_tf.data.decode.decode_example`) and
  TSN's random segment offsets (``segment_seed``, when the shards store more frames than
  ``data.num_segments``), seeded by :func:`example_seeds` ``(seed, e, example id)``: an example
  gets the same augmentation in one epoch on any worker (also in the repeated part of its
  epoch). Audio-images are never augmented;
* evaluation: centre crops, evenly spread segments, file order; padded with zero-weight copies
  of the first kept example to whole global batches, elements shared round-robin between the
  input pipelines, repeated; yields ``(inputs, labels, weights)``.

A seed does not come from ``tf.random.set_seed``: ``Dataset.shuffle`` and
``Dataset.random`` mix the global seed into theirs (so ``keras.utils.set_random_seed``, called
by every stage, would change the order), which is why the shuffle here is stateless.

Every record whose id is kept must be in the split exactly once: an epoch that meets another
number of kept records than ``len(ids)`` fails (``assert_cardinality``) instead of training on
a silently shorter epoch or waiting forever for records that are not there.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from maivar_tf import seeds
from maivar_tf.config import DataConfig
from maivar_tf.data import schema
from maivar_tf.data.input_pipeline import ShardLayout, pipeline_options, shard_files
from maivar_tf.models.end_to_end import AUDIO_IMAGE_INPUT, FRAMES_INPUT
from maivar_tf.models.heads import AUDIO_INPUT
from maivar_tf.seeds import AUGMENT, WINDOW_ORDER

#: Input names of the end-to-end stage models (``audio_features``: the heads' own input name).
FRAMES = FRAMES_INPUT
AUDIO_IMAGE = AUDIO_IMAGE_INPUT
AUDIO_FEATURES = AUDIO_INPUT
#: Shard files read at once in training.
CYCLE_LENGTH = 8


def _example_id(serialized: tf.Tensor) -> tf.Tensor:
    """The id of a serialized ``SequenceExample`` (its context only)."""
    context, _ = tf.io.parse_single_sequence_example(
        serialized, context_features={schema.EXAMPLE_ID: tf.io.FixedLenFeature([], tf.string)})
    return context[schema.EXAMPLE_ID]


def example_seeds(seed: int, epoch, example_id) -> tuple[tf.Tensor, tf.Tensor]:
    """The stateless seeds of one example's augmentation in one epoch (graph-friendly).

    Folds the FarmHash fingerprint of the id into ``[stream_seed(seed, AUGMENT), epoch]``, so
    the seeds depend on the stage seed, the epoch and the example only (not on the worker,
    the pipeline or the position in the stream).

    Args:
        seed: the stage seed.
        epoch: int64 scalar.
        example_id: string scalar.

    Returns:
        ``(crop_seed, segment_seed)``, int64 ``[2]`` each: the ``seed`` and ``segment_seed``
        of :func:`maivar_tf.data.decode.decode_example`.
    """
    key = tf.constant(seeds.stream_seed(seed, AUGMENT), tf.int64)
    folded = tf.random.experimental.stateless_fold_in(
        tf.stack([key, tf.cast(epoch, tf.int64)]),
        tf.strings.to_hash_bucket_fast(example_id, 2**62))
    crop_seed, segment_seed = tf.unstack(tf.random.experimental.stateless_split(folded, 2))
    return crop_seed, segment_seed


def _as_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class TFRecordInput:
    """The examples ``ids`` of one split's shards as the input of an end-to-end stage.

    Args:
        data_dir: the folder holding the shards and ``dataset_info.json``.
        split: ``train``, ``test`` or ``val``.
        data_cfg: the data section (``num_segments`` K, ``crop_size``, ``train_augment``).
        ids: the example ids to keep (unique; each must be in the split once).
        frames: yield ``frames`` uint8 ``[b, K, crop, crop, 3]``.
        audio_image: yield ``audio_image`` uint8 ``[b, S, S, 3]`` of this representation.
        audio_features: ``(ids, rows [M, Da])``: yield ``audio_features`` float32 ``[b, Da]``,
            the row of each example's id (cached features of a frozen audio backbone).
        shuffle_window: records shuffled together in training.

    Raises:
        FileNotFoundError: no ``dataset_info.json`` or no shard of ``split``.
        SchemaVersionError: the shards were written under another schema version.
        ValueError: no ids, repeated ids, no input asked for, ids without an
            ``audio_features`` row, or a representation, K or crop size the shards cannot
            provide.
    """

    def __init__(self, data_dir: str | os.PathLike, split: str, data_cfg: DataConfig, *,
                 ids: Sequence, frames: bool, audio_image: str | None = None,
                 audio_features: tuple[np.ndarray, np.ndarray] | None = None,
                 shuffle_window: int = 256):
        self.ids = tuple(_as_str(i) for i in ids)
        if not self.ids:
            raise ValueError("TFRecordInput: no example ids to keep")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("TFRecordInput: repeated example ids")
        if not (frames or audio_image or audio_features is not None):
            raise ValueError("TFRecordInput: no input asked for (frames, audio_image or "
                             "audio_features)")
        self.num_examples = len(self.ids)
        self.frames, self.audio_image = bool(frames), audio_image
        self.shuffle_window = int(shuffle_window)
        self.files = shard_files(data_dir, split)
        layout = ShardLayout.read(data_dir, data_cfg)
        reps = (audio_image,) if audio_image else ()
        k, crop = int(data_cfg.num_segments), int(data_cfg.crop_size)
        self.augment = self.frames and bool(data_cfg.train_augment)
        self.random_offsets = self.augment and layout.num_segments > k
        self._eval_decode = layout.decoder(reps, k, crop, include_frames=self.frames)
        self._train_decode = layout.decoder(reps, k, crop, include_frames=self.frames,
                                            crop="random" if self.augment else "center")
        self._features = None if audio_features is None else self._feature_rows(*audio_features)

    def _feature_rows(self, feature_ids, rows) -> np.ndarray:
        """``rows`` in the order of :attr:`ids` (float32 ``[N, Da]``)."""
        where = {_as_str(i): r for r, i in enumerate(np.asarray(feature_ids).tolist())}
        missing = [i for i in self.ids if i not in where]
        if missing:
            raise ValueError(f"audio_features: no row for {len(missing)} of the ids, e.g. "
                             f"{', '.join(missing[:3])}")
        rows = np.asarray(rows, np.float32)
        return rows[np.asarray([where[i] for i in self.ids], np.int64)]

    # ------------------------------------------------------------------------ streams

    def _kept(self, files: tf.data.Dataset, table, cycle_length: int) -> tf.data.Dataset:
        """``(serialized, position in ids)`` of the kept records of ``files``, in read order."""
        ds = files.interleave(tf.data.TFRecordDataset, cycle_length=cycle_length,
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.map(lambda s: (s, table.lookup(_example_id(s))),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.filter(lambda s, pos: pos >= 0)
        return ds.apply(tf.data.experimental.assert_cardinality(self.num_examples))

    def _window_shuffled(self, kept: tf.data.Dataset, key: int, epoch) -> tf.data.Dataset:
        """``kept`` with every window of ``shuffle_window`` records stateless-permuted."""
        def permute(window, batch):
            seed = tf.random.experimental.stateless_fold_in(
                tf.stack([tf.constant(key, tf.int64), epoch]), window)
            order = tf.random.experimental.stateless_shuffle(tf.range(tf.shape(batch[0])[0]),
                                                             seed=seed)
            return tf.nest.map_structure(lambda t: tf.gather(t, order), batch)

        windows = kept.batch(self.shuffle_window).enumerate().map(permute)
        return windows.unbatch()

    def _inputs(self, out: dict, position, features) -> dict[str, tf.Tensor]:
        inputs = {}
        if self.frames:
            inputs[FRAMES] = out["frames"]
        if self.audio_image:
            inputs[AUDIO_IMAGE] = out["audio_images"][self.audio_image]
        if features is not None:
            inputs[AUDIO_FEATURES] = tf.gather(features, position)
        return inputs

    def _training(self, global_batch: int, seed: int, first_epoch: int, num_pipelines: int,
                  pipeline_id: int, table, features) -> tf.data.Dataset:
        """Examples ``(inputs, label)`` of this pipeline for the epochs ``first_epoch, ...``."""
        share = global_batch // num_pipelines
        span = max(1, math.ceil(self.num_examples / global_batch)) * global_batch
        order_key = tf.constant(seeds.stream_seed(seed, seeds.DATA_ORDER), tf.int64)
        window_key = seeds.stream_seed(seed, WINDOW_ORDER)
        files = tf.constant(self.files)

        def decode(serialized, position, epoch):
            crop_seed, segment_seed = example_seeds(seed, epoch, _example_id(serialized))
            out = self._train_decode(serialized, seed=crop_seed if self.augment else None,
                                     segment_seed=segment_seed if self.random_offsets else None)
            return self._inputs(out, position, features), out["label"]

        def epoch_stream(epoch):
            order = tf.random.experimental.stateless_shuffle(files,
                                                             seed=tf.stack([order_key, epoch]))
            kept = self._kept(tf.data.Dataset.from_tensor_slices(order), table,
                              min(len(self.files), CYCLE_LENGTH))
            stream = self._window_shuffled(kept, window_key, epoch).repeat().take(span)
            mine = stream.enumerate().filter(
                lambda j, x: (j // share) % num_pipelines == pipeline_id)
            return mine.map(lambda j, x: decode(*x, epoch), num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=True)

        return tf.data.Dataset.range(int(first_epoch), 2**62).flat_map(epoch_stream)

    def _evaluation(self, global_batch: int, num_pipelines: int, pipeline_id: int, table,
                    features) -> tf.data.Dataset:
        """Examples ``(inputs, label, weight)``: one padded pass, this pipeline's share."""
        steps = max(1, math.ceil(self.num_examples / global_batch))
        pad = steps * global_batch - self.num_examples
        kept = self._kept(tf.data.Dataset.from_tensor_slices(list(self.files)), table, 1)
        weighted = kept.map(lambda s, pos: (s, pos, tf.constant(1.0)))
        if pad:
            weighted = weighted.concatenate(
                kept.take(1).map(lambda s, pos: (s, pos, tf.constant(0.0))).repeat(pad))
        if num_pipelines > 1:
            weighted = weighted.shard(num_pipelines, pipeline_id)

        def decode(serialized, position, weight):
            out = self._eval_decode(serialized)
            return self._inputs(out, position, features), out["label"], weight

        return weighted.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    # ------------------------------------------------------------------------ datasets

    def dataset(self, global_batch: int, *, training: bool, seed: int = 0, first_epoch: int = 0,
                input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        """The per-replica batches of one input pipeline (what :meth:`distributed` maps).

        Args:
            global_batch: examples per step over all replicas.
            training: see the module docstring (``(inputs, labels)`` forever, epoch by
                epoch); otherwise padded passes yielding ``(inputs, labels, weights)``.
            seed: the stage seed of the order and augmentation.
            first_epoch: the epoch the training data starts at (a resumed fit's).
            input_context: the pipeline's context (default: the only pipeline, one replica).

        Returns:
            Batches of ``get_per_replica_batch_size(global_batch)`` examples.

        Raises:
            ValueError: ``global_batch`` is not a multiple of the pipelines and replicas.
        """
        ctx = input_context or tf.distribute.InputContext()
        replicas = ctx.num_replicas_in_sync
        if global_batch % replicas or global_batch % ctx.num_input_pipelines:
            raise ValueError(f"global batch {global_batch} is not a multiple of the "
                             f"{replicas} replicas and {ctx.num_input_pipelines} pipelines")
        per_replica = ctx.get_per_replica_batch_size(global_batch)
        with tf.device("/cpu:0"):
            table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
                tf.constant(self.ids), tf.range(self.num_examples, dtype=tf.int64)), -1)
            features = None if self._features is None else tf.constant(self._features)
        if training:
            ds = self._training(global_batch, int(seed), int(first_epoch),
                                ctx.num_input_pipelines, ctx.input_pipeline_id, table, features)
        else:
            ds = self._evaluation(global_batch, ctx.num_input_pipelines, ctx.input_pipeline_id,
                                  table, features).repeat()
        ds = ds.batch(per_replica, drop_remainder=True)
        return ds.with_options(pipeline_options(deterministic=True)).prefetch(tf.data.AUTOTUNE)

    def distributed(self, strategy: tf.distribute.Strategy, global_batch: int, *,
                    training: bool, seed: int = 0, first_epoch: int = 0) -> tuple[Any, int]:
        """The input of a stage's ``fit`` / ``evaluate`` over ``strategy``.

        The contract of :func:`maivar_tf.distribute.make_distributed_dataset`; each input
        pipeline is :meth:`dataset` with its ``InputContext``.

        Args:
            strategy: the strategy whose replicas consume the batches.
            global_batch: examples per step over all replicas; a multiple of the replica count.
            training: training batches forever; otherwise padded, weighted passes.
            seed: the stage seed.
            first_epoch: the epoch the training data starts at.

        Returns:
            ``(distributed_dataset, steps)``, ``steps = max(1, ceil(N / global_batch))``.

        Raises:
            ValueError: ``global_batch`` is not a multiple of the replica count.
        """
        if global_batch % strategy.num_replicas_in_sync:
            raise ValueError(f"global batch {global_batch} is not a multiple of the "
                             f"{strategy.num_replicas_in_sync} replicas")
        steps = max(1, math.ceil(self.num_examples / global_batch))

        def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            return self.dataset(global_batch, training=training, seed=seed,
                                first_epoch=first_epoch, input_context=ctx)

        return strategy.distribute_datasets_from_function(dataset_fn), steps


__all__ = ["AUDIO_FEATURES", "AUDIO_IMAGE", "AUGMENT", "FRAMES", "TFRecordInput",
           "WINDOW_ORDER", "example_seeds"]
