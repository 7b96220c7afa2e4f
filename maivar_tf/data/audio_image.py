"""The paper's six audio-image representations, rendered with TensorFlow ops.

MAiVAR (Shaikh et al. 2024, Sec. 3.2) turns each clip's sound into an image for an
ImageNet CNN: a waveplot, MFCCs, feature-scaled MFCCs, the spectral centroid, the spectral
rolloff and a chromagram. Every renderer here is written with ``tf.signal`` and plain tensor
ops, with librosa's filterbanks baked in as constants, so one implementation renders

* eagerly from NumPy (the Beam job, ``maivar predict``) through :func:`render_audio_images`,
  which caches one ``tf.function`` per (representations, config, rank), and
* inside a graph (the SavedModel's ``serve_waveform`` signature) through
  :func:`render_audio_image` with a waveform of shape ``[None]`` or ``[B, None]``.

Feature matrices follow librosa's conventions exactly (tests compare against librosa on real
clips): centred frames with reflect padding (``pad_mode="reflect"``, the librosa default when
the paper was written), a periodic Hann window, ``n_fft``/``hop_length`` from
:class:`~maivar_tf.config.AudioImageConfig`, the Slaney mel filterbank of
``librosa.filters.mel``, ``librosa.filters.chroma(tuning=0.0)``, ``power_to_db`` with
``ref=1.0, amin=1e-10, top_db`` exactly as ``librosa.feature.mfcc`` calls it, and an
orthonormal DCT-II.

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

#: librosa's ``power_to_db`` floor as used by ``librosa.feature.mfcc``.
_AMIN = 1e-10
#: librosa's ``util.normalize`` threshold for float32 (``tiny``).
_TINY = float(np.finfo(np.float32).tiny)
#: intensity of the faint waveform under the centroid / rolloff curves.
_WAVE_UNDER_CURVE = 0.4


# ----------------------------------------------------------------------------- constants


@functools.lru_cache(maxsize=16)
def _mel_matrix(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """``librosa.filters.mel`` transposed to [1 + n_fft // 2, n_mels] (float32)."""
    import librosa

    mel = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)
    return np.ascontiguousarray(mel.T, dtype=np.float32)


@functools.lru_cache(maxsize=16)
def _chroma_matrix(sample_rate: int, n_fft: int, n_chroma: int) -> np.ndarray:
    """``librosa.filters.chroma(tuning=0.0)`` transposed to [1 + n_fft // 2, n_chroma]."""
    import librosa

    chroma = librosa.filters.chroma(sr=sample_rate, n_fft=n_fft, n_chroma=n_chroma, tuning=0.0)
    return np.ascontiguousarray(chroma.T, dtype=np.float32)


@functools.lru_cache(maxsize=16)
def _dct_matrix(n_mels: int, n_mfcc: int) -> np.ndarray:
    """Orthonormal DCT-II as a [n_mels, n_mfcc] matrix (``scipy.fft.dct(..., norm="ortho")``)."""
    import scipy.fft

    basis = scipy.fft.dct(np.eye(n_mels, dtype=np.float64), type=2, norm="ortho", axis=0)
    return np.ascontiguousarray(basis[:n_mfcc].T, dtype=np.float32)


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


# ----------------------------------------------------------------------------- features


