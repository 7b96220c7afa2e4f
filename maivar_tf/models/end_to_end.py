"""End-to-end MAiVAR models: frames and audio-images -> backbones -> the stage's head.

The feature path trains MAiVAR's heads (:mod:`maivar_tf.models.heads`,
:mod:`maivar_tf.models.fusion`) on frozen backbone features. End-to-end training puts the
backbones in front of the very same heads: :func:`build_stage_model` builds one Keras model per
stage of Algorithm 1,

* ``audio_mlp``: ``audio_image`` uint8 ``[B, S, S, 3]`` -> audio backbone -> audio MLP;
* ``vmlp``: ``frames`` uint8 ``[B, K, c, c, 3]`` -> :class:`FoldSegments` ``[B*K, c, c, 3]``
  -> video backbone (BNInception, TSN) -> :class:`UnfoldSegments` ``[B, K, D]`` -> VMLP, whose
  ``video_pool`` is TSN's segment consensus;
* ``fusion``: ``frames`` and ``audio_image`` (both backbones), or ``frames`` and the cached
  ``audio_features`` ``[B, Da]`` of a frozen audio backbone -> the fusion model.

The head is nested as one layer: ``model.get_layer(head.name) is head`` after training, so the
trained head is saved as ``<stage>.keras`` unchanged, and with frozen backbones the model
computes exactly the feature path's logits (images cast to float32 like
:class:`~maivar_tf.models.backbones.BackboneFeatures`, features cast to float32 before the
head). The backbones come from :func:`build_training_backbone` (BatchNorm unfolded, built
under the current global dtype policy, so ``mixed_float16`` / ``mixed_bfloat16`` apply).

Fine-tuning (``train.finetune``): :func:`set_finetune` freezes a backbone (BatchNorm then runs
on its moving statistics, also in ``training=True`` calls) or makes it trainable with TSN's
partial BatchNorm (Wang et al. 2016: every BatchNorm but the first frozen), synchronised
across replicas under ``tf.distribute``; :class:`BackboneAdam` steps the backbone's variables
with ``train.backbone_lr_multiplier`` times the head's learning rate.

Example:
    >>> backbone = build_training_backbone("video", "none", 224, architecture="bn_inception")
    >>> set_finetune(backbone, True, partial_bn=True)
    {'trainable': True, 'batch_norms': 69, 'trainable_batch_norms': 1}
    >>> model = build_stage_model("vmlp", vmlp, video_backbone=backbone, num_segments=3,
    ...                           crop_size=224, image_size=299)
    >>> model.compile(BackboneAdam(1e-3, backbone_variables=backbone.trainable_variables,
    ...                            multiplier=0.1), loss=...)
"""

from __future__ import annotations

from typing import Any

import keras

from maivar_tf.models.backbones import build_backbone, output_dim
from maivar_tf.models.heads import AUDIO_INPUT, VIDEO_INPUT

#: Input names of the end-to-end models (the keys of the TFRecord pipeline's input dicts);
#: cached audio features keep the heads' :data:`~maivar_tf.models.heads.AUDIO_INPUT`.
FRAMES_INPUT = "frames"
AUDIO_IMAGE_INPUT = "audio_image"
#: The stages :func:`build_stage_model` builds (Algorithm 1's three heads).
STAGES = ("audio_mlp", "vmlp", "fusion")


# ----------------------------------------------------------------------------- layers


