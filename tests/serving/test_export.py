"""SavedModel export: layout, signatures against the in-memory Keras models, TF Serving I/O.

The tiny run of :mod:`tests.serving.helpers` is exported once per session and reloaded with
``tf.saved_model.load``; one slow test exports a run with the full-size BNInception and
InceptionResNetV2 (random weights saved beside the features, as extraction leaves them)
through :func:`maivar_tf.serving.export_run`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from maivar_tf.artifacts import ExportInfo  # noqa: E402
from maivar_tf.serving import (  # noqa: E402
    SIGNATURE_FEATURES,
    SIGNATURE_MEDIA,
    SIGNATURE_WAVEFORM,
    ExportError,
    as_numpy_outputs,
    export_servable,
    next_version,
    read_export_info,
    resolve_saved_model_dir,
)
from tests.serving.helpers import (  # noqa: E402
    CLASSES,
    MODEL_NAME,
    TEMPERATURE,
    K,
    check_outputs,
    keras_media_probabilities,
    keras_probabilities,
)
from tests.tiny_models import TINY_AUDIO_DIM, TINY_VIDEO_DIM  # noqa: E402


def random_features(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, K, TINY_VIDEO_DIM)).astype(np.float32),
            rng.normal(size=(n, TINY_AUDIO_DIM)).astype(np.float32))


# ----------------------------------------------------------------------------- layout


def test_export_layout_labels_and_versions(tiny, exported):
    path = exported.path
    assert path == exported.export_dir / MODEL_NAME / "1"
    assert (path / "saved_model.pb").is_file() and (path / "variables").is_dir()
    assert (path / "assets" / "labels.txt").read_text().splitlines() == list(CLASSES)
    info = read_export_info(path)
    assert isinstance(info, ExportInfo) and info == ExportInfo.read(path)
    assert info.model_name == MODEL_NAME and info.version == 1
    assert info.class_names == CLASSES and info.top_k == 5
    assert info.num_segments == K and info.representation == "chromagram"
    assert info.ten_crop is False
    assert info.outputs == ("probabilities", "top_classes", "top_scores", "audio_missing")
    assert info.signatures[SIGNATURE_MEDIA] == [
        {"name": "frames", "dtype": "uint8", "shape": [-1, K, -1, -1, 3]},
        {"name": "audio_image", "dtype": "uint8", "shape": [-1, 299, 299, 3]}]
    assert info.provenance["run_dir"] == str(tiny.run_dir.resolve())
    assert info.config["data"]["num_segments"] == K
    assert resolve_saved_model_dir(path.parent) == path
    with pytest.raises(FileNotFoundError, match="holds no SavedModel"):
        resolve_saved_model_dir(exported.export_dir)
    # no half-written temporary folder is left where TF Serving looks
    assert sorted(p.name for p in path.parent.iterdir()) == ["1"]
    assert next_version(path.parent) == 2
    with pytest.raises(ExportError, match="already exists"):
        export_servable(tiny.run, exported.export_dir, MODEL_NAME, version=1)
    with pytest.raises(ExportError, match="plain folder name"):
        export_servable(tiny.run, exported.export_dir, "a/b")
    with pytest.raises(ExportError, match="an integer >= 0"):
        export_servable(tiny.run, exported.export_dir, MODEL_NAME, version=-1)
    assert sorted(p.name for p in path.parent.iterdir()) == ["1"]


def test_next_version(tmp_path):
    assert next_version(tmp_path / "missing") == 1
    for name in ("1", "3", "notaversion", ".tmp-4-x"):
        (tmp_path / name).mkdir()
    assert next_version(tmp_path) == 4


def test_labels_travel_inside_the_saved_model(tiny, exported, tmp_path):
    """The class names come from the SavedModel's own asset, not from files beside it."""
    copy = tmp_path / "moved"
    shutil.copytree(exported.path, copy)
    shutil.rmtree(copy / "assets.extra")
    loaded = tf.saved_model.load(str(copy))
    v, a = random_features(2, seed=0)
    out = as_numpy_outputs(loaded.signatures[SIGNATURE_FEATURES](
        video_features=tf.constant(v), audio_features=tf.constant(a)))
    check_outputs(out, keras_probabilities(tiny.run.fusion, v, a))


# ----------------------------------------------------------------------------- signatures


