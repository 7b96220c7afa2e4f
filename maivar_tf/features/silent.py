"""The silent audio-image and the audio backbone's features of it.

A clip without an audio track (``data.on_missing_audio: silence``) gets the audio-images of
silence, and modality dropout (Alfasly et al., CVPR 2022) substitutes the features of that
image for a clip's audio features. The renderer (:mod:`maivar_tf.data.audio_image`) gives the
same image for silence of any length (every column of a zero waveform is the same), so one
image per representation stands for the clip-level and every per-segment silent audio-image;
:func:`silent_audio_image` renders ``2 * n_fft`` zero samples. ``maivar extract`` records the
audio backbone's features of it per representation in ``feature_info.json``
(``AudioFeatures.silent``), and :func:`~maivar_tf.features.load_features` returns them as
``FeatureSet.silent_audio``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from maivar_tf.artifacts import DatasetInfo, FeatureInfo
from maivar_tf.config import AudioImageConfig, ConfigError
from maivar_tf.features.info import record_silent
from maivar_tf.features.shards import FeatureError

if TYPE_CHECKING:
    from maivar_tf.models.backbones import BackboneFeatures

logger = logging.getLogger(__name__)


def silent_audio_images(representations: Sequence[str], cfg: AudioImageConfig
                        ) -> dict[str, np.ndarray]:
    """``{rep: uint8 [S, S, 3]}``: the audio-images of silence (a zero waveform of
    ``2 * cfg.n_fft`` samples; any length gives the same images)."""
    from maivar_tf.data.audio_image import render_audio_images

    return render_audio_images(np.zeros(2 * cfg.n_fft, np.float32), tuple(representations), cfg)


def silent_vector(values, dim: int, what: str) -> np.ndarray:
    """Silent audio features as a float32 ``[dim]`` vector, checked against the audio
    backbone's feature width (``what`` names the holder in the message).

    Raises:
        ValueError: the values do not make ``dim`` features.
    """
    vector = np.asarray(values, np.float32).reshape(-1)
    if vector.shape != (int(dim),):
        raise ValueError(f"{what}: silent audio features of shape {vector.shape}; expected "
                         f"({int(dim)},), the audio backbone's feature width")
    return vector


def silent_audio_image(representation: str, cfg: AudioImageConfig) -> np.ndarray:
    """The silent audio-image of one representation, uint8 ``[S, S, 3]``."""
    return silent_audio_images((representation,), cfg)[representation]


def tfrecords_audio_config(dataset_info: DatasetInfo, fallback: AudioImageConfig
                           ) -> AudioImageConfig:
    """The ``audio`` settings the TFRecords were rendered with (their ``dataset_info.json``),
    else ``fallback`` (an older or unreadable record)."""
    stored = dataset_info.data_config.get("audio")
    if not isinstance(stored, dict):
        return fallback
    names = {f.name for f in dataclasses.fields(AudioImageConfig)}
    try:
        return AudioImageConfig(**{k: v for k, v in stored.items() if k in names})
    except (ConfigError, TypeError, ValueError) as e:
        logger.warning("dataset_info.json audio settings unreadable (%s); using the config's", e)
        return fallback


def silent_features(audio: BackboneFeatures, representations: Sequence[str],
                    cfg: AudioImageConfig) -> dict[str, np.ndarray]:
    """``{rep: float32 [Da]}``: the audio backbone on each representation's silent image.

    Raises:
        ValueError: the backbone takes another image size than ``cfg.image_size``.
    """
    import tensorflow as tf

    reps = tuple(representations)
    if not reps:
        return {}
    images = silent_audio_images(reps, cfg)
    feats = audio(tf.constant(np.stack([images[r] for r in reps])), max_images=len(reps))
    return {r: row for r, row in zip(reps, np.asarray(feats, np.float32), strict=True)}


def record_silent_features(info: FeatureInfo, out_dir: Path, name: str,
                           audio: BackboneFeatures, representations: Sequence[str],
                           cfg: AudioImageConfig) -> FeatureInfo:
    """``info`` with audio backbone ``name``'s silent features of the representations it lacks
    (computed, recorded and written to ``out_dir``; unchanged when it has them all).

    Raises:
        FeatureError: the backbone takes another image size, or gives non-finite features.
    """
    todo = [r for r in representations if r not in info.audio_backbones[name].silent]
    if not todo:
        return info
    try:
        silent = silent_features(audio, todo, cfg)
    except ValueError as e:  # an image size the backbone does not take
        raise FeatureError(f"silent audio-image ({name}): {e}") from e
    for rep, feats in silent.items():
        if not np.isfinite(feats).all():
            raise FeatureError(f"non-finite features (NaN or Inf) of the silent {rep} "
                               f"audio-image ({name}); check the audio backbone weights")
    info = record_silent(info, name, silent)
    info.write(out_dir)
    return info
