"""SavedModel export: layout, signatures against the in-memory Keras models, TF Serving I/O.

One tiny trained run (Algorithm 1 on synthetic features, hidden width 16, K=2) with the real
BNInception and InceptionResNetV2 backbones (random ``none`` weights, saved beside the features as
feature extraction leaves them) is exported once per session through ``maivar export`` and
reloaded with ``tf.saved_model.load``; ``tests/test_predict.py`` reuses the same artefacts.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from maivar_tf import export as export_mod  # noqa: E402
from maivar_tf.export import (  # noqa: E402
    OUTPUT_KEYS,
    SIGNATURE_FEATURES,
    SIGNATURE_MEDIA,
    SIGNATURE_WAVEFORM,
    ExportError,
    as_numpy_outputs,
    export_serving_model,
    load_backbones,
    next_version,
    read_export_info,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
K = 2
CLASSES = ("Bounce_Chime", "Bounce_Drum", "Slide_Chime", "Slide_Drum", "Spin_Chime",
           "Spin_Drum")
MODEL_NAME = "tiny"
_CACHE: dict[str, SimpleNamespace] = {}


# ----------------------------------------------------------------------------- artefacts


def _write_config(root: Path) -> Path:
    import yaml

    cfg = {
        "name": MODEL_NAME,
        "data": {"num_segments": K, "representations": ["chromagram"],
                 "output_dir": str(root / "tfrecords"), "features_dir": str(root / "features"),
                 "video_root": str(root / "videos")},
        "model": {"representation": "chromagram", "video_pooling": "flatten",
                  "hidden_units": 16, "dropout": 0.0, "l1": 0.0},
        "train": {"strategy": "default", "audio_epochs": 1, "vmlp_epochs": 1,
                  "fusion_epochs": 1, "audio_batch_size": 8, "vmlp_batch_size": 8,
                  "fusion_batch_size": 8, "output_dir": str(root / "run")},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _synthetic_features(cfg, video_backbone, audio_backbone, n: int = 24, seed: int = 0):
    """Training features spread around the backbones' features of three real clips.

    The heads standardise their inputs with the training statistics, so these must look like
    what the backbones make of real media, or every real clip would get a saturated softmax.
    """
    from maivar_tf.features import FeatureSet
    from maivar_tf.predict import prepare_clips
    from tests.conftest import CLIP_NAMES, CLIPS_DIR

    prepared, failures = prepare_clips([str(CLIPS_DIR / c) for c in CLIP_NAMES[:3]], cfg,
                                       "chromagram")
    assert not failures, failures
    frames = np.concatenate([p.frames for p in prepared]).astype(np.float32)
    images = np.stack([p.audio_image for p in prepared]).astype(np.float32)
    v_ref = np.asarray(video_backbone(frames, training=False))
    a_ref = np.asarray(audio_backbone(images, training=False))
    rng = np.random.default_rng(seed)
    v_scale = v_ref.std(axis=0) + 0.1 * np.abs(v_ref).mean(axis=0) + 1e-3
    a_scale = a_ref.std(axis=0) + 0.1 * np.abs(a_ref).mean(axis=0) + 1e-3
    video = v_ref[rng.integers(0, len(v_ref), (n, K))] + v_scale * rng.normal(
        size=(n, K, v_ref.shape[1]))
    audio = a_ref[rng.integers(0, len(a_ref), n)] + a_scale * rng.normal(
        size=(n, a_ref.shape[1]))
    labels = np.arange(n) % len(CLASSES)
    return FeatureSet(ids=np.array([f"id{i:03d}" for i in range(n)]),
                      video=video.astype(np.float32), audio=audio.astype(np.float32),
                      labels=labels.astype(np.int64), class_names=CLASSES,
                      representation="chromagram")


def build_serving_artifacts(root: Path) -> SimpleNamespace:
    """Trains, saves backbones, exports (through the CLI) and reloads, once per session."""
    if "artifacts" in _CACHE:
        return _CACHE["artifacts"]
    from maivar_tf import cli
    from maivar_tf.config import load_config
    from maivar_tf.models.bn_inception import build_video_backbone
    from maivar_tf.models.inception_resnet_v2 import build_audio_backbone
    from maivar_tf.training import run_algorithm1

    cfg_path = _write_config(root)
    cfg = load_config(cfg_path)
    features_dir = Path(cfg.data.features_dir)
    (features_dir / "backbones").mkdir(parents=True)
    video_bb, audio_bb = build_video_backbone("none"), build_audio_backbone("none")
    # What `maivar extract` leaves behind: the backbones it used and feature_info.json.
    video_bb.save_weights(features_dir / "backbones" / "video.weights.h5")
    audio_bb.save_weights(features_dir / "backbones" / "audio.weights.h5")
    (features_dir / "feature_info.json").write_text(json.dumps({
        "num_segments": K, "ten_crop": False, "video_backbone": "BNInception:none",
        "audio_backbone": "InceptionResNetV2:none", "class_names": list(CLASSES),
        "backbone_weights": {"video": "backbones/video.weights.h5",
                             "audio": "backbones/audio.weights.h5"}}))
    train = _synthetic_features(cfg, video_bb, audio_bb)
    run = run_algorithm1(cfg, train, run_dir=cfg.train.output_dir, verbose=0)

    model = export_mod.load_serving_model(cfg, run.run_dir)
    export_dir = root / "export"
    with pytest.MonkeyPatch.context() as mp:  # reuse the loaded model: one backbone load
        mp.setattr(export_mod, "load_serving_model", lambda *a, **kw: model)
        rc = cli.main(["export", "--config", str(cfg_path), "--run-dir", str(run.run_dir),
                       "--export-dir", str(export_dir)])
    assert rc == 0
    path = export_dir / MODEL_NAME / "1"
    loaded = tf.saved_model.load(str(path))
    art = SimpleNamespace(root=root, cfg=cfg, cfg_path=cfg_path, run_dir=run.run_dir,
                          features_dir=features_dir, model=model, export_dir=export_dir,
                          path=path, loaded=loaded, backbones=(video_bb, audio_bb),
                          train=train)
    _CACHE["artifacts"] = art
    return art


@pytest.fixture(scope="session")
def served(tmp_path_factory) -> SimpleNamespace:
    return build_serving_artifacts(tmp_path_factory.mktemp("serving"))


def _keras_probabilities(model, video, audio) -> np.ndarray:
    logits = model.fusion({"video_features": video, "audio_features": audio}, training=False)
    return np.asarray(tf.nn.softmax(logits))


def _keras_media_probabilities(model, frames_cropped, image) -> np.ndarray:
    """Backbones and head called as plain Keras models (no serving code)."""
    b, k = frames_cropped.shape[:2]
    flat = frames_cropped.reshape((b * k,) + frames_cropped.shape[2:]).astype(np.float32)
    video = np.asarray(model.video_backbone(flat, training=False)).reshape(b, k, -1)
    audio = np.asarray(model.audio_backbone(image.astype(np.float32), training=False))
    return _keras_probabilities(model, video, audio)


def _check_outputs(out: dict, probs: np.ndarray, atol: float = 1e-5) -> None:
    assert set(out) == set(OUTPUT_KEYS)
    np.testing.assert_allclose(out["probabilities"], probs, atol=atol, rtol=1e-4)
    np.testing.assert_allclose(out["probabilities"].sum(-1), 1.0, atol=1e-5)
    top = np.argsort(-probs, axis=-1, kind="stable")[:, :5]
    np.testing.assert_allclose(out["top_scores"], np.take_along_axis(probs, top, -1),
                               atol=atol, rtol=1e-4)
    for row_classes, row_scores, row_top, row_p in zip(out["top_classes"], out["top_scores"],
                                                      top, probs, strict=True):
        assert list(row_scores) == sorted(row_scores, reverse=True)
        # class names follow the scores (ties within tolerance may swap places)
        for name, score in zip(row_classes, row_scores, strict=True):
            assert abs(row_p[CLASSES.index(name)] - score) < 1e-4
        assert row_classes[0] == CLASSES[row_top[0]] or \
            abs(row_p[row_top[0]] - row_p[CLASSES.index(row_classes[0])]) < 1e-4


# ----------------------------------------------------------------------------- layout


@pytest.mark.slow
def test_export_layout_labels_and_versions(served):
    path = served.path
    assert path == served.export_dir / MODEL_NAME / "1"
    assert (path / "saved_model.pb").is_file() and (path / "variables").is_dir()
    assert (path / "assets" / "labels.txt").read_text().splitlines() == list(CLASSES)
    info = read_export_info(path)
    assert info["class_names"] == list(CLASSES)
    assert info["num_segments"] == K and info["representation"] == "chromagram"
    assert info["provenance"]["video_backbone"].endswith("backbones/video.weights.h5")
    assert info["provenance"]["audio_backbone"].endswith("backbones/audio.weights.h5")
    # no half-written temporary folder is left where TF Serving looks
    assert sorted(p.name for p in path.parent.iterdir()) == ["1"]
    assert next_version(path.parent) == 2
    with pytest.raises(ExportError, match="already exists"):
        export_serving_model(served.model, served.export_dir, MODEL_NAME, version=1)
    with pytest.raises(ExportError, match="plain folder name"):
        export_serving_model(served.model, served.export_dir, "a/b")


def test_next_version(tmp_path):
    assert next_version(tmp_path / "missing") == 1
    for name in ("1", "3", "notaversion", ".tmp-4-x"):
        (tmp_path / name).mkdir()
    assert next_version(tmp_path) == 4


@pytest.mark.slow
def test_labels_travel_inside_the_saved_model(served, tmp_path):
    """The class names come from the SavedModel's own asset, not from files beside it."""
    import shutil

    copy = tmp_path / "moved"
    shutil.copytree(served.path, copy)
    shutil.rmtree(copy / "assets.extra")
    loaded = tf.saved_model.load(str(copy))
    v = served.train.video[:2]
    a = served.train.audio[:2]
    out = as_numpy_outputs(loaded.signatures[SIGNATURE_FEATURES](
        video_features=tf.constant(v), audio_features=tf.constant(a)))
    _check_outputs(out, _keras_probabilities(served.model, v, a))


