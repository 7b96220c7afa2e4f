"""The preview encoder's features of ``model.selection: audio_topk``: ``extract_features``
adds them after the main extraction, beside the other audio backbones' shards.

The main backbones are the tiny stand-ins; the preview is the real MobileNetV3-Small with
random weights (cheap on the 7 tiny clips), so the test also checks that its saved weights
rebuild it and give the stored features. A second test injects a stand-in preview.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from maivar_tf.artifacts import FeatureInfo
from maivar_tf.config import ExperimentConfig
from maivar_tf.data import schema
from maivar_tf.features import (
    FeatureError,
    audio_segment_shard_name,
    audio_shard_name,
    load_features,
)
from maivar_tf.features.preview import needs_preview, preview_config
from maivar_tf.models.backbones import restore_backbone
from tests.features.tiny_data import LAYOUT, REPS, K, extract, make_config, write_tfrecords
from tests.tiny_models import TINY_AUDIO_DIM, tiny_audio_backbone

MN3 = "mobilenet_v3_small"
SHARDS = [(s, i) for s, shards in LAYOUT.items() for i in range(len(shards))]


def _topk(cfg: ExperimentConfig, **model) -> ExperimentConfig:
    return dataclasses.replace(cfg, model=dataclasses.replace(
        cfg.model, selection="audio_topk", budget=1, **model))


def _segment_images(cfg, rep: str) -> dict[str, np.ndarray]:
    """id -> the K stored per-segment audio-images of ``rep``, float32 [K, S, S, 3]."""
    out = {}
    for path in sorted(Path(cfg.data.output_dir).glob("*.tfrecord")):
        for raw in tf.data.TFRecordDataset(str(path)):
            ex = schema.parse_sequence_example(raw, (), segment_representations=(rep,))
            pngs = ex[schema.segment_audio_image_key(rep)]
            out[ex[schema.EXAMPLE_ID].numpy().decode()] = tf.cast(
                tf.stack([tf.io.decode_png(p) for p in pngs]), tf.float32).numpy()
    return out


def test_audio_topk_extraction_adds_the_preview_features(tiny_segments, extracted_segments,
                                                         traced, copy_of):
    cfg, _ = tiny_segments
    out = copy_of(extracted_segments)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tfrecord")}
    extract(_topk(cfg), traced, features_dir=out)

    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tfrecord")}
    assert {n: after[n] for n in before} == before  # video and main audio shards untouched
    added = {f(r, s, i, MN3) for r in REPS for s, i in SHARDS
             for f in (audio_shard_name, audio_segment_shard_name)}
    assert set(after) - set(before) == added
    info = FeatureInfo.read(out)
    assert info.audio_names == ("inception_resnet_v2", MN3)
    entry = info.audio(MN3)
    assert (entry.dim, entry.backbone.architecture, entry.backbone.weights) == (576, MN3, "none")
    assert entry.backbone.saved_weights == f"backbones/audio-{MN3}.weights.h5"
    assert entry.segment_representations == {"train": REPS, "test": REPS}
    assert info.config["model"]["audio_backbone"] == "inception_resnet_v2"  # the caller's cfg

    preview = restore_backbone(entry.backbone, "audio", out)
    for rep in REPS:
        stored = load_features(out, "test", rep, audio_backbone=MN3, segments=True)
        assert stored.audio_segments.shape == (2, K, 576)
        images = _segment_images(cfg, rep)
        want = np.stack([preview(images[i], training=False).numpy() for i in stored.ids])
        np.testing.assert_allclose(stored.audio_segments, want, rtol=1e-4, atol=1e-4)
        main = load_features(out, "test", rep, segments=True)  # still the main backbone's
        assert main.audio_segments.shape == (2, K, TINY_AUDIO_DIM)
        np.testing.assert_array_equal(main.video, stored.video)


def test_injected_preview_and_what_needs_one(tiny_segments, traced, tmp_path):
    cfg, _ = tiny_segments
    stand_in = tiny_audio_backbone(dim=5, seed=7)
    stand_in.name = "tiny_preview"
    out = extract(_topk(cfg), traced, preview_backbone=stand_in,
                  features_dir=tmp_path / "features", splits=("test",),
                  representations=["mfcc"])
    entry = FeatureInfo.read(out).audio(MN3)
    assert (entry.dim, entry.backbone.architecture) == (5, "injected:tiny_preview")
    fs = load_features(out, "test", "mfcc", audio_backbone=MN3, segments=True)
    assert fs.audio_segments.shape == (2, K, 5) and fs.audio.shape == (2, 5)

    assert not needs_preview(cfg)  # uniform selection: no preview
    assert not needs_preview(_topk(cfg, audio_backbone=MN3))  # the main pass made them
    assert preview_config(_topk(cfg, audio_weights="imagenet")).model.audio_weights == \
        "imagenet"
    weights_file = _topk(cfg, audio_backbone="resnet18", audio_weights="r18.weights.h5")
    assert (preview_config(weights_file).model.audio_backbone,
            preview_config(weights_file).model.audio_weights) == (MN3, "none")


def test_audio_topk_needs_per_segment_audio_images(tmp_path, traced):
    cfg = make_config(tmp_path)
    write_tfrecords(cfg)  # no per-segment audio-images
    data = dataclasses.replace(cfg.data, segment_audio=True)
    with pytest.raises(FeatureError, match="'audio_topk' previews the per-segment "
                       "audio-images.*rebuild them with data.segment_audio=true"):
        extract(_topk(dataclasses.replace(cfg, data=data)), traced)
    assert not list((tmp_path / "features").glob("*.tfrecord"))
