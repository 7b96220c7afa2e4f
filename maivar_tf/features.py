"""Backbone feature extraction to feature shards (``maivar extract``), and reading them back.

The paper (Shaikh et al. 2024, Sec. 3.3-3.4) trains its MLP heads on frozen backbone features:
BNInception (TSN) turns each of the K segment frames into a 1024-d vector and InceptionResNetV2
turns each audio-image into a 1536-d vector. :func:`extract_features` computes both once from
the TFRecords and writes them as feature shards; :func:`load_features` reads one split back as a
:class:`FeatureSet`, joining video and audio **by example id, never by row position** (the
authors' public concatenated-feature classifier scored near chance, most likely because its two
feature files were not aligned row by row).

Layout of ``cfg.data.features_dir``::

    video-<split>-SSSSS.tfrecord          tf.train.Example {example/id, clip/label/index,
                                          video/features (K*1024 floats), video/num_segments}
    audio-<REP>-<split>-SSSSS.tfrecord    tf.train.Example {example/id, clip/label/index,
                                          audio/features (1536 floats)}
    feature_info.json                     dims, K, splits, counts, representations, class names,
                                          backbone weights, config, extraction fingerprint

One output shard per input TFRecord shard (``SSSSS`` is the input shard's index). Each output is
written under a temporary name and renamed when complete, so an interrupted run leaves no
half-written shard under a final name; a re-run skips every output that already exists (and
computes only the missing representations of a shard). Extraction is deterministic: no shuffling,
no random crops or flips (centre crop, or TSN's fixed 10 crops with ``model.ten_crop``).

Example:
    >>> from maivar_tf.config import load_config
    >>> cfg = load_config("configs/synthetic.yaml")
    >>> extract_features(cfg, representations=["chromagram"])      # doctest: +SKIP
    >>> train = load_features(cfg.data.features_dir, "train", "chromagram")  # doctest: +SKIP
    >>> train.video.shape, train.audio.shape                          # doctest: +SKIP
    ((192, 8, 1024), (192, 1536))
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import os
import re
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maivar_tf.config import REPRESENTATIONS, ExperimentConfig
from maivar_tf.data import schema
from maivar_tf.utils import write_json_atomic

logger = logging.getLogger(__name__)

#: Bumped whenever the feature-shard keys or their meaning change.
FEATURES_VERSION = 1
FEATURE_INFO = "feature_info.json"

# Feature-shard keys (tf.train.Example).
ID_KEY = "example/id"
LABEL_KEY = "clip/label/index"
VIDEO_FEATURES_KEY = "video/features"
VIDEO_SEGMENTS_KEY = "video/num_segments"
AUDIO_FEATURES_KEY = "audio/features"

#: How many images go through a backbone in one call (bounds memory with ten crops and large K).
MAX_IMAGES_PER_CALL = 256

_INPUT_SHARD_RE = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-(?P<index>\d{5})-of-(?P<total>\d{5})"
                             r"\.tfrecord$")
_TMP_MARK = ".tmp-"


class FeatureError(RuntimeError):
    """Feature shards that are missing, stale, inconsistent or cannot be paired."""


# ----------------------------------------------------------------------------- FeatureSet


@dataclass
class FeatureSet:
    """One split's features, video and audio paired by example id and sorted by id.

    Args:
        ids: example ids, ``str`` ``[N]``, sorted.
        video: BNInception segment features, float32 ``[N, K, 1024]``.
        audio: InceptionResNetV2 audio-image features, float32 ``[N, 1536]``.
        labels: class indices, int64 ``[N]``.
        class_names: the class list the labels index.
        representation: which audio-image the audio features come from.
    """

    ids: np.ndarray
    video: np.ndarray
    audio: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    representation: str

    def __post_init__(self) -> None:
        n = len(self.ids)
        for name in ("video", "audio", "labels"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"FeatureSet.{name} has {len(getattr(self, name))} rows; "
                                 f"expected {n} (one per id)")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(class_names)``)."""
        return len(self.class_names)

    @property
    def num_segments(self) -> int:
        """K, the segments per video."""
        return int(self.video.shape[1])

    def subset(self, index: np.ndarray | Sequence[int]) -> FeatureSet:
        """The rows at ``index`` (e.g. a validation split), keeping the class list."""
        index = np.asarray(index)
        return dataclasses.replace(self, ids=self.ids[index], video=self.video[index],
                                   audio=self.audio[index], labels=self.labels[index])


# ----------------------------------------------------------------------------- file names


