"""Accuracy against cost of a run with segment selection (``maivar evaluate --selection``).

:func:`evaluate_selection` classifies every test clip from k of its K segments only, chosen by

* ``uniform``: TSN's k evenly spaced segments;
* ``audio_topk``: the run's saliency scorer (``saliency.keras``) on the preview backbone's
  per-segment features of all K segments, its top k (:func:`maivar_tf.selection.topk_indices`);
* ``oracle``: the annotated span's segments (evaluation only: the upper bound of a selector),

and reports the fusion model's (and the VMLP's) accuracy on them, each run as a k-segment copy
(:func:`maivar_tf.selection.model_for_segments`), next to what one video costs
(:func:`selection_costs`):

* MACs per video = k x (visual backbone + the fusion's per-segment audio backbone; a clip-level
  fusion runs its audio backbone once) + K x preview backbone (``audio_topk`` only) + the heads
  (the fusion head on k segments, the saliency scorer on K), each counted with
  :func:`maivar_tf.costs.count_macs` on the run's backbones rebuilt at the sizes in
  ``feature_info.json`` (random weights: MACs and time do not depend on them);
* wall time per video: each of those models run on inputs of those shapes (batch = the
  segments of one video), once to warm up, then ``repeats`` times; the median of each, summed.
  Decoding and audio-image rendering are not timed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from maivar_tf.evaluation import REPORT_JSON, model_inputs, model_outputs, top_k_accuracy
from maivar_tf.selection import (
    SELECTION_MODES,
    load_preview,
    model_for_segments,
    oracle_indices,
    preview_backbone_of,
    preview_rows,
    select_segments,
    topk_indices,
    uniform_indices,
)
from maivar_tf.utils import write_json_atomic

#: Where :func:`evaluate_selection` writes by default: ``run_dir/eval-selection-<mode>-k<k>``.
SELECTION_EVAL_PREFIX = "eval-selection"

def selection_eval_dir(run_dir: str | Path, mode: str, k: int) -> Path:
    """``run_dir/eval-selection-<mode>-k<k>``."""
    return Path(run_dir) / f"{SELECTION_EVAL_PREFIX}-{mode}-k{int(k)}"


def _check_mode(mode: str) -> None:
    if mode not in SELECTION_MODES:
        raise ValueError(f"selection {mode!r}; allowed: {', '.join(SELECTION_MODES)}")


def selection_indices(mode: str, k: int, features: Any, *, scorer: Any = None,
                      preview: Any = None) -> np.ndarray:
    """The selected segments ``[N, k]`` (int64, time order) of every clip of ``features``.

    Args:
        mode: ``uniform``, ``audio_topk`` or ``oracle``.
        k: the budget.
        features: the FeatureSet (``video [N, K, Dv]``; ``segment_labels`` for oracle).
        scorer: ``audio_topk``: the saliency scorer.
        preview: ``audio_topk``: preview features ``[N, K, Dp]`` aligned with ``features``.
    """
    from maivar_tf.models.saliency import saliency_scores

    _check_mode(mode)
    n, num_segments = np.asarray(features.video).shape[:2]
    if mode == "uniform":
        return np.tile(uniform_indices(num_segments, k), (n, 1))
    if mode == "oracle":
        return oracle_indices(getattr(features, "segment_labels", None), k)
    if scorer is None or preview is None:
        raise ValueError("selection 'audio_topk' needs the run's saliency scorer "
                         "(saliency.keras: train with --set model.selection=audio_topk) and "
                         "the preview features")
    return topk_indices(saliency_scores(scorer, preview), k)


def selected_logits(model: Any, features: Any, indices: Any) -> np.ndarray:
    """``model``'s logits on the selected segments only (its k-segment copy)."""
    k = int(np.asarray(indices).shape[-1])
    chosen = select_segments(features, indices)
    head = model_for_segments(model, k)
    return model_outputs(head, model_inputs(head, chosen))


# ----------------------------------------------------------------------------- costs


def _macs(kind: str, architecture: str, size: int) -> int:
    from maivar_tf.costs import backbone_macs

    return int(backbone_macs(kind, int(size), None if kind == "video" else architecture))


def _backbone(kind: str, architecture: str, size: int) -> Any:
    from maivar_tf.models.backbones import build_backbone

    arch = None if kind == "video" else architecture
    return build_backbone(kind, "none", int(size), architecture=arch)


def _is_model(spec: Any) -> bool:
    return not isinstance(spec, tuple)


def _name(spec: Any) -> str:
    return spec.name if _is_model(spec) else spec[1]


def _side(spec: Any) -> int:
    return int(spec.input_shape[1]) if _is_model(spec) else int(spec[2])


def _median_ms(model: Any, shape: tuple[int, ...], repeats: int) -> float:
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32))
    fn = tf.function(lambda t: model(t, training=False))
    fn(x)  # trace and warm up
    times = []
    for _ in range(max(1, int(repeats))):
        t0 = time.perf_counter()
        out = fn(x)
        np.asarray(out)
        times.append(1000 * (time.perf_counter() - t0))
    return float(np.median(times))


