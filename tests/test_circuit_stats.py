"""Tests of mechcheck.circuit_stats: exact values against hand computations, the level of
each test at its null boundary and its power, by small simulations, and input errors.

Level checks assert a pass rate at most ``alpha + 2 SE`` with ``SE = sqrt(alpha (1 -
alpha) / reps)``; the numbers the docs quote come from benchmarks/circuit_test_levels.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps

from mechcheck import circuit_stats as cs
from mechcheck.stats import outcome

ALPHA = 0.05


def _limit(reps: int) -> float:
    """The highest pass rate a level check accepts: alpha + 2 SE."""
    return ALPHA + 2 * math.sqrt(ALPHA * (1 - ALPHA) / reps)


def _tail_at_least(k: int, m: int, p: float) -> float:
    return sum(math.comb(m, j) * p**j * (1 - p) ** (m - j) for j in range(k, m + 1))


def _tail_at_most(k: int, m: int, p: float) -> float:
    return sum(math.comb(m, j) * p**j * (1 - p) ** (m - j) for j in range(0, k + 1))


def _scores_with(wins: int, losses: int, ties: int, seed: int = 0) -> tuple[Any, Any]:
    """Model scores and circuit scores that win ``wins``, lose ``losses`` and tie ``ties``
    prompts, shuffled."""
    rng = np.random.default_rng(seed)
    model = rng.normal(0.0, 3.0, wins + losses + ties)
    shift = np.concatenate([rng.uniform(0.1, 2.0, wins), -rng.uniform(0.1, 2.0, losses),
                            np.full(ties, 1e-12)])
    order = rng.permutation(model.size)
    return model + shift[order], model


# -- equivalence: exact values ----------------------------------------------------------
@pytest.mark.parametrize(("wins", "losses", "epsilon"),
                         [(50, 50, 0.1), (48, 52, 0.1), (60, 40, 0.1), (7, 3, 0.2),
                          (0, 12, 0.1), (12, 0, 0.25), (205, 195, 0.1)])
def test_equivalence_p_is_the_larger_binomial_tail(wins: int, losses: int,
                                                   epsilon: float) -> None:
    circuit, model = _scores_with(wins, losses, 0)
    d = cs.equivalence(circuit, model, epsilon=epsilon)
    m = wins + losses
    hand = max(_tail_at_least(wins, m, 0.5 - epsilon), _tail_at_most(wins, m, 0.5 + epsilon))
    assert d.p_value == pytest.approx(hand, rel=1e-9, abs=1e-300)
    assert d.effect == wins / m - 0.5
    assert (d.n, d.threshold, d.alternative, d.method) == (m, epsilon, "inside",
                                                           "binomial-equivalence")
    assert d.confidence_level == pytest.approx(0.9)


@pytest.mark.parametrize(("wins", "losses"), [(50, 50), (3, 17), (0, 9), (9, 0)])
def test_equivalence_bounds_are_clopper_pearson(wins: int, losses: int) -> None:
    """Each bound is the proportion at which its binomial tail equals alpha."""
    d = cs.equivalence(*_scores_with(wins, losses, 0))
    m = wins + losses
    low, high = d.ci_low + 0.5, d.ci_high + 0.5
    if wins == 0:
        assert low == 0.0
    else:
        assert _tail_at_least(wins, m, low) == pytest.approx(ALPHA)
    if wins == m:
        assert high == 1.0
    else:
        assert _tail_at_most(wins, m, high) == pytest.approx(ALPHA)
    assert d.ci_low <= d.effect <= d.ci_high


def test_equivalence_drops_ties() -> None:
    with_ties = cs.equivalence(*_scores_with(55, 45, 30))
    without = cs.equivalence(*_scores_with(55, 45, 0, seed=1))
    assert with_ties.effect == without.effect == pytest.approx(0.05)
    assert with_ties.p_value == pytest.approx(without.p_value, rel=1e-12)
    assert (with_ties.ci_low, with_ties.ci_high) == pytest.approx((without.ci_low,
                                                                   without.ci_high))
    assert with_ties.n == 130  # the prompts, ties included


def test_a_circuit_equal_to_the_model_is_equivalent() -> None:
    model = np.random.default_rng(0).normal(0.0, 5.0, 20)
    d = cs.equivalence(model.copy(), model)
    assert (d.p_value, d.effect, d.ci_low, d.ci_high, d.n) == (0.0, 0.0, 0.0, 0.0, 20)
    assert outcome(d) == "pass"


def test_equivalence_passes_iff_both_bounds_lie_inside_the_margin() -> None:
    for wins in range(180, 221):
        d = cs.equivalence(*_scores_with(wins, 400 - wins, 0))
        inside = -d.threshold < d.ci_low and d.ci_high < d.threshold
        assert (d.p_value <= ALPHA) == inside, wins


# -- equivalence: level and power -------------------------------------------------------
SHAPES: dict[str, Callable[[np.random.Generator, int], Any]] = {
    "normal": lambda rng, n: rng.normal(0.0, 1.0, n),
    "lognormal": lambda rng, n: rng.lognormal(0.0, 1.0, n),
    "t2": lambda rng, n: rng.standard_t(2, n),
}


def _boundary_scores(rng: np.random.Generator, n: int, p_win: float,
                     shape: str) -> tuple[Any, Any]:
    """Model scores and circuit scores whose difference is positive with probability
    exactly ``p_win``: a random sign times the magnitude of a draw of ``shape``."""
    model = rng.normal(0.0, 2.0, n)
    sign = np.where(rng.random(n) < p_win, 1.0, -1.0)
    return model + sign * np.abs(SHAPES[shape](rng, n)) + 1e-6 * sign, model


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("n", [30, 100])
@pytest.mark.parametrize("side", [1, -1])
def test_equivalence_level_at_the_margin(shape: str, n: int, side: int) -> None:
    reps, epsilon = 2000, 0.1
    rng = np.random.default_rng([n, side + 1, len(shape)])
    passes = sum(
        cs.equivalence(*_boundary_scores(rng, n, 0.5 + side * epsilon, shape),
                       epsilon=epsilon).p_value <= ALPHA
        for _ in range(reps))
    assert passes / reps <= _limit(reps)


def test_equivalence_power_for_a_faithful_circuit_at_400_prompts() -> None:
    """Scores of the model plus symmetric noise: P(delta > 0) = 1/2."""
    reps, n = 400, 400
    rng = np.random.default_rng(7)
    passes = 0
    for _ in range(reps):
        model = rng.normal(0.0, 2.0, n)
        passes += cs.equivalence(model + rng.normal(0.0, 0.5, n), model).p_value <= ALPHA
    assert passes / reps >= 1 - ALPHA


def test_equivalence_refutes_a_systematically_worse_circuit() -> None:
    reps, n = 400, 100
    rng = np.random.default_rng(8)
    labels = [outcome(cs.equivalence(*_boundary_scores(rng, n, 0.1, "normal")))
              for _ in range(reps)]
    assert labels.count("pass") == 0
    assert labels.count("refuted") / reps >= 0.99


# -- HSIC -------------------------------------------------------------------------------
def _hand_kernel(rows: list[list[float]]) -> list[list[float]]:
    n = len(rows)
    dist = [[math.dist(rows[i], rows[j]) for j in range(n)] for i in range(n)]
    pairs = sorted(dist[i][j] for i in range(n) for j in range(i + 1, n))
    mid = len(pairs) // 2
    median = pairs[mid] if len(pairs) % 2 else (pairs[mid - 1] + pairs[mid]) / 2
    sigma = median if median > 0 else 1.0
    return [[math.exp(-dist[i][j] ** 2 / (2 * sigma**2)) for j in range(n)]
            for i in range(n)]


def _hand_hsic(x: list[list[float]], y: list[list[float]]) -> float:
    """tr(K H L H) / n^2 written as the three sums of the V-statistic, by loops."""
    k, l_ = _hand_kernel(x), _hand_kernel(y)
    n = len(x)
    first = sum(k[i][j] * l_[i][j] for i in range(n) for j in range(n)) / n**2
    second = sum(k[i][j] * l_[i][q] for i in range(n) for j in range(n)
                 for q in range(n)) / n**3
    third = (sum(map(sum, k)) * sum(map(sum, l_))) / n**4
    return first - 2 * second + third


def test_hsic_matches_a_double_loop() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(7, 2))
    y = x[:, 0] ** 2 + 0.3 * rng.normal(size=7)
    rows_x, rows_y = x.tolist(), [[v] for v in y]
    assert cs.hsic(x, y) == pytest.approx(_hand_hsic(rows_x, rows_y), rel=1e-10)
    normalized = _hand_hsic(rows_x, rows_y) / math.sqrt(
        _hand_hsic(rows_x, rows_x) * _hand_hsic(rows_y, rows_y))
    assert cs.normalized_hsic(x, y) == pytest.approx(normalized, rel=1e-10)


def test_normalized_hsic_is_one_for_the_same_variable_and_zero_for_a_constant() -> None:
    x = np.random.default_rng(4).normal(size=30)
    assert cs.normalized_hsic(x, x) == pytest.approx(1.0)
    assert cs.normalized_hsic(x, 3 * x + 1) == pytest.approx(1.0)  # same median-scaled kernel
    assert cs.normalized_hsic(x, np.full(30, 2.5)) == 0.0
    assert cs.hsic(x, np.full(30, 2.5)) == pytest.approx(0.0, abs=1e-15)
    assert cs.independence_test(x, np.full(30, 2.5), n_permutations=50) == 1.0


def _independent_pair(name: str, rng: np.random.Generator, n: int) -> tuple[Any, Any]:
    return SHAPES[name](rng, n), SHAPES[name](rng, n)


@pytest.mark.parametrize("name", list(SHAPES))
def test_independence_test_level_under_independence(name: str) -> None:
    reps = 300
    rng = np.random.default_rng([11, len(name)])
    rejections = sum(
        cs.independence_test(*_independent_pair(name, rng, 40), n_permutations=200,
                             seed=r) <= ALPHA
        for r in range(reps))
    assert rejections / reps <= _limit(reps)


def test_independence_test_detects_a_square() -> None:
    reps = 50
    rng = np.random.default_rng(12)
    found = 0
    for r in range(reps):
        x = rng.normal(size=60)
        found += cs.independence_test(x, x**2 + 0.1 * rng.normal(size=60),
                                      n_permutations=200, seed=r) <= ALPHA
    assert found / reps >= 0.9


def test_permutation_and_bootstrap_are_reproducible_by_seed() -> None:
    rng = np.random.default_rng(13)
    x = rng.normal(size=(25, 3))
    y = x[:, 0] + rng.normal(size=25)
    assert cs.independence_test(x, y, seed=5) == cs.independence_test(x, y, seed=5)
    assert cs.independent(x, y, seed=5) == cs.independent(x, y, seed=5)
    assert cs.independent(x, y, seed=5).ci_high != cs.independent(x, y, seed=6).ci_high


# -- independent: the bootstrap statistic -----------------------------------------------
def _imputed(kernel: Any, idx: Any, self_pairs: bool) -> Any:
    """The position matrix of a resample: distinct prompts keep their kernel value; a
    pair of positions holding the same prompt gets that prompt's mean entry towards the
    resample's other prompts (the diagonal keeps 1 when ``self_pairs``)."""
    n = idx.size
    out = np.empty((n, n))
    for a in range(n):
        others = [kernel[idx[a], idx[c]] for c in range(n) if idx[c] != idx[a]]
        mean = sum(others) / len(others)
        for b in range(n):
            same = idx[a] == idx[b]
            out[a, b] = kernel[idx[a], idx[b]] if not same else (
                1.0 if a == b and self_pairs else mean)
    return out


