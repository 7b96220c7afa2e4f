"""Algorithm 1 with every fusion method (``model.fusion``): the fusion stage trains (or, for
``late``, chooses its weight), is recorded in ``run_info.json`` and reloads.

Each run starts from copies of an audio MLP's and a VMLP's ``.keras`` files, which the stage loop
loads instead of training (Algorithm 1's first two stages are tested in tests/test_training.py).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses
import importlib.util
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from maivar_tf import runs, training
from maivar_tf.artifacts import RunInfo
from maivar_tf.config import FUSION_METHODS
from maivar_tf.models import heads

WORKER = Path(__file__).resolve().parent / "distributed_worker.py"
_spec = importlib.util.spec_from_file_location("maivar_distributed_worker_fusion", WORKER)
toy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(toy)


def _cfg(method: str):
    cfg = toy.toy_config("default", epochs=(1, 1, 1))
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, fusion=method))


@pytest.fixture(scope="module")
def data():
    return toy.toy_features(8, split_seed=0), toy.toy_features(4, split_seed=1)


@pytest.fixture(scope="module")
def saved_heads(tmp_path_factory, data):
    """An audio MLP and a VMLP saved as a run's first two stages (untrained: the stage loop
    loads them; only the fusion stage is under test here)."""
    train, _ = data
    cfg = _cfg("vmlp_init").model
    folder = tmp_path_factory.mktemp("heads")
    heads.build_audio_mlp(4, cfg, *heads.feature_statistics(train.audio),
                          feature_dim=toy.AUDIO_DIM).save(folder / "audio_mlp.keras")
    heads.build_video_mlp(4, 3, cfg, *heads.feature_statistics(train.video),
                          feature_dim=toy.VIDEO_DIM).save(folder / "vmlp.keras")
    return folder


def _start_from(heads_dir: Path, run_dir: Path) -> Path:
    run_dir.mkdir()
    for stage in ("audio_mlp", "vmlp"):
        shutil.copy(heads_dir / f"{stage}.keras", run_dir / f"{stage}.keras")
    return run_dir


def _logits(model, features) -> np.ndarray:
    return np.asarray(model({"video_features": features.video, "audio_features": features.audio},
                            training=False))


# temporal_binding needs per-segment audio features: tests/models/test_temporal.py
@pytest.mark.parametrize("method", [m for m in FUSION_METHODS
                                    if m not in ("vmlp_init", "temporal_binding")])
def test_each_method_trains_or_chooses_is_recorded_and_reloads(method, saved_heads, data,
                                                               tmp_path):
    train, val = data
    run_dir = _start_from(saved_heads, tmp_path / method)
    result = training.run_algorithm1(_cfg(method), train, val, run_dir=run_dir, verbose=0)

    info = RunInfo.read(run_dir)
    assert info.config["model"]["fusion"] == method
    stage = info.stages["fusion"]
    assert stage["method"] == method and stage["skipped"] is False
    assert info.stages["vmlp"] == {"skipped": True}  # the copied heads were not retrained
    if method == "late":
        assert stage["fitted"] is False and stage["chosen_on"] == "val"
        assert stage["audio_weight"] in stage["grid"] and len(stage["grid"]) == 21
        assert stage["nll"] == pytest.approx(min(stage["grid_nll"]), abs=1e-6)
        assert result.fusion.get_layer("predictions").audio_weight == stage["audio_weight"]
        assert not (run_dir / "fusion" / "log.csv").exists()
    else:
        assert stage["epochs"] == 1
        assert result.histories["fusion"]["epoch"] == [0.0]
        assert "val_accuracy" in result.histories["fusion"]
    assert set(info.metrics["fusion"]) == {"train", "val"}

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. a saved optimizer that does not fit the model
        reloaded = runs.load_head(run_dir / "fusion.keras")
    assert _logits(reloaded, val).shape == (len(val.labels), 4)
    np.testing.assert_allclose(_logits(reloaded, val), _logits(result.fusion, val), atol=1e-5)


def test_late_without_validation_chooses_on_the_training_split_and_keeps_its_folder(
        saved_heads, data, tmp_path):
    train, _ = data
    run_dir = _start_from(saved_heads, tmp_path / "late_train")
    result = training.run_algorithm1(_cfg("late"), train, None, run_dir=run_dir, verbose=0)
    assert result.info.stages["fusion"]["chosen_on"] == "train"
    # the folder's fusion stage is late's: another method must not silently reuse it
    with pytest.raises(ValueError, match="model.fusion='late', not 'gated'; use another"):
        training.run_algorithm1(_cfg("gated"), train, None, run_dir=run_dir, verbose=0)
