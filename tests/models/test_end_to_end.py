"""Tests for the end-to-end stage models, partial BatchNorm and the backbone learning rate."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf

from maivar_tf import ops
from maivar_tf.config import ModelConfig
from maivar_tf.models.backbones import BackboneFeatures, video_features
from maivar_tf.models.end_to_end import (
    AUDIO_IMAGE_INPUT,
    FRAMES_INPUT,
    BackboneAdam,
    FoldSegments,
    UnfoldSegments,
    batch_norms,
    build_stage_model,
    build_training_backbone,
    set_finetune,
)
from maivar_tf.models.heads import (
    AUDIO_INPUT,
    build_audio_mlp,
    build_fusion_mlp,
    build_video_mlp,
)
from tests.tiny_models import (
    TINY_AUDIO_DIM,
    TINY_BN_INCEPTION_DIM,
    tiny_audio_backbone,
    tiny_bn_inception,
)

B, K, C, S, NUM_CLASSES = 2, 3, 32, 39, 5
FRAME_SIDE = 40  # > C: the stage model takes the centre crops the reference crops itself
CFG = ModelConfig(hidden_units=8, dropout=0.0, l1=0.0, audio_rows_init="glorot_uniform")
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (B, K, FRAME_SIDE, FRAME_SIDE, 3)).astype(np.uint8)
    audio = rng.integers(0, 256, (B, S, S, 3)).astype(np.uint8)
    return frames, audio, rng.integers(0, NUM_CLASSES, B)


def _randomised(model: keras.Model, seed: int) -> keras.Model:
    """Non-trivial weights (biases too): a head as if trained."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32)
                       for w in model.get_weights()])
    return model


def _heads():
    vmlp = _randomised(build_video_mlp(NUM_CLASSES, K, CFG, feature_dim=TINY_BN_INCEPTION_DIM),
                       1)
    audio_mlp = _randomised(build_audio_mlp(NUM_CLASSES, CFG, feature_dim=TINY_AUDIO_DIM), 2)
    fusion = build_fusion_mlp(vmlp, CFG, audio_dim=TINY_AUDIO_DIM, seed=3)
    return {"vmlp": vmlp, "audio_mlp": audio_mlp, "fusion": fusion}


def _stage(stage, head, video=None, audio=None):
    return build_stage_model(stage, head, video_backbone=video, audio_backbone=audio,
                             num_segments=K, crop_size=C, image_size=S)


@pytest.fixture(scope="module")
def frozen():
    """Frozen backbones (BN statistics moved off 0/1 so batch statistics would show), the
    three heads and their stage models (fusion on audio-images and on cached features)."""
    video, audio = tiny_bn_inception(), tiny_audio_backbone(S)
    rng = np.random.default_rng(4)
    for bn in batch_norms(video):
        bn.moving_mean.assign(rng.normal(0, 0.5, bn.moving_mean.shape))
        bn.moving_variance.assign(rng.uniform(0.5, 2.0, bn.moving_variance.shape))
    for backbone in (video, audio):
        assert set_finetune(backbone, False, partial_bn=True)["trainable_batch_norms"] == 0
    heads = _heads()
    models = {"vmlp": _stage("vmlp", heads["vmlp"], video),
              "audio_mlp": _stage("audio_mlp", heads["audio_mlp"], audio=audio),
              "fusion": _stage("fusion", heads["fusion"], video, audio),
              "fusion_cached": _stage("fusion", heads["fusion"], video)}
    return video, audio, heads, models


def _reference(video, audio, heads, frames, audio_images):
    """The feature path: BackboneFeatures + video_features (centre crops), then the heads."""
    v = video_features(BackboneFeatures(video, (C, C, 3)), frames, crop_size=C)
    a = BackboneFeatures(audio, (S, S, 3))(audio_images)
    fused = heads["fusion"]({"video_features": v, AUDIO_INPUT: a})
    return {"vmlp": heads["vmlp"](v), "audio_mlp": heads["audio_mlp"](a), "fusion": fused,
            "fusion_cached": fused}, a


# ----------------------------------------------------------------------------- layers


def test_fold_and_unfold_segments_keep_clip_major_order():
    x = np.arange(B * K * 2 * 2 * 1).reshape(B, K, 2, 2, 1).astype(np.float32)
    folded = FoldSegments()(x)
    assert folded.shape == (B * K, 2, 2, 1)
    np.testing.assert_array_equal(folded[K + 1], x[1, 1])
    feats = keras.ops.reshape(folded, (B * K, 4))
    unfolded = UnfoldSegments(K)(feats)
    np.testing.assert_array_equal(unfolded, x.reshape(B, K, 4))
    with pytest.raises(ValueError, match="num_segments"):
        UnfoldSegments(0)


