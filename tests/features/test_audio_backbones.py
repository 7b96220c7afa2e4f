"""Audio features of several backbones side by side in one features folder.

The default backbone's shards keep their names (``audio-MFCC-...``), another backbone's carry
its name (``audio-resnet18-MFCC-...``); ``feature_info.json`` records each backbone's spec,
width and representations; a second extraction adds its audio shards without redoing the
video ones; version-2 folders (one audio backbone) stay readable and extendable. The
InceptionResNetV2 side is a tiny injected stand-in, the ResNet18 side the real ResNet18 built
from the config (random weights saved beside the features), so serving can rebuild it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from maivar_tf.artifacts import FEATURE_INFO, DatasetInfo, FeatureInfo
from maivar_tf.features import FeatureError, audio_shard_name, load_features, video_shard_name
from maivar_tf.features.info import extraction_fingerprint
from maivar_tf.models.backbones import restore_backbone
from tests.features.tiny_data import LAYOUT, REPS, extract
from tests.tiny_models import TINY_AUDIO_DIM

R18 = "resnet18"


def _with_audio_backbone(cfg, name):
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, audio_backbone=name))


@pytest.fixture(scope="module")
def side_by_side(tiny, extracted, traced, tmp_path_factory):
    """A copy of the default extraction with ResNet18 audio features added (video injected)."""
    cfg, _ = tiny
    out = shutil.copytree(extracted, tmp_path_factory.mktemp("side") / "features")
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tfrecord")}
    extract(_with_audio_backbone(cfg, R18), (traced[0], None), features_dir=out)
    return cfg, out, before


def test_second_backbone_adds_its_shards_and_keeps_the_others(side_by_side):
    cfg, out, before = side_by_side
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tfrecord")}
    assert {n: after[n] for n in before} == before  # video and default audio untouched
    added = {audio_shard_name(r, s, i, R18) for r in REPS for s, shards in LAYOUT.items()
             for i in range(len(shards))}
    assert set(after) - set(before) == added
    assert audio_shard_name("mfcc", "train", 1, R18) == "audio-resnet18-MFCC-train-00001.tfrecord"
    assert audio_shard_name("mfcc", "train", 1) == "audio-MFCC-train-00001.tfrecord"
    assert (out / "backbones" / "audio-resnet18.weights.h5").is_file()

    info = FeatureInfo.read(out)
    assert info.audio_names == ("inception_resnet_v2", R18)
    r18 = info.audio(R18)
    assert (r18.backbone.architecture, r18.backbone.weights, r18.dim) == (R18, "none", 512)
    assert r18.backbone.saved_weights == "backbones/audio-resnet18.weights.h5"
    assert r18.representations == {"train": REPS, "test": REPS}
    assert info.audio("inception_resnet_v2").dim == info.audio_dim == TINY_AUDIO_DIM
    assert info.audio_backbone.architecture == "injected:tiny_audio"  # the first one's
    assert info.audio("resnet50") is None


def test_load_features_picks_the_backbone(side_by_side):
    cfg, out, _ = side_by_side
    default = load_features(out, "train", "mfcc")
    r18 = load_features(out, "train", "mfcc", audio_backbone=R18)
    assert (default.audio_backbone, r18.audio_backbone) == ("inception_resnet_v2", R18)
    assert default.audio.shape == (5, TINY_AUDIO_DIM) and r18.audio.shape == (5, 512)
    np.testing.assert_array_equal(default.video, r18.video)
    np.testing.assert_array_equal(default.ids, r18.ids)
    assert np.isfinite(r18.audio).all() and not np.allclose(r18.audio[0], r18.audio[1])
    with pytest.raises(FeatureError, match="no 'resnet50' audio features; extracted audio "
                       "backbones: inception_resnet_v2, resnet18"):
        load_features(out, "train", "mfcc", audio_backbone="resnet50")


def test_serving_rebuilds_the_runs_audio_backbone(side_by_side):
    """The saved random ResNet18 comes back and gives the stored features."""
    cfg, out, _ = side_by_side
    spec = FeatureInfo.read(out).backbone("audio", R18)
    assert spec.weights_to_load(out).endswith("backbones/audio-resnet18.weights.h5")
    audio = restore_backbone(spec, "audio", out)
    assert audio.name == R18
    stored = load_features(out, "test", "chromagram", audio_backbone=R18)
    images = _audio_images(cfg, "chromagram", stored.ids)
    np.testing.assert_allclose(audio(images, training=False).numpy(), stored.audio,
                               rtol=1e-4, atol=1e-5)


def _audio_images(cfg, rep, ids):
    """The test split's audio-images of ``rep`` in the order of ``ids``."""
    import tensorflow as tf

    from maivar_tf.data import schema

    found = {}
    for path in sorted(Path(cfg.data.output_dir).glob("test-*.tfrecord")):
        for raw in tf.data.TFRecordDataset(str(path)):
            ex = schema.parse_sequence_example(raw, REPS)
            png = ex[schema.audio_image_key(rep)][0]
            found[ex[schema.EXAMPLE_ID].numpy().decode()] = tf.io.decode_png(png).numpy()
    return np.stack([found[i] for i in ids]).astype(np.float32)


