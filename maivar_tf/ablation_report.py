"""The reports of ``maivar ablate``: the Table 3 layout with seeds, and the convergence figure.

:func:`format_ablation_table` extends the paper's Table 3 (Shaikh et al. 2024) to any axis of
:mod:`maivar_tf.ablation`: per value, the video-only, audio-only and fusion test top-1 as
``mean ± sample std`` over the seeds, the fusion top-1's paired difference with the baseline
and its 95% Student's t interval (:func:`maivar_tf.stats.paired_difference`), and the epochs
the fusion stage needs to reach 95% of its final validation accuracy
(:func:`maivar_tf.stats.epochs_to_reach`), and, when the cells have them, the fusion top-1 on
silent audio (the modality dropout axis) and the localiser's segment accuracy. :func:`plot_convergence` draws one validation
accuracy (and loss) curve per value, the mean over seeds with a min-max band (the paper's
Fig. 7 with error bands). Nothing here trains.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from maivar_tf.stats import CONVERGED_FRACTION, FINAL_EPOCHS
from maivar_tf.utils import write_json_atomic

#: The report files, written to the ablation folder and to its per-axis folder.
REPORT_MD, REPORT_JSON, CONVERGENCE_PNG = "report.md", "report.json", "convergence.png"
REPORT_FILES: tuple[str, ...] = (REPORT_MD, REPORT_JSON, CONVERGENCE_PNG)
#: The first column's title per axis (:data:`AXES` in order).
AXIS_TITLES = {"fusion": "Fusion", "representation": "Representation",
               "audio_backbone": "Audio backbone", "modality_dropout": "Modality dropout"}
#: Optional columns: (row key, title), shown when some row has the key.
EXTRA_COLUMNS = (("fusion_silent_top1", "Fusion top-1, silent audio (%)"),
                 ("localisation_segment_accuracy", "Localisation segment acc., C+1 way (%)"),
                 ("localisation_event_accuracy", "Event/background acc. (%)"),
                 ("localisation_baseline_all_event", "Baseline: all event (%)"),
                 ("localisation_baseline_all_background", "Baseline: all background (%)"))
#: The ablation axes: the ``model`` field each one sets (see :mod:`maivar_tf.ablation`).
AXES: tuple[str, ...] = tuple(AXIS_TITLES)


def _pm(summary: Mapping[str, Any], scale: float = 100.0, digits: int = 2) -> str:
    """``mean ± std`` (``mean`` alone for one seed, ``n/a`` without values)."""
    if summary["mean"] is None:
        return "n/a"
    text = f"{scale * summary['mean']:.{digits}f}"
    if summary["std"] is not None:
        text += f" ± {scale * summary['std']:.{digits}f}"
    return text


def format_difference(diff: Mapping[str, Any] | None, is_baseline: bool) -> str:
    """A paired difference in percentage points: ``+1.20 [-0.40, +2.80]``."""
    if is_baseline:
        return "baseline"
    if diff is None:
        return "n/a (baseline not run)"
    text = f"{100 * diff['mean']:+.2f}"
    if diff["ci_low"] is None:
        return text + " (1 seed: no interval)"
    return text + f" [{100 * diff['ci_low']:+.2f}, {100 * diff['ci_high']:+.2f}]"


def format_ablation_table(report: Mapping[str, Any]) -> str:
    """The report of :func:`maivar_tf.ablation.run_ablation` as Markdown.

    The best mean fusion top-1 (every tie, to two decimals) is bold.

    Raises:
        ValueError: a report without rows.
    """
    rows, axis, baseline = report["rows"], report["axis"], report["baseline"]
    if not rows:
        raise ValueError("no ablation results to tabulate")
    seeds = report["seeds"]
    means = {v: r["fusion_top1"]["mean"] for v, r in rows.items()}
    best = max(round(100 * m, 2) for m in means.values() if m is not None)
    extra = [(k, t) for k, t in EXTRA_COLUMNS if any(k in r for r in rows.values())]
    lines = [f"### {report['name']}: {axis} ablation (test top-1, mean ± sample std over "
             f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}: "
             f"{', '.join(map(str, seeds))})", "",
             f"| {AXIS_TITLES[axis]} | Video-only top-1 (%) | Audio-only top-1 (%) | "
             f"Fusion top-1 (%) | Fusion vs {baseline} (pp, 95% CI) | "
             f"Epochs to {100 * CONVERGED_FRACTION:.0f}% of final val acc |"
             + "".join(f" {t} |" for _, t in extra),
             "|---|---:|---:|---:|---:|---:|" + "---:|" * len(extra)]
    for value, r in rows.items():
        fusion = _pm(r["fusion_top1"])
        if means[value] is not None and round(100 * means[value], 2) == best:
            fusion = f"**{fusion}**"
        lines.append(f"| {value} | {_pm(r['video_top1'])} | {_pm(r['audio_top1'])} | {fusion} | "
                     f"{format_difference(r['fusion_vs_baseline'], value == baseline)} | "
                     f"{_pm(r['epochs_to_95'], scale=1.0, digits=1)} |"
                     + "".join(f" {_pm(r[k]) if k in r else 'n/a'} |" for k, _ in extra))
    lines += ["", f"Paired difference: the mean over seeds of (value - {baseline}) fusion top-1 "
              "for the same seed, with its 95% Student's t interval "
              "(t_0.975,n-1 * s_d / sqrt(n); none for one seed). Epochs to "
              f"{100 * CONVERGED_FRACTION:.0f}%: the first epoch whose fusion-stage validation "
              f"accuracy reaches {CONVERGED_FRACTION} x its final value, the mean of the last "
              f"{FINAL_EPOCHS} epochs."]
    return "\n".join(lines) + "\n"


def mean_curves(report: Mapping[str, Any], key: str = "val_accuracy"
                ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per value with a curve: ``(mean, min, max)`` over seeds of the fusion stage's ``key``,
    over the epochs every seed has (NaN where an epoch's value was not finite)."""
    out = {}
    for value in report["values"]:
        curves = [c["convergence"][key] for c in report["cells"]
                  if c["value"] == value and c["convergence"][key]]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        a = np.array([[np.nan if x is None else x for x in c[:n]] for c in curves], float)
        out[value] = (np.nanmean(a, axis=0), np.nanmin(a, axis=0), np.nanmax(a, axis=0))
    return out