def video_shard_name(split: str, index: int) -> str:
    """File name of the video feature shard made from input shard ``index`` of ``split``."""
    return f"video-{split}-{index:05d}.tfrecord"


def audio_shard_name(representation: str, split: str, index: int) -> str:
    """File name of one representation's audio feature shard for input shard ``index``."""
    return f"audio-{representation.upper()}-{split}-{index:05d}.tfrecord"


def input_shards(data_dir: str | Path, split: str) -> list[Path]:
    """The split's TFRecord shards in the order ``make_dataset`` reads them (empty if none)."""
    from maivar_tf.data.input_pipeline import shard_files

    try:
        return [Path(f) for f in shard_files(data_dir, split)]
    except FileNotFoundError:
        return []


def shard_index(path: Path, position: int) -> int:
    """The ``SSSSS`` of ``<split>-SSSSS-of-NNNNN.tfrecord`` (its position when unnamed so)."""
    m = _INPUT_SHARD_RE.match(path.name)
    return int(m.group("index")) if m else position


# ----------------------------------------------------------------------------- serialisation


def _feature_example(example_id: bytes, label: int, key: str, features: np.ndarray,
                     extra_ints: dict[str, int] | None = None) -> bytes:
    """One ``tf.train.Example``: id, label, the flattened features under ``key``, extra ints."""
    import tensorflow as tf

    def ints(v: int):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))

    feature = {
        ID_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[example_id])),
        LABEL_KEY: ints(label),
        key: tf.train.Feature(float_list=tf.train.FloatList(value=features.reshape(-1))),
    }
    feature.update({k: ints(v) for k, v in (extra_ints or {}).items()})
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _video_example(example_id: bytes, label: int, features: np.ndarray) -> bytes:
    return _feature_example(example_id, label, VIDEO_FEATURES_KEY, features,
                            {VIDEO_SEGMENTS_KEY: features.shape[0]})


def _audio_example(example_id: bytes, label: int, features: np.ndarray) -> bytes:
    return _feature_example(example_id, label, AUDIO_FEATURES_KEY, features)


def write_video_shard(path: str | Path, ids: Sequence[str], labels: Sequence[int],
                      video: np.ndarray) -> None:
    """Writes a video feature shard (``video`` float32 ``[N, K, D]``) in the given row order."""
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as w:
        for i, label, v in zip(ids, labels, video, strict=True):
            w.write(_video_example(_to_bytes(i), label, np.asarray(v, np.float32)))


def write_audio_shard(path: str | Path, ids: Sequence[str], labels: Sequence[int],
                      audio: np.ndarray) -> None:
    """Writes an audio feature shard (``audio`` float32 ``[N, D]``) in the given row order."""
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as w:
        for i, label, a in zip(ids, labels, audio, strict=True):
            w.write(_audio_example(_to_bytes(i), label, np.asarray(a, np.float32)))


def _to_bytes(s: str | bytes) -> bytes:
    return s if isinstance(s, bytes) else str(s).encode()


def _read_records(files: Sequence[Path], spec: dict) -> dict[str, np.ndarray]:
    """Parses every tf.train.Example in ``files`` (in order) into numpy columns."""
    import tensorflow as tf

    if not files:
        return {k: np.zeros((0,)) for k in spec}
    ds = tf.data.TFRecordDataset([str(f) for f in files]).batch(1024)
    ds = ds.map(lambda s: tf.io.parse_example(s, spec))
    cols: dict[str, list[np.ndarray]] = {k: [] for k in spec}
    for batch in ds.as_numpy_iterator():
        for k, v in batch.items():
            cols[k].append(v)
    return {k: np.concatenate(v) for k, v in cols.items()}


def read_video_shards(files: Sequence[Path], num_segments: int, dim: int
                      ) -> dict[str, np.ndarray]:
    """``{"ids", "labels", "video" [N,K,D]}`` from video feature shards, in file order."""
    import tensorflow as tf

    spec = {
        ID_KEY: tf.io.FixedLenFeature([], tf.string),
        LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
        VIDEO_FEATURES_KEY: tf.io.FixedLenFeature([num_segments * dim], tf.float32),
    }
    cols = _read_records(files, spec)
    return {"ids": cols[ID_KEY].astype(str) if len(cols[ID_KEY]) else np.zeros(0, str),
            "labels": cols[LABEL_KEY].astype(np.int64),
            "video": cols[VIDEO_FEATURES_KEY].astype(np.float32).reshape(-1, num_segments, dim)}


