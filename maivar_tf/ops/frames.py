"""Frame ops on uint8 ``[..., H, W, 3]`` tensors with any leading dimensions (K, or B and K).

Temporal Segment Networks (Wang et al. 2016), MAiVAR's video stream, resize every frame so its
shorter side is 256 pixels, crop 224 x 224 windows (the centre at test time, TSN's ten crops
optionally) and, in training, take multi-scale random crops with horizontal flips.
"""

from __future__ import annotations

import tensorflow as tf

#: TSN's multi-scale crop: crop sides as fractions of the shorter frame side.
TRAIN_CROP_SCALES = (1.0, 0.875, 0.75, 0.66)
#: TSN's ``max_distort``: height and width scales differ by at most this many steps.
TRAIN_MAX_DISTORT = 1


def short_side_size(height: int, width: int, short_side: int,
                    pixel_aspect: float = 1.0) -> tuple[int, int]:
    """``(height, width)`` after :func:`resize_short_side` (the same arithmetic, in Python).

    The display width is ``width * pixel_aspect``; the shorter display side becomes
    ``short_side`` and the other keeps the aspect ratio, rounded half to even, at least 1.
    """
    display_w = float(width) * float(pixel_aspect)
    if display_w <= height:
        return max(1, int(round(height * short_side / display_w))), int(short_side)
    return int(short_side), max(1, int(round(display_w * short_side / height)))


def _target_size(height, width, short_side: int, pixel_aspect):
    """The in-graph twin of :func:`short_side_size` (float64, half-to-even rounding)."""
    h = tf.cast(height, tf.float64)
    display_w = tf.cast(width, tf.float64) * tf.cast(pixel_aspect, tf.float64)
    short = tf.constant(float(short_side), tf.float64)

    def scaled(x, ref):
        return tf.maximum(1, tf.cast(tf.round(x * short / ref), tf.int32))

    portrait = display_w <= h
    new_h = tf.where(portrait, scaled(h, display_w), tf.constant(short_side, tf.int32))
    new_w = tf.where(portrait, tf.constant(short_side, tf.int32), scaled(display_w, h))
    return new_h, new_w


def _resize_images(frames: tf.Tensor, size) -> tf.Tensor:
    """Bilinear, antialiased resize of uint8 ``[..., H, W, 3]`` to ``size``, back to uint8."""
    shape = tf.shape(frames)
    lead, hw = shape[:-3], shape[-3:-1]
    flat = tf.reshape(frames, tf.concat([[-1], hw, [3]], axis=0))
    out = tf.image.resize(flat, size, method="bilinear", antialias=True)
    out = tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)
    return tf.reshape(out, tf.concat([lead, size, [3]], axis=0))


def resize_short_side(frames, short_side: int, pixel_aspect=1.0) -> tf.Tensor:
    """Resizes frames so their shorter display side is ``short_side`` pixels (square pixels).

    Bilinear with antialiasing (a triangle filter widened when shrinking), rounded to uint8.
    Frames whose shorter side already is ``short_side`` with square pixels come back as they
    are (the very same values).

    Args:
        frames: uint8 ``[..., H, W, 3]``.
        short_side: the target length of the shorter display side.
        pixel_aspect: the sample aspect ratio (display width / stored width of a pixel).

    Returns:
        uint8 ``[..., H', W', 3]``.
    """
    frames = tf.convert_to_tensor(frames, tf.uint8)
    shape = tf.shape(frames)
    h, w = shape[-3], shape[-2]
    new_h, new_w = _target_size(h, w, int(short_side), pixel_aspect)
    same = tf.logical_and(tf.equal(new_h, h), tf.equal(new_w, w))
    return tf.cond(same, lambda: tf.identity(frames),
                   lambda: _resize_images(frames, tf.stack([new_h, new_w])))


