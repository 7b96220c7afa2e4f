"""What the commands show a person: progress, and TensorFlow's start-up banner kept quiet.

* :func:`progress` is a tqdm bar on a terminal and a periodic one-line report otherwise, so
  a log file (``make demo > demo.log``) holds a few readable lines instead of hundreds of
  carriage-return updates.
* :func:`import_tensorflow_quietly` imports TensorFlow with the native (C++) start-up lines
  hidden: the oneDNN notice, the missing-CUDA notices and absl's "before InitializeLog"
  warning, which ``TF_CPP_MIN_LOG_LEVEL`` does not silence in TensorFlow 2.21. ``--verbose``
  (``MAIVAR_VERBOSE=1``) shows them.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

#: Set (to anything but ``""``/``0``) to show TensorFlow's native logs and banners.
VERBOSE_ENV = "MAIVAR_VERBOSE"
#: Seconds between two progress lines when the output is not a terminal.
LOG_EVERY_S = 30.0


def verbose() -> bool:
    """Whether :data:`VERBOSE_ENV` asks for TensorFlow's native logs."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def import_tensorflow_quietly():
    """Imports TensorFlow (and enumerates its devices) with native stderr lines hidden.

    Python-level output is unaffected before and after; during the import, file descriptor 2
    points at ``/dev/null``. With :func:`verbose` nothing is hidden.

    Returns:
        The ``tensorflow`` module.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if verbose() or "tensorflow" in sys.modules:
        import tensorflow as tf

        return tf
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()  # the device probe logs now, not mid-run
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return tf


#: Start-up warnings of libraries that say nothing about this project's work (Beam warns at
#: import that the optional Google Cloud clients are not installed).
KNOWN_NOISE = ("apitools not found, and bigquery client libraries are not available",)


def _not_noise(record) -> bool:
    return not any(text in record.getMessage() for text in KNOWN_NOISE)


def quiet_known_warnings() -> None:
    """Drops :data:`KNOWN_NOISE` warnings from the root logger (unless :func:`verbose`)."""
    import logging

    root = logging.getLogger()
    if not verbose() and _not_noise not in root.filters:
        root.addFilter(_not_noise)


class _LogLines:
    """A tqdm-like counter printing ``desc: n/total unit (rate/s)`` every few seconds."""

    def __init__(self, iterable: Iterable | None, total: int | None, desc: str, unit: str,
                 every_s: float, stream):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.every_s, self.stream = every_s, stream
        self.n = 0
        self._t0 = self._last = time.monotonic()
        self._closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _line(self) -> str:
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        of = f"/{self.total}" if self.total else ""
        return (f"{self.desc}: {self.n}{of} {self.unit}s in {elapsed:.0f}s "
                f"({self.n / elapsed:.2f} {self.unit}s/s)")

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            print(self._line(), file=self.stream, flush=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            print(self._line(), file=self.stream, flush=True)


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", enabled: bool = True, every_s: float = LOG_EVERY_S,
             stream=None) -> Any:
    """A progress reporter: tqdm on a terminal, periodic log lines otherwise, or nothing.

    Args:
        iterable: iterate through it (or call ``update(n)`` / ``close()`` yourself).
        total: the expected count.
        desc: what is counted (``"extract train"``).
        unit: the counted thing (``"video"``).
        enabled: ``False`` reports nothing.
        every_s: seconds between lines when the output is not a terminal.
        stream: where to write (default ``sys.stderr``).

    Returns:
        An object with ``update(n)``, ``close()``, iteration and ``with`` support.
    """
    stream = stream or sys.stderr
    if not enabled:
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, disable=True)
    if getattr(stream, "isatty", lambda: False)():
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, file=stream)
    return _LogLines(iterable, total, desc, unit, every_s, stream)
