"""Serving a temporal-binding run with a localiser (:mod:`tests.serving.temporal_run`, K=4).

The window arithmetic in the graph against the Beam job's NumPy rule; the in-memory module
against the Keras models; the export against the in-memory module (every signature, every
output); ``audio_missing`` on per-segment inputs; ``serve_waveform``'s per-segment
audio-images against the NumPy renderer on the windows at TSN's centre times.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from maivar_tf.data.segments import segment_windows  # noqa: E402
from maivar_tf.features.silent import silent_audio_image  # noqa: E402
from maivar_tf.serving import (  # noqa: E402
    OUTPUT_KEYS,
    SEGMENT_OUTPUT_KEYS,
    SIGNATURE_FEATURES,
    SIGNATURE_MEDIA,
    SIGNATURE_WAVEFORM,
    as_numpy_outputs,
    read_export_info,
)
from maivar_tf.serving.segments import centre_times, window_starts  # noqa: E402
from tests.serving.helpers import CLASSES, REPRESENTATION  # noqa: E402
from tests.serving.temporal_run import (  # noqa: E402
    TB_K,
    keras_segment_outputs,
    segment_media,
)

# ----------------------------------------------------------------------------- window rule

WINDOW_CASES = [
    # (centres s, N, rate, window s): inside, at both edges, half-sample ties, short clips
    ([0.0, 0.5, 0.95], 10, 10, 0.4),
    ([0.05, 0.25, 0.45, 0.65], 10, 10, 0.3),
    ([0.125, 0.375, 0.625, 0.875], 22050, 22050, 0.25),
    ([0.1, 0.2], 3, 10, 0.4),            # clip shorter than a window: the whole clip
    ([0.0, 0.1], 4, 10, 0.4),            # clip exactly one window long
    ([1.5, 4.5, 7.5, 10.5], 22050 * 12, 22050, 1.0),
    ([0.3333333, 0.9999999], 7, 3, 1.5),  # L / 2 not an integer
    ([-1.0, 99.0], 50, 10, 1.0),         # centres outside the clip
]


@pytest.mark.parametrize("centres,n,rate,window", WINDOW_CASES)
def test_window_rule_in_a_graph_equals_the_eager_one(centres, n, rate, window):
    expected = segment_windows(centres, n, rate, window)
    starts, length = window_starts(np.asarray(centres), n, rate, window)
    got = np.stack([starts.numpy(), starts.numpy() + int(length)], axis=1)
    np.testing.assert_array_equal(got, expected)
    # in a graph, with the length known only at run time
    fn = tf.function(lambda c, num: window_starts(c, num, rate, window),
                     input_signature=[tf.TensorSpec([None], tf.float64),
                                      tf.TensorSpec([], tf.int32)])
    starts, length = fn(tf.constant(centres, tf.float64), tf.constant(n))
    np.testing.assert_array_equal(np.stack([starts.numpy(), starts.numpy() + int(length)], 1),
                                  expected)


def test_centre_times_are_tsn_centres():
    np.testing.assert_allclose(centre_times(2.0, 4).numpy(), [0.25, 0.75, 1.25, 1.75])
    np.testing.assert_allclose(centre_times(tf.constant([1.0, 3.0]), 2).numpy(),
                               [[0.25, 0.75], [0.75, 2.25]])


# ----------------------------------------------------------------------------- the run


@pytest.fixture(scope="module")
def tb_media(tb, clip_paths):
    """Two real clips' centre crops [2, K, c, c, 3] and per-segment audio-images."""
    prepared = segment_media(tb.cfg, [clip_paths[0], clip_paths[4]])
    return {"frames": np.stack([p.frames for p in prepared]),
            "images": np.stack([p.audio_image for p in prepared]),
            "silent": silent_audio_image(REPRESENTATION, tb.cfg.data.audio)}


def test_module_equals_the_keras_models(tb_module, tb, tb_media):
    out = as_numpy_outputs(tb_module.serve_media(tb_media["frames"], tb_media["images"]))
    assert set(out) == set(OUTPUT_KEYS + SEGMENT_OUTPUT_KEYS)
    ref = keras_segment_outputs(tb.run, tb_media["frames"], tb_media["images"])
    np.testing.assert_allclose(out["probabilities"], ref["probabilities"], atol=1e-5)
    np.testing.assert_allclose(out["segment_scores"], ref["segment_scores"], atol=1e-5)
    assert out["segment_scores"].shape == (2, TB_K, len(CLASSES) + 1)
    np.testing.assert_allclose(out["segment_event"], 1 - ref["segment_scores"][..., -1],
                               atol=1e-5)
    # the localiser's background bias splits the first clip's segments
    background = ref["segment_scores"][0].argmax(-1) == len(CLASSES)
    assert background.any() and not background.all()


