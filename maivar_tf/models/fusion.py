"""The fusion stage's models (``model.fusion``): MAiVAR's fusion MLP and the field's baselines.

Algorithm 1 (Shaikh et al. 2024) trains the audio MLP and the VMLP on frozen features, then a
fusion model. :func:`build_fusion` builds that last model for every method, from the trained
VMLP (its input standardisation, pooling and hidden width) and, for ``late``, the audio MLP:

* ``vmlp_init``: MAiVAR's fusion MLP, ``concat [video, audio]`` -> ``fusion_hidden`` ->
  ``predictions``, started from the VMLP (:func:`maivar_tf.models.heads.build_fusion_mlp`; the
  default, unchanged);
* ``random_init``: the same architecture with Glorot-uniform kernels and zero biases (the
  ablation of Algorithm 1's weight transfer);
* ``linear``: the concatenation -> one softmax layer ``predictions`` (what the authors' code
  does with an SVM on concatenated features);
* ``late``: decision fusion, ``w * log_softmax(audio MLP) + (1 - w) * log_softmax(VMLP)``
  (:class:`LateFusion`; the two heads are copied in, frozen), ``w`` chosen on the validation
  split by :func:`choose_late_weight`, no gradient training;
* ``gated``: multimodal gating of the concatenation, ``x * sigmoid(W x + b)`` (layer
  ``fusion_gate``), then the fusion MLP: the context gating that Kazakos et al. (ICCV 2019,
  EPIC-Fusion, the Temporal Binding Network code's ``context_gating`` option) apply to fused
  audio-visual features, here on the standardised concatenation itself;
* ``film``: the audio features condition the video features by FiLM (Perez et al. 2018, as
  Brousmiche et al. 2022 fuse audio and video): ``gamma, beta = Dense(audio)``,
  ``video' = gamma * video + beta`` on every segment (:class:`FiLM`; before the pooling, which
  for the mean is the same as after it), then the MLP on ``video'``. The generator starts as
  the identity (zero kernels, ``gamma`` bias 1, ``beta`` bias 0);
* ``temporal_binding``: per-segment audio bound to each video segment within
  ``model.binding_window``, a shared MLP per segment, then the consensus over segments
  (:func:`maivar_tf.models.temporal.build_temporal_binding`; inputs ``video_features`` and
  ``audio_segment_features`` ``[B, K, Da]``).

With ``modality_dropout > 0`` (``train.fusion.modality_dropout``) every fitted method puts a
:class:`~maivar_tf.models.modality.ModalityDropout` layer on its raw audio input (``late`` is
not fitted and refuses it).

Every model takes ``{"video_features": [B, K, Dv], "audio_features": [B, Da]}``, standardises
its inputs like the heads, and emits float32 logits ``[B, C]`` from a layer named
``predictions``; the MLP methods name their hidden layer ``fusion_hidden`` (the t-SNE layer).
Custom layers are registered, so every model saves and loads in Keras' safe mode.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from maivar_tf.config import FUSION_METHODS, ModelConfig
from maivar_tf.models.heads import (
    AUDIO_INPUT,
    VIDEO_INPUT,
    audio_branch,
    build_fusion_mlp,
    classifier,
    input_statistics,
    layer_statistics,
    pool_segments,
    video_branch,
    video_mlp_spec,
)
from maivar_tf.models.inception_resnet_v2 import AUDIO_FEATURE_DIM
from maivar_tf.models.modality import audio_dropout
from maivar_tf.models.temporal import build_temporal_binding

#: ``w`` candidates of late fusion: 0, 0.05, ..., 1.
LATE_WEIGHT_GRID = 21


@keras.saving.register_keras_serializable(package="maivar_tf")
class FiLM(keras.layers.Layer):
    """Feature-wise affine modulation: ``[x, gamma, beta] -> gamma * x + beta``.

    ``x`` is ``[B, D]`` or ``[B, K, D]``; ``gamma`` and ``beta`` are ``[B, D]`` and broadcast
    over the K segments.
    """

    def call(self, inputs):
        x, gamma, beta = inputs
        if len(x.shape) == 3:
            gamma = keras.ops.expand_dims(gamma, 1)
            beta = keras.ops.expand_dims(beta, 1)
        return gamma * x + beta

    def compute_output_shape(self, input_shape):
        return input_shape[0]


@keras.saving.register_keras_serializable(package="maivar_tf")
class LateFusion(keras.layers.Layer):
    """``[audio_logits, video_logits] -> w * log_softmax(audio) + (1 - w) * log_softmax(video)``.

    Its softmax is the normalised weighted geometric mean of the two heads' distributions.

    Args:
        audio_weight: ``w`` in ``[0, 1]``.
    """

    def __init__(self, audio_weight: float = 0.5, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        audio_weight = float(audio_weight)
        if not 0.0 <= audio_weight <= 1.0:
            raise ValueError(f"LateFusion.audio_weight: {audio_weight}; allowed: [0, 1]")
        self.audio_weight = audio_weight

    def call(self, inputs):
        audio, video = (keras.ops.log_softmax(keras.ops.cast(t, "float32"), axis=-1)
                        for t in inputs)
        return self.audio_weight * audio + (1.0 - self.audio_weight) * video

    def compute_output_shape(self, input_shape):
        return input_shape[1]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "audio_weight": self.audio_weight}


# ----------------------------------------------------------------------------- selection


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def choose_late_weight(audio_logits: np.ndarray, video_logits: np.ndarray, labels: np.ndarray,
                       grid: int = LATE_WEIGHT_GRID) -> dict[str, Any]:
    """Late fusion's audio weight ``w``: the grid value of least NLL on ``labels``.

    The NLL is the mean negative log-likelihood of ``softmax(w * log_softmax(audio) + (1 - w) *
    log_softmax(video))`` (float64). Ties (NLL within 1e-9 of the least) go to the ``w``
    nearest 0.5 (equal weighting), then to the smaller ``w``: the choice is deterministic.

    Args:
        audio_logits, video_logits: ``[N, C]`` logits of the audio MLP and the VMLP.
        labels: ``[N]`` class indices.
        grid: ``w`` candidates ``linspace(0, 1, grid)``.

    Returns:
        ``{"audio_weight", "criterion": "nll", "nll", "accuracy", "grid": [w...],
        "grid_nll": [...]}``.
    """
    la, lv = _log_softmax(audio_logits), _log_softmax(video_logits)
    labels = np.asarray(labels, np.int64)
    if la.shape != lv.shape or la.ndim != 2 or labels.shape != (la.shape[0],) or grid < 2:
        raise ValueError(f"choose_late_weight: logits {la.shape} / {lv.shape}, labels "
                         f"{labels.shape}, grid {grid}; expected [N, C] twice, [N], grid >= 2")
    weights = np.linspace(0.0, 1.0, int(grid))
    rows = np.arange(len(labels))
    nll = np.array([-_log_softmax(w * la + (1 - w) * lv)[rows, labels].mean() for w in weights])
    near = np.flatnonzero(nll <= nll.min() + 1e-9)
    best = int(min(near, key=lambda i: (abs(weights[i] - 0.5), weights[i])))
    w = float(weights[best])
    accuracy = float(((w * la + (1 - w) * lv).argmax(axis=1) == labels).mean())
    return {"audio_weight": w, "criterion": "nll", "nll": float(nll[best]),
            "accuracy": accuracy, "grid": [float(x) for x in weights],
            "grid_nll": [round(float(x), 6) for x in nll]}


# ----------------------------------------------------------------------------- builders


def _spec(vmlp: keras.Model, cfg: ModelConfig) -> dict[str, Any]:
    spec = video_mlp_spec(vmlp)
    if cfg.video_pooling != spec["pooling"]:
        raise ValueError(f"model.video_pooling is {cfg.video_pooling!r} but the VMLP pools with "
                         f"{spec['pooling']!r}; the fusion model must pool like its VMLP")
    spec["video_stats"] = layer_statistics(vmlp.get_layer("video_norm"))
    return spec


def _inputs(spec: dict[str, Any], audio_dim: int):
    return (keras.Input((spec["num_segments"], spec["feature_dim"]), name=VIDEO_INPUT),
            keras.Input((audio_dim,), name=AUDIO_INPUT))


def _audio(audio_in, spec):
    """The raw audio input after the modality dropout layer, if any."""
    drop = spec.get("audio_dropout")
    return audio_in if drop is None else drop(audio_in)


def _concatenated(spec, audio_stats, audio_dim):
    """Inputs and the standardised concatenation ``[B, Dv + Da]`` (as the fusion MLP's)."""
    video_in, audio_in = _inputs(spec, audio_dim)
    v = video_branch(video_in, spec["pooling"], *spec["video_stats"])
    a = audio_branch(_audio(audio_in, spec), *audio_stats)
    x = keras.layers.Concatenate(axis=-1, name="concat")([v, a])
    return (video_in, audio_in), x


def _mlp(x, spec, cfg: ModelConfig):
    return classifier(x, spec["num_classes"], spec["hidden_units"], cfg.dropout, cfg.l1,
                      "fusion_hidden", "fusion_dropout")


def _random_init(spec, cfg, audio_stats, audio_dim, **_):
    inputs, x = _concatenated(spec, audio_stats, audio_dim)
    return inputs, _mlp(x, spec, cfg)


def _linear(spec, cfg, audio_stats, audio_dim, **_):
    inputs, x = _concatenated(spec, audio_stats, audio_dim)
    logits = keras.layers.Dense(
        spec["num_classes"], name="predictions", dtype="float32",
        kernel_regularizer=keras.regularizers.L1(cfg.l1) if cfg.l1 > 0 else None)(x)
    return inputs, logits


def _gated(spec, cfg, audio_stats, audio_dim, **_):
    inputs, x = _concatenated(spec, audio_stats, audio_dim)
    gate = keras.layers.Dense(x.shape[-1], activation="sigmoid", name="fusion_gate")(x)
    x = keras.layers.Multiply(name="gated")([x, gate])
    return inputs, _mlp(x, spec, cfg)


def _film(spec, cfg, audio_stats, audio_dim, **_):
    video_in, audio_in = _inputs(spec, audio_dim)
    v_mean, v_var = spec["video_stats"]
    v = keras.layers.Normalization(axis=-1, mean=v_mean, variance=v_var,
                                   name="video_norm")(video_in)          # [B, K, Dv]
    a = audio_branch(_audio(audio_in, spec), *audio_stats)               # [B, Da]
    dim = spec["feature_dim"]
    gamma = keras.layers.Dense(dim, name="film_gamma", kernel_initializer="zeros",
                               bias_initializer="ones")(a)
    beta = keras.layers.Dense(dim, name="film_beta", kernel_initializer="zeros")(a)
    v = FiLM(name="film")([v, gamma, beta])                              # [B, K, Dv]
    return (video_in, audio_in), _mlp(pool_segments(v, spec["pooling"]), spec, cfg)


def _late(spec, cfg, audio_stats, audio_dim, *, vmlp, audio_mlp, late_weight, **_):
    if audio_mlp is None:
        raise ValueError("model.fusion='late' needs the trained audio MLP")
    video_in, audio_in = _inputs(spec, audio_dim)
    heads = []
    for model, x in ((audio_mlp, audio_in), (vmlp, video_in)):
        # from the config, not clone_model: that also copies a trained head's optimizer,
        # whose variables would be saved in fusion.keras and refused (with a warning) on load
        copy = keras.Model.from_config(model.get_config())
        copy.set_weights(model.get_weights())
        copy.trainable = False
        heads.append(copy(x))
    return (video_in, audio_in), LateFusion(late_weight, name="predictions")(heads)


_BUILDERS = {"random_init": _random_init, "linear": _linear, "late": _late, "gated": _gated,
             "film": _film}


def build_fusion(method: str, vmlp: keras.Model, audio_mlp: keras.Model | None,
                 cfg: ModelConfig, audio_mean: Any = None, audio_var: Any = None, *,
                 audio_dim: int = AUDIO_FEATURE_DIM, seed: int = 0, late_weight: float = 0.5,
                 modality_dropout: float = 0.0, silent_audio: Any = None,
                 name: str = "fusion") -> keras.Model:
    """The fusion stage's model for ``method`` (one of :data:`FUSION_METHODS`).

    Args:
        method: ``vmlp_init``, ``random_init``, ``linear``, ``late``, ``gated``, ``film`` or
            ``temporal_binding``.
        vmlp: the trained VMLP (its video statistics, pooling, hidden width and classes; for
            ``vmlp_init`` its weights, for ``late`` a frozen copy of it).
        audio_mlp: the trained audio MLP (used by ``late`` only; may be None otherwise).
        cfg: ``dropout``, ``l1``, ``video_pooling`` (must be the VMLP's), ``audio_rows_init``.
        audio_mean, audio_var: the audio features' statistics (None: identity); for
            ``temporal_binding`` those of the per-segment audio features.
        audio_dim: the audio feature width.
        seed: ``vmlp_init``'s Glorot audio rows (other methods draw from Keras' global seed).
        late_weight: ``late``'s audio weight ``w`` (see :func:`choose_late_weight`).
        modality_dropout: the probability that a training clip's audio input is replaced by
            ``silent_audio`` (:class:`~maivar_tf.models.modality.ModalityDropout`).
        silent_audio: the silent audio-image's features ``[Da]`` (needed when
            ``modality_dropout > 0``).
        name: the model name.

    Returns:
        A functional ``keras.Model`` with inputs ``{"video_features", "audio_features"}``
        (``temporal_binding``: ``{"video_features", "audio_segment_features"}``).

    Raises:
        ValueError: an unknown method, a model that is not a VMLP, a pooling mismatch,
            ``late`` without an audio MLP or with modality dropout, modality dropout without
            silent features, ``temporal_binding`` with ``video_pooling: flatten``.
    """
    if method not in FUSION_METHODS:
        raise ValueError(f"model.fusion: invalid value {method!r}; "
                         f"allowed: {', '.join(FUSION_METHODS)}")
    if method == "temporal_binding":
        return build_temporal_binding(vmlp, cfg, audio_mean, audio_var, audio_dim=audio_dim,
                                      seed=seed, modality_dropout=modality_dropout,
                                      silent_audio=silent_audio, name=name)
    drop = audio_dropout(modality_dropout, silent_audio, audio_dim, method, seed)
    if method == "vmlp_init":
        return build_fusion_mlp(vmlp, cfg, audio_mean, audio_var, audio_dim=audio_dim,
                                seed=seed, name=name, audio_transform=drop)
    spec = {**_spec(vmlp, cfg), "audio_dropout": drop}
    audio_stats = input_statistics(audio_mean, audio_var, audio_dim, "audio statistics")
    (video_in, audio_in), logits = _BUILDERS[method](
        spec, cfg, audio_stats, audio_dim, vmlp=vmlp, audio_mlp=audio_mlp,
        late_weight=late_weight)
    return keras.Model({VIDEO_INPUT: video_in, AUDIO_INPUT: audio_in}, logits, name=name)


__all__ = ["FUSION_METHODS", "LATE_WEIGHT_GRID", "FiLM", "LateFusion", "build_fusion",
           "choose_late_weight"]