def run_backbones(features_dir: str | Path, audio_backbone: str | None,
                  preview_backbone: str | None) -> dict[str, tuple[str, str, int]]:
    """``{"video" | "audio" | "preview": (kind, architecture, image size)}`` from
    ``feature_info.json`` (``preview`` only when given)."""
    from maivar_tf.artifacts import FeatureInfo

    info = FeatureInfo.read(features_dir)
    out = {}
    for name, kind, which in (("video", "video", None), ("audio", "audio", audio_backbone),
                              ("preview", "audio", preview_backbone)):
        if name == "preview" and which is None:
            continue
        spec = info.backbone(kind, which)
        out[name] = (kind, str(spec.architecture), int(spec.image_size))
    return out


def selection_costs(fusion: Any, backbones: dict[str, tuple[str, str, int]], k: int,
                    num_segments: int, *, scorer: Any = None, repeats: int = 5,
                    timing: bool = True) -> dict[str, Any]:
    """MACs and wall time per video of classifying from k of K segments (see the module doc).

    Args:
        fusion: the run's fusion head (K segments).
        backbones: :func:`run_backbones` (``preview`` present: the audio_topk preview runs);
            a value may also be a built backbone (counted and timed as it is).
        k: segments the visual backbone runs on.
        num_segments: K (the preview runs on all of them).
        scorer: the saliency scorer (audio_topk).
        repeats: timed calls per model (after one warm-up).
        timing: also measure wall time.

    Returns:
        ``{"macs": {part: int, "total"}, "wall_ms": {part: float, "total"} (when timed),
        "timed": what was run, with shapes}``.
    """
    from maivar_tf.costs import count_macs
    from maivar_tf.models.heads import AUDIO_SEGMENTS_INPUT

    head = model_for_segments(fusion, k)
    per_segment = any(t.name.split(":")[0] == AUDIO_SEGMENTS_INPUT for t in fusion.inputs)
    parts = {"visual": (backbones["video"], int(k)),
             "audio": (backbones["audio"], int(k) if per_segment else 1)}
    if "preview" in backbones:
        parts["preview"] = (backbones["preview"], int(num_segments))
    macs = {name: n * (int(count_macs(spec)) if _is_model(spec) else _macs(*spec))
            for name, (spec, n) in parts.items()}
    macs["heads"] = int(count_macs(head)) + (int(count_macs(scorer)) if scorer is not None
                                              and "preview" in backbones else 0)
    macs["total"] = int(sum(macs.values()))
    timed = {name: f"{_name(spec)} on [{n}, {_side(spec)}, {_side(spec)}, 3]"
             for name, (spec, n) in parts.items()}
    out: dict[str, Any] = {"macs": macs, "timed": timed}
    if timing:
        wall = {name: _median_ms(spec if _is_model(spec) else _backbone(*spec),
                                 (n, _side(spec), _side(spec), 3), repeats)
                for name, (spec, n) in parts.items()}
        heads = [head] + ([scorer] if scorer is not None and "preview" in backbones else [])
        wall["heads"] = float(sum(_head_ms(m, repeats) for m in heads))
        wall["total"] = float(sum(wall.values()))
        out["wall_ms"] = wall
        out["timed"]["heads"] = ", ".join(f"{m.name} on one video" for m in heads)
        out["repeats"] = int(repeats)
    return out


def _head_ms(model: Any, repeats: int) -> float:
    import tensorflow as tf

    inputs = {t.name.split(":")[0]: tf.zeros((1, *t.shape[1:])) for t in model.inputs}
    fn = tf.function(lambda x: model(x, training=False))
    arg = inputs if len(inputs) > 1 else next(iter(inputs.values()))
    fn(arg)
    times = []
    for _ in range(max(1, int(repeats))):
        t0 = time.perf_counter()
        np.asarray(fn(arg))
        times.append(1000 * (time.perf_counter() - t0))
    return float(np.median(times))


# ----------------------------------------------------------------------------- evaluation