# ----------------------------------------------------------------------------- frozen


@pytest.mark.parametrize("stage", ["vmlp", "audio_mlp", "fusion", "fusion_cached"])
def test_frozen_stage_model_equals_the_feature_path(frozen, stage):
    video, audio, heads, models = frozen
    frames, audio_images, _ = _data()
    expected, audio_feats = _reference(video, audio, heads, frames, audio_images)
    inputs = {FRAMES_INPUT: ops.center_crop(frames, C), AUDIO_IMAGE_INPUT: audio_images,
              AUDIO_INPUT: audio_feats}
    model = models[stage]
    # the keys this model takes, all tensors (Keras refuses a mix of arrays and tensors)
    inputs = {name: tf.convert_to_tensor(inputs[name]) for name in model.input}
    for training in (False, True):  # frozen BatchNorm keeps its moving statistics
        got = model(inputs, training=training)
        assert got.dtype == tf.float32 and got.shape == (B, NUM_CLASSES)
        np.testing.assert_allclose(got, expected[stage], atol=1e-5, rtol=1e-5)
    head = heads["fusion" if stage == "fusion_cached" else stage]
    assert model.get_layer(head.name) is head
    frozen_ids = {id(v) for b in (video, audio) for v in b.weights}
    assert not any(id(v) in frozen_ids for v in model.trainable_variables)


def test_fusion_inputs_and_refusals(frozen):
    video, audio, heads, models = frozen
    assert sorted(models["fusion"].input) == [AUDIO_IMAGE_INPUT, FRAMES_INPUT]
    assert sorted(models["fusion_cached"].input) == [AUDIO_INPUT, FRAMES_INPUT]
    assert models["fusion"].input[FRAMES_INPUT].dtype == "uint8"
    with pytest.raises(ValueError, match="needs the video backbone"):
        _stage("fusion", heads["fusion"], audio=audio)
    with pytest.raises(ValueError, match="allowed: audio_mlp, vmlp, fusion"):
        _stage("late", heads["fusion"], video, audio)
    wide = build_video_mlp(NUM_CLASSES, K + 1, CFG, feature_dim=TINY_BN_INCEPTION_DIM)
    with pytest.raises(ValueError, match=r"\(4, 16\) but the backbone gives \(3, 16\)"):
        _stage("vmlp", wide, video)


# ----------------------------------------------------------------------------- partial BN


def _bn_state(norms):
    return [[np.array(w) for w in bn.weights] for bn in norms]


def test_partial_bn_trains_only_the_first_batch_norm():
    video = tiny_bn_inception()
    norms = batch_norms(video)
    assert norms[0].name == "conv1_7x7_s2_bn" and len(norms) > 2
    assert set_finetune(video, True, partial_bn=False, num_replicas=2) == {
        "trainable": True, "batch_norms": len(norms), "trainable_batch_norms": len(norms)}
    assert all(bn.synchronized for bn in norms)
    summary = set_finetune(video, True, partial_bn=True)
    assert summary == {"trainable": True, "batch_norms": len(norms), "trainable_batch_norms": 1}
    assert [bn.trainable for bn in norms] == [True] + [False] * (len(norms) - 1)
    assert not any(bn.synchronized for bn in norms)

    model = _stage("vmlp", _heads()["vmlp"], video)
    # eager steps: tracing a BNInception train step costs ~7 s, the eager step ~0.5 s
    model.compile(keras.optimizers.Adam(1e-2), LOSS, run_eagerly=True)
    before = _bn_state(norms)
    kernel = np.array(video.get_layer("conv2_3x3").kernel)
    frames, _, labels = _data()
    model.train_on_batch({FRAMES_INPUT: ops.center_crop(frames, C)}, labels)
    after = _bn_state(norms)
    # the first BN: gamma, beta, moving mean and variance all move
    assert all(not np.allclose(b, a) for b, a in zip(before[0], after[0], strict=True))
    for b_layer, a_layer in zip(before[1:], after[1:], strict=True):
        for b, a in zip(b_layer, a_layer, strict=True):
            np.testing.assert_array_equal(a, b)
    assert not np.allclose(kernel, video.get_layer("conv2_3x3").kernel)  # convolutions train


