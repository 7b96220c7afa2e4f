"""Feature shards: the codec, FeatureSet, pairing by example id and load_features' errors."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from maivar_tf.features import (
    FeatureError,
    FeatureSet,
    audio_shard_name,
    load_features,
    pair_by_id,
    read_audio_shards,
    read_video_shards,
    write_audio_shard,
    write_video_shard,
)
from tests.tiny_models import TINY_AUDIO_DIM


def test_shard_codec_round_trip_keeps_row_order(tmp_path):
    rng = np.random.default_rng(0)
    video = rng.normal(size=(3, 2, 5)).astype(np.float32)
    audio = rng.normal(size=(3, 4)).astype(np.float32)
    ids, labels = ["b", "a", "c"], [1, 0, 2]
    write_video_shard(tmp_path / "v.tfrecord", ids, labels, video)
    write_audio_shard(tmp_path / "a.tfrecord", ids, labels, audio)
    v = read_video_shards([tmp_path / "v.tfrecord"], 2, 5)
    a = read_audio_shards([tmp_path / "a.tfrecord"], 4)
    assert v["ids"].tolist() == ids and a["ids"].tolist() == ids
    assert v["labels"].tolist() == labels and a["labels"].dtype == np.int64
    np.testing.assert_array_equal(v["video"], video)
    np.testing.assert_array_equal(a["audio"], audio)
    empty = read_audio_shards([], 4)
    assert empty["ids"].shape == (0,) and empty["audio"].shape == (0, 4)


def test_pairing_is_by_id_not_position(extracted, copy_of):
    out = copy_of(extracted)
    before = load_features(out, "train", "chromagram")
    # Rewrite one audio shard in reversed row order: a positional join would now misalign.
    shard = out / audio_shard_name("chromagram", "train", 0)
    records = [r.numpy() for r in tf.data.TFRecordDataset(str(shard))]
    original_ids = read_audio_shards([shard], TINY_AUDIO_DIM)["ids"].tolist()
    with tf.io.TFRecordWriter(str(shard)) as w:
        for r in reversed(records):
            w.write(r)
    assert read_audio_shards([shard], TINY_AUDIO_DIM)["ids"].tolist() == original_ids[::-1]
    after = load_features(out, "train", "chromagram")
    assert after.ids.tolist() == before.ids.tolist()
    np.testing.assert_array_equal(after.audio, before.audio)
    np.testing.assert_array_equal(after.video, before.video)
    # Every row's audio is the audio stored under the same id.
    cols = read_audio_shards(sorted(out.glob("audio-CHROMAGRAM-train-*")), TINY_AUDIO_DIM)
    by_id = {i: a for i, a in zip(cols["ids"], cols["audio"], strict=True)}
    for row, i in enumerate(after.ids):
        np.testing.assert_array_equal(after.audio[row], by_id[i])


def test_pair_by_id_reports_missing_partners_and_label_mismatch():
    video = {"ids": np.array(["a", "b", "c"]), "labels": np.array([0, 1, 2]),
             "video": np.zeros((3, 2, 4), np.float32)}
    audio = {"ids": np.array(["c", "a", "z"]), "labels": np.array([2, 0, 1]),
             "audio": np.zeros((3, 5), np.float32)}
    with pytest.raises(FeatureError, match=r"1 video id\(s\) without audio features, e\.g\. "
                                           r"'b'.*1 audio id\(s\) without video features, "
                                           r"e\.g\. 'z'"):
        pair_by_id(video, audio, split="train", representation="mfcc")
    audio_bad = {"ids": np.array(["c", "a", "b"]), "labels": np.array([2, 0, 0]),
                 "audio": np.arange(15, dtype=np.float32).reshape(3, 5)}
    with pytest.raises(FeatureError, match=r"labels differ .* 'b' \(video 1, audio 0\)"):
        pair_by_id(video, audio_bad)
    dup = {"ids": np.array(["a", "a", "b"]), "labels": np.array([0, 0, 1]),
           "audio": np.zeros((3, 5), np.float32)}
    with pytest.raises(FeatureError, match="duplicated example id"):
        pair_by_id(video, dup)
    ok = {"ids": np.array(["c", "a", "b"]), "labels": np.array([2, 0, 1]),
          "audio": np.arange(15, dtype=np.float32).reshape(3, 5)}
    paired = pair_by_id(video, ok)
    assert paired["ids"].tolist() == ["a", "b", "c"]
    np.testing.assert_array_equal(paired["audio"][:, 0], [5, 10, 0])


def test_load_features_missing_audio_shard_names_ids(extracted, copy_of):
    out = copy_of(extracted)
    (out / audio_shard_name("mfcc", "train", 1)).unlink()
    with pytest.raises(FeatureError, match=r"2 video id\(s\) without audio features, e\.g\. "
                                           r"'v_b', 'v_d'"):
        load_features(out, "train", "mfcc")
    with pytest.raises(FeatureError, match="no 'waveplot' audio features"):
        load_features(out, "train", "waveplot")
    with pytest.raises(FeatureError, match="unknown representation 'sound'"):
        load_features(out, "train", "sound")
    with pytest.raises(FeatureError, match="no 'val' features"):
        load_features(out, "val", "mfcc")
    with pytest.raises(FeatureError, match="run `maivar extract` first"):
        load_features(out / "nowhere", "train", "mfcc")


def test_featureset_checks_rows_and_subsets():
    with pytest.raises(ValueError, match="FeatureSet.audio has 1 rows; expected 2"):
        FeatureSet(ids=np.array(["a", "b"]), video=np.zeros((2, 1, 3)), audio=np.zeros((1, 4)),
                   labels=np.zeros(2, np.int64), class_names=("x",), representation="mfcc")
    fs = FeatureSet(ids=np.array(["a", "b", "c"]), video=np.arange(9.0).reshape(3, 1, 3),
                    audio=np.zeros((3, 4)), labels=np.array([0, 1, 0]), class_names=("x", "y"),
                    representation="mfcc")
    assert (len(fs), fs.num_classes, fs.num_segments) == (3, 2, 1)
    part = fs.subset([2, 0])
    assert part.ids.tolist() == ["c", "a"] and part.labels.tolist() == [0, 0]
    np.testing.assert_array_equal(part.video, fs.video[[2, 0]])
    assert part.class_names == fs.class_names
