"""The audio-image backbones ``model.audio_backbone`` chooses from, one table and one builder.

MAiVAR (Shaikh et al. 2024) encodes audio-images with InceptionResNetV2; its backbone ablation
(Sec. 5.2.1, Fig. 6) compares ResNet18/ResNet101 and EfficientNet, where the ResNets did better.
:data:`AUDIO_BACKBONE_TABLE` lists every choice (the config's :data:`maivar_tf.config.AUDIO_BACKBONES`)
with its feature width and preprocessing:

=========================== =========================== ===================== ==============
``model.audio_backbone``    network                     preprocessing         features
=========================== =========================== ===================== ==============
``inception_resnet_v2``     keras.applications          ``tf``: x/127.5 - 1   1536 (299 only)
``resnet50/101/152``        keras.applications ResNet   ``caffe``: BGR - mean 2048
``resnet50/101/152_v2``     keras.applications ResNetV2 ``tf``                2048
``efficientnet_b0`` .. b7   keras.applications          in the model (x/255,  1280 ... 2560
                                                        ImageNet mean/std)
``resnet18``                :mod:`.resnet18` (torch     ``torch``: x/255,     512
                            names)                      ImageNet mean/std
``mobilenet_v3_small``      keras.applications          in the model          576
                            MobileNetV3Small            (x/127.5 - 1)
=========================== =========================== ===================== ==============

Every backbone takes RGB 0..255 audio-images and applies its own ``preprocess_input`` as its
first layer (the modes of ``keras.applications.imagenet_utils.preprocess_input``), and ends in
global average pooling. Weights are ``none``, ``imagenet`` (Keras' no-top file, downloaded into
the Keras cache; offline the error says which file to copy where) or a weights file: a
``.weights.h5`` saved from the backbone, or Keras' legacy ImageNet ``.h5``. ResNet18 has no
Keras ImageNet file: its ``imagenet`` is torchvision's checkpoint converted with
``maivar convert-weights --arch resnet18``.

``mobilenet_v3_small`` (Howard et al. 2019, width 1.0, not minimalistic) is the light preview
encoder of ``model.selection: audio_topk`` (``model.preview_backbone``): about 18 M MACs per
128 px per-segment audio-image against 0.66 G for one 128 px BNInception frame
(:mod:`maivar_tf.costs`). Keras builds its input scaling into the model
(``include_preprocessing=True``: a ``Rescaling`` x/127.5 - 1, the ``tf`` mode;
``keras.applications.mobilenet_v3.preprocess_input`` is the identity), so it takes RGB 0..255
like every other row, and its legacy ImageNet ``.h5`` loads as a weights file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras

from maivar_tf.artifacts import DEFAULT_AUDIO_BACKBONE  # the paper's; shards keep their names
from maivar_tf.models import inception_resnet_v2 as irv2
from maivar_tf.models.bn_inception import TSNPreprocessing
from maivar_tf.models.resnet18 import build_resnet18, torchvision_preprocessing
from maivar_tf.models.weights import (
    WEIGHTS_IMAGENET,
    WeightsError,
    load_weights_file,
    parse_weights_spec,
)

#: ``keras.applications.imagenet_utils.preprocess_input`` caffe mode: BGR minus these means.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
#: The smallest input side of the ``keras.applications`` backbones without their top.
MIN_IMAGE_SIZE = 32
RESNET18_IMAGENET_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
_KERAS_WEIGHTS = {"resnet": "https://storage.googleapis.com/tensorflow/keras-applications/resnet/",
                  "efficientnet": "https://storage.googleapis.com/keras-applications/",
                  "mobilenet_v3":
                      "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/"}


@dataclass(frozen=True)
class AudioBackbone:
    """One choice of ``model.audio_backbone``.

    Args:
        name: the config value.
        application: the ``keras.applications`` function (``""`` for ResNet18).
        feature_dim: the width of the pooled feature.
        preprocessing: ``tf``, ``caffe``, ``torch`` (the ``preprocess_input`` modes),
            ``efficientnet`` (inside the application: x/255, ImageNet mean/std) or
            ``mobilenet_v3`` (inside the application: x/127.5 - 1).
        family: the ``keras.applications`` module (``resnet``, ``resnet_v2``, ...).
    """

    name: str
    application: str
    feature_dim: int
    preprocessing: str
    family: str

    @property
    def imagenet_file(self) -> str:
        """Keras' ImageNet no-top file name (``""`` where there is none)."""
        if self.family in ("resnet", "resnet_v2"):
            return f"{self.application.lower()}_weights_tf_dim_ordering_tf_kernels_notop.h5"
        if self.family == "efficientnet":
            return f"{self.application.lower()}_notop.h5"
        if self.family == "mobilenet_v3":  # width 1.0, not minimalistic
            size = self.application.removeprefix("MobileNetV3").lower()
            return f"weights_mobilenet_v3_{size}_224_1.0_float_no_top_v2.h5"
        return irv2.IMAGENET_NOTOP_FILE if self.family == "inception_resnet_v2" else ""

    @property
    def imagenet_url(self) -> str:
        """Where Keras downloads :attr:`imagenet_file` from (torchvision's checkpoint for
        ResNet18)."""
        if self.family == "resnet18":
            return RESNET18_IMAGENET_URL
        if self.family == "inception_resnet_v2":
            return irv2.IMAGENET_NOTOP_URL
        base = _KERAS_WEIGHTS.get(self.family, _KERAS_WEIGHTS["resnet"])
        return base + self.imagenet_file


