"""Serving and predict with segment selection (``model.selection``, ``model.budget``).

The tiny temporal-binding run of :mod:`tests.serving.temporal_run` (K=4) with a tiny preview
backbone and an untrained saliency scorer (:func:`maivar_tf.models.saliency.build_saliency_scorer`,
``clip`` supervision), loaded back by :func:`maivar_tf.runs.load_servable_run` from a copy of
the run folder with ``saliency.keras``. Checked: the selected indices against a NumPy top-k of
the scores the graph computed; the outputs against the Keras models called by hand on the
gathered segments; the backbones see k segments only; k = K equals no selection; the export
against the in-memory module; ``maivar predict`` in memory and from the export.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from maivar_tf.predict import (  # noqa: E402
    format_text,
    predict_command,
    predict_files,
    selection_overrides,
)
from maivar_tf.runs import load_servable_run  # noqa: E402
from maivar_tf.selection import topk_rule  # noqa: E402
from maivar_tf.serving import (  # noqa: E402
    SIGNATURE_FEATURES,
    SIGNATURE_MEDIA,
    SIGNATURE_WAVEFORM,
    as_numpy_outputs,
    export_servable,
    read_export_info,
    serving_module,
)
from maivar_tf.serving.predictors import RunPredictor, SavedModelPredictor  # noqa: E402
from tests.serving.helpers import CLASSES  # noqa: E402
from tests.serving.temporal_run import TB_K, segment_media  # noqa: E402

PREVIEW_DIM = 8
BUDGET = 2


def numpy_topk(scores: np.ndarray, k: int) -> np.ndarray:
    """The reference rule: the k highest, ties to the lower index, in time order."""
    return np.sort(np.argsort(-np.asarray(scores), axis=-1, kind="stable")[..., :k], axis=-1)


class Counting(tf.Module):
    """A BackboneFeatures stand-in that counts the images it is given (at run time)."""

    def __init__(self, fn):
        super().__init__()
        self.fn, self.dim = fn, fn.dim
        self.count = tf.Variable(0, dtype=tf.int64, trainable=False)

    def __call__(self, images, max_images=None):
        self.count.assign_add(tf.cast(tf.shape(images)[0], tf.int64))
        return self.fn(images, max_images=max_images)


@pytest.fixture(scope="module")
def sel(tb, tmp_path_factory):
    """The selecting run: ``run`` (audio_topk, k=2) loaded from disk, ``full`` (k=K)."""
    import keras

    from maivar_tf.models.saliency import build_saliency_scorer
    from tests.tiny_models import tiny_audio_backbone

    run_dir = tmp_path_factory.mktemp("sel") / "run"
    shutil.copytree(tb.run_dir, run_dir)
    keras.utils.set_random_seed(11)
    scorer = build_saliency_scorer(len(CLASSES), TB_K, PREVIEW_DIM, "clip", units=8,
                                   dropout=0.0)
    scorer.save(run_dir / "saliency.keras")
    preview = tiny_audio_backbone(299, dim=PREVIEW_DIM, seed=9)
    bb = (tb.run.video.model, tb.run.audio.model)

    def load(selection, budget):
        return load_servable_run(tb.cfg, run_dir, backbones=bb, preview=preview,
                                 selection=selection, budget=budget)

    return dataclasses.make_dataclass("Sel", ["run", "full", "uniform", "run_dir"])(
        load("audio_topk", BUDGET), load("audio_topk", TB_K), load("uniform", BUDGET), run_dir)


@pytest.fixture(scope="module")
def media(tb, clip_paths):
    prepared = segment_media(tb.cfg, [clip_paths[0], clip_paths[4], clip_paths[2]])
    return {"frames": np.stack([p.frames for p in prepared]),
            "images": np.stack([p.audio_image for p in prepared]),
            "times": np.stack([p.segment_times for p in prepared]), "paths": prepared}


@pytest.fixture(scope="module")
def sel_module(sel):
    return serving_module(sel.run)


def test_tf_topk_breaks_ties_by_time_like_numpy():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 3, (200, 7)).astype(np.float32)  # many ties
    for k in (1, 3, 7):
        np.testing.assert_array_equal(topk_rule(scores, k).numpy(), numpy_topk(scores, k))
    np.testing.assert_array_equal(topk_rule([[0.5, 0.5, 0.9, 0.5]], 2).numpy(), [[0, 2]])


def test_selected_indices_are_the_numpy_topk_of_the_graph_scores(sel_module, media):
    from maivar_tf.models.saliency import saliency_scores

    sel = sel_module.selector
    preview = sel.preview_features(tf.constant(media["images"]))
    scores = sel.scores(preview).numpy()
    assert scores.shape == (3, TB_K)
    # the graph's scores are the scorer's (F's NumPy path) on the same preview features
    np.testing.assert_allclose(scores, saliency_scores(sel.scorer, preview.numpy()), atol=1e-6)
    out = as_numpy_outputs(sel_module.serve_media(media["frames"], media["images"]))
    assert out["selected_segments"].dtype == np.int32
    assert out["selected_segments"].shape == (3, BUDGET)
    np.testing.assert_array_equal(out["selected_segments"], numpy_topk(scores, BUDGET))
    assert len({tuple(r) for r in out["selected_segments"]}) > 1  # the clips differ


def test_outputs_equal_the_keras_models_on_the_gathered_segments(sel, sel_module, media):
    """Backbones on the k gathered crops, the k-segment copy of the fusion head."""
    from maivar_tf.selection import model_for_segments

    out = as_numpy_outputs(sel_module.serve_media(media["frames"], media["images"]))
    idx = out["selected_segments"]
    rows = np.arange(3)[:, None]
    f, a = media["frames"][rows, idx], media["images"][rows, idx]
    b = 3 * BUDGET
    v = np.asarray(sel.run.video.model(f.reshape((b,) + f.shape[2:]).astype(np.float32)))
    au = np.asarray(sel.run.audio.model(a.reshape((b,) + a.shape[2:]).astype(np.float32)))
    head = model_for_segments(sel.run.fusion, BUDGET)
    logits = np.asarray(head({"video_features": v.reshape(3, BUDGET, -1),
                              "audio_segment_features": au.reshape(3, BUDGET, -1)}))
    logits = logits / sel.run.temperature
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(out["probabilities"], probs / probs.sum(-1, keepdims=True),
                               atol=1e-5)
    assert "segment_scores" not in out  # a selecting module does not serve the localiser


def test_backbones_run_on_the_k_selected_segments_only(sel, media):
    counted = {k: Counting(getattr(sel.run, k)) for k in ("video", "audio", "preview")}
    module = serving_module(dataclasses.replace(sel.run, **counted))
    module.serve_media(media["frames"], media["images"])
    assert {k: int(c.count.numpy()) for k, c in counted.items()} == {
        "video": 3 * BUDGET, "audio": 3 * BUDGET, "preview": 3 * TB_K}


def test_k_equal_to_K_gives_the_prediction_of_no_selection(sel, tb_module, media):
    full = serving_module(sel.full)
    out = as_numpy_outputs(full.serve_media(media["frames"], media["images"]))
    ref = as_numpy_outputs(tb_module.serve_media(media["frames"], media["images"]))
    np.testing.assert_array_equal(out["selected_segments"], np.tile(np.arange(TB_K), (3, 1)))
    np.testing.assert_allclose(out["probabilities"], ref["probabilities"], atol=1e-6)
    assert (out["top_classes"] == ref["top_classes"]).all()


def test_uniform_budget_is_tsn_segments_without_a_preview(sel, tb_module, media):
    module = serving_module(sel.uniform)
    assert module.selector.preview is None
    assert [s.name for s in module.input_signatures()[SIGNATURE_FEATURES]] == [
        "video_features", "audio_segment_features"]
    out = as_numpy_outputs(module.serve_media(media["frames"], media["images"]))
    np.testing.assert_array_equal(out["selected_segments"], [[1, 3]] * 3)  # segment_subset(4, 2)
    v, a = (t.numpy() for t in tb_module.media_features(media["frames"], media["images"]))
    feats = as_numpy_outputs(module.serving_default(v, a))
    np.testing.assert_allclose(feats["probabilities"], out["probabilities"], atol=1e-5)


@pytest.fixture(scope="module")
def sel_export(sel, tmp_path_factory):
    path = export_servable(sel.run, tmp_path_factory.mktemp("sel_export"), "tiny_sel")
    return path, tf.saved_model.load(str(path))


def test_export_with_selection_equals_the_module(sel_module, sel_export, tb_module, media):
    path, loaded = sel_export
    info = read_export_info(path)
    assert (info.config["model"]["selection"], info.config["model"]["budget"]) == (
        "audio_topk", BUDGET)
    assert "selected_segments" in info.outputs
    assert info.signatures[SIGNATURE_FEATURES][2] == {
        "name": "preview_features", "dtype": "float32", "shape": [-1, TB_K, PREVIEW_DIM]}
    frames, images = media["frames"], media["images"]
    v, a = (t.numpy() for t in tb_module.media_features(frames, images))
    p = sel_module.selector.preview_features(tf.constant(images)).numpy()
    wave = np.random.default_rng(0).normal(0, 0.1, (3, 22050 * 2)).astype(np.float32)
    calls = {SIGNATURE_FEATURES: {"video_features": v, "audio_segment_features": a,
                                  "preview_features": p},
             SIGNATURE_MEDIA: {"frames": frames, "audio_segment_images": images},
             SIGNATURE_WAVEFORM: {"frames": frames, "waveform": wave,
                                  "sample_rate": np.full([3], 22050, np.int32)}}
    for name, inputs in calls.items():
        mem = as_numpy_outputs(sel_module.signatures()[name](**inputs))
        out = as_numpy_outputs(loaded.signatures[name](
            **{k: tf.constant(x) for k, x in inputs.items()}))
        assert set(out) == set(mem) == set(info.outputs), name
        np.testing.assert_array_equal(out["selected_segments"], mem["selected_segments"])
        np.testing.assert_allclose(out["probabilities"], mem["probabilities"], atol=1e-5,
                                   err_msg=name)
    # features in, the same selection as media in (the preview features of the same images)
    feats = as_numpy_outputs(sel_module.serving_default(v, a, p))
    med = as_numpy_outputs(sel_module.serve_media(frames, images))
    np.testing.assert_array_equal(feats["selected_segments"], med["selected_segments"])
    np.testing.assert_allclose(feats["probabilities"], med["probabilities"], atol=1e-5)


def test_predict_reports_the_selected_segments(sel, sel_export, media, capsys):
    paths = [p.file for p in media["paths"][:2]]
    predictor = RunPredictor(sel.run)
    predictions, failures = predict_files(paths, predictor, k=2)
    assert failures == []
    mem = as_numpy_outputs(serving_module(sel.run).serve_media(media["frames"][:2],
                                                               media["images"][:2]))
    for i, p in enumerate(predictions):
        assert p.selected == mem["selected_segments"][i].tolist()
        np.testing.assert_allclose(p.selected_times_s, media["times"][i][p.selected])
        np.testing.assert_allclose(p.probabilities, mem["probabilities"][i], atol=1e-5)
        assert set(p.timings_ms) >= {"preview", "backbones", "head"}
    line = "  selected segments: " + ", ".join(f"{t:.2f} s"
                                               for t in predictions[0].selected_times_s)
    assert line in format_text(predictions).splitlines()
    code = predict_command(paths, saved_model=str(sel_export[0]), top_k=2, as_json=True)
    out = capsys.readouterr()
    assert code == 0, out.err
    doc = json.loads(out.out)
    assert (doc["model"]["selection"], doc["model"]["budget"]) == ("audio_topk", BUDGET)
    for pred, want in zip(doc["predictions"], predictions, strict=True):
        assert pred["selected_segments"] == want.selected
        np.testing.assert_allclose(pred["selected_times_s"], want.selected_times_s, atol=1e-6)
    assert isinstance(SavedModelPredictor(sel_export[0]).selection["budget"], int)


def test_set_overrides_the_selection_of_a_run(tb):
    from maivar_tf.config import load_config

    sets = ["data.segment_audio=true", "model.selection=audio_topk", "model.budget=2"]
    cfg = load_config(None, sets)
    assert selection_overrides(cfg, sets) == {"selection": "audio_topk", "budget": 2}
    assert selection_overrides(cfg, ["model.budget=2"]) == {"budget": 2}
    assert selection_overrides(cfg, ["data.segment_audio=true"]) == {}
