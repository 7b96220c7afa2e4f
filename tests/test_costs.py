"""MAC counts (maivar_tf.costs) against hand-computed values and published figures.

Tiny models are counted by hand from their shapes; the full-size BNInception and ResNet18 are
checked against model-zoo figures (the references are named in each test).
"""

from __future__ import annotations

import keras
import pytest

from maivar_tf.costs import backbone_macs, count_macs, layer_macs


def _model(inputs, outputs, name="m"):
    return keras.Model(inputs, outputs, name=name)


def test_conv2d_strides_padding_and_groups():
    x = keras.Input((8, 8, 4))
    same = keras.layers.Conv2D(6, 3, strides=2, padding="same", name="same")(x)  # 4x4x6
    valid = keras.layers.Conv2D(6, 3, strides=2, padding="valid", groups=2,
                                name="grouped")(x)  # 3x3x6, 2 input channels per group
    y = keras.layers.BatchNormalization(name="bn")(same)
    y = keras.layers.ReLU()(y)
    y = keras.layers.MaxPooling2D(2)(y)
    y = keras.layers.Add()([keras.layers.GlobalAveragePooling2D()(y),
                            keras.layers.GlobalAveragePooling2D()(valid)])
    model = _model(x, y)
    assert layer_macs(model) == {"same": 4 * 4 * 6 * 9 * 4, "grouped": 3 * 3 * 6 * 9 * 2}
    assert count_macs(model) == 3456 + 972


def test_depthwise_separable_and_dense_on_leading_dims():
    x = keras.Input((5, 5, 3))
    d = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
    s = keras.layers.SeparableConv2D(8, 3, name="sep")(x)  # valid: 3x3
    seq = keras.Input((5, 7))  # [B, K, D]
    e = keras.layers.Dense(3, name="dense")(seq)
    model = _model([x, seq], [d, s, e])
    assert layer_macs(model) == {
        "dw": 5 * 5 * 6 * 9,                  # one 3x3 window per output element
        "sep": 3 * 3 * 3 * 9 + 3 * 3 * 3 * 8,  # depthwise + pointwise
        "dense": 5 * 7 * 3,                   # K x D x U
    }


def test_nested_model_counts_once_per_call():
    inner_in = keras.Input((4,))
    inner = _model(inner_in, keras.layers.Dense(3, name="proj")(inner_in), name="inner")
    x = keras.Input((4,))
    a = inner(x)
    b = inner(keras.layers.Dense(4, name="pre")(x))
    out = keras.layers.Dense(2, name="head")(keras.layers.Concatenate()([a, b]))
    model = _model(x, out)
    assert count_macs(inner) == 12
    assert layer_macs(model) == {"pre": 16, "inner/proj": 24, "head": 12}
    assert count_macs(model) == 52
    outer = _model(x, model(x), name="outer")  # two levels
    assert layer_macs(outer) == {"m/pre": 16, "m/inner/proj": 24, "m/head": 12}


def test_dynamic_shapes_and_subclassed_models_are_refused():
    x = keras.Input((None, None, 3))
    model = _model(x, keras.layers.Conv2D(2, 3, name="c")(x))
    with pytest.raises(ValueError, match="layer 'c' has a dynamic shape.*static input shape"):
        count_macs(model)

    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="not a functional Keras model"):
        count_macs(Sub(name="sub"))
    with pytest.raises(TypeError, match=r"backbone_macs\(kind, image_size"):
        backbone_macs("audio", "resnet18", 128)


def test_bn_inception_at_224_matches_the_reference_figure():
    """BNInception (the reference block table) per 224x224 frame.

    Reference: OpenVINO Open Model Zoo, ``googlenet-v2`` (the Caffe BN-Inception of Ioffe &
    Szegedy 2015, 224x224 BGR input), https://docs.openvino.ai/2023.1/omz_models_model_googlenet_v2.html:
    "GFLOPs 4.058". Open Model Zoo counts 2 FLOPs per multiply-accumulate (its resnet-50 is
    8.2 GFLOPs, mobilenet-v2 0.876), so the reference is 2.029 G MACs; it includes the 1024 x
    1000 classifier (1.0 M MACs), which the backbone here does not have. The first layer is
    checked by hand: 112 x 112 x 64 outputs x 7 x 7 x 3.
    """
    from maivar_tf.models.backbones import build_backbone

    reference = 4.058e9 / 2 - 1024 * 1000
    model = build_backbone("video", "none", 224)
    per_layer = layer_macs(model)
    assert per_layer["conv1_7x7_s2"] == 112 * 112 * 64 * 7 * 7 * 3
    assert len(per_layer) == 69  # 3 stem convolutions + the 66 of the ten inception blocks
    macs = backbone_macs("video", 224)
    assert macs == sum(per_layer.values())
    assert abs(macs / reference - 1) < 0.05
    assert backbone_macs("video", 224, "bn_inception") == macs  # cached, same key


def test_resnet18_at_224_matches_torchvision():
    """ResNet18 per 224x224 image against torchvision's model card,
    https://pytorch.org/vision/stable/models/generated/torchvision.models.resnet18: "GFLOPS
    1.81" (torchvision counts one multiply-add as one operation: its ResNet50 is 4.09); the
    512 x 1000 classifier (0.5 M) is not in the backbone here."""
    macs = backbone_macs("audio", 224, "resnet18")
    assert abs(macs / (1.81e9 - 512 * 1000) - 1) < 0.01
    # the convolutions scale with the area: 128 px is (128 / 224)^2 of it, to 1%
    assert abs(backbone_macs("audio", 128, "resnet18") / macs - (128 / 224) ** 2) < 0.01
