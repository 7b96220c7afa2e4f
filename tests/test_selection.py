"""Audio-guided segment selection (issue 12): the indices, the k-segment heads, the saliency
scorer and its stage, the selected predictions and the curve's table and figure.

The feature sets are the small stand-ins of the temporal-binding tests (K = 4, C = 3) plus a
preview feature set whose event segments carry the class pattern.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from maivar_tf import distribute, efficiency, runs, training
from maivar_tf.artifacts import RunInfo
from maivar_tf.config import ExperimentConfig, ModelConfig, StageConfig, TrainConfig
from maivar_tf.config.data import DataConfig
from maivar_tf.data.decode import segment_subset
from maivar_tf.evaluation import model_inputs, model_outputs
from maivar_tf.models import heads, saliency, temporal
from maivar_tf.saliency_stage import saliency_stage, saliency_xy
from maivar_tf.selection import (
    model_for_segments,
    oracle_indices,
    preview_rows,
    select_segments,
    topk_indices,
    uniform_indices,
)
from maivar_tf.selection_curve import FULL, format_curve_table, plot_curve, runs_in
from tests.models.test_temporal import DA, DV, C, K, toy

DP = 5


def _reference(scores, k):
    return np.sort(np.argsort(-np.asarray(scores), axis=-1, kind="stable")[..., :k], axis=-1)


def test_topk_indices_equal_numpy_with_ties_broken_by_time():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, (200, 16)).astype(np.float32)  # many ties
    for k in (1, 2, 4, 8, 16):
        got = topk_indices(scores, k)
        np.testing.assert_array_equal(got, _reference(scores, k))
        assert got.dtype == np.int64 and got.shape == (200, k)
    np.testing.assert_array_equal(topk_indices([[1, 5, 5, 5, 0]], 2), [[1, 2]])
    np.testing.assert_array_equal(topk_indices([[0.0, 0, 0, 0]], 3), [[0, 1, 2]])
    np.testing.assert_array_equal(topk_indices([[0.1, 0.9, 0.2, 0.8]], 2), [[1, 3]])
    with pytest.raises(ValueError, match="1 <= k <= K=4"):
        topk_indices(np.zeros((1, 4)), 5)
    with pytest.raises(ValueError, match="NaN"):
        topk_indices([[0.0, np.nan]], 1)


def test_uniform_and_oracle_indices():
    assert uniform_indices(16, 4).tolist() == segment_subset(16, 4) == [2, 6, 10, 14]
    assert uniform_indices(16, 16).tolist() == list(range(16))
    labels = np.array([[-1, 2, 2, -1, 2], [-1, -1, -1, -1, -1], [0, -1, -1, -1, 0]])
    np.testing.assert_array_equal(oracle_indices(labels, 2), [[1, 2], [0, 1], [0, 4]])
    np.testing.assert_array_equal(oracle_indices(labels, 4), [[0, 1, 2, 4], [0, 1, 2, 3],
                                                               [0, 1, 2, 4]])
    with pytest.raises(ValueError, match="annotated spans"):
        oracle_indices(None, 2)


def _vmlp(pooling="mean"):
    cfg = ModelConfig(hidden_units=8, dropout=0.1, video_pooling=pooling)
    keras.utils.set_random_seed(0)
    return heads.build_video_mlp(C, K, cfg, feature_dim=DV), cfg


def _tb(vmlp, window=1):
    cfg = ModelConfig(hidden_units=8, dropout=0.1, fusion="temporal_binding",
                      binding_window=window, audio_rows_init="glorot_uniform")
    return temporal.build_temporal_binding(vmlp, cfg, audio_dim=DA, seed=3)


def test_model_for_segments_keeps_layers_and_weights_and_pools_over_the_selected():
    f = toy(3)
    vmlp, _ = _vmlp()
    tb = _tb(vmlp)
    assert model_for_segments(tb, K) is tb  # k = K: the model itself
    for model in (vmlp, tb):
        two = model_for_segments(model, 2)
        assert [t.shape[1] for t in two.inputs] == [2] * len(two.inputs)
        assert [layer.name for layer in two.layers] == [layer.name for layer in model.layers]
        for a, b in zip(two.get_weights(), model.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
        # mean over the 2 selected = the K-model on them repeated twice
        sel, tiled = select_segments(f, [1, 3]), select_segments(f, [1, 3, 1, 3])
        np.testing.assert_allclose(model_outputs(two, model_inputs(two, sel)),
                                   model_outputs(model, model_inputs(model, tiled)),
                                   rtol=1e-5, atol=1e-5)
    flat, _ = _vmlp("flatten")
    with pytest.raises(ValueError, match="depend on K"):
        model_for_segments(flat, 2)


def _preview(features, seed=0):
    """Preview features: the class pattern on the event segments, noise elsewhere."""
    rng = np.random.default_rng(seed)
    patterns = np.random.default_rng(7).choice([-2.0, 2.0], (C, DP)).astype(np.float32)
    event = np.asarray(features.segment_labels) >= 0
    x = rng.normal(0, 0.5, (len(features.ids), K, DP)).astype(np.float32)
    x += event[..., None] * patterns[features.labels][:, None, :]
    return SimpleNamespace(ids=np.asarray(features.ids), audio_segments=x)


def test_saliency_scores_follow_the_definition_and_load_in_safe_mode(tmp_path):
    x = np.random.default_rng(1).normal(size=(6, K, DP)).astype(np.float32)
    clip = saliency.build_saliency_scorer(C, K, DP, "clip", units=4)
    seg = keras.Model(clip.input, clip.get_layer(saliency.SEGMENT_LOGITS_LAYER).output)
    logits = np.asarray(seg(x, training=False), np.float64)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    cls = logits.mean(axis=1).argmax(-1)
    np.testing.assert_allclose(saliency.saliency_scores(clip, x),
                               p[np.arange(6), :, cls], rtol=1e-5, atol=1e-6)
    events = saliency.build_saliency_scorer(C, K, DP, "segments", units=4)
    assert saliency.saliency_supervision(events) == "segments"
    assert events.output.shape[1:] == (K, 2)
    s = saliency.saliency_scores(events, x)
    assert s.shape == (6, K) and np.all((s > 0) & (s < 1))
    clip.save(tmp_path / "s.keras")
    loaded = runs.load_head(tmp_path / "s.keras")
    np.testing.assert_allclose(saliency.saliency_scores(loaded, x),
                               saliency.saliency_scores(clip, x), rtol=1e-6)
    with pytest.raises(ValueError, match="allowed: clip, segments"):
        saliency.build_saliency_scorer(C, K, DP, "frames")


def test_preview_rows_pair_by_id_and_segments_supervision_needs_labels():
    f = toy(2)
    prev = _preview(f)
    order = np.arange(len(f.ids))[::-1]
    shuffled = SimpleNamespace(ids=prev.ids[order], audio_segments=prev.audio_segments[order])
    np.testing.assert_array_equal(preview_rows(shuffled, f.ids[2:4]), prev.audio_segments[2:4])
    with pytest.raises(ValueError, match="no preview features"):
        preview_rows(prev, np.array(["nope"]))
    with pytest.raises(ValueError, match="use model.saliency: clip"):
        saliency_xy(dataclasses.replace(f, segment_labels=None), prev, "segments")


def _experiment(tmp_path, supervision="clip"):
    stage = StageConfig(epochs=1, learning_rate=1e-2, batch_size=8)
    model = ModelConfig(hidden_units=8, dropout=0.1, video_pooling="mean",
                        fusion="temporal_binding", selection="audio_topk", budget=2,
                        saliency=supervision)
    return ExperimentConfig(
        name="sel", data=DataConfig(segment_audio=True), model=model,
        train=TrainConfig(strategy="default", audio=stage, video=stage, fusion=stage, seed=1,
                          saliency=StageConfig(epochs=30, learning_rate=1e-2, batch_size=32),
                          output_dir=str(tmp_path)))


def test_saliency_stage_trains_reloads_ranks_events_and_k_equal_K_is_no_selection(tmp_path):
    train, test = toy(8, seed=0), toy(4, seed=1)
    prev = _preview(train)
    run = training.run_algorithm1(_experiment(tmp_path), train, None, run_dir=tmp_path,
                                  verbose=0, preview=prev)
    info = RunInfo.read(tmp_path)
    assert info.stages["saliency"]["supervision"] == "clip"
    assert info.stages["saliency"]["epochs"] == 30
    assert run.histories["saliency"]["epoch"][-1] == 29.0
    loaded = runs.load_run(tmp_path)
    assert loaded.saliency is not None and runs.STAGES == ("audio_mlp", "vmlp", "fusion")
    test_prev = _preview(test, seed=5).audio_segments
    picked = efficiency.selection_indices("audio_topk", 2, test, scorer=loaded.saliency,
                                          preview=test_prev)
    np.testing.assert_array_equal(
        picked, topk_indices(saliency.saliency_scores(loaded.saliency, test_prev), 2))
    hit = np.take_along_axis(test.segment_labels >= 0, picked, axis=1).mean()
    assert hit >= 0.9  # the scorer found the event segments (2 of 4 per clip)
    full = efficiency.selection_indices("audio_topk", K, test, scorer=loaded.saliency,
                                        preview=test_prev)
    for model in (loaded.fusion, loaded.vmlp):
        np.testing.assert_array_equal(
            efficiency.selected_logits(model, test, full),
            model_outputs(model, model_inputs(model, test)))
    # repeated: the stage is loaded, not retrained
    again = training.run_algorithm1(_experiment(tmp_path), train, None, run_dir=tmp_path,
                                    verbose=0, preview=prev)
    np.testing.assert_array_equal(again.saliency.get_weights()[2],
                                  loaded.saliency.get_weights()[2])


def test_segments_supervision_trains_on_event_labels(tmp_path):
    train, strategy = toy(4), distribute.get_strategy("default")
    cfg = _experiment(tmp_path, "segments")
    model, info = saliency_stage(cfg, train, None, strategy, tmp_path, preview=_preview(train),
                                 verbose=0)
    assert model.output.shape[1:] == (K, 2) and info["supervision"] == "segments"
    assert (tmp_path / "saliency.keras").exists() and info["epochs"] == 30
    with pytest.raises(ValueError, match="segment labels"):
        saliency_stage(cfg, dataclasses.replace(train, segment_labels=None), None, strategy,
                       tmp_path / "b", preview=_preview(train), verbose=0)


def _curve_report():
    def cell(mode, k, accs, macs):
        a = np.array(accs)
        return {"mode": mode, "k": k, "fusion": accs, "video": accs, "fusion_mean": a.mean(),
                "fusion_std": a.std(), "fusion_min": a.min(), "fusion_max": a.max(),
                "video_mean": a.mean(), "macs": macs, "wall_ms": 2.0 * k,
                "event_fraction": 0.5}
    return {"num_segments": 16, "modes": ["uniform", "audio_topk"], "cells": [
        cell(FULL, 16, [0.9, 0.8, 1.0], 16e9), cell("uniform", 4, [0.5, 0.6, 0.7], 4e9),
        cell("audio_topk", 4, [0.8, 0.9, 0.85], 4.5e9)]}


def test_curve_table_and_figure(tmp_path):
    table = format_curve_table(_curve_report()).splitlines()
    assert len(table) == 5 and "3 runs" in table[0]
    assert table[2].startswith("| full | 16 | 90.00 ± 8.16 |") and "| 100.0% |" in table[2]
    assert table[4].startswith("| audio_topk | 4 | 85.00 ± 4.08 |") and "| 28.1% |" in table[4]
    png = plot_curve(_curve_report(), tmp_path / "c.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    for seed in (1, 0):
        (tmp_path / "abl" / f"seed-{seed}").mkdir(parents=True)
        (tmp_path / "abl" / f"seed-{seed}" / "run_info.json").write_text("{}")
    assert [p.name for p in runs_in(tmp_path / "abl")] == ["seed-0", "seed-1"]
    with pytest.raises(FileNotFoundError, match="no run folders"):
        runs_in(tmp_path / "c.png")


def test_selection_costs_count_k_frames_K_previews_and_the_heads():
    from maivar_tf.costs import count_macs
    from tests.tiny_models import tiny_audio_backbone, tiny_video_backbone

    vmlp, _ = _vmlp()
    tb = _tb(vmlp)
    scorer = saliency.build_saliency_scorer(C, K, DP, "clip", units=4)
    backbones = {"video": tiny_video_backbone(32), "audio": tiny_audio_backbone(26),
                 "preview": tiny_audio_backbone(13, dim=DP)}
    costs = efficiency.selection_costs(tb, backbones, 2, K, scorer=scorer, repeats=1)
    video, audio, preview = (count_macs(backbones[p]) for p in ("video", "audio", "preview"))
    assert preview < audio < video
    m = costs["macs"]
    assert (m["visual"], m["audio"], m["preview"]) == (2 * video, 2 * audio, K * preview)
    assert m["heads"] == count_macs(model_for_segments(tb, 2)) + count_macs(scorer) > 0
    assert m["total"] == sum(v for p, v in m.items() if p != "total")
    assert set(costs["wall_ms"]) == {"visual", "audio", "preview", "heads", "total"}
    assert all(v > 0 for v in costs["wall_ms"].values())
    assert costs["timed"]["visual"] == "tiny_video on [2, 32, 32, 3]"
    uniform = efficiency.selection_costs(tb, {k: v for k, v in backbones.items()
                                              if k != "preview"}, 2, K, timing=False)
    assert "preview" not in uniform["macs"] and "wall_ms" not in uniform


def test_plain_evaluate_reports_the_cost_of_all_k_segments(tmp_path, monkeypatch):
    import json
    import types

    from maivar_tf import efficiency, runs

    info = types.SimpleNamespace(features_dir=str(tmp_path / "features"), audio_backbone="r18",
                                 num_segments=16)
    monkeypatch.setattr(runs, "load_run", lambda d: types.SimpleNamespace(fusion="F", info=info))
    seen = {}

    def costs(fusion, backbones, k, num_segments, repeats):
        seen.update(fusion=fusion, backbones=backbones, k=k, K=num_segments)
        return {"macs": {"visual": 2e9, "total": 3e9}, "wall_ms": {"total": 12.5}}

    monkeypatch.setattr(efficiency, "selection_costs", costs)
    monkeypatch.setattr(efficiency, "run_backbones", lambda d, a, p: {"video": (d, a, p)})
    report = tmp_path / "report.json"
    report.write_text('{"models": {}}')
    line = efficiency.full_cost(tmp_path, report)
    assert line == ("cost per video (all 16 segments): 3.000 GMACs, 12.5 ms on this machine "
                    "(backbones + heads; decoding not timed)")
    assert seen == {"fusion": "F", "backbones": {"video": (info.features_dir, "r18", None)},
                    "k": 16, "K": 16}
    assert json.loads(report.read_text())["costs"]["macs"]["total"] == 3e9

    def broken(d, a, p):
        raise ValueError("the video backbone was handed in by code")

    monkeypatch.setattr(efficiency, "run_backbones", broken)
    assert efficiency.full_cost(tmp_path, report) == (
        "cost per video: n/a (ValueError: the video backbone was handed in by code)")
