"""MAiVAR's classification heads and the fusion weight transfer (Algorithm 1).

Shaikh et al. 2024 ("Multimodal fusion for audio-image and video action recognition") train
three multilayer perceptrons on frozen backbone features:

* the **VMLP** on BNInception segment features ``[K, 1024]`` (TSN average consensus over the K
  segments, or the segments flattened in order),
* the **audio MLP** on InceptionResNetV2 audio-image features ``[1536]``,
* the **fusion MLP** on the concatenation ``[video, audio]``, whose first layer starts from the
  trained VMLP (the paper's Algorithm 1, published without code; this is our reading of it).

Every head standardises its inputs with fixed statistics (``keras.layers.Normalization`` built
from the training set's mean and variance; identity when none are given), has one hidden ReLU
``Dense`` with an L1 kernel regulariser (the paper's cross-entropy + L1 objective), dropout, and
ends in a ``Dense`` named ``predictions`` that emits float32 logits (softmax belongs to the
serving signature).

Weight transfer: the fusion hidden kernel has ``D_v + 1536`` rows. Its video rows are the VMLP
hidden kernel, its audio rows start at zero (``audio_rows_init="zeros"``) or Glorot-uniform; its
bias and the whole ``predictions`` layer are the VMLP's. With zero audio rows the fusion model
computes exactly the VMLP's function at step 0, whatever the audio input is, and training then
learns how much audio to add. The transfer goes through the registered initializer
:class:`VideoWeightsInitializer`, so the fusion model's config records where its first weights
came from and survives ``model.save`` / ``keras.saving.load_model``.

Example:
    >>> vmlp = build_video_mlp(num_classes=8, num_segments=8, cfg=ModelConfig())
    >>> # ... vmlp.fit(...)
    >>> fusion = build_fusion_mlp(vmlp, ModelConfig(), audio_mean, audio_var)
    >>> fusion({"video_features": v, "audio_features": a})   # == vmlp(v) before training
"""

from __future__ import annotations

import base64
from typing import Any

import keras
import numpy as np

from maivar_tf.config import AUDIO_ROWS_INIT, VIDEO_POOLING, ModelConfig
from maivar_tf.models.bn_inception import VIDEO_FEATURE_DIM
from maivar_tf.models.inception_resnet_v2 import AUDIO_FEATURE_DIM

#: Input names of the heads (the feature keys of the training arrays and serving inputs).
VIDEO_INPUT = "video_features"
AUDIO_INPUT = "audio_features"
#: Per-segment audio features ``[B, K, Da]`` (temporal binding, :mod:`maivar_tf.models.temporal`).
AUDIO_SEGMENTS_INPUT = "audio_segment_features"


# ----------------------------------------------------------------------------- initializer


def _encode_array(values: np.ndarray) -> dict[str, Any]:
    """Float32 array -> JSON-safe dict (little-endian bytes in base64, exact round trip)."""
    arr = np.ascontiguousarray(values, dtype="<f4")
    return {"shape": list(arr.shape), "dtype": "float32",
            "base64": base64.b64encode(arr.tobytes()).decode("ascii")}


def _decode_array(values: Any) -> np.ndarray:
    """Inverse of :func:`_encode_array`; also accepts arrays and nested lists."""
    if isinstance(values, dict):
        missing = {"shape", "base64"} - set(values)
        if missing:
            raise ValueError(f"VideoWeightsInitializer: encoded values lack {sorted(missing)}; "
                             "expected keys shape, dtype, base64")
        raw = base64.b64decode(values["base64"])
        arr = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        shape = tuple(int(s) for s in values["shape"])
        if arr.size != int(np.prod(shape)):
            raise ValueError(f"VideoWeightsInitializer: {arr.size} encoded values do not fill "
                             f"shape {shape}")
        return arr.reshape(shape)
    return np.asarray(values, dtype=np.float32)


