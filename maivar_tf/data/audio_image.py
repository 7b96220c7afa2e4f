"""The paper's six audio-image representations, rendered with TensorFlow ops; one registry.

MAiVAR (Shaikh et al. 2024, Sec. 3.2) turns each clip's sound into an image for an
ImageNet CNN: a waveplot, MFCCs, feature-scaled MFCCs, the spectral centroid, the spectral
rolloff and a chromagram. :data:`RENDERERS` maps each name to a renderer from shared
:class:`~maivar_tf.data.audio_features.AudioFeatures` (librosa-equal matrices) to values in
[0, 1]; one implementation renders

* eagerly from NumPy (the Beam job, ``maivar predict``) through :func:`render_audio_images`,
  which caches one ``tf.function`` per (representations, config, rank), and
* inside a graph (the SavedModel's ``serve_waveform`` signature) through
  :func:`render_audio_image` with a waveform of shape ``[None]`` or ``[B, None]``.

How each matrix becomes an image (all deterministic, all uint8 ``[H, W, 3]``):

* ``mfcc`` [n_mfcc, T], ``mfcc_scaled`` [n_mfcc, T] (each coefficient scaled to zero mean and
  unit variance over time, as ``sklearn.preprocessing.scale(mfcc, axis=1)`` in the paper) and
  ``chromagram`` [n_chroma, T]: per-clip min-max normalisation, flipped so the lowest row is at
  the bottom (like ``librosa.display.specshow``), bilinear resize to ``image_size`` squared.
* ``waveplot``: the matrix is the amplitude envelope [2, W] (per image column the min and max
  sample, divided by the clip's peak); the image fills between them like
  ``librosa.display.waveshow``.
* ``spectral_centroid`` / ``spectral_rolloff``: the matrix is librosa's per-frame curve
  [1, T] in Hz. The image follows the tutorial recipe the paper's figures come from: the
  waveform envelope drawn faintly (intensity 0.4) with the curve, min-max normalised over
  time, drawn over it as a 3-pixel line (intensity 1.0) spanning the full height.

The value in [0, 1] then indexes a 256-entry lookup table sampled once from the matplotlib
colormap ``cfg.colormap``. Silent or very short input gives a finite (possibly constant) image,
never NaN.
"""

from __future__ import annotations

import functools
import io
import threading
from collections.abc import Callable, Iterable

import numpy as np
import tensorflow as tf

from maivar_tf.config import REPRESENTATIONS, AudioImageConfig
from maivar_tf.data.audio_features import AudioFeatures, representation_error

__all__ = [
    "REPRESENTATIONS",
    "RENDERERS",
    "audio_image_matrix",
    "render_audio_image",
    "render_audio_images",
    "render_audio_images_tf",
    "encode_png",
    "warm_up",
    "colormap_lut",
]

#: intensity of the faint waveform under the centroid / rolloff curves.
_WAVE_UNDER_CURVE = 0.4


@functools.lru_cache(maxsize=16)
def colormap_lut(name: str) -> np.ndarray:
    """A matplotlib colormap sampled once into a uint8 [256, 3] lookup table.

    Args:
        name: a matplotlib colormap name (``viridis``, ``magma``, ...).

    Returns:
        uint8 RGB rows for the values ``0/255 .. 255/255``.
    """
    import matplotlib

    cmap = matplotlib.colormaps[name]
    rgba = cmap(np.linspace(0.0, 1.0, 256))
    return np.round(rgba[:, :3] * 255.0).astype(np.uint8)


# ----------------------------------------------------------------------------- rasterising


def _row_heights(size: int) -> tf.Tensor:
    """Height in [0, 1] of each image row's centre, top row first; shape [1, size, 1]."""
    rows = 1.0 - (np.arange(size, dtype=np.float32) + 0.5) / np.float32(size)
    return tf.constant(rows[None, :, None])


