"""BNInception (Inception with Batch Normalization), the TSN video backbone.

The network of Ioffe & Szegedy (2015, "Batch Normalization: Accelerating Deep Network Training
by Reducing Internal Covariate Shift") in the Caffe-derived form used by Temporal Segment
Networks (Wang et al., 2016) and therefore by MAiVAR's video stream: every ``conv1_7x7_s2``,
``inception_3a_1x1`` ... ``inception_5b_pool_proj`` layer of the reference PyTorch ports
(yjxiong/tsn-pytorch ``tf_model_zoo``, open-mmlab/mmaction v1, Cadene's ``pretrainedmodels``)
exists here under the same name, so converted checkpoints load by name
(see :mod:`maivar_tf.convert`).

The numerics follow the PyTorch reference exactly:

* convolutions carry a bias and are followed by BatchNorm (eps 1e-5) and ReLU;
* strided convolutions pad symmetrically like PyTorch (explicit zero padding, then ``valid``),
  not like TensorFlow's asymmetric ``same``;
* max pools use PyTorch's ``ceil_mode=True``: the input is padded on the right/bottom with
  ``-inf`` so the output size is rounded up (:class:`CeilMaxPooling2D`);
* the 3x3/stride-1 average pools count the zero padding (``count_include_pad=True``): zero
  padding followed by a ``valid`` average pool.

Input convention: RGB frames with values in 0..255. With ``include_preprocessing=True`` (the
default) a :class:`TSNPreprocessing` layer turns them into TSN's BGR, mean ``[104, 117, 128]``,
std 1 input; with ``include_preprocessing=False`` the model expects that BGR input already.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import layers, ops

#: Width of the pooled BNInception feature (``inception_5b_output`` channels).
VIDEO_FEATURE_DIM = 1024
#: BGR channel means subtracted by TSN (the Caffe BNInception mean; std is 1).
TSN_BGR_MEAN: tuple[float, float, float] = (104.0, 117.0, 128.0)
#: The input side the reference checkpoints were trained with.
DEFAULT_IMAGE_SIZE = 224

_BN_EPSILON = 1e-5
# PyTorch's BatchNorm momentum 0.1 updates running = 0.9 * running + 0.1 * batch, which is
# Keras' momentum 0.9.
_BN_MOMENTUM = 0.9

# One row per inception block, exactly as in the reference models:
# (block, 1x1, 3x3_reduce, 3x3, double_3x3_reduce, double_3x3, pool, pool_proj, stride).
# Reduction blocks (stride 2) have no 1x1 branch and no pool projection; their 3x3 and second
# double-3x3 convolutions have stride 2 and their pool is a 3x3/2 ceil-mode max pool.
# pool: "avg" = 3x3/1 pad 1 average (padding counted), "max" = 3x3/1 pad 1 max (5b only).
_BLOCKS: tuple[tuple[str, int, int, int, int, int, str, int, int], ...] = (
    ("3a", 64, 64, 64, 64, 96, "avg", 32, 1),  # 28x28x256
    ("3b", 64, 64, 96, 64, 96, "avg", 64, 1),  # 28x28x320
    ("3c", 0, 128, 160, 64, 96, "max", 0, 2),  # 14x14x576
    ("4a", 224, 64, 96, 96, 128, "avg", 128, 1),  # 14x14x576
    ("4b", 192, 96, 128, 96, 128, "avg", 128, 1),  # 14x14x576
    ("4c", 160, 128, 160, 128, 160, "avg", 128, 1),  # 14x14x608
    ("4d", 96, 128, 192, 160, 192, "avg", 128, 1),  # 14x14x608
    ("4e", 0, 128, 192, 192, 256, "max", 0, 2),  # 7x7x1056
    ("5a", 352, 192, 320, 160, 224, "avg", 128, 1),  # 7x7x1024
    ("5b", 352, 192, 320, 192, 224, "max", 128, 1),  # 7x7x1024
)


@keras.saving.register_keras_serializable(package="maivar_tf")
class TSNPreprocessing(layers.Layer):
    """RGB 0..255 -> TSN input: channels reversed to BGR, per-channel mean subtracted.

    Args:
        mean: the BGR means to subtract (TSN's ``[104, 117, 128]``; the std is 1).
        **kwargs: standard layer arguments (``name``, ``dtype``).
    """

    def __init__(self, mean: Sequence[float] = TSN_BGR_MEAN, **kwargs):
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)
        if len(self.mean) != 3:
            raise ValueError(f"TSNPreprocessing.mean: {mean!r}; allowed: three BGR means")

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        x = ops.flip(x, axis=-1)
        return x - ops.convert_to_tensor(self.mean, dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": list(self.mean)}


def _ceil_pool_output(size: int, pool: int, stride: int, pad: int) -> int:
    """Output length of a PyTorch pool with ``ceil_mode=True``."""
    out = math.ceil((size + 2 * pad - pool) / stride) + 1
    # PyTorch drops a last window that would start inside the right padding.
    if (out - 1) * stride >= size + pad:
        out -= 1
    return out


@keras.saving.register_keras_serializable(package="maivar_tf")
class CeilMaxPooling2D(layers.Layer):
    """Max pooling with PyTorch's ``ceil_mode=True`` semantics (channels last).

    Pads ``padding`` pixels of ``-inf`` on every side plus whatever the right/bottom edge needs
    for the output size to round up, then max-pools with ``valid`` padding. Padded positions
    never win, exactly as in PyTorch.

    Args:
        pool_size: the square window side.
        strides: the stride in both directions.
        padding: the symmetric padding PyTorch adds before pooling.
        **kwargs: standard layer arguments (``name``, ``dtype``).
    """

    def __init__(self, pool_size: int = 3, strides: int = 2, padding: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = int(pool_size)
        self.strides = int(strides)
        self.padding = int(padding)

    def _pads(self, size: int) -> tuple[int, int]:
        out = _ceil_pool_output(size, self.pool_size, self.strides, self.padding)
        after = (out - 1) * self.strides + self.pool_size - size - self.padding
        return self.padding, max(after, 0)

    def call(self, inputs):
        height, width = inputs.shape[1], inputs.shape[2]
        if height is None or width is None:
            raise ValueError(
                f"{self.name}: CeilMaxPooling2D needs static spatial dimensions; "
                f"got input shape {inputs.shape}"
            )
        pads = [[0, 0], list(self._pads(height)), list(self._pads(width)), [0, 0]]
        x = ops.pad(inputs, pads, constant_values=float("-inf"))
        return ops.max_pool(x, self.pool_size, self.strides, padding="valid")

    def compute_output_shape(self, input_shape):
        def out(size):
            if size is None:
                return None
            return _ceil_pool_output(size, self.pool_size, self.strides, self.padding)

        return (input_shape[0], out(input_shape[1]), out(input_shape[2]), input_shape[3])

    def get_config(self):
        return {
            **super().get_config(),
            "pool_size": self.pool_size,
            "strides": self.strides,
            "padding": self.padding,
        }


def _conv_bn_relu(x, name: str, relu_name: str, filters: int, kernel: int, stride: int = 1):
    """``name`` (Conv2D with bias) -> ``name_bn`` (BatchNorm) -> ``relu_name`` (ReLU)."""
    if stride == 1:
        padding = "same"  # symmetric (kernel - 1) / 2 for odd kernels, as in PyTorch
    else:
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        padding = "valid"
    x = layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=True, name=name)(x)
    x = layers.BatchNormalization(
        axis=-1, epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, name=f"{name}_bn"
    )(x)
    return layers.ReLU(name=relu_name)(x)


def _inception_block(x, block: str, n1x1: int, n3x3r: int, n3x3: int, nd3x3r: int, nd3x3: int,
                     pool: str, pool_proj: int, stride: int):
    """One inception module named ``inception_<block>_*`` like the reference checkpoints."""
    p = f"inception_{block}_"

    def cbr(inp, suffix, filters, kernel, s=1):
        return _conv_bn_relu(inp, p + suffix, p + "relu_" + suffix, filters, kernel, s)

    branches = []
    if n1x1:
        branches.append(cbr(x, "1x1", n1x1, 1))
    b = cbr(x, "3x3_reduce", n3x3r, 1)
    branches.append(cbr(b, "3x3", n3x3, 3, stride))
    b = cbr(x, "double_3x3_reduce", nd3x3r, 1)
    b = cbr(b, "double_3x3_1", nd3x3, 3)
    branches.append(cbr(b, "double_3x3_2", nd3x3, 3, stride))
    if stride == 2:
        # Reduction: 3x3/2 ceil-mode max pool, concatenated without projection.
        branches.append(CeilMaxPooling2D(3, 2, 0, name=p + "pool")(x))
    else:
        if pool == "avg":
            # AvgPool2d(3, 1, padding=1, count_include_pad=True): zeros count in the mean.
            b = layers.ZeroPadding2D(1, name=p + "pool_pad")(x)
            b = layers.AveragePooling2D(3, strides=1, padding="valid", name=p + "pool")(b)
        else:
            b = CeilMaxPooling2D(3, 1, 1, name=p + "pool")(x)
        branches.append(cbr(b, "pool_proj", pool_proj, 1))
    return layers.Concatenate(axis=-1, name=p + "output")(branches)


@keras.saving.register_keras_serializable(package="maivar_tf")
class BNInception(keras.Model):
    """BNInception feature extractor, TSN style (functional, registered, serializable).

    Args:
        include_preprocessing: when True the model takes RGB frames with values in 0..255
            (uint8 or float) and converts them to TSN's BGR, mean-subtracted input itself;
            when False it takes that BGR input directly.
        pooling: ``"avg"`` averages the final 7x7x1024 map into a 1024-d feature (TSN's
            ``global_pool``); ``None`` returns the map.
        image_size: the square input side (224 for the reference checkpoints).
        name: the model name.
        **kwargs: other ``keras.Model`` arguments (``trainable``, ``dtype``).

    Example:
        >>> model = BNInception()
        >>> model(np.zeros((2, 224, 224, 3), "uint8")).shape
        TensorShape([2, 1024])
    """

    def __init__(self, include_preprocessing: bool = True, pooling: str | None = "avg",
                 image_size: int = DEFAULT_IMAGE_SIZE, name: str = "bn_inception", **kwargs):
        if pooling not in ("avg", None):
            raise ValueError(f"BNInception.pooling: {pooling!r}; allowed: 'avg' or None")
        if int(image_size) < 32:
            raise ValueError(f"BNInception.image_size: {image_size!r}; allowed: an int >= 32")
        image_size = int(image_size)

        inputs = keras.Input(shape=(image_size, image_size, 3), name="frames")
        x = inputs
        if include_preprocessing:
            x = TSNPreprocessing(name="preprocessing")(x)  # 224x224x3, BGR - mean
        # Stage 1: 7x7/2 conv, 3x3/2 ceil max pool.
        x = _conv_bn_relu(x, "conv1_7x7_s2", "conv1_relu_7x7", 64, 7, stride=2)  # 112x112x64
        x = CeilMaxPooling2D(3, 2, 0, name="pool1_3x3_s2")(x)  # 56x56x64
        # Stage 2: 1x1 reduce, 3x3 conv, 3x3/2 ceil max pool.
        x = _conv_bn_relu(x, "conv2_3x3_reduce", "conv2_relu_3x3_reduce", 64, 1)  # 56x56x64
        x = _conv_bn_relu(x, "conv2_3x3", "conv2_relu_3x3", 192, 3)  # 56x56x192
        x = CeilMaxPooling2D(3, 2, 0, name="pool2_3x3_s2")(x)  # 28x28x192
        # Stages 3-5: inception blocks (shapes in _BLOCKS) -> 28x28x320, 14x14x608, 7x7x1024.
        for spec in _BLOCKS:
            x = _inception_block(x, *spec)
        if pooling == "avg":
            x = layers.GlobalAveragePooling2D(name="global_pool")(x)  # 1024
        super().__init__(inputs=inputs, outputs=x, name=name, **kwargs)

        self.include_preprocessing = bool(include_preprocessing)
        self.pooling = pooling
        self.image_size = image_size

    def get_config(self):
        return {
            "include_preprocessing": self.include_preprocessing,
            "pooling": self.pooling,
            "image_size": self.image_size,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_video_backbone(weights: str = "none", *, include_preprocessing: bool = True,
                         pooling: str | None = "avg",
                         image_size: int = DEFAULT_IMAGE_SIZE) -> BNInception:
    """Builds the BNInception video backbone and loads ``weights``.

    Args:
        weights: ``"none"`` (random initialisation) or a path to a ``.weights.h5`` made by
            ``maivar convert-weights`` (a ``.keras`` file of a BNInception also works).
            There is no ``imagenet`` download for BNInception: convert a PyTorch checkpoint.
        include_preprocessing: see :class:`BNInception`.
        pooling: see :class:`BNInception`.
        image_size: see :class:`BNInception` (e.g. ``cfg.data.crop_size``); weights do not
            depend on it.

    Returns:
        A BNInception mapping RGB 0..255 frames ``[B, 224, 224, 3]`` to ``[B, 1024]``.

    Raises:
        ValueError: ``weights`` is not allowed or the file does not fit the model.
        FileNotFoundError: the weights path does not exist.
    """
    from maivar_tf.models.weights import load_weights_file, parse_weights_spec

    spec = parse_weights_spec(weights, allow_imagenet=False, what="video backbone (BNInception)")
    model = BNInception(include_preprocessing=include_preprocessing, pooling=pooling,
                        image_size=image_size)
    if spec is not None:
        load_weights_file(model, spec, what="video backbone (BNInception)")
    return model