# ----------------------------------------------------------------------------- optimizer


def _trainable_model(seed: int):
    video = tiny_bn_inception(seed=seed)
    set_finetune(video, True, partial_bn=True)
    head = build_video_mlp(NUM_CLASSES, K, CFG, feature_dim=TINY_BN_INCEPTION_DIM)
    return video, head, _stage("vmlp", _randomised(head, 1), video)


def test_backbone_adam_scales_only_the_backbone_steps():
    frames, _, labels = _data()
    inputs = {FRAMES_INPUT: ops.center_crop(frames, C)}
    lr, mult = 1e-2, 0.1
    video, head, model = _trainable_model(0)
    start = [np.array(v) for v in model.trainable_variables]
    opt = BackboneAdam(lr, backbone_variables=video.trainable_variables, multiplier=mult)
    model.compile(opt, LOSS, run_eagerly=True)
    model.train_on_batch(inputs, labels)
    n_backbone = len(video.trainable_variables)
    assert len(opt.backbone_indices) == n_backbone
    backbone_ids = {id(v) for v in video.trainable_variables}
    assert set(opt.backbone_indices) == {
        i for i, v in enumerate(model.trainable_variables) if id(v) in backbone_ids}

    # the reference: the same step with plain Adam, lr * mult on the backbone, lr on the head
    ref_video, ref_head, ref = _trainable_model(0)
    with tf.GradientTape() as tape:
        loss = LOSS(labels, ref(inputs, training=True))
    grads = tape.gradient(loss, ref_video.trainable_variables + ref_head.trainable_variables)
    keras.optimizers.Adam(lr * mult).apply(grads[:n_backbone], ref_video.trainable_variables)
    keras.optimizers.Adam(lr).apply(grads[n_backbone:], ref_head.trainable_variables)

    got = {v.path: np.array(v) for v in model.trainable_variables}
    want = {v.path: np.array(v) for v in ref.trainable_variables}
    assert got.keys() == want.keys()
    for path in got:
        np.testing.assert_allclose(got[path], want[path], atol=1e-6, rtol=1e-5, err_msg=path)
    # Adam's first step is ~lr per weight: the backbone moved ~mult * lr, the head ~lr
    moved = [np.abs(np.array(v) - s).max() for v, s in
             zip(model.trainable_variables, start, strict=True)]
    assert max(moved[:n_backbone]) == pytest.approx(lr * mult, rel=0.05)
    assert max(moved[n_backbone:]) == pytest.approx(lr, rel=0.05)


def test_backbone_adam_config_keeps_the_multiplier():
    opt = BackboneAdam(3e-4, multiplier=0.25, beta_1=0.8)
    again = BackboneAdam.from_config(opt.get_config())
    assert (again.multiplier, again.beta_1) == (0.25, 0.8)
    assert again.backbone_indices == ()
    with pytest.raises(ValueError, match="multiplier"):
        BackboneAdam(1e-3, multiplier=-1.0)


# ----------------------------------------------------------------------------- building, saving


def test_training_backbone_is_unfolded_and_follows_the_global_policy():
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        video = build_training_backbone("video", "none", C, architecture="bn_inception_tiny")
    finally:
        keras.config.set_dtype_policy(old)
    assert len(batch_norms(video)) > 0  # BatchNorm not folded: a network to train
    assert video.get_layer("conv1_7x7_s2").compute_dtype == "float16"
    assert video.get_layer("conv1_7x7_s2").kernel.dtype == "float32"
    model = _stage("vmlp", _heads()["vmlp"], video)
    frames, _, _ = _data()
    assert model({FRAMES_INPUT: ops.center_crop(frames, C)}).dtype == tf.float32
    with pytest.raises(ValueError, match="allowed"):
        build_training_backbone("video", "none", C, architecture="resnet18")


def test_saved_stage_model_reloads_with_the_same_outputs(frozen, tmp_path):
    _, _, _, models = frozen
    frames, audio_images, _ = _data(1)
    inputs = {FRAMES_INPUT: ops.center_crop(frames, C),
              AUDIO_IMAGE_INPUT: tf.convert_to_tensor(audio_images)}
    model = models["fusion"]
    path = tmp_path / "fusion_end_to_end.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # safe mode: every layer is registered
    np.testing.assert_allclose(loaded(inputs), model(inputs), atol=1e-6)
    assert isinstance(loaded.get_layer("unfold_segments"), UnfoldSegments)
