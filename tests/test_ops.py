"""The shared frame ops (``maivar_tf.ops``): resizing, centre crop, TSN's ten crops, augmentation.

Decoding, the input pipeline, extraction and the serving graph all call these, so each claim
here holds for every one of them.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from maivar_tf import ops


def _ramp(h: int, w: int, lead=()) -> np.ndarray:
    """uint8 ``[*lead, h, w, 3]`` whose pixels differ (so a crop's position is visible)."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(3 * xx) % 256, (5 * yy) % 256, (xx + yy) % 256], -1).astype(np.uint8)
    return np.broadcast_to(img, (*lead, h, w, 3)).copy()


def test_resize_is_the_identity_at_the_target_size():
    frames = _ramp(256, 340, (2,))
    out = ops.resize_short_side(frames, 256)
    assert out.dtype == tf.uint8
    np.testing.assert_array_equal(out.numpy(), frames)
    portrait = _ramp(300, 256)
    np.testing.assert_array_equal(ops.resize_short_side(portrait, 256).numpy(), portrait)


@pytest.mark.parametrize("h,w,aspect", [(240, 320, 1.0), (320, 240, 1.0), (480, 640, 1.0),
                                        (255, 341, 1.0), (101, 99, 1.0), (480, 720, 0.8889),
                                        (576, 720, 1.4222), (256, 256, 1.0)])
def test_short_side_size_is_the_in_graph_size(h, w, aspect):
    expect = ops.short_side_size(h, w, 256, aspect)
    assert min(expect) == 256 or aspect != 1.0
    out = ops.resize_short_side(_ramp(h, w, (1,)), 256, pixel_aspect=aspect)
    assert tuple(out.shape[1:3]) == expect
    # The same inside a traced function with unknown sizes (the serving graph's case).
    fn = tf.function(lambda x: ops.resize_short_side(x, 256, pixel_aspect=aspect),
                     input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    assert tuple(fn(_ramp(h, w, (1,))).shape[1:3]) == expect


def test_sample_aspect_ratio_resizes_the_display_width():
    # 720x576 PAL with 16:11 pixels displays 1047 wide: the short side is the height.
    assert ops.short_side_size(576, 720, 288, 16 / 11) == (288, 524)
    # Pixels narrower than tall (8:9): 720x480 displays 640 wide.
    assert ops.short_side_size(480, 720, 240, 8 / 9) == (240, 320)
    # Anamorphic: a display width below the height makes the width the short side.
    assert ops.short_side_size(400, 300, 100, 0.5) == (267, 100)
    same_size = _ramp(240, 320, (1,))
    stretched = ops.resize_short_side(same_size, 240, pixel_aspect=2.0)
    assert tuple(stretched.shape[1:3]) == (240, 640)  # not the identity: the SAR is applied
    assert np.abs(stretched.numpy()[0, :, ::2].astype(int) - same_size[0]).mean() < 3


def test_resize_values_match_tf_image_resize():
    frames = _ramp(120, 160, (1,))
    out = ops.resize_short_side(frames, 96).numpy()
    ref = tf.image.resize(frames.astype(np.float32), (96, 128), method="bilinear",
                          antialias=True)
    ref = np.clip(np.round(ref.numpy()), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out, ref)


def test_ten_crop_positions():
    frames = tf.reshape(tf.range(4 * 5, dtype=tf.int32), (1, 4, 5, 1))  # [K=1, H=4, W=5, C=1]
    crops = ops.ten_crop(frames, 3).numpy()[:, 0, :, :, 0]
    img = np.arange(20).reshape(4, 5)
    expect = [img[0:3, 0:3], img[0:3, 2:5], img[1:4, 0:3], img[1:4, 2:5], img[0:3, 1:4]]
    expect += [e[:, ::-1] for e in expect]
    np.testing.assert_array_equal(crops, np.stack(expect))


def test_center_crop_keeps_leading_dimensions_of_5d_clips():
    clips = _ramp(40, 52, (2, 3))  # [B, K, H, W, 3]
    out = ops.center_crop(clips, 32).numpy()
    assert out.shape == (2, 3, 32, 32, 3)
    y, x = (40 - 32) // 2, (52 - 32) // 2
    np.testing.assert_array_equal(out, clips[:, :, y:y + 32, x:x + 32])
    np.testing.assert_array_equal(ops.center_crop(clips, 40).numpy()[0, 0],
                                  clips[0, 0, :, 6:46])
    # The centre crop is the fifth of the ten crops, on any leading dims.
    np.testing.assert_array_equal(ops.ten_crop(clips, 32).numpy()[4], out)


def test_random_crop_and_flip_is_consistent_across_frames_and_flips():
    k, crop = 4, 32
    frames = np.repeat(np.arange(48, dtype=np.uint8)[None, None, :, None], 40, axis=1)
    frames = np.repeat(np.repeat(frames, k, axis=0), 3, axis=3)  # [K, 40, 48, 3], x ramp
    flips = 0
    for s in range(20):
        out = ops.random_crop_and_flip(tf.constant(frames), crop,
                                       tf.constant([s, 7], tf.int64)).numpy()
        assert out.shape == (k, crop, crop, 3)
        for t in range(1, k):  # the same crop for every segment
            np.testing.assert_array_equal(out[t], out[0])
        row = out[0, crop // 2, :, 0].astype(int)
        flips += int(row[0] > row[-1])
        again = ops.random_crop_and_flip(tf.constant(frames), crop,
                                         tf.constant([s, 7], tf.int64))
        np.testing.assert_array_equal(out, again.numpy())  # stateless: same seed, same crop
    assert 0 < flips < 20


@pytest.mark.parametrize("op", [ops.center_crop, ops.ten_crop])
def test_crops_refuse_frames_smaller_than_the_crop(op):
    frames = np.zeros((2, 20, 30, 3), np.uint8)
    with pytest.raises(tf.errors.InvalidArgumentError, match="must be at least 24x24 pixels"):
        op(frames, 24)