# ----------------------------------------------------------------------------- backbones


@pytest.mark.slow
def test_backbones_are_the_ones_the_features_came_from(served):
    video_bb, audio_bb = served.backbones
    for saved, used in ((video_bb, served.model.video_backbone),
                        (audio_bb, served.model.audio_backbone)):
        a, b = saved.get_weights(), used.get_weights()
        assert len(a) == len(b)
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_random_backbones_that_were_not_saved_are_refused(tmp_path):
    (tmp_path / "feature_info.json").write_text(json.dumps({
        "video_backbone": "BNInception:none", "audio_backbone": "InceptionResNetV2:none"}))
    with pytest.raises(ExportError, match="must be saved at extraction time"):
        load_backbones(tmp_path)
    with pytest.raises(ExportError, match="run `maivar extract`"):
        load_backbones(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- signatures


@pytest.mark.slow
def test_serving_default_matches_keras(served):
    rng = np.random.default_rng(1)
    v = served.train.video[:3] + rng.normal(size=served.train.video[:3].shape).astype(np.float32)
    a = served.train.audio[:3]
    out = as_numpy_outputs(served.loaded.signatures[SIGNATURE_FEATURES](
        video_features=tf.constant(v), audio_features=tf.constant(a)))
    _check_outputs(out, _keras_probabilities(served.model, v, a))


@pytest.mark.slow
def test_serve_media_matches_keras(served):
    rng = np.random.default_rng(2)
    # 256-pixel shorter side (what decoding yields): the graph only centre-crops ...
    frames = rng.integers(0, 256, (2, K, 256, 300, 3), dtype=np.uint8)
    image = rng.integers(0, 256, (2, 299, 299, 3), dtype=np.uint8)
    out = as_numpy_outputs(served.loaded.signatures[SIGNATURE_MEDIA](
        frames=tf.constant(frames), audio_image=tf.constant(image)))
    crop = frames[:, :, 16:240, 38:262]
    _check_outputs(out, _keras_media_probabilities(served.model, crop, image), atol=1e-4)
    # ... and 224 squares (what the input pipeline yields) are taken as they are.
    out2 = as_numpy_outputs(served.loaded.signatures[SIGNATURE_MEDIA](
        frames=tf.constant(np.ascontiguousarray(crop)), audio_image=tf.constant(image)))
    np.testing.assert_allclose(out2["probabilities"], out["probabilities"], atol=1e-6)


@pytest.mark.slow
def test_serve_media_resizes_other_frame_sizes(served):
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (1, K, 120, 160, 3), dtype=np.uint8)
    image = rng.integers(0, 256, (1, 299, 299, 3), dtype=np.uint8)
    out = as_numpy_outputs(served.loaded.signatures[SIGNATURE_MEDIA](
        frames=tf.constant(frames), audio_image=tf.constant(image)))
    big = tf.image.resize(frames.reshape(K, 120, 160, 3), [256, 341], antialias=True)
    big = tf.cast(tf.clip_by_value(tf.round(big), 0, 255), tf.uint8).numpy()
    crop = big[:, 16:240, 58:282].reshape(1, K, 224, 224, 3)
    _check_outputs(out, _keras_media_probabilities(served.model, crop, image), atol=1e-4)


