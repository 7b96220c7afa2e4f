"""BNInception (Inception with Batch Normalization), the TSN video backbone.

The network of Ioffe & Szegedy (2015, "Batch Normalization: Accelerating Deep Network Training
by Reducing Internal Covariate Shift") in the Caffe-derived form used by Temporal Segment
Networks (Wang et al., 2016) and therefore by MAiVAR's video stream (Shaikh et al., 2024,
"Multimodal fusion for audio-image and video action recognition"): every ``conv1_7x7_s2``,
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

The architecture is a hyperparameter: ``blocks`` is the inception block table (one row per
block, :data:`BLOCK_FIELDS`) and ``stem_filters`` the widths of the three stem convolutions.
The defaults, :data:`REFERENCE_BLOCKS` and :data:`REFERENCE_STEM_FILTERS`, are the reference
network whose checkpoints convert; :data:`TINY_BLOCKS` / :data:`TINY_STEM_FILTERS` describe a
network of the same kinds of layers small enough to build in every test.

Input convention: RGB frames with values in 0..255. With ``include_preprocessing=True`` (the
default) a :class:`TSNPreprocessing` layer turns them into TSN's BGR, mean ``[104, 117, 128]``,
std 1 input; with ``include_preprocessing=False`` the model expects that BGR input already.
"""

from __future__ import annotations

import math
import numbers
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

#: The columns of a block-table row. ``n1x1 = 0`` drops the 1x1 branch and ``pool_proj = 0``
#: concatenates the pooled input unprojected. ``stride`` 2 makes a reduction block: no 1x1
#: branch, no projection, its 3x3 and second double-3x3 convolutions stride 2 and its pool is a
#: 3x3/2 ceil-mode max pool. ``pool`` of a stride-1 block: ``"avg"`` = 3x3/1 pad 1 average
#: (padding counted), ``"max"`` = 3x3/1 pad 1 ceil-mode max.
BLOCK_FIELDS: tuple[str, ...] = ("name", "n1x1", "n3x3_reduce", "n3x3", "double_3x3_reduce",
                                 "double_3x3", "pool", "pool_proj", "stride")
POOL_TYPES: tuple[str, ...] = ("avg", "max")

