"""Tests of mechcheck.stats: exact values, labels, degenerate input and error rates.

The decision rules are reached through the module (``stats.test_greater``), never imported
by name, so that pytest could not mistake them for tests even without ``__test__``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as hst
from scipy import stats as sps

from mechcheck import stats
from mechcheck.stats import Decision, adjust, outcome

X = np.array([0.3, 1.2, -0.4, 0.9, 1.5, 0.1, 0.8])
RESAMPLING = ["robust", "wilcoxon", "permutation", "bootstrap"]
UNKNOWN_TEST: Any = "z"
NOT_AN_INT: Any = 1.5


def _hand_t(x: np.ndarray) -> tuple[float, float]:
    """Mean and standard error, written out."""
    mean = sum(x) / len(x)
    sd = math.sqrt(sum((v - mean) ** 2 for v in x) / (len(x) - 1))
    return mean, sd / math.sqrt(len(x))


def _decision(**changes: object) -> Decision:
    fields: dict[str, object] = dict(
        effect=0.5,
        ci_low=0.2,
        ci_high=0.8,
        confidence_level=0.9,
        n=30,
        p_value=0.01,
        threshold=0.1,
        alternative="greater",
        method="t",
        seed=0,
        alpha=0.05,
    )
    fields.update(changes)
    return Decision(**fields)  # type: ignore[arg-type]


# --- exact values ----------------------------------------------------------------------


def test_t_rule_matches_hand_computed_t_statistic() -> None:
    mean, se = _hand_t(X)
    d = stats.test_greater(X, 0.2, test="t")
    assert d.p_value == pytest.approx(sps.t.sf((mean - 0.2) / se, df=6), rel=1e-10)
    half = sps.t.ppf(0.95, df=6) * se
    assert (d.ci_low, d.ci_high) == pytest.approx((mean - half, mean + half), rel=1e-12)
    assert d.effect == pytest.approx(mean, rel=1e-12)
    assert (d.n, d.method, d.alternative, d.threshold) == (7, "t", "greater", 0.2)
    assert d.confidence_level == pytest.approx(0.9)


def test_tost_matches_hand_computed_t_statistics() -> None:
    mean, se = _hand_t(X)
    d = stats.test_inside(X, 1.5, alpha=0.1, seed=3, test="t")
    expected = max(sps.t.sf((mean + 1.5) / se, df=6), sps.t.cdf((mean - 1.5) / se, df=6))
    assert d.p_value == pytest.approx(expected, rel=1e-10)
    half = sps.t.ppf(0.9, df=6) * se
    assert (d.ci_low, d.ci_high) == pytest.approx((mean - half, mean + half), rel=1e-12)
    assert (d.method, d.alternative, d.seed, d.threshold) == ("tost", "inside", 3, 1.5)
    assert d.confidence_level == pytest.approx(0.8)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1.0, 2.0, 3.0, 4.0, 5.0], 1 / 32),  # all 32 sign patterns: only the observed one
        ([-1.0, 2.0, 3.0, 4.0, 5.0], 2 / 32),  # rank sum 14 of 15: {all +, only 1 -}
    ],
)
@pytest.mark.parametrize("test", ["wilcoxon", "permutation"])
def test_rank_and_sign_flip_tests_are_exact_for_small_n(
    test: str, values: list[float], expected: float
) -> None:
    d = stats.test_greater(values, 0.0, test=test, n_resamples=999)
    assert d.p_value == pytest.approx(expected)


@pytest.mark.parametrize("test", ["robust", "t", "bootstrap"])
def test_pass_iff_lower_bound_exceeds_threshold(test: str) -> None:
    bounds = stats.test_greater(X, 0.0, test=test, n_resamples=999)
    for threshold in (bounds.ci_low - 1e-9, bounds.ci_low + 1e-9, -1.0, 2.0):
        d = stats.test_greater(X, threshold, test=test, n_resamples=999)
        assert (d.ci_low, d.ci_high) == pytest.approx((bounds.ci_low, bounds.ci_high))
        assert (outcome(d) == "pass") == (d.ci_low > threshold)


RATIO_METHODS = {"robust": "robust-fieller", "fieller": "fieller", "bootstrap": "bootstrap-ratio"}


@pytest.mark.parametrize("method", list(RATIO_METHODS))
def test_ratio_pass_iff_lower_bound_exceeds_threshold(method: str) -> None:
    rng = np.random.default_rng(5)
    den = rng.normal(2.0, 1.0, 25)
    num = 0.7 * den + rng.normal(0.0, 0.5, 25)
    bounds = stats.test_ratio(num, den, 0.0, n_resamples=999, method=method)  # type: ignore[arg-type]
    assert bounds.effect == pytest.approx(num.mean() / den.mean())
    assert bounds.ci_low < bounds.effect < bounds.ci_high
    for threshold in (bounds.ci_low - 1e-9, bounds.ci_low + 1e-9, 0.0, 1.5):
        d = stats.test_ratio(num, den, threshold, n_resamples=999, method=method)  # type: ignore[arg-type]
        assert (d.ci_low, d.ci_high) == pytest.approx((bounds.ci_low, bounds.ci_high))
        assert (outcome(d) == "pass") == (d.ci_low > threshold)
        assert (d.method, d.alternative) == (RATIO_METHODS[method], "greater")


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_fieller_bounds_invert_the_t_test_of_num_minus_r_den(sign: float) -> None:
    """Reference by brute force: scan R, run scipy's one-sample t-test on num - R * den,
    and find where its one-sided p-value crosses alpha (and 1 - alpha)."""
    rng = np.random.default_rng(9)
    den = sign * rng.normal(2.0, 0.8, 15)
    num = 0.6 * den + rng.normal(0.0, 0.7, 15)
    d = stats.test_ratio(num, den, 0.4, alpha=0.05, method="fieller")
    alternative = "greater" if sign > 0 else "less"
    grid = np.linspace(-1.0, 2.0, 300_001)

    def p_at(r: float) -> float:
        return float(sps.ttest_1samp(num - r * den, 0.0, alternative=alternative).pvalue)

    p = np.array([p_at(r) for r in grid[::1000]])
    assert np.all(np.diff(p) >= 0)  # p grows with R: the test of "ratio > R" weakens
    passing = grid[::1000][p <= 0.05]
    assert d.ci_low == pytest.approx(passing.max(), abs=0.011)
    assert d.p_value == pytest.approx(p_at(0.4), rel=1e-9)
    upper = grid[::1000][p < 0.95]
    assert d.ci_high == pytest.approx(upper.max(), abs=0.011)


@pytest.mark.parametrize(("test", "method"), [("robust", "robust-tost"), ("t", "tost")])
def test_tost_pass_iff_interval_inside_margin(test: str, method: str) -> None:
    d = stats.test_inside(X, 10.0, test=test, n_resamples=999)  # type: ignore[arg-type]
    widest = max(abs(d.ci_low), abs(d.ci_high))
    for margin, label in ((widest + 1e-9, "pass"), (widest - 1e-9, "not supported")):
        e = stats.test_inside(X, margin, test=test, n_resamples=999)  # type: ignore[arg-type]
        assert (e.ci_low, e.ci_high) == pytest.approx((d.ci_low, d.ci_high))
        assert (outcome(e), e.method) == (label, method)


@pytest.mark.parametrize("method", list(RATIO_METHODS))
def test_ratio_handles_negative_denominators(method: str) -> None:
    rng = np.random.default_rng(2)
    den = rng.normal(-2.0, 0.5, 20)
    num = 0.9 * den + rng.normal(0.0, 0.2, 20)
    d = stats.test_ratio(num, den, 0.5, n_resamples=999, method=method)  # type: ignore[arg-type]
    assert d.effect == pytest.approx(num.mean() / den.mean())
    assert outcome(d) == "pass"
    assert outcome(stats.test_ratio(num, den, 1.2, method=method)) != "pass"  # type: ignore[arg-type]


@pytest.mark.parametrize("test", RESAMPLING)
def test_resampling_bounds_bracket_the_mean(test: str) -> None:
    d = stats.test_greater(X, 0.0, test=test, n_resamples=999)
    assert d.ci_low < d.effect < d.ci_high
    assert 0 < d.p_value <= 1


def test_bootstrap_p_value_lies_on_the_resampling_grid() -> None:
    d = stats.test_greater(X, 0.5, test="bootstrap", n_resamples=499)
    count = d.p_value * 500
    assert count == pytest.approx(round(count)) and count >= 1


# --- the robust rules against plain loops ----------------------------------------------
#
# The references below redo each robust rule with Python loops from the documented recipe:
# B resamples of m = max(3, 3n // 10) values (at most n), drawn as one (B, m) index matrix
# from numpy.random.default_rng(seed) (one block for the B and n used here), bootstrap-t
# pivots of the resamples whose SD exceeds a twentieth of the sample's, counts and order
# statistics over those, and scipy's t distribution for the t-test part.

SKEWED = np.exp(np.random.default_rng(8).normal(0.0, 1.0, 25))  # lognormal, right-skewed


def _loop_pivots(values: np.ndarray, seed: int, b: int) -> list[float]:
    n = len(values)
    m = min(n, max(3, (3 * n) // 10))
    idx = np.random.default_rng(seed).integers(0, n, size=(b, m))
    mean, se = _hand_t(values)
    pivots = []
    for row in idx:
        sample = [float(values[i]) for i in row]
        sample_mean = sum(sample) / m
        sd = math.sqrt(sum((v - sample_mean) ** 2 for v in sample) / (m - 1))
        if sd > 0.05 * se * math.sqrt(n):  # a twentieth of the sample's SD
            pivots.append((sample_mean - mean) / (sd / math.sqrt(m)))
    return pivots


def _loop_greater(values: np.ndarray, x: float, seed: int, b: int) -> tuple[float, float, float]:
    """(p, ci_low, ci_high) of the robust rule: the t-test and the bootstrap-t must agree."""
    mean, se = _hand_t(values)
    pivots = sorted(_loop_pivots(values, seed, b))
    kept = len(pivots)
    k = max(j for j in range(kept) if (j + 1) / (kept + 1) <= 0.05)  # exceedances allowed
    observed = (mean - x) / se
    p_boot = (1 + sum(t >= observed for t in pivots)) / (kept + 1)
    p_t = sps.t.sf(observed, len(values) - 1)
    half = sps.t.ppf(0.95, len(values) - 1) * se
    boot_low, boot_high = mean - pivots[kept - 1 - k] * se, mean - pivots[k] * se
    return max(p_t, p_boot), min(mean - half, boot_low), max(mean + half, boot_high)


@pytest.mark.parametrize(("values", "x", "seed"), [(SKEWED, 1.0, 0), (SKEWED, 2.5, 7),
                                                   (-SKEWED, -2.2, 3), (X, 0.0, 1)])
def test_robust_rule_matches_a_plain_loop(values: np.ndarray, x: float, seed: int) -> None:
    d = stats.test_greater(values, x, seed=seed, n_resamples=999)
    p, low, high = _loop_greater(values, x, seed, 999)
    assert (d.p_value, d.ci_low, d.ci_high) == pytest.approx((p, low, high), rel=1e-12)
    assert (d.method, d.seed) == ("robust", seed)


@pytest.mark.parametrize(("shift", "margin", "seed"),
                         [(0.0, 2.0, 0), (0.9, 2.0, 5), (-0.3, 1.0, 2)])
def test_robust_tost_matches_a_plain_loop(shift: float, margin: float, seed: int) -> None:
    values = SKEWED - SKEWED.mean() + shift
    d = stats.test_inside(values, margin, seed=seed, n_resamples=999)
    p_above, low, high = _loop_greater(values, -margin, seed, 999)
    # "E[d] < m" is "E[-d] > -m"; the mirrored sample resamples the same prompts
    p_below, mirrored_low, mirrored_high = _loop_greater(-values, -margin, seed, 999)
    assert (mirrored_low, mirrored_high) == pytest.approx((-high, -low), rel=1e-12)
    expected = (max(p_above, p_below), low, high)
    assert (d.p_value, d.ci_low, d.ci_high) == pytest.approx(expected, rel=1e-12)
    assert d.method == "robust-tost"


@pytest.mark.parametrize("skew", [1.0, -1.0])
def test_robust_ratio_matches_a_brute_force_inversion(skew: float) -> None:
    """The twin of Fieller's rule by brute force: at each R, pivots of num - R * den by the
    loop (the same resampled prompts for every R), its p-value at R from the paired t
    statistic of num - R * den, and its bounds as the R where that p-value crosses
    alpha, found on a grid. Skewed noise: the twin widens the bound on the side of the
    long tail."""
    rng = np.random.default_rng(4)
    den = rng.normal(2.0, 1.0, 30)
    num = 0.6 * den + skew * (np.exp(rng.normal(0.0, 1.0, 30)) - math.exp(0.5))
    b, threshold = 999, 0.3
    d = stats.test_ratio(num, den, threshold, seed=6, n_resamples=b)
    fieller = stats.test_ratio(num, den, threshold, method="fieller")

    def p_twin(r: float, sign: float = 1.0) -> float:  # sign -1: the test of "ratio < r"
        pivots = np.array(_loop_pivots(num - r * den, 6, b))
        mean, se = _hand_t(num - r * den)
        return (1 + np.count_nonzero(sign * pivots >= sign * mean / se)) / (pivots.size + 1)

    assert d.p_value == pytest.approx(max(fieller.p_value, p_twin(threshold)), rel=1e-12)
    grid = np.linspace(-0.5, 2.0, 1001)
    above = np.array([p_twin(r) for r in grid])
    below = np.array([p_twin(r, -1.0) for r in grid])
    passing, not_refuted = grid[above <= 0.05], grid[below > 0.05]
    # the twin rejects every ratio below its bound and none between it and the estimate
    assert passing.max() < grid[above > 0.05].min()
    assert min(fieller.ci_low, passing.max()) == pytest.approx(d.ci_low, abs=3e-3)
    assert max(fieller.ci_high, not_refuted.max()) == pytest.approx(d.ci_high, abs=3e-3)
    if skew > 0:
        assert d.ci_high > fieller.ci_high and d.ci_low == fieller.ci_low
    else:
        assert d.ci_low < fieller.ci_low and d.ci_high == fieller.ci_high
    assert d.method == "robust-fieller"


def test_robust_rule_ignores_resamples_of_tied_or_clustered_values() -> None:
    """Two tight clusters (prompts of two lengths, say): a resample of m prompts often
    falls in one cluster, and its t statistic is then huge; left out, they do not make
    an overwhelming effect look doubtful. Saturated 0/1 values: the t-test decides."""
    rng = np.random.default_rng(0)
    clusters = np.concatenate([rng.normal(0.2285, 1e-4, 9), rng.normal(0.2653, 1e-4, 15)])
    d = stats.test_greater(clusters, 0.0)
    kept = len(_loop_pivots(clusters, 0, 9999))
    assert 9000 < kept < 9999  # about (15/24)^7 = 4% of the resamples fell in one cluster
    assert d.p_value == pytest.approx(1 / (kept + 1))  # the smallest attainable
    binary = np.array([1.0] * 22 + [0.0] * 2)
    robust, t = stats.test_greater(binary, 0.8), stats.test_greater(binary, 0.8, test="t")
    assert (robust.p_value, robust.ci_low) == pytest.approx((t.p_value, t.ci_low))
    assert outcome(robust) == outcome(t) == "pass"


settings_robust = settings(deadline=None, max_examples=60)


@settings_robust
@given(
    hst.lists(hst.floats(-1e3, 1e3, allow_subnormal=False), min_size=2, max_size=40),
    hst.floats(-1e3, 1e3),
    hst.integers(0, 2**32 - 1),
)
def test_robust_rule_passes_only_what_the_t_test_passes(
    values: list[float], threshold: float, seed: int
) -> None:
    robust = stats.test_greater(values, threshold, seed=seed, n_resamples=199)
    t = stats.test_greater(values, threshold, test="t")
    assert robust.p_value >= t.p_value - 1e-12
    assert robust.ci_low <= t.ci_low + 1e-12 and robust.ci_high >= t.ci_high - 1e-12
    assert robust.ci_low <= robust.effect <= robust.ci_high
    assume(abs(robust.ci_low - threshold) > 1e-9 * (1 + abs(threshold) + abs(robust.ci_low)))
    assert (outcome(robust) == "pass") == (robust.ci_low > threshold)


# --- outcome -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "p_adjusted", "expected"),
    [
        ({}, None, "pass"),
        ({"p_value": 0.05}, None, "pass"),
        ({"p_value": 0.2}, None, "not supported"),
        ({"p_value": 0.2, "ci_high": 0.1}, None, "refuted"),
        ({}, 0.2, "not supported"),
        ({"p_value": 0.2}, 0.01, "pass"),
        ({"ci_high": 0.05}, math.nan, "refuted"),
        ({"alternative": "inside", "threshold": 1.0}, None, "pass"),
        ({"alternative": "inside", "threshold": 1.0, "p_value": 0.3}, None, "not supported"),
        ({"alternative": "inside", "threshold": 0.2, "p_value": 0.3}, None, "refuted"),
        (
            {
                "alternative": "inside",
                "threshold": 0.2,
                "p_value": 0.3,
                "ci_low": -1.0,
                "ci_high": -0.2,
            },
            None,
            "refuted",
        ),
    ],
)
def test_outcome_labels(
    changes: dict[str, object], p_adjusted: float | None, expected: str
) -> None:
    assert outcome(_decision(**changes), p_adjusted) == expected


# --- degenerate input --------------------------------------------------------------------


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("test", ["t", *RESAMPLING])
@pytest.mark.parametrize(
    ("threshold", "p", "label"), [(0.5, 0.0, "pass"), (0.7, 1.0, "refuted"), (1.0, 1.0, "refuted")]
)
def test_equal_values(test: str, threshold: float, p: float, label: str) -> None:
    d = stats.test_greater([0.7] * 6, threshold, test=test, n_resamples=99)
    assert (d.effect, d.ci_low, d.ci_high, d.p_value) == (0.7, 0.7, 0.7, p)
    assert outcome(d) == label


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("test", ["t", *RESAMPLING])
def test_values_equal_up_to_rounding(test: str) -> None:
    values = [0.1] * 9 + [0.1 + 2**-56]
    d = stats.test_greater(values, 0.0, test=test, n_resamples=99)
    assert d.p_value == 0.0 and d.ci_low == d.ci_high == d.effect == pytest.approx(0.1)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("test", ["robust", "t"])
@pytest.mark.parametrize(("value", "p"), [(0.2, 0.0), (-0.2, 0.0), (0.6, 1.0)])
def test_tost_equal_values(value: float, p: float, test: str) -> None:
    d = stats.test_inside([value] * 4, 0.5, test=test)  # type: ignore[arg-type]
    assert (d.p_value, d.ci_low, d.ci_high) == (p, value, value)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("method", list(RATIO_METHODS))
def test_ratio_of_proportional_values(method: str) -> None:
    den = np.array([1.0, 2.0, 3.0, 4.5])
    passed = stats.test_ratio(0.8 * den, den, 0.5, method=method)  # type: ignore[arg-type]
    assert passed.p_value == 0.0 and passed.ci_low == passed.ci_high == passed.effect
    assert stats.test_ratio(0.3 * den, den, 0.5, method=method).p_value == 1.0  # type: ignore[arg-type]


@pytest.mark.filterwarnings("error")
def test_two_prompts_are_enough() -> None:
    for test in ["t", *RESAMPLING]:
        d = stats.test_greater([0.1, 0.4], 0.0, test=test, n_resamples=99)
        assert not math.isnan(d.p_value) and d.ci_low <= d.effect <= d.ci_high


# --- invalid input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ([1.0], "need at least 2 prompts, got n=1"),
        ([], "need at least 2 prompts, got n=0"),
        ([1.0, math.nan, 2.0], "NaN or infinite value.*index 1"),
        ([1.0, 2.0, math.inf], "NaN or infinite value.*index 2"),
        ([[1.0, 2.0], [3.0, 4.0]], "1-D"),
        (["a", "b"], "must be numbers"),
    ],
)
def test_invalid_values(values: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        stats.test_greater(values, 0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=match):
        stats.test_inside(values, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=match):
        stats.test_ratio(values, [1.0, 2.0], 0.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: stats.test_greater(X, 0.0, alpha=0.0), "alpha"),
        (lambda: stats.test_greater(X, 0.0, alpha=0.5), "alpha"),
        (lambda: stats.test_greater(X, math.nan), "threshold"),
        (lambda: stats.test_greater(X, 0.0, test=UNKNOWN_TEST), "unknown test 'z'"),
        (lambda: stats.test_greater(X, 0.0, test="bootstrap", n_resamples=10), "too small"),
        (lambda: stats.test_greater(X, 0.0, test="permutation", n_resamples=NOT_AN_INT), "integer"),
        (lambda: stats.test_inside(X, 0.0), "margin must be > 0"),
        (lambda: stats.test_inside(X, -1.0), "margin must be > 0"),
        (lambda: stats.test_inside(X, 1.0, test=UNKNOWN_TEST), "unknown test 'z'.*robust or t"),
        (lambda: stats.test_inside(X, 1.0, n_resamples=10), "too small"),
        (lambda: stats.test_greater(X, 0.0, n_resamples=10), "too small"),
        (lambda: stats.test_ratio(X, X + 2.0, 0.5, method=UNKNOWN_TEST), "unknown ratio"),
        (lambda: stats.test_ratio(X, X[:5], 0.5), "paired"),
        (lambda: stats.test_ratio(X, [1.0, -1.0] * 3 + [0.0], 0.5), "do not differ"),
    ],
)
def test_invalid_arguments(call: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_ratio_refuses_a_denominator_of_unstable_sign() -> None:
    den = np.random.default_rng(0).normal(0.05, 1.0, 30)
    with pytest.raises(ValueError, match="recovery is undefined; use a stronger corruption"):
        stats.test_ratio(den + 1.0, den, 0.5)


def test_smallest_allowed_resample_count() -> None:
    d = stats.test_greater(X, -5.0, test="bootstrap", n_resamples=19)  # (19 + 1) * 0.05 == 1
    assert d.p_value == pytest.approx(0.05) and outcome(d) == "pass"


# --- determinism -------------------------------------------------------------------------


@pytest.mark.parametrize("test", RESAMPLING)
def test_same_seed_gives_identical_decisions(test: str) -> None:
    values = np.random.default_rng(1).normal(0.3, 1.0, 40)
    first = stats.test_greater(values, 0.0, test=test, seed=11, n_resamples=999)
    assert stats.test_greater(values, 0.0, test=test, seed=11, n_resamples=999) == first
    other = stats.test_greater(values, 0.0, test=test, seed=12, n_resamples=999)
    assert (other.ci_low, other.ci_high) != (first.ci_low, first.ci_high)
    assert first.seed == 11


def test_same_seed_gives_identical_ratio_decisions() -> None:
    rng = np.random.default_rng(1)
    den = rng.normal(2.0, 1.0, 40)
    num = 0.5 * den + rng.normal(0.0, 1.0, 40)
    first = stats.test_ratio(num, den, 0.3, seed=4, n_resamples=999, method="bootstrap")
    assert stats.test_ratio(num, den, 0.3, seed=4, n_resamples=999, method="bootstrap") == first
    fieller = stats.test_ratio(num, den, 0.3, seed=4, method="fieller")
    assert stats.test_ratio(num, den, 0.3, seed=5, method="fieller") == replace(fieller, seed=5)
    robust = stats.test_ratio(num, den, 0.3, seed=4, n_resamples=999)
    assert stats.test_ratio(num, den, 0.3, seed=4, n_resamples=999) == robust
    other = stats.test_ratio(num, den, 0.3, seed=5, n_resamples=999)
    assert (other.ci_low, other.ci_high) != (robust.ci_low, robust.ci_high)


def test_same_seed_gives_identical_tost_decisions() -> None:
    values = np.random.default_rng(3).normal(0.1, 1.0, 40)
    first = stats.test_inside(values, 1.0, seed=2, n_resamples=999)
    assert stats.test_inside(values, 1.0, seed=2, n_resamples=999) == first
    other = stats.test_inside(values, 1.0, seed=3, n_resamples=999)
    assert (other.ci_low, other.ci_high) != (first.ci_low, first.ci_high)
    classical = stats.test_inside(values, 1.0, seed=2, test="t")
    assert stats.test_inside(values, 1.0, seed=9, test="t") == replace(classical, seed=9)


def test_rules_are_not_collected_by_pytest() -> None:
    for rule in (stats.test_greater, stats.test_inside, stats.test_ratio):
        assert rule.__test__ is False  # type: ignore[attr-defined]


# --- adjust --------------------------------------------------------------------------------


def test_holm_hand_worked() -> None:
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01, 2 * 0.03, max(1 * 0.04, 0.06)
    assert adjust([0.01, 0.04, 0.03], "holm") == pytest.approx([0.03, 0.06, 0.06])
    assert adjust([0.5, 0.6], "holm") == [1.0, 1.0]  # 2 * 0.5 and max(0.6, 1.0), capped at 1


def test_bh_hand_worked() -> None:
    # sorted 0.01, 0.03, 0.04 -> 3/1 * 0.01, min(3/2 * 0.03, 0.04), 3/3 * 0.04
    assert adjust([0.01, 0.04, 0.03], "bh") == pytest.approx([0.03, 0.04, 0.04])
    # 4 * 0.01, 4/2 * 0.02, 4/3 * 0.03 = 0.04 each; 0.5 stays
    assert adjust([0.01, 0.02, 0.03, 0.5], "bh") == pytest.approx([0.04, 0.04, 0.04, 0.5])


@pytest.mark.parametrize(
    ("method", "expected"),
    [("holm", [0.03, 0.06, 0.06]), ("bh", [0.03, 0.04, 0.04]), ("none", [0.01, 0.04, 0.03])],
)
def test_adjust_passes_nan_through_and_leaves_it_out_of_the_family(
    method: str, expected: list[float]
) -> None:
    adjusted = adjust([0.01, math.nan, 0.04, math.nan, 0.03], method)  # type: ignore[arg-type]
    assert math.isnan(adjusted[1]) and math.isnan(adjusted[3])
    assert [adjusted[0], adjusted[2], adjusted[4]] == pytest.approx(expected)


def test_adjust_edge_cases() -> None:
    assert adjust([], "holm") == []
    assert all(math.isnan(p) for p in adjust([math.nan, math.nan], "bh"))
    with pytest.raises(ValueError, match="unknown correction 'bonferroni'"):
        adjust([0.1], "bonferroni")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adjust([0.1, 1.5], "holm")
    with pytest.raises(ValueError, match="1-D"):
        adjust([[0.1]], "none")


p_values = hst.lists(hst.one_of(hst.floats(0.0, 1.0), hst.just(math.nan)), max_size=25)


@settings(deadline=None)
@given(p_values, hst.sampled_from(["holm", "bh", "none"]))
def test_adjust_properties(ps: list[float], method: str) -> None:
    adjusted = adjust(ps, method)  # type: ignore[arg-type]
    assert len(adjusted) == len(ps)
    for raw, new in zip(ps, adjusted, strict=True):
        assert math.isnan(new) == math.isnan(raw)
        if not math.isnan(raw):
            assert raw - 1e-12 <= new <= 1.0
    pairs = [(a, b) for a, b in zip(ps, adjusted, strict=True) if not math.isnan(a)]
    for raw_a, new_a in pairs:  # adjustment keeps the order of the p-values
        assert all(new_a <= new_b + 1e-12 for raw_b, new_b in pairs if raw_a <= raw_b)


@settings(deadline=None)
@given(p_values)
def test_holm_is_never_below_bh(ps: list[float]) -> None:
    holm, bh = adjust(ps, "holm"), adjust(ps, "bh")
    assert all(h >= b - 1e-12 for h, b in zip(holm, bh, strict=True) if not math.isnan(h))


@settings(deadline=None)
@given(
    hst.lists(hst.floats(-1e3, 1e3, allow_subnormal=False), min_size=2, max_size=40),
    hst.floats(-1e3, 1e3),
    hst.floats(0.001, 0.25),
)
def test_t_rule_bounds_are_ordered_and_decide(
    values: list[float], threshold: float, alpha: float
) -> None:
    d = stats.test_greater(values, threshold, alpha=alpha, test="t")
    assert d.ci_low <= d.effect <= d.ci_high
    assert 0.0 <= d.p_value <= 1.0
    assume(abs(d.ci_low - threshold) > 1e-9 * (1 + abs(threshold) + abs(d.ci_low)))
    assert (outcome(d) == "pass") == (d.ci_low > threshold)


# --- error rates by simulation -----------------------------------------------------------

N_DATASETS = 1000
N_PROMPTS = 30
ALPHA = 0.05
MAX_NULL_RATE = ALPHA + 2 * math.sqrt(ALPHA * (1 - ALPHA) / N_DATASETS)
MIN_POWER = 0.95
SIM_RESAMPLES = 999
Case = Callable[[np.random.Generator, bool, int], Decision]


def _greater_case(test: str) -> Case:
    def case(rng: np.random.Generator, past: bool, seed: int) -> Decision:
        values = rng.normal(1.5 if past else 0.0, 1.0, N_PROMPTS)  # symmetric around 0
        return stats.test_greater(
            values,
            0.0,
            test=test,
            seed=seed,
            n_resamples=SIM_RESAMPLES,  # type: ignore[arg-type]
        )

    return case


def _inside_case(test: str) -> Case:
    def case(rng: np.random.Generator, past: bool, seed: int) -> Decision:
        margin = 2.0  # true mean exactly at the margin, or 1.5 SD inside it
        values = rng.normal(margin - 1.5 if past else margin, 1.0, N_PROMPTS)
        return stats.test_inside(values, margin, seed=seed, test=test,  # type: ignore[arg-type]
                                 n_resamples=SIM_RESAMPLES)

    return case


def _ratio_case(method: str, n: int = N_PROMPTS) -> Case:
    def case(rng: np.random.Generator, past: bool, seed: int) -> Decision:
        # true ratio exactly R, or R + 0.75 (1.2 SD of num - R * den; 1.5 SD at n = 10)
        ratio, shift = 0.5, (0.75 if n >= N_PROMPTS else 1.5)
        den = rng.normal(2.0, 1.0, n)
        num = (ratio + (shift if past else 0.0)) * den + rng.normal(0.0, 1.0, n)
        return stats.test_ratio(num, den, ratio, seed=seed, n_resamples=SIM_RESAMPLES,
                                method=method)  # type: ignore[arg-type]

    return case


CASES: dict[str, Case] = {
    **{test: _greater_case(test) for test in ["t", *RESAMPLING]},
    "tost": _inside_case("t"),
    "robust-tost": _inside_case("robust"),
    "ratio": _ratio_case("fieller"),
    "ratio-robust": _ratio_case("robust"),
    "ratio-bootstrap": _ratio_case("bootstrap"),
    "ratio-10-prompts": _ratio_case("fieller", n=10),  # exact for normal values at any n
}


def _pass_rate(case: Case, *, past: bool) -> float:
    rng = np.random.default_rng(20240611)
    passes = sum(outcome(case(rng, past, seed)) == "pass" for seed in range(N_DATASETS))
    return passes / N_DATASETS


@pytest.mark.parametrize("rule", list(CASES))
def test_pass_rate_at_the_threshold_is_at_most_alpha(rule: str) -> None:
    rate = _pass_rate(CASES[rule], past=False)
    print(
        f"{rule}: pass rate {rate:.3f} with the effect at the threshold (max {MAX_NULL_RATE:.4f})"
    )
    assert rate <= MAX_NULL_RATE


@pytest.mark.parametrize("rule", list(CASES))
def test_pass_rate_well_past_the_threshold_is_high(rule: str) -> None:
    rate = _pass_rate(CASES[rule], past=True)
    print(f"{rule}: pass rate {rate:.3f} with the effect well past the threshold (min {MIN_POWER})")
    assert rate >= MIN_POWER


# --- the default rules under skew and heavy tails ------------------------------------------
#
# The claim's true value sits exactly at the null boundary (the threshold, the margin, the
# recovery R), with per-prompt noise that is normal, heavy-tailed (Student t, 3 df) or
# lognormal(0, 1) (skewness 6.2) in either direction; benchmarks/null_pass_rates.py
# tabulates every rule at n = 10 to 100 and docs/decision-rules.md quotes it.

LOGNORMAL_MEAN = math.exp(0.5)
Draw = Callable[[np.random.Generator, int], np.ndarray]
NOISE: dict[str, tuple[Draw, float]] = {  # a draw of n values with mean 0, and their SD
    "normal": (lambda rng, n: rng.normal(0.0, 1.0, n), 1.0),
    "t3": (lambda rng, n: rng.standard_t(3, n), math.sqrt(3.0)),
    "right-skewed": (lambda rng, n: rng.lognormal(0.0, 1.0, n) - LOGNORMAL_MEAN,
                     math.sqrt((math.e - 1) * math.e)),
    "left-skewed": (lambda rng, n: LOGNORMAL_MEAN - rng.lognormal(0.0, 1.0, n),
                    math.sqrt((math.e - 1) * math.e)),
}
SKEW_POWER_DATASETS = 400
# One default-rule claim: (rng, noise, distance from the null in noise SDs, n, seed)
DefaultCase = Callable[[np.random.Generator, str, float, int, int], Decision]


def _necessary_default(rng: np.random.Generator, noise: str, past: float, n: int,
                       seed: int) -> Decision:
    draw, sd = NOISE[noise]
    return stats.test_greater(draw(rng, n) + past * sd, 0.0, seed=seed,
                              n_resamples=SIM_RESAMPLES)


def _negligible_default(rng: np.random.Generator, noise: str, past: float, n: int,
                        seed: int) -> Decision:
    draw, sd = NOISE[noise]
    margin = 2 * sd  # the mean sits at +margin, or `past` SDs inside it
    return stats.test_inside(draw(rng, n) + margin - past * sd, margin, seed=seed,
                             n_resamples=SIM_RESAMPLES)


def _sufficient_default(rng: np.random.Generator, noise: str, past: float, n: int,
                        seed: int) -> Decision:
    draw, sd = NOISE[noise]
    den = rng.normal(2.0, 1.0, n)  # recovery 0.5, or `past` noise SDs of num above it
    num = (0.5 + past * sd / 2.0) * den + draw(rng, n)
    return stats.test_ratio(num, den, 0.5, seed=seed, n_resamples=SIM_RESAMPLES)


DEFAULT_CASES: dict[str, DefaultCase] = {
    "necessary": _necessary_default,
    "negligible": _negligible_default,
    "sufficient": _sufficient_default,
}


def _default_pass_rate(kind: str, noise: str, past: float, n: int, datasets: int) -> float:
    rng = np.random.default_rng(20240612)
    case = DEFAULT_CASES[kind]
    passes = sum(outcome(case(rng, noise, past, n, seed)) == "pass" for seed in range(datasets))
    return passes / datasets


@pytest.mark.parametrize("noise", list(NOISE))
@pytest.mark.parametrize(("kind", "n"), [("necessary", 20), ("negligible", 20),
                                         ("sufficient", 50)])
def test_default_rules_hold_their_level_under_skew(kind: str, n: int, noise: str) -> None:
    """n = 20 is the hardest prompt count the issue names for necessary and negligible;
    sufficient's default holds its level from about n = 50 (docs: weak cells)."""
    rate = _default_pass_rate(kind, noise, 0.0, n, N_DATASETS)
    print(f"{kind}, {noise}, n={n}: pass rate {rate:.3f} at the null (max {MAX_NULL_RATE:.4f})")
    assert rate <= MAX_NULL_RATE


