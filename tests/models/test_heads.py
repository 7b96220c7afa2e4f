"""Tests for the MAiVAR heads and the VMLP -> fusion weight transfer (Algorithm 1)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses

import keras
import numpy as np
import pytest

from maivar_tf.config import ModelConfig
from maivar_tf.models.bn_inception import VIDEO_FEATURE_DIM
from maivar_tf.models.heads import (
    FusionMLP,
    VideoWeightsInitializer,
    build_audio_mlp,
    build_fusion_mlp,
    build_video_mlp,
    feature_statistics,
    video_mlp_spec,
)
from maivar_tf.models.inception_resnet_v2 import AUDIO_FEATURE_DIM

K = 3
NUM_CLASSES = 5
CFG = ModelConfig(hidden_units=16, dropout=0.5, l1=1e-4)


def _data(n: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    video = rng.normal(2.0, 3.0, (n, K, VIDEO_FEATURE_DIM)).astype(np.float32)
    audio = rng.normal(-1.0, 0.5, (n, AUDIO_FEATURE_DIM)).astype(np.float32)
    return video, audio


def _trained_like_vmlp(cfg: ModelConfig, seed: int = 1) -> keras.Model:
    """A VMLP with non-trivial (random, non-zero bias) weights, as if trained."""
    video, _ = _data()
    mean, var = feature_statistics(video)
    vmlp = build_video_mlp(NUM_CLASSES, K, cfg, mean, var)
    rng = np.random.default_rng(seed)
    vmlp.set_weights([rng.normal(0, 0.05, w.shape).astype(np.float32)
                      for w in vmlp.get_weights()])
    return vmlp


def _fusion_inputs(video, audio):
    return {"video_features": video, "audio_features": audio}


# ----------------------------------------------------------------------------- shapes and names


@pytest.mark.parametrize("pooling,hidden_in", [("mean", VIDEO_FEATURE_DIM),
                                               ("flatten", K * VIDEO_FEATURE_DIM)])
def test_video_mlp_shapes_and_layer_names(pooling, hidden_in):
    cfg = dataclasses.replace(CFG, video_pooling=pooling)
    vmlp = build_video_mlp(NUM_CLASSES, K, cfg)
    video, _ = _data()
    out = vmlp(video)
    assert tuple(out.shape) == (6, NUM_CLASSES)
    assert vmlp.input.name == "video_features"
    assert tuple(vmlp.input.shape) == (None, K, VIDEO_FEATURE_DIM)
    assert tuple(vmlp.get_layer("hidden").kernel.shape) == (hidden_in, 16)
    assert vmlp.layers[-1].name == "predictions"
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    spec = video_mlp_spec(vmlp)
    assert spec == {"num_segments": K, "feature_dim": VIDEO_FEATURE_DIM, "pooling": pooling,
                    "hidden_units": 16, "num_classes": NUM_CLASSES}


def test_audio_mlp_shapes():
    model = build_audio_mlp(NUM_CLASSES, CFG)
    _, audio = _data()
    assert tuple(model(audio).shape) == (6, NUM_CLASSES)
    assert model.input.name == "audio_features"
    assert tuple(model.get_layer("hidden").kernel.shape) == (AUDIO_FEATURE_DIM, 16)
    assert model.layers[-1].name == "predictions"


@pytest.mark.parametrize("pooling,video_rows", [("mean", VIDEO_FEATURE_DIM),
                                                ("flatten", K * VIDEO_FEATURE_DIM)])
def test_fusion_shapes(pooling, video_rows):
    cfg = dataclasses.replace(CFG, video_pooling=pooling)
    fusion = build_fusion_mlp(_trained_like_vmlp(cfg), cfg)
    video, audio = _data()
    assert tuple(fusion(_fusion_inputs(video, audio)).shape) == (6, NUM_CLASSES)
    assert tuple(fusion.get_layer("fusion_hidden").kernel.shape) == (
        video_rows + AUDIO_FEATURE_DIM, 16)
    assert sorted(t.name for t in fusion.inputs) == ["audio_features", "video_features"]
    assert fusion.layers[-1].name == "predictions"


def test_fusion_uses_vmlp_width_not_cfg():
    vmlp = _trained_like_vmlp(CFG)
    fusion = build_fusion_mlp(vmlp, dataclasses.replace(CFG, hidden_units=99))
    assert fusion.get_layer("fusion_hidden").units == 16


# ----------------------------------------------------------------------------- standardisation


def test_normalization_standardises_with_given_statistics():
    video, audio = _data(n=8)
    v_mean, v_var = feature_statistics(video)
    a_mean, a_var = feature_statistics(audio)
    vmlp = build_video_mlp(NUM_CLASSES, K, CFG, v_mean, v_var)
    norm = vmlp.get_layer("video_norm")
    got = keras.ops.convert_to_numpy(norm(video))
    expected = (video - v_mean) / np.sqrt(v_var)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # standardised over the N x K training values: mean ~0, variance ~1 per feature
    np.testing.assert_allclose(got.mean(axis=(0, 1)), 0.0, atol=1e-4)
    np.testing.assert_allclose(got.var(axis=(0, 1)), 1.0, atol=1e-3)
    audio_mlp = build_audio_mlp(NUM_CLASSES, CFG, a_mean, a_var)
    got_a = keras.ops.convert_to_numpy(audio_mlp.get_layer("audio_norm")(audio))
    np.testing.assert_allclose(got_a, (audio - a_mean) / np.sqrt(a_var), rtol=1e-4, atol=1e-4)


def test_normalization_is_identity_without_statistics():
    vmlp = build_video_mlp(NUM_CLASSES, K, CFG)
    video, _ = _data()
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(vmlp.get_layer("video_norm")(video)), video)


def test_feature_statistics_constant_feature_gets_unit_variance():
    x = np.random.default_rng(0).normal(size=(10, 2, 4)).astype(np.float32)
    x[..., 1] = 5.0
    mean, var = feature_statistics(x)
    assert mean.shape == var.shape == (4,)
    assert mean[1] == pytest.approx(5.0) and var[1] == 1.0
    np.testing.assert_allclose(mean[0], x[..., 0].mean(), rtol=1e-5)
    # chunked accumulation gives NumPy's two-pass result
    big = np.random.default_rng(1).normal(3.0, 2.0, (50, 3, 6)).astype(np.float32)
    m_c, v_c = feature_statistics(big, chunk_rows=7)
    np.testing.assert_allclose(m_c, big.mean(axis=(0, 1)), rtol=1e-5)
    np.testing.assert_allclose(v_c, big.var(axis=(0, 1)), rtol=1e-5)


def test_bad_statistics_are_rejected():
    with pytest.raises(ValueError, match="both mean and variance"):
        build_video_mlp(NUM_CLASSES, K, CFG, video_mean=np.zeros(VIDEO_FEATURE_DIM))
    with pytest.raises(ValueError, match=r"expected \(1536,\)"):
        build_audio_mlp(NUM_CLASSES, CFG, np.zeros(10), np.ones(10))


# ----------------------------------------------------------------------------- Algorithm 1 numerics


@pytest.mark.parametrize("pooling", ["mean", "flatten"])
def test_fusion_equals_vmlp_at_step_zero(pooling):
    cfg = dataclasses.replace(CFG, video_pooling=pooling, audio_rows_init="zeros")
    vmlp = _trained_like_vmlp(cfg)
    video, audio = _data(n=6, seed=3)
    _, audio_train = _data(n=32, seed=4)
    fusion = build_fusion_mlp(vmlp, cfg, *feature_statistics(audio_train))
    ref = keras.ops.convert_to_numpy(vmlp(video, training=False))
    for seed in (5, 6):  # any audio input: the audio rows are zero
        a = np.random.default_rng(seed).normal(0, 10, audio.shape).astype(np.float32)
        got = keras.ops.convert_to_numpy(fusion(_fusion_inputs(video, a), training=False))
        np.testing.assert_allclose(got, ref, atol=1e-5)
    # the logits are not trivially constant (the check above would pass vacuously)
    assert np.ptp(ref) > 1e-3
    # transferred weights: video rows, bias and prediction layer are the VMLP's
    kernel, bias = fusion.get_layer("fusion_hidden").get_weights()
    v_kernel, v_bias = vmlp.get_layer("hidden").get_weights()
    rows = v_kernel.shape[0]
    np.testing.assert_array_equal(kernel[:rows], v_kernel)
    np.testing.assert_array_equal(kernel[rows:], 0.0)
    np.testing.assert_array_equal(bias, v_bias)
    for w_f, w_v in zip(fusion.get_layer("predictions").get_weights(),
                        vmlp.get_layer("predictions").get_weights(), strict=True):
        np.testing.assert_array_equal(w_f, w_v)


def test_glorot_audio_rows_make_fusion_differ():
    cfg = dataclasses.replace(CFG, audio_rows_init="glorot_uniform")
    vmlp = _trained_like_vmlp(cfg)
    video, audio = _data(n=6, seed=3)
    fusion = build_fusion_mlp(vmlp, cfg)
    ref = keras.ops.convert_to_numpy(vmlp(video, training=False))
    got = keras.ops.convert_to_numpy(fusion(_fusion_inputs(video, audio), training=False))
    assert np.abs(got - ref).max() > 1e-3
    kernel = fusion.get_layer("fusion_hidden").get_weights()[0]
    audio_rows = kernel[VIDEO_FEATURE_DIM:]
    limit = np.sqrt(6.0 / (kernel.shape[0] + kernel.shape[1]))
    assert np.abs(audio_rows).max() <= limit and np.abs(audio_rows).max() > 0.5 * limit
    # the video rows are still the VMLP's
    np.testing.assert_array_equal(kernel[:VIDEO_FEATURE_DIM],
                                  vmlp.get_layer("hidden").get_weights()[0])


def test_fusion_rejects_pooling_mismatch_and_non_vmlp():
    vmlp = _trained_like_vmlp(dataclasses.replace(CFG, video_pooling="mean"))
    with pytest.raises(ValueError, match="must pool like its VMLP"):
        build_fusion_mlp(vmlp, dataclasses.replace(CFG, video_pooling="flatten"))
    with pytest.raises(ValueError, match="not a VMLP"):
        build_fusion_mlp(build_audio_mlp(NUM_CLASSES, CFG), CFG)


def test_from_video_mlp_is_build_fusion_mlp():
    vmlp = _trained_like_vmlp(CFG)
    a = FusionMLP.from_video_mlp(vmlp, CFG)
    b = build_fusion_mlp(vmlp, CFG)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)


# ----------------------------------------------------------------------------- regularisation


def test_l1_losses_present():
    vmlp = _trained_like_vmlp(CFG)
    assert len(vmlp.losses) == 1
    kernel = vmlp.get_layer("hidden").get_weights()[0]
    np.testing.assert_allclose(float(vmlp.losses[0]), 1e-4 * np.abs(kernel).sum(), rtol=1e-4)
    assert len(build_audio_mlp(NUM_CLASSES, CFG).losses) == 1
    fusion = build_fusion_mlp(vmlp, CFG)
    assert len(fusion.losses) == 1
    # the zero audio rows add nothing: the fusion L1 starts equal to the VMLP's
    np.testing.assert_allclose(float(fusion.losses[0]), float(vmlp.losses[0]), rtol=1e-5)
    no_l1 = build_video_mlp(NUM_CLASSES, K, dataclasses.replace(CFG, l1=0.0))
    assert len(no_l1.losses) == 0


# ----------------------------------------------------------------------------- serialisation


def test_initializer_config_round_trip():
    values = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    for init in ("zeros", "glorot_uniform"):
        ini = VideoWeightsInitializer(values, extra_rows=4, extra_rows_init=init, seed=11)
        config = ini.get_config()
        assert set(config) == {"values", "extra_rows", "extra_rows_init", "seed"}
        again = VideoWeightsInitializer.from_config(config)
        np.testing.assert_array_equal(again.values, values)
        a = keras.ops.convert_to_numpy(ini((11, 3)))
        b = keras.ops.convert_to_numpy(again((11, 3)))
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a[:7], values)
        # registered: the generic Keras (de)serialisers find it by its package name
        ser = keras.initializers.serialize(ini)
        assert "maivar_tf>VideoWeightsInitializer" in str(ser)
        des = keras.initializers.deserialize(ser)
        assert isinstance(des, VideoWeightsInitializer)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(des((11, 3))), a)
    # plain lists are accepted as source values
    listed = VideoWeightsInitializer(values.tolist())
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(listed((7, 3))), values)


def test_initializer_errors_name_the_problem():
    ini = VideoWeightsInitializer(np.zeros((4, 2)), extra_rows=3)
    with pytest.raises(ValueError, match=r"\(5, 2\).*\(7, 2\)"):
        ini((5, 2))
    with pytest.raises(ValueError, match="extra_rows_init.*allowed: zeros, glorot_uniform"):
        VideoWeightsInitializer(np.zeros(3), extra_rows_init="ones")


def test_fusion_layer_config_round_trip():
    vmlp = _trained_like_vmlp(CFG)
    fusion = build_fusion_mlp(vmlp, CFG)
    layer = fusion.get_layer("fusion_hidden")
    clone = keras.layers.Dense.from_config(layer.get_config())
    assert isinstance(clone.kernel_initializer, VideoWeightsInitializer)
    clone.build((None, VIDEO_FEATURE_DIM + AUDIO_FEATURE_DIM))
    for w_clone, w in zip(clone.get_weights(), layer.get_weights(), strict=True):
        np.testing.assert_array_equal(w_clone, w)
    # the whole model rebuilds from its config with the same initial weights
    rebuilt = keras.Model.from_config(fusion.get_config())
    for w_r, w in zip(rebuilt.get_weights(), fusion.get_weights(), strict=True):
        np.testing.assert_array_equal(w_r, w)
    vmlp_rebuilt = keras.Model.from_config(vmlp.get_config())
    assert [lyr.name for lyr in vmlp_rebuilt.layers] == [lyr.name for lyr in vmlp.layers]


@pytest.mark.parametrize("pooling", ["mean", "flatten"])
def test_save_load_round_trip(tmp_path, pooling):
    cfg = dataclasses.replace(CFG, video_pooling=pooling)
    video, audio = _data(n=5, seed=9)
    a_mean, a_var = feature_statistics(audio)
    vmlp = _trained_like_vmlp(cfg)
    audio_mlp = build_audio_mlp(NUM_CLASSES, cfg, a_mean, a_var)
    fusion = build_fusion_mlp(vmlp, cfg, a_mean, a_var)
    # move the fusion weights away from their initial values, as training would
    fusion.set_weights([w + 0.01 for w in fusion.get_weights()])
    cases = [(vmlp, video), (audio_mlp, audio), (fusion, _fusion_inputs(video, audio))]
    for i, (model, x) in enumerate(cases):
        path = tmp_path / f"m{i}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(loaded(x, training=False)),
            keras.ops.convert_to_numpy(model(x, training=False)))
        for w_l, w in zip(loaded.get_weights(), model.get_weights(), strict=True):
            np.testing.assert_array_equal(w_l, w)
    loaded_fusion = keras.saving.load_model(tmp_path / "m2.keras")
    ini = loaded_fusion.get_layer("fusion_hidden").kernel_initializer
    assert isinstance(ini, VideoWeightsInitializer)
    np.testing.assert_array_equal(ini.values, vmlp.get_layer("hidden").get_weights()[0])
    assert ini.extra_rows == AUDIO_FEATURE_DIM
    # the saved config is the built one (not the weights, which differ after "training")
    assert loaded_fusion.get_layer("fusion_hidden").get_config() == \
        fusion.get_layer("fusion_hidden").get_config()


def test_logits_stay_float32_under_mixed_precision():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        vmlp = build_video_mlp(NUM_CLASSES, K, CFG)
        video, audio = _data()
        assert vmlp.get_layer("hidden").compute_dtype == "float16"
        assert keras.backend.standardize_dtype(vmlp(video).dtype) == "float32"
        fusion = build_fusion_mlp(vmlp, CFG)
        assert keras.backend.standardize_dtype(fusion(_fusion_inputs(video, audio)).dtype) == "float32"
    finally:
        keras.mixed_precision.set_global_policy(previous)
