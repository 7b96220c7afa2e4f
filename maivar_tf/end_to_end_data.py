"""The TFRecords as an end-to-end stage's input: decoded clips, TSN's augmentation, per epoch.

:class:`TFRecordInput` is the TFRecord twin of :class:`maivar_tf.distribute.ArrayInput`: what
:func:`maivar_tf.stage_fit.train_stage` feeds ``model.fit`` with, under the same contract as
:func:`maivar_tf.distribute.make_distributed_dataset`:

* batch sizes are global; ``strategy.distribute_datasets_from_function`` gives each input
  pipeline (one per worker) its ``input_pipeline_id``-th share and batches of
  ``get_per_replica_batch_size``; an epoch is ``steps = ceil(N / global_batch)`` steps on every
  worker (each pipeline's share of the epoch's order is repeated to fill them);
* training epoch ``e`` is a function of ``(seed, e)`` only: the shard files in an order
  shuffled by ``(seed, e)``, read in that order, a shuffle buffer seeded by ``(seed, e)``,
  and every clip's augmentation seeded by ``(seed, e, its example id)``, whichever worker
  decodes it. A resumed fit that starts at epoch ``k`` sees what the uninterrupted one saw;
* evaluation reads the files in order, centre crops, evenly spread segments, and pads the
  examples to whole global batches with zero-weight copies, so each counts exactly once.

The augmentation is TSN's (Wang et al. 2016) for frames only, through the one decoder
(:func:`maivar_tf.data.decode.decode_example`): a random stored frame inside each of the K
segments when the shards hold more frames than K (``data.num_segments`` below the Beam job's
``--num_segments``; otherwise every segment has one frame), and one multi-scale crop plus a
horizontal flip per clip (:func:`maivar_tf.ops.random_crop_and_flip`; ``data.train_augment``).
Audio-images are never augmented: their axes are time and frequency.

Example:
    >>> data = TFRecordInput("data/tfrecords", "train", cfg.data, ids=ids, frames=True,
    ...                      audio_image="chromagram")                       # doctest: +SKIP
    >>> ds, steps = data.distributed(strategy, 64, training=True, seed=1)     # doctest: +SKIP
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

#: Examples in the training shuffle buffer.
SHUFFLE_BUFFER = 256
_ID_SPEC = {schema.EXAMPLE_ID: tf.io.FixedLenFeature([], tf.string)}


def _example_id(serialized: tf.Tensor) -> tf.Tensor:
    """The example id of a serialized SequenceExample (its context only is parsed)."""
    context, _ = tf.io.parse_single_sequence_example(serialized, context_features=_ID_SPEC)
    return context[schema.EXAMPLE_ID]


def _epoch_seed(seed: int, stream: int, epoch) -> tf.Tensor:
    """int64 ``[2]``: the stateless seed of ``stream`` in ``epoch``."""
    return tf.stack([tf.constant(seeds.stream_seed(seed, stream), tf.int64),
                     tf.cast(epoch, tf.int64)])


class TFRecordInput:
    """The examples ``ids`` of a split's shards, decoded for an end-to-end stage.

    Args:
        data_dir: the folder of the shards and ``dataset_info.json`` (``data.output_dir``).
        split: ``train``, ``val`` or ``test``.
        data_cfg: the data section: K (``num_segments``), ``crop_size``, ``train_augment``.
        ids: the example ids to keep (the training examples, or the held-out validation ones).
        frames: decode the K frames (input ``frames``, uint8 ``[b, K, c, c, 3]``).
        audio_image: decode this representation's audio-image (input ``audio_image``, uint8
            ``[b, S, S, 3]``), or None.
        audio_features: ``(ids, float32 [N, Da])``: input ``audio_features``, the row of each
            example's id (a frozen audio backbone's cached features), or None.
        shuffle_buffer: examples in the training shuffle buffer.

    Raises:
        FileNotFoundError: no ``dataset_info.json`` or no shard of ``split``.
        ValueError: no ids, cached features missing for some, or a representation, K or crop
            the shards cannot provide.
    """

    def __init__(self, data_dir: str | os.PathLike, split: str, data_cfg: DataConfig, *,
                 ids: Sequence[str], frames: bool = True, audio_image: str | None = None,
                 audio_features: tuple[np.ndarray, np.ndarray] | None = None,
                 shuffle_buffer: int = SHUFFLE_BUFFER):
        self.ids = tuple(sorted({str(i) for i in ids}))
        if not self.ids:
            raise ValueError(f"TFRecordInput: no example ids of {split!r} to read")
        self.frames, self.audio_image = bool(frames), audio_image
        self.files = shard_files(data_dir, split)
        layout = ShardLayout.read(data_dir, data_cfg)
        reps = [audio_image] if audio_image else []
        k, crop = int(data_cfg.num_segments), int(data_cfg.crop_size)
        self.augment = bool(data_cfg.train_augment) and self.frames
        self._train_decode = layout.decoder(reps, k, crop, crop="random" if self.augment
                                            else "center", include_frames=self.frames)
        self._eval_decode = layout.decoder(reps, k, crop, include_frames=self.frames)
        self._random_offsets = self.augment and layout.num_segments > k
        self.shuffle_buffer = int(shuffle_buffer)
        self._cache = None
        if audio_features is not None:
            cache_ids = [i.decode() if isinstance(i, bytes) else str(i)
                         for i in np.asarray(audio_features[0])]
            missing = sorted(set(self.ids) - set(cache_ids))
            if missing:
                raise ValueError(f"TFRecordInput: no cached audio features for {len(missing)} "
                                 f"examples (e.g. {missing[0]!r})")
            self._cache = (cache_ids, np.asarray(audio_features[1], np.float32))

    @property
    def num_examples(self) -> int:
        """N, the examples kept."""
        return len(self.ids)

    # ------------------------------------------------------------------------- stages

    def _tables(self):
        """Id -> 0 lookup of the kept ids; id -> row of the cached features (or None)."""
        keep = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(self.ids), tf.zeros(len(self.ids), tf.int64)), default_value=-1)
        if self._cache is None:
            return keep, None, None
        ids, rows = self._cache
        index = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(ids), tf.range(len(ids), dtype=tf.int64)), default_value=-1)
        return keep, index, tf.constant(rows)

    def _kept(self, files: tf.Tensor, keep) -> tf.data.Dataset:
        """``(id, serialized)`` of the kept examples of ``files``, read in order."""
        ds = tf.data.Dataset.from_tensor_slices(files).interleave(
            tf.data.TFRecordDataset, cycle_length=1)
        ds = ds.map(lambda r: (_example_id(r), r))
        return ds.filter(lambda i, r: keep.lookup(i) >= 0)

    def _element(self, decoded: dict, example_id, index, rows) -> tuple[dict, tf.Tensor]:
        x = {}
        if self.frames:
            x[FRAMES_INPUT] = decoded["frames"]
        if self.audio_image:
            x[AUDIO_IMAGE_INPUT] = decoded["audio_images"][self.audio_image]
        if rows is not None:
            x[AUDIO_INPUT] = tf.gather(rows, index.lookup(example_id))
        return x, decoded["label"]

    def _train_epoch(self, epoch, seed: int, files: tf.Tensor, keep, index, rows,
                     ctx: tf.distribute.InputContext, take: int) -> tf.data.Dataset:
        order = tf.random.experimental.stateless_shuffle(
            tf.range(tf.size(files)), seed=_epoch_seed(seed, seeds.DATA_ORDER, epoch))
        ds = self._kept(tf.gather(files, order), keep)
        shuffle_seed = tf.random.stateless_uniform(
            [], tf.random.experimental.stateless_fold_in(
                _epoch_seed(seed, seeds.DATA_ORDER, epoch), 1),
            minval=0, maxval=2**31 - 1, dtype=tf.int64)
        ds = ds.shuffle(self.shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
        if ctx.num_input_pipelines > 1:
            ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        augment = _epoch_seed(seed, seeds.AUGMENT, epoch)

        def decode(example_id, serialized):
            clip = tf.random.experimental.stateless_fold_in(
                augment, tf.strings.to_hash_bucket_fast(example_id, 2**62))
            kwargs = {}
            if self.augment:
                kwargs["seed"] = tf.random.experimental.stateless_fold_in(clip, 0)
            if self._random_offsets:
                kwargs["segment_seed"] = tf.random.experimental.stateless_fold_in(clip, 1)
            return self._element(self._train_decode(serialized, **kwargs), example_id, index,
                                 rows)

        return ds.repeat().take(take).map(decode, num_parallel_calls=tf.data.AUTOTUNE,
                                          deterministic=True)

    def distributed(self, strategy: tf.distribute.Strategy, global_batch: int, *,
                    training: bool, seed: int = 0, first_epoch: int = 0) -> tuple[Any, int]:
        """The examples as a distributed dataset (see the module docstring).

        Args:
            strategy: the strategy whose replicas consume the batches.
            global_batch: examples per step over all replicas (a multiple of the replicas).
            training: the augmented epochs from ``first_epoch`` on, forever; otherwise one
                exact pass per ``steps`` steps with sample weights, repeated.
            seed: the stage seed (data order and augmentation).
            first_epoch: the epoch the training data starts at (a resumed fit's).

        Returns:
            ``(distributed_dataset, steps)``; elements ``(inputs, labels)`` in training,
            ``(inputs, labels, weights)`` otherwise.

        Raises:
            ValueError: ``global_batch`` is not a multiple of the replicas.
        """
        n, replicas = self.num_examples, strategy.num_replicas_in_sync
        if global_batch % replicas:
            raise ValueError(f"global batch {global_batch} is not a multiple of the "
                             f"{replicas} replicas")
        steps = max(1, math.ceil(n / global_batch))

        def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            per_replica = ctx.get_per_replica_batch_size(global_batch)
            share = global_batch // ctx.num_input_pipelines
            files = tf.constant(self.files)
            keep, index, rows = self._tables()
            if training:
                ds = tf.data.Dataset.range(int(first_epoch), 2**62).flat_map(
                    lambda e: self._train_epoch(e, seed, files, keep, index, rows, ctx,
                                                steps * share))
            else:
                ds = self._eval_pass(files, keep, index, rows, ctx, steps * global_batch - n)
            ds = ds.batch(per_replica, drop_remainder=True)
            return ds.with_options(pipeline_options(deterministic=True)).prefetch(
                tf.data.AUTOTUNE)

        return strategy.distribute_datasets_from_function(dataset_fn), steps

    def _eval_pass(self, files, keep, index, rows, ctx, pad: int) -> tf.data.Dataset:
        """Every kept example once (weight 1), then ``pad`` zero-weight copies; repeated."""
        kept = self._kept(files, keep)

        def decode(weight):
            def fn(example_id, serialized):
                x, y = self._element(self._eval_decode(serialized), example_id, index, rows)
                return x, y, tf.constant(weight, tf.float32)
            return fn

        ds = kept.map(decode(1.0), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if pad:
            ds = ds.concatenate(kept.repeat().take(pad).map(
                decode(0.0), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))
        if ctx.num_input_pipelines > 1:
            ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        return ds.repeat()


__all__ = ["SHUFFLE_BUFFER", "TFRecordInput"]
