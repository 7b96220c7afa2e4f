"""Frozen backbone features: the extraction run and the feature shards it writes.

:mod:`maivar_tf.features.extract` runs BNInception and InceptionResNetV2 over the TFRecords
(``maivar extract``); :mod:`maivar_tf.features.shards` holds the shard codec, the file names and
:func:`load_features`, which pairs video and audio features by example id (Shaikh et al. 2024,
Sec. 3.3-3.4: the MLP heads train on these features).

Example:
    >>> extract_features(cfg, representations=["chromagram"])            # doctest: +SKIP
    >>> train = load_features(cfg.data.features_dir, "train", "chromagram")  # doctest: +SKIP
    >>> train.video.shape, train.audio.shape                              # doctest: +SKIP
    ((192, 8, 1024), (192, 1536))
"""

from maivar_tf.features.extract import extract_features, extraction_fingerprint
from maivar_tf.features.shards import (
    AUDIO_FEATURES_KEY,
    FEATURE_KEYS,
    ID_KEY,
    LABEL_KEY,
    VIDEO_FEATURES_KEY,
    VIDEO_SEGMENTS_KEY,
    FeatureError,
    FeatureSet,
    audio_shard_name,
    feature_example,
    load_features,
    pair_by_id,
    read_audio_shards,
    read_feature_info,
    read_video_shards,
    video_shard_name,
    write_audio_shard,
    write_video_shard,
)

__all__ = [
    "AUDIO_FEATURES_KEY", "FEATURE_KEYS", "ID_KEY", "LABEL_KEY", "VIDEO_FEATURES_KEY",
    "VIDEO_SEGMENTS_KEY", "FeatureError", "FeatureSet", "audio_shard_name", "extract_features",
    "extraction_fingerprint", "feature_example", "load_features", "pair_by_id",
    "read_audio_shards", "read_feature_info", "read_video_shards", "video_shard_name",
    "write_audio_shard", "write_video_shard",
]