@pytest.mark.slow
def test_serve_waveform_renders_like_the_python_renderer(served, clip_paths):
    from maivar_tf.data.audio_image import render_audio_images
    from maivar_tf.data.video import load_clip

    cfg = served.model.cfg
    clip = load_clip(clip_paths[4], cfg.data)  # vas_dog: 6 s, 44.1 kHz stereo -> 22.05 kHz
    frames = clip.video.frames[None]
    wave = np.asarray(clip.waveform, np.float32)[None]
    image = render_audio_images(wave[0], "chromagram", cfg.data.audio)["chromagram"]
    out = as_numpy_outputs(served.loaded.signatures[SIGNATURE_WAVEFORM](
        frames=tf.constant(frames), waveform=tf.constant(wave),
        sample_rate=tf.constant([cfg.data.audio.sample_rate], tf.int32)))
    ref = as_numpy_outputs(served.loaded.signatures[SIGNATURE_MEDIA](
        frames=tf.constant(frames), audio_image=tf.constant(image[None])))
    np.testing.assert_allclose(out["probabilities"], ref["probabilities"], atol=1e-5)
    assert (out["top_classes"] == ref["top_classes"]).all() or \
        np.allclose(out["top_scores"], ref["top_scores"], atol=1e-5)


@pytest.mark.slow
def test_in_memory_functions_equal_the_export(served):
    """What `maivar predict --run-dir` runs is what the SavedModel runs."""
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 256, (1, K, 224, 224, 3), dtype=np.uint8)
    image = rng.integers(0, 256, (1, 299, 299, 3), dtype=np.uint8)
    fns = served.model.tf_functions()
    mem = as_numpy_outputs(fns[SIGNATURE_MEDIA](frames, image))
    v, a = fns["media_features"](frames, image)
    head = as_numpy_outputs(fns[SIGNATURE_FEATURES](v, a))
    out = as_numpy_outputs(served.loaded.signatures[SIGNATURE_MEDIA](
        frames=tf.constant(frames), audio_image=tf.constant(image)))
    np.testing.assert_allclose(mem["probabilities"], out["probabilities"], atol=1e-6)
    np.testing.assert_allclose(head["probabilities"], out["probabilities"], atol=1e-6)
    assert (mem["top_classes"] == out["top_classes"]).all()


