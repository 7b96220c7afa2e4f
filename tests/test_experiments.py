"""The experiment that trains: the paper's Table 3 representation sweep (maivar_tf.experiments)."""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from maivar_tf.experiments import format_representation_table
from tests.test_evaluation import feature_set, heads

# ----------------------------------------------------------------------------- Table 3


def test_representation_table_bolds_best_fusion_in_paper_order():
    results = {
        "chromagram": {"audio_top1": 0.25, "fusion_top1": 0.875},
        "waveplot": {"audio_top1": 0.5, "fusion_top1": 0.75},
        "mfcc": {"audio_top1": 0.125, "fusion_top1": 0.5},
    }
    table = format_representation_table(results, video_top1=0.5)
    lines = table.strip().splitlines()
    assert lines[0] == "| Representation | Audio-only top-1 (%) | Fusion top-1 (%) |"
    assert lines[2] == "| waveplot | 50.00 | 75.00 |"
    assert lines[3] == "| mfcc | 12.50 | 50.00 |"
    assert lines[4] == "| chromagram | 25.00 | **87.50** |"
    assert lines[-1] == "Video-only (VMLP, shared by every row) top-1: 50.00%"
    assert table.count("**") == 2


def test_representation_table_bolds_every_tie():
    results = {"mfcc": {"audio_top1": 0.1, "fusion_top1": 0.9},
               "chromagram": {"audio_top1": 0.2, "fusion_top1": 0.9}}
    table = format_representation_table(results)
    assert "| mfcc | 10.00 | **90.00** |" in table
    assert "| chromagram | 20.00 | **90.00** |" in table
    with pytest.raises(ValueError, match="no representation results"):
        format_representation_table({})


def _write_features(features_dir, train, test):
    """Feature shards (audio rows in another order than video) and their FeatureInfo."""
    from maivar_tf.artifacts import BackboneSpec, FeatureInfo, SplitFeatures
    from maivar_tf.features import (
        audio_shard_name,
        video_shard_name,
        write_audio_shard,
        write_video_shard,
    )

    features_dir.mkdir(parents=True, exist_ok=True)
    reps = ("mfcc", "chromagram")
    for split, fs in (("train", train), ("test", test)):
        write_video_shard(features_dir / video_shard_name(split, 0), fs.ids, fs.labels, fs.video)
        for i, rep in enumerate(reps):
            audio = fs.audio.copy()
            if rep == "mfcc":  # a representation that hears nothing useful
                audio = np.random.default_rng(i).normal(size=audio.shape).astype(np.float32)
            write_audio_shard(features_dir / audio_shard_name(rep, split, 0),
                              fs.ids[::-1], fs.labels[::-1], audio[::-1])
    FeatureInfo(
        fingerprint="test", num_segments=train.video.shape[1], video_dim=train.video.shape[2],
        audio_dim=train.audio.shape[1], crop_size=224, ten_crop=False,
        video_backbone=BackboneSpec("injected:video", "none", 224),
        audio_backbone=BackboneSpec("injected:audio", "none", 299),
        class_names=tuple(train.class_names), config={}, tfrecords_schema_version=1,
        splits={s: SplitFeatures(len(fs), 1, reps) for s, fs in (("train", train), ("test", test))},
    ).write(features_dir)