def _fill_between(lo: tf.Tensor, hi: tf.Tensor, size: int) -> tf.Tensor:
    """1.0 where a row's height lies in [lo, hi] of its column; lo/hi [B, W] in [0, 1]."""
    h = _row_heights(size)
    inside = tf.logical_and(h >= lo[:, None, :], h <= hi[:, None, :])
    return tf.cast(inside, tf.float32)


def _envelope_mask(env: tf.Tensor, size: int) -> tf.Tensor:
    """Envelope [B, 2, W] in [-1, 1] -> filled waveform mask [B, size, W]."""
    lo = 0.5 + 0.5 * env[:, 0, :]
    hi = 0.5 + 0.5 * env[:, 1, :]
    return _fill_between(lo, hi, size)


def _curve_columns(curve: tf.Tensor, num_samples: tf.Tensor, cfg: AudioImageConfig) -> tf.Tensor:
    """Per-frame curve [B, T] -> per-column values [B, W] at the columns' centre times."""
    width = cfg.image_size
    t = tf.shape(curve)[1]
    n = tf.cast(num_samples, tf.float32)
    centres = (tf.range(width, dtype=tf.float32) + 0.5) * n / float(width)
    pos = tf.clip_by_value(centres / float(cfg.hop_length), 0.0, tf.cast(t - 1, tf.float32))
    left = tf.cast(tf.floor(pos), tf.int32)
    right = tf.minimum(left + 1, t - 1)
    frac = pos - tf.cast(left, tf.float32)
    a = tf.gather(curve, left, axis=1)
    b = tf.gather(curve, right, axis=1)
    return a + (b - a) * frac[None, :]


def _minmax(x: tf.Tensor, axes: list[int]) -> tf.Tensor:
    lo = tf.reduce_min(x, axis=axes, keepdims=True)
    hi = tf.reduce_max(x, axis=axes, keepdims=True)
    return tf.math.divide_no_nan(x - lo, hi - lo)


def _curve_plot(feats: AudioFeatures, curve: tf.Tensor) -> tf.Tensor:
    """Curve [B, 1, T] drawn as a line over the faint waveform; returns [B, S, S] in [0, 1]."""
    size = feats.cfg.image_size
    values = _curve_columns(_minmax(curve[:, 0, :], [1]), tf.shape(feats.y)[1], feats.cfg)
    prev = tf.concat([values[:, :1], values[:, :-1]], axis=1)
    nxt = tf.concat([values[:, 1:], values[:, -1:]], axis=1)
    mid_prev, mid_next = 0.5 * (values + prev), 0.5 * (values + nxt)
    lo = tf.minimum(values, tf.minimum(mid_prev, mid_next))
    hi = tf.maximum(values, tf.maximum(mid_prev, mid_next))
    half = 1.0 / size  # +-1 pixel: a 3-pixel line
    line = _fill_between(lo - half, hi + half, size)
    wave = _envelope_mask(feats.envelope(), size)
    return tf.maximum(line, _WAVE_UNDER_CURVE * wave)


def _matrix_image(matrix: tf.Tensor, size: int) -> tf.Tensor:
    """Feature matrix [B, F, T] -> min-max normalised, low rows at the bottom, [B, S, S]."""
    x = _minmax(matrix, [1, 2])
    x = tf.reverse(x, axis=[1])
    x = tf.image.resize(x[..., None], [size, size], method="bilinear")
    return tf.clip_by_value(x[..., 0], 0.0, 1.0)


def _colorize(values: tf.Tensor, colormap: str) -> tf.Tensor:
    """Values [B, H, W] in [0, 1] -> uint8 [B, H, W, 3] through the colormap's LUT."""
    lut = tf.constant(colormap_lut(colormap))
    index = tf.cast(tf.round(tf.clip_by_value(values, 0.0, 1.0) * 255.0), tf.int32)
    return tf.gather(lut, index)


def render_waveplot(feats: AudioFeatures) -> tf.Tensor:
    """The amplitude envelope filled between per-column min and max, [B, S, S] in [0, 1]."""
    return _envelope_mask(feats.envelope(), feats.cfg.image_size)


