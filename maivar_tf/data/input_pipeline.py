"""tf.data input pipeline over the Beam job's TFRecord shards.

The stages read as a sentence::

    files(<split>-*-of-*.tfrecord, sorted) -> interleave(TFRecordDataset)
      -> parse (schema.parse_sequence_example) -> decode JPEG frames
      -> center crop (eval) | multi-scale random crop + flip (training, TSN style)
      -> decode PNG audio-images -> batch (per replica) -> prefetch(AUTOTUNE)

Everything is deterministic unless ``training=True``. The shards' ``dataset_info.json`` is read
first: shards written under another :data:`~maivar_tf.data.schema.SCHEMA_VERSION` are refused,
as are representations or a K the shards do not hold.

Example:
    >>> ds = make_dataset("data/tfrecords", "test", cfg.data, batch_size=8)
    >>> batch = next(iter(ds))
    >>> batch["frames"].shape, batch["audio_images"]["chromagram"].shape
    (TensorShape([8, 8, 224, 224, 3]), TensorShape([8, 299, 299, 3]))
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from maivar_tf.config import DataConfig
from maivar_tf.data import schema

DATASET_INFO = "dataset_info.json"
#: TSN's multi-scale crop: crop sides as fractions of the shorter frame side.
TRAIN_CROP_SCALES = (1.0, 0.875, 0.75, 0.66)
#: TSN's ``max_distort``: height and width scales differ by at most this many steps.
TRAIN_MAX_DISTORT = 1


class SchemaVersionError(ValueError):
    """The shards were written under a schema version this code does not read."""


def read_dataset_info(data_dir: str | os.PathLike) -> dict[str, Any]:
    """Reads ``<data_dir>/dataset_info.json`` written by ``beam/build_tfrecords.py``.

    Args:
        data_dir: the folder holding the shards.

    Raises:
        FileNotFoundError: there is no ``dataset_info.json`` (the shards were never built).
    """
    path = os.path.join(os.fspath(data_dir), DATASET_INFO)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"{path} does not exist; build the shards first with "
            "`python -m beam.build_tfrecords` (or `maivar build`)")
    with tf.io.gfile.GFile(path, "r") as f:
        return json.load(f)


def check_schema_version(info: dict[str, Any], data_dir: str | os.PathLike) -> None:
    """Raises :class:`SchemaVersionError` unless ``info`` has this code's schema version."""
    version = info.get("schema_version")
    if version != schema.SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{os.fspath(data_dir)}: the shards use TFRecord schema version {version!r}, this "
            f"code reads version {schema.SCHEMA_VERSION}; rebuild them with "
            "`python -m beam.build_tfrecords`")


def _stored_data_config(info: dict[str, Any]) -> dict[str, Any]:
    return dict(info.get("config", {}).get("data", {}))


def shard_files(data_dir: str | os.PathLike, split: str) -> list[str]:
    """The split's shard files, sorted.

    Raises:
        FileNotFoundError: no shard of ``split`` exists (naming the splits that do).
    """
    pattern = os.path.join(os.fspath(data_dir), f"{split}-*-of-*.tfrecord")
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        have = sorted({os.path.basename(p).rsplit("-", 3)[0] for p in tf.io.gfile.glob(
            os.path.join(os.fspath(data_dir), "*-*-of-*.tfrecord"))})
        raise FileNotFoundError(
            f"no shards match {pattern}; splits present: {', '.join(have) or 'none'}")
    return files


def segment_subset(stored: int, wanted: int) -> list[int]:
    """Indices of ``wanted`` frames evenly spread over ``stored`` (each segment's centre)."""
    return [int((i + 0.5) * stored / wanted) for i in range(wanted)]


# ----------------------------------------------------------------------------- stages


def center_crop(frames: tf.Tensor, crop: int) -> tf.Tensor:
    """uint8 [..., H, W, 3] -> the centre ``crop`` x ``crop`` window of every frame.

    Offsets are ``(H - crop) // 2`` and ``(W - crop) // 2``; any leading dimensions (K, or
    B and K) are kept, so extraction and the serving signatures crop exactly as training does.

    The frames are decoded whole first: ``decode_and_crop_jpeg`` differs from decoding then
    cropping by a level or two at the window edge (chroma upsampling), and the crop must equal
    what ``maivar predict`` computes from the same pixels.
    """
    shape = tf.shape(frames)
    off_y = (shape[-3] - crop) // 2
    off_x = (shape[-2] - crop) // 2
    return frames[..., off_y:off_y + crop, off_x:off_x + crop, :]


