"""The job on Beam's portable path (the one Flink, Spark and Dataflow Runner v2 use), offline.

``PortableRunner`` with the embedded job server and an EXTERNAL SDK worker pool
(``python -m apache_beam.runners.worker.worker_pool_main``) that the test starts on loopback
and stops: the pipeline is pickled, its options reach workers in another process, metrics
come back over the job API and the files are published by the driver. It must write what
the DirectRunner wrote (the package's ``built`` run): the same examples by id, the same dead
letters and the same ``dataset_info.json`` counts. Nothing may be downloaded: Prism (the
package's guard), Java job servers and jars are refused, and so is any connection the test
process makes off loopback. Also: which ``--runner`` values take which path, and the Dask
refusal.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability import portable_runner

import beam.build_tfrecords as job
from beam import publish
from beam.runner import (
    DASK_REFUSAL,
    PrismFreeDirectRunner,
    local_runner_if_direct,
    unsupported_runner,
)
from tests.beam.jobdata import REPS, base_argv, dead_letters, parse_dir, refusal
from tests.conftest import REPO_ROOT

LOOPBACK = ("127.0.0.1", "::1", "localhost")

# ----------------------------------------------------------------------------- runner choice


@pytest.mark.parametrize("runner", [
    "DaskRunner", "daskrunner", "DASKRUNNER", "dask", "Dask",
    "apache_beam.runners.dask.dask_runner.DaskRunner"])
def test_dask_runner_fails_at_once_with_the_reason(runner, tmp_path, capsys):
    videos, out = tmp_path / "videos", tmp_path / "out"
    rc = job.main([f"--runner={runner}", "--dataset=synthetic", f"--video_root={videos}",
                   f"--output_dir={out}"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err == f"--runner: {DASK_REFUSAL}\n"
    assert "computes only the pipeline's last sink" in err and "tagged outputs" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing generated or staged


@pytest.mark.parametrize("runner", [
    "PortableRunner", "FlinkRunner", "SparkRunner", "PrismRunner", "DataflowRunner",
    "apache_beam.runners.portability.portable_runner.PortableRunner",
    "my_company.runners.DirectRunner"])
def test_other_runners_take_the_plain_beam_path(runner):
    options = PipelineOptions([f"--runner={runner}"])
    assert local_runner_if_direct(options) is None
    assert unsupported_runner(options) is None


@pytest.mark.parametrize("runner", [
    "DirectRunner", "direct", "apache_beam.runners.direct.direct_runner.DirectRunner",
    "apache_beam.runners.direct.direct_runner.SwitchingDirectRunner"])
def test_beams_direct_runner_by_any_name_is_the_prism_free_one(runner):
    options = PipelineOptions([f"--runner={runner}"])
    assert isinstance(local_runner_if_direct(options), PrismFreeDirectRunner)
    assert unsupported_runner(options) is None


# ----------------------------------------------------------------------------- the pool


def free_port() -> int:
    """A TCP port nothing listens on now (loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker pool exited ({proc.returncode}): "
                               f"{log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.2)
    raise TimeoutError(f"the worker pool did not listen on {port} within {timeout}s")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def worker_pool(log: Path):
    """An EXTERNAL SDK worker pool on loopback, in its own process group; yields its port.

    The pool starts each SDK worker as ``python`` from ``PATH``: this interpreter's folder
    goes first, and ``PYTHONPATH`` names the repo, so workers import this checkout. The
    whole group (pool and workers) is stopped on exit; the test fails if any survives.
    """
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
             f"--service_port={port}"], env=env, stdout=f, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        _wait_listening(port, proc, log)
        yield port
    finally:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            deadline = time.monotonic() + wait
            while _group_alive(proc.pid) and time.monotonic() < deadline:
                proc.poll()  # reap the pool itself
                time.sleep(0.1)
            if not _group_alive(proc.pid):
                break
        proc.wait(timeout=5)
        assert not _group_alive(proc.pid), "worker pool processes outlived the test"


