"""Backbone features: frames and audio-images -> feature vectors, one traced function each.

MAiVAR (Shaikh et al. 2024, Sec. 3.3-3.4) feeds its heads frozen features: BNInception (TSN)
turns each of the K segment frames into a vector, InceptionResNetV2 (or another audio backbone
of :mod:`maivar_tf.models.audio_backbones`, ``model.audio_backbone``) each audio-image.
:class:`BackboneFeatures` wraps a backbone in one ``tf.function`` per input shape (unknown
batch), and :func:`video_features` takes the centre crop, or TSN's ten crops averaged
(Wang et al. 2016), through :mod:`maivar_tf.ops`. Feature extraction, the serving module and
``maivar predict`` all go through these two, so a clip gets the same features everywhere.

Backbones are built from their weights spec (``none``, ``imagenet`` or a file) by
:func:`build_backbone`. Features from randomly initialised (``none``) backbones are only
meaningful with the very weights they came from: :func:`init_backbone` seeds them and saves
them once under ``<features_dir>/backbones/<kind>.weights.h5`` (``audio-<backbone>.weights.h5``
for an audio backbone other than the default; recorded in the
:class:`~maivar_tf.artifacts.BackboneSpec`), and :func:`restore_backbone` rebuilds a backbone,
whichever architecture its spec names, for serving.

Example:
    >>> fn = BackboneFeatures(build_backbone("video", "none", 224), (224, 224, 3))
    >>> video_features(fn, frames, crop_size=224).shape   # frames uint8 [B, K, H, W, 3]
    TensorShape([B, K, 1024])
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

import keras
import tensorflow as tf

from maivar_tf import ops
from maivar_tf.artifacts import BACKBONES_SUBDIR, BackboneSpec, backbone_weights_name
from maivar_tf.models import bn_inception
from maivar_tf.models.audio_backbones import (
    AUDIO_BACKBONE_TABLE,
    DEFAULT_AUDIO_BACKBONE,
    build_audio_image_backbone,
)
from maivar_tf.models.bn_inception import build_video_backbone
from maivar_tf.models.precision import check_precision, precision_scope
from maivar_tf.models.weights import WeightsError, save_weights_atomic

#: The default backbone of each kind: the architecture name its specs record.
ARCHITECTURES = {"video": "bn_inception", "audio": DEFAULT_AUDIO_BACKBONE}
#: The video backbones (``model.video_backbone``) -> their BNInception block table and stem.
VIDEO_BACKBONE_TABLE = {
    "bn_inception": {},
    "bn_inception_tiny": {"blocks": bn_inception.TINY_BLOCKS,
                          "stem_filters": bn_inception.TINY_STEM_FILTERS},
}
#: Images per backbone call when a caller bounds memory (ten crops of a large K, say).
MAX_IMAGES_PER_CALL = 256
#: Prefix of the architecture recorded for a model handed in by code.
INJECTED = "injected"


def _check_kind(kind: str) -> None:
    if kind not in ARCHITECTURES:
        raise ValueError(f"backbone kind {kind!r}; allowed: {', '.join(ARCHITECTURES)}")


def _architecture(kind: str, architecture: str | None) -> str:
    """The architecture of a ``kind`` backbone (its default for None), checked."""
    _check_kind(kind)
    arch = architecture or ARCHITECTURES[kind]
    allowed = AUDIO_BACKBONE_TABLE if kind == "audio" else VIDEO_BACKBONE_TABLE
    if arch not in allowed:
        raise ValueError(f"{kind} backbone {arch!r}; allowed: {', '.join(allowed)}")
    return arch


def output_dim(model: keras.Model, image_shape: Sequence[int]) -> int:
    """The feature width ``D`` of a backbone ``[B, *image_shape] -> [B, D]``.

    Raises:
        ValueError: the backbone does not output one vector per image.
    """
    try:
        shape = model.output_shape
    except (AttributeError, ValueError, RuntimeError):
        shape = None
    if not shape or isinstance(shape, list) or shape[-1] is None:
        shape = model.compute_output_shape((1, *image_shape))
    if len(shape) != 2:
        raise ValueError(f"backbone {model.name!r} must output [B, D] features; its output "
                         f"shape is {shape}")
    return int(shape[-1])


class BackboneFeatures(tf.Module):
    """A backbone as one traced function: images ``[N, H, W, 3]`` -> float32 ``[N, D]``.

    The batch dimension of the trace is unknown, so every batch size (a smaller last batch
    too) reuses it; it can be called eagerly or from inside another ``tf.function`` (a
    serving signature). Holding the model as an attribute makes its variables part of any
    ``tf.Module`` that holds this object.

    Args:
        model: a backbone taking RGB 0..255 images and returning ``[N, D]``.
        image_shape: ``(H, W, 3)``, the input shape the function is traced for.
    """

    def __init__(self, model: keras.Model, image_shape: Sequence[int]):
        super().__init__(name="backbone_features")
        self.model = model
        self.image_shape = tuple(int(d) for d in image_shape)
        self.dim = output_dim(model, self.image_shape)
        self.features = tf.function(
            self._features, input_signature=[tf.TensorSpec([None, *self.image_shape],
                                                           tf.float32)], autograph=False)

    def _features(self, images):
        return tf.cast(self.model(images, training=False), tf.float32)

    def __call__(self, images, max_images: int | None = None) -> tf.Tensor:
        """Features of ``images`` (uint8 or float, 0..255), float32 ``[N, D]``.

        Args:
            images: ``[N, H, W, 3]``.
            max_images: when ``N`` is known and larger, call the backbone on chunks of this
                many images (bounds memory; the features are the same).
        """
        images = tf.convert_to_tensor(images)
        n = images.shape[0]
        if max_images is None or n is None or n <= max_images:
            return self.features(tf.cast(images, tf.float32))
        return tf.concat([self.features(tf.cast(images[i:i + max_images], tf.float32))
                          for i in range(0, n, max_images)], axis=0)


def video_features(fn: BackboneFeatures, frames, crop_size: int, ten_crop: bool = False,
                   max_images: int | None = None) -> tf.Tensor:
    """Segment features of clips: uint8 ``[B, K, H, W, 3]`` -> float32 ``[B, K, D]``.

    The video backbone sees the centre ``crop_size`` square of every frame
    (:func:`maivar_tf.ops.center_crop`), or TSN's ten crops (:func:`maivar_tf.ops.ten_crop`)
    whose features are averaged. Frames that already are ``crop_size`` squares are their own
    centre crop.

    Args:
        fn: the video backbone's :class:`BackboneFeatures`.
        frames: uint8 ``[B, K, H, W, 3]`` with ``H, W >= crop_size``.
        crop_size: the crop side.
        ten_crop: average over the ten crops instead of the centre one.
        max_images: see :meth:`BackboneFeatures.__call__`.
    """
    frames = tf.convert_to_tensor(frames)
    k = frames.shape[1] if frames.shape[1] is not None else tf.shape(frames)[1]
    c = int(crop_size)
    crops = ops.ten_crop(frames, c) if ten_crop else ops.center_crop(frames, c)
    feats = fn(tf.reshape(crops, [-1, c, c, 3]), max_images=max_images)
    if not ten_crop:
        return tf.reshape(feats, [-1, k, fn.dim])
    return tf.reduce_mean(tf.reshape(feats, [10, -1, k, fn.dim]), axis=0)


# ----------------------------------------------------------------------------- building


def build_backbone(kind: str, weights: str = "none", image_size: int | None = None, *,
                   architecture: str | None = None, precision: str | None = "float32",
                   fold_batch_norm: bool | None = None, **hyperparameters) -> keras.Model:
    """Builds the ``video`` (BNInception) or an ``audio`` backbone.

    Args:
        kind: ``video`` or ``audio``.
        weights: ``none``, ``imagenet`` (audio only) or a weights file.
        image_size: the square input side (video: the crop size; audio: 299 only for
            InceptionResNetV2, any side >= 32 for the others).
        architecture: the backbone (a ``model.video_backbone`` or ``model.audio_backbone``
            value; default BNInception, InceptionResNetV2).
        precision: ``float32`` or ``bfloat16`` (built under ``mixed_bfloat16``: float32
            weights, bfloat16 compute; :mod:`maivar_tf.models.precision`), or None: under the
            global Keras policy as it stands (a training run's ``mixed_float16`` or
            ``mixed_bfloat16``, :func:`maivar_tf.distribute.configure_precision`).
        fold_batch_norm: fold BNInception's BatchNorms into its convolutions, an inference
            graph (:mod:`maivar_tf.models.bn_folding`); ``None`` (the default) folds the video
            backbone of ``bfloat16`` builds, where the BatchNorms cost most. Pass ``False`` for
            a network to train.
        **hyperparameters: passed to the builder (e.g. BNInception's ``blocks``).

    Raises:
        ValueError: an unknown kind, architecture or precision, or an image size the backbone
            does not take.
        PrecisionError: ``bfloat16`` on hardware without native bfloat16.
        WeightsError, FileNotFoundError: see the builders.
    """
    arch = _architecture(kind, architecture)
    if precision is not None:
        check_precision(precision)
    scope = contextlib.nullcontext() if precision is None else precision_scope(precision)
    if kind == "video":
        size = {} if image_size is None else {"image_size": int(image_size)}
        table = {**VIDEO_BACKBONE_TABLE[arch], **hyperparameters}
        fold = precision == "bfloat16" if fold_batch_norm is None else fold_batch_norm
        if fold:  # folded in float32 from the float32 network, then built in `precision`
            from maivar_tf.models.bn_folding import fold_batch_norm as fold_network

            return fold_network(build_video_backbone(weights, **size, **table),
                                precision or "float32")
        with scope:
            return build_video_backbone(weights, **size, **table)
    with scope:
        return build_audio_image_backbone(arch, weights, image_size, **hyperparameters)


def backbone_spec(kind: str, weights: str, image_size: int, saved_weights: str | None = None,
                  *, architecture: str | None = None) -> BackboneSpec:
    """The :class:`BackboneSpec` of a backbone :func:`build_backbone` made."""
    return BackboneSpec.describe(_architecture(kind, architecture), weights, image_size,
                                 saved_weights)


def injected_spec(model: keras.Model, image_size: int) -> BackboneSpec:
    """The spec of a backbone handed in by code (told apart by its model name only)."""
    return BackboneSpec(f"{INJECTED}:{model.name}", INJECTED, int(image_size))


def saved_weights_path(kind: str, architecture: str | None = None) -> str:
    """Where :func:`init_backbone` saves random weights, relative to the features folder
    (``backbones/audio.weights.h5`` for the default, ``audio-<name>.weights.h5`` for the other
    audio backbones)."""
    arch = _architecture(kind, architecture)
    stem = kind if arch == ARCHITECTURES[kind] else f"{kind}-{arch}"
    return f"{BACKBONES_SUBDIR}/{backbone_weights_name(stem)}"


def init_backbone(kind: str, weights: str, image_size: int, features_dir: str | os.PathLike,
                  *, seed: int, architecture: str | None = None, precision: str = "float32",
                  **hyperparameters) -> tuple[keras.Model, BackboneSpec]:
    """The backbone a feature extraction uses, and its spec.

    Random (``none``) weights are drawn after ``keras.utils.set_random_seed(seed)`` and saved
    atomically under ``features_dir`` (:func:`saved_weights_path`); when that file exists (a
    resumed extraction) it is loaded instead, so every shard of a folder comes from the same
    weights and serving can rebuild them.

    Args:
        kind: ``video`` or ``audio``.
        weights: the config's weights spec.
        image_size: the input side.
        features_dir: the extraction's output folder.
        seed: the seed of random weights.
        architecture: see :func:`build_backbone`.
        precision: see :func:`build_backbone` (random weights are drawn in float32, the same
            values in either precision).
        **hyperparameters: see :func:`build_backbone`.
    """
    arch = {"architecture": _architecture(kind, architecture)}
    if weights != "none":
        model = build_backbone(kind, weights, image_size, **arch, precision=precision,
                               **hyperparameters)
        return model, backbone_spec(kind, weights, image_size, **arch)
    rel = saved_weights_path(kind, **arch)
    path = Path(features_dir) / rel
    if not path.is_file():
        keras.utils.set_random_seed(seed)
        model = build_backbone(kind, "none", image_size, **arch, **hyperparameters)
        save_weights_atomic(model, path)
        if precision == "float32":
            return model, backbone_spec(kind, "none", image_size, saved_weights=rel, **arch)
    model = build_backbone(kind, str(path), image_size, **arch, precision=precision,
                           **hyperparameters)
    return model, backbone_spec(kind, "none", image_size, saved_weights=rel, **arch)


def restore_backbone(spec: BackboneSpec, kind: str, features_dir: str | os.PathLike,
                     precision: str = "float32", **hyperparameters) -> keras.Model:
    """Rebuilds the backbone a set of features came from (for serving and predict).

    Loads :meth:`BackboneSpec.weights_to_load`: the weights saved beside the features, an
    unchanged weights file, or ImageNet; builds it in ``precision`` (:func:`build_backbone`).

    Raises:
        WeightsError: the backbone was handed in by code (or is unknown), or its weights are
            gone (random weights that were never saved, or a weights file that changed).
    """
    try:
        arch = _architecture(kind, spec.architecture)
    except ValueError as e:
        raise WeightsError(f"the {kind} backbone of the features in {os.fspath(features_dir)} "
                           f"is {spec.architecture!r}, not one this code builds ({e}): it "
                           "cannot be rebuilt from the features folder") from e
    weights = spec.weights_to_load(features_dir)
    if weights is None:
        raise WeightsError(
            f"cannot recover the {kind} backbone the features in {os.fspath(features_dir)} "
            f"were extracted with (weights {spec.weights!r}, saved copy "
            f"{spec.saved_weights or 'none'}): randomly initialised ('none') weights must be "
            "saved at extraction time and a weights file must be unchanged; re-run `maivar "
            "extract` into a fresh data.features_dir and retrain")
    return build_backbone(kind, weights, spec.image_size, architecture=arch, precision=precision,
                          **hyperparameters)
