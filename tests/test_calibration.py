"""Temperature scaling (Guo et al. 2017): the fitted temperature, the ECE against hand-computed
values, the reliability diagram, the held-out split and what a run records."""

from __future__ import annotations

import dataclasses
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from maivar_tf import calibration, training
from maivar_tf.artifacts import RunInfo
from maivar_tf.calibration import (
    calibration_record,
    expected_calibration_error,
    fit_temperature,
    holdout_validation,
    reliability_diagram,
    scaled_softmax,
)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def calibrated_logits(n: int = 2000, c: int = 8, seed: int = 0):
    """Logits and labels drawn from softmax(logits): calibrated at T = 1 by construction."""
    rng = np.random.default_rng(seed)
    logits = 2.0 * rng.normal(size=(n, c))
    p = softmax(logits)
    labels = (p.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1)
    return logits, labels


@pytest.mark.parametrize("scale", [3.0, 1.0, 0.5])
def test_fit_temperature_recovers_the_scale_of_the_logits(scale):
    logits, labels = calibrated_logits()
    t = fit_temperature(scale * logits, labels)
    assert t == pytest.approx(scale, rel=0.08)
    assert fit_temperature(scale * logits, labels) == t  # deterministic


# 5 examples, 2 classes, 15 bins of width 1/15. Hand-computed:
#   conf 0.90 right -> bin 13;  0.95 wrong -> bin 14;  0.62, 0.65 right -> bin 9;  0.55 wrong -> 8
#   ECE = 1/5 |1 - 0.90| + 1/5 |0 - 0.95| + 2/5 |1 - 0.635| + 1/5 |0 - 0.55| = 0.466
#   with one bin: |3/5 - 3.67/5| = 0.134
ECE_PROBS = np.array([[0.90, 0.10], [0.95, 0.05], [0.62, 0.38], [0.35, 0.65], [0.55, 0.45]])
ECE_LABELS = np.array([0, 1, 0, 1, 1])


def test_expected_calibration_error_by_hand():
    assert expected_calibration_error(ECE_PROBS, ECE_LABELS) == pytest.approx(0.466, abs=1e-12)
    assert expected_calibration_error(ECE_PROBS, ECE_LABELS, bins=1) == pytest.approx(0.134)
    exact = np.eye(3)[[0, 1, 2, 2]]  # confident and right: perfectly calibrated
    assert expected_calibration_error(exact, np.array([0, 1, 2, 2])) == 0.0
    with pytest.raises(ValueError, match="non-finite"):
        expected_calibration_error(np.full((2, 2), np.nan), np.array([0, 1]))


def test_temperature_scaling_lowers_the_ece_of_overconfident_logits_and_keeps_predictions():
    logits, labels = calibrated_logits(seed=1)
    val, test = slice(0, 1000), slice(1000, None)
    t = fit_temperature(3.0 * logits[val], labels[val])
    before = np.asarray(scaled_softmax(3.0 * logits[test]))
    after = np.asarray(scaled_softmax(3.0 * logits[test], t))
    np.testing.assert_allclose(after, softmax(3.0 * logits[test] / t), atol=1e-6)
    np.testing.assert_array_equal(after.argmax(1), before.argmax(1))
    ece_before = expected_calibration_error(before, labels[test])
    ece_after = expected_calibration_error(after, labels[test])
    assert ece_before > 0.2 and ece_after < 0.05, (ece_before, ece_after)


