"""Compute cost of models: multiply-accumulates (MACs) of one forward pass, from the layers.

Listen to Look (Gao et al., CVPR 2020) and SCSampler (Korbar et al., ICCV 2019) trade accuracy
for compute; issue 12 reports every selection's accuracy next to its MACs per video. The count
here is analytic: it walks a built functional Keras model's graph and adds, for every call of a
layer, the multiply-accumulates its static input and output shapes imply, for ONE example (the
batch axis is dropped):

=============================== ================================================================
layer                           MACs per call
=============================== ================================================================
``Conv1D/2D/3D`` (any strides,  output elements x kernel volume x input channels / groups (the
padding, dilation, groups)      output shape carries the strides and padding)
``Conv*Transpose``              input elements x kernel volume x output channels / groups
``DepthwiseConv1D/2D``          output elements x kernel volume
``SeparableConv1D/2D``          the depthwise part above + the 1x1 pointwise convolution
``Dense`` (on any leading dims) output elements x input width (``[B, K, D] -> [B, K, U]``: K x D x U)
a nested ``Model``              its own count, once per call (at the shapes it was built for)
=============================== ================================================================

Everything else counts 0: biases, Keras' built-in ``Normalization``/``Rescaling``/
``BatchNormalization``/``LayerNormalization``, activations, pooling, ``Add``/``Multiply``/
``Concatenate``, reshapes and this project's preprocessing layers (element-wise work, small
next to the convolutions; the usual convention of FLOP counters such as fvcore and ptflops
for MACs). A MAC is one multiply and one add: FLOPs as papers and model zoos quote them are
usually 2 x MACs.

:func:`backbone_macs` builds a backbone of :mod:`maivar_tf.models.backbones` with random
weights and counts it (cached per architecture, size and hyperparameters).

Example:
    >>> backbone_macs("video", 224)                      # BNInception per 224x224 frame
    2031576064
    >>> count_macs(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]))
    12
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras

__all__ = ["backbone_macs", "count_macs", "layer_macs"]

_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_TRANSPOSE = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
              keras.layers.Conv3DTranspose)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)


def _per_example(shape, layer: keras.layers.Layer) -> tuple[int, ...]:
    """``shape`` without its batch axis, every dimension static."""
    dims = tuple(shape)[1:]
    if any(d is None for d in dims):
        raise ValueError(f"count_macs: layer {layer.name!r} has a dynamic shape {tuple(shape)}; "
                         "build the model with a static input shape (only the batch may be "
                         "None)")
    return tuple(int(d) for d in dims)


def _channels(dims: Sequence[int], layer: keras.layers.Layer) -> int:
    first = getattr(layer, "data_format", "channels_last") == "channels_first"
    return dims[0] if first else dims[-1]


def _spatial(dims: Sequence[int], layer: keras.layers.Layer) -> int:
    first = getattr(layer, "data_format", "channels_last") == "channels_first"
    return math.prod(dims[1:] if first else dims[:-1])


def _call_macs(layer: keras.layers.Layer, in_shape, out_shape) -> int:
    """The MACs of one call of a (non-model) layer; 0 for the uncounted kinds."""
    if not isinstance(layer, (*_CONV, *_TRANSPOSE, *_DEPTHWISE, *_SEPARABLE,
                              keras.layers.Dense)):
        return 0
    inp, out = _per_example(in_shape, layer), _per_example(out_shape, layer)
    if isinstance(layer, keras.layers.Dense):
        return math.prod(out) * inp[-1]
    kernel = math.prod(layer.kernel_size)
    if isinstance(layer, _SEPARABLE):
        mid = _channels(inp, layer) * int(layer.depth_multiplier)
        return _spatial(out, layer) * mid * (kernel + int(layer.filters))
    if isinstance(layer, _DEPTHWISE):
        return math.prod(out) * kernel
    groups = int(getattr(layer, "groups", 1) or 1)
    if isinstance(layer, _TRANSPOSE):
        return math.prod(inp) * kernel * _channels(out, layer) // groups
    return math.prod(out) * kernel * _channels(inp, layer) // groups


def _graph_nodes(model: keras.Model) -> list:
    """The nodes of ``model``'s graph, inputs first (every call of every layer once)."""
    functional = model if hasattr(model, "_nodes_by_depth") else getattr(model, "_functional",
                                                                          None)
    if functional is None or not hasattr(functional, "_nodes_by_depth"):
        raise ValueError(f"count_macs: {model.name!r} is not a functional Keras model (build "
                         "a Sequential with keras.Input, or a functional keras.Model)")
    by_depth = functional._nodes_by_depth
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def _walk(model: keras.Model, prefix: str, out: dict[str, int]) -> None:
    for node in _graph_nodes(model):
        op = node.operation
        if node.is_input or not isinstance(op, keras.layers.Layer):
            continue
        name = f"{prefix}{op.name}"
        if isinstance(op, keras.Model):
            _walk(op, f"{name}/", out)
            continue
        ins, outs = node.input_tensors, node.output_tensors
        if not ins or not outs:
            continue
        macs = _call_macs(op, ins[0].shape, outs[0].shape)
        if macs:
            out[name] = out.get(name, 0) + macs


