"""maivar ablate (maivar_tf.ablation): cells, reuse, skipping, statistics and report files,
with the training and the evaluation replaced by fakes whose figures are fixed by hand."""

import dataclasses
import json
import types

import numpy as np
import pytest

import maivar_tf.ablation as ablation
from maivar_tf.ablation_report import format_ablation_table, mean_curves
from maivar_tf.config import ConfigError, ExperimentConfig, TrainConfig, load_config

#: Fusion-stage validation accuracy per (fusion method, seed); None: no validation column.
CURVES = {"vmlp_init": {5: [0.5, 0.8, 0.9, 0.9, 0.9],  # final 0.9 -> epoch 3
                        6: [0.6, 0.7, 0.9, 0.95, 0.85],  # final 0.9 -> epoch 3
                        7: [0.9, 0.9, 0.9, 0.9, 0.9]},  # epoch 1
          "random_init": dict.fromkeys((5, 6, 7), [0.1, 0.2, 0.4, 0.8, 0.9]),  # final 0.7 -> 4
          "late": dict.fromkeys((5, 6, 7), None)}
#: Test top-1 of the fusion head per (method, seed) (the numbers of tests/test_stats.py).
FUSION_TOP1 = {"vmlp_init": [0.78, 0.80, 0.86], "random_init": [0.80, 0.85, 0.90],
               "late": [0.70, 0.70, 0.70]}


def _write_log(path, curve):
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = ["epoch,accuracy,loss,val_accuracy,val_loss"]
    for e, acc in enumerate(curve or [0.5, 0.5]):
        val = "NA,NA" if curve is None else f"{acc},{1 - acc}"
        rows.append(f"{e},{acc},{1 - acc},{val}")
    path.write_text("\n".join(rows) + "\n")


class FakeTraining:
    """Writes the stage files a run would (those not there yet) and records each call."""

    def __init__(self):
        self.calls = []

    def __call__(self, cfg, train, run_dir, donor):
        value = getattr(cfg.model, train.axis)  # the fake features name the ablated field
        seed = cfg.train.seed
        present = {s: (run_dir / f"{s}.keras").read_text()
                   for s in ("audio_mlp", "vmlp", "fusion") if (run_dir / f"{s}.keras").exists()}
        self.calls.append((value, seed, present, donor))
        for stage in ("audio_mlp", "vmlp", "fusion"):
            if stage not in present:
                (run_dir / f"{stage}.keras").write_text(f"{stage} {value} {seed}")
                curve = CURVES.get(cfg.model.fusion, {}).get(seed) if stage == "fusion" \
                    else [0.5, 0.6]
                _write_log(run_dir / stage / "log.csv", curve)
        i = seed - 5
        fusion = FUSION_TOP1.get(cfg.model.fusion, [0.9] * 3)[i] if train.axis == "fusion" \
            else {"mfcc": 0.6, "chromagram": 0.9}[value]
        return types.SimpleNamespace(vmlp=0.5, audio_mlp=0.25, fusion=fusion, run_dir=run_dir)


def fake_evaluate(models, features, out_dir, tsne=True):
    return {"models": {name: {"top1": top1, "mean_class_accuracy": top1}
                       for name, top1 in models.items()}}


@pytest.fixture
def fakes(monkeypatch):
    """No features on disk and no Keras evaluation: the fake runs carry their accuracies."""
    axis = {}
    monkeypatch.setattr(ablation, "evaluate_models", fake_evaluate)
    monkeypatch.setattr(ablation, "cell_features",
                        lambda cfg, d, split: types.SimpleNamespace(axis=axis["over"]))
    return axis


def _config(tmp_path):
    return ExperimentConfig(name="abl", train=TrainConfig(output_dir=str(tmp_path / "run"),
                                                          seed=5))


