"""``maivar convert-weights``: PyTorch BNInception checkpoints -> Keras ``.weights.h5``.

Reads a PyTorch BNInception state dict (``.pth``/``.pth.tar``, optionally wrapped as
``{"state_dict": ...}``) in any of the three key layouts MAiVAR's video backbone comes in:

========== ==================================== ======================================
layout     backbone keys                        classifier keys (expected unused)
========== ==================================== ======================================
tsn        ``module.base_model.<layer>.<param>`` ``module.new_fc.*`` (yjxiong/tsn-pytorch)
mmaction   ``backbone.<layer>.<param>``          ``cls_head.fc_cls.*`` (open-mmlab/mmaction v1)
cadene     ``<layer>.<param>``                   ``last_linear.*`` / ``fc.*`` (Cadene
                                                 ``pretrainedmodels``, tsn ``tf_model_zoo``)
========== ==================================== ======================================

MAiVAR (Shaikh et al., 2024) takes its video stream from such TSN BNInceptions. ``<layer>`` is the
reference layer name (``conv1_7x7_s2``, ``inception_3a_1x1_bn``, ...), which
:class:`~maivar_tf.models.bn_inception.BNInception` uses verbatim; :func:`checkpoint_keys` lists
them for a model. The command fills the reference network; a checkpoint of another block table
converts with ``convert_checkpoint(..., model=BNInception(blocks=...))``. Convolution weights go
from PyTorch's OIHW to Keras' HWIO, biases as they are, BatchNorm ``weight``/``bias``/
``running_mean``/``running_var`` to ``gamma``/``beta``/``moving_mean``/``moving_variance``
(``num_batches_tracked`` is ignored; Cadene's Caffe port stores BN tensors as ``[1, C]``, which is
accepted). The layout is detected from the keys unless ``--layout`` names it.

Every Keras weight without a source is reported as *unmatched*, every source key not used as
*unused* (classifier heads are expected there). A checkpoint that leaves Keras weights
unmatched is refused unless ``--allow-partial``. PyTorch is an optional dependency
(``pip install 'maivar_tf[convert]'``), imported only when a checkpoint is read. The generic
machinery (reading, copying, the report) is :mod:`maivar_tf.conversion`, shared with
:mod:`maivar_tf.convert_resnet` (torchvision ResNet18, ``--arch resnet18``).

Example:
    maivar convert-weights ucf101_bninception_rgb_checkpoint.pth.tar weights/bninception_tsn
    # -> weights/bninception_tsn.weights.h5 ; then model.video_weights=weights/bninception_tsn.weights.h5
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Collection, Mapping
from pathlib import Path

import numpy as np

from maivar_tf import conversion
from maivar_tf.conversion import (  # noqa: F401  (re-exported: the converter's public names)
    TORCH_MISSING_MESSAGE,
    ConversionError,
    ConversionReport,
    Layout,
    checkpoint_keys,
    load_state_dict,
    weights_output_path,
)
from maivar_tf.conversion import targets as _targets  # noqa: F401

LAYOUTS: dict[str, Layout] = {
    "tsn": Layout(
        "tsn",
        ("module.base_model.", "base_model."),
        ("module.new_fc.", "new_fc.", "module.base_model.fc.", "base_model.fc."),
        "yjxiong/tsn-pytorch TSN checkpoint (module.base_model.<layer>.*, module.new_fc.*)",
    ),
    "mmaction": Layout(
        "mmaction",
        ("backbone.", "module.backbone."),
        ("cls_head.", "module.cls_head."),
        "open-mmlab/mmaction v1 checkpoint (backbone.<layer>.*, cls_head.fc_cls.*)",
    ),
    "cadene": Layout(
        "cadene",
        ("", "module."),
        ("last_linear.", "fc.", "module.last_linear.", "module.fc."),
        "Cadene pretrainedmodels / tsn tf_model_zoo BNInception (<layer>.*, last_linear.*)",
    ),
}
#: BNInception as a converter family (:mod:`maivar_tf.conversion`).
FAMILY = conversion.Family(
    "BNInception", LAYOUTS,
    "'module.base_model.conv1_7x7_s2.weight' (tsn), 'backbone.conv1_7x7_s2.weight' "
    "(mmaction) or 'conv1_7x7_s2.weight' (cadene)")
#: The ``--arch`` values: BNInception (video) and ResNet18 (audio, :mod:`maivar_tf.convert_resnet`).
ARCHS = ("bn_inception", "resnet18")


def detect_layout(keys, expected: Collection[str]) -> tuple[str, str]:
    """Picks the (layout, prefix) under which most ``keys`` are ``expected`` keys.

    Args:
        keys: the checkpoint's state-dict keys.
        expected: the unprefixed keys the model needs, :func:`checkpoint_keys`.

    Raises:
        ConversionError: no layout matches any key.
    """
    return conversion.detect_layout(keys, expected, FAMILY)


def apply_state_dict(model, state_dict: Mapping[str, np.ndarray], *, layout: str = "auto",
                     allow_partial: bool = False) -> ConversionReport:
    """Copies a PyTorch BNInception state dict into a Keras ``BNInception``.

    Args:
        model: a :class:`~maivar_tf.models.bn_inception.BNInception` (any preprocessing or
            pooling setting).
        state_dict: ``{key: array}`` as returned by :func:`load_state_dict`.
        layout: ``"auto"`` or one of ``tsn``, ``mmaction``, ``cadene``.
        allow_partial: load even when some Keras weights have no source (they keep their
            initial values); otherwise such a checkpoint is refused and nothing is changed.

    Returns:
        The :class:`ConversionReport`.

    Raises:
        ConversionError: unknown layout, no matching keys, shape mismatches, or a partial
            checkpoint without ``allow_partial``.
    """
    return conversion.apply_state_dict(model, state_dict, FAMILY, layout=layout,
                                       allow_partial=allow_partial)


def convert_checkpoint(checkpoint: str | Path, out: str | Path, *, layout: str = "auto",
                       allow_partial: bool = False, trust_checkpoint: bool = False,
                       model=None) -> ConversionReport:
    """Converts a PyTorch BNInception checkpoint into a Keras ``.weights.h5``.

    Args:
        checkpoint: the PyTorch file.
        out: the output path; ``.weights.h5`` is appended unless already there.
        layout: ``"auto"`` or one of ``tsn``, ``mmaction``, ``cadene``.
        allow_partial: see :func:`apply_state_dict`.
        trust_checkpoint: see :func:`load_state_dict`.
        model: the Keras BNInception to fill and save; default the reference network
            (``BNInception()``). A checkpoint of another block table needs a model built with
            that table, and the file then loads into that table only.

    Returns:
        The :class:`ConversionReport`, with ``output`` set.

    Raises:
        ConversionError: see :func:`load_state_dict` and :func:`apply_state_dict`.
    """
    from maivar_tf.models.bn_inception import BNInception

    state = load_state_dict(checkpoint, trust_checkpoint=trust_checkpoint)
    if model is None:
        model = BNInception()
    report = apply_state_dict(model, state, layout=layout, allow_partial=allow_partial)
    return conversion.save_converted(model, report, out)


def build_parser() -> argparse.ArgumentParser:
    """The ``maivar convert-weights`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="maivar convert-weights",
        description="Convert a PyTorch BNInception checkpoint (tsn-pytorch, mmaction v1 or "
                    "Cadene pretrainedmodels) into a Keras .weights.h5 for model.video_weights, "
                    "or (--arch resnet18) a torchvision ResNet18 one for model.audio_weights.",
    )
    parser.add_argument("checkpoint", help="PyTorch .pth / .pth.tar file")
    parser.add_argument("output", help="output path; '.weights.h5' is appended unless present")
    parser.add_argument("--arch", default="bn_inception", choices=ARCHS,
                        help="the network of the checkpoint (default: bn_inception)")
    parser.add_argument("--layout", default="auto",
                        help="key layout of the checkpoint (default: detect from the keys); "
                             f"bn_inception: {', '.join(LAYOUTS)}; resnet18: torchvision")
    parser.add_argument("--allow-partial", action="store_true",
                        help="write the file even when some Keras weights have no source")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="unpickle arbitrary objects (torch.load weights_only=False); "
                             "only for trusted files")
    return parser


def main(argv: list[str] | None = None, *, model=None) -> int:
    """Runs ``maivar convert-weights``; returns 0 on success, 1 when conversion fails.

    Args:
        argv: the command-line arguments (default ``sys.argv[1:]``).
        model: see :func:`convert_checkpoint` (the command line always uses the reference
            network of ``--arch``; a program converting another block table passes its model).
    """
    args = build_parser().parse_args(argv)
    convert = convert_checkpoint
    if args.arch == "resnet18":
        from maivar_tf.convert_resnet import convert_resnet18_checkpoint as convert
    try:
        report = convert(args.checkpoint, args.output, layout=args.layout,
                         allow_partial=args.allow_partial,
                         trust_checkpoint=args.trust_checkpoint, model=model)
    except ConversionError as e:
        print(f"maivar convert-weights: error: {e}", file=sys.stderr)
        return 1
    print(report.format())
    if report.unmatched:
        print(f"warning: partial load; {len(report.unmatched)} Keras weights keep their "
              "initial values", file=sys.stderr)
    if report.unused:
        print(f"warning: {len(report.unused)} source keys outside the classifier head were "
              "not used", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