# ----------------------------------------------------------------------------- errors


@pytest.mark.slow
@pytest.mark.parametrize("signature, inputs, message", [
    (SIGNATURE_FEATURES, {"video_features": ((1, K + 1, 1024), np.float32),
                          "audio_features": ((1, 1536), np.float32)},
     r"serving_default: input video_features must be float32 \[batch, 2, 1024\]"),
    (SIGNATURE_FEATURES, {"video_features": ((2, K, 1024), np.float32),
                          "audio_features": ((3, 1536), np.float32)},
     r"inputs video_features and audio_features must have the same batch size"),
    (SIGNATURE_MEDIA, {"frames": ((1, K, 64, 64, 3, 1), np.uint8),
                       "audio_image": ((1, 299, 299, 3), np.uint8)},
     r"serve_media: input frames must be uint8 \[batch, 2, any, any, 3\]"),
    (SIGNATURE_MEDIA, {"frames": ((1, K, 64, 64, 3), np.uint8),
                       "audio_image": ((1, 224, 224, 3), np.uint8)},
     r"serve_media: input audio_image must be uint8 \[batch, 299, 299, 3\]"),
    (SIGNATURE_WAVEFORM, {"frames": ((1, K, 64, 64, 3), np.uint8),
                          "waveform": ((1, 22050), np.float32),
                          "sample_rate": ((1,), np.int32, 44100)},
     r"serve_waveform: input sample_rate must be 22050 Hz.*got\] \[44100\]"),
    (SIGNATURE_WAVEFORM, {"frames": ((1, K, 64, 64, 3), np.uint8),
                          "waveform": ((1, 100), np.float32),
                          "sample_rate": ((1,), np.int32, 22050)},
     r"input waveform needs at least 2048 samples.*got\] \[100\]"),
])
def test_bad_requests_fail_with_a_message_naming_the_input(served, signature, inputs, message):
    """The signatures check what TF Serving passes through unchecked, before any compute."""
    args = {}
    for name, (shape, dtype, *fill) in inputs.items():
        args[name] = tf.constant(np.full(shape, fill[0] if fill else 0, dtype))
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        served.loaded.signatures[signature](**args)


