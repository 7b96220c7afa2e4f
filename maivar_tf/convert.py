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
(``pip install 'maivar_tf[convert]'``), imported only when a checkpoint is read.

Example:
    maivar convert-weights ucf101_bninception_rgb_checkpoint.pth.tar weights/bninception_tsn
    # -> weights/bninception_tsn.weights.h5 ; then model.video_weights=weights/bninception_tsn.weights.h5
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TORCH_MISSING_MESSAGE = (
    "reading PyTorch checkpoints needs PyTorch, which is not installed; "
    "install the optional extra with: pip install 'maivar_tf[convert]'"
)


class ConversionError(RuntimeError):
    """A checkpoint that cannot be converted; the message says why and what would work."""


@dataclass(frozen=True)
class Layout:
    """Where a checkpoint family keeps the BNInception tensors.

    Args:
        name: the ``--layout`` value.
        prefixes: key prefixes in front of ``<layer>.<param>``, most common first.
        head_prefixes: key prefixes of classifier heads, which are expected to stay unused.
        description: where such checkpoints come from.
    """

    name: str
    prefixes: tuple[str, ...]
    head_prefixes: tuple[str, ...]
    description: str


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

# Keras weight order per layer type, with the PyTorch parameter feeding each.
_CONV_PARAMS = ("weight", "bias")  # -> kernel (OIHW -> HWIO), bias
_BN_PARAMS = ("weight", "bias", "running_mean", "running_var")  # -> gamma, beta, mean, var
_IGNORED_SUFFIXES = (".num_batches_tracked",)


@dataclass
class ConversionReport:
    """What a conversion used, missed and left over.

    Attributes:
        layout: the layout used (``tsn``, ``mmaction`` or ``cadene``).
        prefix: the key prefix in front of the layer names.
        matched: source keys copied into the Keras model.
        unmatched: Keras weights (``<layer>/<param>``) that had no source.
        unused_heads: source keys of classifier heads (expected to stay unused).
        unused: other source keys that were not used.
        ignored: ``num_batches_tracked`` counters, which Keras has no use for.
        output: the written ``.weights.h5``, when one was written.
    """

    layout: str
    prefix: str
    matched: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    unused_heads: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    output: Path | None = None

    @property
    def complete(self) -> bool:
        """True when every Keras weight received a source tensor."""
        return not self.unmatched

    def format(self) -> str:
        """A human-readable summary, one section per kind of key."""

        def listing(keys: list[str]) -> str:
            return ", ".join(keys) if keys else "none"

        lines = [
            f"layout: {self.layout} (key prefix {self.prefix!r}); {LAYOUTS[self.layout].description}",
            f"matched: {len(self.matched)} source tensors",
            f"unmatched Keras weights (no source): {len(self.unmatched)}: "
            f"{listing(self.unmatched)}",
            f"unused source keys, classifier heads (expected): {len(self.unused_heads)}: "
            f"{listing(self.unused_heads)}",
            f"unused source keys, other: {len(self.unused)}: {listing(self.unused)}",
            f"ignored: {len(self.ignored)} num_batches_tracked counters",
        ]
        if self.output is not None:
            lines.append(f"wrote: {self.output}")
        return "\n".join(lines)


def _import_torch():
    try:
        import torch
    except ImportError as e:
        raise ConversionError(TORCH_MISSING_MESSAGE) from e
    return torch