def test_serving_default_matches_keras(tiny, exported):
    v, a = random_features(3, seed=1)
    out = as_numpy_outputs(exported.loaded.signatures[SIGNATURE_FEATURES](
        video_features=tf.constant(v), audio_features=tf.constant(a)))
    check_outputs(out, keras_probabilities(tiny.run.fusion, v, a))


def test_served_probabilities_are_the_softmax_of_the_logits_over_the_runs_temperature(
        tiny, exported):
    assert tiny.run.temperature == TEMPERATURE != 1.0  # recorded in the tiny run's run_info
    assert read_export_info(exported.path).temperature == TEMPERATURE
    v, a = random_features(4, seed=7)
    out = as_numpy_outputs(exported.loaded.signatures[SIGNATURE_FEATURES](
        video_features=tf.constant(v), audio_features=tf.constant(a)))
    logits = np.asarray(tiny.run.fusion({"video_features": v, "audio_features": a},
                                        training=False), np.float64)
    e = np.exp(logits / TEMPERATURE - (logits / TEMPERATURE).max(1, keepdims=True))
    np.testing.assert_allclose(out["probabilities"], e / e.sum(1, keepdims=True), atol=1e-6)
    plain = np.exp(logits - logits.max(1, keepdims=True))
    plain /= plain.sum(1, keepdims=True)
    assert np.abs(out["probabilities"] - plain).max() > 1e-2
    np.testing.assert_array_equal(out["probabilities"].argmax(1), logits.argmax(1))


def test_serve_media_matches_keras(tiny, exported):
    rng = np.random.default_rng(2)
    # 256-pixel shorter side (what decoding yields): the graph only centre-crops ...
    frames = rng.integers(0, 256, (2, K, 256, 300, 3), dtype=np.uint8)
    image = rng.integers(0, 256, (2, 299, 299, 3), dtype=np.uint8)
    sig = exported.loaded.signatures[SIGNATURE_MEDIA]
    out = as_numpy_outputs(sig(frames=tf.constant(frames), audio_image=tf.constant(image)))
    crop = frames[:, :, 16:240, 38:262]
    check_outputs(out, keras_media_probabilities(tiny.run, crop, image), atol=1e-4)
    # ... and 224 squares (what the input pipeline yields) are taken as they are.
    out2 = as_numpy_outputs(sig(frames=tf.constant(np.ascontiguousarray(crop)),
                                audio_image=tf.constant(image)))
    np.testing.assert_allclose(out2["probabilities"], out["probabilities"], atol=1e-6)


def test_serve_media_resizes_other_frame_sizes(tiny, exported):
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (1, K, 120, 160, 3), dtype=np.uint8)
    image = rng.integers(0, 256, (1, 299, 299, 3), dtype=np.uint8)
    out = as_numpy_outputs(exported.loaded.signatures[SIGNATURE_MEDIA](
        frames=tf.constant(frames), audio_image=tf.constant(image)))
    big = tf.image.resize(frames.reshape(K, 120, 160, 3), [256, 341], antialias=True)
    big = tf.cast(tf.clip_by_value(tf.round(big), 0, 255), tf.uint8).numpy()
    crop = big[:, 16:240, 58:282].reshape(1, K, 224, 224, 3)
    check_outputs(out, keras_media_probabilities(tiny.run, crop, image), atol=1e-4)


def test_serve_waveform_renders_like_the_python_renderer(tiny, exported, clip_paths):
    from maivar_tf.data.audio_image import render_audio_images
    from maivar_tf.data.video import load_clip

    cfg = tiny.run.cfg
    clip = load_clip(clip_paths[4], cfg.data)  # vas_dog: 6 s, 44.1 kHz stereo -> 22.05 kHz
    frames = clip.video.frames[None]
    wave = np.asarray(clip.waveform, np.float32)[None]
    image = render_audio_images(wave[0], "chromagram", cfg.data.audio)["chromagram"]
    signatures = exported.loaded.signatures
    out = as_numpy_outputs(signatures[SIGNATURE_WAVEFORM](
        frames=tf.constant(frames), waveform=tf.constant(wave),
        sample_rate=tf.constant([cfg.data.audio.sample_rate], tf.int32)))
    ref = as_numpy_outputs(signatures[SIGNATURE_MEDIA](
        frames=tf.constant(frames), audio_image=tf.constant(image[None])))
    np.testing.assert_allclose(out["probabilities"], ref["probabilities"], atol=1e-5)
    assert (out["top_classes"] == ref["top_classes"]).all() or \
        np.allclose(out["top_scores"], ref["top_scores"], atol=1e-5)


