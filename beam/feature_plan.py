"""The driver's side of ``--with_features``: the plan the workers run, and ``feature_info.json``.

Before the pipeline, :func:`prepare_features` resolves both backbones as ``maivar extract`` does
(:func:`maivar_tf.features.extract.backbone_features`: random ``none`` weights seeded and saved
under ``<features_dir>/backbones/``, a weights file, or ImageNet) and saves each one's weights
in the features' staging folder, a path every worker reads; the workers rebuild them from a
:class:`BackboneSource` (built in ``extract.precision``, ``model.video_backbone`` /
``model.audio_backbone``). After the pipeline, :func:`stage_feature_info` stages the
``feature_info.json`` ``maivar extract`` would write for the published TFRecords
(:func:`maivar_tf.features.info.new_feature_info`), and :func:`beam.publish.publish_features`
moves it in last.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from maivar_tf.features.shards import (
    audio_segment_shard_name,
    audio_shard_name,
    video_shard_name,
)


@dataclasses.dataclass(frozen=True)
class BackboneSource:
    """What a worker needs to rebuild one backbone: its build arguments and a weights file.

    Args:
        kind: ``video`` or ``audio``.
        architecture: ``model.video_backbone`` / ``model.audio_backbone``.
        image_size: the square input side.
        precision: ``extract.precision``.
        weights_path: a Keras ``.weights.h5`` file every worker can read (the driver saves it).
    """

    kind: str
    architecture: str
    image_size: int
    precision: str
    weights_path: str

    def build(self):
        """The backbone with its weights loaded (:func:`maivar_tf.models.backbones.build_backbone`)."""
        from maivar_tf.models.backbones import build_backbone

        model = build_backbone(self.kind, "none", self.image_size, architecture=self.architecture,
                               precision=self.precision)
        model.load_weights(self.weights_path)
        return model


@dataclasses.dataclass(frozen=True)
class FeaturePlan:
    """Everything the stage's workers need (picklable; made by the driver).

    Args:
        video, audio: the backbones.
        audio_backbone: ``model.audio_backbone`` (names its shards).
        representations: the audio-images (clip-level, and per segment with ``segment_audio``).
        num_segments: K.
        frame_short_side: the stored frames' shorter side.
        crop_size: the video crop side.
        image_size: the audio-images' side.
        ten_crop: TSN's ten crops averaged instead of the centre crop.
        segment_audio: the examples hold per-segment audio-images.
        batch_size: the most videos per RunInference batch (``extract.batch_size``).
        totals: ``{split: TFRecord shard count}``.
        staging: where the feature shards are written.
    """

    video: BackboneSource
    audio: BackboneSource
    audio_backbone: str
    representations: tuple[str, ...]
    num_segments: int
    frame_short_side: int
    crop_size: int
    image_size: int
    ten_crop: bool
    segment_audio: bool
    batch_size: int
    totals: Mapping[str, int]
    staging: str

    def shard_names(self, split: str, index: int) -> dict[str, str]:
        """``{part: file name}`` of one feature shard set; parts ``video``, ``<rep>`` and
        ``<rep>/segments`` (the names :mod:`maivar_tf.features.extract` writes)."""
        names = {"video": video_shard_name(split, index)}
        for rep in self.representations:
            names[rep] = audio_shard_name(rep, split, index, self.audio_backbone)
            if self.segment_audio:
                names[f"{rep}/segments"] = audio_segment_shard_name(rep, split, index,
                                                                    self.audio_backbone)
        return names


# ----------------------------------------------------------------------------- the driver


def prepare_features(exp, staging: str, features_dir: str, totals: Mapping[str, int]):
    """The driver's part before the pipeline: backbones resolved as ``maivar extract`` does.

    :func:`maivar_tf.features.extract.backbone_features` builds both backbones from the config
    (random ``none`` weights seeded and saved under ``<features_dir>/backbones/``, a weights
    file, or ImageNet); each one's weights are then saved under ``<staging>/backbones/`` for
    the workers, which rebuild it from :class:`BackboneSource`.

    Args:
        exp: the experiment config.
        staging: the features' staging folder (local or shared with the workers).
        features_dir: ``data.features_dir``.
        totals: ``{split: TFRecord shard count}``.

    Returns:
        ``(FeaturePlan, {kind: (BackboneFeatures, BackboneSpec)})``.

    Raises:
        FeatureError: a backbone the config cannot build (an image size it does not take).
        ValueError: a crop larger than the frames the job stores.
    """
    from pathlib import Path

    from maivar_tf.features.extract import backbone_features

    cfg = exp.data
    if cfg.crop_size > cfg.frame_short_side:
        raise ValueError(f"data.crop_size: {cfg.crop_size} > data.frame_short_side "
                         f"{cfg.frame_short_side}; allowed: crop_size <= frame_short_side")
    pairs = backbone_features(exp, Path(features_dir), {})
    archs = {"video": exp.model.video_backbone, "audio": exp.model.audio_backbone}
    sizes = {"video": int(cfg.crop_size), "audio": int(cfg.audio.image_size)}
    sources = {}
    os.makedirs(os.path.join(staging, "backbones"), exist_ok=True)
    for kind, (fn, _) in pairs.items():
        path = os.path.join(staging, "backbones", f"{kind}.weights.h5")
        fn.model.save_weights(path)
        sources[kind] = BackboneSource(kind, archs[kind], sizes[kind],
                                       exp.extract.precision, path)
    plan = FeaturePlan(
        video=sources["video"], audio=sources["audio"], audio_backbone=exp.model.audio_backbone,
        representations=tuple(cfg.representations), num_segments=int(cfg.num_segments),
        frame_short_side=int(cfg.frame_short_side), crop_size=int(cfg.crop_size),
        image_size=int(cfg.audio.image_size), ten_crop=bool(exp.extract.ten_crop),
        segment_audio=bool(cfg.segment_audio), batch_size=int(exp.extract.batch_size),
        totals=dict(totals), staging=staging)
    return plan, pairs


def stage_feature_info(plan: FeaturePlan, exp, pairs, dataset_info, summary: Mapping[str, Any]):
    """Writes ``feature_info.json`` into ``plan.staging`` (the record ``maivar extract`` writes
    for these TFRecords: fingerprints, backbone specs, silent features, split counts).

    Args:
        plan: the stage's plan.
        exp: the experiment config.
        pairs: :func:`prepare_features`' backbones.
        dataset_info: the published TFRecords' ``DatasetInfo``.
        summary: the job's counts (:func:`beam.publish.summarize`).

    Returns:
        The :class:`~maivar_tf.artifacts.FeatureInfo` written.
    """
    from pathlib import Path

    from maivar_tf.artifacts import SplitFeatures
    from maivar_tf.features.info import new_feature_info, record_split
    from maivar_tf.features.silent import record_silent_features, tfrecords_audio_config

    out = Path(plan.staging)
    info = new_feature_info(exp, exp, dataset_info, pairs["video"], pairs["audio"])
    info.write(out)
    info = record_silent_features(info, out, plan.audio_backbone, pairs["audio"][0],
                                  plan.representations,
                                  tfrecords_audio_config(dataset_info, exp.data.audio))
    segments = plan.representations if plan.segment_audio else ()
    for split in sorted(plan.totals):
        done = SplitFeatures(count=int(summary["counts"][split]["total"]),
                             num_shards=int(plan.totals[split]),
                             representations=plan.representations,
                             segment_representations=segments)
        info = record_split(info, plan.audio_backbone, split, done)
    info.write(out)
    return info