def test_fusion_ablation_reuses_stages_and_reports_seeds(tmp_path, fakes):
    fakes["over"] = "fusion"
    train = FakeTraining()
    values = ["vmlp_init", "random_init", "late"]
    report = ablation.run_ablation(_config(tmp_path), "fusion", values, 3, train_fn=train,
                                   extract=False)
    out = tmp_path / "run" / "ablation"
    cell = {(v, s): out / "fusion" / v / f"seed-{s}" for v in values for s in (5, 6, 7)}
    assert report["seeds"] == [5, 6, 7] and report["baseline"] == "vmlp_init"
    # value-major, seeds train.seed + i; the first value trains every stage, the others get
    # the audio MLP and VMLP of the same seed copied in before they train
    assert [(v, s) for v, s, _, _ in train.calls] == list(cell)
    for value, seed, present, donor in train.calls:
        if value == "vmlp_init":
            assert present == {} and donor is None
        else:
            assert donor == cell["vmlp_init", seed]
            assert present == {"audio_mlp": f"audio_mlp vmlp_init {seed}",
                               "vmlp": f"vmlp vmlp_init {seed}"}
            assert (cell[value, seed] / "vmlp" / "log.csv").read_bytes() == \
                (cell["vmlp_init", seed] / "vmlp" / "log.csv").read_bytes()
    rows = report["rows"]
    assert rows["random_init"]["fusion_top1"]["mean"] == pytest.approx(0.85)
    assert rows["random_init"]["fusion_top1"]["std"] == pytest.approx(0.05)
    d = rows["random_init"]["fusion_vs_baseline"]
    assert (d["n"], d["mean"]) == (3, pytest.approx(0.11 / 3))
    assert (d["ci_low"], d["ci_high"]) == (pytest.approx(-0.0012792, abs=1e-6),
                                           pytest.approx(0.0746125, abs=1e-6))
    assert rows["vmlp_init"]["fusion_vs_baseline"] is None
    assert rows["vmlp_init"]["epochs_to_95"]["values"] == [3, 3, 1]
    assert rows["random_init"]["epochs_to_95"]["values"] == [4, 4, 4]
    assert rows["late"]["epochs_to_95"]["values"] == [None] * 3  # NA columns: no curve
    table = (out / "report.md").read_text()
    assert (out / "fusion" / "report.md").read_text() == table
    lines = table.splitlines()
    assert lines[2] == ("| Fusion | Video-only top-1 (%) | Audio-only top-1 (%) | Fusion top-1 (%) "
                        "| Fusion vs vmlp_init (pp, 95% CI) | Epochs to 95% of final val acc |")
    assert lines[4] == "| vmlp_init | 50.00 ± 0.00 | 25.00 ± 0.00 | 81.33 ± 4.16 | baseline | 2.3 ± 1.2 |"
    assert lines[5] == ("| random_init | 50.00 ± 0.00 | 25.00 ± 0.00 | **85.00 ± 5.00** | "
                        "+3.67 [-0.13, +7.46] | 4.0 ± 0.0 |")
    assert lines[6].startswith("| late | ") and lines[6].endswith(" | n/a |")
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["rows"] == json.loads(json.dumps(rows))
    assert on_disk["cells"][0]["logs"]["fusion"]["val_accuracy"] == CURVES["vmlp_init"][5]
    for d in (out, out / "fusion"):
        assert (d / "convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the figure's curves: mean and min-max band over the seeds; late has none
    curves = mean_curves(report)
    assert list(curves) == ["vmlp_init", "random_init"]
    m, lo, hi = curves["vmlp_init"]
    np.testing.assert_allclose(m, [2 / 3, 0.8, 0.9, 0.9166667, 0.8833333], atol=1e-6)
    np.testing.assert_allclose(lo, [0.5, 0.7, 0.9, 0.9, 0.85])
    np.testing.assert_allclose(hi, [0.9, 0.9, 0.9, 0.95, 0.9])

    # Re-run: finished cells are read back, not trained; a cell without its result retrains.
    (cell["late", 6] / ablation.CELL_RESULT).unlink()
    again = FakeTraining()
    rerun = ablation.run_ablation(_config(tmp_path), "fusion", values, 3, train_fn=again,
                                  extract=False)
    assert [(v, s) for v, s, _, _ in again.calls] == [("late", 6)]
    assert rerun["rows"] == rows


def test_representation_axis_shares_the_vmlp_only_and_one_seed_has_no_interval(tmp_path, fakes):
    fakes["over"] = "representation"
    train = FakeTraining()
    cfg = _config(tmp_path)  # model.representation: chromagram, the baseline
    report = ablation.run_ablation(cfg, "representation", ["mfcc", "chromagram"], 1,
                                   train_fn=train, extract=False)
    assert report["baseline"] == "chromagram"
    (_, _, first, _), (_, _, second, donor) = train.calls
    assert first == {} and second == {"vmlp": "vmlp mfcc 5"}  # the audio MLP is not shared
    assert donor == tmp_path / "run" / "ablation" / "representation" / "mfcc" / "seed-5"
    d = report["rows"]["mfcc"]["fusion_vs_baseline"]
    assert d["mean"] == pytest.approx(-0.3) and d["ci_low"] is None and d["ci_high"] is None
    table = (tmp_path / "run" / "ablation" / "report.md").read_text()
    assert table.splitlines()[0] == ("### abl: representation ablation (test top-1, mean ± sample "
                                     "std over 1 seed: 5)")
    assert "| mfcc | 50.00 | 25.00 | 60.00 | -30.00 (1 seed: no interval) | 3.0 |" in table


def test_cells_are_validated_before_anything_trains(tmp_path):
    cfg = _config(tmp_path)
    cell = ablation.cell_config(cfg, "fusion", "late", 7)
    assert (cell.model.fusion, cell.train.seed, cell.model.representation) == \
        ("late", 7, cfg.model.representation)
    with pytest.raises(ConfigError, match="model.fusion: invalid value 'bogus'"):
        ablation.plan_cells(cfg, "fusion", ["vmlp_init", "bogus"], [0], tmp_path)
    with pytest.raises(ValueError, match="repeated fusion values"):
        ablation.plan_cells(cfg, "fusion", ["late", "late"], [0], tmp_path)
    with pytest.raises(ValueError, match="unknown ablation axis 'dropout'"):
        ablation.axis_values("dropout")
    with pytest.raises(ValueError, match="at least 1"):
        ablation.seed_values(cfg, 0)
    assert ablation.seed_values(cfg, 3) == [5, 6, 7]
    assert ablation.default_values(cfg, "representation") == tuple(cfg.data.representations)


def test_fusion_defaults_need_segment_audio_for_temporal_binding_and_dropout_axis(tmp_path):
    cfg = _config(tmp_path)
    assert "temporal_binding" not in ablation.default_values(cfg, "fusion")
    segmented = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, segment_audio=True))
    assert ablation.default_values(segmented, "fusion")[-1] == "temporal_binding"
    assert ablation.default_values(cfg, "modality_dropout") == ("0", "0.5")
    assert ablation.baseline_value(cfg, "modality_dropout") == "0"
    cell = ablation.cell_config(cfg, "modality_dropout", "0.5", 6)
    assert (cell.train.fusion.modality_dropout, cell.train.seed) == (0.5, 6)
    with pytest.raises(ConfigError, match="modality_dropout"):
        ablation.cell_config(cfg, "modality_dropout", "1.5", 6)
    untrimmed = load_config("configs/synthetic_untrimmed.yaml")
    assert untrimmed.model.localisation and untrimmed.model.fusion == "temporal_binding"
    clip = ablation.cell_config(untrimmed, "fusion", "vmlp_init", 0)
    assert (clip.model.fusion, clip.model.localisation) == ("vmlp_init", False)
    assert ablation.cell_config(untrimmed, "fusion", "temporal_binding", 0).model.localisation


