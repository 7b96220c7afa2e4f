"""The tiny experiment of the end-to-end tests: TFRecords, a features folder and a config.

The TFRecords are tests/features/tiny_data.py's (5 training and 2 test clips of 3 classes,
K = 2 JPEG frames of 256 x 300, 299-px PNG audio-images). The config trains end to end with
the real BNInception layers from their tiny block table on 32-px crops and MobileNetV3-Small
on the audio-images, both with random ("none") weights that ``maivar extract`` seeds and
saves in the features folder (the run's initial backbones), and a few epochs per stage.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from maivar_tf.config import ExperimentConfig, ModelConfig, StageConfig, TrainConfig
from tests.features.tiny_data import make_config, write_tfrecords

#: The crop side of the tiny BNInception.
CROP = 32
#: A light audio backbone that takes the 299-px audio-images.
AUDIO_BACKBONE = "mobilenet_v3_small"


def e2e_config(root: Path, *, finetune: str = "video", epochs: int = 2, batch: int = 4,
               strategy: str = "default", end_to_end: bool = True,
               mixed_precision: bool = False) -> ExperimentConfig:
    """The tiny end-to-end experiment rooted at ``root`` (TFRecords, features, run)."""
    base = make_config(root)
    data = dataclasses.replace(base.data, crop_size=CROP, representations=("chromagram",))
    stage = StageConfig(epochs=epochs, learning_rate=1e-3, batch_size=batch)
    model = ModelConfig(video_backbone="bn_inception_tiny", audio_backbone=AUDIO_BACKBONE,
                        representation="chromagram", hidden_units=8, dropout=0.2, l1=1e-6)
    train = TrainConfig(strategy=strategy, audio=stage, video=stage, fusion=stage, seed=3,
                        output_dir=str(root / "run"), end_to_end=end_to_end,
                        finetune=finetune if end_to_end else "none",
                        mixed_precision=mixed_precision)
    return dataclasses.replace(base, data=data, model=model, train=train)


def write_e2e_data(root: Path) -> ExperimentConfig:
    """Writes the TFRecords and extracts the features (the initial backbones) under ``root``."""
    from maivar_tf.features import extract_features

    cfg = e2e_config(root)
    write_tfrecords(cfg)
    extract_features(cfg, progress=False, representations=["chromagram"])
    return cfg
