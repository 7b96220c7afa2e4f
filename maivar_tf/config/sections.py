"""The configuration sections: frozen dataclasses validated in ``__post_init__``.

Every invalid value fails when the config is built, naming its field and the allowed values.
Sections: ``data`` (with ``audio`` and ``synth``), ``model``, ``extract`` and ``train``, whose
three Algorithm 1 stages (``train.audio``, ``train.video``, ``train.fusion``) are each a
:class:`StageConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from maivar_tf.config.checks import (  # noqa: F401  (re-exported: the public names live here)
    AUDIO_BACKBONES,
    AUDIO_ROWS_INIT,
    COLORMAPS,
    DATASETS,
    FINETUNE,
    FUSION_METHODS,
    MISSING_AUDIO,
    PRECISIONS,
    REPRESENTATIONS,
    SALIENCY_SUPERVISION,
    SAMPLING_MODES,
    SELECTION_MODES,
    STRATEGIES,
    VIDEO_BACKBONES,
    VIDEO_POOLING,
    ConfigError,
    check_choice,
    check_positive,
    check_weights,
)
from maivar_tf.config.data import AudioImageConfig, DataConfig, SynthConfig  # noqa: F401


@dataclass(frozen=True)
class ModelConfig:
    """Backbones and heads.

    Args:
        video_backbone: the video backbone, one of :data:`VIDEO_BACKBONES`: ``bn_inception``
            (the paper's TSN BNInception, 1024-d; the default) or ``bn_inception_tiny`` (the
            same layers from a tiny block table, 16-d: tests and smoke runs only).
        video_weights: BNInception weights: ``none`` or a path (``.weights.h5`` made by
            ``maivar convert-weights``).
        audio_backbone: the audio-image backbone, one of :data:`AUDIO_BACKBONES` (default
            the paper's ``inception_resnet_v2``).
        audio_weights: its weights: ``imagenet`` (needs the network or the Keras cache; for
            ``resnet18`` a converted torchvision checkpoint's path instead), ``none`` or a path
            to the Keras ImageNet ``.h5`` or a ``.weights.h5``.
        representation: the audio-image the audio MLP and the fusion MLP use.
        video_pooling: how the K x 1024 segment features enter the VMLP: ``mean`` (TSN's
            average consensus; the default) or ``flatten`` (keeps segment order).
        hidden_units: the hidden Dense width (the paper's 1024).
        dropout: dropout after the hidden layer.
        l1: L1 kernel regularisation factor (the paper's cross-entropy + L1).
        audio_rows_init: how the audio rows of the fusion kernel start (``zeros`` makes the
            fusion model equal the VMLP at step 0).
        fusion: the fusion stage's model (:mod:`maivar_tf.models.fusion`): ``vmlp_init``
            (MAiVAR's fusion MLP started from the trained VMLP, Algorithm 1; the default),
            ``random_init`` (the same MLP, Glorot-initialised), ``linear`` (one softmax layer
            on the concatenation), ``late`` (a weighted mean of the audio MLP's and the VMLP's
            log-probabilities, the weight chosen on the validation split), ``gated`` (a sigmoid
            gate on the concatenation, then the MLP), ``film`` (audio FiLM-modulates video) or
            ``temporal_binding`` (per segment, the video feature and the audio features of the
            segments within ``binding_window``, a shared MLP, then the consensus over segments;
            needs ``data.segment_audio``).
        binding_window: segments of audio bound to each video segment by ``temporal_binding``
            (odd: the segment and ``(w - 1) / 2`` on each side, averaged).
        localisation: also train the per-segment event/class head on the temporal-binding
            features (needs segment labels: a dataset with annotated spans).
        selection: which segments the visual backbone runs on (Listen to Look, Gao et al.
            2020): ``uniform`` (TSN's ``budget`` evenly spaced segments) or ``audio_topk`` (a
            light audio preview of all K segments, a saliency scorer, the top ``budget``).
        budget: k, the segments the visual backbone runs on (0: all K, no selection).
        preview_backbone: the light per-segment audio encoder of ``audio_topk`` (one of
            :data:`AUDIO_BACKBONES`).
        saliency: what trains the saliency scorer: ``clip`` (the clip label, weak supervision)
            or ``segments`` (the segment labels of annotated spans).
    """

    video_backbone: str = "bn_inception"
    video_weights: str = "none"
    audio_backbone: str = "inception_resnet_v2"
    audio_weights: str = "none"
    representation: str = "chromagram"
    video_pooling: str = "mean"
    hidden_units: int = 1024
    dropout: float = 0.5
    l1: float = 1e-5
    audio_rows_init: str = "zeros"
    fusion: str = "vmlp_init"
    binding_window: int = 1
    localisation: bool = False
    selection: str = "uniform"
    budget: int = 0
    preview_backbone: str = "mobilenet_v3_small"
    saliency: str = "clip"

    def __post_init__(self) -> None:
        s = "model"
        check_positive(s, "binding_window", self.binding_window)
        check_choice(s, "selection", self.selection, SELECTION_MODES)
        check_choice(s, "preview_backbone", self.preview_backbone, AUDIO_BACKBONES)
        check_choice(s, "saliency", self.saliency, SALIENCY_SUPERVISION)
        check_positive(s, "budget", self.budget, allow_zero=True)
        if int(self.binding_window) != self.binding_window or self.binding_window % 2 == 0:
            raise ConfigError(f"{s}.binding_window: invalid value {self.binding_window!r}; "
                              "allowed: an odd integer >= 1")
        if self.localisation and self.fusion != "temporal_binding":
            raise ConfigError(f"{s}.localisation: needs model.fusion=temporal_binding (the "
                              f"per-segment fused features); got {self.fusion!r}")
        check_choice(s, "video_backbone", self.video_backbone, VIDEO_BACKBONES)
        check_weights(s, "video_weights", self.video_weights, allow_imagenet=False)
        check_choice(s, "audio_backbone", self.audio_backbone, AUDIO_BACKBONES)
        check_weights(s, "audio_weights", self.audio_weights, allow_imagenet=True)
        check_choice(s, "representation", self.representation, REPRESENTATIONS)
        check_choice(s, "video_pooling", self.video_pooling, VIDEO_POOLING)
        check_choice(s, "audio_rows_init", self.audio_rows_init, AUDIO_ROWS_INIT)
        check_choice(s, "fusion", self.fusion, FUSION_METHODS)
        check_positive(s, "hidden_units", self.hidden_units)
        check_positive(s, "l1", self.l1, allow_zero=True)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{s}.dropout: invalid value {self.dropout!r}; allowed: [0, 1)")


@dataclass(frozen=True)
class ExtractConfig:
    """How ``maivar extract`` runs the frozen backbones over the TFRecords.

    Args:
        batch_size: videos per backbone batch.
        ten_crop: average the video features over TSN's ten crops (4 corners + centre, and
            their flips) instead of the centre crop alone.
        precision: the backbones' compute precision, one of :data:`PRECISIONS`: ``float32``
            (the default) or ``bfloat16`` (Keras' ``mixed_bfloat16``: float32 weights and
            outputs, bfloat16 compute; needs a CPU with AVX512-BF16 or AMX, or a GPU of compute
            capability >= 8.0, :mod:`maivar_tf.models.precision`). Used by extraction, predict
            and the export, whose signatures keep float32 inputs and outputs.
    """

    batch_size: int = 32
    ten_crop: bool = False
    precision: str = "float32"

    def __post_init__(self) -> None:
        check_positive("extract", "batch_size", self.batch_size)
        check_choice("extract", "precision", self.precision, PRECISIONS)


@dataclass(frozen=True)
class StageConfig:
    """One training stage of Algorithm 1 (the audio MLP, the VMLP or the fusion MLP).

    Args:
        epochs: passes over the training features.
        learning_rate: Adam's learning rate (the paper: 1e-4 for the VMLP, 3e-5 for fusion).
        batch_size: the global batch (over all replicas; the paper: 512 VMLP, 768 fusion).
        modality_dropout: the fraction of training clips whose audio input is replaced by the
            silent one in each epoch (modality dropout, Alfasly et al. 2022; ``train.fusion``
            only).
    """

    epochs: int = 30
    learning_rate: float = 1e-4
    batch_size: int = 512
    modality_dropout: float = 0.0

    def validate(self, section: str) -> None:
        """Fails naming ``section`` (``train.video``...) and the field."""
        for name in ("epochs", "learning_rate", "batch_size"):
            check_positive(section, name, getattr(self, name))
        check_positive(section, "modality_dropout", self.modality_dropout, allow_zero=True)
        if self.modality_dropout >= 1:
            raise ConfigError(f"{section}.modality_dropout: invalid value "
                              f"{self.modality_dropout!r}; allowed: a number in [0, 1)")
        if self.modality_dropout and section != "train.fusion":
            raise ConfigError(f"{section}.modality_dropout: only the fusion stage drops the "
                              "audio input; allowed: 0 (set train.fusion.modality_dropout)")


#: Algorithm 1's stage sections, in training order, and the run's stage (folder) names.
STAGE_SECTIONS: tuple[tuple[str, str], ...] = (("audio", "audio_mlp"), ("video", "vmlp"),
                                               ("fusion", "fusion"))


@dataclass(frozen=True)
class TrainConfig:
    """Algorithm 1's three trainings and how they are distributed.

    Args:
        strategy: ``auto``, ``default``, ``mirrored`` or ``multi_worker`` (``tf.distribute``).
        audio: the audio MLP stage.
        video: the VMLP stage.
        fusion: the fusion MLP stage (initialised from the trained VMLP).
        mixed_precision: ``mixed_float16`` where a GPU is visible.
        seed: seeds initialisation, dropout and data order (each stage derives its own).
        output_dir: the run folder.
        val_fraction: when no validation split is given, hold out the last groups of each
            class (this fraction of them; whole UCF groups; not seeded) as one: validation metrics
            and the fusion temperature (:mod:`maivar_tf.calibration`) come from it; 0: none
            (the temperature stays 1.0).
        localisation: the per-segment localisation head's training (``model.localisation``),
            after the fusion stage; its seed is ``seed + 3``.
        saliency: the saliency scorer's training (``model.selection: audio_topk``), on the
            preview features; its seed is ``seed + 4``.
        end_to_end: train from the TFRecords' frames and audio-images instead of the
            precomputed features: the backbones run inside every stage's model
            (:mod:`maivar_tf.end_to_end`; docs/end_to_end.md).
        finetune: with ``end_to_end``, which backbones train (one of :data:`FINETUNE`):
            ``none`` (both frozen: the feature path's models, with TSN's training
            augmentation), ``video``, ``audio`` or ``both``.
        backbone_lr_multiplier: a fine-tuned backbone's learning rate is the stage's times
            this (TSN's smaller step for the pretrained layers).
        partial_bn: TSN's partial BatchNorm: a fine-tuned backbone's BatchNorm layers are
            frozen (statistics and scale/offset) except the first one.
        jit_compile: compile the end-to-end training step with XLA (``model.compile``).
    """

    strategy: str = "auto"
    audio: StageConfig = field(default_factory=StageConfig)
    video: StageConfig = field(default_factory=StageConfig)
    fusion: StageConfig = field(default_factory=lambda: StageConfig(
        epochs=30, learning_rate=3e-5, batch_size=768))
    mixed_precision: bool = False
    seed: int = 0
    output_dir: str = "runs/synthetic"
    val_fraction: float = 0.0
    localisation: StageConfig = field(default_factory=lambda: StageConfig(
        epochs=30, learning_rate=1e-3, batch_size=256))
    saliency: StageConfig = field(default_factory=lambda: StageConfig(
        epochs=30, learning_rate=1e-3, batch_size=256))
    end_to_end: bool = False
    finetune: str = "none"
    backbone_lr_multiplier: float = 0.1
    partial_bn: bool = True
    jit_compile: bool = False

    def __post_init__(self) -> None:
        check_choice("train", "strategy", self.strategy, STRATEGIES)
        check_choice("train", "finetune", self.finetune, FINETUNE)
        check_positive("train", "backbone_lr_multiplier", self.backbone_lr_multiplier)
        if self.finetune != "none" and not self.end_to_end:
            raise ConfigError(f"train.finetune: {self.finetune!r} fine-tunes backbones, which "
                              "only an end-to-end run has; allowed: 'none', or set "
                              "train.end_to_end: true")
        check_positive("train", "val_fraction", self.val_fraction, allow_zero=True)
        if self.val_fraction >= 1:
            raise ConfigError(f"train.val_fraction: invalid value {self.val_fraction!r}; "
                              "allowed: a number in [0, 1)")
        for section, _ in STAGE_SECTIONS:
            getattr(self, section).validate(f"train.{section}")
        self.localisation.validate("train.localisation")
        self.saliency.validate("train.saliency")

    def stage(self, section: str) -> StageConfig:
        """The :class:`StageConfig` of ``audio``, ``video`` or ``fusion``."""
        check_choice("train", "stage", section, [s for s, _ in STAGE_SECTIONS])
        return getattr(self, section)


#: The fusion methods an end-to-end run trains: a head on ``[video [B, K, D], audio [B, Da]]``.
END_TO_END_FUSION = ("vmlp_init", "random_init", "linear", "gated", "film")


def check_end_to_end(cfg: ExperimentConfig) -> None:
    """What ``train.end_to_end`` does not combine with fails here, naming the field."""
    if cfg.model.fusion not in END_TO_END_FUSION:
        raise ConfigError(f"model.fusion: {cfg.model.fusion!r} is not trained end to end; "
                          f"allowed with train.end_to_end: {', '.join(END_TO_END_FUSION)}")
    for name, value, off in (("model.localisation", cfg.model.localisation, False),
                             ("model.selection", cfg.model.selection, "uniform"),
                             ("model.budget", cfg.model.budget, 0),
                             ("extract.ten_crop", cfg.extract.ten_crop, False),
                             ("train.fusion.modality_dropout",
                              cfg.train.fusion.modality_dropout, 0.0)):
        if value != off:
            raise ConfigError(f"{name}: {value!r} is a feature-path option; allowed with "
                              f"train.end_to_end: {off!r}")


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: data, model, extraction and training sections."""

    name: str = "synthetic"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.train.end_to_end:
            check_end_to_end(self)
        if self.model.fusion == "temporal_binding" and not self.data.segment_audio:
            raise ConfigError("model.fusion: 'temporal_binding' binds per-segment audio; "
                              "allowed with data.segment_audio: true")
        if self.model.selection == "audio_topk" and not self.data.segment_audio:
            raise ConfigError("model.selection: 'audio_topk' previews per-segment audio; "
                              "allowed with data.segment_audio: true")
        if self.model.budget > self.data.num_segments:
            raise ConfigError(f"model.budget: {self.model.budget} > data.num_segments "
                              f"{self.data.num_segments}; allowed: 0 (all) .. num_segments")
        if self.model.representation not in self.data.representations:
            raise ConfigError(
                f"model.representation: {self.model.representation!r} is not rendered; "
                f"allowed: one of data.representations ({', '.join(self.data.representations)})"
            )

    def to_dict(self) -> dict[str, Any]:
        """A plain, YAML/JSON-serialisable dict that ``from_dict`` reads back."""
        from maivar_tf.config.loading import to_dict

        return to_dict(self)
