"""Temporal binding fusion (``model.fusion: temporal_binding``) and the localisation head.

The Temporal Binding Network (Kazakos et al., ICCV 2019) fuses audio and video *within* a
temporal window instead of over the whole clip. Here, on audio-images: every TSN segment ``k``
has its video feature ``v_k`` (BNInception) and the audio feature ``a_k`` of the audio-image of
its own audio window (``data.segment_audio``). :func:`build_temporal_binding` builds

* ``video_norm``: ``v_k`` standardised with the VMLP's statistics (``[B, K, Dv]``);
* ``audio_norm``: ``a_k`` standardised with the per-segment audio statistics (``[B, K, Da]``),
  after :class:`~maivar_tf.models.modality.ModalityDropout` when
  ``train.fusion.modality_dropout > 0``;
* ``temporal_binding`` (:class:`TemporalBinding`): the audio bound to segment ``k`` is the mean
  of ``a_j`` over the ``model.binding_window`` segments ``j`` centred on ``k``, truncated at the
  clip's ends (window 1: ``a_k`` itself);
* ``concat`` ``[v_k, bound a_k]`` -> ``fusion_hidden`` (Dense shared by the segments, ReLU, L1)
  -> ``fusion_dropout`` -> ``segment_predictions`` (per-segment class logits ``[B, K, C]``) ->
  ``predictions`` (the consensus: the mean over K, float32 logits ``[B, C]``).

Initialisation (Algorithm 1, as far as the shapes allow), through
:class:`~maivar_tf.models.heads.VideoWeightsInitializer`: ``fusion_hidden``'s kernel rows
``[0, Dv)`` are the VMLP ``hidden`` kernel, its rows ``[Dv, Dv + Da)`` (the audio) start at zero
(``model.audio_rows_init``), its bias is the VMLP's; ``segment_predictions`` is the VMLP's
``predictions`` layer (kernel and bias). Nothing else is transferred. So at step 0, with zero
audio rows, the model is the VMLP applied to each segment alone, with the logits averaged over
the segments, whatever the audio; it equals the VMLP (which averages the segment *features*
first) when the K segment features are equal, and differs otherwise, since the ReLU does not
commute with the mean. ``video_pooling: flatten`` has no per-segment rows to transfer and is
refused.

:func:`build_localiser` is the AVE-style head (Tian et al., ECCV 2018) on those per-segment
fused features: a frozen copy of the trained model up to ``fusion_hidden`` (``[B, K, H]``) ->
``localiser_hidden`` (Dense, ReLU) -> ``localiser_dropout`` -> ``segment_logits``
(``[B, K, C + 1]``; class ``C`` is background).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from maivar_tf.config import ModelConfig
from maivar_tf.models.heads import (
    AUDIO_SEGMENTS_INPUT,
    VIDEO_INPUT,
    VideoWeightsInitializer,
    input_statistics,
    layer_statistics,
    video_mlp_spec,
)
from maivar_tf.models.modality import audio_dropout

#: Layer names read by other modules.
FUSION_HIDDEN_LAYER = "fusion_hidden"
SEGMENT_PREDICTIONS_LAYER = "segment_predictions"
LOCALISER_OUTPUT = "segment_logits"
#: Width of the localiser's hidden layer.
LOCALISER_UNITS = 256


def binding_matrix(num_segments: int, window: int) -> np.ndarray:
    """``[K, K]`` float32: row ``k`` averages the segments within ``window // 2`` of ``k``
    (truncated at the ends, so a row has fewer than ``window`` ones near an end)."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"binding window {window}; expected an odd number >= 1")
    k = np.arange(int(num_segments))
    near = (np.abs(k[:, None] - k[None, :]) <= window // 2).astype(np.float64)
    return (near / near.sum(axis=1, keepdims=True)).astype(np.float32)


@keras.saving.register_keras_serializable(package="maivar_tf")
class TemporalBinding(keras.layers.Layer):
    """``[B, K, D] -> [B, K, D]``: segment ``k`` gets the mean of the features of the ``window``
    segments centred on it (fewer at the ends); ``window = 1`` is the identity.

    Args:
        window: an odd number of segments.
    """

    def __init__(self, window: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        window = int(window)
        if window < 1 or window % 2 == 0:
            raise ValueError(f"TemporalBinding.window: {window}; allowed: an odd number >= 1 "
                             "(model.binding_window)")
        self.window = window

    def call(self, inputs):
        if self.window == 1:
            return inputs
        matrix = binding_matrix(int(inputs.shape[1]), self.window)
        return keras.ops.einsum("kj,bjd->bkd", keras.ops.cast(matrix, inputs.dtype), inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "window": self.window}


@keras.saving.register_keras_serializable(package="maivar_tf")
class SegmentConsensus(keras.layers.Layer):
    """TSN's average consensus of per-segment logits: ``[B, K, C] -> [B, C]`` (float32)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, inputs):
        return keras.ops.mean(keras.ops.cast(inputs, "float32"), axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


def _vmlp_weights(vmlp: keras.Model, layer: str) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(w) for w in vmlp.get_layer(layer).weights]


def build_temporal_binding(vmlp: keras.Model, cfg: ModelConfig, audio_mean: Any = None,
                           audio_var: Any = None, *, audio_dim: int, seed: int = 0,
                           modality_dropout: float = 0.0, silent_audio: Any = None,
                           name: str = "fusion") -> keras.Model:
    """The temporal-binding fusion model, started from a trained VMLP (see the module doc).

    Args:
        vmlp: a mean-pooling VMLP (:func:`~maivar_tf.models.heads.build_video_mlp`).
        cfg: ``binding_window``, ``dropout``, ``l1``, ``audio_rows_init``, ``video_pooling``.
        audio_mean, audio_var: statistics of the per-segment audio features ``[Da]`` (over
            every clip and segment of the training set; None: identity).
        audio_dim: Da.
        seed: seed of Glorot-uniform audio rows and of the modality dropout draws.
        modality_dropout: the probability that a training clip's K audio rows are replaced by
            ``silent_audio`` (0: no layer).
        silent_audio: the silent audio-image's features ``[Da]``.
        name: the model name.

    Returns:
        A functional model with inputs ``{"video_features": [B, K, Dv],
        "audio_segment_features": [B, K, Da]}`` and float32 logits ``[B, C]`` (``predictions``).

    Raises:
        ValueError: a flattening VMLP, a pooling mismatch, bad statistics, or modality dropout
            without silent features.
    """
    spec = video_mlp_spec(vmlp)
    if "flatten" in (spec["pooling"], cfg.video_pooling):
        raise ValueError("model.fusion='temporal_binding' needs model.video_pooling: mean (the "
                         "VMLP's hidden kernel then applies to one segment's feature, so it can "
                         "start the per-segment fusion layer); with 'flatten' there are no "
                         "per-segment rows to transfer")
    k, dv = spec["num_segments"], spec["feature_dim"]
    a_mean, a_var = input_statistics(audio_mean, audio_var, audio_dim,
                                     "per-segment audio statistics")
    hidden_kernel, hidden_bias = _vmlp_weights(vmlp, "hidden")
    pred_kernel, pred_bias = _vmlp_weights(vmlp, "predictions")

    video_in = keras.Input((k, dv), name=VIDEO_INPUT)
    audio_in = keras.Input((k, audio_dim), name=AUDIO_SEGMENTS_INPUT)
    v_mean, v_var = layer_statistics(vmlp.get_layer("video_norm"))
    v = keras.layers.Normalization(axis=-1, mean=v_mean, variance=v_var,
                                   name="video_norm")(video_in)
    drop = audio_dropout(modality_dropout, silent_audio, audio_dim, "temporal_binding", seed)
    a = keras.layers.Normalization(axis=-1, mean=a_mean, variance=a_var, name="audio_norm")(
        audio_in if drop is None else drop(audio_in))
    a = TemporalBinding(cfg.binding_window, name="temporal_binding")(a)
    x = keras.layers.Concatenate(axis=-1, name="concat")([v, a])       # [B, K, Dv + Da]
    x = keras.layers.Dense(
        spec["hidden_units"], activation="relu", name=FUSION_HIDDEN_LAYER,
        kernel_regularizer=keras.regularizers.L1(cfg.l1) if cfg.l1 > 0 else None,
        kernel_initializer=VideoWeightsInitializer(hidden_kernel, extra_rows=audio_dim,
                                                   extra_rows_init=cfg.audio_rows_init,
                                                   seed=seed),
        bias_initializer=VideoWeightsInitializer(hidden_bias))(x)       # [B, K, H]
    x = keras.layers.Dropout(cfg.dropout, name="fusion_dropout")(x)
    x = keras.layers.Dense(spec["num_classes"], name=SEGMENT_PREDICTIONS_LAYER, dtype="float32",
                           kernel_initializer=VideoWeightsInitializer(pred_kernel),
                           bias_initializer=VideoWeightsInitializer(pred_bias))(x)  # [B, K, C]
    logits = SegmentConsensus(name="predictions")(x)                    # [B, C]
    return keras.Model({VIDEO_INPUT: video_in, AUDIO_SEGMENTS_INPUT: audio_in}, logits,
                       name=name)


def is_temporal_binding(model: Any) -> bool:
    """Whether a model takes per-segment audio (a temporal-binding fusion model or localiser)."""
    return any(t.name.split(":")[0] == AUDIO_SEGMENTS_INPUT for t in model.inputs)


def build_localiser(fusion: keras.Model, num_classes: int, cfg: ModelConfig, *,
                    units: int = LOCALISER_UNITS, name: str = "localiser") -> keras.Model:
    """The localisation head on a trained temporal-binding model's per-segment fused features.

    The fusion model is copied (config and weights), cut at ``fusion_hidden`` and frozen, and
    always runs in inference mode (its dropout and modality dropout are off).

    Args:
        fusion: the trained model of :func:`build_temporal_binding`.
        num_classes: C; the head emits ``C + 1`` logits per segment (``C`` = background).
        cfg: ``dropout`` and ``l1`` of the head.
        units: width of ``localiser_hidden``.
        name: the model name.

    Returns:
        A functional model with the fusion model's inputs and float32 logits ``[B, K, C + 1]``.

    Raises:
        ValueError: ``fusion`` is not a temporal-binding model.
    """
    if not is_temporal_binding(fusion) or FUSION_HIDDEN_LAYER not in {
            layer.name for layer in fusion.layers}:
        raise ValueError(f"build_localiser: model {fusion.name!r} is not a temporal-binding "
                         "fusion model (model.localisation needs model.fusion=temporal_binding)")
    copy = keras.Model.from_config(fusion.get_config())
    copy.set_weights(fusion.get_weights())
    fused = keras.Model(copy.input, copy.get_layer(FUSION_HIDDEN_LAYER).output,
                        name="fused_segments")
    fused.trainable = False
    inputs = {key: keras.Input(t.shape[1:], name=key) for key, t in copy.input.items()}
    x = fused(inputs, training=False)                                   # [B, K, H]
    x = keras.layers.Dense(
        int(units), activation="relu", name="localiser_hidden",
        kernel_regularizer=keras.regularizers.L1(cfg.l1) if cfg.l1 > 0 else None)(x)
    x = keras.layers.Dropout(cfg.dropout, name="localiser_dropout")(x)
    logits = keras.layers.Dense(int(num_classes) + 1, name=LOCALISER_OUTPUT, dtype="float32")(x)
    return keras.Model(inputs, logits, name=name)


__all__ = ["FUSION_HIDDEN_LAYER", "LOCALISER_OUTPUT", "LOCALISER_UNITS",
           "SEGMENT_PREDICTIONS_LAYER", "SegmentConsensus", "TemporalBinding", "binding_matrix",
           "build_localiser", "build_temporal_binding", "is_temporal_binding"]
