"""Tests for maivar_tf.data.audio_image: librosa parity on real clips, image properties.

Tolerances (matrices vs librosa 0.11 with ``pad_mode="reflect"`` and ``tuning=0.0``):

* ``mfcc``: max |TF - librosa| / max |librosa| <= 1e-4 (observed ~1e-6);
* ``mfcc_scaled`` vs ``sklearn.preprocessing.scale(mfcc, axis=1)``: max abs diff <= 1e-4
  (values are O(1); observed ~2e-5);
* ``chromagram`` (values in [0, 1]): max abs diff <= 1e-4 (observed ~3e-6);
* ``spectral_centroid``: relative max diff <= 1e-4 (observed ~2e-7);
* ``spectral_rolloff``: at most 1% of frames differ, and only by one FFT bin (float32
  cumulative sums may tie differently); observed: identical.
"""

from __future__ import annotations

import io

import librosa
import numpy as np
import pytest
import sklearn.preprocessing
import tensorflow as tf

from maivar_tf.config import REPRESENTATIONS, AudioImageConfig
from maivar_tf.data.audio import decode_audio
from maivar_tf.data.audio_image import (
    audio_image_matrix,
    colormap_lut,
    encode_png,
    render_audio_image,
    render_audio_images,
    render_audio_images_tf,
    warm_up,
)

CFG = AudioImageConfig()
SR = CFG.sample_rate


@pytest.fixture(scope="module")
def waveforms(clip_paths) -> dict[str, np.ndarray]:
    """Every real clip's first 10 s, mono at 22050 Hz."""
    return {p.name: decode_audio(p, SR, max_seconds=10.0) for p in clip_paths}


def _librosa_features(y: np.ndarray) -> dict[str, np.ndarray]:
    kw = dict(sr=SR, n_fft=CFG.n_fft, hop_length=CFG.hop_length, pad_mode="reflect")
    mfcc = librosa.feature.mfcc(y=y, n_mfcc=CFG.n_mfcc, n_mels=CFG.n_mels, **kw)
    return {
        "mfcc": mfcc,
        "mfcc_scaled": sklearn.preprocessing.scale(mfcc.astype(np.float64), axis=1),
        "chromagram": librosa.feature.chroma_stft(y=y, n_chroma=CFG.n_chroma, tuning=0.0, **kw),
        "spectral_centroid": librosa.feature.spectral_centroid(y=y, **kw),
        "spectral_rolloff": librosa.feature.spectral_rolloff(
            y=y, roll_percent=CFG.rolloff_percent, **kw),
    }


def test_matrices_equal_librosa_on_real_clips(waveforms):
    bin_hz = SR / CFG.n_fft
    for name, y in waveforms.items():
        ref = _librosa_features(y)
        for rep, expect in ref.items():
            got = audio_image_matrix(y, rep, CFG).numpy()
            assert got.shape == expect.shape, (name, rep, got.shape, expect.shape)
            diff = np.abs(got - expect)
            if rep in ("mfcc", "spectral_centroid"):
                assert diff.max() / np.abs(expect).max() <= 1e-4, (name, rep, diff.max())
            elif rep in ("mfcc_scaled", "chromagram"):
                assert diff.max() <= 1e-4, (name, rep, diff.max())
            else:  # rolloff
                assert diff.max() <= bin_hz + 1e-3, (name, rep, diff.max())
                assert (diff > 1e-3).mean() <= 0.01, (name, rep)


def test_matrix_shapes():
    y = np.random.default_rng(0).standard_normal(SR).astype(np.float32)
    t = 1 + SR // CFG.hop_length
    shapes = {"mfcc": (20, t), "mfcc_scaled": (20, t), "chromagram": (12, t),
              "spectral_centroid": (1, t), "spectral_rolloff": (1, t), "waveplot": (2, 299)}
    for rep, shape in shapes.items():
        assert tuple(audio_image_matrix(y, rep, CFG).shape) == shape, rep
        batched = audio_image_matrix(np.stack([y, y]), rep, CFG)
        assert tuple(batched.shape) == (2, *shape), rep


def test_waveplot_envelope_follows_the_amplitude():
    t = np.arange(2 * SR) / SR
    y = (np.sin(2 * np.pi * 200 * t) * (t < 1.0)).astype(np.float32)  # loud, then silent
    env = audio_image_matrix(y, "waveplot", CFG).numpy()
    lo, hi = env
    assert np.all(hi[:140] > 0.99) and np.all(lo[:140] < -0.99)
    assert np.all(hi[160:] == 0) and np.all(lo[160:] == 0)


def test_images_are_uint8_finite_nonconstant_deterministic(waveforms):
    y = waveforms["vas_dog_02677.mp4"]
    first = render_audio_images(y, REPRESENTATIONS, CFG)
    again = render_audio_images(y, REPRESENTATIONS, CFG)
    for rep in REPRESENTATIONS:
        image = first[rep]
        assert image.dtype == np.uint8 and image.shape == (299, 299, 3), rep
        assert len(np.unique(image.reshape(-1, 3), axis=0)) >= 2, rep
        assert image.std() > 5, rep
        np.testing.assert_array_equal(image, again[rep])
    # one representation alone renders the same as together with the others
    np.testing.assert_array_equal(first["mfcc"], render_audio_images(y, "mfcc", CFG)["mfcc"])
    np.testing.assert_array_equal(first["spectral_rolloff"],
                                  render_audio_image(y, "spectral_rolloff", CFG).numpy())
    # curve plots: background, faint waveform (0.4) and the curve in full colour
    lut = colormap_lut("viridis")
    for rep in ("spectral_centroid", "spectral_rolloff"):
        colors = {tuple(c) for c in first[rep].reshape(-1, 3)}
        assert colors == {tuple(lut[0]), tuple(lut[102]), tuple(lut[255])}, rep


