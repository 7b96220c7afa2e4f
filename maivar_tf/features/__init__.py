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

from maivar_tf.features.extract import extract_features
from maivar_tf.features.shards import (
    FeatureError,
    FeatureSet,
    audio_segment_shard_name,
    audio_shard_name,
    load_features,
    pair_by_id,
    read_audio_segment_shards,
    read_audio_shards,
    read_feature_info,
    read_video_shards,
    video_shard_name,
    write_audio_segment_shard,
    write_audio_shard,
    write_video_shard,
)
from maivar_tf.features.silent import silent_audio_image, silent_audio_images, silent_features

__all__ = [
    # the run, and reading its output back
    "extract_features", "load_features", "read_feature_info", "FeatureSet", "FeatureError",
    # pairing by example id
    "pair_by_id",
    # the shard files and their codec
    "video_shard_name", "audio_shard_name", "audio_segment_shard_name", "write_video_shard",
    "write_audio_shard", "write_audio_segment_shard", "read_video_shards", "read_audio_shards",
    "read_audio_segment_shards",
    # the silent audio-image (a clip without sound, modality dropout)
    "silent_audio_image", "silent_audio_images", "silent_features",
]