#: The reference network's blocks (Ioffe & Szegedy 2015, in TSN's Caffe form); the
#: comment is each block's output at the 224x224 input.
REFERENCE_BLOCKS: tuple[tuple[str, int, int, int, int, int, str, int, int], ...] = (
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
#: Filters of ``conv1_7x7_s2``, ``conv2_3x3_reduce`` and ``conv2_3x3``.
REFERENCE_STEM_FILTERS: tuple[int, int, int] = (64, 64, 192)

#: A small table with one block of each kind (average-pool, reduction, max-pool), for tests
#: and smoke runs; no checkpoint exists for it. Outputs at a 32x32 input in the comments.
TINY_BLOCKS: tuple[tuple[str, int, int, int, int, int, str, int, int], ...] = (
    ("3a", 4, 4, 4, 4, 4, "avg", 4, 1),  # 4x4x16
    ("3c", 0, 4, 4, 4, 4, "max", 0, 2),  # 2x2x24
    ("5b", 4, 4, 4, 4, 4, "max", 4, 1),  # 2x2x16
)
TINY_STEM_FILTERS: tuple[int, int, int] = (4, 4, 8)
#: The input side :data:`TINY_BLOCKS` is tested at.
TINY_IMAGE_SIZE = 32


def _check_row(i: int, row: Sequence, names: list) -> tuple:
    """One validated table row with plain ``int`` widths; the error names the row and rule."""
    where = f"BNInception.blocks[{i}] {tuple(row)!r}"
    if len(row) != len(BLOCK_FIELDS):
        raise ValueError(f"{where}: {len(row)} values; allowed: {', '.join(BLOCK_FIELDS)}")
    name, pool, widths = row[0], row[6], (*row[1:6], row[7], row[8])
    if not isinstance(name, str) or not name or names.count(name) > 1:
        raise ValueError(f"{where}: name must be a unique non-empty string")
    if not all(isinstance(w, numbers.Integral) and w >= 0 for w in widths):
        raise ValueError(f"{where}: filters and stride must be ints >= 0")
    n1x1, n3r, n3, nd3r, nd3, proj, stride = (int(w) for w in widths)
    if min(n3r, n3, nd3r, nd3) < 1 or pool not in POOL_TYPES or stride not in (1, 2):
        raise ValueError(f"{where}: the 3x3 branches need >= 1 filters, pool allowed: "
                         f"{', '.join(POOL_TYPES)}, stride allowed: 1 or 2")
    if stride == 2 and (n1x1 or proj or pool != "max"):
        raise ValueError(f"{where}: a stride-2 (reduction) block needs n1x1 = 0, "
                         "pool_proj = 0 and pool 'max'")
    return (name, n1x1, n3r, n3, nd3r, nd3, pool, proj, stride)


def _check_blocks(blocks: Sequence[Sequence]) -> tuple[tuple, ...]:
    """Validated block table as a tuple of tuples (see :func:`_check_row`)."""
    rows = [tuple(row) for row in blocks]
    if not rows:
        raise ValueError("BNInception.blocks: empty; allowed: one or more rows of "
                         f"{', '.join(BLOCK_FIELDS)}")
    names = [row[0] if row else None for row in rows]
    return tuple(_check_row(i, row, names) for i, row in enumerate(rows))


def _check_stem(stem_filters: Sequence[int]) -> tuple[int, int, int]:
    stem = tuple(stem_filters)
    if len(stem) != 3 or not all(isinstance(f, numbers.Integral) and f >= 1 for f in stem):
        raise ValueError(f"BNInception.stem_filters: {stem_filters!r}; allowed: three ints >= 1 "
                         "(conv1_7x7_s2, conv2_3x3_reduce, conv2_3x3)")
    return tuple(int(f) for f in stem)


def _check_sizes(image_size: int, blocks: tuple[tuple, ...]) -> None:
    """Raises when a reduction block's branches would disagree on the map size."""
    size = (image_size + 2 * 3 - 7) // 2 + 1  # conv1_7x7_s2, pad 3
    size = _ceil_pool_output(_ceil_pool_output(size, 3, 2, 0), 3, 2, 0)  # pool1, pool2
    for row in blocks:
        if row[-1] == 2:
            conv, pool = (size + 2 - 3) // 2 + 1, _ceil_pool_output(size, 3, 2, 0)
            if conv != pool or pool < 1:
                raise ValueError(
                    f"BNInception.image_size: {image_size} gives a {size}x{size} map at "
                    f"reduction block {row[0]!r}, whose convolution ({conv}) and pool ({pool}) "
                    "outputs differ; allowed: a side that keeps every reduction input even "
                    "(224 for the reference blocks)")
            size = pool


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


def _conv_bn_relu(x, name: str, relu_name: str, filters: int, kernel: int, stride: int = 1,
                  fold: bool = False):
    """``name`` (Conv2D with bias) -> ``name_bn`` (BatchNorm) -> ``relu_name`` (ReLU); with
    ``fold`` the BatchNorm is left out (folded into the convolution, :mod:`.bn_folding`)."""
    if stride == 1:
        padding = "same"  # symmetric (kernel - 1) / 2 for odd kernels, as in PyTorch
    else:
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        padding = "valid"
    x = layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=True, name=name)(x)
    if fold:
        return layers.ReLU(name=relu_name)(x)
    x = layers.BatchNormalization(
        axis=-1, epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, name=f"{name}_bn"
    )(x)
    return layers.ReLU(name=relu_name)(x)


