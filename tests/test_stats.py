"""Statistics over seeds (maivar_tf.stats) against hand-computed values."""

import math

import pytest

from maivar_tf.stats import (
    epochs_to_reach,
    final_value,
    mean,
    paired_difference,
    sample_std,
)


def test_mean_and_sample_std_use_ddof_1():
    values = [2, 4, 4, 4, 5, 5, 7, 9]  # population std 2, sample std sqrt(32 / 7)
    assert mean(values) == 5.0
    assert sample_std(values) == pytest.approx(math.sqrt(32 / 7), abs=1e-12)
    assert sample_std([0.7]) is None  # undefined for one seed
    with pytest.raises(ValueError, match="no values"):
        mean([])


def test_paired_difference_is_students_t_interval_of_per_seed_differences():
    method, baseline = [0.80, 0.85, 0.90], [0.78, 0.80, 0.86]
    d = paired_difference(method, baseline)
    # differences 0.02, 0.05, 0.04: mean 0.11 / 3, sample std sqrt(7 / 30000) = 0.0152753,
    # t_{0.975, 2} = 4.302653, half width 4.302653 * 0.0152753 / sqrt(3) = 0.0379458
    assert d.n == 3
    assert d.mean == pytest.approx(0.11 / 3, abs=1e-12)
    assert d.std == pytest.approx(math.sqrt(7 / 30000), abs=1e-12)
    assert d.t_critical == pytest.approx(4.302653, abs=1e-6)
    assert d.ci_low == pytest.approx(0.0366667 - 0.0379458, abs=1e-6)
    assert d.ci_high == pytest.approx(0.0366667 + 0.0379458, abs=1e-6)
    assert d.to_dict()["ci_high"] == d.ci_high
    # the baseline against itself: zero difference, zero-width interval
    same = paired_difference(baseline, baseline)
    assert (same.mean, same.ci_low, same.ci_high) == (0.0, 0.0, 0.0)


def test_paired_difference_of_one_seed_has_no_interval():
    d = paired_difference([0.9], [0.8])
    assert d.mean == pytest.approx(0.1)
    assert (d.std, d.ci_low, d.ci_high, d.t_critical) == (None, None, None, None)
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference([0.9, 0.8], [0.8])


def test_epochs_to_95_percent_of_the_mean_of_the_last_three_epochs():
    curve = [0.1, 0.5, 0.7, 0.9, 0.8, 1.0]
    assert final_value(curve) == pytest.approx(0.9)  # (0.9 + 0.8 + 1.0) / 3, not the last 1.0
    assert epochs_to_reach(curve) == 4  # first epoch >= 0.855 (the last-epoch rule: 6)
    assert epochs_to_reach(curve, last=1) == 6
    assert epochs_to_reach([0.4, 0.6]) == 2  # shorter than 3 epochs: their mean 0.5 -> 0.475
    assert final_value([]) is None and epochs_to_reach([]) is None
    assert epochs_to_reach([float("nan"), 0.5, 0.5, 0.5]) == 2  # a NaN epoch never counts
