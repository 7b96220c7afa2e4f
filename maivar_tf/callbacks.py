"""The callbacks of one Algorithm 1 stage and the bookkeeping that makes a resume exact.

Each stage of :func:`maivar_tf.training.run_algorithm1` (Shaikh et al. 2024, Algorithm 1:
audio MLP, VMLP, fusion MLP) trains with ``model.fit`` and writes under ``run_dir/<stage>/``:

* ``backup/``: ``keras.callbacks.BackupAndRestore`` (weights, optimizer state and epoch after
  every epoch), so a killed run resumes at the next epoch;
* ``log.csv``: ``CSVLogger``, appended across resumes; before a resume :func:`resume_epoch`
  trims it to the epochs the backup covers, so every epoch appears exactly once;
* ``logs/``: TensorBoard events (when the ``tensorboard`` package is installed);
* ``best.keras`` (with validation data: the best ``val_loss`` so far, across resumes) or
  ``last.keras`` (``ModelCheckpoint``).

What a backup does not hold, the data order and the dropout masks, is positioned by the epoch
(:mod:`maivar_tf.seeds`), so the resumed epochs are those of the uninterrupted run.

Order matters: the CSV logger runs before the backup, so a kill between the two leaves a logged
epoch that the backup does not cover; the resume redoes it and :func:`trim_csv_log` drops the
stale row. The other order could lose a row for good.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import keras

from maivar_tf.runs import read_csv_log, stage_log_path

logger = logging.getLogger(__name__)

#: ``run_dir/<stage>/`` sub-folders and files written by the stage callbacks.
BACKUP_SUBDIR = "backup"
TENSORBOARD_SUBDIR = "logs"
BEST_CHECKPOINT = "best.keras"
LAST_CHECKPOINT = "last.keras"
#: What ``BackupAndRestore`` records (with ``double_checkpoint=True`` also a ``.bkp`` copy).
BACKUP_METADATA = "training_metadata.json"

_warned_no_tensorboard = False


def backup_epoch(backup_dir: str | Path) -> int:
    """Completed epochs recorded by ``BackupAndRestore`` in ``backup_dir`` (0 without a backup).

    Reads the metadata file, or its ``.bkp`` copy when the first is missing or unreadable
    (a kill while it was being written).
    """
    backup_dir = Path(backup_dir)
    for name in (BACKUP_METADATA, BACKUP_METADATA + ".bkp"):
        path = backup_dir / name
        if path.exists():
            try:
                return int(json.loads(path.read_text())["epoch"])
            except (ValueError, KeyError, TypeError):
                logger.warning("unreadable %s; resuming as BackupAndRestore decides", path)
    return 0


def trim_csv_log(path: str | Path, epochs_done: int) -> None:
    """Keeps the header and the rows of epochs ``0 .. epochs_done - 1`` of a ``CSVLogger`` file.

    Those are the epochs a resume will not redo; with ``epochs_done == 0`` the file is removed.
    A missing file is left missing.
    """
    path = Path(path)
    if not path.exists():
        return
    if epochs_done == 0:
        path.unlink()
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    col = header.index("epoch") if "epoch" in header else 0
    kept = [r for r in body if r and r[col].strip().isdigit() and int(r[col]) < epochs_done]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *kept])


def stage_dir(run_dir: str | Path, stage: str) -> Path:
    """``run_dir/<stage>``, where a stage's callbacks write."""
    return Path(run_dir) / stage


def resume_epoch(run_dir: str | Path, stage: str) -> int:
    """The epoch ``stage`` resumes at: its backup's, with its ``log.csv`` trimmed to match."""
    done = backup_epoch(stage_dir(run_dir, stage) / BACKUP_SUBDIR)
    trim_csv_log(stage_log_path(run_dir, stage), done)
    return done