@pytest.mark.slow
def test_representation_sweep_trains_once_per_rep_and_reuses_the_vmlp(tmp_path):
    from maivar_tf.config import DataConfig, ExperimentConfig, ModelConfig, StageConfig, TrainConfig
    from maivar_tf.experiments import representation_sweep

    train = feature_set(16, dv=4, da=4, seed=1, signal=5.0)
    test = feature_set(8, dv=4, da=4, seed=2, signal=5.0)
    _write_features(tmp_path / "features", train, test)
    stage = StageConfig(epochs=6, learning_rate=3e-2, batch_size=16)  # 5 fits: keep them short
    cfg = ExperimentConfig(
        name="tiny",
        data=DataConfig(features_dir=str(tmp_path / "features"), num_segments=2),
        model=ModelConfig(hidden_units=16, dropout=0.0, l1=0.0),
        train=TrainConfig(strategy="default", audio=stage, video=stage, fusion=stage,
                          output_dir=str(tmp_path / "run")))
    table = representation_sweep(cfg, ["mfcc", "chromagram"])
    out = tmp_path / "run" / "sweep"
    assert (out / "representation_sweep.md").read_text() == table
    res = json.loads((out / "representation_sweep.json").read_text())
    assert list(res["results"]) == ["mfcc", "chromagram"]
    lines = table.strip().splitlines()
    assert lines[2] == "| Representation | Audio-only top-1 (%) | Fusion top-1 (%) |"
    assert lines[4].startswith("| mfcc | ") and lines[5].startswith("| chromagram | ")
    runs = {rep: out / "representation" / rep / "seed-0" for rep in ("mfcc", "chromagram")}
    # The VMLP is trained once: the second run loads the first run's weights.
    assert (runs["chromagram"] / "vmlp.keras").read_bytes() == \
        (runs["mfcc"] / "vmlp.keras").read_bytes()
    info = json.loads((runs["chromagram"] / "run_info.json").read_text())
    assert info["stages"]["vmlp"]["skipped"] is True
    assert info["stages"]["fusion"]["skipped"] is False
    # Audio that carries the sound beats noise features, and fusion beats both single streams.
    r = res["results"]
    assert r["chromagram"]["audio_top1"] > r["mfcc"]["audio_top1"]
    assert r["chromagram"]["fusion_top1"] > max(res["video_top1"], r["chromagram"]["audio_top1"])
    assert "**" in lines[5]
    for rep in ("mfcc", "chromagram"):
        assert (runs[rep] / "eval" / "report.json").exists()


def test_sweep_with_fake_training_builds_table_and_extracts_missing_reps(tmp_path, monkeypatch):
    import types

    import maivar_tf.features as features
    from maivar_tf.config import DataConfig, ExperimentConfig, TrainConfig
    from maivar_tf.experiments import representation_sweep

    train, test = feature_set(4, seed=1), feature_set(2, seed=2)
    _write_features(tmp_path / "features", train, test)  # has mfcc and chromagram only
    cfg = ExperimentConfig(name="fake", data=DataConfig(features_dir=str(tmp_path / "features")),
                           train=TrainConfig(output_dir=str(tmp_path / "run")))
    elsewhere = ExperimentConfig(name="fake", data=DataConfig(features_dir="not/these"),
                                 train=cfg.train)
    asked = []
    monkeypatch.setattr(features, "extract_features",
                        lambda cfg, **kw: asked.append(kw["representations"]))
    calls = []

    def fake_train(cfg, train_set, run_dir, vmlp_from):
        calls.append((train_set.representation, vmlp_from))
        # the run records the features it trains on, also when they come from an argument
        assert cfg.data.features_dir == str(tmp_path / "features")
        models = heads(train_set)
        return types.SimpleNamespace(audio_mlp=models["audio"], vmlp=models["video"],
                                     fusion=models["fusion"], run_dir=run_dir)

    table = representation_sweep(elsewhere, ["chromagram", "mfcc"], train_fn=fake_train,
                                 features_dir=tmp_path / "features")
    assert asked == []  # both representations are there: nothing extracted
    cells = tmp_path / "run" / "sweep" / "representation"
    assert calls == [("chromagram", None), ("mfcc", cells / "chromagram" / "seed-0")]
    lines = table.strip().splitlines()
    assert lines[0] == "### fake: audio-image representations (test top-1)"
    assert [ln.split("|")[1].strip() for ln in lines[4:6]] == ["mfcc", "chromagram"]  # paper order
    res = json.loads((tmp_path / "run" / "sweep" / "representation_sweep.json").read_text())
    for rep in ("mfcc", "chromagram"):
        report = json.loads((cells / rep / "seed-0" / "eval" / "report.json").read_text())
        assert res["results"][rep]["audio_top1"] == report["models"]["audio"]["top1"]
        assert res["results"][rep]["fusion_top1"] == report["models"]["fusion"]["top1"]
        assert f"| {rep} | {100 * report['models']['audio']['top1']:.2f} |" in table
    # A representation without features is extracted first (then fails here: the fake
    # extraction writes nothing).
    with pytest.raises(features.FeatureError, match="no 'waveplot' audio features"):
        representation_sweep(cfg, ["waveplot"], train_fn=fake_train)
    assert asked == [["waveplot"]]
