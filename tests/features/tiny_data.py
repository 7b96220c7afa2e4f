"""A few hand-written TFRecord shards for the feature tests (seconds, no video decoding).

Clips go straight through ``schema.to_sequence_example``: K smooth JPEG frames of a non-square
"short side 256" size and one random PNG audio-image per representation, in the split/shard
layout of :data:`LAYOUT` (ids deliberately unsorted inside a shard).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from maivar_tf.artifacts import DATASET_INFO
from maivar_tf.config import AudioImageConfig, DataConfig, ExperimentConfig, ExtractConfig
from maivar_tf.data import schema
from maivar_tf.features import extract_features

K = 2
REPS = ("mfcc", "chromagram")
CLASSES = ("Alpha", "Beta", "Gamma")
# split -> shards -> example ids (ids deliberately not in sorted order inside a shard)
LAYOUT = {
    "train": [["v_c", "v_a", "v_e"], ["v_b", "v_d"]],
    "test": [["t_y", "t_x"]],
}
FRAME_H, FRAME_W = 256, 300  # a non-square "short side 256" frame; centre crop to 224
CROP = 224
AUDIO_SIZE = 299


def _frame(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Smooth-ish content so JPEG keeps it recognisable; values vary with the seed.
    base = rng.integers(0, 256, size=(8, 10, 3)).astype(np.float32)
    img = tf.image.resize(base[None], (FRAME_H, FRAME_W), method="bilinear")[0]
    return np.clip(img.numpy(), 0, 255).astype(np.uint8)


def _audio_image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(1000 + seed)
    return rng.integers(0, 256, size=(AUDIO_SIZE, AUDIO_SIZE, 3), dtype=np.uint8)


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


def make_config(tmp: Path, features_dir: Path | None = None, *, ten_crop: bool = False,
                batch_size: int = 2) -> ExperimentConfig:
    """The tiny experiment: TFRecords in ``tmp/tfrecords``, features in ``tmp/features``."""
    data = DataConfig(dataset="synthetic", output_dir=str(tmp / "tfrecords"),
                      features_dir=str(features_dir or tmp / "features"), num_segments=K,
                      representations=REPS, audio=AudioImageConfig())
    return ExperimentConfig(name="tiny", data=data,
                            extract=ExtractConfig(batch_size=batch_size, ten_crop=ten_crop))


def write_tfrecords(cfg: ExperimentConfig) -> dict[str, int]:
    """Writes LAYOUT as TFRecord shards + dataset_info.json; returns id -> label."""
    out = Path(cfg.data.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels: dict[str, int] = {}
    seed = 0
    counts, shards = {}, {}
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
    (out / DATASET_INFO).write_text(json.dumps(info))
    return labels


def extract(cfg: ExperimentConfig, backbones, **kwargs) -> Path:
    """``extract_features`` with injected ``(video, audio)`` backbones and no progress output."""
    video, audio = backbones
    return extract_features(cfg, progress=False, video_backbone=video, audio_backbone=audio,
                            **kwargs)


def reference_features(cfg: ExperimentConfig, video, audio) -> dict:
    """id -> (video [K, Dv], {rep: audio [Da]}) computed straight from the TFRecords."""
    ref = {}
    for path in sorted(Path(cfg.data.output_dir).glob("*.tfrecord")):
        for raw in tf.data.TFRecordDataset(str(path)):
            ex = schema.parse_sequence_example(raw, REPS)
            frames = tf.stack([tf.io.decode_jpeg(f) for f in ex[schema.IMAGE_ENCODED]])
            y, x = (FRAME_H - CROP) // 2, (FRAME_W - CROP) // 2
            crop = tf.cast(frames[:, y:y + CROP, x:x + CROP], tf.float32)
            images = {rep: audio(tf.cast(tf.io.decode_png(ex[schema.audio_image_key(rep)][0]),
                                         tf.float32)[None])[0].numpy() for rep in REPS}
            ref[ex[schema.EXAMPLE_ID].numpy().decode()] = (video(crop).numpy(), images)
    return ref
