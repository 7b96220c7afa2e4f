"""Loading a trained run for serving: heads, backbones from their specs, the run's config."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil

import pytest

from maivar_tf.artifacts import BackboneSpec, FeatureInfo
from maivar_tf.config import load_config
from maivar_tf.models.weights import WeightsError
from maivar_tf.runs import RunError, load_backbones, load_servable_run
from tests.serving.helpers import CLASSES, REPRESENTATION, K


def test_servable_run_reads_the_run(tiny):
    run = tiny.run
    assert run.class_names == CLASSES and run.num_segments == K
    assert run.representation == REPRESENTATION and run.ten_crop is False
    assert run.cfg == tiny.cfg
    assert run.provenance == {"run_dir": str(tiny.run_dir.resolve()), "backbones": "injected"}
    assert run.video.model is tiny.video_bb and run.audio.model is tiny.audio_bb
    assert (run.video.dim, run.audio.dim) == (16, 12)


def test_a_run_recorded_without_a_temperature_serves_with_temperature_one(tiny, tmp_path):
    from maivar_tf.artifacts import RUN_INFO
    from maivar_tf.serving import serving_module

    old = tmp_path / "old_run"
    shutil.copytree(tiny.run_dir, old)
    record = json.loads((old / RUN_INFO).read_text())
    assert record.pop("calibration")["temperature"] == tiny.run.temperature != 1.0
    (old / RUN_INFO).write_text(json.dumps(record))  # what runs written before it hold
    run = load_servable_run(tiny.cfg, old, backbones=(tiny.video_bb, tiny.audio_bb))
    assert run.temperature == 1.0
    assert serving_module(run).temperature == 1.0


def test_the_runs_own_config_wins_for_preprocessing(tiny, caplog):
    other = load_config(None, ["data.jpeg_quality=50", "data.frame_short_side=300",
                               f"data.features_dir={tiny.features_dir}"])
    with caplog.at_level(logging.WARNING, logger="maivar_tf.runs"):
        run = load_servable_run(other, tiny.run_dir, backbones=(tiny.video_bb, tiny.audio_bb))
    assert run.cfg.data.jpeg_quality == 90 and run.cfg.data.frame_short_side == 256
    assert "data.frame_short_side, data.jpeg_quality differ from the run's" in caplog.text


def test_features_decide_ten_crop_and_must_have_the_runs_k(tiny, tmp_path):
    info = FeatureInfo.read(tiny.features_dir)
    dataclasses.replace(info, ten_crop=True).write(tmp_path / "ten")
    run = load_servable_run(tiny.cfg, tiny.run_dir, features_dir=tmp_path / "ten",
                            backbones=(tiny.video_bb, tiny.audio_bb))
    assert run.ten_crop is True
    dataclasses.replace(info, num_segments=K + 1).write(tmp_path / "k3")
    with pytest.raises(RunError, match=r"has K=3 but the run was trained with K=2"):
        load_servable_run(tiny.cfg, tiny.run_dir, features_dir=tmp_path / "k3",
                          backbones=(tiny.video_bb, tiny.audio_bb))


def test_missing_runs_are_refused(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; train first"):
        load_servable_run(tiny.cfg, tmp_path / "nowhere")
    (tmp_path / "half").mkdir()
    with pytest.raises(FileNotFoundError, match="incomplete run"):
        load_servable_run(tiny.cfg, tmp_path / "half")


def test_random_backbones_that_were_not_saved_are_refused(tiny, tmp_path):
    info = FeatureInfo.read(tiny.features_dir)
    dataclasses.replace(info, video_backbone=BackboneSpec("bn_inception", "none", 224),
                        audio_backbone=BackboneSpec("inception_resnet_v2", "none", 299)
                        ).write(tmp_path)
    with pytest.raises(WeightsError, match="must be saved at extraction time"):
        load_backbones(tmp_path)
    with pytest.raises(FileNotFoundError, match="run `maivar extract`"):
        load_backbones(tmp_path / "nowhere")
    # backbones handed to the extraction by code cannot be rebuilt from the folder
    with pytest.raises(WeightsError, match="cannot be rebuilt from the features folder"):
        load_backbones(tiny.features_dir)
