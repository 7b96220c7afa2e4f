"""Every artefact file the pipeline writes, by name, and its content as a typed record.

Stages hand over through files: the Beam job writes ``dataset_info.json`` beside the TFRecord
shards, ``maivar extract`` writes ``feature_info.json`` (and the backbones it used under
``backbones/``) beside the feature shards, ``maivar train`` writes ``run_info.json`` in the run
folder and ``maivar export`` writes ``assets.extra/maivar_export.json`` beside the SavedModel.
Each file's content is one frozen dataclass here with ``to_json`` / ``from_json``; the writer
builds the record, the reader gets the record back, and no JSON key or file name is spelled
anywhere else. The JSON codec they share is :mod:`maivar_tf.json_records`.

Example:
    >>> info = FeatureInfo.read("data/features")          # doctest: +SKIP
    >>> info.video_backbone.weights_to_load("data/features")  # doctest: +SKIP
    'data/features/backbones/video.weights.h5'
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from maivar_tf.json_records import ArtifactError as ArtifactError  # re-exported
from maivar_tf.json_records import JsonRecord as _Record
from maivar_tf.json_records import load_json as _load_json

#: Written by the Beam job beside the TFRecord shards.
DATASET_INFO = "dataset_info.json"
#: Written by ``maivar extract`` beside the feature shards.
FEATURE_INFO = "feature_info.json"
#: Written by ``maivar train`` in the run folder.
RUN_INFO = "run_info.json"
#: Written by ``maivar export`` inside the SavedModel version folder (TF Serving ignores it).
EXPORT_INFO = "assets.extra/maivar_export.json"
#: The class names inside the SavedModel (``assets/labels.txt``, one per line, logit order).
LABELS_ASSET = "labels.txt"
#: Where the features folder keeps the exact backbone weights its features came from.
BACKBONES_SUBDIR = "backbones"
#: Prefix of the Beam job's dead-letter files (``failed-SSSSS-of-NNNNN.jsonl``).
FAILED_PREFIX = "failed"
#: Beam's shard-name template of every TFRecord shard and dead-letter file (``-00000-of-00002``).
SHARD_TEMPLATE = "-SSSSS-of-NNNNN"
#: The suffix of TFRecord shards.
TFRECORD_SUFFIX = ".tfrecord"
#: A TFRecord shard's file name: ``<split>-<index>-of-<total>.tfrecord``, five digits each.
SHARD_NAME_RE = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-(?P<index>\d{5})-of-(?P<total>\d{5})"
                           r"\.tfrecord$")
#: Version of the feature-shard layout and ``feature_info.json`` (2: typed backbone specs;
#: 3: several audio backbones side by side, ``audio_backbones``).
FEATURES_VERSION = 3
#: The audio backbone of folders that hold one (version 2), and whose shards keep the names
#: ``audio-<REP>-...`` (the other backbones': ``audio-<backbone>-<REP>-...``).
DEFAULT_AUDIO_BACKBONE = "inception_resnet_v2"


class SchemaVersionError(ValueError):
    """TFRecord shards written under a schema version this code does not read."""


def shard_glob(split: str = "*") -> str:
    """Glob of the TFRecord shards of ``split`` (every split by default), as the job names them."""
    digits = "[0-9]" * 5
    return f"{split}-{digits}-of-{digits}{TFRECORD_SUFFIX}"


def shard_name(split: str, index: int, total: int) -> str:
    """A TFRecord shard's file name, ``<split>-<index>-of-<total>.tfrecord`` (five digits each)."""
    return f"{split}-{index:05d}-of-{total:05d}{TFRECORD_SUFFIX}"


def backbone_weights_name(kind: str) -> str:
    """File name of the saved ``video`` or ``audio`` backbone weights (``video.weights.h5``)."""
    return f"{kind}.weights.h5"


# ----------------------------------------------------------------------------- dataset info


