"""What every config section shares: the allowed values and the checks that name a field.

Each check raises :class:`ConfigError` naming ``<section>.<field>`` and the allowed values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: The paper's six audio-image representations, in the paper's order (Table 3).
REPRESENTATIONS: tuple[str, ...] = (
    "waveplot",
    "mfcc",
    "mfcc_scaled",
    "spectral_centroid",
    "spectral_rolloff",
    "chromagram",
)
DATASETS = ("synthetic", "ucf101", "ucf51", "ave", "kinetics_sounds", "csv")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
#: ``train.finetune``: which backbones an end-to-end run trains (``train.end_to_end``).
FINETUNE = ("none", "video", "audio", "both")
VIDEO_POOLING = ("mean", "flatten")
AUDIO_ROWS_INIT = ("zeros", "glorot_uniform")
#: How the fusion stage combines the modalities (``model.fusion``; maivar_tf/models/fusion.py).
FUSION_METHODS: tuple[str, ...] = ("vmlp_init", "random_init", "linear", "late", "gated", "film",
                                   "temporal_binding")
SAMPLING_MODES = ("center", "random")
#: Which segments the visual backbone runs on (``model.selection``; ``oracle`` for evaluation).
SELECTION_MODES = ("uniform", "audio_topk")
#: What trains the saliency scorer of ``audio_topk`` (``model.saliency``).
SALIENCY_SUPERVISION = ("clip", "segments")
#: What the Beam job and predict do with a clip without an audio track (``data.on_missing_audio``).
MISSING_AUDIO = ("reject", "silence")
COLORMAPS = ("viridis", "magma", "inferno", "plasma", "gray")
#: The video backbones (``model.video_backbone``): the paper's BNInception and the same network
#: built from its tiny block table (tests, smoke runs; maivar_tf.models.bn_inception.TINY_BLOCKS).
VIDEO_BACKBONES: tuple[str, ...] = ("bn_inception", "bn_inception_tiny")
#: The compute precision of the backbones (``extract.precision``; maivar_tf.models.precision).
PRECISIONS: tuple[str, ...] = ("float32", "bfloat16")
#: The audio-image backbones (``model.audio_backbone``; maivar_tf.models.audio_backbones builds
#: them): the paper's InceptionResNetV2 (default) and its ablation's ResNets and EfficientNets.
AUDIO_BACKBONES: tuple[str, ...] = (
    "inception_resnet_v2",
    "resnet18", "resnet50", "resnet101", "resnet152",
    "resnet50_v2", "resnet101_v2", "resnet152_v2",
    *(f"efficientnet_b{i}" for i in range(8)),
    "mobilenet_v3_small",
)




class ConfigError(ValueError):
    """An invalid configuration key or value; the message names the field."""


def check_choice(section: str, name: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ConfigError(
            f"{section}.{name}: invalid value {value!r}; allowed: {', '.join(map(str, allowed))}"
        )


def check_positive(section: str, name: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{section}.{name}: invalid value {value!r}; allowed: a number {bound}")


def check_weights(section: str, name: str, value: str, allow_imagenet: bool) -> None:
    """``weights`` is ``none``, ``imagenet`` (where the model has it) or a file path."""
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"{section}.{name}: invalid value {value!r}; allowed: "
            + ("'imagenet', " if allow_imagenet else "")
            + "'none' or a path to a weights file"
        )
    if value == "imagenet" and not allow_imagenet:
        raise ConfigError(
            f"{section}.{name}: 'imagenet' is not available for this backbone; "
            "allowed: 'none' or a path to a converted weights file (see `maivar convert-weights`)"
        )