def _trace_hsic(k: Any, l_: Any) -> float:
    n = k.shape[0]
    h = np.eye(n) - 1.0 / n
    return float(np.trace(k @ h @ l_ @ h)) / n**2


def test_resampled_statistic_leaves_out_duplicate_pairs() -> None:
    rng = np.random.default_rng(14)
    x, y = rng.normal(size=9), rng.normal(size=(9, 2))
    k, l_ = cs._kernel_pair(x, y)
    idx = np.array([0, 0, 0, 3, 4, 4, 6, 7, 8])
    w = np.bincount(idx, minlength=9).astype(float)[None, :]
    mk, ml = cs._row_means(w, w @ k), cs._row_means(w, w @ l_)
    biased, debiased = cs._resampled_hsic(w, mk, ml, w @ (k * l_))
    assert biased[0] == pytest.approx(_trace_hsic(_imputed(k, idx, True),
                                                  _imputed(l_, idx, True)), rel=1e-10)
    assert debiased[0] == pytest.approx(_trace_hsic(_imputed(k, idx, False),
                                                    _imputed(l_, idx, False)), rel=1e-10)
    ones = np.ones((1, 9))
    same = cs._resampled_hsic(ones, cs._row_means(ones, ones @ k),
                              cs._row_means(ones, ones @ l_), ones @ (k * l_))[0]
    assert same[0] == pytest.approx(cs.hsic(x, y), rel=1e-10)