def test_python_side_input_check():
    from maivar_tf.predict import check_inputs

    specs = {"frames": tf.TensorSpec([None, K, None, None, 3], tf.uint8, name="frames"),
             "audio_image": tf.TensorSpec([None, 299, 299, 3], tf.uint8, name="audio_image")}
    ok = {"frames": np.zeros((1, K, 8, 8, 3), np.uint8),
          "audio_image": np.zeros((1, 299, 299, 3), np.uint8)}
    check_inputs(ok, specs, "serve_media")
    with pytest.raises(ValueError, match=r"'frames' must be uint8 .*got float32"):
        check_inputs({**ok, "frames": ok["frames"].astype(np.float32)}, specs, "serve_media")
    with pytest.raises(ValueError, match=r"'frames' must have shape \[\?, 2, \?, \?, 3\]; got"):
        check_inputs({**ok, "frames": np.zeros((1, 3, 8, 8, 3), np.uint8)}, specs,
                     "serve_media")
    with pytest.raises(ValueError, match="missing"):
        check_inputs({"frames": ok["frames"]}, specs, "serve_media")
    with pytest.raises(ValueError, match="different batch sizes"):
        check_inputs({**ok, "audio_image": np.zeros((2, 299, 299, 3), np.uint8)}, specs,
                     "serve_media")


# ----------------------------------------------------------------------------- saved_model_cli


