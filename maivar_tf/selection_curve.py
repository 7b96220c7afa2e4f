"""Accuracy against MACs per video over seeds and budgets (``maivar select-curve``).

:func:`selection_curve` evaluates every run (one per seed) with every selection mode at every
budget k (:func:`maivar_tf.efficiency.evaluate_selection`), plus all K segments as the
reference, and writes into ``out_dir``:

* ``selection_curve.json``: every cell (mode, k: the per-run accuracies, their mean and
  standard deviation, MACs and wall time per video);
* ``selection_curve.md``: the table (fusion accuracy mean ± std over the runs, the MACs per
  video and their share of full K, wall ms per video);
* ``selection_curve.png``: fusion accuracy against GMACs per video, one line per mode, the
  band between the runs' minimum and maximum, full K as a reference point.

The costs depend only on the backbones and K, not on the seed, so they are computed (and
timed) once per (mode, k) on the first run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from maivar_tf.selection import SELECTION_MODES
from maivar_tf.utils import write_json_atomic

CURVE_FILES = ("selection_curve.json", "selection_curve.md", "selection_curve.png")
#: The reference row's mode name (all K segments, no selection).
FULL = "full"


def _cell(mode: str, k: int, reports: list[dict[str, Any]]) -> dict[str, Any]:
    fusion = np.array([r["accuracy"]["fusion"] for r in reports], np.float64)
    video = np.array([r["accuracy"]["video"] for r in reports], np.float64)
    costs = reports[0]["costs"]
    cell = {"mode": mode, "k": int(k), "runs": [r["run_dir"] for r in reports],
            "fusion": fusion.tolist(), "video": video.tolist(),
            "fusion_mean": float(fusion.mean()), "fusion_std": float(fusion.std(ddof=0)),
            "fusion_min": float(fusion.min()), "fusion_max": float(fusion.max()),
            "video_mean": float(video.mean()), "macs": int(costs["macs"]["total"]),
            "macs_parts": costs["macs"],
            "wall_ms": costs.get("wall_ms", {}).get("total")}
    fractions = [r.get("event_fraction") for r in reports]
    if all(f is not None for f in fractions):
        cell["event_fraction"] = float(np.mean(fractions))
    return cell


def selection_curve(run_dirs: Sequence[str | Path], features_dir: str | Path,
                    budgets: Sequence[int], out_dir: str | Path, *,
                    modes: Sequence[str] = SELECTION_MODES, timing: bool = True,
                    repeats: int = 5, split: str = "test") -> dict[str, Any]:
    """Every mode x budget over the runs, plus full K; writes :data:`CURVE_FILES`.

    Returns:
        ``{"cells": [...], "num_segments": K, "runs": [...], "files": [...]}``.
    """
    from maivar_tf.efficiency import evaluate_selection

    if not run_dirs:
        raise ValueError("selection curve: no run folders given")
    out_dir = Path(out_dir)
    cells, num_segments = [], None

    def over_runs(mode: str, k: int) -> list[dict[str, Any]]:
        reports, costs = [], None
        for run_dir in run_dirs:
            r = evaluate_selection(run_dir, features_dir, mode, k, split=split, timing=timing,
                                   repeats=repeats, costs=costs,
                                   out_dir=out_dir / Path(run_dir).name / f"{mode}-k{k}")
            costs = r["costs"]
            reports.append(r)
        return reports

    full = over_runs("uniform", 0)
    num_segments = full[0]["num_segments"]
    cells.append(_cell(FULL, num_segments, full))
    for mode in modes:
        for k in budgets:
            if int(k) >= num_segments:
                continue
            cells.append(_cell(mode, int(k), over_runs(mode, int(k))))
    report = {"num_segments": num_segments, "runs": [str(r) for r in run_dirs],
              "budgets": [int(k) for k in budgets], "modes": list(modes), "cells": cells}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / CURVE_FILES[0], report)
    (out_dir / CURVE_FILES[1]).write_text(format_curve_table(report) + "\n")
    plot_curve(report, out_dir / CURVE_FILES[2])
    report["files"] = [str(out_dir / f) for f in CURVE_FILES]
    return report


def format_curve_table(report: dict[str, Any]) -> str:
    """The Markdown table of a :func:`selection_curve` report."""
    cells = report["cells"]
    full = next(c for c in cells if c["mode"] == FULL)
    n = len(full["fusion"])
    lines = [f"| selection | k of K={report['num_segments']} | fusion top-1 (mean ± std, "
             f"{n} runs) | VMLP top-1 | in span | GMACs / video | of full K | wall ms / video |",
             "|---|---|---|---|---|---|---|---|"]
    for c in cells:
        span = f"{100 * c['event_fraction']:.0f}%" if "event_fraction" in c else "-"
        wall = f"{c['wall_ms']:.1f}" if c.get("wall_ms") is not None else "-"
        lines.append(f"| {c['mode']} | {c['k']} | {100 * c['fusion_mean']:.2f} ± "
                     f"{100 * c['fusion_std']:.2f} | {100 * c['video_mean']:.2f} | {span} | "
                     f"{c['macs'] / 1e9:.3f} | {100 * c['macs'] / full['macs']:.1f}% | {wall} |")
    return "\n".join(lines)


def plot_curve(report: dict[str, Any], path: str | Path, dpi: int = 120) -> Path:
    """Fusion accuracy against GMACs per video: one line per mode, a min-max band, full K."""
    from maivar_tf.plotting import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    cells = report["cells"]
    full = next(c for c in cells if c["mode"] == FULL)
    for mode in report["modes"]:
        rows = sorted((c for c in cells if c["mode"] == mode), key=lambda c: c["macs"])
        if not rows:
            continue
        x = np.array([c["macs"] for c in rows]) / 1e9
        y = 100 * np.array([c["fusion_mean"] for c in rows])
        line, = ax.plot(x, y, marker="o", label=mode)
        ax.fill_between(x, [100 * c["fusion_min"] for c in rows],
                        [100 * c["fusion_max"] for c in rows], color=line.get_color(),
                        alpha=0.15)
        for c, xi, yi in zip(rows, x, y, strict=True):
            ax.annotate(f"k={c['k']}", (xi, yi), textcoords="offset points", xytext=(3, 3),
                        fontsize=7)
    ax.errorbar([full["macs"] / 1e9], [100 * full["fusion_mean"]],
                yerr=[[100 * (full["fusion_mean"] - full["fusion_min"])],
                      [100 * (full["fusion_max"] - full["fusion_mean"])]],
                marker="*", markersize=12, color="black", linestyle="none",
                label=f"all K={report['num_segments']}")
    ax.set_xlabel("GMACs per video")
    ax.set_ylabel("fusion top-1 accuracy (%)")
    ax.set_title("Accuracy against cost of segment selection")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi)


def runs_in(folder: str | Path) -> list[Path]:
    """The run folders (holding ``run_info.json``) directly in ``folder`` or one level down,
    sorted (an ablation cell's ``seed-*`` folders)."""
    folder = Path(folder)
    found = sorted({p.parent for p in (*folder.glob("run_info.json"),
                                       *folder.glob("*/run_info.json"))})
    if not found:
        raise FileNotFoundError(f"no run folders (run_info.json) in {folder}")
    return found


def curve_command(run_dirs: str, features_dir: str | Path, budgets: str, modes: str,
                  repeats: int = 5, out: str | None = None) -> int:
    """``maivar select-curve``: ``run_dirs`` is a comma list of runs or one folder of runs."""
    paths = [Path(p) for p in run_dirs.split(",") if p]
    if len(paths) == 1 and not (paths[0] / "run_info.json").exists():
        paths = runs_in(paths[0])
    out_dir = Path(out) if out else paths[0].parent / "selection_curve"
    report = selection_curve(paths, features_dir, [int(k) for k in budgets.split(",")],
                             out_dir, modes=modes.split(","), repeats=repeats)
    print(format_curve_table(report))
    print(f"written: {', '.join(report['files'])}")
    return 0


__all__ = ["CURVE_FILES", "FULL", "curve_command", "format_curve_table", "plot_curve", "runs_in",
           "selection_curve"]