@dataclass(frozen=True)
class DatasetInfo(_Record):
    """``dataset_info.json``: what the Beam job wrote and with which settings.

    Args:
        schema_version: the TFRecord schema version (:data:`maivar_tf.data.schema.SCHEMA_VERSION`).
        config: the experiment config the job ran with (``ExperimentConfig.to_dict()``).
        class_names: the dataset's classes, in label-index order.
        num_records: annotation records the job read.
        counts: per split ``{"total": n, "per_class": {class: n}}``.
        failed: ``{"total", "by_reason": {reason: n}, "files": [dead-letter file names]}``.
        shards: per split, the shard file names.
        digests: per shard file name, the SHA-256 hex digest of its bytes (the same input
            gives the same shards in every runner mode, so a dataset can be checked by hash).
    """

    FILE: ClassVar[str] = DATASET_INFO
    MISSING_HINT: ClassVar[str] = ("build the shards first with `python -m beam.build_tfrecords`"
                                   " (or `maivar build`)")

    schema_version: int
    config: Mapping[str, Any]
    class_names: tuple[str, ...]
    num_records: int = 0
    counts: Mapping[str, Any] = field(default_factory=dict)
    failed: Mapping[str, Any] = field(default_factory=dict)
    shards: Mapping[str, Sequence[str]] = field(default_factory=dict)
    digests: Mapping[str, str] = field(default_factory=dict)

    @property
    def data_config(self) -> dict[str, Any]:
        """The stored ``data`` section (a plain dict)."""
        return dict(self.config.get("data", {}))

    @classmethod
    def read(cls, folder: str | os.PathLike) -> DatasetInfo:
        """Reads ``dataset_info.json`` through ``tf.io.gfile`` (local or ``gs://`` folders)."""
        import tensorflow as tf

        path = os.path.join(os.fspath(folder), cls.FILE)
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"{path} does not exist; {cls.MISSING_HINT}")
        with tf.io.gfile.GFile(path, "r") as f:
            return cls.from_json(_load_json(f.read(), path), source=path)

    def check_schema(self, data_dir: str | os.PathLike, expected: int,
                     readable: tuple[int, ...] = ()) -> None:
        """Raises :class:`SchemaVersionError` unless the shards have schema ``expected`` (or
        one of the older ``readable`` ones)."""
        if self.schema_version != expected and self.schema_version not in readable:
            raise SchemaVersionError(
                f"{os.fspath(data_dir)}: the shards use TFRecord schema version "
                f"{self.schema_version!r}, this code reads version {expected}; rebuild them "
                "with `python -m beam.build_tfrecords`")


# ----------------------------------------------------------------------------- features


@dataclass(frozen=True)
class BackboneSpec(_Record):
    """Which backbone made a set of features, precisely enough to rebuild it.

    Args:
        architecture: the backbone (``bn_inception``, ``inception_resnet_v2``, or
            ``injected:<model name>`` for a model handed in by code).
        weights: the config's weights spec: ``none``, ``imagenet`` or a file path.
        image_size: the square input side the features were computed at.
        weights_size: byte size of the weights file when ``weights`` is a path.
        weights_mtime: its modification time (whole seconds).
        saved_weights: the weights actually used, saved by ``maivar extract`` (a path
            relative to the features folder); set for randomly initialised backbones.
    """

    architecture: str
    weights: str
    image_size: int
    weights_size: int | None = None
    weights_mtime: int | None = None
    saved_weights: str | None = None

    @classmethod
    def describe(cls, architecture: str, weights: str, image_size: int,
                 saved_weights: str | None = None) -> BackboneSpec:
        """The spec of a backbone built from ``weights`` (a weights file is stat-ed)."""
        size = mtime = None
        path = Path(str(weights))
        if weights not in ("none", "imagenet") and path.is_file():
            st = path.stat()
            size, mtime = int(st.st_size), int(st.st_mtime)
        return cls(architecture, str(weights), int(image_size), size, mtime, saved_weights)

    def fingerprint(self) -> dict[str, Any]:
        """What the feature values depend on (everything but where a copy was saved)."""
        return {k: v for k, v in self.to_json().items() if k != "saved_weights"}

    def weights_file_unchanged(self) -> bool:
        """Whether ``weights`` names a file whose size and mtime are still the recorded ones."""
        path = Path(self.weights)
        if self.weights in ("none", "imagenet") or not path.is_file():
            return False
        st = path.stat()
        return (self.weights_size, self.weights_mtime) == (int(st.st_size), int(st.st_mtime))

    def weights_to_load(self, features_dir: str | os.PathLike) -> str | None:
        """The weights spec that rebuilds exactly this backbone, or None when none can.

        The saved copy beside the features first, then an unchanged weights file, then
        ``imagenet``. Random (``none``) weights that were not saved cannot be rebuilt.
        """
        if self.saved_weights:
            saved = Path(self.saved_weights)
            saved = saved if saved.is_absolute() else Path(features_dir) / saved
            if saved.is_file():
                return str(saved)
        if self.weights == "imagenet":
            return "imagenet"
        if self.weights_file_unchanged():
            return self.weights
        return None


