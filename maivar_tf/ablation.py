"""``maivar ablate``: one axis of MAiVAR's ablations, every value trained with several seeds.

Shaikh et al. 2024 rest their claims on ablations of the audio backbone (§5.2.1, Fig. 6), of
Algorithm 1's weight transfer (§3.6, Fig. 7) and of the audio-image representation (Table 3),
each from a single run. Here every *cell* ``(value, seed)`` of an axis is one run of Algorithm 1
(:func:`maivar_tf.training.run_algorithm1`) with the config overrides ``model.<axis>=<value>``
and ``train.seed=<seed>``, evaluated on the test split; :mod:`maivar_tf.stats` summarises the
seeds and :mod:`maivar_tf.ablation_report` writes the table and the convergence figure.

Contracts:

* Axes (:data:`AXES`): ``fusion`` (values :data:`~maivar_tf.config.FUSION_METHODS`, by
  default without ``temporal_binding`` unless ``data.segment_audio``; baseline ``vmlp_init``),
  ``representation`` (default values ``data.representations``) and ``audio_backbone``
  (:data:`~maivar_tf.config.AUDIO_BACKBONES`), whose baseline is the config's own value, and
  ``modality_dropout`` (``train.fusion.modality_dropout``, numbers in ``[0, 1)``, default
  ``0, 0.5``, baseline ``0``), whose cells are also evaluated with every test clip's audio
  silenced (``test_silent``). A cell whose run has a localiser also records its segment
  metrics (``localisation``). Seeds are ``train.seed + i`` for ``i < N``: they change initialisation, dropout and
  data order; the validation hold-out (``train.val_fraction``) is not seeded, so every cell
  trains and validates on the same examples.
* Layout: ``out_dir/<axis>/<value>/seed-<s>/`` is the cell's run folder (resumable like any
  run), with ``eval/report.json`` and :data:`CELL_RESULT`; a cell whose :data:`CELL_RESULT`
  exists is read back instead of trained. The report files (:data:`REPORT_FILES`) go to
  ``out_dir/`` (the latest axis) and ``out_dir/<axis>/`` (kept per axis).
* Reuse: the stages that do not depend on the axis (:data:`SHARED_STAGES`: the audio MLP and
  the VMLP for ``fusion``, the VMLP otherwise) are trained once per seed, in the first value's
  cell, and copied (``<stage>.keras`` and ``<stage>/log.csv``) into the other values' cells
  before training, where :func:`~maivar_tf.training.run_algorithm1` skips them.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maivar_tf import stats
from maivar_tf.ablation_report import (
    AXES,
    CONVERGENCE_PNG,
    REPORT_FILES,
    REPORT_JSON,
    REPORT_MD,
    write_reports,
)
from maivar_tf.artifacts import FeatureInfo
from maivar_tf.config import (
    AUDIO_BACKBONES,
    FUSION_METHODS,
    REPRESENTATIONS,
    ExperimentConfig,
    apply_overrides,
    from_dict,
)
from maivar_tf.evaluation import (
    EVAL_SUBDIR,
    SILENT_EVAL_SUBDIR,
    STREAMS,
    evaluate_models,
    run_heads,
)
from maivar_tf.json_records import load_json
from maivar_tf.localisation import SILENT, load_split, needs_segments
from maivar_tf.runs import STAGES, read_csv_log, stage_log_path
from maivar_tf.utils import write_json_atomic

logger = logging.getLogger(__name__)

#: Per axis, the stages whose training does not depend on it (shared by a seed's cells).
SHARED_STAGES: dict[str, tuple[str, ...]] = {
    "fusion": ("audio_mlp", "vmlp"), "representation": ("vmlp",), "audio_backbone": ("vmlp",),
    "modality_dropout": ("audio_mlp", "vmlp")}
#: The config field each axis sets.
AXIS_FIELDS = {"fusion": "model.fusion", "representation": "model.representation",
               "audio_backbone": "model.audio_backbone",
               "modality_dropout": "train.fusion.modality_dropout"}
#: ``--values`` of the modality dropout axis when none are given.
DEFAULT_DROPOUTS = ("0", "0.5")
#: A finished cell's results, in its run folder.
CELL_RESULT = "ablation_cell.json"
#: Where the ablations of a run go, under ``train.output_dir``.
ABLATION_SUBDIR = "ablation"
#: Default number of seeds per cell.
DEFAULT_SEEDS = 3

#: ``train_fn(cfg, train_set, run_dir, donor) -> run`` with ``audio_mlp``, ``vmlp``,
#: ``fusion`` and ``run_dir``; ``donor`` is the cell whose shared stages were offered (None
#: for a seed's first value). Default: :func:`train_cell`.
TrainFn = Callable[[ExperimentConfig, Any, Path, "Path | None"], Any]


def axis_values(axis: str) -> tuple[str, ...]:
    """Every value an axis allows (``modality_dropout``: its default values; any number in
    ``[0, 1)`` is allowed). Raises ValueError for an unknown axis."""
    allowed = {"fusion": FUSION_METHODS, "representation": REPRESENTATIONS,
               "audio_backbone": AUDIO_BACKBONES, "modality_dropout": DEFAULT_DROPOUTS}
    if axis not in allowed:
        raise ValueError(f"unknown ablation axis {axis!r}; allowed: {', '.join(AXES)}")
    return tuple(allowed[axis])


def default_values(cfg: ExperimentConfig, axis: str) -> tuple[str, ...]:
    """The values ablated without ``--values``: ``data.representations``, every fusion method
    (``temporal_binding`` only with ``data.segment_audio``), or all of the axis."""
    if axis == "representation":
        return tuple(cfg.data.representations)
    if axis == "fusion" and not cfg.data.segment_audio:
        return tuple(v for v in axis_values(axis) if v != "temporal_binding")
    return axis_values(axis)


def baseline_value(cfg: ExperimentConfig, axis: str) -> str:
    """What the other values are compared with: ``vmlp_init`` (Algorithm 1) for fusion, ``0``
    (no dropout) for modality dropout, else the config's own ``model.<axis>``."""
    axis_values(axis)
    fixed = {"fusion": "vmlp_init", "modality_dropout": DEFAULT_DROPOUTS[0]}
    return fixed[axis] if axis in fixed else getattr(cfg.model, axis)


