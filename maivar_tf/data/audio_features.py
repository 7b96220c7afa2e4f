"""Audio feature matrices in TensorFlow, equal to librosa's: the inputs of the audio-images.

MAiVAR (Shaikh et al. 2024, Sec. 3.2) renders MFCCs, feature-scaled MFCCs, the spectral
centroid, the spectral rolloff, a chromagram and the waveform envelope as images.
:class:`AudioFeatures` computes those matrices with ``tf.signal`` and plain tensor ops, with
librosa's filterbanks baked in as constants, so the Beam job, ``maivar predict`` and the
SavedModel's ``serve_waveform`` signature share one implementation
(:mod:`maivar_tf.data.audio_image` turns them into images).

The matrices follow librosa's conventions exactly (tests compare against librosa on real
clips): centred frames with reflect padding (``pad_mode="reflect"``, the librosa default when
the paper was written), a periodic Hann window, ``n_fft``/``hop_length`` from
:class:`~maivar_tf.config.AudioImageConfig`, the Slaney mel filterbank of
``librosa.filters.mel``, ``librosa.filters.chroma(tuning=0.0)``, ``power_to_db`` with
``ref=1.0, amin=1e-10, top_db`` exactly as ``librosa.feature.mfcc`` calls it, and an
orthonormal DCT-II. Silent or very short input gives finite values, never NaN.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from maivar_tf.config import REPRESENTATIONS, AudioImageConfig

__all__ = ["MATRIX_NAMES", "AudioFeatures", "representation_error"]

#: librosa's ``power_to_db`` floor as used by ``librosa.feature.mfcc``.
_AMIN = 1e-10
#: librosa's ``util.normalize`` threshold for float32 (``tiny``).
_TINY = float(np.finfo(np.float32).tiny)


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


class AudioFeatures:
    """Lazily computed, shared feature tensors of one batch of mono waveforms [B, N].

    Several representations share the STFT; computing them from one ``AudioFeatures`` (as
    :func:`maivar_tf.data.audio_image.render_audio_images_tf` does) runs it once. Every
    method is a TensorFlow computation, so it works eagerly and inside ``tf.function``.

    Args:
        waveform: float samples [B, N] at ``cfg.sample_rate`` (non-finite samples become 0).
        cfg: STFT, filterbank and image settings.
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
            # An exactly constant row (silence) is exactly zero once centred, as in sklearn;
            # float32's mean would leave a residue of either sign that depends on the length.
            constant = tf.equal(tf.reduce_max(m, axis=2, keepdims=True),
                                tf.reduce_min(m, axis=2, keepdims=True))
            centred = tf.where(constant, tf.zeros_like(m), m - mean)
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
            # sorted segment ops (faster than unsorted ones); empty columns give 0
            lo = tf.reshape(tf.math.segment_min(flat, ids), [-1, width])
            hi = tf.reshape(tf.math.segment_max(flat, ids), [-1, width])
            return tf.stack([lo, hi], axis=1)
        return self._get("envelope", compute)

    def matrix(self, representation: str) -> tf.Tensor:
        """The matrix an audio-image encodes (see ``audio_image.audio_image_matrix``)."""
        if representation == "waveplot":
            return self.envelope()
        if representation not in MATRIX_NAMES:
            raise representation_error(representation)
        return getattr(self, representation)()


#: The representations whose matrix is a spectral feature (``waveplot``'s is the envelope).
MATRIX_NAMES = ("mfcc", "mfcc_scaled", "spectral_centroid", "spectral_rolloff", "chromagram")


def representation_error(representation: str) -> ValueError:
    """The error for a name outside :data:`~maivar_tf.config.REPRESENTATIONS`."""
    return ValueError(f"unknown audio-image representation {representation!r}; "
                      f"allowed: {', '.join(REPRESENTATIONS)}")