@dataclass(frozen=True)
class SplitFeatures(_Record):
    """One split's extracted features: examples, input shards and representations done
    (``segment_representations``: those whose per-segment audio features are done too)."""

    count: int
    num_shards: int
    representations: tuple[str, ...] = ()
    segment_representations: tuple[str, ...] = ()


@dataclass(frozen=True)
class AudioFeatures(_Record):
    """One audio backbone's features in a features folder (several live side by side).

    Args:
        backbone: the :class:`BackboneSpec` that made them.
        dim: their width.
        fingerprint: hash of what their values depend on beyond the folder's fingerprint
            (the backbone); another backbone spec under the same name is refused as stale.
        representations: per split, the representations extracted.
        segment_representations: per split, the representations whose per-segment audio
            features (``audio-<REP>_SEGMENTS-...`` shards) are extracted.
        silent: per representation, the backbone's features of the silent audio-image
            (``dim`` float32 values, exact through JSON): what a clip without sound gets.
    """

    backbone: BackboneSpec
    dim: int
    fingerprint: str = ""
    representations: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    segment_representations: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    silent: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, cast in (("representations", tuple), ("segment_representations", tuple),
                           ("silent", lambda v: tuple(map(float, v)))):
            object.__setattr__(self, name, {k: cast(v) for k, v in getattr(self, name).items()})


@dataclass(frozen=True)
class FeatureInfo(_Record):
    """``feature_info.json``: what ``maivar extract`` wrote and from what.

    Args:
        fingerprint: hash of everything the video features depend on and every audio backbone
            shares (K, crops, TFRecords); each audio backbone adds its own
            (:class:`AudioFeatures`). Stale shards are refused.
        num_segments: K, segment features per video.
        video_dim, audio_dim: feature widths (``audio_dim``: the first audio backbone's).
        crop_size: the frame crop side the video backbone saw.
        ten_crop: whether video features average TSN's ten crops.
        video_backbone, audio_backbone: the backbones, as :class:`BackboneSpec`
            (``audio_backbone``: the first audio backbone extracted into the folder, as
            version 2 recorded it; every one is in ``audio_backbones``).
        class_names: the dataset's classes.
        config: the experiment config of the extraction.
        tfrecords_schema_version: the schema of the TFRecords the features came from.
        keys: the feature-shard ``tf.train.Example`` keys.
        splits: per split, a :class:`SplitFeatures` (its representations: the first audio
            backbone's).
        features_version: :data:`FEATURES_VERSION` of the writer.
        audio_backbones: per ``model.audio_backbone`` name, its :class:`AudioFeatures`
            (empty in version 2, whose one audio backbone :meth:`audio` reports as the default).
    """

    FILE: ClassVar[str] = FEATURE_INFO
    MISSING_HINT: ClassVar[str] = "run `maivar extract` first (or check data.features_dir)"

    fingerprint: str
    num_segments: int
    video_dim: int
    audio_dim: int
    crop_size: int
    ten_crop: bool
    video_backbone: BackboneSpec
    audio_backbone: BackboneSpec
    class_names: tuple[str, ...]
    config: Mapping[str, Any]
    tfrecords_schema_version: int
    keys: Mapping[str, str] = field(default_factory=dict)
    splits: Mapping[str, SplitFeatures] = field(default_factory=dict)
    features_version: int = FEATURES_VERSION
    audio_backbones: Mapping[str, AudioFeatures] = field(default_factory=dict)

    @property
    def representations(self) -> tuple[str, ...]:
        """Representations extracted for every split (in the first split's order)."""
        if not self.splits:
            return ()
        sets = [set(s.representations) for s in self.splits.values()]
        first = next(iter(self.splits.values())).representations
        return tuple(r for r in first if all(r in s for s in sets))

    @property
    def counts(self) -> dict[str, int]:
        """Examples per split."""
        return {name: s.count for name, s in self.splits.items()}

    def to_json(self) -> dict[str, Any]:
        """The record plus the derived ``representations`` and ``counts`` (for readers)."""
        return {**super().to_json(), "representations": list(self.representations),
                "counts": self.counts}

    def backbone(self, kind: str, audio_backbone: str | None = None) -> BackboneSpec:
        """The ``video`` or ``audio`` :class:`BackboneSpec` (the audio one of
        ``audio_backbone``; default the first one extracted).

        Raises:
            ValueError: an unknown kind; an audio backbone the folder has no features of.
        """
        if kind not in ("video", "audio"):
            raise ValueError(f"backbone kind {kind!r}; allowed: video, audio")
        if kind == "video":
            return self.video_backbone
        if audio_backbone is None:
            return self.audio_backbone
        found = self.audio(audio_backbone)
        if found is None:
            raise ValueError(f"no {audio_backbone!r} audio features; extracted audio "
                             f"backbones: {', '.join(self.audio_names)}")
        return found.backbone

    @property
    def audio_names(self) -> tuple[str, ...]:
        """The audio backbones whose features the folder holds, first extracted first."""
        return tuple(self.audio_backbones) or (DEFAULT_AUDIO_BACKBONE,)

    def audio(self, name: str) -> AudioFeatures | None:
        """The features of audio backbone ``name`` (a ``model.audio_backbone`` value), or None.

        A version-2 folder holds one audio backbone's, reported as the default's (its shards
        have the default's names).
        """
        if self.audio_backbones:
            return self.audio_backbones.get(name)
        if name != DEFAULT_AUDIO_BACKBONE:
            return None
        return AudioFeatures(self.audio_backbone, self.audio_dim, "", {
            split: s.representations for split, s in self.splits.items()})