def _at_least_crop(frames: tf.Tensor, crop: int, what: str) -> tf.Tensor:
    """``frames`` after an assertion that H and W are at least ``crop``."""
    shape = tf.shape(frames)
    ok = tf.logical_and(shape[-3] >= crop, shape[-2] >= crop)
    check = tf.debugging.Assert(ok, [f"{what}: frames must be at least {crop}x{crop} pixels; "
                                     "got shape", shape], summarize=8)
    with tf.control_dependencies([check]):
        return tf.identity(frames)


def center_crop(frames, crop: int) -> tf.Tensor:
    """The centre ``crop`` x ``crop`` window of every frame of uint8 ``[..., H, W, 3]``.

    Offsets are ``(H - crop) // 2`` and ``(W - crop) // 2``; leading dimensions are kept.

    Raises:
        tf.errors.InvalidArgumentError: a frame is smaller than the crop.
    """
    frames = _at_least_crop(tf.convert_to_tensor(frames), crop, "center_crop")
    shape = tf.shape(frames)
    off_y = (shape[-3] - crop) // 2
    off_x = (shape[-2] - crop) // 2
    return frames[..., off_y:off_y + crop, off_x:off_x + crop, :]


def ten_crop(frames, crop: int) -> tf.Tensor:
    """TSN's ten crops of ``[..., H, W, C]``: 4 corners + centre, then the same five flipped.

    Returns:
        ``[10, ..., crop, crop, C]`` in the order top-left, top-right, bottom-left,
        bottom-right, centre, then those five flipped left-right.

    Raises:
        tf.errors.InvalidArgumentError: a frame is smaller than the crop.
    """
    frames = _at_least_crop(tf.convert_to_tensor(frames), crop, "ten_crop")
    shape = tf.shape(frames)
    h, w, c = shape[-3], shape[-2], crop
    offsets = [(0, 0), (0, w - c), (h - c, 0), (h - c, w - c), ((h - c) // 2, (w - c) // 2)]
    crops = [frames[..., y:y + c, x:x + c, :] for y, x in offsets]
    crops += [tf.reverse(cr, axis=[-2]) for cr in crops]
    return tf.stack(crops, axis=0)


def random_crop_and_flip(frames, crop: int, seed) -> tf.Tensor:
    """TSN training augmentation of uint8 ``[K, H, W, 3]``, the same for every frame of a clip.

    A crop whose height and width are each one of :data:`TRAIN_CROP_SCALES` times the shorter
    side (differing by at most :data:`TRAIN_MAX_DISTORT` steps), at a random position, resized
    to ``crop`` x ``crop``; then a horizontal flip with probability 1/2.

    Args:
        frames: uint8 ``[K, H, W, 3]``.
        crop: the output side.
        seed: int64 ``[2]``, a stateless random seed.
    """
    seeds = tf.random.experimental.stateless_split(seed, num=5)
    shape = tf.shape(frames)
    h, w = shape[1], shape[2]
    short = tf.cast(tf.minimum(h, w), tf.float32)
    scales = tf.constant(TRAIN_CROP_SCALES, tf.float32)
    n = len(TRAIN_CROP_SCALES)
    i = tf.random.stateless_uniform([], seeds[0], 0, n, dtype=tf.int32)
    d = tf.random.stateless_uniform([], seeds[1], -TRAIN_MAX_DISTORT, TRAIN_MAX_DISTORT + 1,
                                    dtype=tf.int32)
    j = tf.clip_by_value(i + d, 0, n - 1)
    ch = tf.minimum(tf.cast(tf.round(scales[i] * short), tf.int32), h)
    cw = tf.minimum(tf.cast(tf.round(scales[j] * short), tf.int32), w)
    y = tf.random.stateless_uniform([], seeds[2], 0, h - ch + 1, dtype=tf.int32)
    x = tf.random.stateless_uniform([], seeds[3], 0, w - cw + 1, dtype=tf.int32)
    cropped = frames[:, y:y + ch, x:x + cw, :]
    resized = tf.image.resize(cropped, [crop, crop], method="bilinear", antialias=True)
    out = tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
    flip = tf.random.stateless_uniform([], seeds[4]) < 0.5
    return tf.cond(flip, lambda: tf.reverse(out, axis=[2]), lambda: out)
