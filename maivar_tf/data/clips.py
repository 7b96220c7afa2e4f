"""The bare per-video function: one annotation record -> one :class:`ClipExample`.

This is the only place where a video becomes what a TFRecord stores: the K TSN segment frames
as JPEG (:func:`maivar_tf.data.video.load_clip` decodes them and the waveform), and every
configured audio-image (the paper's Sec. 3.2 representations) as PNG; with
``data.segment_audio`` also, per representation, the K audio-images of the segments' audio
windows (:mod:`maivar_tf.data.segments`), rendered by the same renderer. The record's spans
and whether its audio was missing (``data.on_missing_audio: silence``) go along. The Beam job
(``beam/build_tfrecords.py``) calls it once per video; benchmarks call it in a plain loop.

Example:
    >>> from maivar_tf.config import DataConfig
    >>> from maivar_tf.data.annotations import VideoRecord
    >>> rec = VideoRecord("Bounce_Chime/v_Bounce_Chime_g01_c01.mp4", 0, "Bounce_Chime", "train")
    >>> clip = clip_example_from_record(rec, DataConfig(num_segments=4))
    >>> len(clip.frames_jpeg)
    4
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from maivar_tf.config import SAMPLING_MODES, ConfigError, DataConfig
from maivar_tf.data.errors import MediaError
from maivar_tf.data.remote import is_remote, join_path, local_media
from maivar_tf.data.schema import ClipExample

if TYPE_CHECKING:  # pragma: no cover
    from maivar_tf.data.annotations import VideoRecord
    from maivar_tf.data.video import DecodedClip


def resolve_video_path(record_path: str, video_root: str) -> str:
    """The file a record names: absolute paths as given, others under ``video_root``.

    Either may be on another filesystem (``gs://bucket/videos``,
    :mod:`maivar_tf.data.remote`).

    Args:
        record_path: the annotation's path (relative to ``video_root``, absolute or remote).
        video_root: the dataset's video folder (``DataConfig.video_root``).
    """
    if os.path.isabs(record_path) or is_remote(record_path) or not video_root:
        return record_path
    if is_remote(video_root):
        return join_path(video_root, record_path)
    return str(Path(video_root) / record_path)


def record_example_id(record: VideoRecord) -> str:
    """The record's stable id: the one the annotation reader filled, else derived from its path."""
    if record.example_id:
        return record.example_id
    from maivar_tf.data.annotations import make_example_id

    return make_example_id(record.path, record.start_s, record.end_s)


def _seed_from_id(example_id: str) -> int:
    """A per-video seed for ``mode="random"`` that depends on the id only, never on order."""
    return int.from_bytes(hashlib.sha256(example_id.encode()).digest()[:4], "little")


def clip_example_from_record(record: VideoRecord, cfg: DataConfig,
                             mode: str = "center") -> ClipExample:
    """Decodes, samples, encodes and renders one video into a :class:`ClipExample`.

    Args:
        record: the annotation record (path relative to ``cfg.video_root`` or absolute).
        cfg: the data section: ``num_segments`` (K), ``frame_short_side``, ``jpeg_quality``,
            ``representations``, ``store_waveform`` and the audio-image settings ``cfg.audio``.
        mode: TSN sampling, ``center`` (deterministic: same input, same output) or ``random``
            (seeded by the example id, so still reproducible).

    Returns:
        The clip with K JPEG frames, their timestamps, one PNG per representation (and K
        more per representation with ``cfg.segment_audio``), the record's spans in
        microseconds and ``audio_missing``.

    Raises:
        MediaError: ``unknown_label`` for a record whose label is not in the class list, or
            whatever the decoder rejects the file for (``missing``, ``empty``, ``no_audio``
            under ``cfg.on_missing_audio: reject``...).
        ConfigError: ``mode`` is not one of the sampling modes.
    """
    if mode not in SAMPLING_MODES:
        raise ConfigError(f"mode: invalid value {mode!r}; allowed: {', '.join(SAMPLING_MODES)}")
    path = resolve_video_path(record.path, cfg.video_root)
    if record.label_index < 0:
        raise MediaError("unknown_label", f"{path}: label {record.label_string!r} is not in "
                                          "the dataset's class list")

    from maivar_tf.data.audio_image import encode_png, render_audio_images
    from maivar_tf.data.video import encode_jpeg, load_clip

    example_id = record_example_id(record)
    seed = _seed_from_id(example_id) if mode == "random" else None
    with local_media(path) as local:  # a remote video is decoded from a local copy
        decoded = load_clip(local, cfg, mode=mode, seed=seed,
                            start_s=record.start_s, end_s=record.end_s)
    video = decoded.video
    frames = np.asarray(video.frames)
    frames_jpeg = [encode_jpeg(frame, quality=cfg.jpeg_quality) for frame in frames]
    images = render_audio_images(decoded.waveform, cfg.representations, cfg.audio)
    audio_images_png = {rep: encode_png(np.asarray(images[rep])) for rep in cfg.representations}
    segment_pngs = (segment_audio_images(decoded, cfg) if cfg.segment_audio else {})
    waveform = (np.asarray(decoded.waveform, np.float32).ravel() if cfg.store_waveform
                else None)
    return ClipExample(
        example_id=example_id,
        data_path=record.path,
        label_index=int(record.label_index),
        label_string=record.label_string,
        split=record.split,
        frames_jpeg=frames_jpeg,
        frame_timestamps_us=[int(t) for t in np.asarray(video.timestamps_us)],
        height=int(frames.shape[1]),
        width=int(frames.shape[2]),
        frame_rate=float(video.frame_rate),
        sample_rate=int(decoded.sample_rate),
        audio_images_png=audio_images_png,
        start_us=int(round(record.start_s * 1e6)),
        end_us=int(round(record.end_s * 1e6)),
        waveform=waveform,
        spans=[(int(round(a * 1e6)), int(round(b * 1e6)), int(record.label_index))
               for a, b in record.spans],
        segment_audio_images_png=segment_pngs,
        audio_missing=bool(decoded.audio_missing),
    )


def segment_audio_images(decoded: DecodedClip, cfg: DataConfig) -> dict[str, list[bytes]]:
    """The K per-segment audio-images of a decoded clip, as PNGs per representation.

    Segment k's window is ``cfg.audio.segment_seconds`` long, centred on its frame's
    timestamp (relative to the waveform's first sample, ``decoded.audio_start_s``) and moved
    inside the clip (:func:`maivar_tf.data.segments.segment_windows`); the K windows are
    rendered as one ``[K, L]`` batch by
    :func:`maivar_tf.data.audio_image.render_audio_images`, the clip-level renderer.

    Returns:
        ``{representation: [K PNG bytes]}`` in segment order.
    """
    from maivar_tf.data.audio_image import encode_png, render_audio_images
    from maivar_tf.data.segments import cut_windows, segment_centres, segment_windows

    y = np.asarray(decoded.waveform, np.float32).ravel()
    centres = segment_centres(decoded.video.timestamps_us, decoded.audio_start_s)
    windows = segment_windows(centres, y.shape[0], decoded.sample_rate,
                              cfg.audio.segment_seconds)
    images = render_audio_images(cut_windows(y, windows), cfg.representations, cfg.audio)
    return {rep: [encode_png(img) for img in np.asarray(images[rep])]
            for rep in cfg.representations}
