"""Algorithm 1 training: strategies and datasets (distribute), stages (training), resume
bookkeeping (callbacks), the run read back (runs).

The distributed runs happen in fresh processes (tests/distributed_worker.py): logical CPU devices
must be configured before TensorFlow initialises, MultiWorkerMirroredStrategy needs TF_CONFIG
before it starts, and the resume test kills its process with SIGKILL. Those subprocesses are
forced onto the CPU (CUDA_VISIBLE_DEVICES="") so the tests mean the same on a GPU host.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import csv
import dataclasses
import importlib.util
import json
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from maivar_tf import callbacks, distribute, runs, seeds, training
from maivar_tf.artifacts import RunInfo
from maivar_tf.config import StageConfig, TrainConfig
from maivar_tf.models import heads
from tests.cluster_helpers import run_cluster, subprocess_env
from tests.shared_helpers import StopAt

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
WORKER = TESTS / "distributed_worker.py"

_spec = importlib.util.spec_from_file_location("maivar_distributed_worker", WORKER)
toy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(toy)


def _worker_cmd(run_dir: Path, *args: str) -> list[str]:
    return [sys.executable, str(WORKER), "--run-dir", str(run_dir), *args]


def _run_worker(run_dir: Path, *args: str, timeout: float = 600, **env: str) -> dict:
    result = run_dir / "result.json"
    proc = subprocess.run(_worker_cmd(run_dir, "--result", str(result), *args),
                          env=subprocess_env(**env), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(result.read_text())


def _weights(path: Path) -> list[np.ndarray]:
    return keras.saving.load_model(path, compile=False).get_weights()


def _csv_epochs(path: Path) -> list[int]:
    with path.open(newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def _assert_same_training(resumed: Path, uninterrupted: Path,
                          stages: tuple[str, ...] = runs.STAGES) -> None:
    """Stages of two runs: final weights allclose, and the same log.csv rows."""
    for stage in stages:
        a, b = _weights(resumed / f"{stage}.keras"), _weights(uninterrupted / f"{stage}.keras")
        assert len(a) == len(b) > 0
        diff = max(float(np.max(np.abs(w_a - w_b))) for w_a, w_b in zip(a, b, strict=True))
        assert all(np.allclose(w_a, w_b) for w_a, w_b in zip(a, b, strict=True)), (
            f"{stage}: final weights differ by up to {diff:.3g} from the uninterrupted run")
        with (resumed / stage / "log.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        with (uninterrupted / stage / "log.csv").open(newline="") as f:
            assert rows == list(csv.DictReader(f)), f"{stage}: per-epoch logs differ"


# ----------------------------------------------------------------------------- strategies


def test_get_strategy_on_cpu_and_bad_names():
    default = distribute.get_strategy("default")
    assert default is tf.distribute.get_strategy()
    assert default.num_replicas_in_sync == 1
    if not tf.config.list_physical_devices("GPU"):
        assert distribute.get_strategy("auto") is tf.distribute.get_strategy()
    with pytest.raises(ValueError, match="allowed: auto, default, mirrored, multi_worker"):
        distribute.get_strategy("horovod")
    info = distribute.worker_info(default)
    assert info.is_chief and info.num_workers == 1
    assert distribute.worker_run_dir("runs/x", info) == Path("runs/x")
    other = distribute.WorkerInfo(False, "worker", 1, 2)
    assert distribute.worker_run_dir("runs/x", other) == Path("runs/x/workers/worker-1")


def test_global_batch_size():
    assert distribute.global_batch_size(768, 10_000, 1) == 768   # the paper's fusion batch
    assert distribute.global_batch_size(512, 10_000, 4) == 512   # 128 per replica
    assert distribute.global_batch_size(768, 100, 1) == 100      # capped at the data
    assert distribute.global_batch_size(100, 1_000, 3) == 102    # rounded up to the replicas


def test_mixed_precision_is_ignored_on_cpu():
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible")
    with pytest.warns(UserWarning, match="no GPU is visible"):
        assert distribute.configure_precision(True) is None
    assert keras.mixed_precision.global_policy().name == "float32"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert distribute.configure_precision(False) is None


def test_mixed_policy_by_device(monkeypatch):
    """The GPU branch of the policy choice, run on CPU with the device list stubbed."""
    from maivar_tf.models import precision

    real = tf.config.list_physical_devices
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: ["GPU:0"] if kind == "GPU" else real(kind))
    assert distribute.mixed_policy() == distribute.mixed_policy(True) == "mixed_float16"
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: [] if kind == "GPU" else real(kind))
    assert distribute.mixed_policy() is None  # the heads on features: float32 on a CPU
    monkeypatch.setattr(precision, "bfloat16_support", lambda flags=None, gpus=None: (True, ""))
    assert distribute.mixed_policy(cpu_bfloat16=True) == "mixed_bfloat16"
    previous = distribute.configure_precision(True, cpu_bfloat16=True)
    try:
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    finally:
        keras.mixed_precision.set_global_policy(previous)
    monkeypatch.setattr(precision, "bfloat16_support", lambda flags=None, gpus=None: (False, ""))
    with pytest.warns(UserWarning, match="the CPU has no native bfloat16"):
        assert distribute.configure_precision(True, cpu_bfloat16=True) is None


# ----------------------------------------------------------------------------- datasets


def test_training_dataset_batches_and_steps():
    strategy = distribute.get_strategy("default")
    n, batch = 10, 4
    x = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    y = np.arange(n, dtype=np.int64)
    ds, steps = distribute.make_distributed_dataset(strategy, x, y, batch, training=True, seed=1)
    assert steps == 3  # ceil(10 / 4)
    it = iter(ds)
    seen = []
    for _ in range(5):  # repeats forever
        xb, yb = next(it)
        assert tuple(xb.shape) == (batch, 3) and tuple(yb.shape) == (batch,)
        np.testing.assert_array_equal(xb.numpy()[:, 0], yb.numpy())  # features follow labels
        seen.extend(yb.numpy().tolist())
    assert sorted(seen[:n]) == list(range(n))  # the first pass is a permutation


def _index_batches(ds, count: int) -> list[list[int]]:
    return [b.numpy().tolist() for b in ds.take(count)]


def test_training_order_is_a_function_of_the_seed_and_the_epoch():
    n, batch, steps = 10, 4, 3  # 12 per epoch: a permutation of the 10 and 2 wrapped around
    epochs = _index_batches(distribute.training_index_batches(n, batch, seed=5), 4 * steps)
    orders = [sum(epochs[e * steps:(e + 1) * steps], []) for e in range(4)]
    for order in orders:
        assert sorted(order[:n]) == list(range(n)) and order[n:] == order[:2]
    assert len({tuple(o) for o in orders}) == 4  # reshuffled every epoch
    # a dataset that starts at epoch 2 (a resume) yields epoch 2's order, not epoch 0's
    resumed = distribute.training_index_batches(n, batch, seed=5, first_epoch=2)
    assert _index_batches(resumed, 2 * steps) == epochs[2 * steps:]
    assert _index_batches(distribute.training_index_batches(n, batch, seed=6), steps) \
        != epochs[:steps]
    # two workers (one replica each) or one worker with two replicas take the halves of the
    # same global batches, in step order
    halves = [_index_batches(distribute.training_index_batches(
        n, batch, seed=5, num_pipelines=2, pipeline_id=i), 4 * steps) for i in range(2)]
    assert [a + b for a, b in zip(*halves, strict=True)] == epochs
    per_replica = _index_batches(distribute.training_index_batches(n, batch, seed=5,
                                                                   per_replica=2), 8 * steps)
    assert [a + b for a, b in zip(per_replica[::2], per_replica[1::2], strict=True)] == epochs


def test_distributed_training_data_starts_at_the_resumed_epoch():
    strategy = distribute.get_strategy("default")
    n, batch = 10, 4
    x, y = np.arange(n, dtype=np.float32)[:, None], np.arange(n, dtype=np.int64)
    ds, steps = distribute.make_distributed_dataset(strategy, x, y, batch, training=True, seed=1)
    it = iter(ds)
    first = [next(it)[1].numpy().tolist() for _ in range(3 * steps)]
    ds, _ = distribute.make_distributed_dataset(strategy, x, y, batch, training=True, seed=1,
                                                first_epoch=2)
    it = iter(ds)
    assert [next(it)[1].numpy().tolist() for _ in range(steps)] == first[2 * steps:]


def test_epoch_streams_reset_the_dropout_seeds_from_the_seed_and_the_epoch():
    def model():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((64,)), keras.layers.Dropout(0.5),
                                 keras.layers.Dropout(0.5)])

    x = np.ones((8, 64), np.float32)
    trained, fresh = model(), model()
    states = seeds.seed_generator_states(trained)
    assert len(states) == 2 and not trained.weights
    streams = seeds.EpochStreams(seed=3)
    streams.set_model(trained)
    masks = {}
    for epoch in range(3):
        streams.on_epoch_begin(epoch)
        masks[epoch] = [trained(x, training=True).numpy() for _ in range(2)]
        assert states[0].numpy()[1] == 2  # two draws since the epoch began
    # a fresh model (a resumed run) put at epoch 2 draws epoch 2's masks, not epoch 0's
    resumed = seeds.EpochStreams(seed=3, first_epoch=2)
    resumed.set_model(fresh)
    resumed.on_train_begin()
    resumed.on_epoch_begin(2)
    np.testing.assert_array_equal(fresh(x, training=True).numpy(), masks[2][0])
    assert not np.array_equal(masks[0][0], masks[2][0])
    assert states[0].numpy()[0] != states[1].numpy()[0]  # one stream per generator
    # the fit must begin where its data order begins
    wrong = seeds.EpochStreams(seed=3, first_epoch=2)
    wrong.set_model(model())
    wrong.on_train_begin()
    with pytest.raises(RuntimeError, match="starts at epoch 0 but its data order"):
        wrong.on_epoch_begin(0)


def test_validation_dataset_counts_every_example_once():
    strategy = distribute.get_strategy("default")
    n, batch = 10, 4
    x = {"a": np.arange(n, dtype=np.float32)[:, None], "b": np.zeros((n, 2), np.float32)}
    y = np.arange(n, dtype=np.int64)
    ds, steps = distribute.make_distributed_dataset(strategy, x, y, batch, training=False)
    assert steps == 3
    it = iter(ds)
    for _ in range(2):  # each `steps` steps are one exact pass, again and again
        labels, weights = [], []
        for _ in range(steps):
            xb, yb, wb = next(it)
            assert set(xb) == {"a", "b"} and tuple(xb["b"].shape) == (batch, 2)
            labels.extend(yb.numpy().tolist())
            weights.extend(wb.numpy().tolist())
        counted = [lab for lab, w in zip(labels, weights, strict=True) if w == 1.0]
        assert sorted(counted) == list(range(n))
        assert weights.count(0.0) == 2  # padding to 12 = 3 x 4


def test_read_csv_log(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("epoch,accuracy,loss\n0,0.5,1.0\n1,0.75,0.5\n")
    assert runs.read_csv_log(path) == {"epoch": [0.0, 1.0], "accuracy": [0.5, 0.75],
                                           "loss": [1.0, 0.5]}
    assert runs.read_csv_log(tmp_path / "missing.csv") == {}


# ----------------------------------------------------------------------------- Algorithm 1


def test_stage_plans_read_the_stage_sections_and_keep_the_seeds():
    tc = TrainConfig(seed=7, audio=StageConfig(2, 1e-3, 16), video=StageConfig(3, 1e-4, 512),
                     fusion=StageConfig(4, 3e-5, 768))
    plans = training.stage_plans(tc)
    assert tuple(plans) == runs.STAGES  # training order: audio MLP, VMLP, fusion
    # stage i seeds with train.seed + i, as before the stage sections existed
    assert plans["audio_mlp"] == training.StagePlan("audio_mlp", 2, 1e-3, 16, 7)
    assert plans["vmlp"] == training.StagePlan("vmlp", 3, 1e-4, 512, 8)
    assert plans["fusion"] == training.StagePlan("fusion", 4, 3e-5, 768, 9)


def test_stage_inputs():
    fs = toy.toy_features(1)
    assert training.stage_inputs("audio_mlp", fs).shape == (4, toy.AUDIO_DIM)
    assert training.stage_inputs("vmlp", fs).shape == (4, 3, toy.VIDEO_DIM)
    fused = training.stage_inputs("fusion", fs)
    assert set(fused) == {"video_features", "audio_features"}


def test_bad_features_are_rejected(tmp_path):
    train = toy.toy_features(2)
    bad = dataclasses.replace(train, labels=np.array([0, 1, 2, 7] * 2, np.int64))
    with pytest.raises(ValueError, match=r"labels outside \[0, 4\)"):
        training.run_algorithm1(toy.toy_config(), bad, run_dir=tmp_path)
    val = dataclasses.replace(toy.toy_features(1, split_seed=1), class_names=("a", "b", "c", "d"))
    with pytest.raises(ValueError, match="class_names differ"):
        training.run_algorithm1(toy.toy_config(), train, val, run_dir=tmp_path)


def test_non_finite_features_are_refused_naming_the_split_and_rows(tmp_path):
    """NaN or Inf features (a broken extraction) fail before any stage trains."""
    train = toy.toy_features(2)  # 8 rows
    video = train.video.copy()
    video[[1, 5], 0, 2] = np.nan
    with pytest.raises(ValueError, match=r"^train\.video: 2 of 8 rows hold non-finite values "
                                         r"\(NaN or Inf\), e\.g\. example id toy-0-00001;"):
        training.run_algorithm1(toy.toy_config(), dataclasses.replace(train, video=video),
                                run_dir=tmp_path)
    val = toy.toy_features(1, split_seed=1)  # 4 rows
    audio = val.audio.copy()
    audio[:] = np.inf
    with pytest.raises(ValueError, match=r"^val\.audio: 4 of 4 rows hold non-finite values"):
        training.run_algorithm1(toy.toy_config(), train, dataclasses.replace(val, audio=audio),
                                run_dir=tmp_path)
    assert not list(tmp_path.iterdir())  # refused before the run folder is written


@pytest.mark.slow
def test_algorithm1_fusion_beats_each_modality_and_reloads(tmp_path):
    cfg = toy.toy_config("default", epochs=(4, 4, 4))
    train = toy.toy_features(32, split_seed=0)
    val = toy.toy_features(16, split_seed=1)
    result = training.run_algorithm1(cfg, train, val, run_dir=tmp_path, verbose=0)

    acc = {s: m["val"]["accuracy"] for s, m in result.info.metrics.items()}
    # video knows only the left/right factor, audio only low/high: each tops out near 50%
    assert acc["fusion"] >= 0.9, acc
    assert acc["vmlp"] <= 0.75 and acc["audio_mlp"] <= 0.75, acc
    assert acc["fusion"] > max(acc["vmlp"], acc["audio_mlp"]) + 0.2, acc

    for stage in runs.STAGES:
        assert (tmp_path / f"{stage}.keras").exists()
        assert (tmp_path / stage / "best.keras").exists()
        assert not (tmp_path / stage / "backup").exists()  # removed once the stage is saved
        if importlib.util.find_spec("tensorboard") is not None:  # optional dependency
            assert list((tmp_path / stage / "logs").rglob("events.out.tfevents.*"))
        assert _csv_epochs(tmp_path / stage / "log.csv") == [0, 1, 2, 3]
    info = RunInfo.read(tmp_path)
    assert info == result.info
    assert info.class_names == tuple(train.class_names)
    assert info.representation == "chromagram"
    assert info.num_segments == 3 and info.num_classes == 4
    assert (info.video_feature_dim, info.audio_feature_dim) == (toy.VIDEO_DIM, toy.AUDIO_DIM)
    assert info.features_dir == cfg.data.features_dir
    assert (info.num_train, info.num_val) == (128, 64)
    assert info.config["train"]["fusion"]["learning_rate"] == cfg.train.fusion.learning_rate
    assert info.stages["fusion"]["global_batch_size"] == 32
    assert info.stages["fusion"]["steps_per_epoch"] == 4  # 128 examples / 32
    assert info.stages["vmlp"]["learning_rate"] == cfg.train.video.learning_rate

    # fusion kept the VMLP's standardisation; the fusion kernel grew audio rows
    fusion = result.fusion
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(fusion.get_layer("video_norm").mean),
        keras.ops.convert_to_numpy(result.vmlp.get_layer("video_norm").mean))
    assert fusion.get_layer("fusion_hidden").kernel.shape[0] == toy.VIDEO_DIM + toy.AUDIO_DIM

    run = runs.load_run(tmp_path)
    x = {"video_features": val.video, "audio_features": val.audio}
    np.testing.assert_allclose(keras.ops.convert_to_numpy(run.fusion(x, training=False)),
                               keras.ops.convert_to_numpy(fusion(x, training=False)), atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(run.audio_mlp(val.audio)),
                               keras.ops.convert_to_numpy(result.audio_mlp(val.audio)),
                               atol=1e-5)
    assert run.histories["vmlp"]["epoch"] == [0.0, 1.0, 2.0, 3.0]
    assert run.info.metrics == result.info.metrics

    # a second run finds every stage saved and trains nothing
    epochs_run = []

    class Count(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            epochs_run.append(epoch)

    again = training.run_algorithm1(cfg, train, val, run_dir=tmp_path, verbose=0,
                                    extra_callbacks=lambda stage: [Count()])
    assert epochs_run == []
    for w_a, w_b in zip(again.fusion.get_weights(), fusion.get_weights(), strict=True):
        np.testing.assert_array_equal(w_a, w_b)


def test_load_run_names_missing_files(tmp_path):
    (tmp_path / "vmlp.keras").write_text("")
    with pytest.raises(FileNotFoundError, match="run_info.json.*audio_mlp.keras.*fusion.keras"):
        runs.load_run(tmp_path)


# ----------------------------------------------------------------------------- distributed


@pytest.mark.slow
def test_mirrored_strategy_over_two_logical_cpus(tmp_path):
    summary = _run_worker(tmp_path, "--strategy", "mirrored", "--logical-cpus", "2",
                          "--epochs", "3,3,4")
    assert summary["strategy"] == "MirroredStrategy"
    assert summary["num_replicas"] == 2
    fusion = summary["stages"]["fusion"]
    assert fusion["global_batch_size"] == 32 and fusion["per_replica_batch_size"] == 16
    assert summary["val_accuracy"]["fusion"] >= 0.9, summary["val_accuracy"]


@pytest.mark.slow
def test_multi_worker_mirrored_two_processes_end_with_identical_weights(tmp_path):
    run_cluster(lambda index: _worker_cmd(
        tmp_path, "--strategy", "multi_worker", "--epochs", "2,2,3", "--resume-check", "fusion:1",
        "--result", str(tmp_path / f"result{index}.json")), tmp_path)

    chief = json.loads((tmp_path / "result0.json").read_text())
    other = json.loads((tmp_path / "result1.json").read_text())
    assert chief["num_replicas"] == other["num_replicas"] == 2
    assert chief["run_dir"] == str(tmp_path)
    assert other["run_dir"] == str(tmp_path / "workers" / "worker-1")
    # each worker fed its shard: per-replica batch = global / 2
    assert chief["stages"]["vmlp"]["per_replica_batch_size"] == 16
    for stage in runs.STAGES:
        a = _weights(tmp_path / f"{stage}.keras")
        b = _weights(tmp_path / "workers" / "worker-1" / f"{stage}.keras")
        assert len(a) == len(b) > 0
        for w_a, w_b in zip(a, b, strict=True):
            np.testing.assert_array_equal(w_a, w_b)
    # and they are trained weights, not two copies of the same initialisation
    assert chief["val_accuracy"]["fusion"] >= 0.75, chief["val_accuracy"]
    assert chief["val_accuracy"] == other["val_accuracy"]
    # each worker trained the fusion stage again, interrupted when its epoch 1 began (leaving
    # its backup, as a kill would) and resumed: the uninterrupted cluster's epochs and weights
    for summary, folder in ((chief, tmp_path), (other, tmp_path / "workers" / "worker-1")):
        assert summary["resumed_after_epoch"] == 1
        _assert_same_training(Path(summary["resumed_run_dir"]), folder, stages=("fusion",))


@pytest.mark.slow
def test_killed_run_resumes_from_backup(tmp_path):
    record = tmp_path / "epochs.txt"
    vmlp_epochs = 12  # the kill comes after 4 epochs of >= 0.5 s: 4 s to spare
    args = ["--epochs", f"1,{vmlp_epochs},1", "--record", str(record)]
    log = tmp_path / "vmlp" / "log.csv"
    out = (tmp_path / "first.log").open("w")  # a file, not a pipe nobody drains
    first = subprocess.Popen(_worker_cmd(tmp_path, *args, "--sleep", "0.5"),
                             env=subprocess_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 400
        while time.time() < deadline and first.poll() is None:
            if log.exists() and len(_csv_epochs(log)) >= 4:
                break
            time.sleep(0.2)
        assert first.poll() is None, ("finished or died before the kill: "
                                      + (tmp_path / "first.log").read_text()[-4000:])
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        out.close()
    assert first.returncode == -signal.SIGKILL
    assert (tmp_path / "audio_mlp.keras").exists()
    assert not (tmp_path / "vmlp.keras").exists()
    meta = json.loads((tmp_path / "vmlp" / "backup" / "training_metadata.json").read_text())
    done = int(meta["epoch"])
    assert 3 <= done < vmlp_epochs  # the CSV row of an epoch is written just before its backup

    summary = _run_worker(tmp_path, *args)

    lines = [line.split() for line in record.read_text().splitlines()]
    first_run = [(s, int(e)) for pid, s, e in lines if int(pid) == first.pid]
    second_run = [(s, int(e)) for pid, s, e in lines if int(pid) == summary["pid"]]
    assert first_run[0] == ("audio_mlp", 0)
    assert ("vmlp", done - 1) in first_run
    # the second process skipped the saved audio stage and continued the VMLP where the
    # backup left it, instead of restarting at epoch 0
    assert [s for s, _ in second_run].count("audio_mlp") == 0
    vmlp_second = [e for s, e in second_run if s == "vmlp"]
    assert vmlp_second == list(range(done, vmlp_epochs))
    assert ("fusion", 0) in second_run
    # the CSV log holds every epoch exactly once, across the kill
    assert _csv_epochs(log) == list(range(vmlp_epochs))
    assert summary["stages"]["vmlp"]["resumed_after_epoch"] == done
    assert (tmp_path / "vmlp.keras").exists() and not (tmp_path / "vmlp" / "backup").exists()
    assert runs.load_run(tmp_path).histories["vmlp"]["epoch"][-1] == vmlp_epochs - 1
    # and it is the uninterrupted training: same data order and dropout masks in every epoch
    # after the kill, so the same per-epoch logs and final weights (issue 9 item 4)
    reference = tmp_path / "uninterrupted"
    training.run_algorithm1(toy.toy_config(epochs=(1, vmlp_epochs, 1)), toy.toy_features(32),
                            toy.toy_features(16, split_seed=1), run_dir=reference, verbose=0)
    _assert_same_training(tmp_path, reference)


def test_a_stage_stopped_twice_and_resumed_ends_as_the_uninterrupted_one(tmp_path):
    cfg = toy.toy_config(epochs=(1, 4, 1), batch=8)
    features = toy.toy_features(4)
    plan = training.stage_plans(cfg.train)["vmlp"]
    xy = (training.stage_inputs("vmlp", features), features.labels)

    def build():
        return heads.build_video_mlp(4, 3, cfg.model, feature_dim=toy.VIDEO_DIM)

    def stage(run_dir, *extra):
        return training.train_stage(plan, build, xy, None, distribute.get_strategy("default"),
                                    run_dir, verbose=0, extra_callbacks=lambda _: extra)

    stage(tmp_path / "uninterrupted")
    for stop in (1, 3):  # resumed after epoch 1, then stopped again
        with pytest.raises(toy.Interrupted):
            stage(tmp_path / "resumed", StopAt(stop, toy.Interrupted))
    assert stage(tmp_path / "resumed")[1]["resumed_after_epoch"] == 3
    _assert_same_training(tmp_path / "resumed", tmp_path / "uninterrupted", stages=("vmlp",))


def test_csv_log_is_trimmed_to_the_backup_epoch(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("epoch,loss\n0,1.0\n1,0.9\n2,0.8\n3,0.7\n")
    backup = tmp_path / "backup"
    backup.mkdir()
    assert callbacks.backup_epoch(backup) == 0  # no backup: a fresh start
    (backup / "training_metadata.json").write_text(json.dumps({"epoch": 3, "batch": -1}))
    assert callbacks.backup_epoch(backup) == 3
    # epoch 3 was logged but not backed up (killed in between): it will be redone
    callbacks.trim_csv_log(log, 3)
    assert _csv_epochs(log) == [0, 1, 2]
    callbacks.trim_csv_log(log, 0)
    assert not log.exists()


def test_stage_callbacks_log_before_backup_and_keep_the_best_val_loss(tmp_path):
    log = runs.stage_log_path(tmp_path, "vmlp")
    log.parent.mkdir()
    log.write_text("epoch,loss,val_loss\n0,1.0,0.5\n1,0.9,0.3\n2,0.8,nan\n")

    class Marker(keras.callbacks.Callback):
        pass

    marker = Marker()
    cbs = callbacks.stage_callbacks(tmp_path, "vmlp", validation=True, extra=[marker])
    # CSVLogger first: a kill between the two leaves a row the resume trims, never a lost row
    assert [type(c) for c in cbs[:3]] == [keras.callbacks.CSVLogger,
                                          keras.callbacks.BackupAndRestore,
                                          keras.callbacks.ModelCheckpoint]
    assert cbs[-1] is marker
    assert cbs[2].best == 0.3  # the best val_loss of the killed invocation still counts
    last = callbacks.stage_callbacks(tmp_path, "fusion", validation=False)[2]
    assert Path(last.filepath) == tmp_path / "fusion" / "last.keras"