def test_silent_audio_and_localisation_columns_summarise_the_seeds():
    def cell(value, seed, fusion, silent, seg):
        top = {s: {"top1": fusion, "mean_class_accuracy": fusion} for s in ("video", "audio",
                                                                           "fusion")}
        return {"value": value, "seed": seed, "test": top,
                "test_silent": {"fusion": {"top1": silent}},
                "localisation": {"segment_accuracy": seg, "event_accuracy": seg + 0.1,
                                 "baseline_all_event": 0.4, "baseline_all_background": 0.6},
                "convergence": {"epochs_to_95": None, "final_val_accuracy": None,
                                "val_accuracy": [], "val_loss": []}}

    cells = [cell("0", 0, 0.9, 0.2, 0.6), cell("0", 1, 0.8, 0.4, 0.8),
             cell("0.5", 0, 0.9, 0.8, 0.7), cell("0.5", 1, 0.9, 0.8, 0.7)]
    rows = ablation.summarise(cells, ["0", "0.5"], "0")
    assert rows["0"]["fusion_silent_top1"]["mean"] == pytest.approx(0.3)
    assert rows["0"]["localisation_segment_accuracy"]["std"] == pytest.approx(0.1414214)
    report = {"name": "md", "axis": "modality_dropout", "baseline": "0", "values": ["0", "0.5"],
              "seeds": [0, 1], "rows": rows, "cells": cells}
    lines = format_ablation_table(report).splitlines()
    assert lines[2].endswith("| Fusion top-1, silent audio (%) | Localisation segment acc., C+1 "
                             "way (%) | Event/background acc. (%) | Baseline: all event (%) | "
                             "Baseline: all background (%) |")
    assert lines[4].endswith("| n/a | 30.00 ± 14.14 | 70.00 ± 14.14 | 80.00 ± 14.14 | "
                             "40.00 ± 0.00 | 60.00 ± 0.00 |")
    assert lines[5].endswith("| 80.00 ± 0.00 | 70.00 ± 0.00 | 80.00 ± 0.00 | 40.00 ± 0.00 | "
                             "60.00 ± 0.00 |")


def test_temporal_binding_cells_get_their_own_per_segment_features(tmp_path, monkeypatch):
    from maivar_tf.localisation import needs_segments

    monkeypatch.setattr(ablation, "evaluate_models", fake_evaluate)
    monkeypatch.setattr(ablation, "cell_features", lambda cfg, d, split: types.SimpleNamespace(
        axis="fusion", segments=needs_segments(cfg)))
    cfg = _config(tmp_path)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, segment_audio=True))
    seen = []

    class Recording(FakeTraining):
        def __call__(self, cfg, train, run_dir, donor):
            seen.append((cfg.model.fusion, train.segments))
            return super().__call__(cfg, train, run_dir, donor)

    ablation.run_ablation(cfg, "fusion", ["vmlp_init", "temporal_binding"], 1,
                          train_fn=Recording(), extract=False)
    # the clip-level cell's features (loaded first) are not reused for temporal binding
    assert seen == [("vmlp_init", False), ("temporal_binding", True)]
