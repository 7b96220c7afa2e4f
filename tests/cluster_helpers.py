"""What the tests that run training in fresh processes share: the environment, loopback ports,
a two-worker ``TF_CONFIG`` launch, the strategy a worker script builds first, weights files.

Workers import this module before TensorFlow initialises its devices, so nothing here imports
TensorFlow at module level.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def subprocess_env(**extra: str) -> dict[str, str]:
    """This environment without ``TF_CONFIG``, CPU only, the repo on ``PYTHONPATH``, plus
    ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def free_ports(n: int) -> list[int]:
    """``n`` free loopback TCP ports."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run_cluster(command: Callable[[int], Sequence[str]], log_dir: Path, workers: int = 2,
                timeout: float = 600) -> None:
    """Runs ``command(index)`` as worker ``index`` of a loopback ``TF_CONFIG`` cluster, waits,
    kills what is left on a timeout, and asserts every worker exited 0 (with its log's tail)."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(workers)]}
    procs = []
    for index in range(workers):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        log = (log_dir / f"worker{index}.log").open("w")
        procs.append((subprocess.Popen(list(command(index)),
                                       env=subprocess_env(TF_CONFIG=tf_config), stdout=log,
                                       stderr=subprocess.STDOUT), log))
    try:
        for proc, _ in procs:
            proc.wait(timeout=timeout)
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    for index, (proc, _) in enumerate(procs):
        assert proc.returncode == 0, (log_dir / f"worker{index}.log").read_text()[-4000:]


def worker_strategy(name: str, logical_cpus: int = 0):
    """A worker script's first TensorFlow work: split the CPU into ``logical_cpus`` devices
    (0: not), then ``get_strategy(name)``."""
    import tensorflow as tf

    if logical_cpus:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus)
    from maivar_tf import distribute

    return distribute.get_strategy(name)


def h5_arrays(path: Path) -> dict:
    """Every dataset of an HDF5 (``.weights.h5``) file, by its path in the file."""
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    return out
