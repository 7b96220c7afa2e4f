"""tf.data input pipeline over the Beam job's TFRecord shards.

The stages read as a sentence::

    files(<split>-*-of-*.tfrecord, sorted) -> [shard by input pipeline] -> [shuffle files]
      -> interleave(TFRecordDataset) -> [shuffle examples] -> [repeat]
      -> decode_example (parse, JPEG frames, crop, PNG audio-images)
      -> batch (per replica) -> prefetch(AUTOTUNE)

Decoding is :func:`maivar_tf.data.decode.decode_example`, the one decoder that extraction and
``maivar predict`` use too: centre crops for evaluation, TSN's multi-scale random crops and
flips in training (Shaikh et al. 2024, Sec. 3.3, after Wang et al. 2016). Everything is
deterministic unless ``training=True``. The shards' ``dataset_info.json`` is read first
(:class:`~maivar_tf.artifacts.DatasetInfo`): shards written under another
:data:`~maivar_tf.data.schema.SCHEMA_VERSION` are refused, as are representations, a K or a
crop size the shards cannot provide (:class:`ShardLayout`).

Example:
    >>> ds = make_dataset("data/tfrecords", "test", cfg.data, batch_size=8)  # doctest: +SKIP
    >>> batch = next(iter(ds))                                                # doctest: +SKIP
    >>> batch["frames"].shape, batch["audio_images"]["chromagram"].shape      # doctest: +SKIP
    (TensorShape([8, 8, 224, 224, 3]), TensorShape([8, 299, 299, 3]))
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import tensorflow as tf

from maivar_tf.artifacts import DatasetInfo, shard_glob
from maivar_tf.config import DataConfig
from maivar_tf.data import schema
from maivar_tf.data.decode import decode_example


def shard_files(data_dir: str | os.PathLike, split: str) -> list[str]:
    """The split's shard files, sorted.

    Raises:
        FileNotFoundError: no shard of ``split`` exists (naming the splits that do).
    """
    pattern = os.path.join(os.fspath(data_dir), shard_glob(split))
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        have = sorted({os.path.basename(p).rsplit("-", 3)[0] for p in tf.io.gfile.glob(
            os.path.join(os.fspath(data_dir), shard_glob()))})
        raise FileNotFoundError(
            f"no shards match {pattern}; splits present: {', '.join(have) or 'none'}")
    return files


@dataclass(frozen=True)
class ShardLayout:
    """What the shards of one folder hold, from their ``dataset_info.json``.

    Args:
        data_dir: the folder (named in error messages).
        representations: the audio-images stored.
        num_segments: frames stored per clip.
        frame_short_side: the frames' shorter side.
        image_size: the audio-images' side.
        segment_audio: the records hold per-segment audio-images (``data.segment_audio``).
    """

    data_dir: str
    representations: tuple[str, ...]
    num_segments: int
    frame_short_side: int
    image_size: int
    segment_audio: bool = False

    @classmethod
    def read(cls, data_dir: str | os.PathLike, cfg: DataConfig) -> ShardLayout:
        """Reads ``dataset_info.json`` (values it lacks come from ``cfg``).

        Raises:
            FileNotFoundError: there is no ``dataset_info.json``.
            SchemaVersionError: the shards were written under another schema version.
        """
        info = DatasetInfo.read(data_dir)
        info.check_schema(data_dir, schema.SCHEMA_VERSION, schema.READABLE_VERSIONS)
        stored = info.data_config
        return cls(data_dir=os.fspath(data_dir),
                   representations=tuple(stored.get("representations", ())),
                   num_segments=int(stored.get("num_segments", cfg.num_segments)),
                   frame_short_side=int(stored.get("frame_short_side", cfg.frame_short_side)),
                   image_size=int(stored.get("audio", {}).get("image_size",
                                                              cfg.audio.image_size)),
                   segment_audio=bool(stored.get("segment_audio", False)))

    def check(self, representations: Sequence[str], num_segments: int,
              crop_size: int | None, segment_representations: Sequence[str] = ()) -> None:
        """Raises ValueError unless the shards hold these representations (and per-segment
        audio-images of ``segment_representations``), K and crop size."""
        if segment_representations and not self.segment_audio:
            raise ValueError(f"segment_audio: per-segment audio-images asked "
                             f"({', '.join(segment_representations)}), the shards of "
                             f"{self.data_dir} hold none; rebuild them with "
                             "data.segment_audio=true")
        missing = [r for r in (*representations, *segment_representations)
                   if r not in self.representations]
        if missing:
            raise ValueError(f"representations {missing} are not in the shards of "
                             f"{self.data_dir}; allowed: "
                             f"{', '.join(self.representations) or 'none'}")
        if num_segments > self.num_segments:
            raise ValueError(f"num_segments: {num_segments} frames per clip asked, the shards of "
                             f"{self.data_dir} hold {self.num_segments}; allowed: "
                             f"1..{self.num_segments} (or rebuild with "
                             f"--num_segments={num_segments})")
        if crop_size is not None and crop_size > self.frame_short_side:
            raise ValueError(f"crop_size: {crop_size} > the shards' frame_short_side "
                             f"{self.frame_short_side}; allowed: crop_size <= "
                             f"{self.frame_short_side}")

    def decoder(self, representations: Sequence[str], num_segments: int, crop_size: int, *,
                crop: str = "center", include_frames: bool = True,
                segment_representations: Sequence[str] = ()) -> Callable:
        """:func:`decode_example` bound to these shards (checked first, see :meth:`check`).

        Returns:
            ``decode(serialized, seed=None, segment_seed=None) -> dict`` of tensors: ``seed``
            seeds ``crop="random"``, ``segment_seed`` TSN's random segment offsets when the
            shards store more frames than ``num_segments`` (:func:`decode_example`).
        """
        reps, seg_reps = tuple(representations), tuple(segment_representations)
        self.check(reps, num_segments, crop_size if include_frames else None, seg_reps)
        return functools.partial(
            decode_example, representations=reps, crop_size=int(crop_size),
            num_segments=int(num_segments), stored_segments=self.num_segments, crop=crop,
            image_size=self.image_size, include_frames=include_frames,
            segment_representations=seg_reps)


# ----------------------------------------------------------------------------- stages


def _records(files: Sequence[str], *, training: bool, input_context, seed: int | None,
             shuffle_buffer: int, repeat: bool) -> tf.data.Dataset:
    """Serialized examples of ``files``: sharded, shuffled (training) and repeated as asked.

    Several input pipelines take disjoint files when there are enough of them, disjoint
    records of the interleaved stream otherwise; either way before any shuffle.
    """
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    shard_by_file = num_pipelines > 1 and len(files) >= num_pipelines
    ds = tf.data.Dataset.from_tensor_slices(list(files))  # sorted: a deterministic file order
    if shard_by_file:
        ds = ds.shard(num_pipelines, pipeline_id)
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
    if num_pipelines > 1 and not shard_by_file:
        ds = ds.shard(num_pipelines, pipeline_id)
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return ds.repeat() if repeat else ds


def _decoded(records: tf.data.Dataset, decode: Callable, *, random_crops: bool,
             seed: int | None, deterministic: bool) -> tf.data.Dataset:
    """Maps ``decode``; random crops draw one stateless seed per example from ``seed``."""
    if random_crops:
        seeds = tf.data.Dataset.random(seed=seed).batch(2)
        return tf.data.Dataset.zip((records, seeds)).map(
            lambda s, sd: decode(s, seed=sd), num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic)
    return records.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)


def pipeline_options(*, deterministic: bool = True) -> tf.data.Options:
    """The options of every pipeline over the shards: the order asked for, no autotuning.

    Destroying an iterator whose autotuning model thread runs waits for that thread's next
    wake-up, which backs off towards a minute as the iterator ages: every pipeline that ended
    (an input shard in extraction, an epoch) stalled for up to that long. Without the model
    thread, ``AUTOTUNE`` parallelism is the number of schedulable cores and ``prefetch`` keeps
    its own buffer tuning, which keeps the backbones fed on CPU.
    """
    options = tf.data.Options()
    options.deterministic = deterministic
    options.autotune.enabled = False
    return options


def _batched(ds: tf.data.Dataset, batch_size: int, *, drop_remainder: bool,
             deterministic: bool) -> tf.data.Dataset:
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.with_options(pipeline_options(deterministic=deterministic)).prefetch(
        tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------- dataset


def make_dataset(data_dir: str | os.PathLike, split: str, cfg: DataConfig, *, batch_size: int,
                 training: bool = False, representations: Sequence[str] | None = None,
                 include_frames: bool = True, repeat: bool = False,
                 input_context: tf.distribute.InputContext | None = None,
                 num_segments: int | None = None, shuffle_buffer: int = 256,
                 seed: int | None = None, drop_remainder: bool = False,
                 segment_representations: Sequence[str] = ()) -> tf.data.Dataset:
    """Batches of decoded clips from the shards of one split.

    Args:
        data_dir: the folder holding the shards and ``dataset_info.json``.
        split: ``train``, ``test`` or ``val``.
        cfg: the data section; ``crop_size``, ``train_augment`` and, by default,
            ``representations`` and ``num_segments`` come from it.
        batch_size: the global batch size (divided per replica with ``input_context``).
        training: shuffle, random crops/flips (if ``cfg.train_augment``), non-deterministic
            order; otherwise centre crops in file order.
        representations: the audio-images to decode (default ``cfg.representations``; an
            empty list decodes none).
        include_frames: decode the frames (``False`` for audio-only consumers).
        repeat: repeat forever.
        input_context: from ``strategy.distribute_datasets_from_function``: shards the input
            by ``input_pipeline_id`` and batches ``get_per_replica_batch_size(batch_size)``.
        num_segments: K frames per clip (default ``cfg.num_segments``); fewer than stored
            picks evenly spread ones.
        shuffle_buffer: examples in the training shuffle buffer.
        seed: seed of the training shuffle and augmentation.
        drop_remainder: drop the last partial batch.
        segment_representations: also decode these per-segment audio-images
            (``audio_segments``; the shards must hold them, ``data.segment_audio``).

    Returns:
        A dataset of ``{"frames": uint8 [B, K, crop, crop, 3], "audio_images": {rep: uint8
        [B, S, S, 3]}, "audio_segments": {rep: uint8 [B, K, S, S, 3]}, "label": int64 [B],
        "example_id": string [B], "segment_times": float32 [B, K], "segment_labels": int64
        [B, K], "has_spans": bool [B], "audio_missing": bool [B]}`` (``frames`` only with
        ``include_frames``, ``audio_images`` only when representations are asked for,
        ``audio_segments`` only when segment representations are;
        :func:`~maivar_tf.data.decode.decode_example`).

    Raises:
        FileNotFoundError: no ``dataset_info.json`` or no shard of ``split``.
        SchemaVersionError: the shards were written under another schema version.
        ValueError: a representation, K or crop size the shards cannot provide, or
            per-segment audio-images they do not hold.
    """
    augment = training and cfg.train_augment and include_frames
    decode = ShardLayout.read(data_dir, cfg).decoder(
        cfg.representations if representations is None else representations,
        int(num_segments or cfg.num_segments), int(cfg.crop_size),
        crop="random" if augment else "center", include_frames=include_frames,
        segment_representations=segment_representations)
    files = shard_files(data_dir, split)
    records = _records(files, training=training, input_context=input_context, seed=seed,
                       shuffle_buffer=shuffle_buffer, repeat=repeat)
    decoded = _decoded(records, decode, random_crops=augment, seed=seed,
                       deterministic=not training)
    per_replica = (input_context.get_per_replica_batch_size(batch_size) if input_context
                   else batch_size)
    return _batched(decoded, per_replica, drop_remainder=drop_remainder,
                    deterministic=not training)
