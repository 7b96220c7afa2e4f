"""``maivar convert-weights --arch resnet18``: torchvision ResNet18 -> Keras ``.weights.h5``.

MAiVAR's audio-backbone ablation (Shaikh et al. 2024, Sec. 5.2.1) includes a ResNet18, which
``keras.applications`` lacks; its ImageNet weights are torchvision's
(``resnet18-f37072fd.pth``). :func:`~maivar_tf.models.resnet18.build_resnet18` names every
weighted layer after its torchvision module (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer2.0.downsample.0``, ...), so the state dict converts key for key through the shared
machinery of :mod:`maivar_tf.conversion` (OIHW -> HWIO kernels, BatchNorm statistics, layout
detection, refusal of partial loads); the classifier ``fc.*`` is reported as an unused head.

Example:
    maivar convert-weights --arch resnet18 resnet18-f37072fd.pth weights/resnet18
    # -> weights/resnet18.weights.h5 ; then model.audio_backbone=resnet18
    #    model.audio_weights=weights/resnet18.weights.h5
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from maivar_tf import conversion
from maivar_tf.conversion import ConversionReport, Layout

LAYOUTS: dict[str, Layout] = {
    "torchvision": Layout(
        "torchvision", ("", "module.", "model."), ("fc.", "module.fc.", "model.fc."),
        "torchvision / timm resnet18 state dict (conv1.*, layer1.0.conv1.*, fc.*)"),
}
#: ResNet18 as a converter family.
FAMILY = conversion.Family("ResNet18", LAYOUTS,
                           "'conv1.weight', 'layer1.0.bn1.running_mean' (torchvision)")
#: The input side of the model the command fills (the weights fit every side).
CONVERT_IMAGE_SIZE = 224


def apply_resnet18_state_dict(model, state_dict: Mapping[str, np.ndarray], *,
                              layout: str = "auto",
                              allow_partial: bool = False) -> ConversionReport:
    """Copies a torchvision ResNet18 state dict into a Keras ResNet18 (any input side).

    Raises:
        ConversionError: see :func:`maivar_tf.conversion.apply_state_dict`.
    """
    return conversion.apply_state_dict(model, state_dict, FAMILY, layout=layout,
                                       allow_partial=allow_partial)


def convert_resnet18_checkpoint(checkpoint: str | Path, out: str | Path, *,
                                layout: str = "auto", allow_partial: bool = False,
                                trust_checkpoint: bool = False, model=None) -> ConversionReport:
    """Converts a torchvision ResNet18 checkpoint into a Keras ``.weights.h5``.

    The file loads into the audio backbone ``resnet18`` at any image size
    (``model.audio_weights``).

    Args:
        checkpoint: the PyTorch file (a state dict, or one under ``state_dict``/``model``).
        out: the output path; ``.weights.h5`` is appended unless already there.
        layout: ``"auto"`` or ``torchvision``.
        allow_partial: see :func:`maivar_tf.conversion.apply_state_dict`.
        trust_checkpoint: see :func:`maivar_tf.conversion.load_state_dict`.
        model: the Keras ResNet18 to fill and save; default the audio backbone at 224.

    Raises:
        ConversionError: an unreadable, foreign or partial checkpoint.
    """
    from maivar_tf.models.resnet18 import build_resnet18

    state = conversion.load_state_dict(checkpoint, trust_checkpoint=trust_checkpoint)
    if model is None:
        model = build_resnet18(CONVERT_IMAGE_SIZE)
    report = apply_resnet18_state_dict(model, state, layout=layout, allow_partial=allow_partial)
    return conversion.save_converted(model, report, out)
