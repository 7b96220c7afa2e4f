"""The saliency scorer of ``model.selection: audio_topk``: which segments to look at.

Listen to Look (Gao et al., CVPR 2020) and AVGN (2023) rank a clip's segments from a cheap audio
preview trained with the clip label only (weak supervision); with annotated spans the ranking
can be trained on them directly. :func:`build_saliency_scorer` is a per-segment MLP on the
preview backbone's per-segment features ``preview_features [B, K, Dp]``:
``preview_norm`` (standardisation with the training statistics) -> ``saliency_hidden`` (Dense
shared by the segments, ReLU, L1) -> ``saliency_dropout`` -> ``segment_logits``, and

* ``clip`` supervision (``model.saliency: clip``): ``segment_logits`` are per-segment class
  logits ``[B, K, C]``; the output ``predictions`` is their mean over K (``[B, C]``), trained
  with the clip label. The saliency of segment k is the probability its own logits give to the
  class the clip-level mean predicts (the segments that "sound like" the clip's class);
* ``segments`` supervision (``model.saliency: segments``): ``segment_logits`` are
  ``[B, K, 2]`` (background, event) logits, trained with the segment labels (event = label
  >= 0); saliency = p(event).

:func:`saliency_model` turns a scorer into ``preview_features -> saliency [B, K]`` (float32;
what :func:`maivar_tf.selection.topk_indices` ranks); it is built in memory (for evaluation and
serving) and never saved, so the saved ``saliency.keras`` holds only standard layers and
:class:`~maivar_tf.models.temporal.SegmentConsensus` and loads in Keras' safe mode.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from maivar_tf.models.heads import input_statistics
from maivar_tf.models.temporal import SegmentConsensus

#: The scorer's input: the preview backbone's per-segment features ``[B, K, Dp]``.
PREVIEW_INPUT = "preview_features"
#: The per-segment logits layer (class logits for ``clip``, event logits for ``segments``).
SEGMENT_LOGITS_LAYER = "segment_logits"
#: Width of ``saliency_hidden``.
SALIENCY_UNITS = 128
#: ``model.saliency`` values.
SUPERVISIONS = ("clip", "segments")


def build_saliency_scorer(num_classes: int, num_segments: int, preview_dim: int,
                          supervision: str = "clip", mean: Any = None, var: Any = None, *,
                          scale: float = 1.0, units: int = SALIENCY_UNITS, dropout: float = 0.5, l1: float = 0.0,
                          name: str = "saliency") -> keras.Model:
    """The saliency scorer (see the module doc).

    Args:
        num_classes: C.
        num_segments: K.
        preview_dim: Dp, the preview backbone's feature width.
        supervision: ``clip`` (output ``[B, C]`` clip logits) or ``segments`` (output
            ``[B, K, 2]`` background/event logits).
        mean, var: statistics ``[Dp]`` of the training preview features times ``scale``
            (None: identity).
        scale: multiplies the features first (see :func:`preview_scale`).
        units: width of the hidden layer.
        dropout: dropout rate after it.
        l1: its kernel's L1 penalty.
        name: the model name.
    """
    if supervision not in SUPERVISIONS:
        raise ValueError(f"saliency supervision {supervision!r}; allowed: "
                         f"{', '.join(SUPERVISIONS)}")
    mean, var = input_statistics(mean, var, int(preview_dim), "preview statistics")
    inp = keras.Input((int(num_segments), int(preview_dim)), name=PREVIEW_INPUT)
    x = keras.layers.Rescaling(float(scale), name="preview_scale")(inp)
    x = keras.layers.Normalization(axis=-1, mean=mean, variance=var, name="preview_norm")(x)
    x = keras.layers.Dense(int(units), activation="relu", name="saliency_hidden",
                           kernel_regularizer=keras.regularizers.L1(l1) if l1 > 0 else None)(x)
    x = keras.layers.Dropout(float(dropout), name="saliency_dropout")(x)
    width = int(num_classes) if supervision == "clip" else 2
    logits = keras.layers.Dense(width, name=SEGMENT_LOGITS_LAYER, dtype="float32")(x)
    if supervision == "clip":
        logits = SegmentConsensus(name="predictions")(logits)
    return keras.Model(inp, logits, name=name)


def preview_scale(features: Any) -> float:
    """``1 / RMS`` of the features' per-feature standard deviations (float64; 1.0 when they
    never vary), so the scaled features vary on the order of 1."""
    x = np.asarray(features, np.float64).reshape(-1, np.shape(features)[-1])
    spread = float(np.sqrt(np.mean(x.var(axis=0)))) if x.size else 0.0
    return 1.0 / spread if spread > 0 and np.isfinite(1.0 / spread) else 1.0


def saliency_supervision(scorer: keras.Model) -> str:
    """``clip`` or ``segments``, read from the scorer's output shape."""
    return "segments" if len(scorer.output.shape) == 3 else "clip"


def saliency_model(scorer: keras.Model) -> keras.Model:
    """``preview_features [B, K, Dp] -> saliency [B, K]`` (float32) of a trained scorer.

    ``clip``: the softmax of each segment's class logits at the class the mean of the logits
    predicts (argmax; ties to the lowest class); ``segments``: p(event).
    """
    seg = scorer.get_layer(SEGMENT_LOGITS_LAYER).output
    prob = keras.ops.softmax(seg, axis=-1)
    if saliency_supervision(scorer) == "segments":
        score = prob[..., 1]
    else:
        clip_class = keras.ops.argmax(keras.ops.mean(seg, axis=1), axis=-1)      # [B]
        onehot = keras.ops.one_hot(clip_class, seg.shape[-1], dtype=prob.dtype)  # [B, C]
        score = keras.ops.sum(prob * onehot[:, None, :], axis=-1)                # [B, K]
    return keras.Model(scorer.input, score, name=f"{scorer.name}_scores")


def saliency_scores(scorer: keras.Model, preview: Any, batch_size: int = 256) -> np.ndarray:
    """The saliency ``[N, K]`` (float32) of preview features ``[N, K, Dp]``, in inference mode."""
    preview = np.asarray(preview, np.float32)
    fn = saliency_model(scorer)
    outs = [np.asarray(fn(preview[i:i + batch_size], training=False))
            for i in range(0, len(preview), batch_size)]
    k = int(scorer.input.shape[1])
    return np.concatenate(outs).astype(np.float32) if outs else np.zeros((0, k), np.float32)


def event_targets(segment_labels: Any) -> np.ndarray:
    """``segments`` supervision's targets ``[N, K]``: 1 for event segments (label >= 0)."""
    return (np.asarray(segment_labels) >= 0).astype(np.int64)


__all__ = ["PREVIEW_INPUT", "SALIENCY_UNITS", "SEGMENT_LOGITS_LAYER", "SUPERVISIONS",
           "build_saliency_scorer", "event_targets", "preview_scale", "saliency_model",
           "saliency_scores", "saliency_supervision"]
