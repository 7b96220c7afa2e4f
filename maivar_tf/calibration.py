"""Confidence that means something: temperature scaling of the fusion logits, ECE, diagrams.

Guo, Pleiss, Sun and Weinberger, *On Calibration of Modern Neural Networks* (ICML 2017): a
trained network's softmax confidence is often far above its accuracy. Temperature scaling
divides the logits by one scalar ``T > 0`` fitted on held-out data by minimising the negative
log-likelihood; no prediction changes (the argmax of ``z / T`` is the argmax of ``z``), only
how sure the probabilities are. MAiVAR's fusion MLP (Shaikh et al. 2024) is calibrated so:

* after Algorithm 1's fusion stage, :func:`calibration_record` fits ``T`` on the validation
  split (:func:`holdout_validation` holds one out of the training features when the data has
  none and ``train.val_fraction > 0``) and the record goes into ``run_info.json``
  (:attr:`maivar_tf.artifacts.RunInfo.calibration`; a run without validation data gets
  ``T = 1`` and says so; older runs read as ``T = 1``);
* :func:`scaled_softmax` is the one softmax of served probabilities: the serving signatures
  (hence ``maivar predict`` and the export) and ``maivar evaluate`` call it;
* :func:`expected_calibration_error` (Guo et al.'s ECE: equal-width bins of the top-1
  confidence, ``sum_b |acc_b - conf_b| * n_b / N``) and :func:`reliability_diagram` measure
  it; :func:`calibration_report` is the ``calibration`` section of ``maivar evaluate``'s report.

Example:
    >>> t = fit_temperature(val_logits, val_labels)                 # doctest: +SKIP
    >>> expected_calibration_error(scaled_softmax(test_logits, t).numpy(), test_labels)
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: Equal-width confidence bins of the ECE and the reliability diagrams (Guo et al. use 15).
ECE_BINS = 15
#: The temperatures :func:`fit_temperature` searches (a 1-D search over ``log T``).
TEMPERATURE_BOUNDS = (0.01, 100.0)
#: UCF101-style file names (``v_<Class>_g08_c01.avi``): clips of one group come from one long
#: video, so a held-out split keeps each group on one side.
_UCF_GROUP = re.compile(r"^(?P<group>.*_g\d+)_c\d+(\.[A-Za-z0-9]+)?$")


def _check(scores: np.ndarray, labels: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if scores.ndim != 2 or scores.shape[0] != labels.shape[0] or scores.shape[0] == 0:
        raise ValueError(f"{what} must be [N, C] with N = len(labels) = {labels.shape[0]} > 0; "
                         f"got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError(f"{what} hold non-finite values (NaN or Inf)")
    if labels.min() < 0 or labels.max() >= scores.shape[1]:
        raise ValueError(f"labels must lie in [0, {scores.shape[1]}); got "
                         f"[{labels.min()}, {labels.max()}]")
    return scores, labels


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray,
                            temperature: float = 1.0) -> float:
    """Mean cross-entropy of ``softmax(logits / temperature)`` (float64)."""
    z, labels = _check(logits, labels, "logits")
    z = z / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z[np.arange(len(labels)), labels] - np.log(np.exp(z).sum(axis=1))
    return float(-log_p.mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the NLL of ``softmax(logits / T)`` (Guo et al. 2017).

    The NLL is convex in ``1 / T``, hence unimodal in ``log T``: a bounded Brent search over
    ``log T`` in :data:`TEMPERATURE_BOUNDS` finds it, deterministically.

    Args:
        logits: float ``[N, C]`` held-out logits (not probabilities).
        labels: int ``[N]`` their true classes.

    Returns:
        ``T > 1`` for an over-confident model, ``T < 1`` for an under-confident one.
    """
    from scipy.optimize import minimize_scalar

    z, labels = _check(logits, labels, "logits")
    lo, hi = (math.log(b) for b in TEMPERATURE_BOUNDS)
    res = minimize_scalar(lambda u: negative_log_likelihood(z, labels, math.exp(u)),
                          bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    t = float(math.exp(res.x))
    if min(abs(res.x - lo), abs(res.x - hi)) < 1e-3:
        logger.warning("fitted temperature %.4g is at the bound of %s (the held-out set may be "
                       "perfectly separated or tiny)", t, TEMPERATURE_BOUNDS)
    return t


def scaled_softmax(logits: Any, temperature: float = 1.0) -> Any:
    """``softmax(logits / temperature)`` in float32 TensorFlow: the served probabilities.

    The serving graph (:meth:`maivar_tf.serving.module.ServingModule.outputs`) and ``maivar
    evaluate`` both call this, so the probabilities a client gets are the ones evaluated.
    """
    import tensorflow as tf

    logits = tf.cast(logits, tf.float32)
    return tf.nn.softmax(logits / tf.constant(float(temperature), tf.float32), axis=-1)


def check_temperature(temperature: Any) -> float:
    """``temperature`` as a float; raises ValueError unless it is finite and > 0."""
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature {temperature!r}: allowed: a finite number > 0")
    return t


# ----------------------------------------------------------------------------- measuring


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
                     ) -> dict[str, np.ndarray]:
    """Per equal-width bin ``(b/M, (b+1)/M]`` of the top-1 confidence: count, accuracy, mean
    confidence (NaN for empty bins)."""
    probs, labels = _check(probs, labels, "probabilities")
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(index, weights=correct, minlength=bins) / count
        confidence = np.bincount(index, weights=conf, minlength=bins) / count
    return {"edges": edges, "count": count, "accuracy": accuracy, "confidence": confidence}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray,
                               bins: int = ECE_BINS) -> float:
    """Guo et al.'s ECE: ``sum_b |accuracy_b - confidence_b| * n_b / N`` over ``bins``
    equal-width bins of the top-1 confidence (0 is perfectly calibrated, 1 the worst)."""
    b = reliability_bins(probs, labels, bins)
    full = b["count"] > 0
    gap = np.abs(b["accuracy"][full] - b["confidence"][full])
    return float((gap * b["count"][full]).sum() / b["count"].sum())


