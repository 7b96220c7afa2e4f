"""One serialized ``SequenceExample`` -> tensors: the only decoder of the TFRecord schema.

Parsing and decoding are separate steps (TF Model Garden's ``Decoder`` / ``Parser`` split):
:func:`maivar_tf.data.schema.parse_sequence_example` turns the bytes into raw feature tensors,
:func:`decode_parsed` decodes them. Decoding JPEG-decodes the K stored TSN segment frames
(Shaikh et al. 2024, Sec. 3.3: one frame per segment), keeps ``num_segments`` of them spread
evenly when fewer are asked than stored, crops them with :mod:`maivar_tf.ops`, and PNG-decodes
the audio-images (Sec. 3.2). The training input pipeline, feature extraction (centre crop, or
whole frames for TSN's ten crops) and ``maivar predict`` all call :func:`decode_example`, so they
see the same pixels.

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


def _pick_segments(encoded: tf.Tensor, num_segments: int | None,
                   stored_segments: int | None) -> tf.Tensor:
    """The ``num_segments`` evenly spread entries of ``encoded`` (all when not asked)."""
    if num_segments is None or num_segments == stored_segments:
        return encoded
    if stored_segments is not None:
        return tf.gather(encoded, tf.constant(segment_subset(stored_segments, num_segments),
                                              tf.int32))
    return tf.gather(encoded, _segment_index(tf.shape(encoded)[0], num_segments))


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
                  include_frames: bool = True) -> dict[str, Any]:
    """Decodes what :func:`~maivar_tf.data.schema.parse_sequence_example` returned.

    Frames are JPEG-decoded whole, then cropped: ``decode_and_crop_jpeg`` differs from decoding
    then cropping by a level or two at the window edge (chroma upsampling), and the crop must
    equal what serving computes from the same pixels.

    Args: see :func:`decode_example`.
    """
    if crop not in CROP_MODES:
        raise ValueError(f"crop: {crop!r}; allowed: {', '.join(CROP_MODES)}")
    out: dict[str, Any] = {"label": parsed[schema.LABEL_INDEX],
                           "example_id": parsed[schema.EXAMPLE_ID]}
    if include_frames:
        encoded = _pick_segments(parsed[schema.IMAGE_ENCODED], num_segments, stored_segments)
        frames = _crop_frames(_decode_jpegs(encoded), crop, int(crop_size), seed)
        side = None if crop == "none" else int(crop_size)
        out["frames"] = tf.ensure_shape(frames, [num_segments, side, side, 3])
    if representations:
        out["audio_images"] = {
            rep: tf.ensure_shape(
                tf.io.decode_png(parsed[schema.audio_image_key(rep)][0], channels=3),
                [image_size, image_size, 3])
            for rep in representations}
    return out


@tf.autograph.experimental.do_not_convert
def decode_example(serialized, *, representations: Sequence[str], crop_size: int,
                   num_segments: int | None = None, stored_segments: int | None = None,
                   crop: str = "center", image_size: int | None = None, seed=None,
                   include_frames: bool = True) -> dict[str, Any]:
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

    Returns:
        ``{"frames": uint8 [K, c, c, 3] (or [K, H, W, 3] uncropped), "audio_images": {rep:
        uint8 [S, S, 3]}, "label": int64 [], "example_id": string []}``; ``frames`` only with
        ``include_frames``, ``audio_images`` only when representations are asked for.

    Raises:
        ValueError: an unknown crop mode, or ``crop="random"`` without a seed.
    """
    representations = tuple(representations)
    parsed = schema.parse_sequence_example(serialized, representations)
    return decode_parsed(parsed, representations=representations, crop_size=crop_size,
                         num_segments=num_segments, stored_segments=stored_segments,
                         crop=crop, image_size=image_size, seed=seed,
                         include_frames=include_frames)


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