def read_audio_shards(files: Sequence[Path], dim: int) -> dict[str, np.ndarray]:
    """``{"ids", "labels", "audio" [N,D]}`` from audio feature shards, in file order."""
    import tensorflow as tf

    spec = {
        ID_KEY: tf.io.FixedLenFeature([], tf.string),
        LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
        AUDIO_FEATURES_KEY: tf.io.FixedLenFeature([dim], tf.float32),
    }
    cols = _read_records(files, spec)
    return {"ids": cols[ID_KEY].astype(str) if len(cols[ID_KEY]) else np.zeros(0, str),
            "labels": cols[LABEL_KEY].astype(np.int64),
            "audio": cols[AUDIO_FEATURES_KEY].astype(np.float32).reshape(-1, dim)}


# ----------------------------------------------------------------------------- pairing


def _index_by_id(ids: np.ndarray, what: str) -> dict[str, int]:
    index: dict[str, int] = {}
    dups = []
    for row, i in enumerate(ids.tolist()):
        if i in index:
            dups.append(i)
        index[i] = row
    if dups:
        raise FeatureError(f"{what}: {len(dups)} duplicated example id(s), e.g. "
                           f"{', '.join(map(repr, dups[:5]))}; every example id must be unique")
    return index


def pair_by_id(video: dict[str, np.ndarray], audio: dict[str, np.ndarray], *,
               split: str = "?", representation: str = "?") -> dict[str, np.ndarray]:
    """Joins video and audio feature columns on example id; rows come out sorted by id.

    Args:
        video: ``{"ids", "labels", "video"}`` (any row order).
        audio: ``{"ids", "labels", "audio"}`` (any row order).
        split, representation: named in error messages.

    Returns:
        ``{"ids", "labels", "video", "audio"}`` sorted by id.

    Raises:
        FeatureError: an id without its partner (a few are listed), duplicated ids, or a label
            that differs between the two sides.
    """
    where = f"split {split!r}, representation {representation!r}"
    vi = _index_by_id(video["ids"], f"video features ({where})")
    ai = _index_by_id(audio["ids"], f"audio features ({where})")
    only_v = sorted(set(vi) - set(ai))
    only_a = sorted(set(ai) - set(vi))
    if only_v or only_a:
        parts = []
        if only_v:
            parts.append(f"{len(only_v)} video id(s) without audio features, e.g. "
                         f"{', '.join(map(repr, only_v[:5]))}")
        if only_a:
            parts.append(f"{len(only_a)} audio id(s) without video features, e.g. "
                         f"{', '.join(map(repr, only_a[:5]))}")
        raise FeatureError(f"cannot pair video and audio features ({where}): "
                           + "; ".join(parts)
                           + ". Re-run `maivar extract` for this representation.")
    ids = sorted(vi)
    v_rows = np.array([vi[i] for i in ids], dtype=np.int64)
    a_rows = np.array([ai[i] for i in ids], dtype=np.int64)
    v_labels = video["labels"][v_rows]
    a_labels = audio["labels"][a_rows]
    bad = np.flatnonzero(v_labels != a_labels)
    if len(bad):
        eg = ", ".join(f"{ids[b]!r} (video {v_labels[b]}, audio {a_labels[b]})" for b in bad[:5])
        raise FeatureError(f"labels differ between video and audio features ({where}) for "
                           f"{len(bad)} id(s), e.g. {eg}")
    return {"ids": np.array(ids, dtype=str), "labels": v_labels.astype(np.int64),
            "video": video["video"][v_rows], "audio": audio["audio"][a_rows]}


def read_feature_info(features_dir: str | Path) -> dict[str, Any]:
    """Reads ``feature_info.json``; a clear error says to run ``maivar extract`` when absent."""
    path = Path(features_dir) / FEATURE_INFO
    if not path.exists():
        raise FeatureError(f"{path} not found: run `maivar extract` first (features_dir "
                           f"{str(features_dir)!r})")
    return json.loads(path.read_text())


