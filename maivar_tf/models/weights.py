"""Backbone weights by spec: ``none``, ``imagenet`` or a file path.

A config never holds weights, only a spec string (``model.video_weights``, ``model.audio_weights``,
one per MAiVAR backbone; Shaikh et al., 2024). This module turns the spec into something loadable
and loads it with errors that name the backbone, the file and what would have been accepted.

Accepted files:

* ``*.weights.h5`` / ``*.keras``: Keras 3 weights (``maivar convert-weights`` writes the
  former for BNInception; ``model.save_weights`` writes it for any backbone);
* ``*.h5`` / ``*.hdf5``: legacy Keras HDF5 weights such as Keras' ImageNet file
  ``inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5``. These load by topology
  (the order of the layers that have weights), as ``keras.applications`` itself loads them:
  files written by Keras 2 number the unnamed layers from 1 (``conv2d_1``) while Keras 3
  numbers them from 0 (``conv2d``), so matching them by name would misalign every layer.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras

WEIGHTS_NONE = "none"
WEIGHTS_IMAGENET = "imagenet"
_KERAS3_SUFFIXES = (".weights.h5", ".keras")
_LEGACY_SUFFIXES = (".h5", ".hdf5")


class WeightsError(ValueError):
    """A weights spec or file that cannot be used; the message says what is allowed."""


def parse_weights_spec(spec: str | Path | None, *, allow_imagenet: bool,
                       what: str) -> str | Path | None:
    """Validates a weights spec.

    Args:
        spec: ``"none"`` (or ``None`` / ``""``), ``"imagenet"`` or a file path.
        allow_imagenet: whether ``"imagenet"`` is available for this backbone.
        what: the backbone, for error messages (e.g. ``"audio backbone (InceptionResNetV2)"``).

    Returns:
        ``None`` for no weights, the string ``"imagenet"``, or the :class:`~pathlib.Path`
        of an existing file with an accepted suffix.

    Raises:
        WeightsError: ``imagenet`` where it is not available, or an unknown suffix.
        FileNotFoundError: the path does not exist.
    """
    allowed = ("'imagenet', " if allow_imagenet else "") + "'none' or a path to a weights file"
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", WEIGHTS_NONE)):
        return None
    if isinstance(spec, str) and spec.strip().lower() == WEIGHTS_IMAGENET:
        if not allow_imagenet:
            raise WeightsError(
                f"{what}: 'imagenet' weights are not available; allowed: 'none' or a path to "
                "a converted weights file (see `maivar convert-weights`)"
            )
        return WEIGHTS_IMAGENET
    path = Path(spec).expanduser()
    name = path.name.lower()
    if not name.endswith(_KERAS3_SUFFIXES + _LEGACY_SUFFIXES):
        raise WeightsError(
            f"{what}: weights file {str(path)!r} has an unknown type; allowed: {allowed} "
            f"ending in {', '.join(_KERAS3_SUFFIXES + _LEGACY_SUFFIXES)}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"{what}: weights file {str(path)!r} does not exist; "
                                f"allowed: {allowed}")
    return path


def load_weights_file(model: keras.Model, path: str | Path, *, what: str) -> None:
    """Loads a weights file into ``model``, dispatching on the suffix.

    Args:
        model: the backbone to fill.
        path: a ``.weights.h5``/``.keras`` (Keras 3) or ``.h5``/``.hdf5`` (legacy) file.
        what: the backbone, for error messages.

    Raises:
        WeightsError: the file does not fit the model (layer count, weight shapes).
    """
    path = Path(path)
    try:
        # Keras dispatches on the suffix itself: Keras 3 files by object structure, legacy
        # HDF5 files by topology (by_name=False).
        model.load_weights(str(path))
    except (ValueError, KeyError, OSError) as e:
        kind = ("Keras 3 weights" if path.name.lower().endswith(_KERAS3_SUFFIXES)
                else "legacy Keras HDF5 weights")
        raise WeightsError(
            f"{what}: could not load {kind} from {str(path)!r} into model {model.name!r}: {e}"
        ) from e


def save_weights_atomic(model: keras.Model, path: str | Path) -> Path:
    """``model.save_weights`` to ``path`` (a ``.weights.h5``) through a temporary file beside
    it, renamed into place: a killed writer never leaves a half-written weights file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.weights.h5")
    model.save_weights(tmp)
    os.replace(tmp, path)
    return path