def _inception_block(x, block: str, n1x1: int, n3x3r: int, n3x3: int, nd3x3r: int, nd3x3: int,
                     pool: str, pool_proj: int, stride: int, fold: bool = False):
    """One inception module (a :data:`BLOCK_FIELDS` row) named ``inception_<block>_*``."""
    p = f"inception_{block}_"

    def cbr(inp, suffix, filters, kernel, s=1):
        return _conv_bn_relu(inp, p + suffix, p + "relu_" + suffix, filters, kernel, s, fold)

    branches = []
    if n1x1:
        branches.append(cbr(x, "1x1", n1x1, 1))
    b = cbr(x, "3x3_reduce", n3x3r, 1)
    branches.append(cbr(b, "3x3", n3x3, 3, stride))
    b = cbr(x, "double_3x3_reduce", nd3x3r, 1)
    b = cbr(b, "double_3x3_1", nd3x3, 3)
    branches.append(cbr(b, "double_3x3_2", nd3x3, 3, stride))
    if stride == 2:
        # Reduction: 3x3/2 ceil-mode max pool.
        b = CeilMaxPooling2D(3, 2, 0, name=p + "pool")(x)
    elif pool == "avg":
        # AvgPool2d(3, 1, padding=1, count_include_pad=True): zeros count in the mean.
        b = layers.ZeroPadding2D(1, name=p + "pool_pad")(x)
        b = layers.AveragePooling2D(3, strides=1, padding="valid", name=p + "pool")(b)
    else:
        b = CeilMaxPooling2D(3, 1, 1, name=p + "pool")(x)
    branches.append(cbr(b, "pool_proj", pool_proj, 1) if pool_proj else b)
    return layers.Concatenate(axis=-1, name=p + "output")(branches)


def _bn_inception_graph(inputs, blocks, stem, include_preprocessing: bool, pooling,
                        fold: bool = False):
    """The functional graph from ``inputs``; shapes in the comments are the reference's."""
    x = inputs
    if include_preprocessing:
        x = TSNPreprocessing(name="preprocessing")(x)  # 224x224x3, BGR - mean
    # Stage 1: 7x7/2 conv, 3x3/2 ceil max pool.
    x = _conv_bn_relu(x, "conv1_7x7_s2", "conv1_relu_7x7", stem[0], 7, 2, fold)  # 112x112x64
    x = CeilMaxPooling2D(3, 2, 0, name="pool1_3x3_s2")(x)  # 56x56x64
    # Stage 2: 1x1 reduce, 3x3 conv, 3x3/2 ceil max pool.
    x = _conv_bn_relu(x, "conv2_3x3_reduce", "conv2_relu_3x3_reduce", stem[1], 1, 1, fold)
    x = _conv_bn_relu(x, "conv2_3x3", "conv2_relu_3x3", stem[2], 3, 1, fold)  # 56x56x192
    x = CeilMaxPooling2D(3, 2, 0, name="pool2_3x3_s2")(x)  # 28x28x192
    # Stages 3-5: the inception blocks (shapes in REFERENCE_BLOCKS) -> 7x7x1024.
    for row in blocks:
        x = _inception_block(x, *row, fold=fold)
    if pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="global_pool")(x)  # 1024
    return x