@keras.saving.register_keras_serializable(package="maivar_tf")
class VideoWeightsInitializer(keras.initializers.Initializer):
    """Initialises a fusion-MLP weight from a trained VMLP weight (Algorithm 1).

    The produced tensor is ``values`` with ``extra_rows`` rows appended along the first axis:
    for the fusion hidden kernel ``values`` is the VMLP hidden kernel ``[D_v, H]`` and the
    ``extra_rows = 1536`` audio rows are zeros (the fusion model then equals the VMLP at step 0)
    or Glorot-uniform; for biases and the prediction layer ``extra_rows = 0`` and the weight is
    copied as is.

    The source values are part of the config (``get_config`` stores them exactly, as base64 float32
    bytes rather than a JSON list of floats, which is several times larger and slow to parse), so a
    saved fusion model reloads with the same initializer and a config that says where its first
    weights came from. The trained weights themselves are restored from the weights file.

    Args:
        values: the VMLP weight: an array, a nested list, or the encoded dict ``get_config``
            writes (``{"shape", "dtype", "base64"}``).
        extra_rows: rows appended after the copied ones (the audio rows of the fusion kernel).
        extra_rows_init: ``"zeros"`` or ``"glorot_uniform"`` (fan-in = all rows of the
            resulting kernel, fan-out = its columns).
        seed: seed of the Glorot-uniform rows (NumPy ``default_rng``; deterministic).

    Raises:
        ValueError: an unknown ``extra_rows_init``, negative ``extra_rows``, or (when called) a
            requested shape that is not ``values`` plus the extra rows.
    """

    def __init__(self, values: Any, extra_rows: int = 0, extra_rows_init: str = "zeros",
                 seed: int | None = 0) -> None:
        if extra_rows_init not in AUDIO_ROWS_INIT:
            raise ValueError(f"VideoWeightsInitializer.extra_rows_init: invalid value "
                             f"{extra_rows_init!r}; allowed: {', '.join(AUDIO_ROWS_INIT)}")
        if int(extra_rows) < 0:
            raise ValueError(f"VideoWeightsInitializer.extra_rows: {extra_rows}; allowed: >= 0")
        self.values = _decode_array(values)
        if self.values.ndim == 0:
            raise ValueError("VideoWeightsInitializer.values: a scalar; expected a weight "
                             "array (kernel or bias)")
        self.extra_rows = int(extra_rows)
        self.extra_rows_init = extra_rows_init
        self.seed = None if seed is None else int(seed)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The shape this initializer produces."""
        return (self.values.shape[0] + self.extra_rows, *self.values.shape[1:])

    def initial_value(self) -> np.ndarray:
        """The full initial weight as a float32 NumPy array."""
        shape = self.output_shape
        if self.extra_rows == 0:
            return self.values.copy()
        extra_shape = (self.extra_rows, *self.values.shape[1:])
        if self.extra_rows_init == "zeros":
            extra = np.zeros(extra_shape, np.float32)
        else:
            fan_in = shape[0]
            fan_out = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            rng = np.random.default_rng(self.seed)
            extra = rng.uniform(-limit, limit, size=extra_shape).astype(np.float32)
        return np.concatenate([self.values, extra], axis=0)

    def __call__(self, shape, dtype=None):
        """Returns the initial weight; ``shape`` must match :attr:`output_shape`."""
        shape = tuple(int(s) for s in shape)
        if shape != self.output_shape:
            raise ValueError(
                f"VideoWeightsInitializer: asked for a weight of shape {shape} but it holds "
                f"{tuple(self.values.shape)} source values + {self.extra_rows} extra rows = "
                f"{self.output_shape}; build the fusion layer with matching units/inputs")
        dtype = dtype or keras.backend.floatx()
        return keras.ops.convert_to_tensor(self.initial_value(), dtype=dtype)

    def get_config(self) -> dict[str, Any]:
        return {"values": _encode_array(self.values), "extra_rows": self.extra_rows,
                "extra_rows_init": self.extra_rows_init, "seed": self.seed}


# ----------------------------------------------------------------------------- building blocks


def input_statistics(mean: Any, var: Any, dim: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated float32 (mean, variance) of width ``dim``; zeros/ones (identity) when None."""
    if (mean is None) != (var is None):
        raise ValueError(f"{what}: give both mean and variance, or neither (identity)")
    if mean is None:
        return np.zeros(dim, np.float32), np.ones(dim, np.float32)
    mean = np.asarray(mean, np.float32).reshape(-1)
    var = np.asarray(var, np.float32).reshape(-1)
    if mean.shape != (dim,) or var.shape != (dim,):
        raise ValueError(f"{what}: mean {mean.shape} / variance {var.shape}; expected ({dim},)")
    if np.any(var < 0) or not np.all(np.isfinite(var)) or not np.all(np.isfinite(mean)):
        raise ValueError(f"{what}: variance must be finite and >= 0, mean finite")
    return mean, var