def load_features(features_dir: str | Path, split: str, representation: str) -> FeatureSet:
    """Loads one split's video and audio features, joined by example id (never by position).

    Args:
        features_dir: the folder :func:`extract_features` wrote.
        split: ``train``, ``test`` or ``val``.
        representation: the audio-image whose audio features to pair with the video features.

    Returns:
        A :class:`FeatureSet` sorted by example id.

    Raises:
        FeatureError: no features for that split/representation, or ids that do not pair.
    """
    features_dir = Path(features_dir)
    info = read_feature_info(features_dir)
    if representation not in REPRESENTATIONS:
        raise FeatureError(f"unknown representation {representation!r}; allowed: "
                           f"{', '.join(REPRESENTATIONS)}")
    if split not in info.get("splits", {}):
        raise FeatureError(f"no {split!r} features in {features_dir}; extracted splits: "
                           f"{', '.join(info.get('splits', {})) or 'none'}")
    split_info = info["splits"][split]
    if representation not in split_info.get("representations", []):
        raise FeatureError(
            f"no {representation!r} audio features for split {split!r} in {features_dir}; "
            f"extracted: {', '.join(split_info.get('representations', [])) or 'none'}. "
            f"Run `maivar extract --representations {representation}`.")
    k = int(info["num_segments"])
    vfiles = sorted(features_dir.glob(f"video-{split}-[0-9][0-9][0-9][0-9][0-9].tfrecord"))
    afiles = sorted(features_dir.glob(
        f"audio-{representation.upper()}-{split}-[0-9][0-9][0-9][0-9][0-9].tfrecord"))
    video = read_video_shards(vfiles, k, int(info["video_dim"]))
    audio = read_audio_shards(afiles, int(info["audio_dim"]))
    paired = pair_by_id(video, audio, split=split, representation=representation)
    expected = split_info.get("count")
    if expected is not None and len(paired["ids"]) != int(expected):
        raise FeatureError(f"{features_dir}: {len(paired['ids'])} {split!r} examples paired, "
                           f"feature_info.json says {expected}; re-run `maivar extract`")
    return FeatureSet(ids=paired["ids"], video=paired["video"], audio=paired["audio"],
                      labels=paired["labels"], class_names=tuple(info["class_names"]),
                      representation=representation)


# ----------------------------------------------------------------------------- extraction