@keras.saving.register_keras_serializable(package="maivar_tf")
class BNInception(keras.Model):
    """BNInception feature extractor, TSN style (functional, registered, serializable).

    Every constructor argument is a hyperparameter; ``get_config`` returns exactly them (tables
    as lists) and ``from_config`` is ``cls(**config)``. Weights never enter the config: load
    them with :func:`build_video_backbone` or ``load_weights``.

    Args:
        blocks: the inception block table, one row of :data:`BLOCK_FIELDS` per block, in order
            (default :data:`REFERENCE_BLOCKS`; :data:`TINY_BLOCKS` for tests).
        stem_filters: filters of ``conv1_7x7_s2``, ``conv2_3x3_reduce`` and ``conv2_3x3``
            (default :data:`REFERENCE_STEM_FILTERS`).
        image_size: the square input side (224 for the reference checkpoints); every
            reduction block must receive an even-sized map.
        include_preprocessing: when True the model takes RGB frames with values in 0..255
            (uint8 or float) and converts them to TSN's BGR, mean-subtracted input itself;
            when False it takes that BGR input directly.
        pooling: ``"avg"`` averages the final map (7x7x1024 for the reference) into a feature
            vector (TSN's ``global_pool``); ``None`` returns the map.
        fold_batch_norm: build the inference graph whose BatchNorm layers are folded into
            the convolutions before them (no ``*_bn`` layers; its weights come from
            :func:`maivar_tf.models.bn_folding.fold_batch_norm`, not from a checkpoint).
        name: the model name.
        **kwargs: other ``keras.Model`` arguments (``trainable``, ``dtype``).

    Raises:
        ValueError: a hyperparameter outside its allowed values (the message names it).

    Example:
        >>> model = BNInception()
        >>> model(np.zeros((2, 224, 224, 3), "uint8")).shape
        TensorShape([2, 1024])
        >>> BNInception(blocks=TINY_BLOCKS, stem_filters=TINY_STEM_FILTERS, image_size=32)
    """

    def __init__(self, blocks: Sequence[Sequence] = REFERENCE_BLOCKS,
                 stem_filters: Sequence[int] = REFERENCE_STEM_FILTERS,
                 image_size: int = DEFAULT_IMAGE_SIZE, include_preprocessing: bool = True,
                 pooling: str | None = "avg", fold_batch_norm: bool = False,
                 name: str = "bn_inception", **kwargs):
        if pooling not in ("avg", None):
            raise ValueError(f"BNInception.pooling: {pooling!r}; allowed: 'avg' or None")
        if not isinstance(image_size, numbers.Integral) or image_size < 32:
            raise ValueError(f"BNInception.image_size: {image_size!r}; allowed: an int >= 32")
        image_size = int(image_size)
        rows, stem = _check_blocks(blocks), _check_stem(stem_filters)
        _check_sizes(image_size, rows)

        inputs = keras.Input(shape=(image_size, image_size, 3), name="frames")
        outputs = _bn_inception_graph(inputs, rows, stem, include_preprocessing, pooling,
                                      bool(fold_batch_norm))
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)

        self.blocks = rows
        self.stem_filters = stem
        self.image_size = image_size
        self.include_preprocessing = bool(include_preprocessing)
        self.pooling = pooling
        self.fold_batch_norm = bool(fold_batch_norm)

    def get_config(self):
        return {
            "blocks": [list(row) for row in self.blocks],
            "stem_filters": list(self.stem_filters),
            "image_size": self.image_size,
            "include_preprocessing": self.include_preprocessing,
            "pooling": self.pooling,
            "fold_batch_norm": self.fold_batch_norm,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_video_backbone(weights: str = "none", *, include_preprocessing: bool = True,
                         pooling: str | None = "avg", image_size: int = DEFAULT_IMAGE_SIZE,
                         blocks: Sequence[Sequence] = REFERENCE_BLOCKS,
                         stem_filters: Sequence[int] = REFERENCE_STEM_FILTERS) -> BNInception:
    """Builds the BNInception video backbone and loads ``weights``.

    Args:
        weights: ``"none"`` (random initialisation) or a path to a ``.weights.h5`` made by
            ``maivar convert-weights`` (a ``.keras`` file of a BNInception also works).
            There is no ``imagenet`` download for BNInception: convert a PyTorch checkpoint.
        include_preprocessing: see :class:`BNInception`.
        pooling: see :class:`BNInception`.
        image_size: see :class:`BNInception` (e.g. ``cfg.data.crop_size``); weights do not
            depend on it.
        blocks: see :class:`BNInception`; a weights file must come from the same table.
        stem_filters: see :class:`BNInception`.

    Returns:
        A BNInception mapping RGB 0..255 frames ``[B, S, S, 3]`` to ``[B, 1024]`` (the
        reference table) or to the feature map when ``pooling`` is None.

    Raises:
        ValueError: ``weights`` is not allowed or the file does not fit the model.
        FileNotFoundError: the weights path does not exist.
    """
    from maivar_tf.models.weights import load_weights_file, parse_weights_spec

    spec = parse_weights_spec(weights, allow_imagenet=False, what="video backbone (BNInception)")
    model = BNInception(blocks=blocks, stem_filters=stem_filters, image_size=image_size,
                        include_preprocessing=include_preprocessing, pooling=pooling)
    if spec is not None:
        load_weights_file(model, spec, what="video backbone (BNInception)")
    return model