def render_mfcc(feats: AudioFeatures) -> tf.Tensor:
    """MFCCs [n_mfcc, T] as an image, [B, S, S] in [0, 1]."""
    return _matrix_image(feats.mfcc(), feats.cfg.image_size)


def render_mfcc_scaled(feats: AudioFeatures) -> tf.Tensor:
    """Per-coefficient standardised MFCCs as an image, [B, S, S] in [0, 1]."""
    return _matrix_image(feats.mfcc_scaled(), feats.cfg.image_size)


def render_chromagram(feats: AudioFeatures) -> tf.Tensor:
    """The chromagram [n_chroma, T] as an image, [B, S, S] in [0, 1]."""
    return _matrix_image(feats.chromagram(), feats.cfg.image_size)


def render_spectral_centroid(feats: AudioFeatures) -> tf.Tensor:
    """The spectral centroid curve over the faint waveform, [B, S, S] in [0, 1]."""
    return _curve_plot(feats, feats.spectral_centroid())


def render_spectral_rolloff(feats: AudioFeatures) -> tf.Tensor:
    """The spectral rolloff curve over the faint waveform, [B, S, S] in [0, 1]."""
    return _curve_plot(feats, feats.spectral_rolloff())


#: representation name -> renderer from shared features to values [B, S, S] in [0, 1].
RENDERERS: dict[str, Callable[[AudioFeatures], tf.Tensor]] = {
    "waveplot": render_waveplot,
    "mfcc": render_mfcc,
    "mfcc_scaled": render_mfcc_scaled,
    "spectral_centroid": render_spectral_centroid,
    "spectral_rolloff": render_spectral_rolloff,
    "chromagram": render_chromagram,
}
assert tuple(RENDERERS) == REPRESENTATIONS


# ----------------------------------------------------------------------------- public API


def _as_batch(waveform) -> tuple[tf.Tensor, bool]:
    y = tf.convert_to_tensor(waveform, dtype=tf.float32)
    rank = y.shape.rank
    if rank == 1:
        return y[None, :], True
    if rank == 2:
        return y, False
    raise ValueError(f"waveform must have shape [N] or [B, N] (rank 1 or 2); got shape {y.shape}")


def _check_representation(representation: str) -> None:
    if representation not in RENDERERS:
        raise representation_error(representation)


def audio_image_matrix(waveform, representation: str, cfg: AudioImageConfig) -> tf.Tensor:
    """The float32 feature matrix an audio-image encodes.

    Args:
        waveform: mono float samples at ``cfg.sample_rate``, shape [N] or [B, N].
        representation: one of :data:`REPRESENTATIONS`.
        cfg: STFT, filterbank and image settings.

    Returns:
        ``mfcc`` / ``mfcc_scaled`` [n_mfcc, T], ``chromagram`` [n_chroma, T],
        ``spectral_centroid`` / ``spectral_rolloff`` [1, T] in Hz (librosa's values, with
        ``T = 1 + N // hop_length``) and ``waveplot`` [2, image_size] (per-column min and max
        of the peak-normalised waveform); a leading batch axis when ``waveform`` is [B, N].

    Raises:
        ValueError: an unknown representation or a waveform of rank other than 1 or 2.
    """
    _check_representation(representation)
    y, single = _as_batch(waveform)
    m = AudioFeatures(y, cfg).matrix(representation)
    return m[0] if single else m


def render_audio_images_tf(waveform, representations: Iterable[str],
                           cfg: AudioImageConfig) -> dict[str, tf.Tensor]:
    """Renders several representations, computing the shared STFT once (graph-safe).

    Args:
        waveform: mono float samples, shape [N] or [B, N] (static rank, any length).
        representations: names from :data:`REPRESENTATIONS`.
        cfg: STFT, filterbank and image settings.

    Returns:
        ``{name: uint8 [S, S, 3]}`` (or ``[B, S, S, 3]``) with ``S = cfg.image_size``.
    """
    reps = tuple(representations)
    for r in reps:
        _check_representation(r)
    y, single = _as_batch(waveform)
    feats = AudioFeatures(y, cfg)
    out = {}
    for r in reps:
        image = _colorize(RENDERERS[r](feats), cfg.colormap)
        out[r] = image[0] if single else image
    return out