def ten_crop(frames, crop_size: int):
    """TSN's 10 crops (4 corners + centre, and their horizontal flips) of ``[..., H, W, C]``.

    Args:
        frames: a tensor ``[..., H, W, C]`` with ``H, W >= crop_size``.
        crop_size: the square crop side.

    Returns:
        ``[10, ..., crop_size, crop_size, C]``: corners (top-left, top-right, bottom-left,
        bottom-right), centre, then the same five flipped left-right.
    """
    import tensorflow as tf

    shape = tf.shape(frames)
    h, w = shape[-3], shape[-2]
    c = crop_size
    offsets = [(0, 0), (0, w - c), (h - c, 0), (h - c, w - c), ((h - c) // 2, (w - c) // 2)]
    crops = [frames[..., y:y + c, x:x + c, :] for y, x in offsets]
    crops += [tf.reverse(cr, axis=[-2]) for cr in crops]
    return tf.stack(crops, axis=0)


def _batched_call(fn: Callable, images, max_images: int = MAX_IMAGES_PER_CALL) -> np.ndarray:
    """Runs ``fn`` over ``images`` ``[N, ...]`` in chunks of ``max_images``; numpy ``[N, D]``."""
    n = int(images.shape[0])
    outs = [np.asarray(fn(images[i:i + max_images])) for i in range(0, n, max_images)]
    return np.concatenate(outs, axis=0) if outs else np.zeros((0, 0), np.float32)


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compiled_backbone(model, image_shape: Sequence[int]) -> Callable:
    """One traced inference function ``uint8 [B, *image_shape] -> float32 [B, D]`` per model.

    The batch dimension is left unknown, so a smaller last batch does not trace again, and the
    function is cached per model, so repeated extractions in one process trace once.

    Args:
        model: a backbone taking RGB 0..255 images.
        image_shape: ``(H, W, 3)``.
    """
    import tensorflow as tf

    key = tuple(int(d) for d in image_shape)
    try:
        per_model = _COMPILED.setdefault(model, {})
    except TypeError:  # not weak-referenceable: no caching
        per_model = {}
    if key not in per_model:
        @tf.function(input_signature=[tf.TensorSpec([None, *key], tf.uint8)])
        def fn(x):
            return tf.cast(model(tf.cast(x, tf.float32), training=False), tf.float32)

        per_model[key] = fn
    return per_model[key]


def _video_features(video_fn: Callable, frames, crop_size: int, use_ten_crop: bool
                    ) -> np.ndarray:
    """``frames`` uint8 ``[B, K, H, W, 3]`` -> float32 ``[B, K, D]`` (10-crop averaged)."""
    import tensorflow as tf

    from maivar_tf.data.input_pipeline import center_crop

    b, k = int(frames.shape[0]), int(frames.shape[1])
    if not use_ten_crop:
        if frames.shape[2] != crop_size or frames.shape[3] != crop_size:
            frames = center_crop(frames, crop_size)
        flat = tf.reshape(frames, [b * k, crop_size, crop_size, 3])
        feats = _batched_call(video_fn, flat)
        return feats.reshape(b, k, -1).astype(np.float32)
    crops = ten_crop(frames, crop_size)  # [10, B, K, c, c, 3]
    flat = tf.reshape(crops, [10 * b * k, crop_size, crop_size, 3])
    feats = _batched_call(video_fn, flat).reshape(10, b, k, -1)
    return feats.mean(axis=0).astype(np.float32)


def _output_dim(model, input_shape: tuple[int, ...]) -> int:
    """The feature width of a backbone ``[B, *input_shape] -> [B, D]``."""
    try:
        shape = model.output_shape
    except (AttributeError, ValueError, RuntimeError):
        shape = None
    if not shape or shape[-1] is None or isinstance(shape, list):
        shape = model.compute_output_shape((1, *input_shape))
    if len(shape) != 2:
        raise FeatureError(f"backbone {model.name!r} must output [B, D] features; its output "
                           f"shape is {shape}")
    return int(shape[-1])


def _file_fingerprint(path: str) -> str:
    p = Path(path)
    if p.is_file():
        st = p.stat()
        return f"{path}|{st.st_size}|{int(st.st_mtime)}"
    return path


def extraction_fingerprint(cfg: ExperimentConfig, dataset_info: dict, video_desc: str,
                           audio_desc: str) -> str:
    """A hash of everything the feature values depend on (stale shards are refused)."""
    payload = {
        "features_version": FEATURES_VERSION,
        "video": video_desc,
        "audio": audio_desc,
        "num_segments": cfg.data.num_segments,
        "crop_size": cfg.data.crop_size,
        "ten_crop": cfg.model.ten_crop,
        "dataset_info": dataset_info,
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _shard_dataset(cfg: ExperimentConfig, data_dir: Path, split: str, position: int,
                   num_files: int, representations: Sequence[str], include_frames: bool):
    """The deterministic ``make_dataset`` pipeline restricted to the split's ``position``-th file.

    ``make_dataset`` shards by file when it runs as one of several input pipelines; asking for
    pipeline ``position`` of ``num_files`` therefore reads exactly that file, in file order
    (:func:`_extract_shard` checks the ids it yields against the file itself).
    """
    import tensorflow as tf

    from maivar_tf.data.input_pipeline import make_dataset

    context = None
    if num_files > 1:
        context = tf.distribute.InputContext(num_input_pipelines=num_files,
                                             input_pipeline_id=position, num_replicas_in_sync=1)
    return make_dataset(data_dir, split, cfg.data, batch_size=cfg.train.extract_batch_size,
                        training=False, representations=list(representations),
                        include_frames=include_frames, repeat=False, input_context=context)


def _uncropped_frames_dataset(cfg: ExperimentConfig, data_dir: Path, shard: Path):
    """One video per element with whole (uncropped) frames, for TSN 10-crop extraction.

    ``make_dataset`` centre-crops, but TSN's 10 crops take the corners of the whole frame, and
    frames of different videos may differ in size, so this reads one video at a time:
    ``{"frames": uint8 [1, K, H, W, 3], "label": int64 [1], "example_id": string [1]}``.
    """
    import tensorflow as tf

    from maivar_tf.data.input_pipeline import (
        check_schema_version,
        read_dataset_info,
        segment_subset,
    )

    info = read_dataset_info(data_dir)
    check_schema_version(info, data_dir)
    stored_k = int(info.get("config", {}).get("data", {}).get("num_segments",
                                                                cfg.data.num_segments))
    k = cfg.data.num_segments
    if k > stored_k:
        raise FeatureError(f"data.num_segments: {k} frames per clip asked, the shards of "
                           f"{data_dir} hold {stored_k}; allowed: 1..{stored_k}")
    index = None if k == stored_k else tf.constant(segment_subset(stored_k, k), tf.int32)

    def parse_decode(serialized):
        ex = schema.parse_sequence_example(serialized, ())
        encoded = ex[schema.IMAGE_ENCODED]
        if index is not None:
            encoded = tf.gather(encoded, index)
        frames = tf.map_fn(lambda b: tf.io.decode_jpeg(b, channels=3), encoded,
                           fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
        return {"frames": frames[None], "label": ex[schema.LABEL_INDEX][None],
                "example_id": ex[schema.EXAMPLE_ID][None]}

    ds = tf.data.TFRecordDataset(str(shard)).map(parse_decode, num_parallel_calls=2,
                                                 deterministic=True)
    return ds.prefetch(2)


def _shard_ids(shard: Path) -> list[bytes]:
    """The example ids of one input shard, in file order (context-only parse, no decoding)."""
    import tensorflow as tf

    spec = {schema.EXAMPLE_ID: tf.io.FixedLenFeature([], tf.string)}

    def parse(s):
        ctx, _ = tf.io.parse_single_sequence_example(s, context_features=spec)
        return ctx[schema.EXAMPLE_ID]

    return list(tf.data.TFRecordDataset(str(shard)).map(parse).as_numpy_iterator())


def _count_records(path: Path) -> int:
    import tensorflow as tf

    return int(tf.data.TFRecordDataset(str(path)).reduce(np.int64(0), lambda n, _: n + 1))


def _remove_stale_temps(out_dir: Path, names: Sequence[str]) -> None:
    for name in names:
        for leftover in glob.glob(str(out_dir / f".{name}{_TMP_MARK}*")):
            logger.info("removing leftover temporary file %s", leftover)
            os.remove(leftover)


def _tmp_name(out_dir: Path, name: str) -> Path:
    return out_dir / f".{name}{_TMP_MARK}{os.getpid()}"


def _weights_desc(w: str) -> str:
    return _file_fingerprint(w) if w not in ("none", "imagenet") else w


def extract_features(cfg: ExperimentConfig, *, splits: Sequence[str] = ("train", "test"),
                     representations: Sequence[str] | None = None, progress: bool = True,
                     video_backbone=None, audio_backbone=None,
                     data_dir: str | Path | None = None,
                     features_dir: str | Path | None = None) -> Path:
    """Runs the frozen backbones over the TFRecords and writes feature shards.

    Args:
        cfg: the experiment; reads ``cfg.data.output_dir`` (TFRecords), writes
            ``cfg.data.features_dir``; ``cfg.model.video_weights``/``audio_weights`` pick the
            backbone weights, ``cfg.model.ten_crop`` TSN 10-crop averaging, and
            ``cfg.train.extract_batch_size`` the videos per batch.
        splits: which splits to extract.
        representations: audio-images to extract (default: ``cfg.data.representations``).
        progress: show a tqdm progress bar per split.
        video_backbone: a Keras model ``[B,crop,crop,3] (0..255 RGB) -> [B,Dv]``; default
            ``build_video_backbone(cfg.model.video_weights)``. Tests inject tiny ones.
        audio_backbone: a Keras model ``[B,299,299,3] -> [B,Da]``; default
            ``build_audio_backbone(cfg.model.audio_weights)``.
        data_dir: overrides ``cfg.data.output_dir``.
        features_dir: overrides ``cfg.data.features_dir``.

    Returns:
        The features folder.

    Raises:
        FeatureError: no input shards for a split, or existing shards made with other settings
            (other weights, K, crops or TFRecords): delete the folder or pick another one.
    """
    from tqdm.auto import tqdm

    from maivar_tf.data.input_pipeline import read_dataset_info

    data_dir = Path(data_dir or cfg.data.output_dir)
    out_dir = Path(features_dir or cfg.data.features_dir)
    reps = list(representations) if representations is not None else \
        list(cfg.data.representations)
    for r in reps:
        if r not in cfg.data.representations:
            raise FeatureError(f"representation {r!r} is not in the TFRecords; allowed: "
                               f"{', '.join(cfg.data.representations)} (data.representations)")
    if not splits:
        raise FeatureError("no splits to extract; allowed: train, test, val")
    dataset_info = read_dataset_info(data_dir)
    shards = {s: input_shards(data_dir, s) for s in splits}
    for s, found in shards.items():
        if not found:
            raise FeatureError(f"no {s}-SSSSS-of-NNNNN.tfrecord shards in {data_dir}; run "
                               "`maivar build` first (or check data.output_dir)")

    saved_backbones: dict[str, str] = {}
    if video_backbone is None:
        from maivar_tf.models.bn_inception import build_video_backbone

        video_backbone, saved = _default_backbone(
            build_video_backbone, cfg.model.video_weights, out_dir, "video", cfg.train.seed)
        saved_backbones.update(saved)
        video_desc = f"BNInception:{_weights_desc(cfg.model.video_weights)}"
    else:
        video_desc = f"injected:{video_backbone.name}"
    if audio_backbone is None:
        from maivar_tf.models.inception_resnet_v2 import build_audio_backbone

        audio_backbone, saved = _default_backbone(
            build_audio_backbone, cfg.model.audio_weights, out_dir, "audio", cfg.train.seed + 1)
        saved_backbones.update(saved)
        audio_desc = f"InceptionResNetV2:{_weights_desc(cfg.model.audio_weights)}"
    else:
        audio_desc = f"injected:{audio_backbone.name}"
    video_dim = _output_dim(video_backbone, (cfg.data.crop_size, cfg.data.crop_size, 3))
    audio_dim = _output_dim(audio_backbone, (cfg.data.audio.image_size,
                                             cfg.data.audio.image_size, 3))
    fingerprint = extraction_fingerprint(cfg, dataset_info, video_desc, audio_desc)

    out_dir.mkdir(parents=True, exist_ok=True)
    info_path = out_dir / FEATURE_INFO
    old_info = json.loads(info_path.read_text()) if info_path.exists() else None
    if old_info is not None and old_info.get("fingerprint") != fingerprint:
        raise FeatureError(
            f"{out_dir} holds features made with other settings (weights, K, crops or "
            f"TFRecords: fingerprint {old_info.get('fingerprint')} != {fingerprint}); delete it "
            "or set data.features_dir to another folder")
    if old_info is None and any(out_dir.glob("*.tfrecord")):
        raise FeatureError(f"{out_dir} holds feature shards but no {FEATURE_INFO}; delete them "
                           "or set data.features_dir to another folder")
    info = _base_info(cfg, dataset_info, fingerprint, video_desc, audio_desc, video_dim,
                      audio_dim, old_info)
    if saved_backbones:
        info["backbone_weights"] = {**info.get("backbone_weights", {}), **saved_backbones}
    write_json_atomic(info_path, info, sort_keys=True)  # records the fingerprint before any shard is written

    video_fn = compiled_backbone(video_backbone, (cfg.data.crop_size, cfg.data.crop_size, 3))
    audio_fn = compiled_backbone(audio_backbone, (cfg.data.audio.image_size,
                                                  cfg.data.audio.image_size, 3))
    counts_total = {s: (dataset_info.get("counts", {}).get(s, {}) or {}).get("total")
                    for s in splits}
    for split in splits:
        bar = tqdm(total=counts_total[split], desc=f"extract {split}", unit="video",
                   disable=not progress)
        split_count = 0
        files = shards[split]
        for position, shard in enumerate(files):
            index = shard_index(shard, position)
            vname = video_shard_name(split, index)
            anames = {r: audio_shard_name(r, split, index) for r in reps}
            _remove_stale_temps(out_dir, [vname, *anames.values()])
            todo_video = not (out_dir / vname).exists()
            todo_reps = [r for r in reps if not (out_dir / anames[r]).exists()]
            if not todo_video and not todo_reps:
                n = _count_records(out_dir / vname)
                split_count += n
                bar.update(n)
                continue
            n = _extract_shard(cfg, data_dir, split, position, files, out_dir,
                               vname if todo_video else None,
                               {r: anames[r] for r in todo_reps}, video_fn, audio_fn, bar)
            split_count += n
        bar.close()
        info["splits"][split] = {
            "count": split_count,
            "num_shards": len(shards[split]),
            "representations": sorted(
                set(info["splits"].get(split, {}).get("representations", [])) | set(reps),
                key=REPRESENTATIONS.index),
        }
        write_json_atomic(info_path, info, sort_keys=True)
    info["representations"] = sorted(
        set.intersection(*(set(v["representations"]) for v in info["splits"].values())),
        key=REPRESENTATIONS.index)
    info["counts"] = {s: v["count"] for s, v in info["splits"].items()}
    write_json_atomic(info_path, info, sort_keys=True)
    return out_dir


def _base_info(cfg, dataset_info, fingerprint, video_desc, audio_desc, video_dim, audio_dim,
               old_info) -> dict[str, Any]:
    return {
        "features_version": FEATURES_VERSION,
        "fingerprint": fingerprint,
        "num_segments": cfg.data.num_segments,
        "video_dim": video_dim,
        "audio_dim": audio_dim,
        "crop_size": cfg.data.crop_size,
        "ten_crop": cfg.model.ten_crop,
        "video_backbone": video_desc,
        "audio_backbone": audio_desc,
        "class_names": list(dataset_info.get("class_names", [])),
        "splits": dict((old_info or {}).get("splits", {})),
        "representations": list((old_info or {}).get("representations", [])),
        "counts": dict((old_info or {}).get("counts", {})),
        "keys": {"id": ID_KEY, "label": LABEL_KEY, "video": VIDEO_FEATURES_KEY,
                 "num_segments": VIDEO_SEGMENTS_KEY, "audio": AUDIO_FEATURES_KEY},
        "tfrecords_schema_version": dataset_info.get("schema_version", schema.SCHEMA_VERSION),
        "config": cfg.to_dict(),
        "backbone_weights": dict((old_info or {}).get("backbone_weights", {})),
    }


#: Randomly initialised backbones are saved here (relative to the features folder), so that a
#: resumed extraction, ``maivar predict`` and the exported SavedModel use the very weights the
#: features came from.
BACKBONES_SUBDIR = "backbones"


def _default_backbone(build: Callable, weights: str, out_dir: Path, kind: str, seed: int):
    """Builds a backbone from its weights spec; ``none`` weights are seeded and saved once.

    Returns:
        ``(model, {kind: relative path})`` where the dict is empty unless weights were saved.
    """
    if weights != "none":
        return build(weights), {}
    import keras

    rel = f"{BACKBONES_SUBDIR}/{kind}.weights.h5"
    path = out_dir / rel
    if path.is_file():  # a resumed extraction keeps the random weights of the first run
        return build(str(path)), {kind: rel}
    keras.utils.set_random_seed(seed)
    model = build("none")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{kind}{_TMP_MARK}{os.getpid()}.weights.h5")
    model.save_weights(tmp)
    os.replace(tmp, path)
    return model, {kind: rel}


def _extract_shard(cfg: ExperimentConfig, data_dir: Path, split: str, position: int,
                   files: Sequence[Path], out_dir: Path, video_name: str | None,
                   audio_names: dict[str, str], video_fn: Callable, audio_fn: Callable,
                   bar) -> int:
    """Extracts one input shard into temp files and renames them when all are complete.

    Returns:
        The number of examples in the shard.

    Raises:
        FeatureError: the pipeline yielded other examples than the shard holds.
    """
    import tensorflow as tf

    shard = files[position]
    expected = _shard_ids(shard)
    use_ten_crop = bool(cfg.model.ten_crop) and video_name is not None
    reps = list(audio_names)
    if use_ten_crop:  # whole frames one video at a time, then the audio-images
        passes = [("video", _uncropped_frames_dataset(cfg, data_dir, shard))]
        if reps:
            passes.append(("audio", _shard_dataset(cfg, data_dir, split, position, len(files),
                                                   reps, include_frames=False)))
    else:
        passes = [("both", _shard_dataset(cfg, data_dir, split, position, len(files), reps,
                                          include_frames=video_name is not None))]
    names = ([video_name] if video_name else []) + list(audio_names.values())
    tmps = {name: _tmp_name(out_dir, name) for name in names}
    writers = {name: tf.io.TFRecordWriter(str(path)) for name, path in tmps.items()}
    try:
        for p, (kind, ds) in enumerate(passes):
            seen: list[bytes] = []
            for batch in ds:
                ids = batch["example_id"].numpy()
                labels = batch["label"].numpy()
                if kind in ("video", "both") and video_name is not None:
                    v = _video_features(video_fn, batch["frames"], cfg.data.crop_size,
                                        use_ten_crop)
                    for i, label, row in zip(ids, labels, v, strict=True):
                        writers[video_name].write(_video_example(i, label, row))
                if kind in ("audio", "both"):
                    for rep, name in audio_names.items():
                        a = _batched_call(audio_fn, batch["audio_images"][rep])
                        for i, label, row in zip(ids, labels, a, strict=True):
                            writers[name].write(_audio_example(i, label, row))
                seen.extend(ids.tolist())
                if p == 0:
                    bar.update(len(ids))
            if seen != expected:
                raise FeatureError(
                    f"{shard}: the input pipeline yielded {len(seen)} examples, the shard holds "
                    f"{len(expected)} (or in another order); refusing to write its features")
    except BaseException:
        for w in writers.values():
            w.close()
        for path in tmps.values():
            if path.exists():
                path.unlink()
        raise
    for w in writers.values():
        w.close()
    for name, path in tmps.items():
        os.replace(path, out_dir / name)
    return len(expected)
