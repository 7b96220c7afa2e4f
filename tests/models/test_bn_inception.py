"""BNInception video backbone: the block table, serialisation, weights by spec, reference names.

Every test but one builds the tiny table (``tests.tiny_models.tiny_bn_inception``);
``test_reference_network`` builds the full network once and checks its stages, its 69
reference convolutions and their strides. Numerical parity with the PyTorch reference lives in
``test_convert.py``; here the pooling layers are also checked against PyTorch directly when it
is installed.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from maivar_tf.models.bn_inception import (  # noqa: E402
    REFERENCE_BLOCKS,
    REFERENCE_STEM_FILTERS,
    TINY_BLOCKS,
    TINY_IMAGE_SIZE,
    TINY_STEM_FILTERS,
    VIDEO_FEATURE_DIM,
    BNInception,
    CeilMaxPooling2D,
    TSNPreprocessing,
    build_video_backbone,
)
from maivar_tf.models.weights import WeightsError, parse_weights_spec  # noqa: E402
from tests.backbone_test_utils import run_backbone_test  # noqa: E402
from tests.tiny_models import TINY_BN_INCEPTION_DIM, tiny_bn_inception  # noqa: E402

TINY = {"blocks": TINY_BLOCKS, "stem_filters": TINY_STEM_FILTERS, "image_size": TINY_IMAGE_SIZE}
REFERENCE_BLOCK_NAMES = ("3a", "3b", "3c", "4a", "4b", "4c", "4d", "4e", "5a", "5b")


def _expected_conv_names(blocks=REFERENCE_BLOCK_NAMES, reductions=("3c", "4e")) -> list[str]:
    """The convolutions of Cadene's / TSN's BNInception (69 for the reference), by name."""
    names = ["conv1_7x7_s2", "conv2_3x3_reduce", "conv2_3x3"]
    for block in blocks:
        reduction = block in reductions
        parts = ([] if reduction else ["1x1"]) + [
            "3x3_reduce", "3x3", "double_3x3_reduce", "double_3x3_1", "double_3x3_2"
        ] + ([] if reduction else ["pool_proj"])
        names += [f"inception_{block}_{p}" for p in parts]
    return names


def _expected_strided(reductions) -> set[str]:
    """Stride-2 convolutions: the stem conv and the reduction blocks' 3x3s."""
    return {"conv1_7x7_s2"} | {f"inception_{b}_{p}" for b in reductions
                               for p in ("3x3", "double_3x3_2")}


def _check_layer_names(model, blocks, reductions) -> None:
    convs = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    bns = [layer.name for layer in model.layers
           if isinstance(layer, keras.layers.BatchNormalization)]
    expected = _expected_conv_names(blocks, reductions)
    assert sorted(convs) == sorted(expected)
    assert sorted(bns) == sorted(f"{n}_bn" for n in expected)
    for name in expected:
        assert model.get_layer(name).use_bias
        bn = model.get_layer(f"{name}_bn")
        assert bn.epsilon == pytest.approx(1e-5) and bn.momentum == pytest.approx(0.9)
    strided = {layer.name for layer in model.layers
               if isinstance(layer, keras.layers.Conv2D) and layer.strides == (2, 2)}
    assert strided == _expected_strided(reductions)


def _config(**overrides) -> dict:
    config = {"blocks": [list(row) for row in TINY_BLOCKS], "stem_filters": [4, 4, 8],
              "image_size": 32, "include_preprocessing": True, "pooling": "avg",
              "fold_batch_norm": False, "name": "bn_inception", "trainable": True}
    return {**config, **overrides}


@pytest.fixture(scope="module")
def frames():
    return np.random.RandomState(0).randint(0, 256, (2, 32, 32, 3)).astype(np.uint8)


def test_tiny_backbone(frames, tmp_path):
    run_backbone_test(BNInception, TINY, frames, (2, TINY_BN_INCEPTION_DIM), tmp_path,
                      expected_config=_config())


def test_tiny_feature_map_backbone(frames, tmp_path):
    bgr = frames[..., ::-1].astype(np.float32) - 120.0
    kwargs = {**TINY, "include_preprocessing": False, "pooling": None, "name": "frames_map",
              "trainable": False}
    # The .keras round trip of this class is test_tiny_backbone's; config and weights here.
    run_backbone_test(BNInception, kwargs, bgr, (2, 2, 2, TINY_BN_INCEPTION_DIM), tmp_path,
                      expected_config=_config(include_preprocessing=False, pooling=None,
                                              name="frames_map", trainable=False),
                      run_saving_test=False)


def test_tiny_layers_follow_the_table():
    model = tiny_bn_inception()
    _check_layer_names(model, ("3a", "3c", "5b"), ("3c",))
    stages = {"conv1_relu_7x7": (16, 16, 4), "pool1_3x3_s2": (8, 8, 4),
              "conv2_relu_3x3": (8, 8, 8), "pool2_3x3_s2": (4, 4, 8),
              "inception_3a_output": (4, 4, 16), "inception_3c_output": (2, 2, 24),
              "inception_5b_output": (2, 2, 16)}
    for name, shape in stages.items():
        assert tuple(model.get_layer(name).output.shape[1:]) == shape, name
    assert isinstance(model.get_layer("inception_3a_pool"), keras.layers.AveragePooling2D)
    assert isinstance(model.get_layer("inception_5b_pool"), CeilMaxPooling2D)