def _check_pooling(pooling: str) -> None:
    if pooling not in VIDEO_POOLING:
        raise ValueError(f"model.video_pooling: invalid value {pooling!r}; "
                         f"allowed: {', '.join(VIDEO_POOLING)}")


def video_branch(video_in, pooling: str, mean: np.ndarray, var: np.ndarray):
    """Standardise each segment feature with fixed statistics, then pool over the K segments."""
    # [B, K, D] -> [B, K, D]: the statistics broadcast over the segment axis.
    x = keras.layers.Normalization(axis=-1, mean=mean, variance=var, name="video_norm")(video_in)
    return pool_segments(x, pooling)


def pool_segments(x, pooling: str):
    """The ``video_pool`` layer applied to segment features ``[B, K, D]``."""
    if pooling == "mean":
        # TSN average consensus: [B, K, D] -> [B, D]
        return keras.layers.GlobalAveragePooling1D(name="video_pool")(x)
    # segment order kept: [B, K, D] -> [B, K * D]
    return keras.layers.Flatten(name="video_pool")(x)


def audio_branch(audio_in, mean: np.ndarray, var: np.ndarray):
    """Standardise the audio features with fixed statistics: [B, 1536] -> [B, 1536]."""
    return keras.layers.Normalization(axis=-1, mean=mean, variance=var,
                                      name="audio_norm")(audio_in)


def classifier(x, num_classes: int, hidden_units: int, dropout: float, l1: float,
               hidden_name: str, dropout_name: str, hidden_init=None, hidden_bias_init=None,
               pred_init=None, pred_bias_init=None):
    """Dense(hidden, relu, L1) -> Dropout -> Dense(num_classes) float32 logits."""
    x = keras.layers.Dense(
        hidden_units, activation="relu", name=hidden_name,
        kernel_regularizer=keras.regularizers.L1(l1) if l1 > 0 else None,
        kernel_initializer=hidden_init or "glorot_uniform",
        bias_initializer=hidden_bias_init or "zeros")(x)
    x = keras.layers.Dropout(dropout, name=dropout_name)(x)
    # logits stay float32 under a mixed_float16 policy (numerically stable softmax/CE).
    return keras.layers.Dense(
        num_classes, name="predictions", dtype="float32",
        kernel_initializer=pred_init or "glorot_uniform",
        bias_initializer=pred_bias_init or "zeros")(x)


# ----------------------------------------------------------------------------- public builders


def build_video_mlp(num_classes: int, num_segments: int, cfg: ModelConfig,
                    video_mean: Any = None, video_var: Any = None, *,
                    feature_dim: int = VIDEO_FEATURE_DIM, name: str = "vmlp") -> keras.Model:
    """The VMLP: segment features ``[K, D]`` -> logits ``[num_classes]``.

    Layers: ``video_norm`` (fixed standardisation, broadcast over K) -> ``video_pool``
    (``cfg.video_pooling``: mean over K or flatten) -> ``hidden`` (ReLU, L1 ``cfg.l1``) ->
    ``dropout`` -> ``predictions``.

    Args:
        num_classes: output logits.
        num_segments: K, the TSN segments per video.
        cfg: ``hidden_units``, ``dropout``, ``l1``, ``video_pooling``.
        video_mean: per-feature mean ``[D]`` of the training features (None: identity).
        video_var: per-feature variance ``[D]`` (None: identity).
        feature_dim: D (BNInception: 1024).
        name: the model name.

    Returns:
        A functional ``keras.Model`` with the single input ``video_features``.
    """
    _check_pooling(cfg.video_pooling)
    mean, var = input_statistics(video_mean, video_var, feature_dim, "video statistics")
    video_in = keras.Input((int(num_segments), feature_dim), name=VIDEO_INPUT)
    x = video_branch(video_in, cfg.video_pooling, mean, var)
    logits = classifier(x, int(num_classes), cfg.hidden_units, cfg.dropout, cfg.l1,
                        "hidden", "dropout")
    return keras.Model(video_in, logits, name=name)