def test_independent_passes_independent_outputs_at_300_prompts() -> None:
    rng = np.random.default_rng(15)
    decisions = [cs.independent(rng.normal(size=300), rng.lognormal(size=300), seed=r,
                                n_resamples=199) for r in range(6)]
    assert sum(outcome(d) == "pass" for d in decisions) >= 5
    assert all(d.method == "hsic-bootstrap" and d.alternative == "inside"
               for d in decisions)
    assert all((d.p_value <= ALPHA) == (d.ci_high < d.threshold) for d in decisions)


def test_independent_refutes_strongly_dependent_outputs() -> None:
    rng = np.random.default_rng(16)
    x = rng.normal(size=60)
    d = cs.independent(x, x + 0.2 * rng.normal(size=60))
    assert outcome(d) == "refuted"
    assert d.threshold < d.ci_low <= d.effect <= d.ci_high
    assert cs.independence_test(x, x + 0.2 * rng.normal(size=60)) <= ALPHA


def _normal_dependence(rho: float) -> float:
    """Population normalized HSIC of a standard bivariate normal, median bandwidth
    ``sqrt(2) z_0.75``: each kernel expectation is ``det(I + C / sigma^2)^(-1/2)`` for the
    covariance C of the differences."""
    s2 = 2 * float(sps.norm.ppf(0.75)) ** 2

    def term(cross: float) -> float:
        return float(np.linalg.det(np.eye(2) + np.array([[2, cross], [cross, 2]]) / s2)) ** -0.5

    def population(r: float) -> float:
        return term(2 * r) - 2 * term(r) + 1 / (1 + 2 / s2)

    return population(rho) / population(1.0)


