"""Per-segment features and labels for temporal binding, localisation and silent-audio tests.

Pure helpers shared by training, evaluation and the ablations (nothing here builds a model):

* :func:`segment_audio` / :func:`localisation_labels`: the per-segment audio features and the
  localiser's targets (class index of the span a segment lies in, ``C`` for background: the
  features' ``segment_labels`` hold -1 there);
* :func:`localisation_metrics`: segment-level accuracy against the spans (Tian et al., ECCV 2018,
  report the (C+1)-way accuracy on AVE), with the event/background accuracy and its two trivial
  baselines (every segment an event; every segment background) on the same segments;
* :func:`silent_features`: a feature set whose every clip has lost its audio (every clip-level
  and per-segment audio feature is the silent audio-image's, ``FeatureSet.silent_audio``), to
  measure a model on clips without sound;
* :func:`needs_segments` / :func:`load_split`: load a split with its per-segment audio features
  exactly when the run's fusion binds them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

#: The value of ``--audio`` / ``evaluate_run(audio=...)`` that silences every clip.
SILENT = "silent"


def segment_audio(features: Any) -> np.ndarray:
    """``features.audio_segments`` as float32 ``[N, K, Da]``.

    Raises:
        ValueError: the feature set was loaded without them, or their shape does not match the
            video's ``[N, K]``.
    """
    seg = getattr(features, "audio_segments", None)
    if seg is None:
        raise ValueError("model.fusion='temporal_binding' needs per-segment audio features: "
                         "extract them with data.segment_audio: true (`maivar build` and "
                         "`maivar extract`) and load them with load_features(..., "
                         "segments=True)")
    seg = np.asarray(seg, np.float32)
    video = np.asarray(features.video)
    if seg.ndim != 3 or seg.shape[:2] != video.shape[:2]:
        raise ValueError(f"audio_segments: shape {seg.shape}; expected [N, K, Da] with "
                         f"[N, K] = {list(video.shape[:2])} (the video's)")
    return seg


def localisation_labels(segment_labels: Any, num_classes: int) -> np.ndarray:
    """The localiser's targets ``[N, K]`` in ``0..C``: the span's class, ``C`` for background.

    Raises:
        ValueError: labels outside ``-1..C-1`` or not ``[N, K]``.
    """
    labels = np.asarray(segment_labels, np.int64)
    if labels.ndim != 2:
        raise ValueError(f"segment_labels: shape {labels.shape}; expected [N, K]")
    bad = (labels < -1) | (labels >= num_classes)
    if bad.any():
        raise ValueError(f"segment_labels: {int(bad.sum())} values outside -1..{num_classes - 1}"
                         f" (e.g. {int(labels[bad][0])}); -1 is background")
    return np.where(labels < 0, num_classes, labels)


def localisation_metrics(segment_labels: Any, segment_logits: Any) -> dict[str, Any]:
    """Segment-level metrics of a localiser against the spans.

    Args:
        segment_labels: ``[N, K]`` span class per segment, -1 for background.
        segment_logits: ``[N, K, C + 1]`` localiser logits; the last class is background.

    Returns:
        ``segment_accuracy`` (the (C+1)-way accuracy: background, or the right class inside a
        span), ``event_accuracy`` (event vs background: predicted background iff the argmax is
        C), ``baseline_all_event`` / ``baseline_all_background`` (the event accuracy of saying
        every segment is an event / background), ``num_clips``, ``num_segments``,
        ``num_event_segments``, ``num_background_segments``. Accuracies are None without
        segments.
    """
    logits = np.asarray(segment_logits)
    if logits.ndim != 3:
        raise ValueError(f"segment logits: shape {logits.shape}; expected [N, K, C + 1]")
    num_classes = logits.shape[-1] - 1
    target = localisation_labels(segment_labels, num_classes)
    if target.shape != logits.shape[:2]:
        raise ValueError(f"segment labels {target.shape} and logits {logits.shape[:2]} differ")
    pred = np.argmax(logits, axis=-1)
    event, pred_event = target != num_classes, pred != num_classes
    n = int(target.size)

    def frac(x):
        return float(np.mean(x)) if n else None

    return {"segment_accuracy": frac(pred == target), "event_accuracy": frac(event == pred_event),
            "baseline_all_event": frac(event), "baseline_all_background": frac(~event),
            "num_clips": int(target.shape[0]), "num_segments": n,
            "num_event_segments": int(event.sum()),
            "num_background_segments": int((~event).sum())}


def silent_features(features: Any) -> Any:
    """``features`` with every clip's audio replaced by the silent audio-image's features.

    ``audio`` becomes ``silent_audio`` on every row and, when present, ``audio_segments`` on
    every row and segment; ``audio_missing`` becomes all True.

    Raises:
        ValueError: the feature set has no ``silent_audio`` (re-run ``maivar extract``).
    """
    silent = getattr(features, "silent_audio", None)
    if silent is None:
        raise ValueError("--audio silent needs the silent audio-image's features "
                         "(FeatureSet.silent_audio), which these features lack; re-run "
                         "`maivar extract`")
    silent = np.asarray(silent, np.float32).reshape(-1)
    audio = np.asarray(features.audio)
    if audio.shape[-1] != silent.shape[0]:
        raise ValueError(f"silent_audio has {silent.shape[0]} features but the audio features "
                         f"have {audio.shape[-1]}")
    changes: dict[str, Any] = {"audio": np.broadcast_to(silent, audio.shape).copy()}
    seg = getattr(features, "audio_segments", None)
    if seg is not None:
        changes["audio_segments"] = np.broadcast_to(silent, np.shape(seg)).copy()
    if getattr(features, "audio_missing", None) is not None:
        changes["audio_missing"] = np.ones(len(audio), bool)
    return dataclasses.replace(features, **changes)


def needs_segments(cfg_or_method: Any) -> bool:
    """Whether a run (its config, its config dict, or its ``model.fusion``) binds per-segment
    audio, so its features must be loaded with ``segments=True``."""
    method = cfg_or_method
    if hasattr(cfg_or_method, "model"):
        method = cfg_or_method.model.fusion
    elif isinstance(cfg_or_method, dict):
        method = cfg_or_method.get("model", {}).get("fusion", "vmlp_init")
    return method == "temporal_binding"


def load_split(features_dir: str | Path, split: str, representation: str,
               audio_backbone: str | None = None, segments: bool = False) -> Any:
    """``load_features`` with the per-segment audio features when ``segments`` (a run that
    binds them, :func:`needs_segments`)."""
    from maivar_tf.features import load_features

    return load_features(features_dir, split, representation, audio_backbone=audio_backbone,
                         segments=segments)


__all__ = ["SILENT", "load_split", "localisation_labels", "localisation_metrics",
           "needs_segments", "segment_audio", "silent_features"]