def build_audio_mlp(num_classes: int, cfg: ModelConfig, audio_mean: Any = None,
                    audio_var: Any = None, *, feature_dim: int = AUDIO_FEATURE_DIM,
                    name: str = "audio_mlp") -> keras.Model:
    """The audio MLP: audio-image features ``[1536]`` -> logits ``[num_classes]``.

    Layers: ``audio_norm`` -> ``hidden`` (ReLU, L1) -> ``dropout`` -> ``predictions``.

    Args:
        num_classes: output logits.
        cfg: ``hidden_units``, ``dropout``, ``l1``.
        audio_mean: per-feature mean ``[1536]`` (None: identity).
        audio_var: per-feature variance ``[1536]`` (None: identity).
        feature_dim: the audio feature width (InceptionResNetV2: 1536).
        name: the model name.

    Returns:
        A functional ``keras.Model`` with the single input ``audio_features``.
    """
    mean, var = input_statistics(audio_mean, audio_var, feature_dim, "audio statistics")
    audio_in = keras.Input((feature_dim,), name=AUDIO_INPUT)
    x = audio_branch(audio_in, mean, var)
    logits = classifier(x, int(num_classes), cfg.hidden_units, cfg.dropout, cfg.l1,
                        "hidden", "dropout")
    return keras.Model(audio_in, logits, name=name)


def layer_statistics(layer: keras.layers.Layer) -> tuple[np.ndarray, np.ndarray]:
    """(mean, variance) a built Normalization layer applies, as flat float32 arrays."""
    mean = np.asarray(keras.ops.convert_to_numpy(layer.mean), np.float32).reshape(-1)
    var = np.asarray(keras.ops.convert_to_numpy(layer.variance), np.float32).reshape(-1)
    return mean, var


def video_mlp_spec(vmlp: keras.Model) -> dict[str, Any]:
    """What a fusion model needs to know about a VMLP, read from the model itself.

    Returns:
        ``{"num_segments", "feature_dim", "pooling", "hidden_units", "num_classes"}``.

    Raises:
        ValueError: the model is not a VMLP built by :func:`build_video_mlp`.
    """
    names = {layer.name for layer in vmlp.layers}
    needed = {"video_norm", "video_pool", "hidden", "predictions"}
    if not needed <= names:
        raise ValueError(f"not a VMLP: model {vmlp.name!r} lacks layers "
                         f"{sorted(needed - names)}; build it with build_video_mlp")
    shape = vmlp.get_layer("video_norm").input.shape  # (None, K, D)
    num_segments, feature_dim = int(shape[1]), int(shape[2])
    pool = vmlp.get_layer("video_pool")
    pooling = "mean" if isinstance(pool, keras.layers.GlobalAveragePooling1D) else "flatten"
    hidden = vmlp.get_layer("hidden")
    return {"num_segments": num_segments, "feature_dim": feature_dim, "pooling": pooling,
            "hidden_units": int(hidden.units),
            "num_classes": int(vmlp.get_layer("predictions").units)}