def test_in_memory_functions_equal_the_export(module, exported):
    """What `maivar predict --run-dir` runs is what the SavedModel runs, all three signatures."""
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 256, (2, K, 240, 320, 3), dtype=np.uint8)
    image = rng.integers(0, 256, (2, 299, 299, 3), dtype=np.uint8)
    wave = (0.3 * np.sin(np.arange(22050) * 0.05)[None].repeat(2, 0)
            * np.array([[1.0], [0.5]])).astype(np.float32)
    rate = np.array([22050, 22050], np.int32)
    v, a = module.media_features(frames, image)
    assert v.shape == (2, K, TINY_VIDEO_DIM) and a.shape == (2, TINY_AUDIO_DIM)
    cases = {SIGNATURE_FEATURES: {"video_features": v.numpy(), "audio_features": a.numpy()},
             SIGNATURE_MEDIA: {"frames": frames, "audio_image": image},
             SIGNATURE_WAVEFORM: {"frames": frames, "waveform": wave, "sample_rate": rate}}
    media = as_numpy_outputs(module.serve_media(frames, image))
    for name, inputs in cases.items():
        mem = as_numpy_outputs(module.signatures()[name](**inputs))
        out = as_numpy_outputs(exported.loaded.signatures[name](
            **{k: tf.constant(x) for k, x in inputs.items()}))
        np.testing.assert_allclose(mem["probabilities"], out["probabilities"], atol=1e-6)
        assert (mem["top_classes"] == out["top_classes"]).all()
    head = as_numpy_outputs(module.serving_default(v, a))
    np.testing.assert_allclose(head["probabilities"], media["probabilities"], atol=1e-6)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("signature, inputs, message", [
    (SIGNATURE_FEATURES, {"video_features": ((1, K + 1, TINY_VIDEO_DIM), np.float32),
                          "audio_features": ((1, TINY_AUDIO_DIM), np.float32)},
     rf"serving_default: input video_features must be float32 \[batch, 2, {TINY_VIDEO_DIM}\]"),
    (SIGNATURE_FEATURES, {"video_features": ((2, K, TINY_VIDEO_DIM), np.float32),
                          "audio_features": ((3, TINY_AUDIO_DIM), np.float32)},
     r"inputs video_features and audio_features must have the same batch size"),
    (SIGNATURE_MEDIA, {"frames": ((1, K, 64, 64, 3, 1), np.uint8),
                       "audio_image": ((1, 299, 299, 3), np.uint8)},
     r"serve_media: input frames must be uint8 \[batch, 2, any, any, 3\]"),
    (SIGNATURE_MEDIA, {"frames": ((1, K, 64, 64, 3), np.uint8),
                       "audio_image": ((1, 224, 224, 3), np.uint8)},
     r"serve_media: input audio_image must be uint8 \[batch, 299, 299, 3\]"),
    (SIGNATURE_MEDIA, {"frames": ((0, K, 64, 64, 3), np.uint8),
                       "audio_image": ((0, 299, 299, 3), np.uint8)},
     r"serve_media: empty batch \(batch size 0\)"),
    (SIGNATURE_MEDIA, {"frames": ((1, K, 0, 64, 3), np.uint8),
                       "audio_image": ((1, 299, 299, 3), np.uint8)},
     r"serve_media: input frames has an empty height or width"),
    (SIGNATURE_WAVEFORM, {"frames": ((1, K, 64, 64, 3), np.uint8),
                          "waveform": ((1, 22050), np.float32),
                          "sample_rate": ((1,), np.int32, 44100)},
     r"serve_waveform: input sample_rate must be 22050 Hz.*got\] \[44100\]"),
    (SIGNATURE_WAVEFORM, {"frames": ((1, K, 64, 64, 3), np.uint8),
                          "waveform": ((1, 100), np.float32),
                          "sample_rate": ((1,), np.int32, 22050)},
     r"input waveform needs at least 2048 samples.*got\] \[100\]"),
])
def test_bad_requests_fail_with_a_message_naming_the_input(exported, signature, inputs,
                                                           message):
    """The signatures check what TF Serving passes through unchecked, before any compute."""
    args = {}
    for name, (shape, dtype, *fill) in inputs.items():
        args[name] = tf.constant(np.full(shape, fill[0] if fill else 0, dtype))
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        exported.loaded.signatures[signature](**args)