def test_preprocessing_is_bgr_minus_mean(frames, tmp_path):
    model = tiny_bn_inception()
    plain = tiny_bn_inception(include_preprocessing=False, seed=1)
    model.save_weights(str(tmp_path / "w.weights.h5"))
    plain.load_weights(str(tmp_path / "w.weights.h5"))
    bgr = frames[..., ::-1].astype(np.float32) - np.array([104, 117, 128], np.float32)
    np.testing.assert_allclose(model(frames, training=False), plain(bgr, training=False),
                               atol=1e-5)
    layer = TSNPreprocessing()
    np.testing.assert_allclose(layer(np.array([[[[10.0, 20.0, 30.0]]]])).numpy(),
                               [[[[30 - 104, 20 - 117, 10 - 128]]]])


def test_weights_path_loading(frames, tmp_path):
    model = tiny_bn_inception()
    path = tmp_path / "bn.weights.h5"
    model.save_weights(str(path))
    loaded = build_video_backbone(str(path), **TINY)
    np.testing.assert_array_equal(loaded(frames, training=False), model(frames, training=False))
    assert parse_weights_spec("none", allow_imagenet=False, what="video") is None
    # A file from another table does not fit (Keras warns about each skipped layer first).
    with pytest.raises(WeightsError, match="could not load Keras 3 weights"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        build_video_backbone(str(path), blocks=TINY_BLOCKS, stem_filters=(4, 4, 12))


def test_weights_spec_errors(tmp_path):
    with pytest.raises(WeightsError, match="'imagenet' weights are not available"):
        build_video_backbone("imagenet")
    with pytest.raises(FileNotFoundError, match="missing.weights.h5"):
        build_video_backbone(str(tmp_path / "missing.weights.h5"))
    with pytest.raises(WeightsError, match="unknown type"):
        build_video_backbone("bninception.pth")  # a PyTorch file: convert it first
    with pytest.raises(ValueError, match="pooling"):
        BNInception(pooling="max")


@pytest.mark.parametrize("kwargs,match", [
    ({"blocks": []}, r"blocks: empty"),
    ({"blocks": [("3a", 4, 4, 4, 4, 4, "avg", 4)]}, r"blocks\[0\].*8 values"),
    ({"blocks": [("3a", 4, 4, 4, 4, 4, "avg", 4, 1)] * 2}, r"blocks\[0\].*unique"),
    ({"blocks": [("3a", 4, 0, 4, 4, 4, "avg", 4, 1)]}, r"3x3 branches need >= 1"),
    ({"blocks": [("3a", 4, 4, 4, 4, 4, "min", 4, 1)]}, r"pool allowed: avg, max"),
    ({"blocks": [("3c", 4, 4, 4, 4, 4, "max", 0, 2)]}, r"reduction\) block needs n1x1 = 0"),
    ({"blocks": [("3a", 4.0, 4, 4, 4, 4, "avg", 4, 1)]}, r"ints >= 0"),
    ({"stem_filters": (4, 4)}, r"stem_filters.*three ints"),
    ({"image_size": 16}, r"image_size: 16; allowed: an int >= 32"),
    ({"image_size": 200}, r"image_size: 200 gives a 25x25 map at reduction block '3c'"),
])
def test_invalid_hyperparameters_name_the_rule(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BNInception(**{**TINY, **kwargs})


def test_reference_network():
    """The one full-size build: default table, stage shapes, the 69 reference convolutions."""
    model = BNInception()
    config = model.get_config()
    assert config == {"blocks": [list(row) for row in REFERENCE_BLOCKS],
                      "stem_filters": [64, 64, 192], "image_size": 224,
                      "include_preprocessing": True, "pooling": "avg",
                      "fold_batch_norm": False, "name": "bn_inception", "trainable": True}
    assert tuple(REFERENCE_STEM_FILTERS) == (64, 64, 192)
    assert model.input_shape == (None, 224, 224, 3)
    assert model.output_shape == (None, VIDEO_FEATURE_DIM) == (None, 1024)
    stages = {"conv1_relu_7x7": (112, 112, 64), "pool1_3x3_s2": (56, 56, 64),
              "conv2_relu_3x3": (56, 56, 192), "pool2_3x3_s2": (28, 28, 192),
              "inception_3a_output": (28, 28, 256), "inception_3b_output": (28, 28, 320),
              "inception_3c_output": (14, 14, 576), "inception_4a_output": (14, 14, 576),
              "inception_4b_output": (14, 14, 576), "inception_4c_output": (14, 14, 608),
              "inception_4d_output": (14, 14, 608), "inception_4e_output": (7, 7, 1056),
              "inception_5a_output": (7, 7, 1024), "inception_5b_output": (7, 7, 1024)}
    for name, shape in stages.items():
        assert tuple(model.get_layer(name).output.shape[1:]) == shape, name
    assert len(_expected_conv_names()) == 69
    _check_layer_names(model, REFERENCE_BLOCK_NAMES, ("3c", "4e"))
    assert _expected_strided(("3c", "4e")) == {
        "conv1_7x7_s2", "inception_3c_3x3", "inception_3c_double_3x3_2",
        "inception_4e_3x3", "inception_4e_double_3x3_2"}
    assert isinstance(model.get_layer("inception_5b_pool"), CeilMaxPooling2D)
    assert isinstance(model.get_layer("inception_5a_pool"), keras.layers.AveragePooling2D)
    assert model.count_params() == 10_290_272


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
