"""``maivar predict``: real clips -> top-5 classes, from a run or an export; broken files.

Uses the session's tiny run and its export (:mod:`tests.serving.helpers`): stand-in
backbones, a hidden-8 fusion MLP, K=2. Two real clips go through the whole path in the fast
suite (centre and ten crops); the six clips, the export's predictions, the JSON output, broken
files and the Beam/extraction parity are the slow (end-to-end) tests.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from maivar_tf import runs  # noqa: E402
from maivar_tf.predict import (  # noqa: E402
    Failure,
    Prediction,
    format_text,
    message_without_path,
    predict_command,
    predict_files,
    prepare_clips,
    top_k,
)
from maivar_tf.serving.predictors import RunPredictor, SavedModelPredictor  # noqa: E402
from tests.serving.helpers import CLASSES, REPRESENTATION, K  # noqa: E402


@pytest.fixture(scope="session")
def run_predictor(tiny):
    return RunPredictor(tiny.run)


@pytest.fixture(scope="session")
def run_results(run_predictor, clip_paths):
    """Every real clip through the in-memory run (shared by several tests)."""
    return predict_files(clip_paths, run_predictor, k=5)


@pytest.fixture(scope="session")
def cfg_path(tiny, tmp_path_factory):
    import yaml

    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny.cfg.to_dict()))
    return path


# ----------------------------------------------------------------------------- fast units


def test_failure_line_is_one_line():
    f = Failure("a b.mp4", "not_a_video", "cannot open\nthe container:  bad data")
    assert f.line() == "maivar: a b.mp4: not_a_video: cannot open the container: bad data"
    assert f.to_dict() == {"file": "a b.mp4", "reason": "not_a_video",
                           "message": "cannot open\nthe container:  bad data"}


def test_top_k_orders_by_probability_then_index():
    classes, scores = top_k(np.array([0.1, 0.4, 0.1, 0.4]), ["a", "b", "c", "d"], 3)
    assert classes == ["b", "d", "a"] and scores == [0.4, 0.4, 0.1]


def test_media_error_messages_lose_the_path():
    assert message_without_path("/x/y.mp4: no audio stream", "/x/y.mp4") == "no audio stream"
    assert message_without_path("no audio stream", "/x/y.mp4") == "no audio stream"


def test_format_text():
    p = Prediction("clip.mp4", ["Bounce_Chime", "Spin"], [0.9, 0.1])
    assert format_text([p]).splitlines() == ["clip.mp4", "  1. Bounce_Chime   90.00%",
                                             "  2. Spin           10.00%"]


def test_predict_rejects_bad_top_k(capsys):
    assert predict_command(["x.mp4"], top_k=0) == 2
    assert "--top-k 0: allowed: an integer >= 1" in capsys.readouterr().err


def test_a_model_that_cannot_be_loaded_is_one_line(tmp_path, capsys):
    (tmp_path / "assets.extra").mkdir()
    (tmp_path / "saved_model.pb").write_bytes(b"")
    (tmp_path / "assets.extra" / "maivar_export.json").write_text("{}")
    assert predict_command(["x.mp4"], saved_model=str(tmp_path)) == 1
    err = capsys.readouterr().err
    assert err.startswith("maivar: cannot load the model: ") and "missing key" in err


# ----------------------------------------------------------------------------- real clips


def test_predict_feeds_the_pixels_the_input_pipeline_yields(tiny, clip_paths):
    """The frames/audio-image predict classifies are the Beam record decoded for eval."""
    from maivar_tf import ops
    from maivar_tf.data.audio_image import render_audio_images
    from maivar_tf.data.video import load_clip

    cfg = tiny.run.cfg
    prepared, failures = prepare_clips([str(clip_paths[0])], cfg, REPRESENTATION)
    assert failures == [] and len(prepared) == 1
    clip = prepared[0]
    assert clip.frames.shape == (K, 224, 224, 3) and clip.frames.dtype == np.uint8
    assert clip.audio_image.shape == (299, 299, 3) and clip.audio_image.dtype == np.uint8
    assert set(clip.timings_ms) == {"prepare", "pipeline"}
    decoded = load_clip(clip_paths[0], cfg.data)
    # PNG is lossless: the audio-image is exactly the renderer's
    image = render_audio_images(decoded.waveform, REPRESENTATION, cfg.data.audio)[REPRESENTATION]
    np.testing.assert_array_equal(clip.audio_image, image)
    # frames went through JPEG (as stored for training): close to the decoded centre crop
    crop = ops.center_crop(decoded.video.frames, 224).numpy()
    assert np.abs(clip.frames.astype(int) - crop.astype(int)).mean() < 3.0


@pytest.mark.parametrize("ten_crop", [False, True])
def test_predict_real_clips_both_crops(tiny, clip_paths, ten_crop):
    """The whole predict path, centre crop and TSN ten crops: predict = the module's graph."""
    import dataclasses

    from maivar_tf.serving import as_numpy_outputs

    run = dataclasses.replace(tiny.run, ten_crop=ten_crop)
    paths = [str(p) for p in clip_paths[:2]]
    prepared, failures = prepare_clips(paths, run.cfg, REPRESENTATION, ten_crop=ten_crop)
    assert failures == []
    for clip in prepared:
        if ten_crop:  # whole frames (shorter side 256): the model takes the ten crops
            assert clip.frames.shape[0] == K and min(clip.frames.shape[1:3]) == 256
        else:
            assert clip.frames.shape == (K, 224, 224, 3)
    predictor = RunPredictor(run)
    predictions, failures = predict_files(paths, predictor, k=3)
    assert failures == [] and [p.file for p in predictions] == paths
    for clip, p in zip(prepared, predictions, strict=True):
        want = as_numpy_outputs(predictor.module.serve_media(clip.frames[None],
                                                             clip.audio_image[None]))
        np.testing.assert_allclose(p.probabilities, want["probabilities"][0], atol=1e-6)
        assert len(p.classes) == 3


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
def test_saved_model_predictions_equal_the_run(tiny, exported, run_results, clip_paths):
    predictions, _ = run_results
    saved = SavedModelPredictor(exported.path.parent)  # the model folder: highest version
    assert saved.path == exported.path
    assert saved.class_names == CLASSES and saved.num_segments == K
    assert saved.cfg == tiny.cfg and saved.ten_crop is False
    exported_preds, failures = predict_files(clip_paths, saved, k=5)
    assert failures == []
    for a, b in zip(predictions, exported_preds, strict=True):
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
        assert set(b.timings_ms) == {"prepare", "pipeline", "model"}