def render_audio_image(waveform, representation: str, cfg: AudioImageConfig) -> tf.Tensor:
    """Renders one audio-image with TensorFlow ops (usable inside ``tf.function``).

    Args:
        waveform: mono float samples at ``cfg.sample_rate``, shape [N] or [B, N]; the length
            may be unknown (``[None]`` / ``[B, None]`` inside a graph).
        representation: one of :data:`REPRESENTATIONS`.
        cfg: STFT, filterbank and image settings.

    Returns:
        uint8 [S, S, 3] (or [B, S, S, 3]) RGB with ``S = cfg.image_size``.

    Raises:
        ValueError: an unknown representation or a waveform of rank other than 1 or 2.
    """
    return render_audio_images_tf(waveform, (representation,), cfg)[representation]


_FUNCTIONS: dict[tuple, Callable] = {}
_FUNCTIONS_LOCK = threading.Lock()


def _cached_function(reps: tuple[str, ...], cfg: AudioImageConfig, rank: int) -> Callable:
    key = (reps, cfg, rank)
    with _FUNCTIONS_LOCK:
        fn = _FUNCTIONS.get(key)
        if fn is None:
            spec = tf.TensorSpec([None] * rank, tf.float32, name="waveform")

            @tf.function(input_signature=[spec], autograph=False)
            def fn(waveform):
                return render_audio_images_tf(waveform, reps, cfg)

            _FUNCTIONS[key] = fn
    return fn


def render_audio_images(waveform: np.ndarray, representations: Iterable[str] | str,
                        cfg: AudioImageConfig) -> dict[str, np.ndarray]:
    """Eager convenience: NumPy waveform in, NumPy uint8 images out.

    One ``tf.function`` is traced per (representations, config, waveform rank) and reused,
    so repeated calls cost only the computation; the STFT is shared between representations.

    Args:
        waveform: float samples, shape [N] or [B, N].
        representations: one name or several from :data:`REPRESENTATIONS`.
        cfg: STFT, filterbank and image settings.

    Returns:
        ``{name: uint8 [S, S, 3]}`` (or ``[B, S, S, 3]`` for a batch).
    """
    reps = (representations,) if isinstance(representations, str) else tuple(representations)
    for r in reps:
        _check_representation(r)
    y = np.asarray(waveform, dtype=np.float32)
    if y.ndim not in (1, 2):
        raise ValueError(f"waveform must have shape [N] or [B, N]; got shape {y.shape}")
    out = _cached_function(reps, cfg, y.ndim)(tf.constant(y))
    return {r: out[r].numpy() for r in reps}


def warm_up(cfg: AudioImageConfig, representations: Iterable[str] = REPRESENTATIONS) -> None:
    """Builds the filterbanks and traces the cached functions (call in ``DoFn.setup``).

    Args:
        cfg: the settings that will be rendered with.
        representations: the names that will be rendered together.
    """
    reps = tuple(representations)
    silent = np.zeros(cfg.n_fft * 2, dtype=np.float32)
    render_audio_images(silent, reps, cfg)
    for r in reps:
        render_audio_images(silent, (r,), cfg)


def encode_png(image: np.ndarray) -> bytes:
    """Encodes a uint8 [H, W, 3] (or [H, W]) image as PNG bytes.

    Args:
        image: the image to encode.

    Returns:
        The PNG file contents.
    """
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise ValueError(f"encode_png expects a uint8 [H, W, 3] or [H, W] array; "
                         f"got {arr.dtype} {arr.shape}")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
