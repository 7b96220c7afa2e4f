"""The TFRecord schema: every ``tf.train.SequenceExample`` key, shared by writer and reader.

One SequenceExample per video, following MediaPipe MediaSequence conventions, holding what
MAiVAR (Shaikh et al. 2024) feeds its two streams. The context holds the clip's identity and
label; feature lists hold one JPEG per sampled TSN segment frame and one PNG per audio-image
representation (a single-element list under ``<REP>/image/encoded``).

Version 2 adds, for untrimmed videos and missing sound tracks:

* the annotated spans of the action under MediaSequence's segment keys (context int64 lists,
  one entry per span): ``segment/start/timestamp`` and ``segment/end/timestamp`` in
  microseconds from the file start, ``segment/label/index`` the span's class;
* ``audio/missing`` (context int64, 1 when the clip had no audio track and its audio is the
  silent one, ``data.on_missing_audio: silence``);
* per-segment audio-images (``data.segment_audio``): a feature list of K PNGs per
  representation under ``<REP>_SEGMENTS/image/encoded``, the audio window of each TSN
  segment (:mod:`maivar_tf.data.segments`), in segment order.

Bump :data:`SCHEMA_VERSION` whenever a key, dtype or meaning changes; ``dataset_info.json``
records it and the reader refuses shards of a version outside :data:`READABLE_VERSIONS`
(version-1 shards read with no spans, audio present and no per-segment audio-images).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

SCHEMA_VERSION = 2
#: Versions this code reads (version 1 lacks the keys version 2 added; they take defaults).
READABLE_VERSIONS = (1, 2)

# Context keys.
EXAMPLE_ID = "example/id"
DATA_PATH = "clip/data_path"
LABEL_INDEX = "clip/label/index"
LABEL_STRING = "clip/label/string"
START_TIMESTAMP = "clip/start/timestamp"  # microseconds
END_TIMESTAMP = "clip/end/timestamp"  # microseconds
IMAGE_FORMAT = "image/format"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
IMAGE_FRAME_RATE = "image/frame_rate"
AUDIO_SAMPLE_RATE = "audio/sample_rate"
SPLIT = "clip/split"
SEGMENT_START_TIMESTAMP = "segment/start/timestamp"  # microseconds, one per annotated span
SEGMENT_END_TIMESTAMP = "segment/end/timestamp"  # microseconds
SEGMENT_LABEL_INDEX = "segment/label/index"
AUDIO_MISSING = "audio/missing"  # 1: no audio track, the audio is the silent one

# Feature-list keys.
IMAGE_ENCODED = "image/encoded"  # one JPEG per sampled frame
IMAGE_TIMESTAMP = "image/timestamp"  # microseconds, one per sampled frame
WAVEFORM_FLOATS = "WAVEFORM/feature/floats"  # one element: the whole mono waveform


def audio_image_key(representation: str) -> str:
    """Feature-list key of one audio-image representation, e.g. ``CHROMAGRAM/image/encoded``."""
    return f"{representation.upper()}/image/encoded"


def segment_audio_image_key(representation: str) -> str:
    """Feature-list key of one representation's K per-segment audio-images,
    e.g. ``CHROMAGRAM_SEGMENTS/image/encoded``."""
    return f"{representation.upper()}_SEGMENTS/image/encoded"


@dataclass(frozen=True)
class ClipExample:
    """Everything stored for one video, in Python types (the writer's input).

    Args:
        example_id: stable and unique (derived from the relative path, never from order).
        data_path: the video's path relative to the dataset root.
        label_index: class index into ``classInd``.
        label_string: class name.
        split: ``train`` or ``test`` (or ``val``).
        frames_jpeg: K JPEG-encoded frames, in time order.
        frame_timestamps_us: K timestamps in microseconds.
        height, width: decoded frame size after resizing.
        frame_rate: the stream's average frame rate.
        sample_rate: the waveform's sample rate after resampling.
        audio_images_png: representation name -> PNG bytes.
        start_us, end_us: clip start and end in microseconds.
        waveform: optional mono float32 waveform.
        spans: the annotated action spans ``(start_us, end_us, label_index)``.
        segment_audio_images_png: representation name -> K PNGs, one per segment's window.
        audio_missing: the clip had no audio track (its audio-images are the silent ones).
    """

    example_id: str
    data_path: str
    label_index: int
    label_string: str
    split: str
    frames_jpeg: Sequence[bytes]
    frame_timestamps_us: Sequence[int]
    height: int
    width: int
    frame_rate: float
    sample_rate: int
    audio_images_png: Mapping[str, bytes] = field(default_factory=dict)
    start_us: int = 0
    end_us: int = 0
    waveform: np.ndarray | None = None
    spans: Sequence[tuple[int, int, int]] = ()
    segment_audio_images_png: Mapping[str, Sequence[bytes]] = field(default_factory=dict)
    audio_missing: bool = False


def _bytes(values: Sequence[bytes]):
    import tensorflow as tf

    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _ints(values: Sequence[int]):
    import tensorflow as tf

    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _floats(values: Sequence[float]):
    import tensorflow as tf

    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def to_sequence_example(clip: ClipExample):
    """Builds the ``tf.train.SequenceExample`` of one clip."""
    import tensorflow as tf

    ctx = {
        EXAMPLE_ID: _bytes([clip.example_id.encode()]),
        DATA_PATH: _bytes([clip.data_path.encode()]),
        LABEL_INDEX: _ints([clip.label_index]),
        LABEL_STRING: _bytes([clip.label_string.encode()]),
        SPLIT: _bytes([clip.split.encode()]),
        START_TIMESTAMP: _ints([clip.start_us]),
        END_TIMESTAMP: _ints([clip.end_us]),
        IMAGE_FORMAT: _bytes([b"JPEG"]),
        IMAGE_HEIGHT: _ints([clip.height]),
        IMAGE_WIDTH: _ints([clip.width]),
        IMAGE_FRAME_RATE: _floats([clip.frame_rate]),
        AUDIO_SAMPLE_RATE: _ints([clip.sample_rate]),
        AUDIO_MISSING: _ints([int(bool(clip.audio_missing))]),
    }
    if clip.spans:
        ctx[SEGMENT_START_TIMESTAMP] = _ints([s for s, _, _ in clip.spans])
        ctx[SEGMENT_END_TIMESTAMP] = _ints([e for _, e, _ in clip.spans])
        ctx[SEGMENT_LABEL_INDEX] = _ints([c for _, _, c in clip.spans])
    lists = {
        IMAGE_ENCODED: tf.train.FeatureList(feature=[_bytes([f]) for f in clip.frames_jpeg]),
        IMAGE_TIMESTAMP: tf.train.FeatureList(
            feature=[_ints([t]) for t in clip.frame_timestamps_us]),
    }
    for rep, png in clip.audio_images_png.items():
        lists[audio_image_key(rep)] = tf.train.FeatureList(feature=[_bytes([png])])
    for rep, pngs in clip.segment_audio_images_png.items():
        lists[segment_audio_image_key(rep)] = tf.train.FeatureList(
            feature=[_bytes([png]) for png in pngs])
    if clip.waveform is not None:
        lists[WAVEFORM_FLOATS] = tf.train.FeatureList(
            feature=[tf.train.Feature(float_list=tf.train.FloatList(
                value=np.asarray(clip.waveform, np.float32).ravel()))])
    return tf.train.SequenceExample(
        context=tf.train.Features(feature=ctx),
        feature_lists=tf.train.FeatureLists(feature_list=lists),
    )


def feature_specs(representations: Sequence[str], with_waveform: bool = False,
                  segment_representations: Sequence[str] = ()):
    """``(context_spec, sequence_spec)`` for ``tf.io.parse_single_sequence_example``."""
    import tensorflow as tf

    context = {
        EXAMPLE_ID: tf.io.FixedLenFeature([], tf.string),
        DATA_PATH: tf.io.FixedLenFeature([], tf.string),
        LABEL_INDEX: tf.io.FixedLenFeature([], tf.int64),
        LABEL_STRING: tf.io.FixedLenFeature([], tf.string),
        SPLIT: tf.io.FixedLenFeature([], tf.string, default_value=""),
        START_TIMESTAMP: tf.io.FixedLenFeature([], tf.int64, default_value=0),
        END_TIMESTAMP: tf.io.FixedLenFeature([], tf.int64, default_value=0),
        IMAGE_FORMAT: tf.io.FixedLenFeature([], tf.string, default_value="JPEG"),
        IMAGE_HEIGHT: tf.io.FixedLenFeature([], tf.int64),
        IMAGE_WIDTH: tf.io.FixedLenFeature([], tf.int64),
        IMAGE_FRAME_RATE: tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
        AUDIO_SAMPLE_RATE: tf.io.FixedLenFeature([], tf.int64, default_value=0),
        AUDIO_MISSING: tf.io.FixedLenFeature([], tf.int64, default_value=0),
        SEGMENT_START_TIMESTAMP: tf.io.VarLenFeature(tf.int64),
        SEGMENT_END_TIMESTAMP: tf.io.VarLenFeature(tf.int64),
        SEGMENT_LABEL_INDEX: tf.io.VarLenFeature(tf.int64),
    }
    sequence = {
        IMAGE_ENCODED: tf.io.FixedLenSequenceFeature([], tf.string),
        IMAGE_TIMESTAMP: tf.io.FixedLenSequenceFeature([], tf.int64),
    }
    for rep in representations:
        sequence[audio_image_key(rep)] = tf.io.FixedLenSequenceFeature([], tf.string)
    for rep in segment_representations:
        sequence[segment_audio_image_key(rep)] = tf.io.FixedLenSequenceFeature([], tf.string)
    if with_waveform:
        sequence[WAVEFORM_FLOATS] = tf.io.VarLenFeature(tf.float32)
    return context, sequence


def parse_sequence_example(serialized, representations: Sequence[str],
                           with_waveform: bool = False,
                           segment_representations: Sequence[str] = ()):
    """Parses one serialized SequenceExample into a flat dict of tensors (keys as above).

    The span keys come out dense (int64 ``[num_spans]``, empty without spans);
    ``segment_representations`` adds each one's K per-segment PNGs (string ``[K]``).
    """
    import tensorflow as tf

    context_spec, sequence_spec = feature_specs(representations, with_waveform,
                                                segment_representations)
    context, sequence = tf.io.parse_single_sequence_example(
        serialized, context_features=context_spec, sequence_features=sequence_spec)
    out = dict(context)
    for key in (SEGMENT_START_TIMESTAMP, SEGMENT_END_TIMESTAMP, SEGMENT_LABEL_INDEX):
        out[key] = tf.sparse.to_dense(context[key])
    out.update(sequence)
    if with_waveform:
        out[WAVEFORM_FLOATS] = tf.sparse.to_dense(sequence[WAVEFORM_FLOATS])[0]
    return out
