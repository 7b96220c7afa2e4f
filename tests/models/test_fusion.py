"""The fusion stage's methods (``model.fusion``): shapes, configs, saving, numeric identities."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses
import warnings

import keras
import numpy as np
import pytest

from maivar_tf.config import FUSION_METHODS, ConfigError, ModelConfig
from maivar_tf.models.fusion import FiLM, LateFusion, build_fusion, choose_late_weight
from maivar_tf.models.heads import (
    build_audio_mlp,
    build_fusion_mlp,
    build_video_mlp,
    feature_statistics,
)
from maivar_tf.runs import load_head

K, DV, DA, C, H = 3, 12, 10, 5, 8
CFG = ModelConfig(hidden_units=H, dropout=0.5, l1=1e-4)


def _data(n: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.normal(1.0, 2.0, (n, K, DV)).astype(np.float32),
            rng.normal(-1.0, 0.5, (n, DA)).astype(np.float32))


def _randomise(model: keras.Model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            layer.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32)
                               for w in layer.get_weights()])


def _heads(cfg: ModelConfig = CFG):
    video, audio = _data()
    vmlp = build_video_mlp(C, K, cfg, *feature_statistics(video), feature_dim=DV)
    audio_mlp = build_audio_mlp(C, cfg, *feature_statistics(audio), feature_dim=DA)
    _randomise(vmlp, 1)
    _randomise(audio_mlp, 2)
    return vmlp, audio_mlp, feature_statistics(audio)


def _build(method: str, cfg: ModelConfig = CFG, **kwargs) -> tuple[keras.Model, ...]:
    vmlp, audio_mlp, (a_mean, a_var) = _heads(cfg)
    fusion = build_fusion(method, vmlp, audio_mlp, cfg, a_mean, a_var, audio_dim=DA, **kwargs)
    return fusion, vmlp, audio_mlp


def _call(model, video, audio) -> np.ndarray:
    return np.asarray(model({"video_features": video, "audio_features": audio},
                            training=False), np.float64)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


# ----------------------------------------------------------------------------- every method


# temporal_binding takes per-segment audio: tests/models/test_temporal.py
@pytest.mark.parametrize("method", [m for m in FUSION_METHODS if m != "temporal_binding"])
def test_shapes_config_round_trip_and_keras_file(method, tmp_path):
    fusion, _, _ = _build(method, late_weight=0.3)
    _randomise(fusion, 3)
    video, audio = _data(4, seed=5)
    out = fusion({"video_features": video, "audio_features": audio}, training=False)
    assert tuple(out.shape) == (4, C)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert sorted(t.name for t in fusion.inputs) == ["audio_features", "video_features"]
    assert fusion.layers[-1].name == "predictions"
    expected = _call(fusion, video, audio)

    clone = keras.Model.from_config(fusion.get_config())
    clone.set_weights(fusion.get_weights())
    np.testing.assert_allclose(_call(clone, video, audio), expected, atol=1e-6)

    fusion.save(tmp_path / "fusion.keras")
    loaded = load_head(tmp_path / "fusion.keras")  # Keras safe mode
    np.testing.assert_allclose(_call(loaded, video, audio), expected, atol=1e-6)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in fusion.layers]


def test_unknown_method_is_one_config_error_naming_the_allowed_values():
    with pytest.raises(ConfigError) as e:
        ModelConfig(fusion="svm")
    assert str(e.value) == ("model.fusion: invalid value 'svm'; allowed: vmlp_init, random_init, "
                            "linear, late, gated, film, temporal_binding")
    vmlp, audio_mlp, _ = _heads()
    with pytest.raises(ValueError, match="allowed: vmlp_init, random_init"):
        build_fusion("svm", vmlp, audio_mlp, CFG, audio_dim=DA)
    with pytest.raises(ValueError, match="must pool like its VMLP"):
        build_fusion("gated", vmlp, audio_mlp, dataclasses.replace(CFG, video_pooling="flatten"),
                     audio_dim=DA)


# ----------------------------------------------------------------------------- identities


def test_vmlp_init_is_build_fusion_mlp_and_equals_the_vmlp_at_step_0():
    vmlp, audio_mlp, (a_mean, a_var) = _heads()
    fusion = build_fusion("vmlp_init", vmlp, audio_mlp, CFG, a_mean, a_var, audio_dim=DA,
                          seed=7)
    direct = build_fusion_mlp(vmlp, CFG, a_mean, a_var, audio_dim=DA, seed=7)
    for w_a, w_b in zip(fusion.get_weights(), direct.get_weights(), strict=True):
        np.testing.assert_array_equal(w_a, w_b)
    video, audio = _data(5, seed=9)
    np.testing.assert_allclose(_call(fusion, video, audio),
                               np.asarray(vmlp(video, training=False)), atol=1e-5)


def test_random_init_is_the_same_architecture_without_the_transfer():
    vmlp, audio_mlp, (a_mean, a_var) = _heads()
    keras.utils.set_random_seed(0)
    fusion = build_fusion("random_init", vmlp, audio_mlp, CFG, a_mean, a_var, audio_dim=DA)
    transfer = build_fusion("vmlp_init", vmlp, audio_mlp, CFG, a_mean, a_var, audio_dim=DA)
    assert [w.shape for w in fusion.get_weights()] == [w.shape for w in transfer.get_weights()]
    kernel = fusion.get_layer("fusion_hidden").get_weights()[0]
    assert np.abs(kernel[:DV] - vmlp.get_layer("hidden").get_weights()[0]).max() > 1e-3
    assert np.abs(kernel[DV:]).max() > 1e-3  # Glorot audio rows, not zeros
    assert not fusion.get_layer("fusion_hidden").get_weights()[1].any()  # zero biases


def test_late_fusion_is_the_weighted_mean_of_the_log_probabilities(tmp_path):
    vmlp, audio_mlp, (a_mean, a_var) = _heads()
    for head in (vmlp, audio_mlp):  # compiled, as the trained heads are in run_algorithm1
        head.compile(optimizer="adam", loss="mse")
        head.optimizer.build(head.trainable_variables)
    fusion = build_fusion("late", vmlp, audio_mlp, CFG, a_mean, a_var, audio_dim=DA,
                          late_weight=0.35)
    fusion.save(tmp_path / "late.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no optimizer of the heads travels in the late model
        load_head(tmp_path / "late.keras")
    video, audio = _data(7, seed=4)
    expected = (0.35 * _log_softmax(audio_mlp(audio, training=False))
                + 0.65 * _log_softmax(vmlp(video, training=False)))
    np.testing.assert_allclose(_call(fusion, video, audio), expected, atol=1e-5)
    assert not fusion.trainable_weights  # decision fusion: nothing to fit
    layer = fusion.get_layer("predictions")
    assert LateFusion.from_config(layer.get_config()).audio_weight == 0.35
    with pytest.raises(ValueError, match=r"audio_weight: 1.5; allowed: \[0, 1\]"):
        LateFusion(1.5)


def test_late_weight_is_the_grid_value_of_least_nll_with_a_deterministic_tie_break():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 40)
    audio = rng.normal(size=(40, 4)) + 2.0 * np.eye(4)[labels]  # informative
    video = rng.normal(size=(40, 4)) + 0.5 * np.eye(4)[labels]  # weaker
    choice = choose_late_weight(audio, video, labels)
    grid = np.linspace(0, 1, 21)
    nll = [-_log_softmax(w * _log_softmax(audio) + (1 - w) * _log_softmax(video))[
        np.arange(40), labels].mean() for w in grid]
    assert choice["audio_weight"] == pytest.approx(grid[int(np.argmin(nll))])
    assert choice["audio_weight"] > 0.5 and choice["criterion"] == "nll"
    assert choice["nll"] == pytest.approx(min(nll))
    assert choice["grid_nll"] == pytest.approx(nll, abs=1e-6)
    # identical heads: every w gives the same NLL; the tie goes to equal weighting
    assert choose_late_weight(video, video, labels)["audio_weight"] == 0.5
    with pytest.raises(ValueError, match="expected"):
        choose_late_weight(audio, video[:3], labels)


def test_film_with_identity_scale_and_shift_is_its_video_branch():
    fusion, vmlp, _ = _build("film")
    _randomise(fusion, 11)
    video, audio = _data(5, seed=6)
    modulated = _call(fusion, video, audio)
    fusion.get_layer("film_gamma").set_weights([np.zeros((DA, DV), np.float32),
                                                np.ones(DV, np.float32)])
    fusion.get_layer("film_beta").set_weights([np.zeros((DA, DV), np.float32),
                                               np.zeros(DV, np.float32)])
    # the same classifier on the video features alone: the VMLP with the film model's weights
    vmlp.get_layer("hidden").set_weights(fusion.get_layer("fusion_hidden").get_weights())
    vmlp.get_layer("predictions").set_weights(fusion.get_layer("predictions").get_weights())
    video_only = np.asarray(vmlp(video, training=False), np.float64)
    np.testing.assert_allclose(_call(fusion, video, audio), video_only, atol=1e-5)
    assert np.abs(modulated - video_only).max() > 1e-2  # the audio did modulate before
    x = np.ones((2, 3, 4), np.float32)
    got = FiLM()([x, np.full((2, 4), 2.0, np.float32), np.full((2, 4), -1.0, np.float32)])
    np.testing.assert_array_equal(np.asarray(got), np.ones((2, 3, 4)))


def test_gating_with_the_gate_open_is_plain_concatenation():
    gated, vmlp, audio_mlp = _build("gated")
    _randomise(gated, 12)
    video, audio = _data(5, seed=8)
    half_open = _call(gated, video, audio)
    width = DV + DA
    gated.get_layer("fusion_gate").set_weights([np.zeros((width, width), np.float32),
                                                np.full(width, 50.0, np.float32)])  # sigmoid=1
    plain = build_fusion("random_init", vmlp, audio_mlp, CFG, *feature_statistics(_data()[1]),
                         audio_dim=DA)
    for name in ("fusion_hidden", "predictions"):
        plain.get_layer(name).set_weights(gated.get_layer(name).get_weights())
    expected = _call(plain, video, audio)
    np.testing.assert_allclose(_call(gated, video, audio), expected, atol=1e-5)
    assert np.abs(half_open - expected).max() > 1e-2
