"""BNInception for inference with its BatchNorm layers folded into the convolutions.

At inference a BatchNorm after a convolution is an affine map per channel,
``y = gamma * (x - mean) / sqrt(var + eps) + beta``, so it folds into that convolution:
``W' = W * s`` and ``b' = (b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``
(Jacob et al. 2018, Sec. 3.2). The folded network computes the same function with one layer
fewer per convolution. That matters most in bfloat16 on CPU: there the convolutions run on the
bfloat16 units while the 69 BatchNorms stay memory-bound (and round their statistics to
bfloat16), so the folded BNInception runs about 1.4x faster than the unfolded one in bfloat16
against about 1.08x in float32 (``benchmarks/bench_backbones.py --fold``).

The folding is done in float32 from the float32 variables of the trained (or converted)
network; a bfloat16 model then keeps float32 folded variables and computes in bfloat16.
:func:`maivar_tf.models.backbones.build_backbone` folds the video backbone of every bfloat16
inference build (extraction, predict, the export); float32 builds stay unfolded, so served
features equal the stored float32 ones bit for bit. Training (fine-tuning) always uses the
unfolded network, whose BatchNorms are layers.

Example:
    >>> folded = fold_batch_norm(build_video_backbone(weights), precision="bfloat16")
"""

from __future__ import annotations

import keras
import numpy as np

from maivar_tf.models.bn_inception import BNInception
from maivar_tf.models.precision import precision_scope

#: The suffix of the BatchNorm after each convolution (``<conv>_bn``).
BN_SUFFIX = "_bn"


def folded_conv_weights(kernel: np.ndarray, bias: np.ndarray, gamma: np.ndarray,
                        beta: np.ndarray, mean: np.ndarray, var: np.ndarray,
                        epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """The kernel and bias of ``BatchNorm(Conv(x))`` as one convolution (float32).

    Args:
        kernel: the convolution's ``[kh, kw, cin, cout]`` kernel.
        bias: its ``[cout]`` bias.
        gamma, beta, mean, var: the BatchNorm's ``[cout]`` scale, offset and moving statistics.
        epsilon: the BatchNorm's epsilon.
    """
    scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + epsilon)
    new_kernel = np.asarray(kernel, np.float64) * scale
    new_bias = (np.asarray(bias, np.float64) - mean) * scale + beta
    return new_kernel.astype(np.float32), new_bias.astype(np.float32)


def fold_batch_norm(model: BNInception, precision: str = "float32") -> BNInception:
    """``model`` with every BatchNorm folded into its convolution, built in ``precision``.

    Args:
        model: an unfolded BNInception (any block table), its weights loaded.
        precision: the folded model's precision (:mod:`maivar_tf.models.precision`).

    Returns:
        A :class:`BNInception` with ``fold_batch_norm=True`` computing the same function
        (to float rounding) with no BatchNorm layer.

    Raises:
        ValueError: ``model`` is folded already or is not a BNInception.
    """
    if not isinstance(model, BNInception) or model.fold_batch_norm:
        raise ValueError("fold_batch_norm: needs an unfolded BNInception; got "
                         f"{type(model).__name__} {getattr(model, 'name', '')!r}")
    config = {**model.get_config(), "fold_batch_norm": True}
    with precision_scope(precision):
        folded = BNInception.from_config(config)
    layers = {layer.name: layer for layer in model.layers}
    for layer in folded.layers:
        source = layers[layer.name]
        if isinstance(layer, keras.layers.Conv2D):
            bn = layers[layer.name + BN_SUFFIX]
            kernel, bias = (np.asarray(v) for v in source.weights)
            gamma, beta, mean, var = (np.asarray(v) for v in
                                      (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
            layer.set_weights(list(folded_conv_weights(kernel, bias, gamma, beta, mean, var,
                                                       bn.epsilon)))
        elif layer.weights:
            layer.set_weights(source.get_weights())
    return folded