@pytest.mark.slow
def test_saved_model_cli_lists_named_inputs_and_outputs(served):
    cli = Path(sys.executable).parent / "saved_model_cli"
    if not cli.exists():
        pytest.skip(f"{cli} not installed")
    res = subprocess.run([str(cli), "show", "--dir", str(served.path), "--all"],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert res.returncode == 0, res.stderr[-2000:]
    text = res.stdout
    blocks = {name: text.split(f"signature_def['{name}']:", 1)[1].split("signature_def[", 1)[0]
              for name in (SIGNATURE_FEATURES, SIGNATURE_MEDIA, SIGNATURE_WAVEFORM)}
    expected_inputs = {
        SIGNATURE_FEATURES: {"video_features": ("DT_FLOAT", f"(-1, {K}, 1024)"),
                             "audio_features": ("DT_FLOAT", "(-1, 1536)")},
        SIGNATURE_MEDIA: {"frames": ("DT_UINT8", f"(-1, {K}, -1, -1, 3)"),
                          "audio_image": ("DT_UINT8", "(-1, 299, 299, 3)")},
        SIGNATURE_WAVEFORM: {"frames": ("DT_UINT8", f"(-1, {K}, -1, -1, 3)"),
                             "waveform": ("DT_FLOAT", "(-1, -1)"),
                             "sample_rate": ("DT_INT32", "(-1)")},
    }
    outputs = {"probabilities": ("DT_FLOAT", f"(-1, {len(CLASSES)})"),
               "top_classes": ("DT_STRING", "(-1, 5)"),
               "top_scores": ("DT_FLOAT", "(-1, 5)")}
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


# ----------------------------------------------------------------------------- TF Serving REST


def rest_request_to_inputs(body: dict, signature) -> tuple[dict[str, np.ndarray], str]:
    """Maps a TF Serving REST ``:predict`` body onto a signature the way the server does.

    Row format (``instances``): a list of per-example objects keyed by input name, stacked
    along a new batch axis per input; columnar format (``inputs``): an object of batched
    values. Values are cast to the signature's dtypes (``{"b64": ...}`` only for strings).
    Returns the tensors and the format (``row``/``columnar``).
    """
    specs = signature.structured_input_signature[1]

    def convert(name, value):
        if name not in specs:
            raise ValueError(f"JSON object: does not have named input: {name}")
        spec = specs[name]
        if spec.dtype == tf.string:
            value = np.vectorize(lambda v: base64.b64decode(v["b64"]) if isinstance(v, dict)
                                 else v)(np.asarray(value, object))
        return tf.constant(np.asarray(value, spec.dtype.as_numpy_dtype), spec.dtype)

    if ("instances" in body) == ("inputs" in body):
        raise ValueError("Missing 'inputs' or 'instances' key")
    if "instances" in body:
        rows = body["instances"]
        if not rows:
            raise ValueError("'instances' is empty")
        if not isinstance(rows[0], dict):
            (only,) = specs
            rows = [{only: r} for r in rows]
        names = set(rows[0])
        if any(set(r) != names for r in rows):
            raise ValueError("Failed to process element: instances have different keys")
        return {n: convert(n, [r[n] for r in rows]) for n in names}, "row"
    cols = body["inputs"]
    if not isinstance(cols, dict):
        (only,) = specs
        cols = {only: cols}
    return {n: convert(n, v) for n, v in cols.items()}, "columnar"


def rest_response(outputs: dict, fmt: str) -> dict:
    """The JSON TF Serving returns: ``predictions`` (row) or ``outputs`` (columnar)."""
    def to_json(a):
        a = np.asarray(a)
        if a.dtype.kind in ("S", "O"):
            return np.vectorize(lambda s: s.decode() if isinstance(s, bytes) else s,
                                otypes=[object])(a).tolist()
        return a.tolist()

    if fmt == "row":
        batch = len(next(iter(outputs.values())))
        return {"predictions": [{k: to_json(v[i]) for k, v in outputs.items()}
                                for i in range(batch)]}
    return {"outputs": {k: to_json(v) for k, v in outputs.items()}}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["row", "columnar"])
def test_rest_request_maps_onto_the_signatures(served, fmt):
    rng = np.random.default_rng(5)
    v = served.train.video[:2]
    a = served.train.audio[:2]
    frames = rng.integers(0, 256, (2, K, 32, 40, 3), dtype=np.uint8)
    image = rng.integers(0, 256, (2, 299, 299, 3), dtype=np.uint8)
    cases = {SIGNATURE_FEATURES: {"video_features": v, "audio_features": a},
             SIGNATURE_MEDIA: {"frames": frames, "audio_image": image}}
    for sig_name, arrays in cases.items():
        if fmt == "row":
            body = {"signature_name": sig_name,
                    "instances": [{k: x[i].tolist() for k, x in arrays.items()}
                                  for i in range(2)]}
        else:
            body = {"signature_name": sig_name,
                    "inputs": {k: x.tolist() for k, x in arrays.items()}}
        body = json.loads(json.dumps(body))  # what goes over the wire
        sig = served.loaded.signatures[body["signature_name"]]
        inputs, got_fmt = rest_request_to_inputs(body, sig)
        assert got_fmt == fmt
        for name, spec in sig.structured_input_signature[1].items():
            assert inputs[name].dtype == spec.dtype
        response = json.loads(json.dumps(rest_response(sig(**inputs), fmt)))
        direct = as_numpy_outputs(sig(**{k: tf.constant(x) for k, x in arrays.items()}))
        if fmt == "row":
            assert len(response["predictions"]) == 2
            rows = response["predictions"]
            probs = np.array([r["probabilities"] for r in rows])
            classes = [r["top_classes"] for r in rows]
        else:
            probs = np.array(response["outputs"]["probabilities"])
            classes = response["outputs"]["top_classes"]
        np.testing.assert_allclose(probs, direct["probabilities"], atol=1e-6)
        assert classes == direct["top_classes"].tolist()
        assert all(c in CLASSES for row in classes for c in row)

    with pytest.raises(ValueError, match="does not have named input: video"):
        rest_request_to_inputs({"instances": [{"video": [0.0]}]},
                               served.loaded.signatures[SIGNATURE_FEATURES])
    with pytest.raises(ValueError, match="Missing 'inputs' or 'instances'"):
        rest_request_to_inputs({"signature_name": SIGNATURE_FEATURES},
                               served.loaded.signatures[SIGNATURE_FEATURES])


