"""Experiments that train and evaluate: the paper's audio-image representation sweep (Table 3).

:func:`representation_sweep` trains Algorithm 1 (Shaikh et al. 2024) once per audio-image
representation and evaluates every run on the test split with
:func:`maivar_tf.evaluation.evaluate_models`; :func:`format_representation_table` prints the
results as the paper's Table 3 (representation | audio-only top-1 | fusion top-1).

Contracts: the VMLP never sees audio, so it is trained once (with the first representation)
and reused by every other run (:func:`train_representation` copies its ``vmlp.keras``, which
:func:`~maivar_tf.training.run_algorithm1` then loads instead of training). Each
representation's run lives in ``out_dir/<rep>/`` (resumable like any run) with its evaluation
in ``eval/``; the table goes to ``representation_sweep.md`` and the figures to
``representation_sweep.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from maivar_tf.artifacts import FeatureInfo
from maivar_tf.config import REPRESENTATIONS, ExperimentConfig
from maivar_tf.evaluation import EVAL_SUBDIR, evaluate_models, run_heads
from maivar_tf.utils import write_json_atomic

logger = logging.getLogger(__name__)

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


def _check_representations(reps: Sequence[str]) -> None:
    if not reps:
        raise ValueError("no representations to sweep; allowed: " + ", ".join(REPRESENTATIONS))
    for r in reps:
        if r not in REPRESENTATIONS:
            raise ValueError(f"unknown representation {r!r}; allowed: {', '.join(REPRESENTATIONS)}")


def _extract_missing(cfg: ExperimentConfig, features_dir: Path, reps: Sequence[str]) -> None:
    """Extracts the audio features of ``reps`` that ``features_dir`` lacks for train or test."""
    from maivar_tf.features import extract_features

    splits = FeatureInfo.read(features_dir).splits if FeatureInfo.exists(features_dir) else {}
    done = {s: splits[s].representations if s in splits else () for s in ("train", "test")}
    if any(r not in done[s] for s in done for r in reps):
        logger.info("extracting the missing audio features of %s", ", ".join(reps))
        extract_features(cfg, splits=("train", "test"), representations=list(reps),
                         features_dir=features_dir)


def _sweep_row(report: Mapping[str, Any]) -> dict[str, float]:
    audio, fusion = report["models"]["audio"], report["models"]["fusion"]
    return {"audio_top1": audio["top1"], "fusion_top1": fusion["top1"],
            "audio_mean_class_accuracy": audio["mean_class_accuracy"],
            "fusion_mean_class_accuracy": fusion["mean_class_accuracy"]}


def representation_sweep(cfg: ExperimentConfig, representations: Sequence[str] | None = None, *,
                         features_dir: str | Path | None = None,
                         out_dir: str | Path | None = None,
                         train_fn: TrainFn | None = None, extract_missing: bool = True) -> str:
    """Trains and evaluates every audio-image representation; writes the paper's Table 3.

    For each representation an audio MLP and a fusion MLP (initialised from the shared VMLP,
    Algorithm 1) are trained on the train split and evaluated on the test split.

    Args:
        cfg: the experiment (features from ``cfg.data.features_dir``).
        representations: which to sweep (default: ``cfg.data.representations``).
        features_dir: overrides ``cfg.data.features_dir``.
        out_dir: where the runs, :data:`SWEEP_TABLE` and :data:`SWEEP_RESULTS` go (default:
            ``<cfg.train.output_dir>/sweep``).
        train_fn: ``train_fn(cfg, train_set, run_dir, vmlp_from) -> run`` with attributes
            ``audio_mlp``, ``vmlp``, ``fusion`` and ``run_dir``; ``vmlp_from`` is the first
            representation's run folder (None for the first). Default:
            :func:`train_representation`.
        extract_missing: first extract the audio features of representations that
            ``features_dir`` lacks (extraction is resumable, so only the missing audio-images
            go through the backbone).

    Returns:
        The Markdown table (also written to ``out_dir/representation_sweep.md``).

    Raises:
        ValueError: no or unknown representations.
    """
    from maivar_tf.features import load_features

    reps = list(representations if representations is not None else cfg.data.representations)
    _check_representations(reps)
    features_dir = Path(features_dir or cfg.data.features_dir)
    # the runs record (and serve with the backbones of) the features they were trained on
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data,
                                                            features_dir=str(features_dir)))
    out_dir = Path(out_dir or Path(cfg.train.output_dir) / "sweep")
    out_dir.mkdir(parents=True, exist_ok=True)
    if extract_missing:
        _extract_missing(cfg, features_dir, reps)
    train_fn = train_fn or train_representation
    results: dict[str, dict[str, float]] = {}
    first_run: Path | None = None
    video_top1 = None
    for rep in reps:
        train = load_features(features_dir, "train", rep)
        test = load_features(features_dir, "test", rep)
        run = train_fn(cfg, train, out_dir / rep, first_run)
        report = evaluate_models(run_heads(run), test, out_dir / rep / EVAL_SUBDIR, tsne=False)
        if video_top1 is None:
            video_top1 = report["models"]["video"]["top1"]
            first_run = Path(run.run_dir)
        results[rep] = _sweep_row(report)
        logger.info("%s: audio-only %.2f%%, fusion %.2f%%", rep,
                    100 * results[rep]["audio_top1"], 100 * results[rep]["fusion_top1"])
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
