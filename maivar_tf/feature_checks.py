"""Checks of the feature sets Algorithm 1 trains on (shapes, finite values, label range).

Kept apart from :mod:`maivar_tf.training` so the stage loop stays short; the training module
re-exports :func:`check_features`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from maivar_tf.localisation import segment_audio


def check_features(features: Any, name: str) -> None:
    """Raises ValueError unless ``features`` is ``video [N,K,D]``, ``audio [N,D]`` (finite),
    labels in range; the message names the split (``name``) and, for NaN/Inf, how many rows."""
    video, audio = np.asarray(features.video), np.asarray(features.audio)
    labels = np.asarray(features.labels)
    if video.ndim != 3:
        raise ValueError(f"{name}.video: shape {video.shape}; expected [N, K, D]")
    if audio.ndim != 2:
        raise ValueError(f"{name}.audio: shape {audio.shape}; expected [N, D]")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name}.labels: {labels.dtype} {labels.shape}; expected int [N]")
    if not (len(video) == len(audio) == len(labels)) or len(labels) == 0:
        raise ValueError(f"{name}: {len(video)} video rows, {len(audio)} audio rows, "
                         f"{len(labels)} labels; expected the same non-zero count")
    for part, x in (("video", video), ("audio", audio)):
        rows = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if rows.any():
            ids = getattr(features, "ids", None)
            eg = f", e.g. example id {ids[rows][0]}" if ids is not None else ""
            raise ValueError(f"{name}.{part}: {int(rows.sum())} of {len(x)} rows hold non-finite "
                             f"values (NaN or Inf){eg}; re-extract the features "
                             "(`maivar extract`) or drop those examples")
    num_classes = len(features.class_names)
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise ValueError(f"{name}.labels: {int(bad.sum())} labels outside [0, {num_classes}) "
                         f"(e.g. {int(labels[bad][0])}); drop examples whose class is not in "
                         "class_names before training")


def check_compatible(train: Any, val: Any) -> None:
    """Raises ValueError unless ``val`` passes :func:`check_features` and has ``train``'s
    classes and feature shapes."""
    check_features(val, "val")
    if tuple(val.class_names) != tuple(train.class_names):
        raise ValueError("val.class_names differ from train.class_names")
    if val.video.shape[1:] != train.video.shape[1:] or val.audio.shape[1:] != train.audio.shape[1:]:
        raise ValueError(f"val features {val.video.shape[1:]}/{val.audio.shape[1:]} differ from "
                         f"train features {train.video.shape[1:]}/{train.audio.shape[1:]}")


def check_segment_features(features: Any, name: str, cfg: Any) -> None:
    """What the run's config needs beyond :func:`check_features`: per-segment audio features
    (finite) for ``temporal_binding``, silent features for modality dropout."""
    if cfg.model.fusion == "temporal_binding":
        try:
            seg = segment_audio(features)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
        rows = ~np.isfinite(seg.reshape(len(seg), -1)).all(axis=1)
        if rows.any():
            raise ValueError(f"{name}.audio_segments: {int(rows.sum())} of {len(seg)} rows hold "
                             "non-finite values (NaN or Inf); re-extract the features "
                             "(`maivar extract`) or drop those examples")
    if cfg.train.fusion.modality_dropout and cfg.model.fusion == "late":
        raise ValueError("train.fusion.modality_dropout: late fusion is not fitted (its weight "
                         "is chosen on the validation split), so it cannot drop the audio "
                         "input; set it to 0 or use a fitted model.fusion")
    if cfg.train.fusion.modality_dropout and getattr(features, "silent_audio", None) is None:
        raise ValueError(f"{name}: train.fusion.modality_dropout needs the silent audio-image's "
                         "features (FeatureSet.silent_audio), which these features lack; re-run "
                         "`maivar extract`")


__all__ = ["check_compatible", "check_features", "check_segment_features"]
