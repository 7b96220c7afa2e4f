"""The feature shards' ``tf.train.Example`` codec: one Example per clip, written and read back.

Three kinds of shard (names in :mod:`maivar_tf.features.shards`):

* video: ``example/id``, ``clip/label/index``, ``video/features`` (K*Dv floats),
  ``video/num_segments``, and per clip what untrimmed videos and missing sound tracks need:
  ``segment/label/index`` (K span labels, -1 background), ``segment/time`` (K frame times in
  seconds from the file start), ``segment/has_spans`` and ``audio/missing`` (0/1). Shards
  written before these keys existed read with no spans, no times (NaN) and audio present;
* audio: ``example/id``, ``clip/label/index``, ``audio/features`` (Da floats);
* per-segment audio: ``example/id``, ``clip/label/index``, ``audio/segment_features``
  (K*Da floats: the audio backbone on each segment's audio-image), ``audio/num_segments``.

Examples serialize deterministically (map keys sorted), so a resumed extraction writes the very
bytes of an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

# Feature-shard keys (tf.train.Example).
ID_KEY = "example/id"
LABEL_KEY = "clip/label/index"
VIDEO_FEATURES_KEY = "video/features"
VIDEO_SEGMENTS_KEY = "video/num_segments"
AUDIO_FEATURES_KEY = "audio/features"
AUDIO_SEGMENT_FEATURES_KEY = "audio/segment_features"
AUDIO_SEGMENTS_KEY = "audio/num_segments"
SEGMENT_LABELS_KEY = "segment/label/index"
SEGMENT_TIMES_KEY = "segment/time"
HAS_SPANS_KEY = "segment/has_spans"
AUDIO_MISSING_KEY = "audio/missing"
#: The keys, as ``FeatureInfo.keys`` records them.
FEATURE_KEYS = {"id": ID_KEY, "label": LABEL_KEY, "video": VIDEO_FEATURES_KEY,
                "num_segments": VIDEO_SEGMENTS_KEY, "audio": AUDIO_FEATURES_KEY,
                "audio_segments": AUDIO_SEGMENT_FEATURES_KEY,
                "audio_num_segments": AUDIO_SEGMENTS_KEY, "segment_labels": SEGMENT_LABELS_KEY,
                "segment_times": SEGMENT_TIMES_KEY, "has_spans": HAS_SPANS_KEY,
                "audio_missing": AUDIO_MISSING_KEY}


def _to_bytes(s: str | bytes) -> bytes:
    return s if isinstance(s, bytes) else str(s).encode()


def _feature(values):
    """An int64 or float ``tf.train.Feature`` of ``values`` (by their dtype)."""
    import tensorflow as tf

    arr = np.asarray(values).reshape(-1)
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=arr.astype(np.int64)))
    return tf.train.Feature(float_list=tf.train.FloatList(value=arr.astype(np.float32)))


def video_extras(segment_labels, segment_times, has_spans, audio_missing
                 ) -> dict[str, np.ndarray]:
    """The per-clip extra features of a video shard row (``extras`` of :func:`feature_example`).

    Args:
        segment_labels: int ``[K]`` span label per segment, -1 background.
        segment_times: float ``[K]`` seconds from the file start.
        has_spans: the clip's record holds at least one span.
        audio_missing: the clip had no audio track.
    """
    return {SEGMENT_LABELS_KEY: np.asarray(segment_labels, np.int64),
            SEGMENT_TIMES_KEY: np.asarray(segment_times, np.float32),
            HAS_SPANS_KEY: np.asarray([bool(has_spans)], np.int64),
            AUDIO_MISSING_KEY: np.asarray([bool(audio_missing)], np.int64)}


def feature_example(example_id: str | bytes, label: int, features: np.ndarray, *,
                    video: bool, segments: bool = False,
                    extras: Mapping[str, np.ndarray] | None = None) -> bytes:
    """One serialized feature ``tf.train.Example``: id, label and the flattened features.

    Serialized deterministically (the same bytes in every process).

    Args:
        example_id: the clip's ``example/id``.
        label: its class index.
        features: float32 ``[K, D]`` segment features (``video``, or per-segment audio with
            ``segments``) or ``[D]`` audio features.
        video: which of the two kinds ``features`` is.
        segments: (audio) per-segment audio features ``[K, D]``.
        extras: more features by key (:func:`video_extras`); int arrays as int64 lists.
    """
    import tensorflow as tf

    features = np.asarray(features, np.float32)
    if video:
        key, count = VIDEO_FEATURES_KEY, VIDEO_SEGMENTS_KEY
    else:
        key, count = ((AUDIO_SEGMENT_FEATURES_KEY, AUDIO_SEGMENTS_KEY) if segments
                      else (AUDIO_FEATURES_KEY, None))
    feature = {
        ID_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[_to_bytes(example_id)])),
        LABEL_KEY: _feature(np.asarray([label], np.int64)),
        key: _feature(features),
    }
    if count is not None:
        feature[count] = _feature(np.asarray([features.shape[0]], np.int64))
    for k, values in (extras or {}).items():
        feature[k] = _feature(values)
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    # Map keys sorted: the default order differs between processes, and a resumed extraction
    # must give the very bytes of an uninterrupted one.
    return example.SerializeToString(deterministic=True)


def _write_shard(path: str | Path, ids, labels, rows, *, video: bool, segments: bool = False,
                 extras: Sequence[Mapping[str, np.ndarray]] | None = None) -> None:
    import tensorflow as tf

    extras = extras if extras is not None else [None] * len(ids)
    with tf.io.TFRecordWriter(str(path)) as w:
        for i, label, row, extra in zip(ids, labels, rows, extras, strict=True):
            w.write(feature_example(i, label, row, video=video, segments=segments,
                                    extras=extra))


def write_video_shard(path: str | Path, ids: Sequence[str], labels: Sequence[int],
                      video: np.ndarray, *, segment_labels: np.ndarray | None = None,
                      segment_times: np.ndarray | None = None,
                      has_spans: Sequence[bool] | None = None,
                      audio_missing: Sequence[bool] | None = None) -> None:
    """Writes a video feature shard (``video`` float32 ``[N, K, D]``) in the given row order.

    With ``segment_labels`` (int ``[N, K]``) the rows also hold the per-clip extras
    (:func:`video_extras`; ``segment_times`` default NaN, the flags default False); without,
    the layout of shards written before they existed.
    """
    extras = None
    if segment_labels is not None:
        n, k = len(ids), np.asarray(segment_labels).shape[1]
        times = np.full((n, k), np.nan) if segment_times is None else segment_times
        spans = [False] * n if has_spans is None else has_spans
        missing = [False] * n if audio_missing is None else audio_missing
        extras = [video_extras(*row) for row in zip(segment_labels, times, spans, missing,
                                                    strict=True)]
    _write_shard(path, ids, labels, video, video=True, extras=extras)


def write_audio_shard(path: str | Path, ids: Sequence[str], labels: Sequence[int],
                      audio: np.ndarray) -> None:
    """Writes an audio feature shard (``audio`` float32 ``[N, D]``) in the given row order."""
    _write_shard(path, ids, labels, audio, video=False)


def write_audio_segment_shard(path: str | Path, ids: Sequence[str], labels: Sequence[int],
                              audio_segments: np.ndarray) -> None:
    """Writes a per-segment audio feature shard (float32 ``[N, K, D]``) in the given order."""
    _write_shard(path, ids, labels, audio_segments, video=False, segments=True)


def _read_columns(files: Sequence[Path], key: str, width: int,
                  optional: Mapping[str, tuple] | None = None) -> dict[str, np.ndarray]:
    """``{"ids", "labels", "features" [N, width], <optional key>: ...}`` of every Example in
    ``files``, in order; ``optional`` maps a key to ``(shape, dtype, default)``."""
    import tensorflow as tf

    spec = {ID_KEY: tf.io.FixedLenFeature([], tf.string),
            LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
            key: tf.io.FixedLenFeature([width], tf.float32)}
    for k, (shape, dtype, default) in (optional or {}).items():
        spec[k] = tf.io.FixedLenFeature(shape, dtype, default_value=default)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in spec}
    if files:
        ds = tf.data.TFRecordDataset([str(f) for f in files]).batch(1024)
        for batch in ds.map(lambda s: tf.io.parse_example(s, spec)).as_numpy_iterator():
            for k, v in batch.items():
                cols[k].append(v)
    joined = {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in cols.items()}
    out = {"ids": joined[ID_KEY].astype(str), "labels": joined[LABEL_KEY].astype(np.int64),
           "features": joined[key].astype(np.float32).reshape(-1, width)}
    for k, (shape, _, _) in (optional or {}).items():
        out[k] = joined[k].reshape(-1, *shape)
    return out


def read_video_shards(files: Sequence[Path], num_segments: int, dim: int
                      ) -> dict[str, np.ndarray]:
    """``{"ids", "labels", "video" [N,K,D], "segment_labels" int64 [N,K], "segment_times"
    float32 [N,K] (NaN when not stored), "has_spans" bool [N], "audio_missing" bool [N]}`` from
    video feature shards, in file order."""
    import tensorflow as tf

    k = num_segments
    cols = _read_columns(files, VIDEO_FEATURES_KEY, k * dim, optional={
        SEGMENT_LABELS_KEY: ([k], tf.int64, [-1] * k),
        SEGMENT_TIMES_KEY: ([k], tf.float32, [float("nan")] * k),
        HAS_SPANS_KEY: ([], tf.int64, 0), AUDIO_MISSING_KEY: ([], tf.int64, 0)})
    return {"ids": cols["ids"], "labels": cols["labels"],
            "video": cols["features"].reshape(-1, k, dim),
            "segment_labels": cols[SEGMENT_LABELS_KEY].astype(np.int64),
            "segment_times": cols[SEGMENT_TIMES_KEY].astype(np.float32),
            "has_spans": cols[HAS_SPANS_KEY].astype(bool),
            "audio_missing": cols[AUDIO_MISSING_KEY].astype(bool)}


def read_audio_shards(files: Sequence[Path], dim: int) -> dict[str, np.ndarray]:
    """``{"ids", "labels", "audio" [N,D]}`` from audio feature shards, in file order."""
    cols = _read_columns(files, AUDIO_FEATURES_KEY, dim)
    return {"ids": cols["ids"], "labels": cols["labels"], "audio": cols["features"]}


def read_audio_segment_shards(files: Sequence[Path], num_segments: int, dim: int
                              ) -> dict[str, np.ndarray]:
    """``{"ids", "labels", "audio_segments" [N,K,D]}`` from per-segment audio feature shards."""
    cols = _read_columns(files, AUDIO_SEGMENT_FEATURES_KEY, num_segments * dim)
    return {"ids": cols["ids"], "labels": cols["labels"],
            "audio_segments": cols["features"].reshape(-1, num_segments, dim)}
