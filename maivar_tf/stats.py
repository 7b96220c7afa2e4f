"""Statistics of repeated runs: mean ± sample std over seeds, paired differences, convergence.

MAiVAR (Shaikh et al. 2024) reports single runs whose differences (86.21 vs 86.26 in Table 3)
are smaller than the spread between seeds; :mod:`maivar_tf.ablation` trains every cell with
several seeds and summarises them here. Everything is plain Python on floats, so it can be
checked against hand-computed values.

Definitions:

* **mean** and **sample standard deviation** (``ddof=1``, the unbiased variance's root) over
  the seeds; the std of a single value is undefined (None).
* **paired difference** of a method against the baseline over the seeds they share: the
  per-seed differences ``d_i = method_i - baseline_i`` (same seed, hence the same
  initialisation streams of the shared stages and the same data split), their mean ``d̄`` and
  the 95% confidence interval ``d̄ ± t_{0.975, n-1} · s_d / √n`` (Student's t with ``n - 1``
  degrees of freedom, ``s_d`` the sample std of the ``d_i``). With ``n = 1`` the interval is
  undefined (None).
* **convergence**: the *final* validation accuracy of a curve is the mean of its last
  :data:`FINAL_EPOCHS` (3) epochs (all epochs when there are fewer), which damps the epoch to
  epoch noise of small validation splits; the *epochs to 95%* is the 1-based number of the
  first epoch whose validation accuracy reaches ``0.95 ×`` that final value. The maximum of
  the last epochs is at least their mean, so every non-empty curve reaches it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

#: How many last epochs the final validation accuracy averages.
FINAL_EPOCHS = 3
#: The fraction of the final validation accuracy that "converged" means.
CONVERGED_FRACTION = 0.95


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean. Raises ValueError for no values."""
    if not values:
        raise ValueError("mean of no values")
    return math.fsum(values) / len(values)


def sample_std(values: Sequence[float]) -> float | None:
    """The sample standard deviation (``ddof=1``); None for fewer than two values."""
    if len(values) < 2:
        return None
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))


@dataclass(frozen=True)
class PairedDifference:
    """A method minus the baseline, paired by seed.

    Args:
        n: the number of seeds both have.
        mean: the mean per-seed difference.
        std: the sample std of the differences (None when ``n == 1``).
        ci_low: the lower end of the 95% interval (None when ``n == 1``).
        ci_high: the upper end (None when ``n == 1``).
        t_critical: ``t_{0.975, n-1}`` (None when ``n == 1``).
    """

    n: int
    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None
    t_critical: float | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the fields."""
        return asdict(self)


def paired_difference(method: Sequence[float], baseline: Sequence[float],
                      confidence: float = 0.95) -> PairedDifference:
    """The mean of ``method[i] - baseline[i]`` and its Student's t confidence interval.

    Args:
        method: one value per seed.
        baseline: the baseline's values for the same seeds, in the same order.
        confidence: the interval's coverage (two-sided).

    Raises:
        ValueError: no values, or the two lists differ in length.
    """
    if len(method) != len(baseline):
        raise ValueError(f"paired values need the same seeds: {len(method)} vs {len(baseline)}")
    diffs = [m - b for m, b in zip(method, baseline, strict=True)]
    d_mean, d_std, n = mean(diffs), sample_std(diffs), len(diffs)
    if d_std is None:
        return PairedDifference(n, d_mean, None, None, None, None)
    from scipy.stats import t

    t_crit = float(t.ppf(0.5 + confidence / 2, n - 1))
    half = t_crit * d_std / math.sqrt(n)
    return PairedDifference(n, d_mean, d_std, d_mean - half, d_mean + half, t_crit)


def final_value(curve: Sequence[float], last: int = FINAL_EPOCHS) -> float | None:
    """The mean of the last ``last`` epochs of a curve (all when shorter); None when empty."""
    tail = [v for v in curve[-last:] if math.isfinite(v)]
    return mean(tail) if tail else None


def epochs_to_reach(curve: Sequence[float], fraction: float = CONVERGED_FRACTION,
                    last: int = FINAL_EPOCHS) -> int | None:
    """The 1-based first epoch whose value reaches ``fraction`` of :func:`final_value`.

    Returns:
        The epoch number, or None for an empty curve (or one without finite final values).
    """
    final = final_value(curve, last)
    if final is None:
        return None
    target = fraction * final
    for epoch, value in enumerate(curve, start=1):
        if value >= target:
            return epoch
    return None  # unreachable for finite curves: max(tail) >= mean(tail)


__all__ = ["CONVERGED_FRACTION", "FINAL_EPOCHS", "PairedDifference", "epochs_to_reach",
           "final_value", "mean", "paired_difference", "sample_std"]