@pytest.mark.slow
def test_cli_predict_json_with_saved_model(exported, run_results, clip_paths, capsys):
    from maivar_tf import cli

    paths = [str(p) for p in clip_paths]
    rc = cli.main(["predict", *paths, "--saved-model", str(exported.path), "--json",
                   "--top-k", "3"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    doc = json.loads(out.out)
    assert doc["errors"] == []
    assert doc["model"] == {"saved_model": str(exported.path), "representation": REPRESENTATION,
                            "num_segments": K, "num_classes": len(CLASSES)}
    assert [p["file"] for p in doc["predictions"]] == paths
    for p, ref in zip(doc["predictions"], run_results[0], strict=True):
        assert [e["class"] for e in p["top_k"]] == ref.classes[:3] or np.allclose(
            [e["probability"] for e in p["top_k"]], ref.scores[:3], atol=1e-5)
        np.testing.assert_allclose([e["probability"] for e in p["top_k"]], ref.scores[:3],
                                   atol=1e-5)


@pytest.mark.slow
def test_predict_broken_files_are_reported_and_the_rest_classified(
        tiny, cfg_path, clip_paths, tmp_path, capsys, monkeypatch):
    from tests.conftest import write_test_media

    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video at all" * 100)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    silent = write_test_media(tmp_path / "silent.mp4", audio=False)
    missing = tmp_path / "missing.mp4"
    good = clip_paths[2]  # the UCF101 AVI (MPEG-4 + MP3)
    loaded = []

    def load_servable_run(cfg, run_dir, **kwargs):  # the session's run, with its stand-ins
        loaded.append((cfg, run_dir))
        return tiny.run

    monkeypatch.setattr(runs, "load_servable_run", load_servable_run)
    rc = predict_command([str(garbage), str(good), str(empty), str(silent), str(missing)],
                         cfg_path=str(cfg_path), run_dir=str(tiny.run_dir))
    out = capsys.readouterr()
    assert rc == 1
    assert loaded == [(tiny.cfg, tiny.run_dir)]
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

    # all good: exit 0; the run folder defaults to the config's train.output_dir
    rc = predict_command([str(good)], cfg_path=str(cfg_path), overrides=["train.seed=1"],
                         as_json=True)
    out = capsys.readouterr()
    assert rc == 0 and json.loads(out.out)["errors"] == []
    assert loaded[-1][1] == tiny.run_dir and loaded[-1][0].train.seed == 1


@pytest.mark.slow
def test_predict_features_equal_the_training_features(tiny, module, cfg_path, clip_paths,
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
    argv = ["--runner=DirectRunner", f"--config={cfg_path}"]
    for item in overrides:
        argv += ["--set", item]
    assert build_main(argv) == 0
    cfg = load_config(cfg_path, overrides)
    extract_features(cfg, splits=("test",), representations=[REPRESENTATION], progress=False,
                     video_backbone=tiny.run.video, audio_backbone=tiny.run.audio)
    fs = load_features(cfg.data.features_dir, "test", REPRESENTATION)
    assert len(fs) == 2

    prepared, failures = prepare_clips([str(p) for p in chosen], tiny.run.cfg, REPRESENTATION)
    assert failures == []
    for i, clip in enumerate(prepared):
        v, a = module.media_features(clip.frames[None], clip.audio_image[None])
        (row,) = np.flatnonzero(fs.labels == i)  # the CSV's classes are CLASSES[:2], sorted
        np.testing.assert_allclose(v.numpy()[0], fs.video[row], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(a.numpy()[0], fs.audio[row], rtol=1e-5, atol=1e-5)
