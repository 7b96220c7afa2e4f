"""``maivar predict``: real clips -> top-5 classes, from a run or an export; broken files.

Reuses the session's tiny trained run and its export (see ``tests/test_export.py``): the real
BNInception and InceptionResNetV2 backbones with random weights, a hidden-16 fusion MLP, K=2.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from maivar_tf import cli  # noqa: E402
from maivar_tf import export as export_mod  # noqa: E402
from maivar_tf import predict as predict_mod  # noqa: E402
from maivar_tf.predict import (  # noqa: E402
    Failure,
    RunPredictor,
    SavedModelPredictor,
    format_text,
    predict_files,
    top_k,
)
from tests.test_export import CLASSES, K, build_serving_artifacts  # noqa: E402


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    return build_serving_artifacts(tmp_path_factory.mktemp("serving"))


@pytest.fixture(scope="session")
def run_predictor(served):
    return RunPredictor(served.model)


@pytest.fixture(scope="session")
def run_results(served, run_predictor, clip_paths):
    """Every real clip through the in-memory run (shared by several tests)."""
    return predict_files(clip_paths, run_predictor, k=5)


@pytest.fixture
def reuse_loaded_saved_model(served, monkeypatch):
    """Loading the export again is tested in test_export; here it would only cost time."""
    original = tf.saved_model.load

    def load(path, *args, **kwargs):
        if Path(path).resolve() == served.path.resolve():
            return served.loaded
        return original(path, *args, **kwargs)

    monkeypatch.setattr(tf.saved_model, "load", load)


# ----------------------------------------------------------------------------- fast units


def test_failure_line_is_one_line():
    f = Failure("a b.mp4", "not_a_video", "cannot open\nthe container:  bad data")
    assert f.line() == "maivar: a b.mp4: not_a_video: cannot open the container: bad data"


def test_top_k_orders_by_probability_then_index():
    classes, scores = top_k(np.array([0.1, 0.4, 0.1, 0.4]), ["a", "b", "c", "d"], 3)
    assert classes == ["b", "d", "a"] and scores == [0.4, 0.4, 0.1]


def test_strip_path_from_media_error_messages():
    assert predict_mod._strip_path("/x/y.mp4: no audio stream", "/x/y.mp4") == \
        "no audio stream"
    assert predict_mod._strip_path("no audio stream", "/x/y.mp4") == "no audio stream"


# ----------------------------------------------------------------------------- real clips


@pytest.mark.slow
def test_predict_every_real_clip_from_the_run(run_results, clip_paths):
    predictions, failures = run_results
    assert failures == []
    assert [p.file for p in predictions] == [str(p) for p in clip_paths]
    for p in predictions:
        assert len(p.classes) == 5 and set(p.classes) <= set(CLASSES)
        assert len(set(p.classes)) == 5
        assert p.scores == sorted(p.scores, reverse=True)
        np.testing.assert_allclose(p.probabilities.sum(), 1.0, atol=1e-5)
        assert p.scores[0] == pytest.approx(float(p.probabilities.max()))
        assert set(p.timings_ms) == {"prepare", "pipeline", "backbones", "head"}
    # different clips, different inputs: the model is not answering a constant
    assert len({tuple(np.round(p.probabilities, 6)) for p in predictions}) == len(predictions)


@pytest.mark.slow
def test_predict_feeds_the_pixels_the_input_pipeline_yields(served, clip_paths):
    """The frames/audio-image predict classifies are the Beam record read back for eval."""
    from maivar_tf.data.audio_image import render_audio_images
    from maivar_tf.data.input_pipeline import center_crop
    from maivar_tf.data.video import load_clip

    cfg = served.model.cfg
    prepared, failures = predict_mod.prepare_clips([str(clip_paths[0])], cfg, "chromagram")
    assert failures == [] and len(prepared) == 1
    clip = prepared[0]
    assert clip.frames.shape == (K, 224, 224, 3) and clip.frames.dtype == np.uint8
    assert clip.audio_image.shape == (299, 299, 3) and clip.audio_image.dtype == np.uint8
    decoded = load_clip(clip_paths[0], cfg.data)
    # PNG is lossless: the audio-image is exactly the renderer's
    image = render_audio_images(decoded.waveform, "chromagram", cfg.data.audio)["chromagram"]
    np.testing.assert_array_equal(clip.audio_image, image)
    # frames went through JPEG (as stored for training): close to the decoded centre crop
    crop = center_crop(tf.constant(decoded.video.frames), 224).numpy()
    assert np.abs(clip.frames.astype(int) - crop.astype(int)).mean() < 3.0


@pytest.mark.slow
def test_saved_model_predictions_equal_the_run(served, run_results, clip_paths,
                                               reuse_loaded_saved_model):
    predictions, _ = run_results
    saved = SavedModelPredictor(served.path)
    assert saved.class_names == CLASSES and saved.num_segments == K
    exported, failures = predict_files(clip_paths, saved, k=5)
    assert failures == []
    for a, b in zip(predictions, exported, strict=True):
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
        assert set(b.timings_ms) == {"prepare", "pipeline", "model"}


@pytest.mark.slow
def test_cli_predict_json_with_saved_model(served, run_results, clip_paths, capsys,
                                           reuse_loaded_saved_model):
    rc = cli.main(["predict", *map(str, clip_paths), "--saved-model", str(served.path),
                   "--json", "--top-k", "3"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    doc = json.loads(out.out)
    assert doc["errors"] == []
    assert doc["model"]["saved_model"] == str(served.path)
    assert [p["file"] for p in doc["predictions"]] == [str(p) for p in clip_paths]
    for p, ref in zip(doc["predictions"], run_results[0], strict=True):
        assert [e["class"] for e in p["top_k"]] == ref.classes[:3] or np.allclose(
            [e["probability"] for e in p["top_k"]], ref.scores[:3], atol=1e-5)
        np.testing.assert_allclose([e["probability"] for e in p["top_k"]], ref.scores[:3],
                                   atol=1e-5)


@pytest.mark.slow
def test_cli_predict_broken_files_are_reported_and_the_rest_classified(
        served, run_predictor, clip_paths, tmp_path, capsys, monkeypatch):
    from tests.conftest import write_test_media

    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video at all" * 100)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    silent = write_test_media(tmp_path / "silent.mp4", audio=False)
    missing = tmp_path / "missing.mp4"
    good = clip_paths[2]  # the UCF101 AVI (MPEG-4 + MP3)
    # the run is the session's (loading it from disk is tested in test_export)
    monkeypatch.setattr(export_mod, "load_serving_model", lambda *a, **kw: served.model)
    rc = cli.main(["predict", str(garbage), str(good), str(empty), str(silent), str(missing),
                   "--run-dir", str(served.run_dir), "--config", str(served.cfg_path)])
    out = capsys.readouterr()
    assert rc == 1
    errors = out.err.strip().splitlines()
    by_file = {line.split(": ")[1]: line for line in errors if line.startswith("maivar: ")}
    assert set(by_file) == {str(garbage), str(empty), str(silent), str(missing)}, out.err
    assert by_file[str(garbage)].split(": ")[2] in ("not_a_video", "decode_error")
    assert by_file[str(empty)].split(": ")[2] == "empty"
    assert by_file[str(silent)].split(": ")[2] == "no_audio"
    assert by_file[str(missing)].split(": ")[2] == "missing"
    assert all(len(line.split(": ", 3)) == 4 and line.split(": ", 3)[3] for line in
               by_file.values())
    # the good file is still classified, in the text format
    lines = out.out.strip().splitlines()
    assert lines[0] == str(good)
    assert [ln.split(".")[0].strip() for ln in lines[1:]] == ["1", "2", "3", "4", "5"]
    assert all(ln.split()[1] in CLASSES and ln.endswith("%") for ln in lines[1:])

    # all good: exit 0
    rc = cli.main(["predict", str(good), "--run-dir", str(served.run_dir), "--config",
                   str(served.cfg_path), "--json"])
    out = capsys.readouterr()
    assert rc == 0 and json.loads(out.out)["errors"] == []


def test_cli_predict_rejects_bad_top_k(capsys):
    rc = cli.main(["predict", "x.mp4", "--top-k", "0"])
    assert rc == 2
    assert "--top-k 0" in capsys.readouterr().err


def test_format_text():
    p = predict_mod.Prediction("clip.mp4", ["Bounce_Chime", "Spin"], [0.9, 0.1])
    assert format_text([p]).splitlines() == ["clip.mp4", "  1. Bounce_Chime   90.00%",
                                             "  2. Spin           10.00%"]


# ----------------------------------------------------------------------------- training parity


@pytest.mark.slow
def test_predict_features_equal_the_training_features(served, run_predictor, clip_paths,
                                                      tmp_path):
    """Beam job -> TFRecords -> feature extraction gives the very features predict computes."""
    from beam.build_tfrecords import main as build_main
    from maivar_tf.config import load_config
    from maivar_tf.features import extract_features, load_features

    chosen = [clip_paths[3], clip_paths[5]]
    csv = tmp_path / "clips.csv"
    csv.write_text("path,label,split\n" + "".join(f"{p},{CLASSES[i]},test\n"
                                                  for i, p in enumerate(chosen)))
    overrides = ["data.dataset=csv", f"data.annotations={csv}", "data.video_root=",
                 f"data.output_dir={tmp_path / 'tfrecords'}",
                 f"data.features_dir={tmp_path / 'features'}", "data.num_shards=1"]
    argv = ["--runner=DirectRunner", f"--config={served.cfg_path}"]
    for item in overrides:
        argv += ["--set", item]
    assert build_main(argv) == 0
    cfg = load_config(served.cfg_path, overrides)
    video_bb, audio_bb = served.model.video_backbone, served.model.audio_backbone
    extract_features(cfg, splits=("test",), representations=["chromagram"], progress=False,
                     video_backbone=video_bb, audio_backbone=audio_bb)
    fs = load_features(cfg.data.features_dir, "test", "chromagram")
    assert len(fs) == 2

    prepared, failures = predict_mod.prepare_clips([str(p) for p in chosen], served.model.cfg,
                                                   "chromagram")
    assert failures == []
    fns = served.model.tf_functions()
    for i, clip in enumerate(prepared):
        v, a = fns["media_features"](clip.frames[None], clip.audio_image[None])
        (row,) = np.flatnonzero(fs.labels == i)  # the CSV's classes are CLASSES[:2], sorted
        np.testing.assert_allclose(v.numpy()[0], fs.video[row], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(a.numpy()[0], fs.audio[row], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("ten_crop", [False, True])
def test_predict_real_clips_with_tiny_backbones(clip_paths, ten_crop):
    """The whole predict path in seconds (stand-in backbones), centre crop and TSN ten crops."""
    from tests.test_export import _tiny_serving_model

    model = _tiny_serving_model(ten_crop=ten_crop)
    paths = [str(p) for p in clip_paths[:2]]
    prepared, failures = predict_mod.prepare_clips(paths, model.cfg, "chromagram",
                                                   ten_crop=ten_crop)
    assert failures == []
    for clip in prepared:
        if ten_crop:  # whole frames (shorter side 256): the model takes the ten crops
            assert clip.frames.shape[0] == K and min(clip.frames.shape[1:3]) == 256
        else:
            assert clip.frames.shape == (K, 224, 224, 3)
    predictions, failures = predict_files(paths, RunPredictor(model), k=3)
    assert failures == [] and [p.file for p in predictions] == paths
    for clip, p in zip(prepared, predictions, strict=True):
        want = model.serve_media(tf.constant(clip.frames[None]),
                                 tf.constant(clip.audio_image[None]))
        np.testing.assert_allclose(p.probabilities, want["probabilities"].numpy()[0],
                                   atol=1e-6)
        assert len(p.classes) == 3