def test_same_name_other_weights_is_stale(side_by_side, traced, tmp_path):
    cfg, out, _ = side_by_side
    before = {p.name: p.read_bytes() for p in out.glob("*.tfrecord")}
    other = keras.Model(traced[1].model.inputs, traced[1].model.outputs, name="other_audio")
    with pytest.raises(FeatureError, match="'inception_resnet_v2' audio features made with "
                       "other settings"):
        extract(cfg, (traced[0], other), features_dir=out, splits=("test",))
    assert {p.name: p.read_bytes() for p in out.glob("*.tfrecord")} == before


def test_version_2_folder_reads_and_extends(tiny, extracted, traced, copy_of):
    """A folder written before audio backbones could be chosen: read as the default's, and a
    second backbone is added to it (its fingerprint is the one these settings gave then)."""
    cfg, _ = tiny
    out = copy_of(extracted)
    v3 = FeatureInfo.read(out)
    legacy = extraction_fingerprint(cfg, DatasetInfo.read(cfg.data.output_dir),
                                    v3.video_backbone, v3.audio_backbone, version=2)
    record = json.loads((out / FEATURE_INFO).read_text())
    del record["audio_backbones"]
    (out / FEATURE_INFO).write_text(json.dumps({**record, "features_version": 2,
                                                "fingerprint": legacy}))
    old = FeatureInfo.read(out)
    assert old.audio_names == ("inception_resnet_v2",) and old.audio("inception_resnet_v2")
    np.testing.assert_array_equal(load_features(out, "test", "mfcc").audio,
                                  load_features(extracted, "test", "mfcc").audio)

    tiny_r18 = keras.Model(traced[1].model.inputs, traced[1].model.outputs, name="tiny_r18")
    extract(_with_audio_backbone(cfg, R18), (traced[0], tiny_r18), features_dir=out,
            splits=("test",), representations=["mfcc"])
    info = FeatureInfo.read(out)
    assert info.features_version == 3 and info.fingerprint == v3.fingerprint
    assert info.audio_names == ("inception_resnet_v2", R18)
    assert info.audio(R18).representations == {"test": ("mfcc",)}
    assert info.audio("inception_resnet_v2").representations == {"train": REPS, "test": REPS}
    assert (out / video_shard_name("test", 0)).read_bytes() == \
        (extracted / video_shard_name("test", 0)).read_bytes()
    np.testing.assert_array_equal(
        load_features(out, "test", "mfcc", audio_backbone=R18).audio,
        load_features(extracted, "test", "mfcc").audio)  # the same stand-in weights


def test_runs_name_their_audio_backbone():
    from maivar_tf.artifacts import RunInfo

    def run(config):
        return RunInfo(class_names=("a",), representation="mfcc", num_segments=2,
                       video_feature_dim=4, audio_feature_dim=3, config=config)

    assert run({"model": {"audio_backbone": R18}}).audio_backbone == R18
    assert run({}).audio_backbone == "inception_resnet_v2"  # runs recorded before the choice
