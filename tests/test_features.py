"""Feature extraction: shapes, values, pairing by id, resumability and determinism.

Most tests run tiny injected Keras backbones over a small TFRecord set written directly with
``schema.to_sequence_example`` (so they take seconds); one slow test runs the real BNInception
and InceptionResNetV2 on two videos.
"""

import io
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from maivar_tf.config import AudioImageConfig, DataConfig, ExperimentConfig, TrainConfig
from maivar_tf.data import schema
from maivar_tf.features import (
    FEATURE_INFO,
    FeatureError,
    FeatureSet,
    audio_shard_name,
    extract_features,
    load_features,
    pair_by_id,
    read_audio_shards,
    ten_crop,
    video_shard_name,
)

K = 2
REPS = ("mfcc", "chromagram")
CLASSES = ("Alpha", "Beta", "Gamma")
# split -> shards -> example ids (ids deliberately not in sorted order inside a shard)
LAYOUT = {
    "train": [["v_c", "v_a", "v_e"], ["v_b", "v_d"]],
    "test": [["t_y", "t_x"]],
}
FRAME_H, FRAME_W = 256, 300  # a non-square "short side 256" frame; centre crop to 224


def _frame(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Smooth-ish content so JPEG keeps it recognisable; values vary with the seed.
    base = rng.integers(0, 256, size=(8, 10, 3)).astype(np.float32)
    img = tf.image.resize(base[None], (FRAME_H, FRAME_W), method="bilinear")[0]
    return np.clip(img.numpy(), 0, 255).astype(np.uint8)


def _audio_image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(1000 + seed)
    return rng.integers(0, 256, size=(299, 299, 3), dtype=np.uint8)


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _clip(example_id: str, label: int, split: str, seed: int) -> schema.ClipExample:
    frames = [tf.io.encode_jpeg(_frame(seed * 10 + k), quality=95).numpy() for k in range(K)]
    return schema.ClipExample(
        example_id=example_id, data_path=f"{CLASSES[label]}/{example_id}.mp4",
        label_index=label, label_string=CLASSES[label], split=split,
        frames_jpeg=frames, frame_timestamps_us=[k * 100_000 for k in range(K)],
        height=FRAME_H, width=FRAME_W, frame_rate=25.0, sample_rate=22050,
        audio_images_png={rep: _png(_audio_image(seed * 7 + i)) for i, rep in enumerate(REPS)},
    )


def _config(tmp: Path, **train) -> ExperimentConfig:
    data = DataConfig(dataset="synthetic", output_dir=str(tmp / "tfrecords"),
                      features_dir=str(tmp / "features"), num_segments=K,
                      representations=REPS, audio=AudioImageConfig())
    return ExperimentConfig(name="tiny", data=data,
                            train=TrainConfig(extract_batch_size=2, **train))


def _write_tfrecords(cfg: ExperimentConfig) -> dict[str, int]:
    """Writes LAYOUT as TFRecord shards + dataset_info.json; returns id -> label."""
    out = Path(cfg.data.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels: dict[str, int] = {}
    seed = 0
    counts = {}
    shards = {}
    for split, split_shards in LAYOUT.items():
        n = len(split_shards)
        per_class = dict.fromkeys(CLASSES, 0)
        for i, ids in enumerate(split_shards):
            name = f"{split}-{i:05d}-of-{n:05d}.tfrecord"
            shards.setdefault(split, []).append(name)
            with tf.io.TFRecordWriter(str(out / name)) as w:
                for example_id in ids:
                    label = seed % len(CLASSES)
                    labels[example_id] = label
                    per_class[CLASSES[label]] += 1
                    w.write(schema.to_sequence_example(
                        _clip(example_id, label, split, seed)).SerializeToString())
                    seed += 1
        counts[split] = {"total": sum(len(s) for s in split_shards), "per_class": per_class}
    info = {"schema_version": schema.SCHEMA_VERSION, "config": cfg.to_dict(),
            "class_names": list(CLASSES), "num_records": len(labels), "counts": counts,
            "failed": {"total": 0, "by_reason": {}, "files": []}, "shards": shards}
    (out / "dataset_info.json").write_text(json.dumps(info))
    return labels


def _tiny_video_backbone() -> keras.Model:
    keras.utils.set_random_seed(1)
    inp = keras.Input((224, 224, 3), name="frames")
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.Conv2D(4, 8, strides=8, name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(16, name="proj")(x)
    return keras.Model(inp, x, name="tiny_video")


def _tiny_audio_backbone() -> keras.Model:
    keras.utils.set_random_seed(2)
    inp = keras.Input((299, 299, 3), name="audio_image")
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.Conv2D(4, 13, strides=13, name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(12, name="proj")(x)
    return keras.Model(inp, x, name="tiny_audio")


@pytest.fixture(scope="module")
def backbones():
    return _tiny_video_backbone(), _tiny_audio_backbone()


@pytest.fixture()
def tiny(tmp_path):
    cfg = _config(tmp_path)
    labels = _write_tfrecords(cfg)
    return cfg, labels


def _extract(cfg, backbones, **kw):
    v, a = backbones
    return extract_features(cfg, progress=False, video_backbone=v, audio_backbone=a, **kw)


def _reference_features(cfg, backbones):
    """id -> (video [K,16], {rep: audio [12]}) computed straight from the TFRecords."""
    v, a = backbones
    ref = {}
    for path in sorted(Path(cfg.data.output_dir).glob("*.tfrecord")):
        for raw in tf.data.TFRecordDataset(str(path)):
            ex = schema.parse_sequence_example(raw, REPS)
            frames = tf.stack([tf.io.decode_jpeg(f) for f in ex[schema.IMAGE_ENCODED]])
            y, x = (FRAME_H - 224) // 2, (FRAME_W - 224) // 2
            crop = tf.cast(frames[:, y:y + 224, x:x + 224], tf.float32)
            audio = {rep: a(tf.cast(tf.io.decode_png(ex[schema.audio_image_key(rep)][0])[None],
                                    tf.float32))[0].numpy() for rep in REPS}
            ref[ex[schema.EXAMPLE_ID].numpy().decode()] = (v(crop).numpy(), audio)
    return ref


# ----------------------------------------------------------------------------- tests


def test_extract_writes_shards_info_and_correct_values(tiny, backbones):
    cfg, labels = tiny
    out = _extract(cfg, backbones)
    assert out == Path(cfg.data.features_dir)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([
        FEATURE_INFO,
        video_shard_name("train", 0), video_shard_name("train", 1), video_shard_name("test", 0),
        *[audio_shard_name(r, s, i) for r in REPS for s, i in
          (("train", 0), ("train", 1), ("test", 0))],
    ])
    assert audio_shard_name("mfcc", "train", 1) == "audio-MFCC-train-00001.tfrecord"
    info = json.loads((out / FEATURE_INFO).read_text())
    assert info["num_segments"] == K and info["video_dim"] == 16 and info["audio_dim"] == 12
    assert info["counts"] == {"train": 5, "test": 2}
    assert info["representations"] == list(REPS)
    assert info["class_names"] == list(CLASSES)
    assert info["video_backbone"] == "injected:tiny_video"
    assert info["config"]["data"]["num_segments"] == K

    ref = _reference_features(cfg, backbones)
    for split in ("train", "test"):
        for rep in REPS:
            fs = load_features(out, split, rep)
            expect_ids = sorted(i for shard in LAYOUT[split] for i in shard)
            assert fs.ids.tolist() == expect_ids
            assert fs.video.shape == (len(expect_ids), K, 16) and fs.video.dtype == np.float32
            assert fs.audio.shape == (len(expect_ids), 12) and fs.audio.dtype == np.float32
            assert fs.labels.tolist() == [labels[i] for i in expect_ids]
            assert fs.class_names == CLASSES and fs.representation == rep
            for row, i in enumerate(fs.ids):
                np.testing.assert_allclose(fs.video[row], ref[i][0], rtol=1e-4, atol=1e-5)
                np.testing.assert_allclose(fs.audio[row], ref[i][1][rep], rtol=1e-4, atol=1e-5)
    # Different examples really have different features (the test could fail).
    fs = load_features(out, "train", "mfcc")
    assert not np.allclose(fs.video[0], fs.video[1])
    assert not np.allclose(fs.audio[0], fs.audio[1])


def test_pairing_is_by_id_not_position(tiny, backbones):
    cfg, _ = tiny
    out = _extract(cfg, backbones)
    before = load_features(out, "train", "chromagram")
    # Rewrite one audio shard in reversed row order: a positional join would now misalign.
    shard = out / audio_shard_name("chromagram", "train", 0)
    records = [r.numpy() for r in tf.data.TFRecordDataset(str(shard))]
    original_ids = read_audio_shards([shard], 12)["ids"].tolist()
    with tf.io.TFRecordWriter(str(shard)) as w:
        for r in reversed(records):
            w.write(r)
    assert read_audio_shards([shard], 12)["ids"].tolist() == original_ids[::-1]
    after = load_features(out, "train", "chromagram")
    assert after.ids.tolist() == before.ids.tolist()
    np.testing.assert_array_equal(after.audio, before.audio)
    np.testing.assert_array_equal(after.video, before.video)
    # Every row's audio is the audio stored under the same id.
    cols = read_audio_shards(sorted(out.glob("audio-CHROMAGRAM-train-*")), 12)
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


def test_load_features_missing_audio_shard_names_ids(tiny, backbones):
    cfg, _ = tiny
    out = _extract(cfg, backbones)
    (out / audio_shard_name("mfcc", "train", 1)).unlink()
    with pytest.raises(FeatureError, match=r"2 video id\(s\) without audio features, e\.g\. "
                                           r"'v_b', 'v_d'"):
        load_features(out, "train", "mfcc")
    with pytest.raises(FeatureError, match="no 'waveplot' audio features"):
        load_features(out, "train", "waveplot")
    with pytest.raises(FeatureError, match="no 'val' features"):
        load_features(out, "val", "mfcc")
    with pytest.raises(FeatureError, match="run `maivar extract` first"):
        load_features(out / "nowhere", "train", "mfcc")


def test_resume_skips_finished_shards_and_replaces_leftover_temp(tiny, backbones):
    cfg, _ = tiny
    out = _extract(cfg, backbones, representations=["mfcc"])
    info = json.loads((out / FEATURE_INFO).read_text())
    assert info["representations"] == ["mfcc"]
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tfrecord")}
    content = {p.name: p.read_bytes() for p in out.glob("*.tfrecord")}
    # Simulate an interrupted run: one shard gone, a half-written temp file left behind.
    (out / video_shard_name("train", 1)).unlink()
    leftover = out / f".{video_shard_name('train', 1)}.tmp-99999"
    leftover.write_bytes(b"half written")
    _extract(cfg, backbones, representations=["mfcc", "chromagram"])
    assert not leftover.exists()
    assert not list(out.glob(".*tmp*"))
    for name, t in mtimes.items():
        if name != video_shard_name("train", 1):
            assert (out / name).stat().st_mtime_ns == t, f"{name} was rewritten"
    assert (out / video_shard_name("train", 1)).read_bytes() == \
        content[video_shard_name("train", 1)]
    info = json.loads((out / FEATURE_INFO).read_text())
    assert info["representations"] == list(REPS)
    assert info["counts"] == {"train": 5, "test": 2}
    assert len(load_features(out, "train", "chromagram")) == 5
    # A third run changes nothing at all.
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tfrecord")}
    _extract(cfg, backbones)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tfrecord")} == mtimes


def test_stale_features_are_refused(tiny, backbones):
    cfg, _ = tiny
    _extract(cfg, backbones, splits=("test",))
    other = keras.Model(backbones[0].inputs, backbones[0].outputs, name="other_video")
    with pytest.raises(FeatureError, match="other settings"):
        extract_features(cfg, progress=False, video_backbone=other,
                         audio_backbone=backbones[1], splits=("test",))


def test_extraction_is_deterministic(tmp_path, backbones):
    cfg_a = _config(tmp_path / "a")
    _write_tfrecords(cfg_a)
    cfg_b = _config(tmp_path / "b", seed=0)
    _write_tfrecords(cfg_b)
    out_a = _extract(cfg_a, backbones)
    out_b = _extract(cfg_b, backbones)
    files = sorted(p.name for p in out_a.glob("*.tfrecord"))
    assert files == sorted(p.name for p in out_b.glob("*.tfrecord"))
    for name in files:
        assert (out_a / name).read_bytes() == (out_b / name).read_bytes(), name


def test_unknown_representation_and_missing_tfrecords(tmp_path, backbones):
    cfg = _config(tmp_path)
    with pytest.raises(FeatureError, match="not in the TFRecords"):
        _extract(cfg, backbones, representations=["waveplot"])
    _write_tfrecords(cfg)
    with pytest.raises(FeatureError, match="no val-SSSSS-of-NNNNN.tfrecord shards"):
        _extract(cfg, backbones, splits=("val",))


def test_ten_crop_positions():
    frames = tf.reshape(tf.range(4 * 5, dtype=tf.int32), (1, 4, 5, 1))  # [K=1, H=4, W=5, C=1]
    crops = ten_crop(frames, 3).numpy()[:, 0, :, :, 0]
    img = np.arange(20).reshape(4, 5)
    expect = [img[0:3, 0:3], img[0:3, 2:5], img[1:4, 0:3], img[1:4, 2:5], img[0:3, 1:4]]
    expect += [e[:, ::-1] for e in expect]
    np.testing.assert_array_equal(crops, np.stack(expect))


def test_ten_crop_extraction_averages_crops(tmp_path, backbones):
    import dataclasses

    cfg = _config(tmp_path)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, ten_crop=True))
    _write_tfrecords(cfg)
    out = _extract(cfg, backbones, splits=("test",), representations=["mfcc"])
    fs = load_features(out, "test", "mfcc")
    v, _ = backbones
    raw = next(iter(tf.data.TFRecordDataset(
        str(Path(cfg.data.output_dir) / "test-00000-of-00001.tfrecord"))))
    ex = schema.parse_sequence_example(raw, REPS)
    frames = tf.stack([tf.io.decode_jpeg(f) for f in ex[schema.IMAGE_ENCODED]])
    crops = tf.cast(ten_crop(frames, 224), tf.float32)  # [10, K, 224, 224, 3]
    expect = np.mean([v(crops[c]).numpy() for c in range(10)], axis=0)
    row = fs.ids.tolist().index(ex[schema.EXAMPLE_ID].numpy().decode())
    np.testing.assert_allclose(fs.video[row], expect, rtol=1e-4, atol=1e-5)


def test_featureset_checks_rows():
    with pytest.raises(ValueError, match="FeatureSet.audio has 1 rows; expected 2"):
        FeatureSet(ids=np.array(["a", "b"]), video=np.zeros((2, 1, 3)), audio=np.zeros((1, 4)),
                   labels=np.zeros(2, np.int64), class_names=("x",), representation="mfcc")


@pytest.mark.slow
def test_real_backbones_on_two_videos(tmp_path):
    cfg = _config(tmp_path)
    out_dir = Path(cfg.data.output_dir)
    _write_tfrecords(cfg)
    for p in out_dir.glob("train-*.tfrecord"):  # keep only the 2 test videos
        p.unlink()
    out = extract_features(cfg, splits=("test",), representations=["chromagram"],
                           progress=False)
    fs = load_features(out, "test", "chromagram")
    assert fs.video.shape == (2, K, 1024)
    assert fs.audio.shape == (2, 1536)
    assert np.isfinite(fs.video).all() and np.isfinite(fs.audio).all()
    assert not np.allclose(fs.video[0], fs.video[1])
    info = json.loads((out / FEATURE_INFO).read_text())
    assert info["video_backbone"] == "BNInception:none"
    assert info["audio_backbone"] == "InceptionResNetV2:none"
    # Random ('none') backbones are saved beside the features, and reloading them reproduces
    # the stored features: predict and export depend on that.
    assert info["backbone_weights"] == {"video": "backbones/video.weights.h5",
                                        "audio": "backbones/audio.weights.h5"}
    from maivar_tf.models.bn_inception import build_video_backbone

    reloaded = build_video_backbone(str(out / "backbones" / "video.weights.h5"))
    again = extract_features(cfg, splits=("test",), representations=["chromagram"],
                             progress=False, video_backbone=None,
                             features_dir=tmp_path / "features_again")
    fs_again = load_features(again, "test", "chromagram")
    # Same seed -> the same random weights -> the same features, in a fresh folder too.
    np.testing.assert_allclose(fs_again.video, fs.video, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fs_again.audio, fs.audio, rtol=1e-5, atol=1e-5)
    other = build_video_backbone(str(again / "backbones" / "video.weights.h5"))
    x = np.random.default_rng(0).uniform(0, 255, (1, 224, 224, 3)).astype("float32")
    np.testing.assert_array_equal(reloaded(x).numpy(), other(x).numpy())