def reliability_diagram(panels: Mapping[str, np.ndarray], labels: np.ndarray,
                        path: str | Path, bins: int = ECE_BINS) -> Path:
    """One PNG with a reliability diagram per ``{title: probabilities [N, C]}``.

    Each panel draws the accuracy of every confidence bin against the diagonal of perfect
    calibration, the gap to the bin's mean confidence, and the ECE in its title.
    """
    from maivar_tf.plotting import pyplot, save_figure

    fig, axes = pyplot().subplots(1, len(panels), figsize=(4.5 * len(panels), 4.5), squeeze=False)
    for ax, (title, probs) in zip(axes[0], panels.items(), strict=True):
        b = reliability_bins(probs, labels, bins)
        centres, width = (b["edges"][:-1] + b["edges"][1:]) / 2, 1.0 / bins
        acc, conf = np.nan_to_num(b["accuracy"]), np.nan_to_num(b["confidence"])
        ax.bar(centres, acc, width, edgecolor="black", color="tab:blue", label="accuracy")
        ax.bar(centres, conf - acc, width, bottom=acc, edgecolor="tab:red", color="none",
               hatch="//", label="gap to confidence")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        ece = expected_calibration_error(probs, labels, bins)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top-1 probability)",
               ylabel="accuracy", title=f"{title}: ECE {100 * ece:.2f}%")
        ax.legend(loc="upper left", fontsize=8)
    return save_figure(fig, path, dpi=110)


# ----------------------------------------------------------------------------- runs and reports