def evaluate_selection(run_dir: str | Path, features_dir: str | Path, selection: str,
                       budget: int, *, split: str = "test", out_dir: str | Path | None = None,
                       timing: bool = True, repeats: int = 5,
                       costs: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run's accuracy from ``budget`` selected segments per clip, with the cost per video.

    Args:
        run_dir: the trained run (``saliency.keras`` for ``audio_topk``).
        features_dir: its features folder (with the preview backbone's per-segment features
            for ``audio_topk``).
        selection: ``uniform``, ``audio_topk`` or ``oracle``.
        budget: k (0: all K).
        split: the split to evaluate.
        out_dir: where ``report.json`` goes (default ``run_dir/eval-selection-<mode>-k<k>``).
        timing: measure wall time per video.
        repeats: timed calls per model.
        costs: a :func:`selection_costs` result to reuse (the curve over seeds shares one).

    Returns:
        ``{"selection", "k", "num_segments", "accuracy": {"fusion", "video"}, "num_examples",
        "costs", "selected_segments" (the first clips'), ...}`` (also written as report.json).
    """
    from maivar_tf.localisation import load_split, needs_segments
    from maivar_tf.runs import load_run

    _check_mode(selection)
    run = load_run(run_dir)
    features = load_split(features_dir, split, str(run.info.representation),
                          run.info.audio_backbone, segments=needs_segments(run.info.config))
    num_segments = int(np.asarray(features.video).shape[1])
    k = int(budget) or num_segments
    preview_name = preview = None
    if selection == "audio_topk":
        if run.saliency is None:
            raise FileNotFoundError(f"{Path(run_dir) / 'saliency.keras'} is missing: "
                                    "--selection audio_topk needs the run's saliency scorer "
                                    "(`maivar train --set model.selection=audio_topk`)")
        preview_name = preview_backbone_of(run.info.config)
        preview_set = load_preview(features_dir, split, str(run.info.representation),
                                   preview_name)
        preview = preview_rows(preview_set, features.ids)
    indices = selection_indices(selection, k, features, scorer=run.saliency, preview=preview)
    labels = np.asarray(features.labels, np.int64)
    accuracy = {name: top_k_accuracy(labels, selected_logits(model, features, indices), 1)
                for name, model in (("fusion", run.fusion), ("video", run.vmlp))}
    if costs is None:
        costs = selection_costs(run.fusion,
                                run_backbones(features_dir, run.info.audio_backbone,
                                              preview_name),
                                k, num_segments, scorer=run.saliency, repeats=repeats,
                                timing=timing)
    report = {"run_dir": str(run_dir), "split": split, "selection": selection, "k": k,
              "num_segments": num_segments, "num_examples": int(len(labels)),
              "accuracy": accuracy, "costs": costs, "preview_backbone": preview_name,
              "selected_segments": indices[:8].tolist()}
    if selection == "audio_topk":
        report["saliency_supervision"] = run.info.stages.get("saliency", {}).get(
            "supervision")
    if getattr(features, "segment_labels", None) is not None:
        hit = np.take_along_axis(np.asarray(features.segment_labels) >= 0, indices, axis=1)
        report["event_fraction"] = float(hit.mean())
    out = Path(out_dir) if out_dir else selection_eval_dir(run_dir, selection, k)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / REPORT_JSON, report)
    return report


def format_selection(report: dict[str, Any]) -> str:
    """A few lines for ``maivar evaluate --selection``."""
    c = report["costs"]
    lines = [f"selection {report['selection']}, k={report['k']} of K={report['num_segments']}"
             f" ({report['num_examples']} clips)",
             f"  fusion {100 * report['accuracy']['fusion']:6.2f}%   video-only "
             f"{100 * report['accuracy']['video']:6.2f}%",
             f"  MACs per video {c['macs']['total'] / 1e9:.3f} G ("
             + ", ".join(f"{p} {v / 1e9:.3f} G" for p, v in c["macs"].items() if p != "total")
             + ")"]
    if "wall_ms" in c:
        lines.append(f"  wall time per video {c['wall_ms']['total']:.1f} ms (median of "
                     f"{c.get('repeats')}; " + ", ".join(
                         f"{p} {v:.1f}" for p, v in c["wall_ms"].items() if p != "total") + ")")
    if "event_fraction" in report:
        lines.append(f"  selected segments inside the span: {100 * report['event_fraction']:.1f}%")
    return "\n".join(lines)


def full_cost(run_dir: str | Path, report_path: str | Path, *, repeats: int = 3) -> str:
    """What classifying one video from all K segments costs, for ``maivar evaluate``.

    :func:`selection_costs` with k = K for the run's fusion head and backbones (from the
    features folder the run recorded), added to the report at ``report_path`` as ``costs``.

    Returns:
        One line (``cost per video: ...``), or why it cannot be counted (backbones handed in by
        code, or a folder without ``feature_info.json``).
    """
    import json

    from maivar_tf.runs import load_run

    run = load_run(run_dir)
    try:
        costs = selection_costs(run.fusion, run_backbones(run.info.features_dir,
                                                          run.info.audio_backbone, None),
                                int(run.info.num_segments), int(run.info.num_segments),
                                repeats=repeats)
    except (OSError, ValueError, KeyError) as e:
        return f"cost per video: n/a ({type(e).__name__}: {e})"
    path = Path(report_path)
    report = json.loads(path.read_text())
    report["costs"] = costs
    write_json_atomic(path, report)
    return (f"cost per video (all {run.info.num_segments} segments): "
            f"{costs['macs']['total'] / 1e9:.3f} GMACs, {costs['wall_ms']['total']:.1f} ms on "
            "this machine (backbones + heads; decoding not timed)")


__all__ = ["SELECTION_EVAL_PREFIX", "evaluate_selection", "format_selection", "full_cost",
           "run_backbones",
           "selected_logits", "selection_costs", "selection_eval_dir", "selection_indices"]
