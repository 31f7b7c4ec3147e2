"""The sign rule: an exact binomial p-value and order-statistic bounds of the median."""

from __future__ import annotations

import numpy as np
import pytest
from mechcheck_topk.sign import median_bounds, sign_test
from scipy import stats


def test_p_value_is_the_exact_one_sided_binomial_tail() -> None:
    values = np.array([0.5, 1.2, -0.3, 2.0, 0.0, 0.9, 1.1, 3.0, 0.7, -1.0])
    decision = sign_test(values, 0.0, alpha=0.05, seed=4, n_resamples=9)
    # one value equals the threshold and is dropped: 7 of 9 above
    expected = stats.binomtest(7, 9, 0.5, alternative="greater").pvalue
    assert decision.p_value == pytest.approx(expected, rel=1e-12)
    assert decision.effect == np.median(values) and decision.method == "sign"
    assert (decision.n, decision.seed, decision.threshold) == (10, 4, 0.0)


def test_it_tests_the_median_not_the_mean() -> None:
    # most prompts lose a little, a few gain a lot: the mean exceeds 0, the median not
    values = np.array([-0.1] * 15 + [10.0] * 5)
    assert values.mean() > 0
    assert sign_test(values, 0.0, alpha=0.05, seed=0, n_resamples=9).p_value > 0.9


def test_bounds_are_order_statistics_with_the_binomial_level() -> None:
    values = np.arange(1.0, 21.0)
    # P(B <= 5) = 0.021 <= 0.05 < P(B <= 6) = 0.058 for B ~ Binomial(20, 1/2)
    assert median_bounds(values, 0.05) == (6.0, 15.0)


def test_lower_bound_covers_the_median_at_its_level() -> None:
    rng = np.random.default_rng(0)
    misses = sum(median_bounds(rng.exponential(size=25), 0.1)[0] > np.log(2)
                 for _ in range(2000))
    assert misses / 2000 <= 0.1 + 0.02


def test_too_few_values_for_a_bound_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="the sign test needs at least 5 prompts at "
                       "alpha=0.05, got 4"):
        sign_test(np.array([1.0, 2.0, 3.0, 4.0]), 0.0, alpha=0.05, seed=0, n_resamples=9)
    with pytest.raises(ValueError, match="at least 2 finite values"):
        sign_test(np.array([1.0, np.nan, 2.0]), 0.0, alpha=0.05, seed=0, n_resamples=9)