def seed_values(cfg: ExperimentConfig, num_seeds: int) -> list[int]:
    """``train.seed + i`` for ``i < num_seeds``. Raises ValueError unless ``num_seeds >= 1``."""
    if num_seeds < 1:
        raise ValueError(f"--seeds: {num_seeds}; expected at least 1")
    return [cfg.train.seed + i for i in range(num_seeds)]


@dataclass(frozen=True)
class Cell:
    """One ``(value, seed)`` of an axis.

    Args:
        axis: the ablated ``model`` field.
        value: its value in this cell.
        seed: ``train.seed`` of this cell.
        cfg: the experiment with both overrides applied (validated).
        run_dir: the cell's run folder.
    """

    axis: str
    value: str
    seed: int
    cfg: ExperimentConfig
    run_dir: Path

    @property
    def result_path(self) -> Path:
        """The cell's :data:`CELL_RESULT`."""
        return self.run_dir / CELL_RESULT


def cell_config(cfg: ExperimentConfig, axis: str, value: str, seed: int) -> ExperimentConfig:
    """``cfg`` with the axis' field (:data:`AXIS_FIELDS`) ``=<value>`` and ``train.seed=<seed>``,
    validated like ``--set``. A fusion cell other than ``temporal_binding`` also sets
    ``model.localisation=false``: the localiser needs temporal binding's per-segment features,
    so on the untrimmed config the clip-level cells train the three heads only.

    Raises:
        maivar_tf.config.ConfigError: the value is not allowed (naming the field).
    """
    axis_values(axis)
    overrides = [f"{AXIS_FIELDS[axis]}={value}", f"train.seed={seed}"]
    if axis == "fusion" and value != "temporal_binding":
        overrides.append("model.localisation=false")
    tree = apply_overrides(cfg.to_dict(), overrides)
    return from_dict(ExperimentConfig, tree)