def _table() -> dict[str, AudioBackbone]:
    rows = [AudioBackbone("inception_resnet_v2", "InceptionResNetV2", irv2.AUDIO_FEATURE_DIM,
                          "tf", "inception_resnet_v2"),
            AudioBackbone("resnet18", "", 512, "torch", "resnet18")]
    for depth in (50, 101, 152):
        rows.append(AudioBackbone(f"resnet{depth}", f"ResNet{depth}", 2048, "caffe", "resnet"))
    for depth in (50, 101, 152):
        rows.append(AudioBackbone(f"resnet{depth}_v2", f"ResNet{depth}V2", 2048, "tf",
                                  "resnet_v2"))
    dims = (1280, 1280, 1408, 1536, 1792, 2048, 2304, 2560)  # round_filters(1280) per B0..B7
    for b, dim in enumerate(dims):
        rows.append(AudioBackbone(f"efficientnet_b{b}", f"EfficientNetB{b}", dim,
                                  "efficientnet", "efficientnet"))
    rows.append(AudioBackbone("mobilenet_v3_small", "MobileNetV3Small", 576, "mobilenet_v3",
                              "mobilenet_v3"))
    return {r.name: r for r in rows}


#: Every audio backbone by its ``model.audio_backbone`` name.
AUDIO_BACKBONE_TABLE: dict[str, AudioBackbone] = _table()


def audio_backbone_info(name: str) -> AudioBackbone:
    """The table row of ``name``.

    Raises:
        ValueError: an unknown name (the allowed ones are listed).
    """
    if name not in AUDIO_BACKBONE_TABLE:
        raise ValueError(f"audio backbone {name!r}; allowed: {', '.join(AUDIO_BACKBONE_TABLE)}")
    return AUDIO_BACKBONE_TABLE[name]


def preprocessing_layer(name: str) -> keras.layers.Layer | None:
    """The layer that turns RGB 0..255 into the backbone's input (None: inside the model)."""
    mode = audio_backbone_info(name).preprocessing
    if mode == "tf":
        return keras.layers.Rescaling(scale=1.0 / 127.5, offset=-1.0, name="preprocessing")
    if mode == "caffe":
        return TSNPreprocessing(mean=CAFFE_BGR_MEAN, name="preprocessing")
    if mode == "torch":
        return torchvision_preprocessing()
    return None