def _decode_frames(encoded: tf.Tensor) -> tf.Tensor:
    """[K] JPEG strings -> uint8 [K, H, W, 3]."""
    return tf.map_fn(lambda b: tf.io.decode_jpeg(b, channels=3), encoded,
                     fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def random_crop_and_flip(frames: tf.Tensor, crop: int, seed: tf.Tensor) -> tf.Tensor:
    """TSN training augmentation, the same for every frame of one clip.

    A crop whose height and width are each one of :data:`TRAIN_CROP_SCALES` times the shorter
    side (differing by at most :data:`TRAIN_MAX_DISTORT` steps), at a random position, resized
    to ``crop`` x ``crop``; then a horizontal flip with probability 1/2.

    Args:
        frames: uint8 [K, H, W, 3].
        crop: the output side.
        seed: int64 [2], a stateless random seed.
    """
    seeds = tf.random.experimental.stateless_split(seed, num=5)
    shape = tf.shape(frames)
    h, w = shape[1], shape[2]
    short = tf.cast(tf.minimum(h, w), tf.float32)
    scales = tf.constant(TRAIN_CROP_SCALES, tf.float32)
    n = len(TRAIN_CROP_SCALES)
    i = tf.random.stateless_uniform([], seeds[0], 0, n, dtype=tf.int32)
    d = tf.random.stateless_uniform([], seeds[1], -TRAIN_MAX_DISTORT, TRAIN_MAX_DISTORT + 1,
                                    dtype=tf.int32)
    j = tf.clip_by_value(i + d, 0, n - 1)
    ch = tf.minimum(tf.cast(tf.round(scales[i] * short), tf.int32), h)
    cw = tf.minimum(tf.cast(tf.round(scales[j] * short), tf.int32), w)
    y = tf.random.stateless_uniform([], seeds[2], 0, h - ch + 1, dtype=tf.int32)
    x = tf.random.stateless_uniform([], seeds[3], 0, w - cw + 1, dtype=tf.int32)
    cropped = frames[:, y:y + ch, x:x + cw, :]
    resized = tf.image.resize(cropped, [crop, crop], method="bilinear", antialias=True)
    out = tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
    flip = tf.random.stateless_uniform([], seeds[4]) < 0.5
    return tf.cond(flip, lambda: tf.reverse(out, axis=[2]), lambda: out)


# ----------------------------------------------------------------------------- dataset


def make_dataset(data_dir: str | os.PathLike, split: str, cfg: DataConfig, *, batch_size: int,
                 training: bool = False, representations: Sequence[str] | None = None,
                 include_frames: bool = True, repeat: bool = False,
                 input_context: tf.distribute.InputContext | None = None,
                 num_segments: int | None = None, shuffle_buffer: int = 256,
                 seed: int | None = None, drop_remainder: bool = False) -> tf.data.Dataset:
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

    Returns:
        A dataset of ``{"frames": uint8 [B, K, crop, crop, 3], "audio_images": {rep: uint8
        [B, S, S, 3]}, "label": int64 [B], "example_id": string [B]}`` (``frames`` only with
        ``include_frames``, ``audio_images`` only when representations are asked for).

    Raises:
        FileNotFoundError: no ``dataset_info.json`` or no shard of ``split``.
        SchemaVersionError: the shards were written under another schema version.
        ValueError: a representation, K or crop size the shards cannot provide.
    """
    info = read_dataset_info(data_dir)
    check_schema_version(info, data_dir)
    stored = _stored_data_config(info)
    stored_reps = tuple(stored.get("representations", ()))
    reps = tuple(cfg.representations if representations is None else representations)
    missing = [r for r in reps if r not in stored_reps]
    if missing:
        raise ValueError(f"representations {missing} are not in the shards of {data_dir}; "
                         f"allowed: {', '.join(stored_reps) or 'none'}")
    stored_k = int(stored.get("num_segments", cfg.num_segments))
    k = int(num_segments or cfg.num_segments)
    if k > stored_k:
        raise ValueError(f"num_segments: {k} frames per clip asked, the shards of {data_dir} "
                         f"hold {stored_k}; allowed: 1..{stored_k} (or rebuild with "
                         f"--num_segments={k})")
    crop = int(cfg.crop_size)
    stored_short = int(stored.get("frame_short_side", cfg.frame_short_side))
    if include_frames and crop > stored_short:
        raise ValueError(f"crop_size: {crop} > the shards' frame_short_side {stored_short}; "
                         f"allowed: crop_size <= {stored_short}")
    image_size = int(stored.get("audio", {}).get("image_size", cfg.audio.image_size))
    frame_index = None if k == stored_k else tf.constant(segment_subset(stored_k, k), tf.int32)
    augment = training and cfg.train_augment
    deterministic = not training

    files = shard_files(data_dir, split)
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    per_replica_batch = (input_context.get_per_replica_batch_size(batch_size)
                         if input_context else batch_size)
    shard_by_file = num_pipelines > 1 and len(files) >= num_pipelines

    def parse(serialized):
        return schema.parse_sequence_example(serialized, reps)

    def decode(parsed, aug_seed=None):
        out = {"label": parsed[schema.LABEL_INDEX], "example_id": parsed[schema.EXAMPLE_ID]}
        if include_frames:
            encoded = parsed[schema.IMAGE_ENCODED]
            if frame_index is not None:
                encoded = tf.gather(encoded, frame_index)
            if augment:
                frames = random_crop_and_flip(_decode_frames(encoded), crop, aug_seed)
            else:
                frames = center_crop(_decode_frames(encoded), crop)
            out["frames"] = tf.ensure_shape(frames, [k, crop, crop, 3])
        if reps:
            out["audio_images"] = {
                rep: tf.ensure_shape(
                    tf.io.decode_png(parsed[schema.audio_image_key(rep)][0], channels=3),
                    [image_size, image_size, 3])
                for rep in reps}
        return out

    ds = tf.data.Dataset.from_tensor_slices(files)  # sorted: a deterministic file order
    if shard_by_file:  # before any shuffle, so the pipelines' file sets stay disjoint
        ds = ds.shard(num_pipelines, pipeline_id)
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if num_pipelines > 1 and not shard_by_file:
        ds = ds.shard(num_pipelines, pipeline_id)
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if augment and include_frames:
        seeds = tf.data.Dataset.random(seed=seed).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    else:
        ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    ds = ds.batch(per_replica_batch, drop_remainder=drop_remainder)
    options = tf.data.Options()
    options.deterministic = deterministic
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