def test_python_side_input_check():
    from maivar_tf.serving.checks import check_request

    specs = {"frames": tf.TensorSpec([None, K, None, None, 3], tf.uint8, name="frames"),
             "audio_image": tf.TensorSpec([None, 299, 299, 3], tf.uint8, name="audio_image")}
    ok = {"frames": np.zeros((1, K, 8, 8, 3), np.uint8),
          "audio_image": np.zeros((1, 299, 299, 3), np.uint8)}
    check_request(ok, specs, "serve_media")
    with pytest.raises(ValueError, match=r"^frames must be uint8 .*got float32"):
        check_request({**ok, "frames": ok["frames"].astype(np.float32)}, specs, "serve_media")
    with pytest.raises(ValueError,
                       match=r"^frames must have shape \[\?, 2, \?, \?, 3\] \(serve_media\); got"):
        check_request({**ok, "frames": np.zeros((1, 3, 8, 8, 3), np.uint8)}, specs,
                      "serve_media")
    with pytest.raises(ValueError, match="^audio_image is missing"):
        check_request({"frames": ok["frames"]}, specs, "serve_media")
    with pytest.raises(ValueError, match="^audio_image has batch size 2 but frames has 1"):
        check_request({**ok, "audio_image": np.zeros((2, 299, 299, 3), np.uint8)}, specs,
                      "serve_media")


# ----------------------------------------------------------------------------- saved_model_cli


def saved_model_cli_blocks(path: Path) -> dict[str, str]:
    """``saved_model_cli show --all`` of ``path``, one text block per signature."""
    cli = Path(sys.executable).parent / "saved_model_cli"
    if not cli.exists():
        pytest.skip(f"{cli} not installed")
    res = subprocess.run([str(cli), "show", "--dir", str(path), "--all"],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert res.returncode == 0, res.stderr[-2000:]
    return {name: res.stdout.split(f"signature_def['{name}']:", 1)[1].split("signature_def[", 1)[0]
            for name in (SIGNATURE_FEATURES, SIGNATURE_MEDIA, SIGNATURE_WAVEFORM)}


@pytest.mark.slow
def test_saved_model_cli_lists_named_inputs_and_outputs(exported):
    blocks = saved_model_cli_blocks(exported.path)
    expected_inputs = {
        SIGNATURE_FEATURES: {"video_features": ("DT_FLOAT", f"(-1, {K}, {TINY_VIDEO_DIM})"),
                             "audio_features": ("DT_FLOAT", f"(-1, {TINY_AUDIO_DIM})")},
        SIGNATURE_MEDIA: {"frames": ("DT_UINT8", f"(-1, {K}, -1, -1, 3)"),
                          "audio_image": ("DT_UINT8", "(-1, 299, 299, 3)")},
        SIGNATURE_WAVEFORM: {"frames": ("DT_UINT8", f"(-1, {K}, -1, -1, 3)"),
                             "waveform": ("DT_FLOAT", "(-1, -1)"),
                             "sample_rate": ("DT_INT32", "(-1)")},
    }
    outputs = {"probabilities": ("DT_FLOAT", f"(-1, {len(CLASSES)})"),
               "top_classes": ("DT_STRING", "(-1, 5)"),
               "top_scores": ("DT_FLOAT", "(-1, 5)"),
               "audio_missing": ("DT_BOOL", "(-1)")}
    for name, block in blocks.items():
        ins, outs = block.split("contains the following output(s):")
        assert ins.count("inputs['") == len(expected_inputs[name]), block
        for table, part in ((expected_inputs[name], ins), (outputs, outs)):
            for key, (dtype, shape) in table.items():
                kind = "inputs" if part is ins else "outputs"
                entry = part.split(f"{kind}['{key}'] tensor_info:", 1)[1]
                assert f"dtype: {dtype}" in entry.split("name:")[0], (name, key, entry[:200])
                assert f"shape: {shape}" in entry.split("name:")[0], (name, key, entry[:200])
        assert "Method name is: tensorflow/serving/predict" in block
