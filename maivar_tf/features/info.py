"""The features folder's record: fingerprints, refusal of stale folders, audio backbones side by side.

``feature_info.json`` (:class:`~maivar_tf.artifacts.FeatureInfo`) fingerprints everything the
video features depend on and every audio backbone shares (the video backbone, K, crops, the
TFRecords' ``dataset_info.json``), and each audio backbone (``model.audio_backbone``) its own
weights, so one folder holds the audio features of several backbones (the paper's backbone
ablation, Shaikh et al. 2024, Sec. 5.2.1): :func:`start_feature_info` refuses a folder made
with other settings, adds a new audio backbone to one made with the same, and reads a
version-2 folder (one audio backbone) as the default backbone's when its fingerprint is the one
these settings gave then. :mod:`maivar_tf.features.extract` calls it before writing any shard
and :func:`record_split` after every split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from maivar_tf.artifacts import (
    DEFAULT_AUDIO_BACKBONE,
    FEATURES_VERSION,
    ArtifactError,
    AudioFeatures,
    BackboneSpec,
    DatasetInfo,
    FeatureInfo,
    SplitFeatures,
)
from maivar_tf.config import REPRESENTATIONS, ExperimentConfig
from maivar_tf.features.codec import FEATURE_KEYS
from maivar_tf.features.shards import FeatureError


def _hash(payload: Mapping[str, Any]) -> str:
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def extraction_fingerprint(cfg: ExperimentConfig, dataset_info: DatasetInfo,
                           video: BackboneSpec, audio: BackboneSpec | None = None, *,
                           version: int = FEATURES_VERSION) -> str:
    """A hash of everything the feature values depend on (stale shards are refused), the
    backbones' ``extract.precision`` too (a folder holds the features of one precision).

    Version 3 (the folder's fingerprint) leaves the audio backbone out: each has its own
    (:func:`audio_fingerprint`). ``version=2`` gives what version-2 folders recorded, with the
    audio backbone ``audio`` in it.
    """
    payload = {
        "features_version": version,
        "video": video.fingerprint(),
        "num_segments": cfg.data.num_segments,
        "crop_size": cfg.data.crop_size,
        "ten_crop": cfg.extract.ten_crop,
        "dataset_info": dataset_info.to_json(),
    }
    if version == 2:
        payload["audio"] = audio.fingerprint()
    if cfg.extract.precision != "float32":  # float32 folders keep their fingerprints
        payload["precision"] = cfg.extract.precision
    return _hash(payload)


def audio_fingerprint(audio: BackboneSpec) -> str:
    """What one audio backbone's features depend on beyond the folder's fingerprint."""
    return _hash({"audio": audio.fingerprint()})


def new_feature_info(recorded: ExperimentConfig, cfg: ExperimentConfig,
                     dataset_info: DatasetInfo, video_pair, audio_pair) -> FeatureInfo:
    """The ``feature_info.json`` record of a fresh extraction, before any split is recorded.

    ``maivar extract`` and the Beam job's ``--with_features`` both start from it, so the two
    write the same record (fingerprints, backbone specs, keys, one audio backbone).

    Args:
        recorded: the config stored in the record (the caller's).
        cfg: the config the backbones ran with (``model.audio_backbone`` names the audio one).
        dataset_info: the TFRecords' ``dataset_info.json``.
        video_pair, audio_pair: ``(BackboneFeatures, BackboneSpec)`` of each backbone
            (:func:`maivar_tf.features.extract.backbone_features`).
    """
    (video, video_spec), (audio, audio_spec) = video_pair, audio_pair
    return FeatureInfo(
        fingerprint=extraction_fingerprint(cfg, dataset_info, video_spec),
        num_segments=cfg.data.num_segments, video_dim=video.dim, audio_dim=audio.dim,
        crop_size=cfg.data.crop_size, ten_crop=cfg.extract.ten_crop,
        video_backbone=video_spec, audio_backbone=audio_spec,
        class_names=tuple(dataset_info.class_names), config=recorded.to_dict(),
        tfrecords_schema_version=dataset_info.schema_version, keys=dict(FEATURE_KEYS),
        audio_backbones={cfg.model.audio_backbone: AudioFeatures(
            audio_spec, audio.dim, audio_fingerprint(audio_spec))})


def migrated(old: FeatureInfo, legacy_fingerprint: Callable[[BackboneSpec], str],
             new_fingerprint: str) -> FeatureInfo:
    """A version-2 record (one audio backbone) as version 3, when its fingerprint is the one
    these settings gave in version 2 (``legacy_fingerprint(old audio spec)``); else unchanged
    (and then refused as stale)."""
    if old.audio_backbones or old.fingerprint != legacy_fingerprint(old.audio_backbone):
        return old
    entry = AudioFeatures(old.audio_backbone, old.audio_dim, audio_fingerprint(old.audio_backbone),
                          {split: s.representations for split, s in old.splits.items()})
    return dataclasses.replace(old, fingerprint=new_fingerprint,
                               audio_backbones={DEFAULT_AUDIO_BACKBONE: entry})


def start_feature_info(out_dir: Path, info: FeatureInfo, name: str,
                       legacy_fingerprint: Callable[[BackboneSpec], str]) -> FeatureInfo:
    """Writes ``info`` (keeping the splits and the audio backbones already extracted) or
    refuses a stale folder.

    ``info`` holds one audio backbone, ``name``; a folder holding others gets it added. A
    version-2 folder is migrated (:func:`migrated`). The fingerprints are recorded before any
    shard is written.

    Raises:
        FeatureError: the folder holds features made with other settings (video backbone, K,
            crops, TFRecords, or another spec under the audio backbone's name), or feature
            shards without a ``feature_info.json``.
    """
    if FeatureInfo.exists(out_dir):
        try:
            old = migrated(FeatureInfo.read(out_dir), legacy_fingerprint, info.fingerprint)
        except ArtifactError:
            old = None
        if old is None or old.fingerprint != info.fingerprint:
            raise FeatureError(
                f"{out_dir} holds features made with other settings (weights, K, crops, precision or "
                f"TFRecords: fingerprint {old.fingerprint if old else 'of an older layout'} != "
                f"{info.fingerprint}); delete it or set data.features_dir to another folder")
        new, had = info.audio_backbones[name], old.audio_backbones.get(name)
        if had is not None and had.fingerprint != new.fingerprint:
            raise FeatureError(
                f"{out_dir} holds {name!r} audio features made with other settings (audio "
                f"weights: {had.backbone.weights!r}, now {new.backbone.weights!r}); delete it or "
                "set data.features_dir to another folder")
        merged = {**old.audio_backbones, name: had or new}
        first = next(iter(merged.values()))
        info = dataclasses.replace(info, splits=dict(old.splits), audio_backbones=merged,
                                   audio_backbone=first.backbone, audio_dim=first.dim)
    elif any(out_dir.glob("*.tfrecord")):
        raise FeatureError(f"{out_dir} holds feature shards but no {FeatureInfo.FILE}; delete "
                           "them or set data.features_dir to another folder")
    info.write(out_dir)
    return info


def record_split(info: FeatureInfo, name: str, split: str, done: SplitFeatures) -> FeatureInfo:
    """``info`` with audio backbone ``name``'s representations (and per-segment ones) of
    ``split`` extended by ``done``'s; the split's own record mirrors the folder's first audio
    backbone."""
    def union(*groups):
        return tuple(sorted(set().union(*groups), key=REPRESENTATIONS.index))

    entry = info.audio_backbones[name]
    entry = dataclasses.replace(
        entry,
        representations={**entry.representations, split: union(
            entry.representations.get(split, ()), done.representations)},
        segment_representations={**entry.segment_representations, split: union(
            entry.segment_representations.get(split, ()), done.segment_representations)})
    backbones = {**info.audio_backbones, name: entry}
    first = next(iter(backbones.values()))
    split_record = dataclasses.replace(
        done, representations=first.representations.get(split, ()),
        segment_representations=first.segment_representations.get(split, ()))
    return dataclasses.replace(info, audio_backbones=backbones,
                               splits={**info.splits, split: split_record})


def record_silent(info: FeatureInfo, name: str, silent: Mapping[str, Any]) -> FeatureInfo:
    """``info`` with audio backbone ``name``'s silent features of each representation of
    ``silent`` (``{rep: [dim] floats}``) recorded beside those it holds."""
    entry = info.audio_backbones[name]
    entry = dataclasses.replace(entry, silent={**entry.silent, **{
        rep: tuple(float(x) for x in values) for rep, values in silent.items()}})
    return dataclasses.replace(info, audio_backbones={**info.audio_backbones, name: entry})