def load_state_dict(path: str | Path, *, trust_checkpoint: bool = False) -> dict[str, np.ndarray]:
    """Reads a PyTorch checkpoint into ``{key: float32 numpy array}``.

    Args:
        path: a ``.pth`` / ``.pth.tar`` file holding a state dict, or a dict with the state dict
            under ``"state_dict"`` (tsn-pytorch, mmaction) or ``"model"``.
        trust_checkpoint: unpickle arbitrary Python objects (``weights_only=False``). Only for
            checkpoints from a trusted source whose metadata PyTorch's safe loader rejects.

    Raises:
        ConversionError: PyTorch is missing, the file is unreadable or holds no tensors.
    """
    torch = _import_torch()
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"checkpoint {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_checkpoint)
    except Exception as e:
        hint = ("" if trust_checkpoint else
                "; if the file comes from a trusted source and holds extra Python objects, "
                "retry with --trust-checkpoint")
        raise ConversionError(f"could not read checkpoint {str(path)!r}: {e}{hint}") from e
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping):
        raise ConversionError(f"checkpoint {str(path)!r} holds a {type(obj).__name__}, "
                              "not a state dict")
    state = {}
    for key, value in obj.items():
        if isinstance(value, torch.Tensor):
            if key.endswith(_IGNORED_SUFFIXES):
                state[key] = value.detach().cpu().numpy()
            else:
                state[key] = value.detach().cpu().float().numpy()
    if not state:
        raise ConversionError(f"checkpoint {str(path)!r} holds no tensors")
    return state


def _targets(model) -> dict[str, tuple[Any, tuple[str, ...]]]:
    """``{layer_name: (layer, torch params in Keras weight order)}`` for weighted layers."""
    import keras

    targets = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            targets[layer.name] = (layer, _CONV_PARAMS)
        elif isinstance(layer, keras.layers.BatchNormalization):
            targets[layer.name] = (layer, _BN_PARAMS)
        elif layer.weights:
            raise ConversionError(f"unexpected weighted layer {layer.name!r} in {model.name}")
    return targets


def checkpoint_keys(model) -> set[str]:
    """The state-dict keys, without a layout prefix, that fill every weight of ``model``.

    Args:
        model: a :class:`~maivar_tf.models.bn_inception.BNInception` of any block table.

    Returns:
        ``{"conv1_7x7_s2.weight", "conv1_7x7_s2.bias", "conv1_7x7_s2_bn.running_mean", ...}``:
        ``<layer>.weight`` / ``.bias`` per convolution, ``<layer>.weight`` / ``.bias`` /
        ``.running_mean`` / ``.running_var`` per BatchNorm.

    Raises:
        ConversionError: the model has a weighted layer that is neither (not a BNInception).
    """
    return {f"{name}.{p}" for name, (_, params) in _targets(model).items() for p in params}


def detect_layout(keys, expected: Collection[str]) -> tuple[str, str]:
    """Picks the (layout, prefix) under which most ``keys`` are ``expected`` keys.

    Args:
        keys: the checkpoint's state-dict keys.
        expected: the unprefixed keys the model needs, :func:`checkpoint_keys`.

    Raises:
        ConversionError: no layout matches any key.
    """
    expected = set(expected)
    best = ("", "", 0)
    for layout in LAYOUTS.values():
        for prefix in layout.prefixes:
            n = _count_matches(keys, prefix, expected)
            if n > best[2]:
                best = (layout.name, prefix, n)
    if best[2] == 0:
        sample = ", ".join(list(keys)[:5]) or "(none)"
        raise ConversionError(
            "no BNInception weights found; first keys: " + sample + ". Expected keys like "
            "'module.base_model.conv1_7x7_s2.weight' (tsn), 'backbone.conv1_7x7_s2.weight' "
            "(mmaction) or 'conv1_7x7_s2.weight' (cadene)"
        )
    return best[0], best[1]


