"""Tests of :mod:`maivar_tf.models.bn_folding`: BatchNorm folded into BNInception's convolutions."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from maivar_tf.models.backbones import build_backbone
from maivar_tf.models.bn_folding import fold_batch_norm, folded_conv_weights
from tests.tiny_models import tiny_bn_inception


def _with_trained_statistics(model, seed=0):
    """Non-trivial BatchNorm statistics and scales (fresh ones are the identity map)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 2, c), rng.normal(0, 0.5, c),
                               rng.normal(0, 0.5, c), rng.uniform(0.2, 3, c)])
    return model


def test_folded_conv_weights_equal_conv_then_batch_norm():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    conv = keras.layers.Conv2D(4, 3, padding="same")
    bn = keras.layers.BatchNormalization(epsilon=1e-5)
    reference = np.asarray(bn(conv(x), training=False))  # builds both
    stats = [rng.uniform(0.5, 2, 4), rng.normal(size=4), rng.normal(size=4),
             rng.uniform(0.2, 3, 4)]
    bn.set_weights(stats)
    reference = np.asarray(bn(conv(x), training=False))
    kernel, bias = folded_conv_weights(*conv.get_weights(), *stats, epsilon=1e-5)
    folded = keras.layers.Conv2D(4, 3, padding="same")
    folded.build(x.shape)
    folded.set_weights([kernel, bias])
    np.testing.assert_allclose(np.asarray(folded(x)), reference, rtol=1e-5, atol=1e-5)


def test_folded_bn_inception_computes_the_same_features_without_batch_norm():
    model = _with_trained_statistics(tiny_bn_inception(image_size=64))
    folded = fold_batch_norm(model)
    assert folded.fold_batch_norm and folded.get_config()["fold_batch_norm"] is True
    assert not any(isinstance(x, keras.layers.BatchNormalization) for x in folded.layers)
    assert sum(isinstance(x, keras.layers.BatchNormalization) for x in model.layers) == sum(
        isinstance(x, keras.layers.Conv2D) for x in folded.layers)
    frames = np.random.default_rng(2).uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    expected = np.asarray(model(frames, training=False))
    np.testing.assert_allclose(np.asarray(folded(frames)), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="needs an unfolded BNInception"):
        fold_batch_norm(folded)


def test_bfloat16_video_builds_are_folded_and_float32_ones_are_not(tmp_path):
    keras.utils.set_random_seed(0)
    model = _with_trained_statistics(build_backbone("video", "none", 64,
                                                    architecture="bn_inception_tiny"))
    path = tmp_path / "video.weights.h5"
    model.save_weights(path)
    fp32 = build_backbone("video", str(path), 64, architecture="bn_inception_tiny")
    bf16 = build_backbone("video", str(path), 64, architecture="bn_inception_tiny",
                          precision="bfloat16")
    trainable = build_backbone("video", str(path), 64, architecture="bn_inception_tiny",
                               precision="bfloat16", fold_batch_norm=False)
    assert not fp32.fold_batch_norm and bf16.fold_batch_norm and not trainable.fold_batch_norm
    assert all(v.dtype == "float32" for v in bf16.weights)
    assert bf16.layers[-1].dtype_policy.name == "mixed_bfloat16"
    frames = np.random.default_rng(3).uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    a, b = np.asarray(fp32(frames)), np.asarray(bf16(frames), np.float32)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() >= 0.99 and not np.array_equal(a, b)
