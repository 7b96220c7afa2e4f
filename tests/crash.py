"""Killing a job with SIGKILL at a chosen point, deterministically (no sleeping).

:func:`run_killed` runs a short Python program in a child process. The program first calls
:func:`kill_on_call` (imported for it) to wrap one function or method so that its N-th call
sends SIGKILL to the process, before or after the real call, and then calls the job's real
entry point. The product code has no test hooks; the wrapper is the only change.

Importing TensorFlow costs a child several seconds, so the children are forked from one
helper process (started on first use, ended when the tests end) that has imported
TensorFlow, Keras, Beam and the job modules but never run a TensorFlow op: no TensorFlow
thread pool exists yet when it forks, and each child starts TensorFlow's runtime afresh.

Example:
    >>> run_killed('''
    ... import beam.transforms
    ... kill_on_call(beam.transforms.WriteShardFn, "process", 1, after=True)
    ... from beam import build_tfrecords
    ... build_tfrecords.main([...])
    ... ''')                                                       # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import functools
import inspect
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
from dataclasses import dataclass

from tests.conftest import REPO_ROOT

#: Imported by the helper before it forks (no TensorFlow op runs at import).
PRELOAD = ("tensorflow", "keras", "apache_beam", "beam.build_tfrecords", "beam.transforms",
           "beam.publish", "maivar_tf.data.clips", "maivar_tf.data.audio_image",
           "maivar_tf.features.extract", "maivar_tf.models.backbones",
           "maivar_tf.serving.export", "maivar_tf.serving.module", "maivar_tf.runs",
           "tests.features.tiny_data", "tests.serving.helpers", "tests.tiny_models",
           "tests.crash")

_FORK_SERVER = r"""
import importlib, json, os, sys, traceback
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        try:
            exec(compile(request["source"], "<killed job>", "exec"), {"__name__": "__main__"})
        except SystemExit as e:
            sys.stdout.flush()
            os._exit(e.code if isinstance(e.code, int) else 1)
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)
"""


def _kill() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def kill_on_call(owner, name: str, n: int, *, after: bool = False) -> None:
    """Makes the ``n``-th call of ``owner.name`` SIGKILL this process.

    Args:
        owner: a module or class.
        name: the function or method on it; for a generator function, "after" means once
            the ``n``-th generator is exhausted.
        n: which call (1-based).
        after: kill once the real call has returned (else just before it runs).
    """
    real = getattr(owner, name)
    calls = [0]

    def due() -> bool:
        calls[0] += 1
        return calls[0] == n

    if inspect.isgeneratorfunction(real):
        @functools.wraps(real)
        def wrapper(*args, **kwargs):
            now = due()
            if now and not after:
                _kill()
            yield from real(*args, **kwargs)
            if now:
                _kill()
    else:
        @functools.wraps(real)
        def wrapper(*args, **kwargs):
            now = due()
            if now and not after:
                _kill()
            out = real(*args, **kwargs)
            if now:
                _kill()
            return out

    setattr(owner, name, wrapper)


@dataclass
class Killed:
    """A finished child: its exit code (negative: the signal) and its output."""

    returncode: int
    output: str


class _ForkServer:
    """The helper process the children are forked from (one per test session)."""

    def __init__(self):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "",
               "PYTHONPATH": os.pathsep.join(
                   [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        self.errors = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _FORK_SERVER, *PRELOAD], cwd=REPO_ROOT, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors,
            text=True, bufsize=1)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        atexit.register(self.close)
        self._read(timeout=300)

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")  # the server ended

    def _read(self, timeout: float) -> dict:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            line = ""
        if not line:
            self.errors.seek(0)
            raise TimeoutError(f"the fork server gave no answer within {timeout:.0f}s:\n"
                               f"{self.errors.read()[-3000:]}")
        return json.loads(line)

    def run(self, source: str, timeout: float) -> Killed:
        with tempfile.NamedTemporaryFile("r", suffix=".log") as log:
            self.proc.stdin.write(json.dumps({"source": source, "log": log.name}) + "\n")
            self.proc.stdin.flush()
            pid = self._read(timeout=60)["pid"]
            try:
                code = self._read(timeout=timeout)["returncode"]
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                self._read(timeout=60)
                raise TimeoutError(f"the child ran over {timeout:.0f}s:\n{log.read()}") from None
            return Killed(returncode=code, output=log.read())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


@functools.cache
def _fork_server() -> _ForkServer:
    return _ForkServer()


def run_killed(program: str, *, timeout: float = 300) -> Killed:
    """Runs ``program`` (Python source) in a child process that must die of SIGKILL.

    The child runs from the repository root (``tests`` importable) with
    ``from tests.crash import kill_on_call`` done; its output is shown if it is not killed.
    """
    source = "from tests.crash import kill_on_call\n" + textwrap.dedent(program)
    done = _fork_server().run(source, timeout)
    assert done.returncode == -signal.SIGKILL, (
        f"the child was not killed (exit {done.returncode}):\n{done.output}")
    return done