@keras.saving.register_keras_serializable(package="maivar_tf")
class FoldSegments(keras.layers.Layer):
    """Segments into the batch: ``[B, K, H, W, C] -> [B*K, H, W, C]`` (clip-major order).

    A reshape, not ``TimeDistributed``: the backbone sees one batch of ``B*K`` images. No
    weights and no casting (uint8 frames stay uint8).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(autocast=False, **kwargs)

    def call(self, inputs):
        return keras.ops.reshape(inputs, (-1, *inputs.shape[2:]))

    def compute_output_shape(self, input_shape):
        b, k = input_shape[0], input_shape[1]
        return (None if b is None or k is None else b * k, *input_shape[2:])


@keras.saving.register_keras_serializable(package="maivar_tf")
class UnfoldSegments(keras.layers.Layer):
    """The inverse of :class:`FoldSegments` on features: ``[B*K, D] -> [B, K, D]``.

    Args:
        num_segments: K.
        **kwargs: standard layer arguments (``name``).

    Raises:
        ValueError: ``num_segments`` < 1.
    """

    def __init__(self, num_segments: int, **kwargs: Any) -> None:
        super().__init__(autocast=False, **kwargs)
        if int(num_segments) < 1:
            raise ValueError(f"UnfoldSegments.num_segments: {num_segments}; allowed: >= 1")
        self.num_segments = int(num_segments)

    def call(self, inputs):
        return keras.ops.reshape(inputs, (-1, self.num_segments, *inputs.shape[1:]))

    def compute_output_shape(self, input_shape):
        n = input_shape[0]
        return (None if n is None else n // self.num_segments, self.num_segments,
                *input_shape[1:])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_segments": self.num_segments}


@keras.saving.register_keras_serializable(package="maivar_tf")
class ToFloat32(keras.layers.Layer):
    """Casts to float32, values unchanged: uint8 images in, and a mixed-precision backbone's
    features out (the heads then see what the feature path's float32 features are)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, inputs):
        return keras.ops.cast(inputs, "float32")

    def compute_output_shape(self, input_shape):
        return input_shape


# ----------------------------------------------------------------------------- building


def build_training_backbone(kind: str, weights_path: str, image_size: int, *,
                            architecture: str | None = None,
                            **hyperparameters) -> keras.Model:
    """A backbone to fine-tune: unfolded BatchNorm, built under the current dtype policy.

    :func:`maivar_tf.models.backbones.build_backbone` with ``fold_batch_norm=False`` and
    ``precision=None``: built under the global Keras policy as it stands (an explicit
    ``precision`` would reset it to float32 or ``mixed_bfloat16``): after
    :func:`maivar_tf.distribute.configure_precision` set ``mixed_float16`` the backbone
    computes in float16 with float32 variables. Its outputs are cast to float32 by
    :func:`build_stage_model`; the model itself is the plain backbone, so its weights save
    and load exactly as :func:`~maivar_tf.models.backbones.build_backbone`'s.

    Args:
        kind: ``video`` or ``audio``.
        weights_path: ``none``, ``imagenet`` (audio only) or a weights file.
        image_size: the square input side (video: the crop size).
        architecture: a ``model.video_backbone`` / ``model.audio_backbone`` value (default
            BNInception, InceptionResNetV2).
        **hyperparameters: passed to the builder (e.g. BNInception's ``blocks``).

    Raises:
        ValueError: an unknown kind or architecture, or an image size the backbone refuses.
        WeightsError, FileNotFoundError: see the builders.
    """
    return build_backbone(kind, weights_path, int(image_size), architecture=architecture,
                          precision=None, fold_batch_norm=False, **hyperparameters)


def _head_inputs(head: keras.Model) -> dict[str, tuple]:
    """The head's input names -> shapes (batch axis dropped)."""
    return {t.name: tuple(t.shape[1:]) for t in head.inputs}


def _check_width(head_inputs: dict[str, tuple], key: str, shape: tuple, what: str) -> None:
    if key not in head_inputs:
        raise ValueError(f"{what}: the head takes {sorted(head_inputs)}, not {key!r}")
    if head_inputs[key] != shape:
        raise ValueError(f"{what}: the head's {key!r} input is {head_inputs[key]} but the "
                         f"backbone gives {shape}")


def _video_features(frames_in, backbone: keras.Model, num_segments: int, crop_size: int):
    """uint8 frames ``[B, K, c, c, 3]`` -> float32 segment features ``[B, K, D]``."""
    x = FoldSegments(name="fold_segments")(frames_in)
    x = ToFloat32(name="frames_float32")(x)
    x = ToFloat32(name="video_features_float32")(backbone(x))
    return UnfoldSegments(num_segments, name="unfold_segments")(x)


def _audio_features(audio_in, backbone: keras.Model):
    """uint8 audio-images ``[B, S, S, 3]`` -> float32 features ``[B, Da]``."""
    x = ToFloat32(name="audio_image_float32")(audio_in)
    return ToFloat32(name="audio_features_float32")(backbone(x))


def build_stage_model(stage: str, head: keras.Model, *,
                      video_backbone: keras.Model | None = None,
                      audio_backbone: keras.Model | None = None, num_segments: int,
                      crop_size: int, image_size: int, name: str | None = None) -> keras.Model:
    """One stage of Algorithm 1 trained end to end: the backbone(s) in front of ``head``.

    Args:
        stage: ``audio_mlp``, ``vmlp`` or ``fusion``.
        head: the stage's head (:func:`~maivar_tf.models.heads.build_audio_mlp`,
            :func:`~maivar_tf.models.heads.build_video_mlp` or a
            :func:`~maivar_tf.models.fusion.build_fusion` model on ``video_features`` and
            ``audio_features``), nested as a layer: ``model.get_layer(head.name) is head``.
        video_backbone: ``[N, c, c, 3]`` RGB 0..255 -> ``[N, Dv]`` (``vmlp`` and ``fusion``).
        audio_backbone: ``[N, S, S, 3]`` RGB 0..255 -> ``[N, Da]`` (``audio_mlp``; for
            ``fusion`` optional: None takes cached ``audio_features`` instead of audio-images).
        num_segments: K, the segments per clip.
        crop_size: c, the side of the frames (already cropped by the input pipeline).
        image_size: S, the side of the audio-images.
        name: the model name (default ``end_to_end_<stage>``).

    Returns:
        A functional model on a dict of inputs: ``{"audio_image"}`` (``audio_mlp``),
        ``{"frames"}`` (``vmlp``), ``{"frames", "audio_image" | "audio_features"}``
        (``fusion``); images uint8, features float32; the head's float32 logits ``[B, C]``.

    Raises:
        ValueError: an unknown stage, a missing backbone, or a head whose inputs do not take
            the backbones' features (names, K or widths).
    """
    if stage not in STAGES:
        raise ValueError(f"end-to-end stage {stage!r}; allowed: {', '.join(STAGES)}")
    if stage != "audio_mlp" and video_backbone is None:
        raise ValueError(f"end-to-end stage {stage!r} needs the video backbone")
    if stage == "audio_mlp" and audio_backbone is None:
        raise ValueError("end-to-end stage 'audio_mlp' needs the audio backbone")
    k, c, s = int(num_segments), int(crop_size), int(image_size)
    wanted, inputs, features = _head_inputs(head), {}, {}
    if stage != "audio_mlp":
        dim = output_dim(video_backbone, (c, c, 3))
        _check_width(wanted, VIDEO_INPUT, (k, dim), f"end-to-end {stage}")
        inputs[FRAMES_INPUT] = keras.Input((k, c, c, 3), dtype="uint8", name=FRAMES_INPUT)
        features[VIDEO_INPUT] = _video_features(inputs[FRAMES_INPUT], video_backbone, k, c)
    if stage != "vmlp":
        if audio_backbone is None:
            dim = wanted.get(AUDIO_INPUT, (None,))[-1]
            inputs[AUDIO_INPUT] = keras.Input((dim,), dtype="float32", name=AUDIO_INPUT)
            features[AUDIO_INPUT] = inputs[AUDIO_INPUT]
        else:
            dim = output_dim(audio_backbone, (s, s, 3))
            inputs[AUDIO_IMAGE_INPUT] = keras.Input((s, s, 3), dtype="uint8",
                                                    name=AUDIO_IMAGE_INPUT)
            features[AUDIO_INPUT] = _audio_features(inputs[AUDIO_IMAGE_INPUT], audio_backbone)
        _check_width(wanted, AUDIO_INPUT, (dim,), f"end-to-end {stage}")
    if set(wanted) != set(features):
        raise ValueError(f"end-to-end {stage}: the head takes {sorted(wanted)}; this stage "
                         f"gives {sorted(features)}")
    logits = head(features if stage == "fusion" else next(iter(features.values())))
    return keras.Model(inputs, logits, name=name or f"end_to_end_{stage}")


# ----------------------------------------------------------------------------- fine-tuning


def batch_norms(model: keras.layers.Layer) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization of ``model`` in layer order, nested models flattened."""
    out = []
    for layer in getattr(model, "layers", ()):
        if isinstance(layer, keras.layers.BatchNormalization):
            out.append(layer)
        else:
            out.extend(batch_norms(layer))
    return out


def set_finetune(backbone: keras.Model, trainable: bool, *, partial_bn: bool,
                 num_replicas: int = 1) -> dict[str, Any]:
    """Freezes ``backbone`` or makes it trainable, with TSN's partial BatchNorm.

    Frozen (``trainable=False``): no trainable variables, and every BatchNorm normalises with
    its moving statistics even in ``training=True`` calls (Keras uses batch statistics only
    when the layer itself is trainable), so the backbone computes what feature extraction
    computed. Trainable: every layer trains; with ``partial_bn`` every BatchNorm but the first
    (in layer order) is frozen, statistics and ``gamma``/``beta`` alike (Wang et al. 2016's
    partial BN, which keeps the ImageNet statistics of the deeper layers on a small dataset).
    With ``num_replicas > 1`` the BatchNorms that still train compute their batch statistics
    over the global batch (``synchronized``), so every replica's moving statistics stay equal.

    Call it before ``compile`` (a compiled model's train function keeps the variables it was
    traced with).

    Args:
        backbone: the backbone (a model from :func:`build_training_backbone`).
        trainable: fine-tune it.
        partial_bn: ``train.partial_bn`` (ignored when frozen).
        num_replicas: the strategy's ``num_replicas_in_sync``.

    Returns:
        ``{"trainable": bool, "batch_norms": n, "trainable_batch_norms": m}``.
    """
    backbone.trainable = bool(trainable)
    norms = batch_norms(backbone)
    for i, layer in enumerate(norms):
        layer.trainable = bool(trainable) and (i == 0 or not partial_bn)
        layer.synchronized = layer.trainable and int(num_replicas) > 1
    return {"trainable": bool(trainable), "batch_norms": len(norms),
            "trainable_batch_norms": sum(layer.trainable for layer in norms)}


@keras.saving.register_keras_serializable(package="maivar_tf")
class BackboneAdam(keras.optimizers.Adam):
    """Adam whose backbone variables step with ``multiplier`` times the learning rate.

    ``train.backbone_lr_multiplier``: the backbone's variables (identified by object identity
    when the optimizer is built) move with ``learning_rate * multiplier``, every other
    variable (the head's) with ``learning_rate``. The moments are Adam's, per variable, so a
    backbone variable moves exactly as it would under ``Adam(learning_rate * multiplier)``.
    Works under ``tf.distribute`` (the indices are looked up through Keras' distributed-aware
    variable keys). ``weight_decay``, if any, is not scaled.

    The variable list is not serialisable: ``get_config`` records ``multiplier`` only, and an
    optimizer rebuilt from its config treats every variable as a head variable until it is
    built anew in code with ``backbone_variables``.

    Args:
        learning_rate: the head's learning rate (a float or a schedule).
        backbone_variables: the backbones' variables (``backbone.trainable_variables``).
        multiplier: the backbones' learning-rate factor.
        **kwargs: other ``keras.optimizers.Adam`` arguments.

    Raises:
        ValueError: a negative multiplier.
    """

    def __init__(self, learning_rate=0.001, *, backbone_variables=(), multiplier: float = 1.0,
                 **kwargs: Any) -> None:
        kwargs.setdefault("name", "backbone_adam")
        super().__init__(learning_rate=learning_rate, **kwargs)
        if float(multiplier) < 0:
            raise ValueError(f"BackboneAdam.multiplier: {multiplier}; allowed: >= 0")
        self.multiplier = float(multiplier)
        # ids, not the variables: a list of variables would be tracked into checkpoints
        self._backbone_ids = frozenset(id(v) for v in backbone_variables)
        self._backbone_indices = frozenset()

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._backbone_indices = frozenset(i for i, v in enumerate(var_list)
                                           if id(v) in self._backbone_ids)

    @property
    def backbone_indices(self) -> tuple[int, ...]:
        """Positions of the backbone variables in the built variable list."""
        return tuple(sorted(self._backbone_indices))

    def update_step(self, gradient, variable, learning_rate):
        if self._get_variable_index(variable) in self._backbone_indices:
            learning_rate = keras.ops.cast(learning_rate, variable.dtype) * keras.ops.cast(
                self.multiplier, variable.dtype)
        super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "multiplier": self.multiplier}
