"""Segment times, per-segment audio windows in the graph, and event spans from segment scores.

The temporal-binding runs (``model.fusion=temporal_binding``; Kazakos et al., ICCV 2019) take
one audio-image per TSN segment, rendered from that segment's audio window: ``audio.segment_seconds``
long, centred on the segment's time, moved inside the clip at its edges, the whole clip when
the clip is shorter than the window (the arithmetic of :mod:`maivar_tf.data.segments`, which
the Beam job uses). ``serve_waveform`` has no frame timestamps, so its segment times are TSN's
centre times of the waveform's duration, ``t_k = (k + 0.5) * duration / K``
(:func:`centre_times`); :func:`segment_waveforms` cuts the windows in the graph with
:func:`maivar_tf.data.segments.window_starts`, the one implementation of the window rule
(the Beam job runs it eagerly).

:func:`event_spans` turns a localiser's per-segment softmax (``[K, C + 1]``, class ``C`` =
background; Tian et al., ECCV 2018) into the time spans where an action is present, for
``maivar predict --segments``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from maivar_tf.data.segments import window_length, window_starts

__all__ = ["centre_times", "event_spans", "segment_spacing", "segment_waveforms",
           "window_length", "window_starts"]


def centre_times(duration_s, num_segments: int) -> tf.Tensor:
    """TSN's segment centre times ``(k + 0.5) * duration / K`` (float32 ``[..., K]``)."""
    d = tf.cast(duration_s, tf.float64)[..., None]
    k = tf.range(int(num_segments), dtype=tf.float64) + 0.5
    return tf.cast(k * d / float(num_segments), tf.float32)


def segment_waveforms(waveform: tf.Tensor, centres_s: tf.Tensor, sample_rate: int,
                      window_s: float) -> tf.Tensor:
    """float32 ``[B, N]`` and centre times ``[K]`` -> the K windows ``[B, K, L]``."""
    starts, length = window_starts(centres_s, tf.shape(waveform)[1], sample_rate, window_s)
    index = starts[:, None] + tf.range(length)[None, :]
    return tf.gather(waveform, index, axis=1)


# ----------------------------------------------------------------------------- event spans


def segment_spacing(times_s: Sequence[float], clip_duration_s: float | None = None) -> float:
    """The mean spacing of the segment times (the clip's duration for one segment)."""
    t = np.asarray(times_s, np.float64)
    if t.size > 1:
        return float((t[-1] - t[0]) / (t.size - 1))
    return float(clip_duration_s) if clip_duration_s else 1.0


def event_spans(segment_scores: np.ndarray, times_s: Sequence[float],
                class_names: Sequence[str], *, clip_start_s: float = 0.0,
                clip_end_s: float | None = None) -> list[dict[str, Any]]:
    """The time spans where the localiser finds an action.

    A span is a maximal run of consecutive segments whose argmax is not background (the last
    class). It reaches from the first segment's time minus half the segment spacing to the
    last one's plus half, clipped to ``[clip_start_s, clip_end_s]``; its class is the majority
    argmax over its segments (ties: the lower class index) and its ``event_probability`` the
    mean of ``1 - p(background)`` over them.

    Args:
        segment_scores: ``[K, C + 1]`` per-segment probabilities (softmax).
        times_s: ``[K]`` the segment times in seconds.
        class_names: the C action classes.
        clip_start_s, clip_end_s: the clip's bounds (no upper bound when None).

    Returns:
        ``[{"start_s", "end_s", "class", "event_probability"}]`` in time order.
    """
    scores = np.asarray(segment_scores, np.float64)
    times = np.asarray(times_s, np.float64)
    background = scores.shape[-1] - 1
    if background != len(class_names) or scores.shape[0] != times.shape[0]:
        raise ValueError(f"segment scores {list(scores.shape)} do not fit {len(class_names)} "
                         f"classes + background and {times.shape[0]} segment times")
    best = scores.argmax(axis=-1)
    event = 1.0 - scores[:, background]
    half = 0.5 * segment_spacing(times, None if clip_end_s is None
                                 else clip_end_s - clip_start_s)
    spans, k = [], 0
    while k < len(best):
        if best[k] == background:
            k += 1
            continue
        first = k
        while k < len(best) and best[k] != background:
            k += 1
        run = slice(first, k)
        end = times[k - 1] + half
        spans.append({
            "start_s": round(float(max(clip_start_s, times[first] - half)), 6),
            "end_s": round(float(end if clip_end_s is None else min(clip_end_s, end)), 6),
            "class": class_names[int(np.bincount(best[run], minlength=background).argmax())],
            "event_probability": round(float(event[run].mean()), 6)})
    return spans