# ----------------------------------------------------------------------------- tiny backbones


def _tiny_serving_model(ten_crop: bool = False):
    """A ServingModel whose backbones are two-layer stand-ins: fast enough for every run."""
    import keras

    from maivar_tf.config import load_config
    from maivar_tf.export import ServingModel
    from maivar_tf.models.heads import build_fusion_mlp, build_video_mlp

    cfg = load_config(None, [f"data.num_segments={K}", "model.hidden_units=8",
                             "model.video_pooling=flatten", f"model.ten_crop={ten_crop}"])
    keras.utils.set_random_seed(0)
    v_in = keras.Input((224, 224, 3))
    v_out = keras.layers.Dense(16)(keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(4, 8, strides=8)(v_in / 255.0)))
    a_in = keras.Input((299, 299, 3))
    a_out = keras.layers.Dense(8)(keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(4, 13, strides=13)(a_in / 255.0)))
    vmlp = build_video_mlp(len(CLASSES), K, cfg.model, feature_dim=16)
    fusion = build_fusion_mlp(vmlp, cfg.model, audio_dim=8)
    return ServingModel(fusion=fusion, video_backbone=keras.Model(v_in, v_out),
                        audio_backbone=keras.Model(a_in, a_out), class_names=CLASSES, cfg=cfg,
                        num_segments=K, representation="chromagram", ten_crop=ten_crop)


def test_ten_crop_video_features_average_tsn_crops_like_extraction():
    from maivar_tf.features import ten_crop

    model = _tiny_serving_model(ten_crop=True)
    frames = np.random.default_rng(6).integers(0, 256, (2, K, 256, 300, 3), dtype=np.uint8)
    got = np.asarray(model.video_features(tf.constant(frames)))
    crops = ten_crop(tf.constant(frames), 224).numpy().astype(np.float32)  # [10,B,K,c,c,3]
    feats = np.asarray(model.video_backbone(crops.reshape(-1, 224, 224, 3)))
    want = feats.reshape(10, 2, K, -1).mean(axis=0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_tiny_export_round_trip(tmp_path):
    """Export, reload and call all three signatures (tiny backbones, runs in seconds)."""
    from maivar_tf.data.audio_image import render_audio_images

    model = _tiny_serving_model()
    path = export_serving_model(model, tmp_path, "tiny_bb")
    assert path == tmp_path / "tiny_bb" / "1"
    loaded = tf.saved_model.load(str(path))
    rng = np.random.default_rng(7)
    frames = rng.integers(0, 256, (2, K, 256, 280, 3), dtype=np.uint8)
    wave = (0.3 * np.sin(np.arange(22050) * 0.05)[None].repeat(2, 0)
            * np.array([[1.0], [0.5]])).astype(np.float32)
    image = np.stack([render_audio_images(w, "chromagram", model.cfg.data.audio)["chromagram"]
                      for w in wave])
    crop = frames[:, :, 16:240, 28:252]
    video = np.asarray(model.video_backbone(crop.reshape(-1, 224, 224, 3).astype(np.float32)))
    audio = np.asarray(model.audio_backbone(image.astype(np.float32)))
    probs = _keras_probabilities(model, video.reshape(2, K, -1), audio)
    outs = {
        SIGNATURE_FEATURES: loaded.signatures[SIGNATURE_FEATURES](
            video_features=tf.constant(video.reshape(2, K, -1)),
            audio_features=tf.constant(audio)),
        SIGNATURE_MEDIA: loaded.signatures[SIGNATURE_MEDIA](
            frames=tf.constant(frames), audio_image=tf.constant(image)),
        SIGNATURE_WAVEFORM: loaded.signatures[SIGNATURE_WAVEFORM](
            frames=tf.constant(frames), waveform=tf.constant(wave),
            sample_rate=tf.constant([22050, 22050], tf.int32)),
    }
    for out in outs.values():
        _check_outputs(as_numpy_outputs(out), probs, atol=1e-5)