# ----------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class _ClassifierRecord(_Record):
    """What a trained classifier takes and names, shared by runs and exports.

    Args:
        class_names: the classes the logits index, in logit order.
        representation: the audio-image the audio features come from.
        num_segments: K, the frames (segment features) per video.
    """

    class_names: tuple[str, ...]
    representation: str
    num_segments: int

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)


@dataclass(frozen=True)
class RunInfo(_ClassifierRecord):
    """``run_info.json``: what a trained run is and how it was trained.

    Args (after those of the classifier record: class_names, representation, num_segments):
        video_feature_dim, audio_feature_dim: the feature widths the heads take.
        config: the experiment config the run was trained with.
        features_dir: the features folder the run was trained on (its backbones serve it).
        num_train, num_val: training and validation examples.
        strategy: the ``tf.distribute`` strategy's class name.
        num_replicas, num_workers: replicas in sync and worker processes.
        mixed_precision: the Keras dtype policy name.
        versions: library versions.
        stages: per Algorithm 1 stage, its training settings.
        metrics: per stage, train (and val) metrics.
        calibration: the fusion head's temperature scaling, fitted on the validation split
            (:func:`maivar_tf.calibration.calibration_record`); empty in older runs.
    """

    FILE: ClassVar[str] = RUN_INFO
    MISSING_HINT: ClassVar[str] = "train the run first (`maivar train`) or pass --run-dir"

    video_feature_dim: int
    audio_feature_dim: int
    config: Mapping[str, Any]
    features_dir: str = ""
    num_train: int = 0
    num_val: int = 0
    strategy: str = ""
    num_replicas: int = 1
    num_workers: int = 1
    mixed_precision: str = "float32"
    versions: Mapping[str, str] = field(default_factory=dict)
    stages: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    calibration: Mapping[str, Any] = field(default_factory=dict)

    @property
    def temperature(self) -> float:
        """The fusion logits' temperature (1.0 for runs recorded without one)."""
        return float(self.calibration.get("temperature", 1.0))

    @property
    def audio_backbone(self) -> str:
        """The audio backbone the run's features came from (``model.audio_backbone``; the
        default for runs recorded before there was a choice)."""
        model = self.config.get("model", {}) if isinstance(self.config, Mapping) else {}
        return str(model.get("audio_backbone", DEFAULT_AUDIO_BACKBONE))


# ----------------------------------------------------------------------------- exports


@dataclass(frozen=True)
class ExportInfo(_ClassifierRecord):
    """``assets.extra/maivar_export.json``: what an exported SavedModel serves.

    Args (after those of the classifier record: class_names, representation, num_segments):
        model_name, version: where TF Serving finds it (``<model_name>/<version>``).
        ten_crop: whether frames go through TSN's ten crops.
        top_k: how many classes ``top_classes`` names.
        signatures: per signature, its inputs ``[{"name", "dtype", "shape"}]``.
        outputs: the output keys of every signature.
        provenance: where the run and its backbones came from.
        config: the experiment config (its ``data`` section is the preprocessing).
        temperature: the fusion logits are divided by it before the softmax (the run's
            calibration; 1.0 in older exports).
    """

    FILE: ClassVar[str] = EXPORT_INFO
    MISSING_HINT: ClassVar[str] = ("not a `maivar export` SavedModel version folder "
                                   "(EXPORT_DIR/<model_name>/<version>)")

    model_name: str
    version: int
    ten_crop: bool
    top_k: int
    signatures: Mapping[str, Any]
    outputs: tuple[str, ...]
    provenance: Mapping[str, Any] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    temperature: float = 1.0
