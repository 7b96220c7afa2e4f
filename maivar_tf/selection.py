"""Which k of the K segments the visual backbone runs on (issue 12, "listen to look").

Listen to Look (Gao et al., CVPR 2020) and SCSampler (Korbar et al., ICCV 2019) preview every
segment with a cheap audio encoder and run the expensive visual network on the most salient
ones only. Here, on frozen features:

* :func:`uniform_indices`: TSN's k evenly spaced segments (the centres of k equal parts of the
  K segments, :func:`maivar_tf.data.decode.segment_subset`), the same for every clip;
* :func:`topk_indices`: the k highest saliency scores per clip (``model.selection:
  audio_topk``; the scores come from :mod:`maivar_tf.models.saliency`), ties broken by time
  (the lower segment index first), returned in time order;
* :func:`oracle_indices`: the annotated span's segments first (evaluation only), as the top-k
  of the event indicator with the same tie rule;
* :func:`model_for_segments`: a copy of a head whose K input dimension is k (same layers and
  weights), so the consensus / mean pooling runs over the selected segments only;
* :func:`select_segments` gathers the selected rows of a FeatureSet; :func:`load_preview` /
  :func:`preview_rows` load the preview backbone's per-segment features of a split and align
  them with the main features by example id.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from maivar_tf.config import SELECTION_MODES as CONFIG_SELECTIONS

#: ``evaluate_selection`` modes: the config's ``model.selection`` values and ``oracle``.
SELECTION_MODES = (*CONFIG_SELECTIONS, "oracle")


def _check_budget(num_segments: int, k: int) -> tuple[int, int]:
    num_segments, k = int(num_segments), int(k)
    if not 1 <= k <= num_segments:
        raise ValueError(f"budget k={k}: expected 1 <= k <= K={num_segments}")
    return num_segments, k


def uniform_indices(num_segments: int, k: int) -> np.ndarray:
    """TSN's k evenly spaced segments of K: int64 ``[k]``, increasing (all K for k = K)."""
    from maivar_tf.data.decode import segment_subset

    num_segments, k = _check_budget(num_segments, k)
    return np.asarray(segment_subset(num_segments, k), np.int64)


def topk_rule(scores: Any, k: int):
    """The top-k rule in TensorFlow ops (the one implementation; the serving graph runs it):
    the k highest of ``scores [..., K]``, ties to the lower index (``tf.math.top_k`` keeps
    the lower index first among equal values), returned in time order, int32 ``[..., k]``."""
    import tensorflow as tf

    index = tf.math.top_k(tf.convert_to_tensor(scores), k=int(k), sorted=True).indices
    return tf.sort(tf.cast(index, tf.int32), axis=-1)


def topk_indices(scores: Any, k: int) -> np.ndarray:
    """The k highest ``scores [..., K]`` per row, ties to the lower index, in time order.

    :func:`topk_rule` run eagerly, checked: equal to
    ``np.sort(np.argsort(-scores, kind="stable")[..., :k])``, int64 ``[..., k]``.

    Raises:
        ValueError: ``k`` outside ``1..K`` or scores that are not finite.
    """
    scores = np.asarray(scores, np.float64)
    if scores.ndim < 1:
        raise ValueError("scores: expected [..., K]")
    _check_budget(scores.shape[-1], k)
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores: NaN or Inf values; the saliency scorer is broken")
    return np.asarray(topk_rule(scores, k), np.int64)


def oracle_indices(segment_labels: Any, k: int) -> np.ndarray:
    """The annotated span's segments first: top-k of ``segment_labels >= 0`` (``[N, K]``, -1
    for background), ties by time; a clip with fewer than k event segments gets its earliest
    background segments too.

    Raises:
        ValueError: no segment labels (the split's TFRecords hold no spans).
    """
    if segment_labels is None:
        raise ValueError("--selection oracle needs segment labels (annotated spans); these "
                         "features hold none")
    return topk_indices((np.asarray(segment_labels) >= 0).astype(np.float64), k)


def gather_segments(array: Any, indices: Any) -> np.ndarray:
    """``array [N, K, ...]`` at ``indices`` (``[k]`` for every row, or ``[N, k]``)."""
    array, indices = np.asarray(array), np.asarray(indices, np.int64)
    if indices.ndim == 1:
        return array[:, indices]
    return np.take_along_axis(array, indices.reshape(indices.shape + (1,) * (array.ndim - 2)),
                              axis=1)


