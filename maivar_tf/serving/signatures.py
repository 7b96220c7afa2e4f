"""The serving signatures' names, inputs and outputs, and the class-name table.

:class:`~maivar_tf.serving.module.ServingModule` exposes three signatures; what each takes
depends on the run's fusion (``model.fusion``):

=====================  ==============================================  =========================
signature              clip-level fusion (MAiVAR's Algorithm 1)        ``temporal_binding``
=====================  ==============================================  =========================
``serving_default``    ``video_features`` float32 ``[B, K, Dv]``,       ``video_features``,
                       ``audio_features`` float32 ``[B, Da]``           ``audio_segment_features``
                                                                       float32 ``[B, K, Da]``
``serve_media``        ``frames`` uint8 ``[B, K, H, W, 3]``,            ``frames``,
                       ``audio_image`` uint8 ``[B, S, S, 3]``           ``audio_segment_images``
                                                                       uint8 ``[B, K, S, S, 3]``
``serve_waveform``     ``frames``, ``waveform`` float32 ``[B, N]``,     the same
                       ``sample_rate`` int32 ``[B]``
=====================  ==============================================  =========================

Every signature returns :data:`OUTPUT_KEYS`; a run with a localiser (``run_dir/localiser.keras``)
adds :data:`SEGMENT_OUTPUT_KEYS`. A run that selects segments (``model.selection``,
:mod:`maivar_tf.serving.selector`) adds :data:`SELECTION_OUTPUT_KEYS` instead, and under
``audio_topk`` its ``serving_default`` also takes ``preview_features`` float32 ``[B, K, Dp]``
(the preview backbone's per-segment features), so all three signatures select the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from maivar_tf.models.heads import AUDIO_INPUT, AUDIO_SEGMENTS_INPUT, VIDEO_INPUT

#: Signature names (``serving_default`` is TF Serving's default signature).
SIGNATURE_FEATURES = "serving_default"
SIGNATURE_MEDIA = "serve_media"
SIGNATURE_WAVEFORM = "serve_waveform"
SIGNATURES = (SIGNATURE_FEATURES, SIGNATURE_MEDIA, SIGNATURE_WAVEFORM)
#: Output keys of every signature: ``audio_missing`` bool ``[B]`` says the audio input was the
#: silent one (see :class:`~maivar_tf.serving.module.ServingModule`).
OUTPUT_KEYS = ("probabilities", "top_classes", "top_scores", "audio_missing")
#: The extra outputs of a run with a localiser: the per-segment softmax ``[B, K, C + 1]`` (class
#: C = background) and the event probability ``1 - p(background)`` ``[B, K]``.
SEGMENT_OUTPUT_KEYS = ("segment_scores", "segment_event")
#: The media input of the per-segment audio-images (temporal binding).
SEGMENT_IMAGES = "audio_segment_images"
#: How many classes ``top_classes``/``top_scores`` name (fewer when there are fewer classes).
TOP_K = 5
#: What the label table returns for an index it does not hold.
UNKNOWN_CLASS = "<unknown>"


#: The extra output of a module that selects segments (``model.selection``): the k segments
#: the visual backbone ran on, int32 ``[B, k]`` in time order.
SELECTION_OUTPUT_KEYS = ("selected_segments",)
#: ``serving_default``'s third input under ``audio_topk``: the preview backbone's features.
PREVIEW_INPUT = "preview_features"


def output_keys(localiser: bool, selection: bool = False) -> tuple[str, ...]:
    """The output keys of every signature of a module (with or without a localiser, with
    or without segment selection)."""
    return (OUTPUT_KEYS + (SEGMENT_OUTPUT_KEYS if localiser else ())
            + (SELECTION_OUTPUT_KEYS if selection else ()))


def check_class_names(class_names: Sequence[str]) -> tuple[str, ...]:
    """The class names as a tuple of ``str``; each must be a non-empty single line.

    Raises:
        ValueError: an empty list, or a name that is empty or holds a newline (it could not
            be one line of the labels asset).
    """
    names = tuple(str(c) for c in class_names)
    if not names:
        raise ValueError("serving: empty class list")
    bad = [c for c in names if "\n" in c or not c]
    if bad:
        raise ValueError(f"serving: class names must be non-empty single lines; got {bad[:3]!r}")
    return names


def label_table(class_names: Sequence[str], labels_file: str | None = None
                ) -> tf.lookup.StaticHashTable:
    """The logit index -> class name table.

    Args:
        class_names: the classes, in logit order (fills the table when there is no file).
        labels_file: a file with one class per line in logit order (read by a text-file
            initializer, so it travels as a SavedModel asset).
    """
    if labels_file is None:
        initializer = tf.lookup.KeyValueTensorInitializer(
            tf.range(len(class_names), dtype=tf.int64), tf.constant(list(class_names), tf.string))
    else:
        initializer = tf.lookup.TextFileInitializer(
            str(labels_file), key_dtype=tf.int64, key_index=tf.lookup.TextFileIndex.LINE_NUMBER,
            value_dtype=tf.string, value_index=tf.lookup.TextFileIndex.WHOLE_LINE)
    return tf.lookup.StaticHashTable(initializer, default_value=UNKNOWN_CLASS)


def input_signatures(num_segments: int, video_dim: int, audio_dim: int, image_size: int,
                     temporal: bool = False, preview_dim: int = 0
                     ) -> dict[str, list[tf.TensorSpec]]:
    """Each signature's named ``tf.TensorSpec`` list, in argument order.

    Args:
        num_segments, video_dim, audio_dim, image_size: K, Dv, Da, S.
        temporal: the temporal-binding inputs (per-segment audio features and audio-images).
        preview_dim: Dp > 0: ``serving_default`` also takes the preview backbone's features
            ``preview_features`` float32 ``[B, K, Dp]`` (``model.selection: audio_topk``).
    """
    k, s = int(num_segments), int(image_size)
    frames = tf.TensorSpec([None, k, None, None, 3], tf.uint8, name="frames")
    if temporal:
        audio = tf.TensorSpec([None, k, int(audio_dim)], tf.float32, name=AUDIO_SEGMENTS_INPUT)
        image = tf.TensorSpec([None, k, s, s, 3], tf.uint8, name=SEGMENT_IMAGES)
    else:
        audio = tf.TensorSpec([None, int(audio_dim)], tf.float32, name=AUDIO_INPUT)
        image = tf.TensorSpec([None, s, s, 3], tf.uint8, name="audio_image")
    features = [tf.TensorSpec([None, k, int(video_dim)], tf.float32, name=VIDEO_INPUT), audio]
    if preview_dim:
        features.append(tf.TensorSpec([None, k, int(preview_dim)], tf.float32,
                                      name=PREVIEW_INPUT))
    return {
        SIGNATURE_FEATURES: features,
        SIGNATURE_MEDIA: [frames, image],
        SIGNATURE_WAVEFORM: [
            frames,
            tf.TensorSpec([None, None], tf.float32, name="waveform"),
            tf.TensorSpec([None], tf.int32, name="sample_rate"),
        ],
    }


def describe_signatures(specs: Mapping[str, Sequence[tf.TensorSpec]]) -> dict[str, list]:
    """``{signature: [{"name", "dtype", "shape"}]}`` with ``-1`` for unknown dimensions."""
    return {name: [{"name": s.name, "dtype": s.dtype.name,
                    "shape": [d if d is not None else -1 for d in s.shape]} for s in sig]
            for name, sig in specs.items()}


def as_numpy_outputs(outputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Signature outputs -> NumPy arrays (class names decoded to ``str``)."""
    out = {}
    for k, v in outputs.items():
        a = np.asarray(v)
        if a.dtype.kind in ("O", "S"):
            a = np.vectorize(lambda s: s.decode() if isinstance(s, bytes) else str(s),
                             otypes=[object])(a).astype(str)
        out[k] = a
    return out