@pytest.fixture(scope="module")
def correlated_truth() -> float:
    """The normalized HSIC of a bivariate normal with correlation 0.5: the closed form,
    which a sample of 3000 must agree with."""
    large = cs.normalized_hsic(*_correlated(np.random.default_rng(17), 3000, 0.5))
    truth = _normal_dependence(0.5)
    assert large == pytest.approx(truth, abs=0.03)  # its sd is about 0.01
    return truth


def _correlated(rng: np.random.Generator, n: int, rho: float) -> tuple[Any, Any]:
    x = rng.normal(size=n)
    return x, rho * x + math.sqrt(1 - rho**2) * rng.normal(size=n)


def test_independent_bounds_cover_the_true_dependence(correlated_truth: float) -> None:
    reps = 200
    rng = np.random.default_rng(18)
    high = low = 0
    for r in range(reps):
        d = cs.independent(*_correlated(rng, 80, 0.5), max_dependence=correlated_truth,
                           seed=r, n_resamples=499)
        high += d.ci_high >= correlated_truth  # missing it is a pass at the boundary
        low += d.ci_low <= correlated_truth
    floor = 1 - ALPHA - 3 * math.sqrt(ALPHA * (1 - ALPHA) / reps)
    assert high / reps >= floor
    assert low / reps >= floor