class _Features:
    """Lazily computed, shared intermediate tensors for one batch of waveforms [B, N].

    Several representations share the STFT; computing them from one ``_Features`` (as
    :func:`render_audio_images_tf` does) runs it once.
    """

    def __init__(self, waveform: tf.Tensor, cfg: AudioImageConfig):
        y = tf.convert_to_tensor(waveform, dtype=tf.float32)
        y = tf.where(tf.math.is_finite(y), y, tf.zeros_like(y))
        self.y = y
        self.cfg = cfg
        self._cache: dict[str, tf.Tensor] = {}

    def _get(self, key: str, fn: Callable[[], tf.Tensor]) -> tf.Tensor:
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    # -- spectra, layout [B, T, F]
    def stft(self) -> tf.Tensor:
        def compute():
            n_fft, hop = self.cfg.n_fft, self.cfg.hop_length
            pad = n_fft // 2
            y = self.y
            # Reflect padding needs more than `pad` samples: zero-extend very short input.
            short = tf.maximum(pad + 1 - tf.shape(y)[-1], 0)
            y = tf.pad(y, [[0, 0], [0, short]])
            y = tf.pad(y, [[0, 0], [pad, pad]], mode="REFLECT")
            return tf.signal.stft(
                y, frame_length=n_fft, frame_step=hop, fft_length=n_fft,
                window_fn=functools.partial(tf.signal.hann_window, periodic=True),
                pad_end=False,
            )
        return self._get("stft", compute)

    def magnitude(self) -> tf.Tensor:
        return self._get("magnitude", lambda: tf.abs(self.stft()))

    def power(self) -> tf.Tensor:
        # |X| ** 2, as librosa computes its power spectrogram
        return self._get("power", lambda: tf.square(self.magnitude()))

    # -- librosa-compatible feature matrices, layout [B, F, T]
    def mfcc(self) -> tf.Tensor:
        def compute():
            cfg = self.cfg
            mel = tf.constant(_mel_matrix(cfg.sample_rate, cfg.n_fft, cfg.n_mels))
            melspec = tf.linalg.matmul(self.power(), mel)
            log_spec = (10.0 / np.log(10.0)) * tf.math.log(tf.maximum(melspec, _AMIN))
            peak = tf.reduce_max(log_spec, axis=[1, 2], keepdims=True)
            log_spec = tf.maximum(log_spec, peak - cfg.top_db)
            dct = tf.constant(_dct_matrix(cfg.n_mels, cfg.n_mfcc))
            return tf.transpose(tf.linalg.matmul(log_spec, dct), [0, 2, 1])
        return self._get("mfcc", compute)

    def mfcc_scaled(self) -> tf.Tensor:
        def compute():
            m = self.mfcc()
            mean = tf.reduce_mean(m, axis=2, keepdims=True)
            centred = m - mean
            std = tf.sqrt(tf.reduce_mean(centred * centred, axis=2, keepdims=True))
            # sklearn.preprocessing.scale leaves (near-)constant rows unscaled.
            std = tf.where(std < 10.0 * np.finfo(np.float32).eps, tf.ones_like(std), std)
            return centred / std
        return self._get("mfcc_scaled", compute)

    def chromagram(self) -> tf.Tensor:
        def compute():
            cfg = self.cfg
            fb = tf.constant(_chroma_matrix(cfg.sample_rate, cfg.n_fft, cfg.n_chroma))
            raw = tf.linalg.matmul(self.power(), fb)
            peak = tf.reduce_max(tf.abs(raw), axis=2, keepdims=True)
            peak = tf.where(peak < _TINY, tf.ones_like(peak), peak)
            return tf.transpose(raw / peak, [0, 2, 1])
        return self._get("chromagram", compute)

    def _bin_hz(self) -> float:
        return float(self.cfg.sample_rate) / float(self.cfg.n_fft)

    def spectral_centroid(self) -> tf.Tensor:
        def compute():
            mag = self.magnitude()
            n_bins = self.cfg.n_fft // 2 + 1
            freqs = np.arange(n_bins, dtype=np.float32) * np.float32(self._bin_hz())
            # sum(f * S / sum(S)) as one matrix product: [B, T, F] @ [F, 2] -> (sum fS, sum S)
            weights = tf.constant(np.stack([freqs, np.ones_like(freqs)], axis=1))
            sums = tf.linalg.matmul(mag, weights)
            total = sums[:, :, 1]
            total = tf.where(total < _TINY, tf.ones_like(total), total)
            return (sums[:, :, 0] / total)[:, None, :]
        return self._get("spectral_centroid", compute)

    def spectral_rolloff(self) -> tf.Tensor:
        def compute():
            energy = tf.math.cumsum(self.magnitude(), axis=2)
            threshold = self.cfg.rolloff_percent * energy[:, :, -1:]
            # first bin whose cumulative energy reaches the threshold (cumsum is monotone)
            index = tf.reduce_sum(tf.cast(energy < threshold, tf.float32), axis=2)
            return (index * self._bin_hz())[:, None, :]
        return self._get("spectral_rolloff", compute)

    # -- waveform envelope, [B, 2, W]: per image column (min, max) / clip peak
    def envelope(self) -> tf.Tensor:
        def compute():
            width = self.cfg.image_size
            y = self.y
            peak = tf.reduce_max(tf.abs(y), axis=1, keepdims=True)
            y = tf.math.divide_no_nan(y, tf.where(peak < 1e-8, tf.zeros_like(peak), peak))
            y = tf.pad(y, [[0, 0], [0, tf.maximum(1 - tf.shape(y)[1], 0)]])  # >= 1 sample
            batch = tf.shape(y, out_type=tf.int64)[0]
            n = tf.shape(y, out_type=tf.int64)[1]
            # sample i -> column i * W // n; one extra copy of the last sample in column W - 1
            # keeps every row's segment ids ending at W - 1 (inputs shorter than W columns)
            column = tf.concat([(tf.range(n, dtype=tf.int64) * width) // n,
                                tf.constant([width - 1], tf.int64)], axis=0)
            y = tf.concat([y, y[:, -1:]], axis=1)
            ids = tf.reshape(tf.range(batch, dtype=tf.int64)[:, None] * width + column, [-1])
            flat = tf.reshape(y, [-1])
            # sorted segment ops are ~3x faster than unsorted ones; empty columns give 0
            lo = tf.reshape(tf.math.segment_min(flat, ids), [-1, width])
            hi = tf.reshape(tf.math.segment_max(flat, ids), [-1, width])
            return tf.stack([lo, hi], axis=1)
        return self._get("envelope", compute)

    def matrix(self, representation: str) -> tf.Tensor:
        if representation == "waveplot":
            return self.envelope()
        if representation not in _MATRIX_NAMES:
            raise ValueError(_unknown(representation))
        return getattr(self, representation)()


