"""Non-finite inputs and the Python-side request check: errors that name the input.

Before these checks, ``serving_default`` on all-NaN or +Inf ``video_features`` returned finite
probabilities, and ``serve_waveform`` on an all-NaN, all-Inf or single-NaN waveform returned
the answer for silence. Every float input of every signature is now asserted finite in the
graph, in memory and in the export (the session's one tiny export, :mod:`tests.serving.helpers`).
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from maivar_tf.serving import (  # noqa: E402
    SIGNATURE_FEATURES,
    SIGNATURE_MEDIA,
    SIGNATURE_WAVEFORM,
)
from maivar_tf.serving.checks import check_request  # noqa: E402
from maivar_tf.serving.predictors import RunPredictor, SavedModelPredictor  # noqa: E402
from tests.serving.helpers import K  # noqa: E402
from tests.tiny_models import TINY_AUDIO_DIM, TINY_VIDEO_DIM  # noqa: E402


def good_inputs(signature: str) -> dict[str, np.ndarray]:
    """A valid batch of two for ``signature``."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, K, 64, 80, 3), dtype=np.uint8)
    if signature == SIGNATURE_FEATURES:
        return {"video_features": rng.normal(size=(2, K, TINY_VIDEO_DIM)).astype(np.float32),
                "audio_features": rng.normal(size=(2, TINY_AUDIO_DIM)).astype(np.float32)}
    if signature == SIGNATURE_MEDIA:
        return {"frames": frames,
                "audio_image": rng.integers(0, 256, (2, 299, 299, 3), dtype=np.uint8)}
    wave = (0.3 * np.sin(np.arange(4096) * 0.05)[None].repeat(2, 0)).astype(np.float32)
    return {"frames": frames, "waveform": wave, "sample_rate": np.array([22050] * 2, np.int32)}


def spoiled(signature: str, name: str, kind: str) -> dict[str, np.ndarray]:
    """``good_inputs`` with input ``name`` all-NaN, all-+Inf, all--Inf or one NaN."""
    inputs = good_inputs(signature)
    x = inputs[name].copy()
    if kind == "one_nan":
        x.flat[x.size // 2] = np.nan
    else:
        x[...] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}[kind]
    return {**inputs, name: x}


CASES = [(SIGNATURE_FEATURES, "video_features", kind) for kind in ("nan", "inf", "one_nan")] + [
    (SIGNATURE_FEATURES, "audio_features", kind) for kind in ("nan", "-inf")] + [
    (SIGNATURE_WAVEFORM, "waveform", kind) for kind in ("nan", "inf", "one_nan")]


def finite_message(signature: str, name: str) -> str:
    return (rf"{signature}: input {name} has non-finite values \(NaN or Inf\); "
            r"non-finite values:\] \[\d+\] \[of\]")


def test_good_inputs_are_served(module, exported):
    for signature in (SIGNATURE_FEATURES, SIGNATURE_WAVEFORM):
        inputs = good_inputs(signature)
        out = module.signatures()[signature](**inputs)
        assert np.isfinite(out["probabilities"].numpy()).all()
        out = exported.loaded.signatures[signature](
            **{k: tf.constant(v) for k, v in inputs.items()})
        np.testing.assert_allclose(out["probabilities"].numpy().sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("signature, name, kind", CASES)
def test_non_finite_inputs_are_refused_in_memory(module, signature, name, kind):
    with pytest.raises(tf.errors.InvalidArgumentError, match=finite_message(signature, name)):
        module.signatures()[signature](**spoiled(signature, name, kind))


@pytest.mark.parametrize("signature, name, kind", CASES)
def test_non_finite_inputs_are_refused_by_the_export(exported, signature, name, kind):
    inputs = spoiled(signature, name, kind)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=finite_message(signature, name)) as err:
        exported.loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    bad = int(np.size(inputs[name]) - np.isfinite(inputs[name]).sum())
    assert f"[{bad}] [of] [{inputs[name].size}]" in str(err.value)


@pytest.mark.parametrize("signature, name, kind", CASES)
def test_check_request_refuses_non_finite_values_naming_the_input(exported, signature, name,
                                                                  kind):
    specs = dict(exported.loaded.signatures[signature].structured_input_signature[1])
    check_request(good_inputs(signature), specs, signature)
    inputs = spoiled(signature, name, kind)
    bad = int(np.size(inputs[name]) - np.isfinite(inputs[name]).sum())
    with pytest.raises(ValueError, match=rf"^{name} has non-finite values \(NaN or Inf\) "
                                         rf"\({signature}\): {bad} of {inputs[name].size}$"):
        check_request(inputs, specs, signature)


def test_check_request_messages_start_with_the_input_name():
    specs = {"frames": tf.TensorSpec([None, K, None, None, 3], tf.uint8, name="frames"),
             "audio_image": tf.TensorSpec([None, 299, 299, 3], tf.uint8, name="audio_image")}
    ok = good_inputs(SIGNATURE_MEDIA)
    check_request(ok, specs, SIGNATURE_MEDIA)
    cases = [
        ({**ok, "frames": ok["frames"].astype(np.float32)},
         r"frames must be uint8 [?, 2, ?, ?, 3] (serve_media); got float32"),
        ({**ok, "audio_image": ok["audio_image"].astype(np.int32)},
         r"audio_image must be uint8 [?, 299, 299, 3] (serve_media); got int32"),
        ({**ok, "frames": np.zeros((2, 3, 8, 8, 3), np.uint8)},
         r"frames must have shape [?, 2, ?, ?, 3] (serve_media); got [2, 3, 8, 8, 3]"),
        ({"frames": ok["frames"]},
         "audio_image is missing from the request; serve_media takes frames, audio_image"),
        ({**ok, "extra": ok["frames"]},
         "extra is not an input of serve_media; it takes frames, audio_image"),
        ({**ok, "audio_image": np.zeros((3, 299, 299, 3), np.uint8)},
         "audio_image has batch size 3 but frames has 2 (serve_media); every input needs the "
         "same batch size"),
    ]
    for inputs, message in cases:
        with pytest.raises(ValueError) as err:
            check_request(inputs, specs, SIGNATURE_MEDIA)
        assert str(err.value) == message


def test_predictors_name_the_input_of_a_wrong_dtype(tiny, exported):
    """The request helpers of ``maivar predict`` (a run in memory, an export) check first."""
    ok = good_inputs(SIGNATURE_MEDIA)
    for predictor in (RunPredictor(tiny.run), SavedModelPredictor(exported.path)):
        with pytest.raises(ValueError, match=r"^frames must be uint8 \[\?, 2, \?, \?, 3\] "
                                             r"\(serve_media\); got float32$"):
            predictor(ok["frames"].astype(np.float32), ok["audio_image"])
        with pytest.raises(ValueError, match=r"^audio_image must be uint8 .*; got float64$"):
            predictor(ok["frames"], ok["audio_image"].astype(np.float64))
