"""End-to-end training under tf.distribute: every replica and worker ends with the same weights.

Each run is a fresh process (tests/e2e_worker.py) on tests/e2e_data.py's tiny experiment with
fine-tuned backbones (partial BatchNorm: the first BatchNorm of each still trains, with
synchronized statistics). ``mirrored`` splits the CPU into two logical devices and fine-tunes
the video backbone; ``multi_worker`` runs two processes on loopback ports and fine-tunes both.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from maivar_tf.run_backbones import trained_backbone_path
from tests.cluster_helpers import h5_arrays, run_cluster, subprocess_env
from tests.e2e_data import write_e2e_data

TESTS = Path(__file__).resolve().parent
WORKER = TESTS / "e2e_worker.py"
STAGES = ("audio_mlp", "vmlp", "fusion")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("e2e_dist")
    write_e2e_data(root)
    return root


def _cmd(root: Path, run_dir: Path, result: Path, *args: str) -> list[str]:
    return [sys.executable, str(WORKER), "--root", str(root), "--run-dir", str(run_dir),
            "--result", str(result), *args]


@pytest.mark.slow
def test_mirrored_over_two_logical_cpus_keeps_replicas_identical(root, tmp_path):
    result = tmp_path / "result.json"
    proc = subprocess.run(_cmd(root, tmp_path / "run", result, "--strategy", "mirrored",
                               "--logical-cpus", "2", "--finetune", "video", "--epochs", "1"),
                          env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(result.read_text())
    assert summary["strategy"] == "MirroredStrategy" and summary["num_replicas"] == 2
    assert summary["stages"]["vmlp"]["per_replica_batch_size"] == 2
    for stage in STAGES:
        check = summary["replicas"][stage]
        # every variable of the model (backbone, head, BatchNorm statistics) is mirrored ...
        assert check["mirrored_variables"] == check["variables"] > 0, check
        # ... and its two copies are equal after training
        assert check["max_difference"] == 0.0, (stage, check)


@pytest.mark.slow
def test_multi_worker_two_processes_end_with_identical_weights(root, tmp_path):
    run_dir = tmp_path / "run"
    run_cluster(lambda index: _cmd(root, run_dir, tmp_path / f"result{index}.json",
                                   "--strategy", "multi_worker", "--epochs", "1"), tmp_path)
    chief = json.loads((tmp_path / "result0.json").read_text())
    other = json.loads((tmp_path / "result1.json").read_text())
    assert chief["num_replicas"] == other["num_replicas"] == 2
    assert chief["stages"]["vmlp"]["per_replica_batch_size"] == 2
    worker_dir = run_dir / "workers" / "worker-1"
    assert other["run_dir"] == str(worker_dir)
    for stage in STAGES:
        a = keras.saving.load_model(run_dir / f"{stage}.keras", compile=False).get_weights()
        b = keras.saving.load_model(worker_dir / f"{stage}.keras", compile=False).get_weights()
        assert len(a) == len(b) > 0
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    for kind in ("video", "audio"):
        a, b = (list(h5_arrays(trained_backbone_path(d, kind)).values())
                for d in (run_dir, worker_dir))
        assert len(a) == len(b) > 0
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