def test_export_signatures_equal_the_module(tb_module, tb_export, tb, tb_media):
    path, loaded = tb_export
    info = read_export_info(path)
    assert info.outputs == OUTPUT_KEYS + SEGMENT_OUTPUT_KEYS
    assert info.signatures[SIGNATURE_MEDIA][1] == {
        "name": "audio_segment_images", "dtype": "uint8", "shape": [-1, TB_K, 299, 299, 3]}
    assert [s["name"] for s in info.signatures[SIGNATURE_FEATURES]] == [
        "video_features", "audio_segment_features"]
    frames, images = tb_media["frames"], tb_media["images"]
    v, a = (t.numpy() for t in tb_module.media_features(frames, images))
    wave = np.random.default_rng(0).normal(0, 0.1, (2, 22050 * 2)).astype(np.float32)
    wave[1] = 0.0
    calls = {SIGNATURE_FEATURES: {"video_features": v, "audio_segment_features": a},
             SIGNATURE_MEDIA: {"frames": frames, "audio_segment_images": images},
             SIGNATURE_WAVEFORM: {"frames": frames, "waveform": wave,
                                  "sample_rate": np.array([22050, 22050], np.int32)}}
    for name, inputs in calls.items():
        mem = as_numpy_outputs(tb_module.signatures()[name](**inputs))
        out = as_numpy_outputs(loaded.signatures[name](
            **{k: tf.constant(x) for k, x in inputs.items()}))
        assert set(out) == set(mem) == set(OUTPUT_KEYS + SEGMENT_OUTPUT_KEYS), name
        for key in ("probabilities", "top_scores", "segment_scores", "segment_event"):
            np.testing.assert_allclose(out[key], mem[key], atol=1e-5, err_msg=name)
        assert (out["audio_missing"] == mem["audio_missing"]).all()
    assert as_numpy_outputs(loaded.signatures[SIGNATURE_WAVEFORM](
        **{k: tf.constant(x) for k, x in calls[SIGNATURE_WAVEFORM].items()})
    )["audio_missing"].tolist() == [False, True]


def test_audio_missing_on_per_segment_inputs(tb_module, tb, tb_media):
    frames = tb_media["frames"][:1].repeat(3, axis=0)
    silent = np.broadcast_to(tb_media["silent"], (TB_K,) + tb_media["silent"].shape)
    one_real = silent.copy()
    one_real[2] = tb_media["images"][0, 2]
    images = np.stack([tb_media["images"][0], silent, one_real])
    out = as_numpy_outputs(tb_module.serve_media(frames, images))
    assert out["audio_missing"].tolist() == [False, True, False]
    v, a = (t.numpy() for t in tb_module.media_features(frames, images))
    # serving_default: the K rows against the silent features feature_info.json records
    np.testing.assert_allclose(a[1], np.broadcast_to(tb.silent, a[1].shape), atol=1e-5)
    out = as_numpy_outputs(tb_module.serving_default(v, a))
    assert out["audio_missing"].tolist() == [False, True, False]
    # under silence (the run's config) a short all-zero waveform is the silent clip
    short = as_numpy_outputs(tb_module.serve_waveform(frames[:1], np.zeros((1, 10), np.float32),
                                                      np.array([22050], np.int32)))
    assert short["audio_missing"].tolist() == [True]
    ref = as_numpy_outputs(tb_module.serve_media(frames[:1], silent[None]))
    for key in ("probabilities", "segment_scores"):
        np.testing.assert_allclose(short[key], ref[key], atol=1e-6)


def test_serve_waveform_renders_the_segment_windows_like_the_beam_job(tb_module, tb, clip_paths):
    """The graph's K audio-images of a waveform == the NumPy renderer on the windows the
    Beam rule cuts at TSN's centre times of the waveform's duration."""
    from maivar_tf.data.audio_image import render_audio_images
    from maivar_tf.data.segments import cut_windows
    from maivar_tf.data.video import load_clip

    audio = tb.cfg.data.audio
    wave = np.asarray(load_clip(clip_paths[4], tb.cfg.data).waveform, np.float32)
    centres = (np.arange(TB_K) + 0.5) * (wave.size / audio.sample_rate) / TB_K
    windows = segment_windows(centres, wave.size, audio.sample_rate, audio.segment_seconds)
    expected = render_audio_images(cut_windows(wave, windows), REPRESENTATION,
                                   audio)[REPRESENTATION]
    got = tb_module.render_audio_image(tf.constant(wave[None])).numpy()
    assert got.shape == (1, TB_K, 299, 299, 3)
    np.testing.assert_array_equal(got[0], expected)