def holdout_validation(features: Any, fraction: float) -> tuple[Any, Any]:
    """Splits a FeatureSet into ``(train, val)``: the last ``fraction`` of each class held out.

    UCF101-style ids (``..._g08_c01.avi``) are held out by whole group, so clips of one long
    video stay on one side; other ids one by one. Each class gives its last groups (ids in
    sorted order), at least one and never all, so the split depends on the data alone: every
    worker, every resumed run and every seed holds out the same rows, and a dataset grown by
    new groups keeps its earlier training rows. ``val`` is None when nothing could be held out.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction {fraction!r}: allowed: a number in (0, 1)")
    ids = [i.decode() if isinstance(i, bytes) else str(i) for i in np.asarray(features.ids)]
    groups = np.array([m.group("group") if (m := _UCF_GROUP.match(i)) else i for i in ids])
    labels = np.asarray(features.labels)
    held = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        names = np.unique(groups[labels == c])  # sorted
        take = min(int(math.floor(fraction * len(names) + 0.5)) or 1, len(names) - 1)
        if take > 0:
            held |= (labels == c) & np.isin(groups, names[len(names) - take:])
    if not held.any():
        return features, None
    return features.subset(np.flatnonzero(~held)), features.subset(np.flatnonzero(held))


def calibration_record(logits: np.ndarray | None, labels: np.ndarray | None,
                       bins: int = ECE_BINS) -> dict[str, Any]:
    """What ``run_info.json`` records of the fusion head's calibration.

    Args:
        logits: the fusion logits of the validation split, or None when there is none.
        labels: its labels.
        bins: ECE bins.

    Returns:
        ``{"temperature", "fitted", "method", ...}``: with validation data also
        ``num_examples``, ``nll_before``/``nll_after`` and ``ece_before``/``ece_after`` on it;
        without, ``T = 1`` and a ``note`` saying why.
    """
    method = "temperature scaling (Guo et al. 2017) of the fusion logits"
    if logits is None or labels is None or len(labels) == 0:
        note = ("no validation split: temperature 1.0 (uncalibrated); hold one out with "
                "train.val_fraction")
        logger.info("fusion calibration: %s", note)
        return {"temperature": 1.0, "fitted": False, "method": method, "note": note}
    t = fit_temperature(logits, labels)
    before = np.asarray(scaled_softmax(logits, 1.0))
    after = np.asarray(scaled_softmax(logits, t))
    record = {"temperature": t, "fitted": True, "method": method, "split": "val",
              "num_examples": int(len(labels)), "bins": int(bins),
              "nll_before": negative_log_likelihood(logits, labels),
              "nll_after": negative_log_likelihood(logits, labels, t),
              "ece_before": expected_calibration_error(before, labels, bins),
              "ece_after": expected_calibration_error(after, labels, bins)}
    logger.info("fusion calibration: temperature %.4f on %d validation examples, ECE %.4f -> "
                "%.4f", t, len(labels), record["ece_before"], record["ece_after"])
    return record


def calibration_report(logits: np.ndarray, labels: np.ndarray, record: Mapping[str, Any],
                       png: str | Path, bins: int = ECE_BINS) -> dict[str, Any]:
    """ECE and NLL before and after ``record``'s temperature on an evaluated split, and the
    reliability diagram (before | after) written to ``png``."""
    t = check_temperature(record.get("temperature", 1.0))
    before = np.asarray(scaled_softmax(logits, 1.0))
    after = np.asarray(scaled_softmax(logits, t))
    reliability_diagram({"softmax(logits)": before, f"softmax(logits / {t:.3g})": after},
                        labels, png, bins)
    return {"temperature": t, "fitted": bool(record.get("fitted", False)),
            "fitted_on": int(record.get("num_examples", 0)), "bins": int(bins),
            "ece_before": expected_calibration_error(before, labels, bins),
            "ece_after": expected_calibration_error(after, labels, bins),
            "nll_before": negative_log_likelihood(logits, labels),
            "nll_after": negative_log_likelihood(logits, labels, t),
            "reliability_png": Path(png).name}


def format_calibration(report: Mapping[str, Any]) -> str:
    """The lines ``maivar evaluate`` prints for a report's ``calibration`` section."""
    lines = []
    for name, c in report.get("calibration", {}).items():
        how = (f"fitted on {c['fitted_on']} validation examples" if c["fitted"]
               else "not fitted: the run had no validation split")
        lines.append(f"\nCalibration of the {name} head (ECE, {c['bins']} bins):\n"
                     f"  before {100 * c['ece_before']:6.2f}%   after {100 * c['ece_after']:6.2f}%"
                     f"   (temperature {c['temperature']:.3f}, {how})")
    return "".join(lines)


__all__ = [
    "ECE_BINS", "TEMPERATURE_BOUNDS", "calibration_record", "calibration_report",
    "check_temperature", "expected_calibration_error", "fit_temperature", "format_calibration",
    "holdout_validation", "negative_log_likelihood", "reliability_bins", "reliability_diagram",
    "scaled_softmax",
]
