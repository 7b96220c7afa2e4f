"""``audio_missing`` in every signature of a clip-level run, and silence under ``serve_waveform``.

The session's tiny run (:mod:`tests.serving.helpers`, K=2, ``data.on_missing_audio: reject``)
and a copy of it whose config says ``silence``; a real clip (vas_dog, 6 s) against the silent
audio-image (a zero waveform through the shared renderer).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from maivar_tf.features.silent import silent_audio_image  # noqa: E402
from maivar_tf.serving import (  # noqa: E402
    OUTPUT_KEYS,
    SIGNATURE_FEATURES,
    SIGNATURE_MEDIA,
    SIGNATURE_WAVEFORM,
    as_numpy_outputs,
    serving_module,
)
from tests.serving.helpers import REPRESENTATION  # noqa: E402


def with_data(run, **changes):
    """``run`` whose config's data section has ``changes``."""
    cfg = dataclasses.replace(run.cfg, data=dataclasses.replace(run.cfg.data, **changes))
    return dataclasses.replace(run, cfg=cfg)


@pytest.fixture(scope="module")
def media(tiny, clip_paths):
    """A real clip's frames [1, K, H, W, 3], waveform [1, N] and audio-image, and the
    silent audio-image, under the tiny run's settings."""
    from maivar_tf.data.audio_image import render_audio_images
    from maivar_tf.data.video import load_clip

    data = tiny.run.cfg.data
    clip = load_clip(clip_paths[4], data)
    wave = np.asarray(clip.waveform, np.float32)
    image = render_audio_images(wave, REPRESENTATION, data.audio)[REPRESENTATION]
    return {"frames": clip.video.frames[None], "waveform": wave[None], "image": image,
            "silent": silent_audio_image(REPRESENTATION, data.audio)}


@pytest.fixture(scope="module")
def silence_module(tiny):
    """The tiny run under ``data.on_missing_audio: silence``, silent audio features known."""
    module = serving_module(tiny.run)
    silent = module.audio_features(silent_audio_image(REPRESENTATION,
                                                      tiny.run.cfg.data.audio)[None])
    run = dataclasses.replace(with_data(tiny.run, on_missing_audio="silence"),
                              silent_audio=silent.numpy()[0])
    return serving_module(run)


def test_serve_media_says_when_the_audio_image_is_the_silent_one(module, exported, media):
    frames = np.concatenate([media["frames"]] * 2)
    images = np.stack([media["image"], media["silent"]])
    for fn in (module.serve_media,
               lambda f, a: exported.loaded.signatures[SIGNATURE_MEDIA](frames=f,
                                                                          audio_image=a)):
        out = as_numpy_outputs(fn(tf.constant(frames), tf.constant(images)))
        assert set(out) == set(OUTPUT_KEYS)
        assert out["audio_missing"].dtype == bool
        assert out["audio_missing"].tolist() == [False, True]


def test_serve_waveform_says_when_the_waveform_is_all_zeros(module, exported, media):
    wave = media["waveform"]
    waves = np.concatenate([wave, np.zeros_like(wave)])
    frames = np.concatenate([media["frames"]] * 2)
    rate = tf.constant([22050, 22050], tf.int32)
    out = as_numpy_outputs(exported.loaded.signatures[SIGNATURE_WAVEFORM](
        frames=tf.constant(frames), waveform=tf.constant(waves), sample_rate=rate))
    assert out["audio_missing"].tolist() == [False, True]
    ref = as_numpy_outputs(module.serve_media(frames, np.stack([media["image"],
                                                                media["silent"]])))
    np.testing.assert_allclose(out["probabilities"], ref["probabilities"], atol=1e-5)


def test_a_short_silent_waveform_is_silence_only_under_silence(module, silence_module, media):
    frames = media["frames"]
    short = np.zeros((1, 100), np.float32)  # shorter than n_fft = 2048
    rate = np.array([22050], np.int32)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="serve_waveform: input waveform needs at least 2048 samples"):
        module.serve_waveform(frames, short, rate)
    out = as_numpy_outputs(silence_module.serve_waveform(frames, short, rate))
    assert out["audio_missing"].tolist() == [True]
    ref = as_numpy_outputs(silence_module.serve_media(frames, media["silent"][None]))
    np.testing.assert_allclose(out["probabilities"], ref["probabilities"], atol=1e-6)
    # a short waveform with sound is still refused
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"needs at least 2048 samples \(audio.n_fft\) unless it is all "
                             r"zeros \(silence\)"):
        silence_module.serve_waveform(frames, short + 0.1, rate)


def test_serving_default_compares_with_the_silent_features_when_known(
        module, silence_module, exported, media):
    v, a = (t.numpy() for t in silence_module.media_features(
        np.concatenate([media["frames"]] * 2), np.stack([media["image"], media["silent"]])))
    out = as_numpy_outputs(silence_module.serving_default(v, a))
    assert out["audio_missing"].tolist() == [False, True]
    # the features of silence, a little off (float noise), are still silence
    out = as_numpy_outputs(silence_module.serving_default(v, a * np.float32(1 + 1e-6)))
    assert out["audio_missing"].tolist() == [False, True]
    # the tiny run's features folder records no silent features: it cannot tell
    for fn in (module.serving_default, exported.loaded.signatures[SIGNATURE_FEATURES]):
        out = as_numpy_outputs(fn(video_features=tf.constant(v), audio_features=tf.constant(a)))
        assert out["audio_missing"].tolist() == [False, False]