def test_reliability_diagram_is_a_png(tmp_path):
    from PIL import Image

    logits, labels = calibrated_logits(n=300)
    path = reliability_diagram({"before": softmax(3 * logits), "after": softmax(logits)},
                               labels, tmp_path / "sub" / "reliability.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        w, h = im.size
    assert w > 1.8 * h  # two panels side by side


def ucf_features(groups_per_class: int = 5, clips: int = 4):
    from maivar_tf.features import FeatureSet

    names = ("A_x", "B_y")
    ids = [f"{c}/v_{c}_g{g:02d}_c{k:02d}.avi" for c in names
           for g in range(1, groups_per_class + 1) for k in range(1, clips + 1)]
    n = len(ids)
    labels = np.repeat(np.arange(2), n // 2)
    return FeatureSet(ids=np.array(ids), video=np.zeros((n, 2, 3), np.float32),
                      audio=np.zeros((n, 4), np.float32), labels=labels, class_names=names,
                      representation="chromagram")


def test_holdout_validation_takes_each_classes_last_whole_groups_whatever_the_seed():
    fs = ucf_features()
    train, val = holdout_validation(fs, 0.2)
    assert len(train) + len(val) == len(fs) and not set(train.ids) & set(val.ids)
    assert np.bincount(val.labels).tolist() == [4, 4]  # one group of 4 clips per class

    def group(i):
        return i.rsplit("_c", 1)[0]

    assert sorted({group(i) for i in val.ids}) == ["A_x/v_A_x_g05", "B_y/v_B_y_g05"]
    assert not {group(i) for i in train.ids} & {group(i) for i in val.ids}
    # a dataset grown by two groups per class keeps its earlier training rows
    grown_train, grown_val = holdout_validation(ucf_features(groups_per_class=7), 0.3)
    assert sorted({group(i)[-3:] for i in grown_val.ids}) == ["g06", "g07"]
    np.testing.assert_array_equal(grown_train.ids, fs.ids)
    one_group = ucf_features(groups_per_class=1)  # nothing can be held out of one group
    train, val = holdout_validation(one_group, 0.5)
    assert train is one_group and val is None


def test_a_run_without_validation_records_temperature_one_and_old_runs_read_as_one():
    record = calibration_record(None, None)
    assert record["temperature"] == 1.0 and record["fitted"] is False
    assert "no validation split" in record["note"]
    info = RunInfo(class_names=("a", "b"), representation="chromagram", num_segments=2,
                   video_feature_dim=3, audio_feature_dim=4, config={})
    old = {k: v for k, v in info.to_json().items() if k != "calibration"}
    assert RunInfo.from_json(json.loads(json.dumps(old))).temperature == 1.0
    assert dataclasses.replace(info, calibration={"temperature": 2.5}).temperature == 2.5


def test_algorithm1_fits_the_temperature_on_the_held_out_validation_split(tmp_path,
                                                                          monkeypatch):
    """The wiring, with a ``train_stage`` that builds each head without fitting it."""
    from tests.test_evaluation import feature_set

    seen = {}

    def untrained_stage(plan, build, train_xy, val_xy, *args, **kwargs):
        seen[plan.name] = (len(train_xy[1]), None if val_xy is None else len(val_xy[1]))
        return build(), {"skipped": False}

    monkeypatch.setattr(training, "train_stage", untrained_stage)
    cfg = training_config(val_fraction=0.25)
    fs = feature_set(n_per_class=8, signal=6.0)
    run = training.run_algorithm1(cfg, fs, run_dir=tmp_path / "held", verbose=0)
    assert seen == {s: (24, 8) for s in ("audio_mlp", "vmlp", "fusion")}
    _, val = holdout_validation(fs, 0.25)
    logits = np.asarray(run.fusion({"video_features": val.video, "audio_features": val.audio},
                                   training=False))
    info = RunInfo.read(tmp_path / "held")
    assert (info.num_train, info.num_val) == (24, 8)
    assert info.calibration["fitted"] and info.calibration["num_examples"] == 8
    assert info.temperature == pytest.approx(fit_temperature(logits, val.labels))
    assert run.temperature == info.temperature != 1.0
    no_val = training.run_algorithm1(training_config(val_fraction=0.0), fs,
                                     run_dir=tmp_path / "none", verbose=0)
    assert no_val.temperature == 1.0 and not no_val.info.calibration["fitted"]


def training_config(val_fraction: float):
    from maivar_tf.config import ExperimentConfig, ModelConfig, TrainConfig

    return ExperimentConfig(model=ModelConfig(hidden_units=8, dropout=0.0, l1=0.0),
                            train=TrainConfig(strategy="default", val_fraction=val_fraction))


def test_temperature_must_be_a_positive_number():
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            calibration.check_temperature(bad)