@pytest.mark.parametrize("noise", list(NOISE))
@pytest.mark.parametrize("kind", list(DEFAULT_CASES))
def test_default_rules_have_power_under_skew(kind: str, noise: str) -> None:
    """50 prompts, the true value 1 noise SD past the null boundary."""
    rate = _default_pass_rate(kind, noise, 1.0, 50, SKEW_POWER_DATASETS)
    print(f"{kind}, {noise}: pass rate {rate:.3f} one SD past the null (min 0.8)")
    assert rate >= 0.8


@pytest.mark.parametrize("method", ["robust", "bootstrap"])
def test_a_recovery_that_is_rounding_noise_is_refuted_not_an_error(method: str) -> None:
    """Patching a component the runs share (one prompt's numerator a float32 ulp, the
    rest exactly 0, as a fast path's rounding leaves it; the gaps of zoo:induction-2l):
    the robust bound collapses onto the tiny estimate instead of its root search
    failing, and the claim is refuted."""
    from mechcheck.stats import test_ratio

    den = np.array([3.699, 3.918, 4.357, 4.083, 4.005, 3.917, 5.189, 3.725, 4.154, 3.977,
                    3.543, 4.282, 4.233, 4.121, 4.014, 4.202, 4.267, 4.366, 3.953, 4.046,
                    4.025, 3.989, 4.109, 3.046, 3.796, 4.007, 3.721, 3.764, 4.414, 4.472,
                    3.805, 3.928, 4.054, 4.119, 3.787, 3.998, 4.11, 4.026, 5.216, 4.429])
    num = np.zeros(40)
    num[29] = 4.76837158e-07
    d = test_ratio(num, den, 0.9, alpha=0.05, seed=0, n_resamples=9999, method=method)
    assert d.p_value > 0.5
    assert abs(d.effect) < 1e-7 and d.ci_low <= d.effect <= d.ci_high
    if method == "robust":
        assert d.ci_high < 0.9
