"""One serialized ``SequenceExample`` -> tensors: the only decoder of the TFRecord schema.

Parsing and decoding are separate steps (TF Model Garden's ``Decoder`` / ``Parser`` split):
:func:`maivar_tf.data.schema.parse_sequence_example` turns the bytes into raw feature tensors,
:func:`decode_parsed` decodes them. Decoding JPEG-decodes the K stored TSN segment frames
(Shaikh et al. 2024, Sec. 3.3: one frame per segment), keeps ``num_segments`` of them spread
evenly when fewer are asked than stored (or at TSN's random offsets in training), crops them with :mod:`maivar_tf.ops`, and PNG-decodes
the audio-images (Sec. 3.2). The training input pipeline, feature extraction (centre crop, or
whole frames for TSN's ten crops) and ``maivar predict`` all call :func:`decode_example`, so they
see the same pixels.

Every decode also returns what untrimmed videos and missing sound tracks need (schema 2; cheap,
context and timestamps only): the kept segments' times in seconds, their span labels
(:func:`segment_labels`: the class of the annotated span ``[start, end)`` holding the segment's
frame timestamp, -1 for background), whether the record has spans and whether its audio is the
silent one. ``segment_representations`` also decodes the K per-segment audio-images
(``<REP>_SEGMENTS/image/encoded``), kept for the same segments as the frames.

Crop modes:

* ``"center"``: the centre ``crop_size`` square of every frame (evaluation, extraction);
* ``"none"``: whole frames, for TSN's ten crops taken later (:func:`maivar_tf.ops.ten_crop`);
* ``"random"``: TSN's multi-scale crop and flip (:func:`maivar_tf.ops.random_crop_and_flip`),
  the same for every frame of a clip, from a stateless ``seed``.

Example:
    >>> out = decode_example(serialized, representations=["chromagram"], crop_size=224)
    >>> out["frames"].shape, out["audio_images"]["chromagram"].shape  # doctest: +SKIP
    (TensorShape([8, 224, 224, 3]), TensorShape([299, 299, 3]))
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from maivar_tf import ops
from maivar_tf.data import schema

#: The allowed ``crop`` arguments.
CROP_MODES = ("center", "none", "random")


def segment_subset(stored: int, wanted: int) -> list[int]:
    """Indices of ``wanted`` frames evenly spread over ``stored`` (each segment's centre)."""
    return [int((i + 0.5) * stored / wanted) for i in range(wanted)]


def _segment_index(num_stored, wanted: int) -> tf.Tensor:
    """The in-graph twin of :func:`segment_subset` for a stored count known only at run time."""
    stored = tf.cast(num_stored, tf.float64)
    centres = (tf.range(wanted, dtype=tf.float64) + 0.5) * stored / float(wanted)
    return tf.cast(tf.floor(centres), tf.int32)


def _random_segment_index(num_stored, wanted: int, segment_seed) -> tf.Tensor:
    """TSN's random offsets: for segment ``i`` a uniform index in
    ``[floor(i * stored / wanted), floor((i + 1) * stored / wanted))``."""
    stored = tf.cast(num_stored, tf.int64)
    i = tf.range(wanted, dtype=tf.int64)
    low = i * stored // wanted
    width = tf.maximum((i + 1) * stored // wanted - low, 1)
    draw = tf.random.stateless_uniform([wanted], tf.cast(segment_seed, tf.int64),
                                       minval=None, maxval=None, dtype=tf.int64)
    return tf.cast(low + tf.math.floormod(draw, width), tf.int32)


def _pick_segments(encoded: tf.Tensor, num_segments: int | None,
                   stored_segments: int | None, segment_seed=None) -> tf.Tensor:
    """The ``num_segments`` evenly spread entries of ``encoded`` (all when not asked), or with
    ``segment_seed`` one random entry per segment when more are stored than asked."""
    if num_segments is None or num_segments == stored_segments:
        return encoded
    if segment_seed is not None:
        return tf.gather(encoded, _random_segment_index(
            stored_segments or tf.shape(encoded)[0], num_segments, segment_seed))
    if stored_segments is not None:
        return tf.gather(encoded, tf.constant(segment_subset(stored_segments, num_segments),
                                              tf.int32))
    return tf.gather(encoded, _segment_index(tf.shape(encoded)[0], num_segments))


def segment_labels(times_us, starts_us, ends_us, labels) -> tf.Tensor:
    """Per segment, the label of the first span ``[start, end)`` holding its time, else -1.

    Args:
        times_us: int64 ``[K]`` segment (frame) timestamps.
        starts_us, ends_us, labels: int64 ``[J]`` the spans (``J`` may be 0).

    Returns:
        int64 ``[K]``.
    """
    big = tf.constant([np.iinfo(np.int64).max], tf.int64)
    # A last span holding every time, labelled -1: the first match is then always defined.
    starts = tf.concat([tf.cast(starts_us, tf.int64), -big], 0)
    ends = tf.concat([tf.cast(ends_us, tf.int64), big], 0)
    labels = tf.concat([tf.cast(labels, tf.int64), tf.constant([-1], tf.int64)], 0)
    t = tf.cast(times_us, tf.int64)[:, None]
    inside = tf.logical_and(t >= starts[None, :], t < ends[None, :])
    return tf.gather(labels, tf.argmax(tf.cast(inside, tf.int32), axis=1, output_type=tf.int32))


def _segment_context(parsed: Mapping[str, tf.Tensor], num_segments: int | None,
                     stored_segments: int | None, segment_seed=None) -> dict[str, tf.Tensor]:
    """``segment_times`` / ``segment_labels`` of the kept segments, ``has_spans``,
    ``audio_missing`` (timestamps a record lacks count as 0)."""
    stamps = tf.cast(parsed[schema.IMAGE_TIMESTAMP], tf.int64)
    short = tf.maximum(tf.shape(parsed[schema.IMAGE_ENCODED])[0] - tf.shape(stamps)[0], 0)
    stamps = _pick_segments(tf.pad(stamps, [[0, short]]), num_segments, stored_segments,
                            segment_seed)
    starts = parsed[schema.SEGMENT_START_TIMESTAMP]
    return {
        "segment_times": tf.cast(stamps, tf.float32) / 1e6,
        "segment_labels": segment_labels(stamps, starts, parsed[schema.SEGMENT_END_TIMESTAMP],
                                         parsed[schema.SEGMENT_LABEL_INDEX]),
        "has_spans": tf.size(starts) > 0,
        "audio_missing": tf.cast(parsed[schema.AUDIO_MISSING], tf.int64) > 0,
    }


def _decode_pngs(encoded: tf.Tensor, image_size: int | None) -> tf.Tensor:
    """``[K]`` PNG strings -> uint8 ``[K, S, S, 3]``."""
    images = tf.map_fn(lambda b: tf.io.decode_png(b, channels=3), encoded,
                       fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
    return tf.ensure_shape(images, [None, image_size, image_size, 3])


def _decode_jpegs(encoded: tf.Tensor) -> tf.Tensor:
    """``[K]`` JPEG strings -> uint8 ``[K, H, W, 3]`` (whole frames: see :func:`decode_parsed`)."""
    return tf.map_fn(lambda b: tf.io.decode_jpeg(b, channels=3), encoded,
                     fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def _crop_frames(frames: tf.Tensor, crop: str, crop_size: int, seed) -> tf.Tensor:
    if crop == "center":
        return ops.center_crop(frames, crop_size)
    if crop == "random":
        if seed is None:
            raise ValueError("decode_example: crop='random' needs a seed (int64 [2])")
        return ops.random_crop_and_flip(frames, crop_size, seed)
    return frames


@tf.autograph.experimental.do_not_convert  # plain Python branches on settings, nothing to convert
def decode_parsed(parsed: Mapping[str, tf.Tensor], *, representations: Sequence[str],
                  crop_size: int, num_segments: int | None = None,
                  stored_segments: int | None = None, crop: str = "center",
                  image_size: int | None = None, seed=None,
                  include_frames: bool = True,
                  segment_representations: Sequence[str] = (),
                  segment_seed=None) -> dict[str, Any]:
    """Decodes what :func:`~maivar_tf.data.schema.parse_sequence_example` returned.

    Frames are JPEG-decoded whole, then cropped: ``decode_and_crop_jpeg`` differs from decoding
    then cropping by a level or two at the window edge (chroma upsampling), and the crop must
    equal what serving computes from the same pixels.

    Args: see :func:`decode_example`.
    """
    if crop not in CROP_MODES:
        raise ValueError(f"crop: {crop!r}; allowed: {', '.join(CROP_MODES)}")
    out: dict[str, Any] = {"label": parsed[schema.LABEL_INDEX],
                           "example_id": parsed[schema.EXAMPLE_ID],
                           **_segment_context(parsed, num_segments, stored_segments,
                                              segment_seed)}
    if include_frames:
        encoded = _pick_segments(parsed[schema.IMAGE_ENCODED], num_segments, stored_segments,
                                 segment_seed)
        frames = _crop_frames(_decode_jpegs(encoded), crop, int(crop_size), seed)
        side = None if crop == "none" else int(crop_size)
        out["frames"] = tf.ensure_shape(frames, [num_segments, side, side, 3])
    if representations:
        out["audio_images"] = {
            rep: tf.ensure_shape(
                tf.io.decode_png(parsed[schema.audio_image_key(rep)][0], channels=3),
                [image_size, image_size, 3])
            for rep in representations}
    if segment_representations:
        out["audio_segments"] = {
            rep: tf.ensure_shape(_decode_pngs(_pick_segments(
                parsed[schema.segment_audio_image_key(rep)], num_segments, stored_segments,
                segment_seed), image_size), [num_segments, image_size, image_size, 3])
            for rep in segment_representations}
    return out


@tf.autograph.experimental.do_not_convert
def decode_example(serialized, *, representations: Sequence[str], crop_size: int,
                   num_segments: int | None = None, stored_segments: int | None = None,
                   crop: str = "center", image_size: int | None = None, seed=None,
                   include_frames: bool = True,
                   segment_representations: Sequence[str] = (),
                   segment_seed=None) -> dict[str, Any]:
    """One serialized ``SequenceExample`` -> decoded tensors (graph-friendly: map it).

    Args:
        serialized: a scalar string tensor (or bytes).
        representations: audio-images to decode (empty: none).
        crop_size: the square crop side (unused with ``crop="none"``).
        num_segments: K frames to keep (default: all stored), evenly spread over the stored
            ones (:func:`segment_subset`).
        stored_segments: how many frames the shards hold, when known (a static gather);
            otherwise counted per example.
        crop: ``"center"``, ``"none"`` (whole frames) or ``"random"`` (training).
        image_size: the audio-image side, to give it a static shape.
        seed: int64 ``[2]`` stateless seed, for ``crop="random"``.
        include_frames: decode the frames (``False`` for audio-only consumers).
        segment_representations: per-segment audio-images to decode (empty: none); the
            records must hold them (``data.segment_audio``).
        segment_seed: int64 ``[2]`` stateless seed of TSN's random segment offsets: when the
            shards store more frames than ``num_segments``, segment ``i`` keeps a uniformly
            random stored frame in ``[floor(i * stored / K), floor((i + 1) * stored / K))``
            (its segment times, labels and per-segment audio-images follow); ``None`` keeps
            the evenly spread ones.

    Returns:
        ``{"frames": uint8 [K, c, c, 3] (or [K, H, W, 3] uncropped), "audio_images": {rep:
        uint8 [S, S, 3]}, "audio_segments": {rep: uint8 [K, S, S, 3]}, "label": int64 [],
        "example_id": string [], "segment_times": float32 [K] seconds from the file start,
        "segment_labels": int64 [K] (span label, -1 background), "has_spans": bool [],
        "audio_missing": bool []}``; ``frames`` only with ``include_frames``, ``audio_images``
        only when representations are asked for, ``audio_segments`` only when segment
        representations are.

    Raises:
        ValueError: an unknown crop mode, or ``crop="random"`` without a seed.
    """
    representations = tuple(representations)
    segment_representations = tuple(segment_representations)
    parsed = schema.parse_sequence_example(serialized, representations,
                                           segment_representations=segment_representations)
    return decode_parsed(parsed, representations=representations, crop_size=crop_size,
                         num_segments=num_segments, stored_segments=stored_segments,
                         crop=crop, image_size=image_size, seed=seed,
                         include_frames=include_frames,
                         segment_representations=segment_representations,
                         segment_seed=segment_seed)


def decode_examples(serialized: Sequence[bytes], **options) -> list[dict[str, Any]]:
    """Decodes serialized examples held in memory, one dict of numpy arrays per example.

    The in-memory twin of a dataset mapped with :func:`decode_example`, for a handful of
    records (it builds a dataset per call; ``maivar predict`` instead holds one traced
    ``decode_example`` per predictor, ``serving.predictors.ClipDecoder``). Examples keep their
    order; frames of different examples may
    differ in size with ``crop="none"``, so nothing is stacked.

    Args:
        serialized: ``SequenceExample`` bytes.
        **options: the keyword arguments of :func:`decode_example` (not ``crop="random"``).

    Returns:
        Per example ``{"frames": uint8 ndarray, "audio_images": {rep: uint8 ndarray},
        "label": int, "example_id": bytes}`` (keys as :func:`decode_example`).

    Raises:
        ValueError: ``crop="random"`` (augmentation belongs to the training pipeline).
    """
    if options.get("crop") == "random":
        raise ValueError("decode_examples: crop='random' is for the training pipeline; "
                         "allowed: center, none")
    if not serialized:
        return []
    from maivar_tf.data.input_pipeline import pipeline_options  # it imports this module

    decode = functools.partial(decode_example, **options)
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(list(serialized), tf.string))
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE).with_options(pipeline_options())
    return [_plain(el) for el in ds.as_numpy_iterator()]


def _plain(element: dict[str, Any]) -> dict[str, Any]:
    out = dict(element)
    out["label"] = int(np.asarray(element["label"]))
    return out