_MATRIX_NAMES = ("mfcc", "mfcc_scaled", "spectral_centroid", "spectral_rolloff", "chromagram")


def _unknown(representation: str) -> str:
    return (f"unknown audio-image representation {representation!r}; "
            f"allowed: {', '.join(REPRESENTATIONS)}")


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


def _curve_plot(feats: _Features, curve: tf.Tensor) -> tf.Tensor:
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


def render_waveplot(feats: _Features) -> tf.Tensor:
    """The amplitude envelope filled between per-column min and max, [B, S, S] in [0, 1]."""
    return _envelope_mask(feats.envelope(), feats.cfg.image_size)


def render_mfcc(feats: _Features) -> tf.Tensor:
    """MFCCs [n_mfcc, T] as an image, [B, S, S] in [0, 1]."""
    return _matrix_image(feats.mfcc(), feats.cfg.image_size)


def render_mfcc_scaled(feats: _Features) -> tf.Tensor:
    """Per-coefficient standardised MFCCs as an image, [B, S, S] in [0, 1]."""
    return _matrix_image(feats.mfcc_scaled(), feats.cfg.image_size)


def render_chromagram(feats: _Features) -> tf.Tensor:
    """The chromagram [n_chroma, T] as an image, [B, S, S] in [0, 1]."""
    return _matrix_image(feats.chromagram(), feats.cfg.image_size)


def render_spectral_centroid(feats: _Features) -> tf.Tensor:
    """The spectral centroid curve over the faint waveform, [B, S, S] in [0, 1]."""
    return _curve_plot(feats, feats.spectral_centroid())


def render_spectral_rolloff(feats: _Features) -> tf.Tensor:
    """The spectral rolloff curve over the faint waveform, [B, S, S] in [0, 1]."""
    return _curve_plot(feats, feats.spectral_rolloff())


#: representation name -> renderer from shared features to values [B, S, S] in [0, 1].
RENDERERS: dict[str, Callable[[_Features], tf.Tensor]] = {
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
        raise ValueError(_unknown(representation))


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
    m = _Features(y, cfg).matrix(representation)
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
    feats = _Features(y, cfg)
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