@pytest.fixture
def no_downloads(monkeypatch):
    """Refuses (and records) job-server jars, subprocess job servers and off-loopback sockets."""
    from apache_beam.runners.portability import job_server
    from apache_beam.utils import subprocess_server

    calls: list[str] = []
    refuse = refusal(calls, "nothing may be downloaded or spawned")

    real_connect = socket.socket.connect

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
            calls.append(f"connect {address[0]}")
            raise OSError(f"test: no network off loopback ({address[0]})")
        return real_connect(sock, address)

    monkeypatch.setattr(subprocess_server.JavaJarServer, "local_jar",
                        classmethod(refuse("local_jar")))
    monkeypatch.setattr(job_server.SubprocessJobServer, "start", refuse("job server"))
    monkeypatch.setattr(socket.socket, "connect", connect)
    return calls


@pytest.fixture
def runs_seen(monkeypatch):
    """The runners whose ``run_pipeline`` was entered and every metrics answer publish got."""
    seen: dict[str, list] = {"runners": [], "success_counts": []}
    for cls in (portable_runner.PortableRunner, PrismFreeDirectRunner):
        real = cls.run_pipeline

        def spy(self, pipeline, options, _real=real, _name=cls.__name__):
            seen["runners"].append(_name)
            return _real(self, pipeline, options)

        monkeypatch.setattr(cls, "run_pipeline", spy)
    real_counts = publish.success_counts

    def counts(result):
        got = real_counts(result)
        seen["success_counts"].append((type(result).__module__, got))
        return got

    monkeypatch.setattr(publish, "success_counts", counts)
    return seen


# ----------------------------------------------------------------------------- the whole job


def _assert_same_examples(direct: Path, portable: Path) -> None:
    """Same ids, shards, labels, frames; audio-images equal (within 1 if TF threads differ)."""
    first, second = parse_dir(direct), parse_dir(portable)
    assert sorted(first) == sorted(second)
    same_threads = tf.config.threading.get_intra_op_parallelism_threads() == 1
    for eid, a in first.items():
        b = second[eid]
        assert (a["shard"], a["label"], a["split"]) == (b["shard"], b["label"], b["split"])
        np.testing.assert_array_equal(a["frames"], b["frames"])
        np.testing.assert_array_equal(a["timestamps"], b["timestamps"])
        for rep in REPS:
            diff = np.abs(a["images"][rep].astype(int) - b["images"][rep].astype(int))
            assert diff.max() <= (0 if same_threads else 1), (eid, rep)


@pytest.mark.slow  # 10 s alone, 20 s with the other helpers' load on 2 cores
def test_portable_runner_writes_what_the_direct_runner_wrote(built, job_inputs, tmp_path,
                                                             no_downloads, runs_seen):
    rc, direct, good = built
    assert rc == 0
    _, csv_path, _ = job_inputs
    out = tmp_path / "portable"
    with worker_pool(tmp_path / "pool.log") as port:
        argv = [a for a in base_argv(csv_path, out) if not a.startswith("--runner=")]
        rc = job.main([*argv, "--runner=PortableRunner", "--job_endpoint=embed",
                       "--environment_type=EXTERNAL", f"--environment_config=localhost:{port}"])
    assert rc == 0, (tmp_path / "pool.log").read_text()[-3000:]
    assert runs_seen["runners"] == ["PortableRunner"]
    assert no_downloads == []

    # Metrics reach the driver over the job API: counts come from them, not from the shards.
    [(module, counts)] = runs_seen["success_counts"]
    assert module == portable_runner.__name__
    assert counts is not None and sum(counts.values()) == len(good)

    _assert_same_examples(direct, out)
    assert sorted(map(json.dumps, dead_letters(direct))) == sorted(
        map(json.dumps, dead_letters(out)))
    info_d, info_p = (json.loads((d / "dataset_info.json").read_text()) for d in (direct, out))
    for key in ("counts", "failed", "shards", "num_records", "class_names", "schema_version"):
        assert info_d[key] == info_p[key], key
    if tf.config.threading.get_intra_op_parallelism_threads() == 1:
        assert info_d["digests"] == info_p["digests"]  # byte-identical shards
    assert sorted(p.name for p in out.iterdir()) == sorted(
        p.name for p in direct.iterdir() if p.name != "notes.txt")