# -- minimality and sufficiency ---------------------------------------------------------
def test_minimality_p_is_the_upper_binomial_tail() -> None:
    randoms = np.arange(100, dtype=float)
    for score in (94.5, 96.0, 99.5, 50.0):  # 96.0 ties with one random score: not a win
        d = cs.minimal_against_random(score, randoms, q=0.9)
        k = int(math.ceil(score))
        assert d.effect == k / 100
        assert d.p_value == pytest.approx(_tail_at_least(k, 100, 0.9), rel=1e-9)
        assert (d.n, d.threshold, d.alternative, d.method) == (100, 0.9, "greater",
                                                               "binomial-minimality")
        assert _tail_at_least(k, 100, d.ci_low) == pytest.approx(ALPHA)
        if k == 100:
            assert d.ci_high == 1.0
        else:
            assert _tail_at_most(k, 100, d.ci_high) == pytest.approx(ALPHA)
    assert outcome(cs.minimal_against_random(50.0, randoms)) == "refuted"


def test_sufficiency_p_is_the_tail_test() -> None:
    randoms = np.arange(1.0, 201.0)
    for distance in (5.0, 14.5, 30.0, 150.0):  # ties (d(C) = d_rand) count for C
        d = cs.sufficient_against_random(distance, randoms, q=0.9)
        k = int(np.sum(distance <= randoms))
        assert d.effect == k / 200
        assert d.p_value == pytest.approx(_tail_at_least(k, 200, 0.9), rel=1e-9)
        expected = sps.binomtest(k, 200, 0.9, alternative="greater").pvalue
        assert d.p_value == pytest.approx(expected, rel=1e-12)
        assert d.method == "tail-test"
    assert outcome(cs.sufficient_against_random(150.0, randoms)) == "refuted"


def test_minimal_components_adjust_by_holm() -> None:
    randoms = np.arange(100, dtype=float)
    scores = {"a0.h1": 95.5, "a1.h3": 95.5, "m2": 95.5}  # k = 96 each
    raw = cs.minimal_against_random(95.5, randoms)
    assert raw.p_value <= ALPHA  # passes alone
    per, combined = cs.minimal_components(scores, randoms)
    assert all(d.p_value == pytest.approx(min(1.0, 3 * raw.p_value)) for d in per.values())
    assert all(outcome(d) != "pass" for d in per.values())
    assert combined.p_value == per["a0.h1"].p_value and outcome(combined) != "pass"
    assert combined.method == "binomial-minimality-all"
    per_none, combined_none = cs.minimal_components(scores, randoms, correction="none")
    assert outcome(combined_none) == "pass"


def test_the_circuit_is_minimal_only_when_every_component_passes() -> None:
    randoms = np.arange(1000, dtype=float)
    per, combined = cs.minimal_components({"good": 999.5, "weak": 700.5, "ok": 990.5},
                                          {"good": randoms, "weak": randoms, "ok": randoms})
    assert outcome(per["good"]) == "pass" and outcome(per["weak"]) == "refuted"
    assert combined.effect == per["weak"].effect and outcome(combined) == "refuted"
    assert combined.p_value == max(d.p_value for d in per.values())
    per, combined = cs.minimal_components({"good": 999.5, "ok": 990.5}, randoms)
    assert outcome(combined) == "pass" and combined.effect == per["ok"].effect


RANDOM_SCORES: dict[str, tuple[Callable[[np.random.Generator, int], Any], Any]] = {
    "lognormal": (lambda rng, n: rng.lognormal(0.0, 1.0, n), sps.lognorm(1.0)),
    "pareto1.5": (lambda rng, n: rng.pareto(1.5, n), sps.lomax(1.5)),  # numpy: Lomax
}


