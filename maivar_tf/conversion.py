"""The generic machinery of the PyTorch -> Keras weight converters.

A converter knows a model family (its key layouts, the Keras layer names that equal the PyTorch
module names); this module does the rest for any family whose weighted layers are ``Conv2D``
(PyTorch OIHW -> Keras HWIO, with or without bias) and ``BatchNormalization`` (``weight`` /
``bias`` / ``running_mean`` / ``running_var`` -> ``gamma`` / ``beta`` / ``moving_mean`` /
``moving_variance``): reading a checkpoint into numpy (:func:`load_state_dict`), detecting its
key layout, copying every tensor with shape checks, refusing partial loads, and the report of
what matched. :mod:`maivar_tf.convert` (BNInception, the video backbone) and
:mod:`maivar_tf.convert_resnet` (torchvision ResNet18, an audio backbone) are the two families.
PyTorch is imported only when a checkpoint is read.
"""

from __future__ import annotations

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
    """Where a checkpoint family keeps the backbone tensors.

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


@dataclass(frozen=True)
class Family:
    """A model family the converter fills: its name (for messages) and its key layouts.

    Args:
        what: the model, as messages name it (``BNInception``, ``ResNet18``).
        layouts: ``{layout name: Layout}``, tried in order when detecting one.
        example_keys: what the keys of each layout look like (for "no weights found").
    """

    what: str
    layouts: Mapping[str, Layout]
    example_keys: str


# Keras weight order per layer type, with the PyTorch parameter feeding each.
_CONV_PARAMS = ("weight", "bias")  # -> kernel (OIHW -> HWIO), bias (when the conv has one)
_BN_PARAMS = ("weight", "bias", "running_mean", "running_var")  # -> gamma, beta, mean, var
IGNORED_SUFFIXES = (".num_batches_tracked",)


@dataclass
class ConversionReport:
    """What a conversion used, missed and left over.

    Attributes:
        layout: the layout used (e.g. ``tsn``, ``torchvision``).
        prefix: the key prefix in front of the layer names.
        description: where checkpoints of that layout come from.
        matched: source keys copied into the Keras model.
        unmatched: Keras weights (``<layer>/<param>``) that had no source.
        unused_heads: source keys of classifier heads (expected to stay unused).
        unused: other source keys that were not used.
        ignored: ``num_batches_tracked`` counters, which Keras has no use for.
        output: the written ``.weights.h5``, when one was written.
    """

    layout: str
    prefix: str
    description: str = ""
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
            f"layout: {self.layout} (key prefix {self.prefix!r}); {self.description}",
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


def import_torch():
    """``torch``, or a :class:`ConversionError` with the install hint."""
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
    torch = import_torch()
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
            if key.endswith(IGNORED_SUFFIXES):
                state[key] = value.detach().cpu().numpy()
            else:
                state[key] = value.detach().cpu().float().numpy()
    if not state:
        raise ConversionError(f"checkpoint {str(path)!r} holds no tensors")
    return state


def targets(model) -> dict[str, tuple[Any, tuple[str, ...]]]:
    """``{layer_name: (layer, torch params in Keras weight order)}`` for weighted layers.

    Raises:
        ConversionError: a weighted layer that is neither a convolution nor a BatchNorm.
    """
    import keras

    out = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            out[layer.name] = (layer, _CONV_PARAMS[:len(layer.weights)])  # bias-free convs
        elif isinstance(layer, keras.layers.BatchNormalization):
            out[layer.name] = (layer, _BN_PARAMS)
        elif layer.weights:
            raise ConversionError(f"unexpected weighted layer {layer.name!r} in {model.name}")
    return out


def checkpoint_keys(model) -> set[str]:
    """The state-dict keys, without a layout prefix, that fill every weight of ``model``:
    ``<layer>.weight`` (and ``.bias``) per convolution, ``<layer>.weight`` / ``.bias`` /
    ``.running_mean`` / ``.running_var`` per BatchNorm."""
    return {f"{name}.{p}" for name, (_, params) in targets(model).items() for p in params}


def detect_layout(keys, expected: Collection[str], family: Family) -> tuple[str, str]:
    """Picks the (layout, prefix) under which most ``keys`` are ``expected`` keys.

    Raises:
        ConversionError: no layout matches any key.
    """
    expected = set(expected)
    best = ("", "", 0)
    for layout in family.layouts.values():
        for prefix in layout.prefixes:
            n = _count_matches(keys, prefix, expected)
            if n > best[2]:
                best = (layout.name, prefix, n)
    if best[2] == 0:
        sample = ", ".join(list(keys)[:5]) or "(none)"
        raise ConversionError(f"no {family.what} weights found; first keys: {sample}. "
                              f"Expected keys like {family.example_keys}")
    return best[0], best[1]


def _fit(key: str, value: np.ndarray, expected: tuple[int, ...], is_kernel: bool,
         what: str) -> np.ndarray:
    """Brings a source tensor into the Keras layout, or fails naming both shapes."""
    if is_kernel:
        h, w, i, o = expected
        if value.ndim != 4 or tuple(value.transpose(2, 3, 1, 0).shape) != expected:
            got = tuple(value.shape)
            hint = (" (a Flow/RGBDiff model? only RGB models with 3 input channels convert)"
                    if i == 3 and len(got) == 4 and got[1] != 3 else "")
            raise ConversionError(f"{key}: shape {got} (OIHW); {what} expects "
                                  f"{(o, i, h, w)}{hint}")
        return value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if tuple(value.shape) != expected:
        if value.size == int(np.prod(expected)) and tuple(np.squeeze(value).shape) == expected:
            return value.reshape(expected)  # Cadene's Caffe port stores BN tensors as [1, C]
        raise ConversionError(f"{key}: shape {tuple(value.shape)}; {what} expects {expected}")
    return value


def apply_state_dict(model, state_dict: Mapping[str, np.ndarray], family: Family, *,
                     layout: str = "auto", allow_partial: bool = False) -> ConversionReport:
    """Copies a PyTorch state dict of ``family`` into the Keras ``model`` (same layer names).

    Args:
        model: the Keras model to fill.
        state_dict: ``{key: array}`` as returned by :func:`load_state_dict`.
        family: the model family (layouts, name in messages).
        layout: ``"auto"`` or one of the family's layouts.
        allow_partial: load even when some Keras weights have no source (they keep their
            initial values); otherwise such a checkpoint is refused and nothing is changed.

    Raises:
        ConversionError: unknown layout, no matching keys, shape mismatches, or a partial
            checkpoint without ``allow_partial``.
    """
    found_targets = targets(model)
    keys = list(state_dict)
    layout, prefix = _resolve_layout(keys, checkpoint_keys(model), layout, family)
    report = ConversionReport(layout=layout, prefix=prefix,
                              description=family.layouts[layout].description)
    used: set[str] = set()
    updates = []
    for name, (layer, params) in found_targets.items():
        values = [np.asarray(v) for v in layer.get_weights()]
        found = False
        for i, param in enumerate(params):
            key = f"{prefix}{name}.{param}"
            if key not in state_dict:
                report.unmatched.append(f"{name}/{param}")
                continue
            values[i] = _fit(key, np.asarray(state_dict[key], dtype=np.float32),
                             tuple(values[i].shape), i == 0 and len(params) <= 2,  # a kernel
                             family.what)
            used.add(key)
            report.matched.append(key)
            found = True
        if found:
            updates.append((layer, values))
    _sort_unused(report, [k for k in keys if k not in used], family)
    if report.unmatched and not allow_partial:
        raise ConversionError(
            f"refusing a partial load: {len(report.unmatched)} of "
            f"{len(report.unmatched) + len(report.matched)} {family.what} weights have no "
            f"source in the checkpoint (layout {layout}, prefix {prefix!r}): "
            f"{', '.join(report.unmatched[:20])}"
            + (" ..." if len(report.unmatched) > 20 else "")
            + ". Pass --allow-partial to keep initial values for them."
        )
    for layer, values in updates:
        layer.set_weights(values)
    return report


def _resolve_layout(keys: list[str], expected: set[str], layout: str,
                    family: Family) -> tuple[str, str]:
    """(layout, prefix): detected for ``"auto"``, else the named layout's best prefix."""
    if layout == "auto":
        return detect_layout(keys, expected, family)
    if layout not in family.layouts:
        raise ConversionError(f"--layout: {layout!r}; allowed: auto, "
                              f"{', '.join(family.layouts)}")
    prefixes = family.layouts[layout].prefixes
    count, prefix = max((_count_matches(keys, p, expected), p) for p in prefixes)
    return layout, prefix if count else prefixes[0]


def _count_matches(keys, prefix: str, expected: set[str]) -> int:
    return sum(1 for k in keys if k.startswith(prefix) and k[len(prefix):] in expected)


def _sort_unused(report: ConversionReport, unused: list[str], family: Family) -> None:
    """Files each unused source key as ignored, classifier head or other."""
    heads = family.layouts[report.layout].head_prefixes
    for key in unused:
        if key.endswith(IGNORED_SUFFIXES):
            report.ignored.append(key)
        elif key.startswith(heads):
            report.unused_heads.append(key)
        else:
            report.unused.append(key)


def weights_output_path(out: str | Path) -> Path:
    """``<out>.weights.h5`` (``out`` itself when it already ends in ``.weights.h5``)."""
    out = Path(out)
    return out if out.name.endswith(".weights.h5") else out.with_name(out.name + ".weights.h5")


def save_converted(model, report: ConversionReport, out: str | Path) -> ConversionReport:
    """Saves the filled ``model`` to :func:`weights_output_path` and records it in ``report``."""
    path = weights_output_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(str(path))
    report.output = path
    return report
