"""Checks of a serving request, in the graph and in Python, with messages naming the input.

TF Serving passes a request to a signature after checking only the dtypes and ranks its
``TensorSpec`` s declare, and a SavedModel's fixed dimensions are not enforced for every
client. Each signature of :class:`maivar_tf.serving.module.ServingModule` therefore asserts its
inputs' shapes, batch sizes, sample rates and (float inputs) finiteness before any
computation, so a bad request fails with ``<signature>: input <name> must be <dtype> [<shape>];
got shape [...]`` or ``<signature>: input <name> has non-finite values (NaN or Inf)`` rather
than deep inside a backbone, or with a confident answer computed from NaN. :func:`check_request`
is the same contract in Python, for callers that hold NumPy arrays (``maivar predict`` and its
predictors); its messages start with the input's name (``frames must be uint8 ...``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf


def _after(checks: Sequence[Any], *tensors: tf.Tensor) -> list[tf.Tensor]:
    """``tensors`` with a control dependency on every op in ``checks``."""
    with tf.control_dependencies(list(checks)):
        return [tf.identity(t) for t in tensors]


def check_shape(x: tf.Tensor, pattern: Sequence[int | None], signature: str, name: str,
                dtype: str) -> tf.Tensor:
    """``x`` after an assertion that its shape matches ``pattern`` (at any rank).

    Args:
        x: the input tensor.
        pattern: each dimension, ``None`` for "any" (the batch, H, W, N).
        signature: the signature's name, for the message.
        name: the input's name, for the message.
        dtype: the input's dtype name, for the message.

    Returns:
        ``x``, usable only once the check has passed.
    """
    dims = ",".join(r"\d+" if d is None else str(int(d)) for d in pattern)
    want = "[" + ", ".join("batch" if i == 0 and d is None else ("any" if d is None else str(d))
                           for i, d in enumerate(pattern)) + "]"
    shape_str = tf.strings.reduce_join(tf.strings.as_string(tf.shape(x)), separator=",")
    ok = tf.strings.regex_full_match(shape_str, dims)
    msg = f"{signature}: input {name} must be {dtype} {want}; got shape"
    check = tf.debugging.Assert(ok, [msg, tf.shape(x)], summarize=8, name=f"check_{name}")
    return _after([check], x)[0]


def check_batch(signature: str, **tensors: tf.Tensor) -> list[tf.Tensor]:
    """The tensors (in keyword order) after asserting one non-zero batch size for all."""
    names = list(tensors)
    first = tf.shape(tensors[names[0]])[0]
    checks = [tf.debugging.Assert(
        tf.equal(tf.shape(tensors[n])[0], first),
        [f"{signature}: inputs {names[0]} and {n} must have the same batch size; got", first,
         tf.shape(tensors[n])[0]]) for n in names[1:]]
    checks.append(tf.debugging.Assert(tf.greater(first, 0),
                                      [f"{signature}: empty batch (batch size 0)"]))
    return _after(checks, *(tensors[n] for n in names))


def check_frame_area(frames: tf.Tensor, signature: str) -> tf.Tensor:
    """``frames`` ``[B, K, H, W, 3]`` after asserting that H and W are not zero."""
    shape = tf.shape(frames)
    ok = tf.logical_and(tf.greater(shape[2], 0), tf.greater(shape[3], 0))
    check = tf.debugging.Assert(ok, [f"{signature}: input frames has an empty height or width; "
                                     "got shape", shape])
    return _after([check], frames)[0]


def check_finite(x: tf.Tensor, signature: str, name: str) -> tf.Tensor:
    """``x`` (float) after asserting that every value is finite (no NaN, +Inf or -Inf).

    A NaN or Inf input would otherwise give finite, confident probabilities (the fusion
    head's batch normalisation and the audio renderer's clipping swallow it).
    """
    bad = tf.reduce_sum(tf.cast(tf.logical_not(tf.math.is_finite(x)), tf.int64))
    check = tf.debugging.Assert(
        tf.equal(bad, 0),
        [f"{signature}: input {name} has non-finite values (NaN or Inf); non-finite values:",
         bad, "of", tf.size(x, out_type=tf.int64)], name=f"check_finite_{name}")
    return _after([check], x)[0]


def check_waveform(waveform: tf.Tensor, sample_rate: tf.Tensor, *, expected_rate: int,
                   min_samples: int, signature: str, silent_ok: bool = False) -> tf.Tensor:
    """``waveform`` after asserting every ``sample_rate`` and the waveform's length.

    Args:
        waveform: float32 ``[B, N]``.
        sample_rate: int32 ``[B]``.
        expected_rate: the rate the model's audio-images were rendered at (``audio.sample_rate``).
        min_samples: the shortest waveform the renderer takes (``audio.n_fft``).
        signature: the signature's name, for the messages.
        silent_ok: a shorter waveform passes when it is all zeros (a clip without sound,
            ``data.on_missing_audio: silence``).
    """
    rate_ok = tf.debugging.Assert(
        tf.reduce_all(tf.equal(sample_rate, expected_rate)),
        [f"{signature}: input sample_rate must be {expected_rate} Hz (audio.sample_rate of the "
         f"trained model) for every waveform; resample first; got", sample_rate])
    long_enough = tf.greater_equal(tf.shape(waveform)[1], min_samples)
    unless = ""
    if silent_ok:
        long_enough = tf.logical_or(long_enough, tf.reduce_all(tf.equal(waveform, 0.0)))
        unless = " unless it is all zeros (silence)"
    long_ok = tf.debugging.Assert(
        long_enough,
        [f"{signature}: input waveform needs at least {min_samples} samples (audio.n_fft)"
         f"{unless}; got", tf.shape(waveform)[1]])
    return _after([rate_ok, long_ok], waveform)[0]


def check_request(inputs: Mapping[str, Any], specs: Mapping[str, tf.TensorSpec],
                  signature: str) -> None:
    """Python-side check of a request against a signature's ``tf.TensorSpec`` s.

    Every message starts with the input's name: ``frames must be uint8 [?, 2, ?, ?, 3]
    (serve_media); got float32``.

    Args:
        inputs: input name -> array (with the batch axis).
        specs: input name -> ``tf.TensorSpec`` (``concrete_fn.structured_input_signature[1]``).
        signature: the signature's name, for messages.

    Raises:
        ValueError: a missing or unknown input, a wrong dtype, rank or dimension, non-finite
            values (NaN or Inf) in a float input, or inputs with different batch sizes; the
            message names the input, what it got and what the signature allows.
    """
    takes = ", ".join(specs)
    for name in specs:
        if name not in inputs:
            raise ValueError(f"{name} is missing from the request; {signature} takes {takes}")
    for name in inputs:
        if name not in specs:
            raise ValueError(f"{name} is not an input of {signature}; it takes {takes}")
    batch = {}
    for name, spec in specs.items():
        a = np.asarray(inputs[name])
        want = list(spec.shape)
        want_str = "[" + ", ".join("?" if d is None else str(d) for d in want) + "]"
        if a.dtype != spec.dtype.as_numpy_dtype:
            raise ValueError(f"{name} must be {spec.dtype.name} {want_str} ({signature}); "
                             f"got {a.dtype}")
        if a.ndim != len(want) or any(w is not None and w != g
                                      for w, g in zip(want, a.shape, strict=False)):
            raise ValueError(f"{name} must have shape {want_str} ({signature}); got "
                             f"{list(a.shape)}")
        if spec.dtype.is_floating and not np.isfinite(a).all():
            raise ValueError(f"{name} has non-finite values (NaN or Inf) ({signature}): "
                             f"{int(np.size(a) - np.isfinite(a).sum())} of {a.size}")
        batch[name] = a.shape[0] if a.ndim else None
    first = next(iter(batch), None)
    for name, size in batch.items():
        if size != batch[first]:
            raise ValueError(f"{name} has batch size {size} but {first} has {batch[first]} "
                             f"({signature}); every input needs the same batch size")