def tensorboard_available() -> bool:
    """Whether the optional ``tensorboard`` package is installed (warns once when it is not)."""
    global _warned_no_tensorboard
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        if not _warned_no_tensorboard:
            logger.warning("the tensorboard package is not installed: no TensorBoard logs")
            _warned_no_tensorboard = True
        return False
    return True


def stage_callbacks(run_dir: str | Path, stage: str, *, validation: bool,
                    extra: Sequence[keras.callbacks.Callback] = ()
                    ) -> list[keras.callbacks.Callback]:
    """CSV log, backup, checkpoint and TensorBoard callbacks for one stage, in that order.

    Args:
        run_dir: the run folder (of this worker).
        stage: the stage name (``audio_mlp``, ``vmlp``, ``fusion``).
        validation: the fit has validation data: keep ``best.keras`` by ``val_loss``, starting
            from the best value an earlier (killed) invocation logged; else ``last.keras``.
        extra: more callbacks, appended last.
    """
    folder = stage_dir(run_dir, stage)
    log_path = stage_log_path(run_dir, stage)
    if validation:
        previous = read_csv_log(log_path).get("val_loss", [])
        best = min((v for v in previous if math.isfinite(v)), default=None)
        checkpoint = keras.callbacks.ModelCheckpoint(
            folder / BEST_CHECKPOINT, monitor="val_loss", save_best_only=True,
            initial_value_threshold=best)
    else:
        checkpoint = keras.callbacks.ModelCheckpoint(folder / LAST_CHECKPOINT)
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.CSVLogger(str(log_path), append=True),
        keras.callbacks.BackupAndRestore(str(folder / BACKUP_SUBDIR), double_checkpoint=True,
                                         delete_checkpoint=False),
        checkpoint,
    ]
    if tensorboard_available():
        callbacks.append(keras.callbacks.TensorBoard(str(folder / TENSORBOARD_SUBDIR),
                                                     write_graph=False, profile_batch=0))
    return callbacks + list(extra)


class EpochLines(keras.callbacks.Callback):
    """One line per stage now and then instead of Keras' per-epoch output (for log files).

    Prints ``<stage>: epoch E/N, loss L, accuracy A`` at most every ``every_s`` seconds and
    after the last epoch, through :func:`maivar_tf.console.progress`'s stream (stderr).
    """

    def __init__(self, stage: str, epochs: int, every_s: float):
        super().__init__()
        self.stage, self.epochs, self.every_s = stage, int(epochs), float(every_s)
        self._last = 0.0

    def on_train_begin(self, logs=None):
        import time

        self._last = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        import sys
        import time

        now = time.monotonic()
        if epoch + 1 < self.epochs and now - self._last < self.every_s:
            return
        self._last = now
        shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted((logs or {}).items())
                          if isinstance(v, (int, float)))
        print(f"{self.stage}: epoch {epoch + 1}/{self.epochs}, {shown}", file=sys.stderr,
              flush=True)


def fit_verbosity(verbose, stage: str, epochs: int
                  ) -> tuple[int | str, list[keras.callbacks.Callback]]:
    """``model.fit``'s verbosity and the progress callbacks for ``verbose``.

    ``"auto"``: Keras' one line per epoch on a terminal; otherwise no Keras output and an
    :class:`EpochLines` callback (a line every :data:`maivar_tf.console.LOG_EVERY_S` seconds and
    one at the end). Any other value goes to ``fit`` unchanged.
    """
    import sys

    from maivar_tf.console import LOG_EVERY_S

    if verbose != "auto":
        return verbose, []
    if sys.stdout.isatty():
        return 2, []
    return 0, [EpochLines(stage, epochs, LOG_EVERY_S)]


__all__ = [
    "BACKUP_METADATA", "EpochLines", "fit_verbosity", "BACKUP_SUBDIR", "BEST_CHECKPOINT", "LAST_CHECKPOINT",
    "TENSORBOARD_SUBDIR", "backup_epoch", "resume_epoch", "stage_callbacks", "stage_dir",
    "tensorboard_available", "trim_csv_log",
]