def test_matrix_images_are_colormapped_librosa_matrices(waveforms):
    """Image = LUT[resize(flip(minmax(librosa matrix)))] up to one LUT step."""
    y = waveforms["vas_baby_01951.mp4"]
    ref = _librosa_features(y)
    lut = colormap_lut("viridis")
    images = render_audio_images(y, ("mfcc", "mfcc_scaled", "chromagram"), CFG)
    for rep, image in images.items():
        m = ref[rep]
        m = (m - m.min()) / (m.max() - m.min())
        x = tf.image.resize(np.flipud(m)[None, :, :, None].astype(np.float32), [299, 299])
        expect = np.round(np.clip(x.numpy()[0, :, :, 0], 0, 1) * 255).astype(np.int64)
        exact = np.all(image == lut[expect], axis=-1)
        near = exact | np.all(image == lut[np.maximum(expect - 1, 0)], axis=-1) | np.all(
            image == lut[np.minimum(expect + 1, 255)], axis=-1)
        assert near.all() and exact.mean() > 0.99, (rep, near.mean(), exact.mean())
        assert np.ptp(expect) > 100, rep


def test_batched_equals_unbatched(waveforms):
    a = waveforms["vas_dog_02677.mp4"][: 5 * SR]
    b = waveforms["veba_-2RPPODqLy4_guitar.mp4"][: 5 * SR]
    batch = render_audio_images(np.stack([a, b]), REPRESENTATIONS, CFG)
    single_a = render_audio_images(a, REPRESENTATIONS, CFG)
    single_b = render_audio_images(b, REPRESENTATIONS, CFG)
    for rep in REPRESENTATIONS:
        assert batch[rep].shape == (2, 299, 299, 3)
        np.testing.assert_array_equal(batch[rep][0], single_a[rep], err_msg=rep)
        np.testing.assert_array_equal(batch[rep][1], single_b[rep], err_msg=rep)


def test_inside_tf_function_with_unknown_length(waveforms):
    y = waveforms["ave_0lFf-HP86Q0_female_speech.mp4"][: 4 * SR]

    # traced as the export traces its signatures (no AutoGraph: the renderers have no
    # tensor-dependent Python control flow); serve_one also passes through AutoGraph
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32)], autograph=False)
    def serve(waveform):
        return render_audio_images_tf(waveform, REPRESENTATIONS, CFG)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def serve_one(waveform):
        return render_audio_image(waveform, "chromagram", CFG)

    concrete = serve.get_concrete_function()
    for rep in REPRESENTATIONS:
        assert concrete.structured_outputs[rep].shape.as_list() == [None, 299, 299, 3]
    out = serve(tf.constant(y[None]))
    eager = render_audio_images(y, REPRESENTATIONS, CFG)
    for rep in REPRESENTATIONS:
        np.testing.assert_array_equal(out[rep].numpy()[0], eager[rep], err_msg=rep)
    # a different length through the same graph
    short = serve_one(tf.constant(y[: SR // 2]))
    np.testing.assert_array_equal(short.numpy(),
                                  render_audio_images(y[: SR // 2], "chromagram", CFG)["chromagram"])


@pytest.mark.parametrize("n", [0, 10, 1000, 3000])
def test_silent_and_very_short_input_is_finite(n):
    silent = np.zeros(n, np.float32)
    noise = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    for y in (silent, noise):
        images = render_audio_images(y, REPRESENTATIONS, CFG)
        for rep in REPRESENTATIONS:
            assert images[rep].shape == (299, 299, 3) and images[rep].dtype == np.uint8
            assert np.isfinite(audio_image_matrix(y, rep, CFG).numpy()).all(), (rep, n)


def test_non_finite_samples_do_not_poison_the_image():
    y = np.random.default_rng(0).standard_normal(SR).astype(np.float32)
    y[100] = np.nan
    y[200] = np.inf
    for rep in REPRESENTATIONS:
        assert np.isfinite(audio_image_matrix(y, rep, CFG).numpy()).all(), rep


def test_config_changes_the_rendering():
    y = np.random.default_rng(0).standard_normal(SR).astype(np.float32)
    small = AudioImageConfig(image_size=64, colormap="gray", n_mfcc=13)
    image = render_audio_images(y, "mfcc", small)["mfcc"]
    assert image.shape == (64, 64, 3)
    assert np.all(image[..., 0] == image[..., 1])  # gray colormap
    assert audio_image_matrix(y, "mfcc", small).shape[0] == 13


def test_colormap_lut_samples_matplotlib():
    import matplotlib

    lut = colormap_lut("magma")
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    for i in (0, 128, 255):
        expect = np.round(np.array(matplotlib.colormaps["magma"](i / 255.0)[:3]) * 255)
        np.testing.assert_array_equal(lut[i], expect)


def test_encode_png_round_trips():
    from PIL import Image

    y = np.random.default_rng(1).standard_normal(SR).astype(np.float32)
    image = render_audio_images(y, "chromagram", CFG)["chromagram"]
    data = encode_png(image)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), image)


def test_unknown_representation_and_bad_rank():
    with pytest.raises(ValueError, match="allowed: waveplot"):
        render_audio_images(np.zeros(100, np.float32), "spectrogram", CFG)
    with pytest.raises(ValueError, match="rank"):
        audio_image_matrix(np.zeros((1, 1, 100), np.float32), "mfcc", CFG)


def test_warm_up_runs():
    warm_up(AudioImageConfig(image_size=32), ("mfcc", "waveplot"))
