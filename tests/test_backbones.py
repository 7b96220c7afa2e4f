"""Backbone features: the one traced callable, the shared video features, building backbones.

Stand-in backbones come from ``tests/tiny_models`` (BNInception itself from its tiny block
table where its builder is under test), so every test takes well under a second or two.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from maivar_tf import ops
from maivar_tf.artifacts import BACKBONES_SUBDIR, backbone_weights_name
from maivar_tf.models import bn_inception
from maivar_tf.models.backbones import (
    ARCHITECTURES,
    BackboneFeatures,
    backbone_spec,
    build_backbone,
    init_backbone,
    injected_spec,
    output_dim,
    restore_backbone,
    saved_weights_path,
    video_features,
)
from maivar_tf.models.weights import WeightsError
from tests.tiny_models import TINY_VIDEO_DIM, tiny_video_backbone

C = 32  # crop side of the stand-in video backbone
K = 3
TINY = dict(blocks=bn_inception.TINY_BLOCKS, stem_filters=bn_inception.TINY_STEM_FILTERS)


@pytest.fixture(scope="module")
def video():
    return BackboneFeatures(tiny_video_backbone(C), (C, C, 3))


def _clips(b: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (b, K, h, w, 3), dtype=np.uint8)


def test_one_trace_for_every_batch_size_and_dtype(video):
    images = np.random.default_rng(1).integers(0, 256, (7, C, C, 3), dtype=np.uint8)
    out = video(images)
    assert out.dtype == tf.float32 and out.shape == (7, TINY_VIDEO_DIM)
    assert video.dim == TINY_VIDEO_DIM == output_dim(video.model, (C, C, 3))
    np.testing.assert_array_equal(video(images.astype(np.float32)).numpy(), out.numpy())
    np.testing.assert_allclose(out.numpy(), video.model(images.astype(np.float32)).numpy(),
                               rtol=1e-6, atol=1e-6)
    video(images[:3])
    np.testing.assert_array_equal(video(images, max_images=2).numpy(), out.numpy())
    assert video.features.experimental_get_tracing_count() == 1


def test_video_features_centre_and_ten_crops(video):
    clips = _clips(2, 40, 48)
    centre = video_features(video, clips, C).numpy()
    assert centre.shape == (2, K, TINY_VIDEO_DIM)
    crops = ops.center_crop(clips, C).numpy().reshape(-1, C, C, 3)
    np.testing.assert_array_equal(centre, video(crops).numpy().reshape(2, K, -1))
    # Frames that already are crops are their own centre crop.
    np.testing.assert_array_equal(video_features(video, ops.center_crop(clips, C), C), centre)
    ten = video_features(video, clips, C, ten_crop=True, max_images=7).numpy()
    tens = ops.ten_crop(clips, C).numpy()  # [10, B, K, c, c, 3]
    expect = np.mean([video(t.reshape(-1, C, C, 3)).numpy().reshape(2, K, -1) for t in tens],
                     axis=0)
    np.testing.assert_allclose(ten, expect, rtol=1e-5, atol=1e-6)
    assert not np.allclose(ten, centre)


def test_works_inside_a_saved_module(video, tmp_path):
    class Serve(tf.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        @tf.function(input_signature=[tf.TensorSpec([None, K, None, None, 3], tf.uint8)])
        def __call__(self, frames):
            return video_features(self.fn, frames, C)

    module = Serve(video)
    assert module.__call__.get_concrete_function().structured_outputs.shape.as_list() == [
        None, K, TINY_VIDEO_DIM]
    clips = _clips(2, 36, 50, seed=3)
    tf.saved_model.save(module, str(tmp_path / "m"))
    restored = tf.saved_model.load(str(tmp_path / "m"))
    np.testing.assert_allclose(restored(clips).numpy(), video_features(video, clips, C).numpy(),
                               rtol=1e-6, atol=1e-6)


def _outputs(model, side: int = bn_inception.TINY_IMAGE_SIZE) -> np.ndarray:
    x = np.random.default_rng(5).uniform(0, 255, (2, side, side, 3)).astype(np.float32)
    return model(x, training=False).numpy()


def test_random_weights_are_seeded_saved_once_and_restored(tmp_path):
    side = bn_inception.TINY_IMAGE_SIZE
    model, spec = init_backbone("video", "none", side, tmp_path, seed=4, **TINY)
    saved = tmp_path / BACKBONES_SUBDIR / backbone_weights_name("video")
    assert saved.is_file() and saved_weights_path("video") == "backbones/video.weights.h5"
    assert (spec.architecture, spec.weights, spec.image_size, spec.saved_weights) == (
        ARCHITECTURES["video"], "none", side, saved_weights_path("video"))
    assert not [p for p in saved.parent.iterdir() if p != saved]  # no temporary file left
    # A resumed extraction loads the saved file, whatever the seed.
    again, spec_again = init_backbone("video", "none", side, tmp_path, seed=99, **TINY)
    np.testing.assert_array_equal(_outputs(again), _outputs(model))
    assert spec_again == spec
    np.testing.assert_array_equal(_outputs(restore_backbone(spec, "video", tmp_path, **TINY)),
                                  _outputs(model))
    # The same seed in a fresh folder draws the same weights.
    fresh, _ = init_backbone("video", "none", side, tmp_path / "fresh", seed=4, **TINY)
    np.testing.assert_array_equal(_outputs(fresh), _outputs(model))
    saved.unlink()
    with pytest.raises(WeightsError, match="cannot recover the video backbone"):
        restore_backbone(spec, "video", tmp_path, **TINY)


def test_a_weights_file_is_restored_while_unchanged(tmp_path):
    side = bn_inception.TINY_IMAGE_SIZE
    path = tmp_path / "bn.weights.h5"
    build_backbone("video", "none", side, **TINY).save_weights(path)
    model, spec = init_backbone("video", str(path), side, tmp_path / "features", seed=0,
                                **TINY)
    assert spec == backbone_spec("video", str(path), side)
    assert spec.weights_size == path.stat().st_size and spec.saved_weights is None
    assert not (tmp_path / "features").exists()  # nothing is saved for a weights file
    np.testing.assert_array_equal(
        _outputs(restore_backbone(spec, "video", tmp_path / "features", **TINY)),
        _outputs(model))
    st = path.stat()
    os.utime(path, (st.st_atime, st.st_mtime + 10))
    with pytest.raises(WeightsError, match="weights file must be unchanged"):
        restore_backbone(spec, "video", tmp_path, **TINY)


def test_kinds_sizes_and_injected_backbones_are_checked(video, tmp_path):
    with pytest.raises(ValueError, match="backbone kind 'image'; allowed: video, audio"):
        build_backbone("image")
    with pytest.raises(ValueError, match="audio image_size: 224; allowed: 299"):
        build_backbone("audio", "none", 224)
    spec = injected_spec(video.model, C)
    assert (spec.architecture, spec.image_size) == ("injected:tiny_video", C)
    with pytest.raises(WeightsError, match="'injected:tiny_video'.* cannot be rebuilt"):
        restore_backbone(spec, "video", tmp_path)
    conv = keras.Sequential([keras.Input((C, C, 3)), keras.layers.Conv2D(2, 3)])
    with pytest.raises(ValueError, match="must output \\[B, D\\] features"):
        BackboneFeatures(conv, (C, C, 3))
