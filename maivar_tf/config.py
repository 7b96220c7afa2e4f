"""Experiment configuration: frozen dataclasses loaded from ``configs/*.yaml``.

Every section is a frozen dataclass validated in ``__post_init__``. Loading a YAML file goes
through :func:`from_dict`, which rejects unknown keys naming the section, the key and the keys
that are allowed, and every invalid value names its field and the allowed values. CLI overrides
use dotted paths (``train.epochs=3``) and go through the same validation.

Example:
    >>> cfg = load_config("configs/synthetic.yaml", overrides=["train.vmlp_epochs=2"])
    >>> cfg.data.num_segments
    8
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

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
SAMPLING_MODES = ("center", "random")
COLORMAPS = ("viridis", "magma", "inferno", "plasma", "gray")


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
        output_dir: where TFRecord shards, ``dataset_info.json`` and ``failed-*.jsonl`` go.
        features_dir: where ``maivar extract`` writes feature shards and ``feature_info.json``.
        num_shards: shards per split (0 lets the runner choose).
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


@dataclass(frozen=True)
class ModelConfig:
    """Backbones and heads.

    Args:
        video_weights: BNInception weights: ``none`` or a path (``.weights.h5`` made by
            ``maivar convert-weights``).
        audio_weights: InceptionResNetV2 weights: ``imagenet`` (needs the network or the Keras
            cache), ``none`` or a path to the Keras ImageNet ``.h5``.
        representation: the audio-image the audio MLP and the fusion MLP use.
        video_pooling: how the K x 1024 segment features enter the VMLP: ``mean`` (TSN's
            average consensus; the default) or ``flatten`` (keeps segment order).
        hidden_units: the hidden Dense width (the paper's 1024).
        dropout: dropout after the hidden layer.
        l1: L1 kernel regularisation factor (the paper's cross-entropy + L1).
        audio_rows_init: how the audio rows of the fusion kernel start (``zeros`` makes the
            fusion model equal the VMLP at step 0).
        ten_crop: average features over TSN's 10 crops at extraction time.
    """

    video_weights: str = "none"
    audio_weights: str = "none"
    representation: str = "chromagram"
    video_pooling: str = "mean"
    hidden_units: int = 1024
    dropout: float = 0.5
    l1: float = 1e-5
    audio_rows_init: str = "zeros"
    ten_crop: bool = False

    def __post_init__(self) -> None:
        s = "model"
        _check_weights(s, "video_weights", self.video_weights, allow_imagenet=False)
        _check_weights(s, "audio_weights", self.audio_weights, allow_imagenet=True)
        _check_choice(s, "representation", self.representation, REPRESENTATIONS)
        _check_choice(s, "video_pooling", self.video_pooling, VIDEO_POOLING)
        _check_choice(s, "audio_rows_init", self.audio_rows_init, AUDIO_ROWS_INIT)
        _check_positive(s, "hidden_units", self.hidden_units)
        _check_positive(s, "l1", self.l1, allow_zero=True)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{s}.dropout: invalid value {self.dropout!r}; allowed: [0, 1)")


@dataclass(frozen=True)
class TrainConfig:
    """Algorithm 1's three trainings and how they are distributed.

    Batch sizes are global (the paper's 768 for fusion, 512 for VMLP); each replica gets
    ``batch // replicas``.
    """

    strategy: str = "auto"
    audio_epochs: int = 30
    vmlp_epochs: int = 30
    fusion_epochs: int = 30
    audio_lr: float = 1e-4
    vmlp_lr: float = 1e-4
    fusion_lr: float = 3e-5
    audio_batch_size: int = 512
    vmlp_batch_size: int = 512
    fusion_batch_size: int = 768
    mixed_precision: bool = False
    seed: int = 0
    output_dir: str = "runs/synthetic"
    extract_batch_size: int = 32

    def __post_init__(self) -> None:
        s = "train"
        _check_choice(s, "strategy", self.strategy, STRATEGIES)
        for name in ("audio_epochs", "vmlp_epochs", "fusion_epochs", "audio_lr", "vmlp_lr",
                     "fusion_lr", "audio_batch_size", "vmlp_batch_size", "fusion_batch_size",
                     "extract_batch_size"):
            _check_positive(s, name, getattr(self, name))


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: data, model and training sections."""

    name: str = "synthetic"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.model.representation not in self.data.representations:
            raise ConfigError(
                f"model.representation: {self.model.representation!r} is not rendered; "
                f"allowed: one of data.representations ({', '.join(self.data.representations)})"
            )

    def to_dict(self) -> dict[str, Any]:
        """A plain, YAML/JSON-serialisable dict that :func:`from_dict` reads back."""
        return to_dict(self)


# ----------------------------------------------------------------------------- loading


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(section: str, name: str, tp: Any, value: Any) -> Any:
    """Turns a YAML value into the annotated type, or fails naming the field."""
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{section}.{name}: expected a mapping, got {value!r}")
        return from_dict(tp, value, section=f"{section}.{name}" if section else name)
    origin = typing.get_origin(tp)
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{section}.{name}: expected a list, got {value!r}")
        (item_tp, *_rest) = typing.get_args(tp)
        return tuple(_coerce(section, name, item_tp, v) for v in value)
    if origin in (typing.Union, types.UnionType):
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{section}.{name}: invalid value {value!r}; allowed: true, false")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str, float)):
            raise ConfigError(f"{section}.{name}: invalid value {value!r}; allowed: an integer")
        try:
            f = float(value)
        except ValueError as e:
            raise ConfigError(f"{section}.{name}: invalid value {value!r}; "
                              "allowed: an integer") from e
        if f != int(f):
            raise ConfigError(f"{section}.{name}: invalid value {value!r}; allowed: an integer")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{section}.{name}: invalid value {value!r}; allowed: a number")
        try:
            return float(value)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{section}.{name}: invalid value {value!r}; "
                              "allowed: a number") from e
    if tp is str:
        if value is None:
            return "none"
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{section}.{name}: invalid value {value!r}; allowed: a string")
        return str(value)
    return value


def from_dict(cls: type, data: Mapping[str, Any] | None, section: str = "") -> Any:
    """Builds dataclass ``cls`` from a mapping, rejecting unknown keys by name."""
    data = dict(data or {})
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f"{section}." if section else ""
        raise ConfigError(
            f"{where}{unknown[0]}: unknown key; allowed keys"
            f"{' in ' + section if section else ''}: {', '.join(names)}"
        )
    hints = _field_types(cls)
    kwargs = {k: _coerce(section, k, hints[k], v) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {p} is not a section")
    node[parts[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Applies ``a.b=value`` strings (values parsed as YAML scalars/lists) to a dict tree."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected section.key=value")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw else "")
    return tree


def load_config(path: str | Path | None = None,
                overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Loads and validates an :class:`ExperimentConfig` from YAML plus dotted overrides.

    Args:
        path: a YAML file; ``None`` gives the defaults (the embedded dataset).
        overrides: ``section.key=value`` strings applied after the file.

    Raises:
        ConfigError: naming the first bad key or value and what is allowed.
        FileNotFoundError: the file does not exist.
    """
    tree: dict[str, Any] = {}
    if path is not None:
        text = Path(path).read_text()
        loaded = yaml.safe_load(text)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        tree = loaded or {}
    tree = apply_overrides(tree, overrides)
    return from_dict(ExperimentConfig, tree)


def config_from_json_dict(data: Mapping[str, Any]) -> ExperimentConfig:
    """Reads back what :meth:`ExperimentConfig.to_dict` wrote (e.g. in dataset_info.json)."""
    return from_dict(ExperimentConfig, data)
