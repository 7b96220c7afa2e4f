"""The preview encoder's features of ``model.selection: audio_topk`` (Listen to Look).

``audio_topk`` runs a light audio backbone (``model.preview_backbone``, by default
MobileNetV3-Small) on the K per-segment audio-images of every clip, and a saliency scorer on
its features picks the segments BNInception runs on. Those features are extracted like any
other audio backbone's, beside the others in the same features folder
(``audio-<preview>-<REP>_SEGMENTS-...``, plus its clip-level ``audio-<preview>-<REP>-...``):
:func:`preview_config` is the extraction config that adds them, and
:func:`~maivar_tf.features.extract.extract_features` runs it after the main extraction when
``model.selection`` is ``audio_topk`` (``maivar extract --set
model.audio_backbone=mobilenet_v3_small`` does the same by hand).

The preview's weights: ``imagenet`` when ``model.audio_weights`` is ``imagenet`` (Keras' file
of that backbone), else ``none`` (random, drawn with the audio seed and saved beside the
features as ``backbones/audio-<preview>.weights.h5``): a weights file named by
``model.audio_weights`` belongs to the main audio backbone.
"""

from __future__ import annotations

import dataclasses

from maivar_tf.config import ExperimentConfig

WEIGHTS_IMAGENET = "imagenet"  # maivar_tf.models.weights' (no Keras import here)


def needs_preview(cfg: ExperimentConfig) -> bool:
    """Whether an extraction of ``cfg`` also extracts the preview backbone's features
    (``audio_topk`` with a preview other than the main audio backbone)."""
    return (cfg.model.selection == "audio_topk"
            and cfg.model.preview_backbone != cfg.model.audio_backbone)


def preview_weights(cfg: ExperimentConfig) -> str:
    """The preview backbone's weights spec (see the module doc)."""
    return WEIGHTS_IMAGENET if cfg.model.audio_weights == WEIGHTS_IMAGENET else "none"


def preview_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with the preview backbone as ``model.audio_backbone`` (and its weights): the
    extraction that adds the preview's clip-level and per-segment audio shards."""
    model = dataclasses.replace(cfg.model, audio_backbone=cfg.model.preview_backbone,
                                audio_weights=preview_weights(cfg))
    return dataclasses.replace(cfg, model=model)