def plan_cells(cfg: ExperimentConfig, axis: str, values: Sequence[str], seeds: Sequence[int],
               out_dir: str | Path) -> list[Cell]:
    """Every cell, value-major, each config validated before anything trains."""
    if not values:
        raise ValueError(f"no {axis} values to ablate; allowed: {', '.join(axis_values(axis))}")
    if len(set(values)) != len(values):
        raise ValueError(f"repeated {axis} values: {', '.join(values)}")
    root = Path(out_dir) / axis
    return [Cell(axis, v, s, cell_config(cfg, axis, v, s), root / v / f"seed-{s}")
            for v in values for s in seeds]


def reuse_stages(donor: Path, run_dir: Path, stages: Sequence[str]) -> list[str]:
    """Copies the finished ``stages`` of ``donor`` (``.keras`` + ``log.csv``) into ``run_dir``.

    A stage ``run_dir`` already has, or ``donor`` has not finished, is left alone.

    Returns:
        The stages copied.
    """
    copied = []
    for stage in stages:
        source, target = donor / f"{stage}.keras", run_dir / f"{stage}.keras"
        if target.exists() or not source.exists():
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        log = stage_log_path(donor, stage)
        if log.exists():
            stage_log_path(run_dir, stage).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(log, stage_log_path(run_dir, stage))
        shutil.copy2(source, target)  # last: a half-copied stage is never "finished"
        copied.append(stage)
    return copied


def train_cell(cfg: ExperimentConfig, train: Any, run_dir: Path, donor: Path | None = None):
    """Algorithm 1 for one cell (``train.val_fraction`` of ``train`` held out for validation).

    ``donor`` is informational: :func:`reuse_stages` has already copied its shared stages.
    """
    from maivar_tf.training import run_algorithm1

    return run_algorithm1(cfg, train, val=None, run_dir=run_dir)


def extract_missing(cfg: ExperimentConfig, features_dir: Path, reps: Sequence[str]) -> None:
    """Extracts the audio features of ``reps`` that ``features_dir`` lacks for train or test,
    from ``cfg.model.audio_backbone`` (added beside other backbones' audio shards; the video
    shards that exist are not redone)."""
    from maivar_tf.features import extract_features

    info = FeatureInfo.read(features_dir) if FeatureInfo.exists(features_dir) else None
    audio = info.audio(cfg.model.audio_backbone) if info is not None else None
    splits = audio.representations if audio is not None else {}
    done = {s: splits.get(s, ()) for s in ("train", "test")}
    if any(r not in done[s] for s in done for r in reps):
        logger.info("extracting the missing audio features of %s", ", ".join(reps))
        extract_features(cfg, splits=("train", "test"), representations=list(reps),
                         features_dir=features_dir)


def cell_features(cfg: ExperimentConfig, features_dir: Path, split: str) -> Any:
    """The FeatureSet a cell trains (``train``) or is evaluated (``test``) on.

    The audio features are those of ``model.representation``, made by ``model.audio_backbone``
    (with the per-segment ones for ``temporal_binding``).

    Raises:
        maivar_tf.features.FeatureError: not extracted (for that audio backbone).
    """
    return load_split(features_dir, split, cfg.model.representation, cfg.model.audio_backbone,
                      segments=needs_segments(cfg))


def _finite(values: Sequence[float]) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values]


