"""ResNet18 (He et al. 2016) in Keras, with torchvision's layer names: an audio-image backbone.

MAiVAR's backbone ablation (Shaikh et al. 2024, Sec. 5.2.1, Fig. 6) compares InceptionResNetV2
with ResNet18, which ``keras.applications`` does not have. This is torchvision's ``resnet18``
without ``fc``: every weighted layer carries the name of the PyTorch module it stands for
(``conv1``, ``bn1``, ``layer2.0.conv1``, ``layer2.0.downsample.0``, ...), so a torchvision
state dict converts onto it key for key (:mod:`maivar_tf.convert_resnet`). To compute what
PyTorch computes:

* convolutions have no bias and pad explicitly and symmetrically (``ZeroPadding2D`` then
  ``valid``; Keras' ``same`` pads stride-2 convolutions on one side only);
* BatchNorm uses PyTorch's epsilon 1e-5;
* the stem max pool pads with zeros, which equals PyTorch's ``-inf`` padding after a ReLU;
* the model takes RGB 0..255 images and normalises them as torchvision's ImageNet models
  expect (``x / 255``, minus ``[0.485, 0.456, 0.406]``, over ``[0.229, 0.224, 0.225]``: a
  built-in ``Rescaling`` layer; ``keras.applications.imagenet_utils.preprocess_input`` mode
  ``torch``);
* the output is the global average of ``layer4``: 512-d.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

#: Width of the pooled ResNet18 feature (``layer4`` channels).
RESNET18_FEATURE_DIM = 512
#: torchvision's ImageNet normalisation (RGB, on 0..1 values).
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)
#: Blocks per stage and stage widths of ResNet18.
RESNET18_BLOCKS = (2, 2, 2, 2)
RESNET18_WIDTHS = (64, 128, 256, 512)
_BN_EPSILON = 1e-5  # torchvision's BatchNorm2d default


def torchvision_preprocessing(name: str = "preprocessing") -> keras.layers.Layer:
    """RGB 0..255 -> torchvision's normalised input, ``(x / 255 - mean) / std`` per channel."""
    return keras.layers.Rescaling(
        scale=[1.0 / (255.0 * s) for s in TORCHVISION_STD],
        offset=[-m / s for m, s in zip(TORCHVISION_MEAN, TORCHVISION_STD, strict=True)],
        name=name)


def _conv_bn(x, filters: int, kernel: int, stride: int, conv: str, bn: str, pad: int):
    if pad:
        x = keras.layers.ZeroPadding2D(pad, name=f"{conv}.pad")(x)
    x = keras.layers.Conv2D(filters, kernel, strides=stride, use_bias=False, name=conv)(x)
    return keras.layers.BatchNormalization(epsilon=_BN_EPSILON, name=bn)(x)


def _basic_block(x, filters: int, stride: int, prefix: str):
    """torchvision's ``BasicBlock``: two 3x3 conv-BNs, a projection shortcut when the shape
    changes, add, ReLU."""
    shortcut = x
    y = _conv_bn(x, filters, 3, stride, f"{prefix}.conv1", f"{prefix}.bn1", 1)
    y = keras.layers.ReLU(name=f"{prefix}.relu1")(y)
    y = _conv_bn(y, filters, 3, 1, f"{prefix}.conv2", f"{prefix}.bn2", 1)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, stride, f"{prefix}.downsample.0",
                            f"{prefix}.downsample.1", 0)
    y = keras.layers.Add(name=f"{prefix}.add")([y, shortcut])
    return keras.layers.ReLU(name=f"{prefix}.relu2")(y)


def resnet18_features(x, blocks: Sequence[int] = RESNET18_BLOCKS,
                      widths: Sequence[int] = RESNET18_WIDTHS):
    """The ResNet18 trunk on a normalised image tensor, global-average-pooled ``[B, widths[-1]]``.

    Args:
        x: the normalised NHWC input tensor.
        blocks: ``BasicBlock``\\ s per stage (``layer1`` ... ``layer4``).
        widths: channels per stage.
    """
    x = _conv_bn(x, widths[0], 7, 2, "conv1", "bn1", 3)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.ZeroPadding2D(1, name="maxpool.pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
    for stage, (n, filters) in enumerate(zip(blocks, widths, strict=True), start=1):
        for b in range(n):
            stride = 2 if (b == 0 and stage > 1) else 1
            x = _basic_block(x, filters, stride, f"layer{stage}.{b}")
    return keras.layers.GlobalAveragePooling2D(name="avgpool")(x)


def build_resnet18(image_size: int, *, include_preprocessing: bool = True,
                   name: str = "resnet18") -> keras.Model:
    """ResNet18 without its classifier: ``[B, S, S, 3] -> [B, 512]`` (random weights).

    Args:
        image_size: the square input side (at least 32).
        include_preprocessing: take RGB 0..255 (torchvision's normalisation in the model);
            otherwise the input is already normalised.
        name: the model name.
    """
    inputs = keras.Input((int(image_size), int(image_size), 3), name="audio_image")
    x = torchvision_preprocessing()(inputs) if include_preprocessing else inputs
    return keras.Model(inputs, resnet18_features(x), name=name)