def _what(b: AudioBackbone) -> str:
    return f"audio backbone ({b.name})"


def _imagenet_error(b: AudioBackbone, e: Exception | None = None) -> WeightsError:
    if b.family == "resnet18":
        return WeightsError(
            f"{_what(b)}: there is no Keras ImageNet file for ResNet18; download torchvision's "
            f"{b.imagenet_url}, convert it with `maivar convert-weights --arch resnet18 "
            "resnet18-f37072fd.pth weights/resnet18` and set "
            "model.audio_weights=weights/resnet18.weights.h5")
    return WeightsError(
        f"{_what(b)}: could not fetch the ImageNet weights ({e}). Without network access, "
        f"download {b.imagenet_url} on another machine and copy it into ~/.keras/models/ "
        "(where Keras looks for it) or pass its path instead of 'imagenet', e.g. "
        f"model.audio_weights=/path/to/{b.imagenet_file}")


def build_audio_image_backbone(name: str = DEFAULT_AUDIO_BACKBONE, weights: str | Path = "none",
                               image_size: int | None = None) -> keras.Model:
    """Builds the audio backbone ``name`` on RGB 0..255 audio-images and loads ``weights``.

    Args:
        name: a ``model.audio_backbone`` value (:data:`AUDIO_BACKBONE_TABLE`).
        weights: ``none``, ``imagenet`` or a weights file (see the module doc).
        image_size: the square input side (default 299; InceptionResNetV2 takes 299 only,
            the others any side >= 32).

    Returns:
        A functional model ``[B, S, S, 3] -> [B, feature_dim]`` named ``name``.

    Raises:
        ValueError: an unknown name or an image size the backbone does not take.
        WeightsError, FileNotFoundError: an invalid spec, ImageNet weights that cannot be
            fetched, or a file that does not fit.
    """
    b = audio_backbone_info(name)
    size = irv2.IMAGE_SIZE if image_size is None else int(image_size)
    if b.family == "inception_resnet_v2":
        if size != irv2.IMAGE_SIZE:
            raise ValueError(f"audio image_size: {size}; allowed: {irv2.IMAGE_SIZE} "
                             "(InceptionResNetV2's input side)")
        return irv2.build_audio_backbone(weights)
    if size < MIN_IMAGE_SIZE:
        raise ValueError(f"audio image_size: {size}; allowed: >= {MIN_IMAGE_SIZE} ({name})")
    spec = parse_weights_spec(weights, allow_imagenet=True, what=_what(b))
    if spec == WEIGHTS_IMAGENET and b.family == "resnet18":
        raise _imagenet_error(b)
    if (b.family == "efficientnet" and isinstance(spec, Path)
            and not spec.name.lower().endswith((".weights.h5", ".keras"))):
        raise WeightsError(
            f"{_what(b)}: Keras' legacy ImageNet file {str(spec)!r} needs the ImageNet input "
            f"scaling that only weights='imagenet' builds; copy it into ~/.keras/models/ and "
            "set model.audio_weights=imagenet")
    if b.family == "resnet18":
        model = build_resnet18(size, name=name)
    else:
        model = _application(b, size, imagenet=spec == WEIGHTS_IMAGENET)
    if isinstance(spec, Path):
        load_weights_file(model, spec, what=_what(b))
    return model


def _application(b: AudioBackbone, size: int, imagenet: bool) -> keras.Model:
    """A ``keras.applications`` backbone behind its preprocessing layer, one plain input."""
    inputs = keras.Input((size, size, 3), name="audio_image")
    layer = preprocessing_layer(b.name)
    x = layer(inputs) if layer is not None else inputs
    build = getattr(keras.applications, b.application)
    try:
        application = build(include_top=False, weights="imagenet" if imagenet else None,
                            input_tensor=x, pooling="avg")
    except Exception as e:  # keras raises bare Exception for URL and HTTP failures
        if imagenet:
            raise _imagenet_error(b, e) from e
        raise
    return keras.Model(inputs, application.output, name=b.name)