def convergence(logs: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """The fusion stage's validation curves and :func:`maivar_tf.stats.epochs_to_reach`.

    Returns:
        ``{"val_accuracy", "val_loss"}`` (lists, None for a non-finite epoch),
        ``"final_val_accuracy"`` (mean of the last :data:`~maivar_tf.stats.FINAL_EPOCHS`),
        ``"epochs_to_95"``; the last two are None without validation data (and a note says so).
    """
    fusion = logs.get("fusion", {})
    acc, loss = fusion.get("val_accuracy", []), fusion.get("val_loss", [])
    if not any(math.isfinite(v) for v in acc):  # CSVLogger writes NA without validation data
        acc, loss = [], []
    out: dict[str, Any] = {"val_accuracy": _finite(acc), "val_loss": _finite(loss),
                           "final_val_accuracy": stats.final_value(acc),
                           "epochs_to_95": stats.epochs_to_reach(acc)}
    if not acc:
        out["note"] = ("no per-epoch validation accuracy for the fusion stage (no validation "
                       "split: train.val_fraction = 0, or a fusion that is not fitted)")
    return out


def run_cell(cell: Cell, train: Any, test: Any, train_fn: TrainFn,
             donor: Path | None) -> dict[str, Any]:
    """Trains (or resumes) one cell, evaluates it on ``test`` and writes its result JSON."""
    t0 = time.time()
    reused = [] if donor is None else reuse_stages(donor, cell.run_dir,
                                                   SHARED_STAGES[cell.axis])
    cell.run_dir.mkdir(parents=True, exist_ok=True)
    run = train_fn(cell.cfg, train, cell.run_dir, donor)
    localiser = getattr(run, "localiser", None)
    extra = {} if localiser is None else {"localiser": localiser}
    report = evaluate_models(run_heads(run), test, cell.run_dir / EVAL_SUBDIR, tsne=False,
                             **extra)
    logs = {s: read_csv_log(stage_log_path(run.run_dir, s)) for s in STAGES}
    result = {
        "axis": cell.axis, "value": cell.value, "seed": cell.seed,
        "test": _top1(report),
        "convergence": convergence(logs),
        "logs": {s: {k: _finite(v) for k, v in log.items()} for s, log in logs.items()},
        "reused_stages": {s: str(donor) for s in reused},
        "seconds": round(time.time() - t0, 3),
    }
    if cell.axis == "modality_dropout":
        silent = evaluate_models(run_heads(run), test, cell.run_dir / SILENT_EVAL_SUBDIR,
                                 tsne=False, audio=SILENT)
        result["test_silent"] = _top1(silent)
    if report.get("localisation"):
        result["localisation"] = report["localisation"]
    write_json_atomic(cell.result_path, result)
    return result


def _top1(report: dict[str, Any]) -> dict[str, Any]:
    return {s: {"top1": report["models"][s]["top1"],
                "mean_class_accuracy": report["models"][s]["mean_class_accuracy"]}
            for s in STREAMS}


def _summary(values: Sequence[float | None]) -> dict[str, Any]:
    finite = [v for v in values if v is not None]
    return {"values": list(values), "mean": stats.mean(finite) if finite else None,
            "std": stats.sample_std(finite)}


def summarise(results: Sequence[dict[str, Any]], values: Sequence[str],
              baseline: str) -> dict[str, dict[str, Any]]:
    """Per value: mean ± std of each stream's test top-1, of epochs to 95% and of the final
    validation accuracy, and the fusion top-1's paired difference with ``baseline``; when the
    cells have them, of the fusion top-1 on silent audio (``fusion_silent_top1``) and of the
    localiser's segment and event accuracy and of the two trivial baselines on the same
    segments (``localisation_segment_accuracy``, ``localisation_event_accuracy``,
    ``localisation_baseline_all_event``, ``localisation_baseline_all_background``)."""
    by_value = {v: sorted((r for r in results if r["value"] == v), key=lambda r: r["seed"])
                for v in values}
    base = {r["seed"]: r["test"]["fusion"]["top1"] for r in by_value.get(baseline, [])}
    rows: dict[str, dict[str, Any]] = {}
    for v, cells in by_value.items():
        row: dict[str, Any] = {"seeds": [r["seed"] for r in cells]}
        for s in STREAMS:
            row[f"{s}_top1"] = _summary([r["test"][s]["top1"] for r in cells])
        for k in ("epochs_to_95", "final_val_accuracy"):
            row[k] = _summary([r["convergence"][k] for r in cells])
        if any("test_silent" in r for r in cells):
            row["fusion_silent_top1"] = _summary([r.get("test_silent", {}).get("fusion", {})
                                                  .get("top1") for r in cells])
        for k in ("segment_accuracy", "event_accuracy", "baseline_all_event",
                  "baseline_all_background"):
            if any((r.get("localisation") or {}).get(k) is not None for r in cells):
                row[f"localisation_{k}"] = _summary([(r.get("localisation") or {}).get(k)
                                                     for r in cells])
        paired = [r for r in cells if r["seed"] in base]
        row["fusion_vs_baseline"] = None if v == baseline or not paired else \
            stats.paired_difference([r["test"]["fusion"]["top1"] for r in paired],
                                    [base[r["seed"]] for r in paired]).to_dict()
        rows[v] = row
    return rows


def run_ablation(cfg: ExperimentConfig, over: str, values: Sequence[str] | None = None,
                 seeds: int = DEFAULT_SEEDS, *, features_dir: str | Path | None = None,
                 out_dir: str | Path | None = None, train_fn: TrainFn | None = None,
                 extract: bool = True) -> dict[str, Any]:
    """Trains and evaluates every ``(value, seed)`` cell of one axis; writes the reports.

    Args:
        cfg: the experiment.
        over: the axis (:data:`AXES`).
        values: which values (default :func:`default_values`), in table order.
        seeds: how many seeds per value (:func:`seed_values`).
        features_dir: overrides ``cfg.data.features_dir``.
        out_dir: the ablation folder (default ``<train.output_dir>/ablation``).
        train_fn: trains one cell (default :func:`train_cell`).
        extract: first extract the audio features of representations ``features_dir`` lacks.

    Returns:
        The report (also ``report.json``): ``axis``, ``baseline``, ``values``, ``seeds``,
        ``rows`` (see :func:`summarise`), ``cells`` (every cell's result) and ``seconds``.

    Raises:
        ValueError: an unknown axis, no or repeated values, fewer than one seed.
        maivar_tf.config.ConfigError: a value the config does not allow, or
            ``train.end_to_end`` (the cells train heads on features).
    """
    if cfg.train.end_to_end:
        from maivar_tf.config import ConfigError

        raise ConfigError("train.end_to_end: an ablation trains each cell's heads on the "
                          "features; allowed: false (run `maivar train` for end to end)")
    t0 = time.time()
    values = list(values if values is not None else default_values(cfg, over))
    features_dir = Path(features_dir or cfg.data.features_dir)
    # the runs record (and serve with the backbones of) the features they were trained on
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data,
                                                            features_dir=str(features_dir)))
    out_dir = Path(out_dir or Path(cfg.train.output_dir) / ABLATION_SUBDIR)
    seed_list = seed_values(cfg, seeds)
    cells = plan_cells(cfg, over, values, seed_list, out_dir)
    if extract:  # per audio backbone (the audio_backbone axis has several), base seed
        for backbone in dict.fromkeys(c.cfg.model.audio_backbone for c in cells):
            extract_missing(dataclasses.replace(cfg, model=dataclasses.replace(
                cfg.model, audio_backbone=backbone)), features_dir,
                sorted({c.cfg.model.representation for c in cells}))
    train_fn = train_fn or train_cell
    loaded: dict[tuple[str, str, str], Any] = {}
    results = []
    for cell in cells:
        if cell.result_path.exists():
            logger.info("%s=%s seed %d: finished, skipping", over, cell.value, cell.seed)
            results.append(load_json(cell.result_path.read_text(), cell.result_path))
            continue
        sets = []
        for split in ("train", "test"):
            key = (cell.cfg.model.representation, cell.cfg.model.audio_backbone,
                   needs_segments(cell.cfg), split)
            if key not in loaded:
                loaded[key] = cell_features(cell.cfg, features_dir, split)
            sets.append(loaded[key])
        donor = cells[seed_list.index(cell.seed)].run_dir if cell.value != values[0] else None
        results.append(run_cell(cell, *sets, train_fn, donor))
        logger.info("%s=%s seed %d: fusion top-1 %.2f%%", over, cell.value, cell.seed,
                    100 * results[-1]["test"]["fusion"]["top1"])
    report = {"name": cfg.name, "axis": over, "baseline": baseline_value(cfg, over),
              "values": values, "seeds": seed_list,
              "rows": summarise(results, values, baseline_value(cfg, over)),
              "cells": results, "seconds": round(time.time() - t0, 3)}
    write_reports(report, out_dir, out_dir / over)
    return report


__all__ = ["ABLATION_SUBDIR", "AXES", "AXIS_FIELDS", "DEFAULT_DROPOUTS", "CELL_RESULT", "CONVERGENCE_PNG", "DEFAULT_SEEDS",
           "REPORT_FILES", "REPORT_JSON", "REPORT_MD", "SHARED_STAGES", "Cell", "TrainFn",
           "axis_values", "baseline_value", "cell_config", "cell_features", "convergence",
           "default_values", "extract_missing", "plan_cells", "reuse_stages", "run_ablation",
           "run_cell", "seed_values", "summarise", "train_cell"]