@pytest.mark.parametrize("dist", list(RANDOM_SCORES))
@pytest.mark.parametrize("size", [100, 1000])
def test_minimality_level_at_the_q_quantile(dist: str, size: int) -> None:
    reps, q = 2000, 0.9
    draw, law = RANDOM_SCORES[dist]
    score = float(law.ppf(q))  # P(m_v > m_rand) = q exactly
    rng = np.random.default_rng([19, size, len(dist)])
    passes = sum(cs.minimal_against_random(score, draw(rng, size), q=q).p_value <= ALPHA
                 for _ in range(reps))
    assert passes / reps <= _limit(reps)


@pytest.mark.parametrize("dist", list(RANDOM_SCORES))
def test_sufficiency_level_at_the_q_quantile(dist: str) -> None:
    reps, q, size = 2000, 0.9, 100
    draw, law = RANDOM_SCORES[dist]
    distance = float(law.ppf(1 - q))  # P(d(C) <= d_rand) = q exactly
    rng = np.random.default_rng([20, len(dist)])
    passes = sum(
        cs.sufficient_against_random(distance, draw(rng, size), q=q).p_value <= ALPHA
        for _ in range(reps))
    assert passes / reps <= _limit(reps)


# -- input errors -----------------------------------------------------------------------
GOOD = [0.1, 0.4, 0.2, 0.9]
ERRORS: list[tuple[Callable[[], object], str]] = [
    (lambda: cs.equivalence([], []), "circuit is empty"),
    (lambda: cs.equivalence(GOOD, [0.1, float("nan"), 0.2, 0.3]), "model contains 1 NaN"),
    (lambda: cs.equivalence(GOOD, GOOD[:3]), "paired per prompt, got 4 and 3"),
    (lambda: cs.equivalence([GOOD], [GOOD]), "must be 1-D"),
    (lambda: cs.equivalence(GOOD, GOOD, epsilon=0.5), r"epsilon must lie in \(0, 0.5\)"),
    (lambda: cs.equivalence(GOOD, GOOD, epsilon=0.0), "epsilon must lie in"),
    (lambda: cs.equivalence(GOOD, GOOD, epsilon=float("nan")), "epsilon must be a finite"),
    (lambda: cs.equivalence(GOOD, GOOD, alpha=0.5), "alpha must lie strictly"),
    (lambda: cs.hsic(GOOD, GOOD[:3]), "paired per prompt, got 4 and 3 rows"),
    (lambda: cs.hsic([1.0], [2.0]), "at least 2 prompts"),
    (lambda: cs.hsic(np.zeros((4, 2, 2)), GOOD), r"1-D \[n\] or 2-D \[n, d\]"),
    (lambda: cs.normalized_hsic(GOOD, [0.0, 1.0, float("inf"), 2.0]), "y contains 1 NaN"),
    (lambda: cs.independence_test(GOOD, GOOD, n_permutations=0), "n_permutations must be"),
    (lambda: cs.independent(GOOD, GOOD, n_resamples=10), "n_resamples=10 is too small"),
    (lambda: cs.independent(GOOD, GOOD, max_dependence=0.0), "max_dependence must lie"),
    (lambda: cs.minimal_against_random(1.0, GOOD, q=1.0), r"q must lie in \(0, 1\)"),
    (lambda: cs.minimal_against_random(1.0, GOOD, q=0.0), "q must lie in"),
    (lambda: cs.minimal_against_random(float("nan"), GOOD), "component_score must be a fin"),
    (lambda: cs.minimal_against_random(1.0, []), "random_scores is empty"),
    (lambda: cs.minimal_components({}, GOOD), "non-empty mapping"),
    (lambda: cs.minimal_components({"a": 1.0}, {"b": GOOD}), r"missing: \['a'\]"),
    (lambda: cs.minimal_components({"a": 1.0}, GOOD, correction="x"),  # type: ignore[arg-type]
     "unknown correction"),
    (lambda: cs.sufficient_against_random(1.0, [1.0, float("nan")]), "random_distances"),
    (lambda: cs.sufficient_against_random(1.0, GOOD, q=1.5), "q must lie in"),
]


@pytest.mark.parametrize(("call", "message"), ERRORS, ids=[m for _, m in ERRORS])
def test_bad_input_is_a_value_error_that_says_what_to_pass(call: Callable[[], object],
                                                           message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
