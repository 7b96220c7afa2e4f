"""BNInception video backbone: shapes, reference layer names, serialisation, weights by spec.

Numerical parity with the PyTorch reference lives in ``test_convert.py``; here the pooling
layers are also checked against PyTorch directly when it is installed.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from maivar_tf.models.bn_inception import (  # noqa: E402
    VIDEO_FEATURE_DIM,
    BNInception,
    CeilMaxPooling2D,
    TSNPreprocessing,
    build_video_backbone,
)
from maivar_tf.models.weights import WeightsError, parse_weights_spec  # noqa: E402


def _expected_conv_names() -> list[str]:
    """The 69 convolutions of Cadene's / TSN's BNInception, by name."""
    names = ["conv1_7x7_s2", "conv2_3x3_reduce", "conv2_3x3"]
    for block in ("3a", "3b", "3c", "4a", "4b", "4c", "4d", "4e", "5a", "5b"):
        reduction = block in ("3c", "4e")
        parts = ([] if reduction else ["1x1"]) + [
            "3x3_reduce", "3x3", "double_3x3_reduce", "double_3x3_1", "double_3x3_2"
        ] + ([] if reduction else ["pool_proj"])
        names += [f"inception_{block}_{p}" for p in parts]
    return names


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return BNInception()


@pytest.fixture(scope="module")
def frames():
    return np.random.RandomState(0).randint(0, 256, (2, 224, 224, 3)).astype(np.uint8)


@pytest.fixture(scope="module")
def features(model, frames):
    return model.predict(frames, verbose=0)


def test_output_shape_and_dtype(features):
    out = features
    assert out.shape == (2, VIDEO_FEATURE_DIM) == (2, 1024)
    assert out.dtype == np.float32 and np.isfinite(out).all()


def test_feature_map_and_stage_shapes(model):
    fmap_model = BNInception(pooling=None, include_preprocessing=False)
    assert fmap_model.output_shape == (None, 7, 7, 1024)
    stages = {"conv1_relu_7x7": (112, 112, 64), "pool1_3x3_s2": (56, 56, 64),
              "conv2_relu_3x3": (56, 56, 192), "pool2_3x3_s2": (28, 28, 192),
              "inception_3a_output": (28, 28, 256), "inception_3b_output": (28, 28, 320),
              "inception_3c_output": (14, 14, 576), "inception_4c_output": (14, 14, 608),
              "inception_4e_output": (7, 7, 1056), "inception_5a_output": (7, 7, 1024),
              "inception_5b_output": (7, 7, 1024)}
    for name, shape in stages.items():
        assert tuple(model.get_layer(name).output.shape[1:]) == shape, name
    x = np.random.RandomState(1).randn(2, 224, 224, 3).astype(np.float32)
    assert fmap_model.predict(x, verbose=0).shape == (2, 7, 7, 1024)


def test_reference_layer_names(model):
    convs = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    bns = [layer.name for layer in model.layers
           if isinstance(layer, keras.layers.BatchNormalization)]
    expected = _expected_conv_names()
    assert len(expected) == 69
    assert sorted(convs) == sorted(expected)
    assert sorted(bns) == sorted(f"{n}_bn" for n in expected)
    for name in expected:
        conv = model.get_layer(name)
        assert conv.use_bias
        bn = model.get_layer(f"{name}_bn")
        assert bn.epsilon == pytest.approx(1e-5) and bn.momentum == pytest.approx(0.9)
    # Stride-2 layers as in the reference: the stem conv and the reduction blocks' 3x3s.
    strided = {layer.name for layer in model.layers
               if isinstance(layer, keras.layers.Conv2D) and layer.strides == (2, 2)}
    assert strided == {"conv1_7x7_s2", "inception_3c_3x3", "inception_3c_double_3x3_2",
                       "inception_4e_3x3", "inception_4e_double_3x3_2"}
    assert isinstance(model.get_layer("inception_5b_pool"), CeilMaxPooling2D)
    assert isinstance(model.get_layer("inception_5a_pool"), keras.layers.AveragePooling2D)
    assert model.count_params() == 10_290_272


def test_preprocessing_is_bgr_minus_mean(model, frames, features, tmp_path):
    plain = BNInception(include_preprocessing=False)
    model.save_weights(str(tmp_path / "w.weights.h5"))
    plain.load_weights(str(tmp_path / "w.weights.h5"))
    bgr = frames[..., ::-1].astype(np.float32) - np.array([104, 117, 128], np.float32)
    np.testing.assert_allclose(features, plain.predict(bgr, verbose=0), atol=1e-5)
    layer = TSNPreprocessing()
    np.testing.assert_allclose(layer(np.array([[[[10.0, 20.0, 30.0]]]])).numpy(),
                               [[[[30 - 104, 20 - 117, 10 - 128]]]])


def test_config_round_trip(model):
    config = model.get_config()
    assert config == {"include_preprocessing": True, "pooling": "avg", "image_size": 224,
                      "name": "bn_inception", "trainable": True}
    clone = BNInception.from_config(config)
    assert clone.get_config() == config
    assert [layer.name for layer in clone.layers] == [layer.name for layer in model.layers]
    other = BNInception(include_preprocessing=False, pooling=None, name="frames_map",
                        trainable=False)
    assert BNInception.from_config(other.get_config()).get_config() == {
        "include_preprocessing": False, "pooling": None, "image_size": 224,
        "name": "frames_map", "trainable": False}


def test_save_load_keras_round_trip(model, frames, features, tmp_path):
    path = tmp_path / "bn_inception.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # registered: no custom_objects needed
    assert type(loaded) is BNInception
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(loaded.predict(frames, verbose=0), features)


def test_weights_path_loading(model, frames, features, tmp_path):
    path = tmp_path / "bn.weights.h5"
    model.save_weights(str(path))
    loaded = build_video_backbone(str(path))
    np.testing.assert_array_equal(loaded.predict(frames, verbose=0), features)
    assert parse_weights_spec("none", allow_imagenet=False, what="video") is None


def test_weights_spec_errors(tmp_path):
    with pytest.raises(WeightsError, match="'imagenet' weights are not available"):
        build_video_backbone("imagenet")
    with pytest.raises(FileNotFoundError, match="missing.weights.h5"):
        build_video_backbone(str(tmp_path / "missing.weights.h5"))
    with pytest.raises(WeightsError, match="unknown type"):
        build_video_backbone("bninception.pth")  # a PyTorch file: convert it first
    with pytest.raises(ValueError, match="pooling"):
        BNInception(pooling="max")


def test_ceil_max_pool_matches_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.RandomState(0)
    for size in (7, 8, 14, 15, 56):
        for pool, stride, pad in ((3, 2, 0), (3, 1, 1), (3, 2, 1)):
            x = rng.randn(1, size, size, 2).astype(np.float32) - 3.0  # mostly negative
            got = CeilMaxPooling2D(pool, stride, pad)(x).numpy()
            want = torch.nn.functional.max_pool2d(
                torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), pool, stride, pad,
                ceil_mode=True).numpy().transpose(0, 2, 3, 1)
            assert got.shape == want.shape, (size, pool, stride, pad)
            np.testing.assert_array_equal(got, want)