def layer_macs(model: keras.Model) -> dict[str, int]:
    """The MACs of one example through ``model``, per counted layer.

    Args:
        model: a built functional (or Sequential) Keras model with a static input shape.

    Returns:
        ``{layer name: MACs}`` in graph order, only layers that count (see the module doc);
        a nested model's layers as ``"<model>/<layer>"``; a layer called several times
        (shared) holds the sum of its calls.

    Raises:
        ValueError: a subclassed (non-functional) model, or a dynamic non-batch dimension.
    """
    out: dict[str, int] = {}
    _walk(model, "", out)
    return out


def count_macs(model: keras.Model) -> int:
    """The multiply-accumulates of one forward pass of ``model`` for one input example.

    Convolutions (incl. grouped, depthwise, separable, transposed) and ``Dense`` (on any
    leading dimensions) count; normalisation, activations, pooling, element-wise merges and
    biases do not (see the module doc). Nested models count at the shapes they were built for,
    once per call.

    Raises:
        ValueError: see :func:`layer_macs`.
    """
    return sum(layer_macs(model).values())


_CACHE: dict[tuple, int] = {}


def backbone_macs(kind: str, image_size: int, architecture: str | None = None,
                  **hyperparameters) -> int:
    """MACs of one image through a backbone of :func:`maivar_tf.models.backbones.build_backbone`.

    Builds it with random weights (the count does not depend on them) and counts it; cached
    per ``(kind, image_size, architecture, hyperparameters)`` for the process.

    Args:
        kind: ``video`` (BNInception) or ``audio``.
        image_size: the square input side (video: the crop size).
        architecture: the audio backbone (a ``model.audio_backbone`` value; default the
            kind's default, InceptionResNetV2 for audio).
        **hyperparameters: passed to the builder (BNInception's ``blocks``, ``stem_filters``).

    Raises:
        ValueError: an unknown kind or architecture, or a size the backbone does not take.
        TypeError: ``image_size`` is not an int (the call is ``backbone_macs(kind,
            image_size, architecture=...)``).
    """
    from maivar_tf.models.backbones import ARCHITECTURES, build_backbone

    if isinstance(image_size, bool) or not isinstance(image_size, int):
        raise TypeError(f"backbone_macs: image_size {image_size!r} is not an int; call "
                        "backbone_macs(kind, image_size, architecture=...)")
    if kind in ARCHITECTURES and architecture is None:
        architecture = ARCHITECTURES[kind]
    key = (kind, int(image_size), architecture, repr(sorted(hyperparameters.items())))
    if key not in _CACHE:
        model = build_backbone(kind, "none", int(image_size), architecture=architecture,
                               **hyperparameters)
        _CACHE[key] = count_macs(model)
        del model
    return _CACHE[key]