def build_fusion_mlp(vmlp: keras.Model, cfg: ModelConfig, audio_mean: Any = None,
                     audio_var: Any = None, *, audio_dim: int = AUDIO_FEATURE_DIM,
                     seed: int = 0, name: str = "fusion", audio_transform=None) -> keras.Model:
    """The fusion MLP, initialised from a trained VMLP (Algorithm 1, steps 3-4).

    Layers: the VMLP's ``video_norm`` statistics and ``video_pool`` (copied) and ``audio_norm``
    -> ``concat`` ``[video, audio]`` -> ``fusion_hidden`` (ReLU, L1 ``cfg.l1``) ->
    ``fusion_dropout`` -> ``predictions``. ``fusion_hidden`` starts as ``[W_vmlp; audio rows]``
    with the VMLP's bias, and ``predictions`` starts as the VMLP's, all through
    :class:`VideoWeightsInitializer`. The width of ``fusion_hidden`` is the VMLP's hidden width
    (``cfg.hidden_units`` is not used here); the pooling is the VMLP's (``cfg.video_pooling``
    must agree with it).

    Args:
        vmlp: a VMLP from :func:`build_video_mlp` (trained or not).
        cfg: ``dropout``, ``l1``, ``audio_rows_init``, ``video_pooling``.
        audio_mean: per-feature mean of the audio features (None: identity).
        audio_var: per-feature variance of the audio features (None: identity).
        audio_dim: the audio feature width.
        seed: seed of Glorot-uniform audio rows (``cfg.audio_rows_init="glorot_uniform"``).
        name: the model name.
        audio_transform: applied to the raw audio input before ``audio_norm`` (e.g. a
            :class:`~maivar_tf.models.modality.ModalityDropout` layer); None: nothing.

    Returns:
        A functional ``keras.Model`` with inputs ``{"video_features", "audio_features"}``.

    Raises:
        ValueError: ``vmlp`` is not a VMLP or its pooling differs from ``cfg.video_pooling``.
    """
    spec = video_mlp_spec(vmlp)
    _check_pooling(cfg.video_pooling)
    if cfg.video_pooling != spec["pooling"]:
        raise ValueError(f"model.video_pooling is {cfg.video_pooling!r} but the VMLP pools with "
                         f"{spec['pooling']!r}; the fusion model must pool like its VMLP")
    v_mean, v_var = layer_statistics(vmlp.get_layer("video_norm"))
    a_mean, a_var = input_statistics(audio_mean, audio_var, audio_dim, "audio statistics")
    hidden_kernel, hidden_bias = (keras.ops.convert_to_numpy(w)
                                  for w in vmlp.get_layer("hidden").weights)
    pred_kernel, pred_bias = (keras.ops.convert_to_numpy(w)
                              for w in vmlp.get_layer("predictions").weights)

    video_in = keras.Input((spec["num_segments"], spec["feature_dim"]), name=VIDEO_INPUT)
    audio_in = keras.Input((audio_dim,), name=AUDIO_INPUT)
    v = video_branch(video_in, spec["pooling"], v_mean, v_var)
    a = audio_branch(audio_in if audio_transform is None else audio_transform(audio_in),
                     a_mean, a_var)
    x = keras.layers.Concatenate(axis=-1, name="concat")([v, a])  # [B, D_v + 1536]
    logits = classifier(
        x, spec["num_classes"], spec["hidden_units"], cfg.dropout, cfg.l1,
        "fusion_hidden", "fusion_dropout",
        hidden_init=VideoWeightsInitializer(hidden_kernel, extra_rows=audio_dim,
                                            extra_rows_init=cfg.audio_rows_init, seed=seed),
        hidden_bias_init=VideoWeightsInitializer(hidden_bias),
        pred_init=VideoWeightsInitializer(pred_kernel),
        pred_bias_init=VideoWeightsInitializer(pred_bias))
    return keras.Model({VIDEO_INPUT: video_in, AUDIO_INPUT: audio_in}, logits, name=name)


class FusionMLP:
    """Namespace for the fusion model's constructor spelled as in the design notes.

    ``FusionMLP.from_video_mlp(vmlp, cfg, audio_mean, audio_var)`` is
    :func:`build_fusion_mlp`; the model itself is a plain functional ``keras.Model``.
    """

    @staticmethod
    def from_video_mlp(vmlp: keras.Model, cfg: ModelConfig, audio_mean: Any = None,
                       audio_var: Any = None, **kwargs: Any) -> keras.Model:
        """See :func:`build_fusion_mlp`."""
        return build_fusion_mlp(vmlp, cfg, audio_mean, audio_var, **kwargs)


def feature_statistics(features: np.ndarray, min_variance: float = 1e-12,
                       chunk_rows: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and variance over every axis but the last.

    Accumulates in float64 over chunks of ``chunk_rows`` examples (Chan et al.'s pairwise
    update), so ``[N, K, 1024]`` training features are never copied whole. Features that never
    vary in the training set get variance 1 (they are only centred), so that a test-time
    deviation is not divided by ~0.

    Args:
        features: ``[N, ..., D]`` array.
        min_variance: variances below this become 1.
        chunk_rows: examples per accumulation chunk.

    Returns:
        ``(mean [D], variance [D])`` as float32.

    Raises:
        ValueError: ``features`` is empty or has fewer than 2 axes.
    """
    x = np.asarray(features)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"feature_statistics: need a non-empty [N, ..., D] array, got "
                         f"shape {x.shape}")
    dim = x.shape[-1]
    count = 0
    mean = np.zeros(dim, np.float64)
    m2 = np.zeros(dim, np.float64)
    for start in range(0, x.shape[0], chunk_rows):
        chunk = x[start:start + chunk_rows].reshape(-1, dim).astype(np.float64)
        n_b = chunk.shape[0]
        mean_b = chunk.mean(axis=0)
        m2_b = ((chunk - mean_b) ** 2).sum(axis=0)
        total = count + n_b
        delta = mean_b - mean
        mean = mean + delta * (n_b / total)
        m2 = m2 + m2_b + delta ** 2 * (count * n_b / total)
        count = total
    var = m2 / count
    var = np.where(var < min_variance, 1.0, var)
    return mean.astype(np.float32), var.astype(np.float32)
