"""The configuration sections: frozen dataclasses validated in ``__post_init__``.

Every invalid value fails when the config is built, naming its field and the allowed values.
Sections: ``data`` (with ``audio`` and ``synth``), ``model``, ``extract`` and ``train``, whose
three Algorithm 1 stages (``train.audio``, ``train.video``, ``train.fusion``) are each a
:class:`StageConfig`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
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
DATASETS = ("synthetic", "ucf101", "ucf51", "kinetics_sounds", "csv")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
VIDEO_POOLING = ("mean", "flatten")
AUDIO_ROWS_INIT = ("zeros", "glorot_uniform")
#: How the fusion stage combines the modalities (``model.fusion``; maivar_tf/models/fusion.py).
FUSION_METHODS: tuple[str, ...] = ("vmlp_init", "random_init", "linear", "late", "gated", "film")
SAMPLING_MODES = ("center", "random")
COLORMAPS = ("viridis", "magma", "inferno", "plasma", "gray")
#: The audio-image backbones (``model.audio_backbone``; maivar_tf.models.audio_backbones builds
#: them): the paper's InceptionResNetV2 (default) and its ablation's ResNets and EfficientNets.
AUDIO_BACKBONES: tuple[str, ...] = (
    "inception_resnet_v2",
    "resnet18", "resnet50", "resnet101", "resnet152",
    "resnet50_v2", "resnet101_v2", "resnet152_v2",
    *(f"efficientnet_b{i}" for i in range(8)),
)


class ConfigError(ValueError):
    """An invalid configuration key or value; the message names the field."""


def _check_choice(section: str, name: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ConfigError(
            f"{section}.{name}: invalid value {value!r}; allowed: {', '.join(map(str, allowed))}"
        )


def _check_positive(section: str, name: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{section}.{name}: invalid value {value!r}; allowed: a number {bound}")


def _check_weights(section: str, name: str, value: str, allow_imagenet: bool) -> None:
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


@dataclass(frozen=True)
class AudioImageConfig:
    """How waveforms become audio-images (the paper's Sec. 3.2).

    Args:
        sample_rate: every clip is resampled to this rate (Hz) after down-mixing to mono.
        max_seconds: clips are cut to this many seconds (0 keeps the whole clip).
        image_size: the square side of every audio-image (299 for InceptionResNetV2).
        n_fft: STFT window length in samples.
        hop_length: STFT hop in samples.
        n_mels: mel bands feeding the MFCC.
        n_mfcc: MFCC coefficients kept.
        n_chroma: chroma bins (tuning is fixed at 0.0, never estimated per clip).
        rolloff_percent: energy fraction of the spectral rolloff.
        top_db: dynamic range of the dB scale.
        colormap: matplotlib colormap sampled once into a 256-entry lookup table.
    """

    sample_rate: int = 22050
    max_seconds: float = 10.0
    image_size: int = 299
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    n_mfcc: int = 20
    n_chroma: int = 12
    rolloff_percent: float = 0.85
    top_db: float = 80.0
    colormap: str = "viridis"

    def __post_init__(self) -> None:
        s = "audio"
        for name in ("sample_rate", "image_size", "n_fft", "hop_length", "n_mels", "n_mfcc",
                     "n_chroma"):
            _check_positive(s, name, getattr(self, name))
        _check_positive(s, "max_seconds", self.max_seconds, allow_zero=True)
        _check_positive(s, "top_db", self.top_db)
        if not 0.0 < self.rolloff_percent < 1.0:
            raise ConfigError(
                f"{s}.rolloff_percent: invalid value {self.rolloff_percent!r}; "
                "allowed: a number in (0, 1)"
            )
        if self.hop_length > self.n_fft:
            raise ConfigError(f"{s}.hop_length: {self.hop_length} > n_fft {self.n_fft}; "
                              "allowed: hop_length <= n_fft")
        if self.n_mfcc > self.n_mels:
            raise ConfigError(f"{s}.n_mfcc: {self.n_mfcc} > n_mels {self.n_mels}; "
                              "allowed: n_mfcc <= n_mels")
        _check_choice(s, "colormap", self.colormap, COLORMAPS)


@dataclass(frozen=True)
class SynthConfig:
    """The embedded audio-visual dataset (``maivar synth``).

    Classes cross ``num_motions`` kinds of object motion with ``num_sounds`` kinds of sound,
    so video alone tops out near ``1/num_sounds`` and audio alone near ``1/num_motions``.
    """

    num_motions: int = 4
    num_sounds: int = 2
    train_per_class: int = 24
    test_per_class: int = 10
    seconds: float = 3.0
    fps: int = 15
    width: int = 160
    height: int = 120
    audio_rate: int = 22050
    seed: int = 0

    def __post_init__(self) -> None:
        s = "synth"
        _check_choice(s, "num_motions", self.num_motions, (1, 2, 3, 4))
        _check_choice(s, "num_sounds", self.num_sounds, (1, 2, 3, 4))
        for name in ("train_per_class", "test_per_class", "seconds", "fps", "width", "height",
                     "audio_rate"):
            _check_positive(s, name, getattr(self, name))
        if self.width % 2 or self.height % 2:
            raise ConfigError(f"{s}.width/height: {self.width}x{self.height}; allowed: even "
                              "numbers (H.264 with yuv420p needs them)")


@dataclass(frozen=True)
class DataConfig:
    """Which videos, and how they become TFRecords.

    Args:
        dataset: ``synthetic`` (embedded), ``ucf101``, ``ucf51``, ``kinetics_sounds`` or ``csv``.
        video_root: folder holding the videos (for ``synthetic``, where they are generated).
        annotations: the annotation folder (UCF101 ``ucfTrainTestlist``) or CSV file;
            empty means ``video_root`` for UCF-style and synthetic data.
        split: the UCF101 train/test split number (1-3).
        class_list: a class-list file (one class name a line; blank lines and ``#`` comments
            skipped); label indices follow it, and a record whose label is not in it is an
            ``unknown_label`` dead letter. Empty: the shipped list of ``ucf51`` and
            ``kinetics_sounds`` (``maivar_tf/resources``), ``classInd.txt`` for ``ucf101`` and
            ``synthetic``, the sorted labels of a ``csv``. The file is read (and a missing
            one refused naming this field) when the annotations are read.
        output_dir: where TFRecord shards, ``dataset_info.json`` and ``failed-*.jsonl`` go.
        features_dir: where ``maivar extract`` writes feature shards and ``feature_info.json``.
        num_shards: shards per split (0: one per 256 videos of the split); each example's
            shard is a stable hash of its example id, so shards are byte-identical in every
            runner mode.
        num_segments: K, the TSN segments sampled per video (the paper tests with 25).
        frame_short_side: frames are resized so their shorter side is this many pixels.
        jpeg_quality: JPEG quality of stored frames.
        crop_size: the backbone input side (224 for BNInception).
        representations: which audio-images to render and store.
        store_waveform: also store the mono waveform (``WAVEFORM/feature/floats``).
        train_augment: random crops / flips in the training input pipeline.
    """

    dataset: str = "synthetic"
    video_root: str = "data/videos"
    annotations: str = ""
    split: int = 1
    class_list: str = ""
    output_dir: str = "data/tfrecords"
    features_dir: str = "data/features"
    num_shards: int = 2
    num_segments: int = 8
    frame_short_side: int = 256
    jpeg_quality: int = 90
    crop_size: int = 224
    representations: tuple[str, ...] = REPRESENTATIONS
    store_waveform: bool = False
    train_augment: bool = True
    audio: AudioImageConfig = field(default_factory=AudioImageConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)

    def __post_init__(self) -> None:
        s = "data"
        _check_choice(s, "dataset", self.dataset, DATASETS)
        _check_choice(s, "split", self.split, (1, 2, 3))
        if not isinstance(self.class_list, str):
            raise ConfigError(f"{s}.class_list: invalid value {self.class_list!r}; allowed: a "
                              "path to a class-list file, or '' for the dataset's default")
        _check_positive(s, "num_shards", self.num_shards, allow_zero=True)
        for name in ("num_segments", "frame_short_side", "crop_size"):
            _check_positive(s, name, getattr(self, name))
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"{s}.jpeg_quality: invalid value {self.jpeg_quality!r}; "
                              "allowed: 1..100")
        if self.crop_size > self.frame_short_side:
            raise ConfigError(f"{s}.crop_size: {self.crop_size} > frame_short_side "
                              f"{self.frame_short_side}; allowed: crop_size <= frame_short_side")
        reps = tuple(self.representations)
        object.__setattr__(self, "representations", reps)
        if not reps:
            raise ConfigError(f"{s}.representations: empty; allowed: any of "
                              f"{', '.join(REPRESENTATIONS)}")
        for r in reps:
            _check_choice(s, "representations", r, REPRESENTATIONS)
        if len(set(reps)) != len(reps):
            raise ConfigError(f"{s}.representations: duplicates in {list(reps)}")

    def read_class_list(self) -> tuple[str, ...] | None:
        """The names in the ``class_list`` file, or None when it is empty (the default).

        Not checked in ``__post_init__``: a config stored with a run or an export is read back
        on machines that need not hold the file. The Beam job reads it first of all.

        Raises:
            ConfigError: naming ``data.class_list``: a missing file, no name, or a duplicate.
        """
        if not self.class_list:
            return None
        from maivar_tf.resources import read_class_list_file

        try:
            return read_class_list_file(self.class_list)
        except (OSError, ValueError) as e:
            raise ConfigError(f"data.class_list: {e}") from e


@dataclass(frozen=True)
class ModelConfig:
    """Backbones and heads.

    Args:
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
            gate on the concatenation, then the MLP) or ``film`` (audio FiLM-modulates video).
    """

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

    def __post_init__(self) -> None:
        s = "model"
        _check_weights(s, "video_weights", self.video_weights, allow_imagenet=False)
        _check_choice(s, "audio_backbone", self.audio_backbone, AUDIO_BACKBONES)
        _check_weights(s, "audio_weights", self.audio_weights, allow_imagenet=True)
        _check_choice(s, "representation", self.representation, REPRESENTATIONS)
        _check_choice(s, "video_pooling", self.video_pooling, VIDEO_POOLING)
        _check_choice(s, "audio_rows_init", self.audio_rows_init, AUDIO_ROWS_INIT)
        _check_choice(s, "fusion", self.fusion, FUSION_METHODS)
        _check_positive(s, "hidden_units", self.hidden_units)
        _check_positive(s, "l1", self.l1, allow_zero=True)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{s}.dropout: invalid value {self.dropout!r}; allowed: [0, 1)")


@dataclass(frozen=True)
class ExtractConfig:
    """How ``maivar extract`` runs the frozen backbones over the TFRecords.

    Args:
        batch_size: videos per backbone batch.
        ten_crop: average the video features over TSN's ten crops (4 corners + centre, and
            their flips) instead of the centre crop alone.
    """

    batch_size: int = 32
    ten_crop: bool = False

    def __post_init__(self) -> None:
        _check_positive("extract", "batch_size", self.batch_size)


@dataclass(frozen=True)
class StageConfig:
    """One training stage of Algorithm 1 (the audio MLP, the VMLP or the fusion MLP).

    Args:
        epochs: passes over the training features.
        learning_rate: Adam's learning rate (the paper: 1e-4 for the VMLP, 3e-5 for fusion).
        batch_size: the global batch (over all replicas; the paper: 512 VMLP, 768 fusion).
    """

    epochs: int = 30
    learning_rate: float = 1e-4
    batch_size: int = 512

    def validate(self, section: str) -> None:
        """Fails naming ``section`` (``train.video``...) and the field."""
        for name in ("epochs", "learning_rate", "batch_size"):
            _check_positive(section, name, getattr(self, name))


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

    def __post_init__(self) -> None:
        _check_choice("train", "strategy", self.strategy, STRATEGIES)
        _check_positive("train", "val_fraction", self.val_fraction, allow_zero=True)
        if self.val_fraction >= 1:
            raise ConfigError(f"train.val_fraction: invalid value {self.val_fraction!r}; "
                              "allowed: a number in [0, 1)")
        for section, _ in STAGE_SECTIONS:
            getattr(self, section).validate(f"train.{section}")

    def stage(self, section: str) -> StageConfig:
        """The :class:`StageConfig` of ``audio``, ``video`` or ``fusion``."""
        _check_choice("train", "stage", section, [s for s, _ in STAGE_SECTIONS])
        return getattr(self, section)


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: data, model, extraction and training sections."""

    name: str = "synthetic"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.model.representation not in self.data.representations:
            raise ConfigError(
                f"model.representation: {self.model.representation!r} is not rendered; "
                f"allowed: one of data.representations ({', '.join(self.data.representations)})"
            )

    def to_dict(self) -> dict[str, Any]:
        """A plain, YAML/JSON-serialisable dict that ``from_dict`` reads back."""
        from maivar_tf.config.loading import to_dict

        return to_dict(self)
