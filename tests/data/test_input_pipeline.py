"""Tests of the tf.data input pipeline over hand-written shards (no decoder needed).

ClipExamples with known frames and audio-images go through ``to_sequence_example`` into
shards; ``make_dataset`` must give back the same ids, labels, frames (after JPEG decoding) and
audio-images, shard by ``input_context`` and refuse shards it cannot read.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from maivar_tf.artifacts import DATASET_INFO, DatasetInfo, SchemaVersionError
from maivar_tf.config import AudioImageConfig, DataConfig, ExperimentConfig
from maivar_tf.data import schema
from maivar_tf.data.decode import segment_subset
from maivar_tf.data.input_pipeline import ShardLayout, make_dataset

K = 4
SHORT = 40
CROP = 32
IMG = 24
REPS = ("chromagram", "mfcc")


def _cfg(**kw) -> DataConfig:
    base = dict(num_segments=K, frame_short_side=SHORT, crop_size=CROP, representations=REPS,
                audio=AudioImageConfig(image_size=IMG))
    base.update(kw)
    return DataConfig(**base)


def _clip(i: int, split: str, rng: np.random.Generator) -> tuple[schema.ClipExample, dict]:
    """A clip whose frames are smooth gradients (JPEG keeps them close) plus noise-free PNGs."""
    h, w = SHORT, SHORT + 8 * (i % 3)  # different widths per clip
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.stack([
        np.stack([(xx * 3 + 10 * t + i) % 256, (yy * 4 + 7 * i) % 256,
                  np.full_like(xx, 40 * t + i) % 256], -1).astype(np.uint8)
        for t in range(K)])
    images = {r: rng.integers(0, 256, (IMG, IMG, 3), dtype=np.uint8) for r in REPS}
    clip = schema.ClipExample(
        example_id=f"class{i % 3}/clip_{i:03d}.mp4", data_path=f"class{i % 3}/clip_{i:03d}.mp4",
        label_index=i % 3, label_string=f"class{i % 3}", split=split,
        frames_jpeg=[tf.io.encode_jpeg(f, quality=95).numpy() for f in frames],
        frame_timestamps_us=[t * 100_000 for t in range(K)], height=h, width=w,
        frame_rate=10.0, sample_rate=22050,
        audio_images_png={r: tf.io.encode_png(img).numpy() for r, img in images.items()})
    return clip, {"frames": frames, "images": images}


def _write(data_dir, clips, split: str, num_shards: int, cfg: DataConfig,
           schema_version: int = schema.SCHEMA_VERSION) -> None:
    os.makedirs(data_dir, exist_ok=True)
    writers = [tf.io.TFRecordWriter(os.path.join(
        data_dir, f"{split}-{s:05d}-of-{num_shards:05d}.tfrecord")) for s in range(num_shards)]
    for i, clip in enumerate(clips):
        writers[i % num_shards].write(schema.to_sequence_example(clip).SerializeToString())
    for wr in writers:
        wr.close()
    info = {"schema_version": schema_version,
            "config": ExperimentConfig(data=cfg).to_dict(),
            "class_names": ["class0", "class1", "class2"]}
    with open(os.path.join(data_dir, DATASET_INFO), "w") as f:
        json.dump(info, f)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """10 test clips in 3 shards and 6 train clips in 1 shard."""
    rng = np.random.default_rng(0)
    data_dir = tmp_path_factory.mktemp("shards")
    test = [_clip(i, "test", rng) for i in range(10)]
    train = [_clip(100 + i, "train", rng) for i in range(6)]
    cfg = _cfg()
    _write(data_dir, [c for c, _ in test], "test", 3, cfg)
    _write(data_dir, [c for c, _ in train], "train", 1, cfg)
    return data_dir, {c.example_id: (c, ref) for c, ref in test + train}


def _collect(ds) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for batch in ds:
        for j, eid in enumerate(batch["example_id"].numpy()):
            item = {"label": batch["label"].numpy()[j]}
            if "frames" in batch:
                item["frames"] = batch["frames"].numpy()[j]
            for rep, imgs in batch.get("audio_images", {}).items():
                item[rep] = imgs.numpy()[j]
            out[eid.decode()] = item
    return out


def test_round_trip_ids_labels_frames_and_audio_images(shards):
    data_dir, clips = shards
    ds = make_dataset(data_dir, "test", _cfg(), batch_size=4)
    spec = ds.element_spec
    assert spec["frames"].shape.as_list() == [None, K, CROP, CROP, 3]
    assert spec["frames"].dtype == tf.uint8
    assert spec["audio_images"]["chromagram"].shape.as_list() == [None, IMG, IMG, 3]
    assert spec["label"].dtype == tf.int64 and spec["example_id"].dtype == tf.string
    got = _collect(ds)
    want_ids = {eid for eid, (c, _) in clips.items() if c.split == "test"}
    assert set(got) == want_ids
    for eid, item in got.items():
        clip, ref = clips[eid]
        assert item["label"] == clip.label_index
        # Frames equal the stored JPEGs decoded then centre-cropped, bit for bit...
        h, w = clip.height, clip.width
        y, x = (h - CROP) // 2, (w - CROP) // 2
        decoded = np.stack([tf.io.decode_jpeg(b).numpy() for b in clip.frames_jpeg])
        np.testing.assert_array_equal(item["frames"], decoded[:, y:y + CROP, x:x + CROP])
        # ...and the original pixels up to JPEG loss.
        orig = ref["frames"][:, y:y + CROP, x:x + CROP].astype(np.float32)
        assert np.abs(item["frames"].astype(np.float32) - orig).mean() < 4.0
        for rep in REPS:  # PNG is lossless
            np.testing.assert_array_equal(item[rep], ref["images"][rep])


def test_eval_order_is_deterministic_and_batches_per_input_context(shards):
    data_dir, _ = shards
    cfg = _cfg()
    first = [b["example_id"].numpy().tolist() for b in make_dataset(
        data_dir, "test", cfg, batch_size=3, representations=[])]
    second = [b["example_id"].numpy().tolist() for b in make_dataset(
        data_dir, "test", cfg, batch_size=3, representations=[])]
    assert first == second
    assert [len(b) for b in first] == [3, 3, 3, 1]


@pytest.mark.parametrize("split,num_pipelines,training", [
    ("test", 2, False), ("test", 3, False), ("train", 2, False), ("test", 2, True),
    ("train", 2, True)])
def test_input_context_shards_disjointly_with_per_replica_batches(shards, split,
                                                                 num_pipelines, training):
    """3 test shards shard by file; the 1-shard train split shards by record.

    In training each pipeline shuffles with its own seed, as separate workers may:
    the pipelines must still see disjoint examples.
    """
    data_dir, clips = shards
    everything = {eid for eid, (c, _) in clips.items() if c.split == split}
    seen: list[str] = []
    for pid in range(num_pipelines):
        ctx = tf.distribute.InputContext(num_input_pipelines=num_pipelines,
                                         input_pipeline_id=pid,
                                         num_replicas_in_sync=num_pipelines)
        ds = make_dataset(data_dir, split, _cfg(), batch_size=2 * num_pipelines,
                          input_context=ctx, include_frames=False, representations=[],
                          training=training, seed=pid + 1 if training else None)
        batches = [b["example_id"].numpy() for b in ds]
        assert batches, f"pipeline {pid} got nothing"
        assert max(len(b) for b in batches) == 2  # the per-replica batch
        seen += [e.decode() for b in batches for e in b]
    assert len(seen) == len(set(seen)), "pipelines overlap"
    assert set(seen) == everything


def test_training_augments_with_crops_and_flips(shards):
    data_dir, _ = shards
    ds = make_dataset(data_dir, "train", _cfg(), batch_size=6, training=True, seed=1,
                      representations=["mfcc"])
    batch = next(iter(ds))
    assert batch["frames"].shape == (6, K, CROP, CROP, 3)
    assert batch["audio_images"]["mfcc"].shape == (6, IMG, IMG, 3)
    # Without augmentation, training still yields centre crops.
    plain = make_dataset(data_dir, "train", _cfg(train_augment=False), batch_size=6,
                         training=True, seed=1, representations=[])
    assert next(iter(plain))["frames"].shape == (6, K, CROP, CROP, 3)


def test_num_segments_picks_evenly_spread_frames(shards):
    data_dir, clips = shards
    assert segment_subset(8, 4) == [1, 3, 5, 7]
    assert segment_subset(4, 2) == [1, 3]
    ds = make_dataset(data_dir, "test", _cfg(), batch_size=10, num_segments=2,
                      representations=[])
    got = _collect(ds)
    full = _collect(make_dataset(data_dir, "test", _cfg(), batch_size=10, representations=[]))
    for eid in got:
        assert got[eid]["frames"].shape == (2, CROP, CROP, 3)
        np.testing.assert_array_equal(got[eid]["frames"], full[eid]["frames"][[1, 3]])
    with pytest.raises(ValueError, match="num_segments: 5 .* hold 4"):
        make_dataset(data_dir, "test", _cfg(), batch_size=2, num_segments=5)


def test_refuses_what_the_shards_cannot_provide(shards, tmp_path):
    data_dir, _ = shards
    with pytest.raises(ValueError, match=r"\['waveplot'\] are not in the shards"):
        make_dataset(data_dir, "test", _cfg(), batch_size=2, representations=["waveplot"])
    with pytest.raises(FileNotFoundError, match="splits present: test, train"):
        make_dataset(data_dir, "val", _cfg(), batch_size=2)
    with pytest.raises(FileNotFoundError, match="dataset_info.json does not exist"):
        make_dataset(tmp_path, "test", _cfg(), batch_size=2)
    old = tmp_path / "old"
    rng = np.random.default_rng(1)
    _write(old, [_clip(0, "test", rng)[0]], "test", 1, _cfg(),
           schema_version=schema.SCHEMA_VERSION + 1)
    assert DatasetInfo.read(old).schema_version == schema.SCHEMA_VERSION + 1
    with pytest.raises(SchemaVersionError, match=f"schema version {schema.SCHEMA_VERSION + 1}"):
        make_dataset(old, "test", _cfg(), batch_size=2)
    with pytest.raises(ValueError, match=f"crop_size: {SHORT + 8} > the shards' "
                                         f"frame_short_side {SHORT}"):
        ShardLayout.read(data_dir, _cfg()).check((), K, SHORT + 8)


def test_layout_comes_from_dataset_info_and_pipelines_do_not_autotune(shards):
    data_dir, _ = shards
    layout = ShardLayout.read(data_dir, DataConfig())  # the stored values, not the defaults
    assert (layout.representations, layout.num_segments, layout.frame_short_side,
            layout.image_size) == (REPS, K, SHORT, IMG)
    ds = make_dataset(data_dir, "test", _cfg(), batch_size=2)
    # No autotuning model thread: its teardown stalls every pipeline that ends.
    assert ds.options().autotune.enabled is False
    assert ds.options().deterministic is True


def test_per_segment_audio_images_only_from_shards_that_hold_them(shards, tmp_path):
    data_dir, _ = shards
    assert ShardLayout.read(data_dir, _cfg()).segment_audio is False
    with pytest.raises(ValueError, match="per-segment audio-images asked \\(mfcc\\), the shards "
                                         ".* hold none; rebuild them with "
                                         "data.segment_audio=true"):
        make_dataset(data_dir, "test", _cfg(), batch_size=2, segment_representations=["mfcc"])
    rng = np.random.default_rng(3)
    clips, images = [], {}
    for i in range(3):
        clip, _ = _clip(i, "test", rng)
        seg = rng.integers(0, 256, (K, IMG, IMG, 3), dtype=np.uint8)
        images[clip.example_id] = seg
        clips.append(dataclasses.replace(
            clip, spans=[(100_000, 300_000, 1)] if i else [], audio_missing=i == 2,
            segment_audio_images_png={"mfcc": [tf.io.encode_png(s).numpy() for s in seg]}))
    cfg = _cfg(segment_audio=True)
    _write(tmp_path / "seg", clips, "test", 1, cfg)
    assert ShardLayout.read(tmp_path / "seg", _cfg()).segment_audio is True
    with pytest.raises(ValueError, match=r"\['waveplot'\] are not in the shards"):
        make_dataset(tmp_path / "seg", "test", cfg, batch_size=2,
                     segment_representations=["waveplot"])
    batches = list(make_dataset(tmp_path / "seg", "test", cfg, batch_size=3, num_segments=2,
                                representations=[], segment_representations=["mfcc"]))
    assert len(batches) == 1
    batch = batches[0]
    assert batch["audio_segments"]["mfcc"].shape == (3, 2, IMG, IMG, 3)
    ids = [e.decode() for e in batch["example_id"].numpy()]
    for j, eid in enumerate(ids):
        np.testing.assert_array_equal(batch["audio_segments"]["mfcc"][j].numpy(),
                                      images[eid][segment_subset(K, 2)])
    # Frames 1 and 3 of 4 (0.1 s and 0.3 s): inside [0.1, 0.3) and at its end.
    by_id = dict(zip(ids, batch["segment_labels"].numpy().tolist(), strict=True))
    assert by_id == {clips[0].example_id: [-1, -1], clips[1].example_id: [1, -1],
                     clips[2].example_id: [1, -1]}
    np.testing.assert_allclose(batch["segment_times"].numpy(), [[0.1, 0.3]] * 3, rtol=1e-6)
    assert dict(zip(ids, batch["audio_missing"].numpy().tolist(), strict=True)) == {
        clips[0].example_id: False, clips[1].example_id: False, clips[2].example_id: True}
    assert batch["has_spans"].numpy().tolist() == [eid != clips[0].example_id for eid in ids]
