"""Experiment configuration: frozen, validated sections loaded from ``configs/*.yaml``.

:mod:`maivar_tf.config.sections` holds the dataclasses, :mod:`maivar_tf.config.loading` turns
YAML and ``--set`` overrides into them. Everything public is importable from here.

Example:
    >>> cfg = load_config("configs/synthetic.yaml", overrides=["train.video.epochs=2"])
    >>> cfg.data.num_segments, cfg.train.video.epochs
    (8, 2)
"""

from maivar_tf.config.loading import (
    DEFAULT_CONFIG,
    MOVED_KEYS,
    apply_overrides,
    config_from_json_dict,
    from_dict,
    load_config,
    resolve_config_path,
    to_dict,
)
from maivar_tf.config.sections import (
    AUDIO_BACKBONES,
    AUDIO_ROWS_INIT,
    COLORMAPS,
    DATASETS,
    FUSION_METHODS,
    MISSING_AUDIO,
    PRECISIONS,
    REPRESENTATIONS,
    SALIENCY_SUPERVISION,
    SAMPLING_MODES,
    SELECTION_MODES,
    STAGE_SECTIONS,
    STRATEGIES,
    VIDEO_BACKBONES,
    VIDEO_POOLING,
    AudioImageConfig,
    ConfigError,
    DataConfig,
    ExperimentConfig,
    ExtractConfig,
    ModelConfig,
    StageConfig,
    SynthConfig,
    TrainConfig,
)

__all__ = [
    "AUDIO_BACKBONES", "AUDIO_ROWS_INIT", "COLORMAPS", "DATASETS", "DEFAULT_CONFIG",
    "FUSION_METHODS", "MISSING_AUDIO", "MOVED_KEYS", "PRECISIONS",
    "REPRESENTATIONS", "SALIENCY_SUPERVISION", "SELECTION_MODES", "SAMPLING_MODES",
    "STAGE_SECTIONS", "STRATEGIES", "VIDEO_BACKBONES", "VIDEO_POOLING",
    "AudioImageConfig", "ConfigError", "DataConfig", "ExperimentConfig", "ExtractConfig",
    "ModelConfig", "StageConfig", "SynthConfig", "TrainConfig", "apply_overrides",
    "config_from_json_dict", "from_dict", "load_config", "resolve_config_path", "to_dict",
]