def select_segments(features: Any, indices: Any) -> Any:
    """``features`` keeping only the selected segments (video, per-segment audio, segment
    labels and times): a FeatureSet of K = k."""
    changes = {"video": gather_segments(features.video, indices).astype(np.float32)}
    for name in ("audio_segments", "segment_labels", "segment_times"):
        value = getattr(features, name, None)
        if value is not None:
            changes[name] = gather_segments(value, indices)
    return dataclasses.replace(features, **changes)


def _with_segments(layer_config: dict[str, Any], num_segments: int, k: int) -> bool:
    shape = layer_config.get("batch_shape")
    if shape is not None and len(shape) == 3 and shape[1] == num_segments:
        layer_config["batch_shape"] = [shape[0], int(k), shape[2]]
        return True
    return False


def model_for_segments(model: Any, k: int) -> Any:
    """A copy of a functional head whose ``[B, K, D]`` inputs are ``[B, k, D]``: same layers
    and weights (rebuilt from the config with the input shapes changed, then ``set_weights``).

    Works for the VMLP with mean pooling, every fusion model with a video input and the
    temporal-binding model (its binding matrix follows the input shape: with
    ``model.binding_window > 1`` the window then spans the *selected* neighbours).

    Raises:
        ValueError: a model without a K input, or whose weights depend on K (a flattening
            VMLP).
    """
    import keras

    import maivar_tf.models  # noqa: F401  (registers the custom layers)

    inputs = [t for t in model.inputs if len(t.shape) == 3]
    if not inputs:
        raise ValueError(f"model {model.name!r} has no [B, K, D] input to select segments of")
    num_segments = int(inputs[0].shape[1])
    _check_budget(num_segments, k)
    if int(k) == num_segments:
        return model
    config = model.get_config()
    changed = [layer for layer in config["layers"] if layer["class_name"] == "InputLayer"
               and _with_segments(layer["config"], num_segments, k)]
    if not changed:
        raise ValueError(f"model {model.name!r}: no input layer with K={num_segments}")
    try:
        copy = keras.Model.from_config(config)
        copy.set_weights(model.get_weights())
    except ValueError as e:
        raise ValueError(f"model {model.name!r}: its weights depend on K (e.g. "
                         f"model.video_pooling: flatten), so it cannot run on k={k} of "
                         f"K={num_segments} segments: {e}") from None
    return copy


def preview_backbone_of(run_config: dict[str, Any]) -> str:
    """The run's ``model.preview_backbone`` (from its recorded config; the default when none)."""
    from maivar_tf.config import ModelConfig

    return str(run_config.get("model", {}).get("preview_backbone",
                                               ModelConfig().preview_backbone))


def load_preview(features_dir: str | Path, split: str, representation: str,
                 preview_backbone: str) -> Any:
    """The preview backbone's features of one split (``audio_segments [N, K, Dp]``).

    Raises:
        maivar_tf.features.FeatureError: the folder has no per-segment features of that
            backbone (``maivar extract --set model.audio_backbone=<preview>``).
    """
    from maivar_tf.features import load_features

    return load_features(features_dir, split, representation, audio_backbone=preview_backbone,
                         segments=True)


def preview_rows(preview: Any, ids: Any) -> np.ndarray:
    """The preview features ``[len(ids), K, Dp]`` of ``ids`` (rows picked by example id).

    Raises:
        ValueError: an id without preview features (the features folders differ).
    """
    have = np.asarray(preview.ids).astype(str)
    ids = np.asarray(ids).astype(str)
    if have.shape == ids.shape and np.array_equal(have, ids):
        return np.asarray(preview.audio_segments, np.float32)
    order = np.argsort(have, kind="stable")
    pos = np.clip(np.searchsorted(have[order], ids), 0, max(len(have) - 1, 0))
    found = have[order][pos] == ids if len(have) else np.zeros(len(ids), bool)
    if not np.all(found):
        missing = ids[~found]
        raise ValueError(f"{len(missing)} example(s) have no preview features (e.g. "
                         f"{missing[0]!r}); extract the preview backbone on the same "
                         "TFRecords as the run's features")
    return np.asarray(preview.audio_segments, np.float32)[order[pos]]


__all__ = ["SELECTION_MODES", "gather_segments", "load_preview", "model_for_segments",
           "oracle_indices", "preview_backbone_of", "preview_rows", "select_segments",
           "topk_indices", "uniform_indices"]