def plot_convergence(report: Mapping[str, Any], path: str | Path, dpi: int = 110) -> Path:
    """Validation accuracy and loss of the fusion stage per epoch, one line per value (mean
    over seeds) with a min-max band; writes ``path`` (PNG, matplotlib Agg)."""
    from maivar_tf.plotting import pyplot, save_figure

    fig, axes = pyplot().subplots(1, 2, figsize=(11, 4))
    for ax, key, label in ((axes[0], "val_accuracy", "validation accuracy"),
                           (axes[1], "val_loss", "validation loss")):
        curves = mean_curves(report, key)
        for value, (m, lo, hi) in curves.items():
            epochs = np.arange(1, len(m) + 1)
            (line,) = ax.plot(epochs, m, label=value)
            ax.fill_between(epochs, lo, hi, color=line.get_color(), alpha=0.2)
        if not curves:
            ax.text(0.5, 0.5, "no validation curves", ha="center", va="center",
                    transform=ax.transAxes)
        ax.set_xlabel("fusion-stage epoch")
        ax.set_ylabel(label)
        if curves:
            ax.legend(fontsize="small")
    n = len(report["seeds"])
    fig.suptitle(f"{report['name']}: {report['axis']} ablation, mean over {n} seed"
                 f"{'s' if n > 1 else ''} (band: min-max)")
    return save_figure(fig, path, dpi=dpi)


def write_reports(report: Mapping[str, Any], *out_dirs: str | Path) -> str:
    """Writes ``report.md``, ``report.json`` and ``convergence.png`` into each of ``out_dirs``.

    Returns:
        The Markdown table.
    """
    import shutil

    table = format_ablation_table(report)
    first = None
    for d in map(Path, out_dirs):
        d.mkdir(parents=True, exist_ok=True)
        (d / REPORT_MD).write_text(table)
        write_json_atomic(d / REPORT_JSON, report)
        if first is None:
            first = plot_convergence(report, d / CONVERGENCE_PNG)
        else:
            shutil.copy2(first, d / CONVERGENCE_PNG)
    return table


__all__ = ["AXES", "AXIS_TITLES", "EXTRA_COLUMNS", "CONVERGENCE_PNG", "REPORT_FILES", "REPORT_JSON", "REPORT_MD", "format_ablation_table", "format_difference", "mean_curves",
           "plot_convergence", "write_reports"]
