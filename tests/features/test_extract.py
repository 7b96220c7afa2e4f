"""Feature extraction: shapes, values, resumability, refusal of stale folders, determinism.

Tiny injected backbones run over the hand-written TFRecords of ``tiny_data`` (seconds). The
full-size BNInception and InceptionResNetV2 extract two videos in
``tests/serving/test_full_size.py``, whose export serves those same backbones.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from maivar_tf import ops
from maivar_tf.artifacts import FEATURE_INFO, FeatureInfo
from maivar_tf.data import schema
from maivar_tf.features import (
    FeatureError,
    audio_shard_name,
    load_features,
    video_shard_name,
)
from maivar_tf.models.backbones import BackboneFeatures, video_features
from tests.features.tiny_data import (
    CLASSES,
    LAYOUT,
    REPS,
    K,
    extract,
    make_config,
    reference_features,
    write_tfrecords,
)
from tests.tiny_models import TINY_AUDIO_DIM, TINY_VIDEO_DIM


def test_extract_writes_shards_info_and_correct_values(tiny, extracted, backbones):
    cfg, labels = tiny
    out = extracted
    assert out == Path(cfg.data.features_dir)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([
        FEATURE_INFO,
        video_shard_name("train", 0), video_shard_name("train", 1), video_shard_name("test", 0),
        *[audio_shard_name(r, s, i) for r in REPS for s, i in
          (("train", 0), ("train", 1), ("test", 0))],
    ])
    assert audio_shard_name("mfcc", "train", 1) == "audio-MFCC-train-00001.tfrecord"
    info = FeatureInfo.read(out)
    assert (info.num_segments, info.video_dim, info.audio_dim) == (K, TINY_VIDEO_DIM,
                                                                   TINY_AUDIO_DIM)
    assert info.counts == {"train": 5, "test": 2}
    assert info.representations == REPS
    assert info.class_names == CLASSES
    assert info.video_backbone.architecture == "injected:tiny_video"
    assert info.audio_backbone.architecture == "injected:tiny_audio"
    assert info.config["data"]["num_segments"] == K
    raw = json.loads((out / FEATURE_INFO).read_text())  # readers of the JSON see the same
    assert raw["counts"] == {"train": 5, "test": 2} and raw["representations"] == list(REPS)

    ref = reference_features(cfg, *backbones)
    for split in ("train", "test"):
        for rep in REPS:
            fs = load_features(out, split, rep)
            expect_ids = sorted(i for shard in LAYOUT[split] for i in shard)
            assert fs.ids.tolist() == expect_ids
            assert fs.video.shape == (len(expect_ids), K, TINY_VIDEO_DIM)
            assert fs.video.dtype == np.float32
            assert fs.audio.shape == (len(expect_ids), TINY_AUDIO_DIM)
            assert fs.audio.dtype == np.float32
            assert fs.labels.tolist() == [labels[i] for i in expect_ids]
            assert fs.class_names == CLASSES and fs.representation == rep
            for row, i in enumerate(fs.ids):
                np.testing.assert_allclose(fs.video[row], ref[i][0], rtol=1e-4, atol=1e-5)
                np.testing.assert_allclose(fs.audio[row], ref[i][1][rep], rtol=1e-4, atol=1e-5)
    # Different examples really have different features (the test could fail).
    fs = load_features(out, "train", "mfcc")
    assert not np.allclose(fs.video[0], fs.video[1])
    assert not np.allclose(fs.audio[0], fs.audio[1])


def test_resume_skips_finished_shards_and_replaces_leftover_temp(tiny, traced, tmp_path):
    cfg, _ = tiny
    out = extract(cfg, traced, representations=["mfcc"], features_dir=tmp_path / "f")
    assert FeatureInfo.read(out).representations == ("mfcc",)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tfrecord")}
    content = {p.name: p.read_bytes() for p in out.glob("*.tfrecord")}
    # Simulate an interrupted run: one shard gone, a half-written temp file left behind.
    (out / video_shard_name("train", 1)).unlink()
    leftover = out / f".{video_shard_name('train', 1)}.tmp-99999"
    leftover.write_bytes(b"half written")
    extract(cfg, traced, representations=["mfcc", "chromagram"], features_dir=out)
    assert not leftover.exists()
    assert not list(out.glob(".*tmp*"))
    for name, t in mtimes.items():
        if name != video_shard_name("train", 1):
            assert (out / name).stat().st_mtime_ns == t, f"{name} was rewritten"
    assert (out / video_shard_name("train", 1)).read_bytes() == \
        content[video_shard_name("train", 1)]
    info = FeatureInfo.read(out)
    assert info.representations == REPS
    assert info.counts == {"train": 5, "test": 2}
    assert len(load_features(out, "train", "chromagram")) == 5
    # A third run changes nothing at all.
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tfrecord")}
    extract(cfg, traced, features_dir=out)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tfrecord")} == mtimes


def test_stale_features_are_refused(tiny, extracted, backbones, tmp_path):
    cfg, _ = tiny
    before = {p.name: p.read_bytes() for p in extracted.iterdir()}
    other = keras.Model(backbones[0].inputs, backbones[0].outputs, name="other_video")
    with pytest.raises(FeatureError, match="other settings"):
        extract(cfg, (other, backbones[1]), splits=("test",))
    assert {p.name: p.read_bytes() for p in extracted.iterdir()} == before
    # A feature_info.json of an older layout (string backbone descriptions) is stale too.
    old = tmp_path / "old"
    old.mkdir()
    (old / FEATURE_INFO).write_text(json.dumps({**json.loads(
        (extracted / FEATURE_INFO).read_text()), "video_backbone": "BNInception:none"}))
    with pytest.raises(FeatureError, match="other settings"):
        extract(cfg, backbones, splits=("test",), features_dir=old)
    orphan = tmp_path / "orphan"
    orphan.mkdir()
    (orphan / video_shard_name("test", 0)).write_bytes(b"")
    with pytest.raises(FeatureError, match="feature shards but no feature_info.json"):
        extract(cfg, backbones, splits=("test",), features_dir=orphan)


def test_extraction_is_deterministic(tiny, extracted, backbones, tmp_path):
    """Keras models injected as they are give the very bytes BackboneFeatures gave."""
    cfg, _ = tiny
    again = extract(cfg, backbones, features_dir=tmp_path / "again")
    files = sorted(p.name for p in extracted.glob("*.tfrecord"))
    assert files == sorted(p.name for p in again.glob("*.tfrecord"))
    for name in files:
        assert (extracted / name).read_bytes() == (again / name).read_bytes(), name
    assert FeatureInfo.read(again).fingerprint == FeatureInfo.read(extracted).fingerprint


def test_unknown_representation_missing_tfrecords_and_k(tiny, traced, backbones, tmp_path):
    cfg, _ = tiny
    with pytest.raises(FeatureError, match="not in the TFRecords"):
        extract(cfg, traced, representations=["waveplot"])
    with pytest.raises(FeatureError, match="no val-SSSSS-of-NNNNN.tfrecord shards"):
        extract(cfg, traced, splits=("val",))
    with pytest.raises(FeatureError, match="no splits to extract"):
        extract(cfg, traced, splits=())
    empty = make_config(tmp_path)
    with pytest.raises(FeatureError, match="no train-SSSSS-of-NNNNN.tfrecord shards"):
        extract(empty, traced)
    small = BackboneFeatures(backbones[0], (32, 32, 3))
    with pytest.raises(FeatureError, match=r"takes \(32, 32, 3\); the config asks for "
                                           r"\(224, 224, 3\)"):
        extract(cfg, (small, traced[1]), features_dir=tmp_path / "small")
    more = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, num_segments=K + 1))
    with pytest.raises(FeatureError, match=f"data.num_segments: {K + 1} .* hold {K}"):
        extract(more, traced, features_dir=tmp_path / "k")


def test_ten_crop_extraction_averages_crops(tmp_path, traced, backbones):
    cfg = make_config(tmp_path, ten_crop=True)
    write_tfrecords(cfg)
    out = extract(cfg, traced, splits=("test",), representations=["mfcc"])
    assert FeatureInfo.read(out).ten_crop
    fs = load_features(out, "test", "mfcc")
    v, _ = backbones
    raw = next(iter(tf.data.TFRecordDataset(
        str(Path(cfg.data.output_dir) / "test-00000-of-00001.tfrecord"))))
    ex = schema.parse_sequence_example(raw, REPS)
    frames = tf.stack([tf.io.decode_jpeg(f) for f in ex[schema.IMAGE_ENCODED]])
    crops = tf.cast(ops.ten_crop(frames, 224), tf.float32)  # [10, K, 224, 224, 3]
    expect = np.mean([v(crops[c]).numpy() for c in range(10)], axis=0)
    row = fs.ids.tolist().index(ex[schema.EXAMPLE_ID].numpy().decode())
    np.testing.assert_allclose(fs.video[row], expect, rtol=1e-4, atol=1e-5)
    # The same numbers as the shared video_features on the whole frames (serving's path).
    np.testing.assert_allclose(fs.video[row], video_features(traced[0], frames[None], 224,
                                                             ten_crop=True)[0].numpy(),
                               rtol=1e-6, atol=1e-6)


def test_non_finite_backbone_features_are_refused_naming_the_example(tiny, backbones, traced,
                                                                     tmp_path):
    """A backbone that gives NaN (broken weights) stops extraction; nothing is written."""
    cfg, _ = tiny
    frames = keras.Input((224, 224, 3))
    nan_video = keras.Model(frames, keras.layers.Rescaling(float("nan"))(backbones[0](frames)))
    out = tmp_path / "nan"
    first = LAYOUT["train"][0][:cfg.extract.batch_size]  # the first batch fails
    assert len(first) == 2
    with pytest.raises(FeatureError) as err:
        extract(cfg, (nan_video, traced[1]), features_dir=out)
    message = str(err.value)
    assert message.startswith(f"{Path(cfg.data.output_dir) / 'train-00000-of-00002.tfrecord'}: "
                              f"non-finite features (NaN or Inf) for {len(first)} example(s) "
                              f"in {video_shard_name('train', 0)}, example id "
                              f"{', '.join(first)}; refusing to write its features")
    assert list(out.glob("*.tfrecord")) == [] and list(out.glob(".*")) == []