def _fit(key: str, value: np.ndarray, expected: tuple[int, ...], is_kernel: bool) -> np.ndarray:
    """Brings a source tensor into the Keras layout, or fails naming both shapes."""
    if is_kernel:
        h, w, i, o = expected
        if value.ndim != 4 or tuple(value.transpose(2, 3, 1, 0).shape) != expected:
            got = tuple(value.shape)
            hint = (" (a Flow/RGBDiff model? only RGB BNInception with 3 input channels converts)"
                    if i == 3 and len(got) == 4 and got[1] != 3 else "")
            raise ConversionError(f"{key}: shape {got} (OIHW); BNInception expects "
                                  f"{(o, i, h, w)}{hint}")
        return value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if tuple(value.shape) != expected:
        if value.size == int(np.prod(expected)) and tuple(np.squeeze(value).shape) == expected:
            return value.reshape(expected)  # Cadene's Caffe port stores BN tensors as [1, C]
        raise ConversionError(f"{key}: shape {tuple(value.shape)}; BNInception expects {expected}")
    return value


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
    targets = _targets(model)
    keys = list(state_dict)
    layout, prefix = _resolve_layout(keys, checkpoint_keys(model), layout)
    report = ConversionReport(layout=layout, prefix=prefix)

    used: set[str] = set()
    updates = []
    for name, (layer, params) in targets.items():
        values = [np.asarray(v) for v in layer.get_weights()]
        found = False
        for i, param in enumerate(params):
            key = f"{prefix}{name}.{param}"
            if key not in state_dict:
                report.unmatched.append(f"{name}/{param}")
                continue
            values[i] = _fit(key, np.asarray(state_dict[key], dtype=np.float32),
                             tuple(values[i].shape), is_kernel=(i == 0 and len(params) == 2))
            used.add(key)
            report.matched.append(key)
            found = True
        if found:
            updates.append((layer, values))
    _sort_unused(report, [k for k in keys if k not in used])

    if report.unmatched and not allow_partial:
        raise ConversionError(
            f"refusing a partial load: {len(report.unmatched)} of "
            f"{len(report.unmatched) + len(report.matched)} BNInception weights have no source "
            f"in the checkpoint (layout {layout}, prefix {prefix!r}): "
            f"{', '.join(report.unmatched[:20])}"
            + (" ..." if len(report.unmatched) > 20 else "")
            + ". Pass --allow-partial to keep initial values for them."
        )
    for layer, values in updates:
        layer.set_weights(values)
    return report


def _resolve_layout(keys: list[str], expected: set[str], layout: str) -> tuple[str, str]:
    """(layout, prefix): detected for ``"auto"``, else the named layout's best prefix."""
    if layout == "auto":
        return detect_layout(keys, expected)
    if layout not in LAYOUTS:
        raise ConversionError(f"--layout: {layout!r}; allowed: auto, {', '.join(LAYOUTS)}")
    prefixes = LAYOUTS[layout].prefixes
    count, prefix = max((_count_matches(keys, p, expected), p) for p in prefixes)
    return layout, prefix if count else prefixes[0]


def _count_matches(keys, prefix: str, expected: set[str]) -> int:
    return sum(1 for k in keys if k.startswith(prefix) and k[len(prefix):] in expected)


def _sort_unused(report: ConversionReport, unused: list[str]) -> None:
    """Files each unused source key as ignored, classifier head or other."""
    heads = LAYOUTS[report.layout].head_prefixes
    for key in unused:
        if key.endswith(_IGNORED_SUFFIXES):
            report.ignored.append(key)
        elif key.startswith(heads):
            report.unused_heads.append(key)
        else:
            report.unused.append(key)


def weights_output_path(out: str | Path) -> Path:
    """``<out>.weights.h5`` (``out`` itself when it already ends in ``.weights.h5``)."""
    out = Path(out)
    return out if out.name.endswith(".weights.h5") else out.with_name(out.name + ".weights.h5")


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
    path = weights_output_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(str(path))
    report.output = path
    return report


def build_parser() -> argparse.ArgumentParser:
    """The ``maivar convert-weights`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="maivar convert-weights",
        description="Convert a PyTorch BNInception checkpoint (tsn-pytorch, mmaction v1 or "
                    "Cadene pretrainedmodels) into a Keras .weights.h5 for model.video_weights.",
    )
    parser.add_argument("checkpoint", help="PyTorch .pth / .pth.tar file")
    parser.add_argument("output", help="output path; '.weights.h5' is appended unless present")
    parser.add_argument("--layout", default="auto", choices=("auto", *LAYOUTS),
                        help="key layout of the checkpoint (default: detect from the keys)")
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
            network; a program converting another block table passes its model).
    """
    args = build_parser().parse_args(argv)
    try:
        report = convert_checkpoint(args.checkpoint, args.output, layout=args.layout,
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
