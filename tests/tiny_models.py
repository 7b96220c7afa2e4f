"""Tiny stand-in backbones shared by the tests (fast enough to build in every test).

They keep the real backbones' contracts: RGB 0..255 images ``[B, S, S, 3]`` in, float32
features ``[B, D]`` out, deterministic weights for a given seed. The full-size networks are
built once each, in their own model tests. :func:`tiny_bn_inception` is the real
:class:`~maivar_tf.models.bn_inception.BNInception` built from its tiny block table, for tests
of BNInception itself and of code that needs its layer names.
"""

from __future__ import annotations

#: Feature widths of the stand-ins.
TINY_VIDEO_DIM = 16
TINY_AUDIO_DIM = 12
#: Feature width of :func:`tiny_bn_inception` (channels of its last block, ``TINY_BLOCKS``).
TINY_BN_INCEPTION_DIM = 16


def _conv_pool_dense(name: str, side: int, stride: int, dim: int, seed: int, input_name: str):
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((side, side, 3), name=input_name)
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.Conv2D(4, stride, strides=stride, name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(dim, name="proj")(x)
    return keras.Model(inp, x, name=name)


def tiny_video_backbone(crop_size: int = 224, dim: int = TINY_VIDEO_DIM, seed: int = 1):
    """``[B, crop, crop, 3]`` RGB 0..255 -> ``[B, dim]`` (an 8x8/8 conv, pooling, a Dense)."""
    return _conv_pool_dense("tiny_video", crop_size, 8, dim, seed, "frames")


def tiny_audio_backbone(image_size: int = 299, dim: int = TINY_AUDIO_DIM, seed: int = 2):
    """``[B, 299, 299, 3]`` RGB 0..255 -> ``[B, dim]`` (a 13x13/13 conv, pooling, a Dense)."""
    return _conv_pool_dense("tiny_audio", image_size, 13, dim, seed, "audio_image")


def tiny_bn_inception(image_size: int | None = None, seed: int = 0, **kwargs):
    """A BNInception with ``TINY_BLOCKS`` / ``TINY_STEM_FILTERS`` (``TINY_BN_INCEPTION_DIM``-d).

    Args:
        image_size: the input side (default ``TINY_IMAGE_SIZE``, 32).
        seed: Keras' global seed before building (deterministic weights).
        **kwargs: other :class:`BNInception` arguments (``pooling``, ``include_preprocessing``).
    """
    import keras

    from maivar_tf.models import bn_inception

    keras.utils.set_random_seed(seed)
    return bn_inception.BNInception(
        blocks=bn_inception.TINY_BLOCKS, stem_filters=bn_inception.TINY_STEM_FILTERS,
        image_size=image_size or bn_inception.TINY_IMAGE_SIZE, **kwargs)
