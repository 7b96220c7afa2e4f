"""A few hand-written TFRecord shards for the feature tests (seconds, no video decoding).

Clips go straight through ``schema.to_sequence_example``: K smooth JPEG frames of a non-square
"short side 256" size and one random PNG audio-image per representation, in the split/shard
layout of :data:`LAYOUT` (ids deliberately unsorted inside a shard). With ``data.segment_audio``
the clips also get K per-segment PNGs per representation, spans (:func:`clip_spans`) and, for
every other clip, ``audio/missing``; ``schema_version=1`` writes records without the keys of
version 2.
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


#: Frame k's timestamp (microseconds).
FRAME_US = 100_000


def clip_spans(seed: int, label: int) -> list[tuple[int, int, int]]:
    """The spans of clip ``seed``: one starting exactly at frame 1 (seed % 3 == 0), one ending
    exactly at frame 1 (seed % 3 == 1; frame 0 inside), none (seed % 3 == 2)."""
    return [[(FRAME_US, 3 * FRAME_US, label)], [(0, FRAME_US, label)], []][seed % 3]


def expected_segment_labels(seed: int, label: int) -> list[int]:
    """What the K = 2 segments of clip ``seed`` are labelled."""
    return [[-1, label], [label, -1], [-1, -1]][seed % 3]


def _clip(example_id: str, label: int, split: str, seed: int,
          segment_audio: bool = False) -> schema.ClipExample:
    frames = [tf.io.encode_jpeg(_frame(seed * 10 + k), quality=95).numpy() for k in range(K)]
    extra = {}
    if segment_audio:
        extra = dict(spans=clip_spans(seed, label), audio_missing=bool(seed % 2),
                     segment_audio_images_png={rep: [_png(_audio_image(500 + seed * 7 + i * 3 + k))
                                                     for k in range(K)]
                                               for i, rep in enumerate(REPS)})
    return schema.ClipExample(
        example_id=example_id, data_path=f"{CLASSES[label]}/{example_id}.mp4",
        label_index=label, label_string=CLASSES[label], split=split,
        frames_jpeg=frames, frame_timestamps_us=[k * FRAME_US for k in range(K)],
        height=FRAME_H, width=FRAME_W, frame_rate=25.0, sample_rate=22050,
        audio_images_png={rep: _png(_audio_image(seed * 7 + i)) for i, rep in enumerate(REPS)},
        **extra)


def _serialized(clip: schema.ClipExample, schema_version: int) -> bytes:
    example = schema.to_sequence_example(clip)
    if schema_version == 1:  # the context of version 1 had no audio/missing
        del example.context.feature[schema.AUDIO_MISSING]
    return example.SerializeToString()


def make_config(tmp: Path, features_dir: Path | None = None, *, ten_crop: bool = False,
                batch_size: int = 2, segment_audio: bool = False) -> ExperimentConfig:
    """The tiny experiment: TFRecords in ``tmp/tfrecords``, features in ``tmp/features``."""
    data = DataConfig(dataset="synthetic", output_dir=str(tmp / "tfrecords"),
                      features_dir=str(features_dir or tmp / "features"), num_segments=K,
                      representations=REPS, audio=AudioImageConfig(),
                      segment_audio=segment_audio)
    return ExperimentConfig(name="tiny", data=data,
                            extract=ExtractConfig(batch_size=batch_size, ten_crop=ten_crop))


def write_tfrecords(cfg: ExperimentConfig, schema_version: int = schema.SCHEMA_VERSION
                    ) -> dict[str, int]:
    """Writes LAYOUT as TFRecord shards + dataset_info.json; returns id -> label (the clip of
    the i-th id written has seed i)."""
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
                    w.write(_serialized(_clip(example_id, label, split, seed,
                                              cfg.data.segment_audio), schema_version))
                    seed += 1
        counts[split] = {"total": sum(len(s) for s in split_shards), "per_class": per_class}
    info = {"schema_version": schema_version, "config": cfg.to_dict(),
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
