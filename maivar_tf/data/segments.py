"""Per-segment audio windows: where each TSN segment's audio-image takes its samples from.

Segment ``k`` of a clip is its sampled frame at time ``t_k`` (``image/timestamp``). Its audio
window (``data.audio.segment_seconds`` long; the Temporal Binding Network, Kazakos et al.
2019, binds audio and video within such windows) is cut from the clip's decoded waveform by
this rule, where ``L = max(1, round(window_s * sample_rate))`` and ``N`` is the waveform's
length:

* ``N <= L`` (the clip is no longer than one window): every window is the whole clip,
  ``[0, N)``;
* otherwise the window is centred on the segment: ``start = floor(c_k * sample_rate - L / 2
  + 0.5)`` with ``c_k`` the segment's time in seconds from the waveform's first sample, then
  moved inside the clip: ``start = min(max(start, 0), N - L)``, ``stop = start + L``.

So every window has the same length (``min(N, L)``) and the K windows render as one batch
(:func:`maivar_tf.data.audio_image.render_audio_images` on ``[K, L]``). Windows of
neighbouring segments overlap when the segments are closer than ``window_s``; a segment near
an edge gets the first (or last) ``L`` samples. Centres are relative to the *decoded audio's*
start: subtract the trim ``record.start_s`` (and any later audio start) from the frame
timestamps, which count from the file start (:func:`segment_centres`).

The rule is written once, in TensorFlow ops (:func:`window_starts`): the Beam job runs it
eagerly through :func:`segment_windows`, the serving graph (``serve_waveform`` of a
temporal-binding export, :mod:`maivar_tf.serving.segments`) on a length known only at run time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

__all__ = ["cut_windows", "segment_centres", "segment_windows", "window_length",
           "window_starts"]


def window_length(window_s: float, sample_rate: int) -> int:
    """The samples in one segment's audio window, ``round(window_s * sample_rate)`` (>= 1)."""
    return max(1, int(round(float(window_s) * int(sample_rate))))


def window_starts(centres_s, num_samples, sample_rate: int, window_s: float
                  ) -> tuple[tf.Tensor, tf.Tensor]:
    """Each segment's audio window ``[start, start + length)`` in samples (the module rule).

    TensorFlow ops, so the length may be known only in a graph; eager on NumPy values too.

    Args:
        centres_s: float ``[..., K]`` segment times in seconds from the waveform's start.
        num_samples: the waveform's length N (int scalar, may be a tensor).
        sample_rate: Hz.
        window_s: the window's length in seconds (``audio.segment_seconds``).

    Returns:
        ``(starts int32 [..., K], length int32 [])`` with ``length = min(N, L)``.
    """
    n = tf.cast(num_samples, tf.int64)
    full = window_length(window_s, sample_rate)
    length = tf.minimum(tf.constant(full, tf.int64), n)
    c = tf.cast(centres_s, tf.float64) * float(sample_rate)
    start = tf.cast(tf.floor(c - full / 2 + 0.5), tf.int64)
    starts = tf.clip_by_value(start, tf.zeros_like(start), tf.maximum(n - length, 0))
    return tf.cast(starts, tf.int32), tf.cast(length, tf.int32)


def segment_centres(timestamps_us: Sequence[int] | np.ndarray, audio_start_s: float = 0.0
                    ) -> np.ndarray:
    """Segment times in seconds from the waveform's first sample.

    Args:
        timestamps_us: the K sampled frames' timestamps, microseconds from the file start.
        audio_start_s: the time of the waveform's first sample, seconds from the file start
            (``record.start_s`` for a trimmed window).

    Returns:
        float64 ``[K]``.
    """
    return np.asarray(timestamps_us, np.float64) / 1e6 - float(audio_start_s)


def segment_windows(centres_s: Sequence[float] | np.ndarray, num_samples: int,
                    sample_rate: int, window_s: float) -> np.ndarray:
    """The ``(start, stop)`` sample indices of each segment's audio window (module rule).

    Args:
        centres_s: K segment times in seconds from the waveform's first sample.
        num_samples: N, the waveform's length (>= 1).
        sample_rate: the waveform's rate in Hz.
        window_s: the window length in seconds (> 0).

    Returns:
        int64 ``[K, 2]``: ``0 <= start < stop <= num_samples``, ``stop - start`` the same for
        every row (``min(num_samples, round(window_s * sample_rate))``).

    Raises:
        ValueError: ``num_samples < 1``, a non-positive rate or window, or centres not 1-D.
    """
    n = int(num_samples)
    if n < 1:
        raise ValueError(f"segment_windows: num_samples must be >= 1; got {num_samples}")
    if sample_rate <= 0 or not window_s > 0:
        raise ValueError(f"segment_windows: sample_rate and window_s must be > 0; got "
                         f"{sample_rate}, {window_s}")
    c = np.asarray(centres_s, np.float64)
    if c.ndim != 1:
        raise ValueError(f"segment_windows: centres must be 1-D [K]; got shape {c.shape}")
    starts, length = window_starts(c, n, int(sample_rate), float(window_s))
    start = np.asarray(starts, np.int64)
    return np.stack([start, start + int(length)], axis=1).astype(np.int64)


def cut_windows(waveform: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """The K windows of a mono waveform, as one batch.

    Args:
        waveform: float ``[N]``.
        windows: int ``[K, 2]`` from :func:`segment_windows` (all the same length).

    Returns:
        float32 ``[K, L]``.

    Raises:
        ValueError: a waveform that is not 1-D, windows outside it or of unequal lengths.
    """
    y = np.asarray(waveform, np.float32)
    w = np.asarray(windows, np.int64)
    if y.ndim != 1:
        raise ValueError(f"cut_windows: waveform must be 1-D [N]; got shape {y.shape}")
    if w.ndim != 2 or w.shape[1] != 2 or w.shape[0] == 0:
        raise ValueError(f"cut_windows: windows must be [K, 2] with K >= 1; got {w.shape}")
    lengths = w[:, 1] - w[:, 0]
    if (w[:, 0] < 0).any() or (w[:, 1] > y.shape[0]).any() or (lengths < 1).any():
        raise ValueError(f"cut_windows: windows outside the waveform of {y.shape[0]} samples")
    if (lengths != lengths[0]).any():
        raise ValueError(f"cut_windows: windows of unequal lengths {sorted(set(lengths))}")
    idx = w[:, :1] + np.arange(lengths[0])[None, :]
    return np.ascontiguousarray(y[idx])
