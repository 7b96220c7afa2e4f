"""Experiments that train and evaluate: the paper's audio-image representation sweep (Table 3).

:func:`representation_sweep` trains Algorithm 1 (Shaikh et al. 2024) once per audio-image
representation and evaluates every run on the test split; it is the one-seed case of
``maivar ablate --over representation`` (:func:`maivar_tf.ablation.run_ablation`, which
``maivar sweep`` now runs with ``--seeds``). :func:`format_representation_table` prints the
results as the paper's Table 3 (representation | audio-only top-1 | fusion top-1).

Contracts: the VMLP never sees audio, so it is trained once (with the first representation)
and reused by every other run (the ablation copies its ``vmlp.keras``, which
:func:`~maivar_tf.training.run_algorithm1` then loads instead of training). Each
representation's run lives in ``out_dir/representation/<rep>/seed-<train.seed>/`` (resumable
like any run; a finished one is skipped) with its evaluation in ``eval/``; the table goes to
``representation_sweep.md`` and the figures to ``representation_sweep.json``, beside the
ablation's ``report.md``, ``report.json`` and ``convergence.png``.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from maivar_tf.config import REPRESENTATIONS, ExperimentConfig
from maivar_tf.utils import write_json_atomic

#: Written into the sweep's output folder.
SWEEP_TABLE = "representation_sweep.md"
SWEEP_RESULTS = "representation_sweep.json"

#: ``train_fn(cfg, train_set, run_dir, vmlp_from) -> run`` with ``audio_mlp``, ``vmlp``,
#: ``fusion`` and ``run_dir`` (see :func:`train_representation`).
TrainFn = Callable[[ExperimentConfig, Any, Path, "Path | None"], Any]


def format_representation_table(results: Mapping[str, Mapping[str, float]],
                                video_top1: float | None = None, title: str = "") -> str:
    """The paper's Table 3 as Markdown: representation | audio-only top-1 | fusion top-1.

    Args:
        results: representation -> ``{"audio_top1": float, "fusion_top1": float}`` in [0, 1],
            listed in the paper's order (others after them).
        video_top1: the shared VMLP's top-1, noted under the table when given.
        title: an optional heading line.

    Returns:
        Markdown; the best fusion accuracy (every tie) is bold.

    Raises:
        ValueError: no results.
    """
    if not results:
        raise ValueError("no representation results to tabulate")
    order = [r for r in REPRESENTATIONS if r in results] + \
        [r for r in results if r not in REPRESENTATIONS]
    best = max(round(100 * results[r]["fusion_top1"], 2) for r in order)
    lines = []
    if title:
        lines += [f"### {title}", ""]
    lines += ["| Representation | Audio-only top-1 (%) | Fusion top-1 (%) |",
              "|---|---:|---:|"]
    for r in order:
        a = f"{100 * results[r]['audio_top1']:.2f}"
        f = f"{100 * results[r]['fusion_top1']:.2f}"
        if round(100 * results[r]["fusion_top1"], 2) == best:
            f = f"**{f}**"
        lines.append(f"| {r} | {a} | {f} |")
    if video_top1 is not None:
        lines += ["", f"Video-only (VMLP, shared by every row) top-1: {100 * video_top1:.2f}%"]
    return "\n".join(lines) + "\n"


def _sweep_row(cell: Mapping[str, Any]) -> dict[str, float]:
    audio, fusion = cell["test"]["audio"], cell["test"]["fusion"]
    return {"audio_top1": audio["top1"], "fusion_top1": fusion["top1"],
            "audio_mean_class_accuracy": audio["mean_class_accuracy"],
            "fusion_mean_class_accuracy": fusion["mean_class_accuracy"]}


def representation_sweep(cfg: ExperimentConfig, representations: Sequence[str] | None = None, *,
                         features_dir: str | Path | None = None,
                         out_dir: str | Path | None = None,
                         train_fn: TrainFn | None = None, extract_missing: bool = True) -> str:
    """Trains and evaluates every audio-image representation once; writes the paper's Table 3.

    The one-seed case of ``maivar ablate --over representation``
    (:func:`maivar_tf.ablation.run_ablation` with ``train.seed`` only): for each representation
    an audio MLP and a fusion MLP (initialised from the shared VMLP, Algorithm 1) are trained on
    the train split and evaluated on the test split.

    Args:
        cfg: the experiment (features from ``cfg.data.features_dir``).
        representations: which to sweep (default: ``cfg.data.representations``).
        features_dir: overrides ``cfg.data.features_dir``.
        out_dir: where the runs (``representation/<rep>/seed-<seed>/``), :data:`SWEEP_TABLE`,
            :data:`SWEEP_RESULTS` and the ablation reports go (default:
            ``<cfg.train.output_dir>/sweep``).
        train_fn: ``train_fn(cfg, train_set, run_dir, vmlp_from) -> run`` with attributes
            ``audio_mlp``, ``vmlp``, ``fusion`` and ``run_dir``; ``vmlp_from`` is the first
            representation's run folder (None for the first), whose VMLP has been copied into
            ``run_dir`` when it was finished. Default: :func:`train_representation`.
        extract_missing: first extract the audio features of representations that
            ``features_dir`` lacks (extraction is resumable, so only the missing audio-images
            go through the backbone).

    Returns:
        The Markdown table (also written to ``out_dir/representation_sweep.md``).

    Raises:
        ValueError: no or unknown representations.
    """
    from maivar_tf.ablation import run_ablation

    reps = list(representations if representations is not None else cfg.data.representations)
    if not reps:
        raise ValueError("no representations to sweep; allowed: " + ", ".join(REPRESENTATIONS))
    out_dir = Path(out_dir or Path(cfg.train.output_dir) / "sweep")
    report = run_ablation(cfg, "representation", reps, 1, features_dir=features_dir,
                          out_dir=out_dir, train_fn=train_fn or train_representation,
                          extract=extract_missing)
    cells = {c["value"]: c for c in report["cells"]}
    results = {rep: _sweep_row(cells[rep]) for rep in reps}
    video_top1 = cells[reps[0]]["test"]["video"]["top1"]
    table = format_representation_table(
        results, video_top1=video_top1,
        title=f"{cfg.name}: audio-image representations (test top-1)")
    (out_dir / SWEEP_TABLE).write_text(table)
    write_json_atomic(out_dir / SWEEP_RESULTS,
                      {"results": results, "video_top1": video_top1, "representations": reps})
    return table


def train_representation(cfg: ExperimentConfig, train: Any, run_dir: str | Path,
                         vmlp_from: str | Path | None = None):
    """Algorithm 1 for one representation, reusing the VMLP of ``vmlp_from`` when given.

    Args:
        cfg: the experiment; ``model.representation`` is set to ``train.representation``.
        train: the representation's training :class:`~maivar_tf.features.FeatureSet`.
        run_dir: this representation's run folder.
        vmlp_from: a finished run folder whose ``vmlp.keras`` to reuse (None: train one).

    Returns:
        The :class:`~maivar_tf.runs.TrainedRun`.

    Raises:
        FileNotFoundError: ``vmlp_from`` holds no ``vmlp.keras``.
    """
    from maivar_tf.training import run_algorithm1

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if vmlp_from is not None and Path(vmlp_from) != run_dir:
        source = Path(vmlp_from) / "vmlp.keras"
        if not source.exists():
            raise FileNotFoundError(f"{source}: no trained VMLP to reuse")
        if not (run_dir / "vmlp.keras").exists():
            shutil.copy2(source, run_dir / "vmlp.keras")
    rep_cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, representation=train.representation))
    return run_algorithm1(rep_cfg, train, val=None, run_dir=run_dir)


__all__ = ["SWEEP_RESULTS", "SWEEP_TABLE", "TrainFn", "format_representation_table",
           "representation_sweep", "train_representation"]
