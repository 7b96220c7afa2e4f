"""A trained run on disk: its three heads, its run info and (for serving) its backbones.

``maivar train`` (:func:`maivar_tf.training.run_algorithm1`) writes a run folder::

    run_info.json                  RunInfo: classes, K, feature widths, config, stages, metrics
    audio_mlp.keras, vmlp.keras, fusion.keras    the heads of Algorithm 1's three stages
    <stage>/log.csv, <stage>/logs/  per-epoch metrics (CSVLogger) and TensorBoard events

This module reads it back; nothing else parses those files.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maivar_tf.artifacts import RUN_INFO, RunInfo

#: Algorithm 1's stages, in training order; each is saved as ``run_dir/<stage>.keras``.
STAGES: tuple[str, ...] = ("audio_mlp", "vmlp", "fusion")
#: The per-epoch CSV log of a stage, relative to the run folder.
LOG_CSV = "log.csv"


@dataclass
class TrainedRun:
    """The three trained heads of one run.

    Args:
        audio_mlp: the audio MLP (input ``audio_features``).
        vmlp: the VMLP (input ``video_features``).
        fusion: the fusion MLP (inputs ``video_features``, ``audio_features``).
        histories: per stage, the CSV log as ``{column: [values per epoch]}`` (all epochs,
            including those before a resume).
        run_dir: where the run lives.
        info: the run's :class:`~maivar_tf.artifacts.RunInfo` (None while it is being written).
    """

    audio_mlp: Any
    vmlp: Any
    fusion: Any
    histories: dict[str, dict[str, list[float]]]
    run_dir: Path
    info: RunInfo | None = field(default=None)


def stage_log_path(run_dir: str | Path, stage: str) -> Path:
    """``run_dir/<stage>/log.csv``."""
    return Path(run_dir) / stage / LOG_CSV


def read_csv_log(path: str | Path) -> dict[str, list[float]]:
    """A ``CSVLogger`` file as ``{column: [float per row]}`` (empty when missing)."""
    path = Path(path)
    if not path.exists():
        return {}
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    out: dict[str, list[float]] = {k: [] for k in rows[0]}
    for row in rows:
        for k in out:
            try:
                out[k].append(float(row[k]))
            except (TypeError, ValueError):
                out[k].append(float("nan"))
    return out


def load_run(run_dir: str | Path, compile: bool = False) -> TrainedRun:
    """Loads a finished run: the three heads, their logs and the run info.

    Args:
        run_dir: the run folder.
        compile: also restore the training configuration and optimizer state.

    Raises:
        FileNotFoundError: naming every missing file.
    """
    import keras

    import maivar_tf.models  # noqa: F401  (registers the custom objects)

    run_dir = Path(run_dir)
    needed = [run_dir / RUN_INFO] + [run_dir / f"{s}.keras" for s in STAGES]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise FileNotFoundError(f"incomplete run in {run_dir}: missing {', '.join(missing)} "
                                "(train it with `maivar train`)")
    info = RunInfo.read(run_dir)
    models = {s: keras.saving.load_model(run_dir / f"{s}.keras", compile=compile)
              for s in STAGES}
    histories = {s: read_csv_log(stage_log_path(run_dir, s)) for s in STAGES}
    return TrainedRun(models["audio_mlp"], models["vmlp"], models["fusion"], histories,
                      run_dir, info)
