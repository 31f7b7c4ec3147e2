"""Pre-registered statistical decision rules for per-prompt effects.

Each rule takes per-prompt values (1-D floats) and returns a :class:`Decision` whose
``ci_low`` / ``ci_high`` are the one-sided ``1 - alpha`` bounds of the effect (together
a ``1 - 2 * alpha`` interval). For the robust, t, TOST, bootstrap and ratio rules
``p <= alpha`` is the same event as "the bound lies past the threshold". Resampling
draws only from ``np.random.default_rng(seed)``, so results are bit-reproducible. The
``test_*`` functions carry ``__test__ = False`` so that pytest never collects them.

The default rule of each function is ``"robust"``: the classical t-based rule (t-test,
TOST, Fieller) and its studentised-bootstrap twin computed from resamples of only
``m = max(3, 3n // 10)`` prompts must both pass. The small resamples exaggerate the
skewness and tails that the sample shows, which keeps the rule at its level for skewed
and heavy-tailed per-prompt values where the t-test and the ordinary bootstrap-t pass
too often (benchmarks/null_pass_rates.py, docs/decision-rules.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special as _special
from scipy import stats as _st

__all__ = [
    "Alternative",
    "Correction",
    "Decision",
    "GreaterTest",
    "InsideTest",
    "Outcome",
    "RatioMethod",
    "adjust",
    "outcome",
    "test_greater",
    "test_inside",
    "test_ratio",
]

Alternative = Literal["greater", "inside"]
Outcome = Literal["pass", "not supported", "refuted"]
GreaterTest = Literal["robust", "t", "wilcoxon", "permutation", "bootstrap"]
InsideTest = Literal["robust", "t"]
Correction = Literal["holm", "bh", "none"]
RatioMethod = Literal["robust", "fieller", "bootstrap"]

_Floats = NDArray[np.float64]
_Gen = np.random.Generator
_Rule = tuple[float, float, float]  # (p_value, ci_low, ci_high)
_BLOCK_ELEMENTS = 1 << 20  # resampled values held in memory at once
_MIN_RESAMPLE_SD = 0.05  # robust rules leave out resamples with less sd, relative to the sample's
_EPS = float(np.finfo(np.float64).eps)


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The result of one decision rule applied to one claim.

    Attributes:
        effect: point estimate (mean of the values; ratio of means for the ratio rule).
        ci_low: one-sided ``1 - alpha`` lower confidence bound of the effect.
        ci_high: one-sided ``1 - alpha`` upper confidence bound of the effect.
        confidence_level: ``1 - 2 * alpha``, the level of ``[ci_low, ci_high]``.
        n: number of prompts.
        p_value: raw (unadjusted) p-value of the rule.
        threshold: X (greater), the margin m (inside) or R (ratio).
        alternative: ``"greater"`` (effect > threshold) or ``"inside"`` (|effect| < m).
        method: robust, t, wilcoxon, permutation, bootstrap (test_greater); robust-tost,
            tost (test_inside); robust-fieller, fieller, bootstrap-ratio (test_ratio).
        seed: seed of the random generator used for resampling.
        alpha: significance level of the rule.
    """

    effect: float
    ci_low: float
    ci_high: float
    confidence_level: float
    n: int
    p_value: float
    threshold: float
    alternative: Alternative
    method: str
    seed: int
    alpha: float


def outcome(decision: Decision, p_adjusted: float | None = None) -> Outcome:
    """Label a decision.

    Args:
        decision: the rule's result.
        p_adjusted: adjusted p-value (:func:`adjust`); None uses the raw one. NaN fails.

    Returns:
        ``"pass"`` iff p <= alpha; else ``"refuted"`` when the interval lies wholly on
        the wrong side (greater: ``ci_high <= threshold``; inside: ``ci_low >= m`` or
        ``ci_high <= -m``); else ``"not supported"``.
    """
    p = decision.p_value if p_adjusted is None else p_adjusted
    if p <= decision.alpha:
        return "pass"
    if decision.alternative == "greater":
        wrong_side = decision.ci_high <= decision.threshold
    else:
        m = decision.threshold
        wrong_side = decision.ci_low >= m or decision.ci_high <= -m
    return "refuted" if wrong_side else "not supported"


def test_greater(
    values: ArrayLike,
    threshold: float,
    *,
    alpha: float = 0.05,
    test: GreaterTest = "robust",
    seed: int = 0,
    n_resamples: int = 9999,
) -> Decision:
    """Test H0: E[d] <= threshold against H1: E[d] > threshold.

    * ``"robust"`` (default): passes only if both the t-test and a bootstrap-t from
      resamples of ``m = max(3, 3n // 10)`` prompts (at most n) pass: p is the larger
      of their p-values, ``ci_low`` the lower and ``ci_high`` the higher of their
      bounds, so ``p <= alpha`` iff ``ci_low > threshold``. The bootstrap-t part is as
      ``"bootstrap"`` below with ``t* = (mean*_m - mean) / (sd*_m / sqrt(m))``; the
      small resamples make it cautious when the values are skewed or heavy-tailed.
    * ``"t"``: one-sample t-test of ``values - threshold``; bounds mean -/+ t * se.
    * ``"wilcoxon"``: signed-rank test of ``values - threshold`` (zeros dropped; tests
      the mean only for symmetric data); bounds: percentile bootstrap of the mean.
    * ``"permutation"``: sign-flip test of the mean of ``values - threshold`` (exact
      when ``2**n <= n_resamples``, else p = (1 + #)/(B + 1)); bounds as wilcoxon.
    * ``"bootstrap"``: studentised bootstrap (bootstrap-t) of the mean:
      p = (1 + #{t* >= t_obs}) / (B + 1) with ``t* = (mean* - mean) / se*`` and
      ``t_obs = (mean - threshold) / se``; the bounds are ``mean - t* se`` at the order
      statistics of ``t*`` where that p crosses alpha, so ``p <= alpha`` iff
      ``ci_low > threshold``. (Percentile and BCa reject a true null too often; so does
      this rule with strongly skewed values, see ``"robust"``.)

    Values without spread (equal up to rounding) give p = 0 if the value exceeds the
    threshold else 1, and ``ci_low = ci_high = effect``.

    Args:
        values: per-prompt effects, 1-D, finite, at least 2.
        threshold: X in the claim "the effect exceeds X".
        alpha: significance level, in (0, 0.5).
        test: which rule to run.
        seed: seed of ``np.random.default_rng`` for the resampling rules.
        n_resamples: resamples B of the resampling rules; needs ``(B + 1) * alpha >= 1``.

    Raises:
        ValueError: on invalid values or arguments, or an unknown ``test``.
    """
    x = _as_values(values)
    threshold = _as_finite(threshold, "threshold")
    _check_alpha(alpha)
    if test not in _GREATER_RULES:
        raise ValueError(f"unknown test {test!r}; use one of {', '.join(_GREATER_RULES)}")
    if test != "t":
        _max_exceedances(alpha, n_resamples)
    effect = _mean(x)
    if _is_constant(x):
        rule = _constant_rule(effect, effect > threshold)
    else:
        rng = np.random.default_rng(seed)
        rule = _GREATER_RULES[test](x, threshold, alpha, rng, n_resamples)
    return _decision(rule, effect, x.size, threshold, "greater", test, seed, alpha)


def test_proportion(values: ArrayLike, threshold: float, *, alpha: float = 0.05,
                    seed: int = 0) -> Decision:
    """Exact one-sided binomial test that the success rate of 0/1 ``values`` (one per
    prompt, e.g. a probe's held-out correctness) exceeds ``threshold``, with one-sided
    Clopper-Pearson bounds: level at most alpha at every n and threshold, where a t-test
    on 0/1 values near 1 is not.

    Raises:
        ValueError: a value other than 0 or 1, fewer than 2 values, or a threshold
            outside (0, 1).
    """
    from scipy import stats as st

    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) < 2 or not np.isin(x, (0.0, 1.0)).all():
        raise ValueError("test_proportion takes at least 2 values, each 0 or 1")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold {threshold!r} must lie strictly between 0 and 1")
    n, k = len(x), int(x.sum())
    p = float(st.binomtest(k, n, threshold, alternative="greater").pvalue)
    low = float(st.beta.ppf(alpha, k, n - k + 1)) if k > 0 else 0.0
    high = float(st.beta.ppf(1 - alpha, k + 1, n - k)) if k < n else 1.0
    return Decision(effect=k / n, ci_low=low, ci_high=high, confidence_level=1 - 2 * alpha,
                    n=n, p_value=p, threshold=float(threshold), alternative="greater",
                    method="binomial", seed=seed, alpha=alpha)


def test_inside(
    values: ArrayLike,
    margin: float,
    *,
    alpha: float = 0.05,
    seed: int = 0,
    test: InsideTest = "robust",
    n_resamples: int = 9999,
) -> Decision:
    """Two one-sided tests (TOST) of H0: |E[d]| >= m against H1: -m < E[d] < m.

    * ``"t"`` (method ``tost``): p is the larger p-value of the t-tests of
      H0: E[d] <= -m and H0: E[d] >= m; the bounds are the ``1 - 2 * alpha`` t interval.
    * ``"robust"`` (default, method ``robust-tost``): the same two t-tests and the same
      two one-sided tests by the small-resample bootstrap-t of :func:`test_greater`'s
      ``"robust"`` rule (one set of resamples); p is the largest of the four p-values,
      ``ci_low`` the lower and ``ci_high`` the higher of the two rules' bounds.

    Either way the rule passes iff ``-m < ci_low`` and ``ci_high < m``. Values without
    spread give p = 0 if ``|value| < m`` else 1.

    Args:
        values: per-prompt effects, 1-D, finite, at least 2.
        margin: the equivalence margin m, > 0.
        alpha: significance level, in (0, 0.5).
        seed: seed of ``np.random.default_rng`` for the robust rule (recorded for both).
        test: ``"robust"`` or ``"t"``.
        n_resamples: resamples B of the robust rule; needs ``(B + 1) * alpha >= 1``.

    Raises:
        ValueError: on invalid values or arguments, ``margin <= 0`` or an unknown test.
    """
    x = _as_values(values)
    margin = _as_finite(margin, "margin")
    if margin <= 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    _check_alpha(alpha)
    if test not in ("robust", "t"):
        raise ValueError(f"unknown test {test!r} for an equivalence test; use robust or t")
    if test == "robust":
        _max_exceedances(alpha, n_resamples)
    effect = _mean(x)
    if _is_constant(x):
        rule = _constant_rule(effect, abs(effect) < margin)
    elif test == "robust":
        rng = np.random.default_rng(seed)
        rule = _robust_inside(x, margin, alpha, rng, n_resamples)
    else:
        above = _st.ttest_1samp(x, -margin, alternative="greater").pvalue
        below = _st.ttest_1samp(x, margin, alternative="less").pvalue
        rule = (float(max(above, below)), *_t_bounds(x, alpha))
    method = "robust-tost" if test == "robust" else "tost"
    return _decision(rule, effect, x.size, margin, "inside", method, seed, alpha)


def test_ratio(
    numerator: ArrayLike,
    denominator: ArrayLike,
    threshold: float,
    *,
    alpha: float = 0.05,
    seed: int = 0,
    n_resamples: int = 9999,
    method: RatioMethod = "robust",
) -> Decision:
    """Test H0: E[num] / E[den] <= R against H1: E[num] / E[den] > R.

    For recovery, ``num_i = patched_i - corrupt_i`` and ``den_i = clean_i - corrupt_i``;
    the effect is ``ratio = mean(num) / mean(den)``. Three rules:

    * ``fieller``: the ratio exceeds R exactly when ``num - R * den`` has a mean
      of the sign of ``mean(den)``, so p is the one-sided paired t-test of
      ``d_i = num_i - R * den_i``; the bounds are Fieller's: the R at which that test sits
      at ``alpha``, the roots of a quadratic. Exact for normal per-prompt values, and
      ``p <= alpha`` iff ``ci_low > R``. Needs no resampling (``seed`` is only recorded).
    * ``robust`` (default, method ``robust-fieller``): Fieller's rule and its bootstrap
      twin must both pass. The twin replaces the t quantiles by the order statistics of
      bootstrap-t pivots of the mean of ``d = num - R * den`` (sign of ``mean(den)``)
      from resamples of ``m = max(3, 3n // 10)`` prompts, as the robust rule of
      :func:`test_greater`: p = (1 + #{t* >= t(R)}) / (B + 1) with ``t(R)`` the paired
      t statistic of ``num - R * den``, and its bounds solve ``t(r) = t*`` (Fieller's
      quadratic). Where the denominator is too noisy for that quantile to bound the
      ratio, the twin's p is 1 and its bound infinite.
    * ``bootstrap``: a paired (prompts resampled jointly) studentised bootstrap with the
      delta-method error ``se = sd(num - ratio * den) / (sqrt(n) |mean(den)|)``,
      recomputed per resample: p = (1 + #{t* >= (ratio - R) / se}) / (B + 1) with
      ``t* = (ratio* - ratio) / se*``; the bounds come from the same order statistics.
      Less sensitive to skewed values, but it passes a ratio at R too often with normal
      or heavy-tailed values at small n (benchmarks/null_pass_rates.py).

    Proportional data give p = 0 if the ratio exceeds R else 1, and zero-width bounds.

    Args:
        numerator: per-prompt numerator values, 1-D, finite, at least 2.
        denominator: per-prompt denominator values, paired with ``numerator``.
        threshold: R in the claim "the ratio exceeds R".
        alpha: significance level, in (0, 0.5).
        seed: seed of ``np.random.default_rng`` for the bootstrap.
        n_resamples: bootstrap resamples B; needs ``(B + 1) * alpha >= 1``.
        method: ``fieller`` or ``bootstrap``.

    Raises:
        ValueError: on invalid values or arguments, unpaired arrays, or a denominator
            mean that is 0 or of unstable sign (its ``1 - 2 * alpha`` t interval
            contains 0, i.e. the Fieller interval of the ratio is unbounded).
    """
    num = _as_values(numerator, "numerator")
    den = _as_values(denominator, "denominator")
    if num.size != den.size:
        raise ValueError(
            "numerator and denominator must be paired per prompt, got "
            f"n={num.size} and n={den.size}"
        )
    threshold = _as_finite(threshold, "threshold")
    _check_alpha(alpha)
    if method not in ("robust", "fieller", "bootstrap"):
        raise ValueError(
            f"unknown ratio method {method!r}; use 'robust', 'fieller' or 'bootstrap'")
    _max_exceedances(alpha, n_resamples)
    _check_denominator(den, alpha)
    ratio = float(np.mean(num) / np.mean(den))
    residual = num - ratio * den
    se = float(np.std(residual, ddof=1) / (math.sqrt(num.size) * abs(np.mean(den))))
    tolerance = 64 * _EPS * (np.abs(num) + np.abs(ratio * den))
    if se == 0 or np.all(np.abs(residual) <= tolerance):  # num proportional to den
        rule = _constant_rule(ratio, ratio > threshold)
    elif method == "bootstrap":
        rng = np.random.default_rng(seed)
        pivots = _ratio_pivots(num, den, ratio, rng, n_resamples)
        rule = _studentized(ratio, se, pivots, threshold, alpha)
    else:
        rule = _fieller(num, den, threshold, alpha)
        if method == "robust":
            rng = np.random.default_rng(seed)
            rule = _both(rule, _robust_fieller(num, den, ratio, threshold, alpha, rng,
                                               n_resamples))
    return _decision(rule, ratio, num.size, threshold, "greater", _RATIO_NAMES[method], seed,
                     alpha)


def adjust(p_values: ArrayLike, method: Correction) -> list[float]:
    """Adjust the p-values of one family (one claim file) for multiple comparisons.

    Args:
        p_values: raw p-values in [0, 1], 1-D; NaN (an errored claim) is passed through
            and not counted in the family.
        method: ``"holm"`` (step-down, family-wise error), ``"bh"`` (Benjamini-Hochberg,
            false discovery rate) or ``"none"``.

    Returns:
        The adjusted p-values in input order.

    Raises:
        ValueError: on an unknown method or p-values outside [0, 1].
    """
    if method not in ("holm", "bh", "none"):
        raise ValueError(f"unknown correction {method!r}; use one of holm, bh, none")
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p_values must be 1-D, got shape {p.shape}")
    present = ~np.isnan(p)
    family = p[present]
    if np.any((family < 0) | (family > 1)):
        raise ValueError("p-values must lie in [0, 1] (or be NaN for errored claims)")
    adjusted = np.full(p.shape, np.nan)
    if family.size and method == "holm":
        adjusted[present] = _holm(family)
    elif family.size and method == "bh":
        adjusted[present] = _st.false_discovery_control(family, method="bh")
    else:
        adjusted[present] = family
    return [float(v) for v in adjusted]


test_greater.__test__ = False  # type: ignore[attr-defined]
test_inside.__test__ = False  # type: ignore[attr-defined]
test_ratio.__test__ = False  # type: ignore[attr-defined]


def _t_rule(x: _Floats, threshold: float, alpha: float, _rng: _Gen, _b: int) -> _Rule:
    p = float(_st.ttest_1samp(x, threshold, alternative="greater").pvalue)
    return (p, *_t_bounds(x, alpha))


def _wilcoxon_rule(x: _Floats, threshold: float, alpha: float, rng: _Gen, b: int) -> _Rule:
    p = float(_st.wilcoxon(x - threshold, alternative="greater").pvalue)
    return (p, *_percentile_bounds(x, alpha, rng, b))


def _permutation_rule(x: _Floats, threshold: float, alpha: float, rng: _Gen, b: int) -> _Rule:
    result = _st.permutation_test(
        (x - threshold,),
        np.mean,
        permutation_type="samples",  # with one sample: random sign flips
        vectorized=True,
        n_resamples=b,
        batch=max(1, _BLOCK_ELEMENTS // x.size),
        alternative="greater",
        rng=rng,
    )
    return (float(result.pvalue), *_percentile_bounds(x, alpha, rng, b))


def _bootstrap_rule(x: _Floats, threshold: float, alpha: float, rng: _Gen, b: int) -> _Rule:
    mean = float(np.mean(x))
    se = float(np.std(x, ddof=1)) / math.sqrt(x.size)
    means, ses = [], []
    for idx in _index_blocks(rng, x.size, b):
        sample = x[idx]
        means.append(sample.mean(axis=1))
        ses.append(sample.std(axis=1, ddof=1) / math.sqrt(x.size))
    pivots = _pivots(np.concatenate(means) - mean, np.concatenate(ses))
    return _studentized(mean, se, pivots, threshold, alpha)


def _robust_rule(x: _Floats, threshold: float, alpha: float, rng: _Gen, b: int) -> _Rule:
    mean, se = _mean_se(x)
    twin = _twin(mean, se, _subsample_pivots(x, rng, b), threshold, alpha)
    return _both(_t_greater(mean, se, x.size, threshold, alpha), twin)


def _robust_inside(x: _Floats, margin: float, alpha: float, rng: _Gen, b: int) -> _Rule:
    """TOST by the t-tests and by their small-resample bootstrap-t twins (one set of
    resamples): the largest of the four p-values and the wider bounds."""
    mean, se = _mean_se(x)
    pivots = _subsample_pivots(x, rng, b)
    above = _both(_t_greater(mean, se, x.size, -margin, alpha),
                  _twin(mean, se, pivots, -margin, alpha))
    # E[d] < m is E[-d] > -m: the mirrored rules, whose bounds mirror those above
    below = _both(_t_greater(-mean, se, x.size, -margin, alpha),
                  _twin(-mean, se, -pivots, -margin, alpha))
    return (max(above[0], below[0]), above[1], above[2])


def _mean_se(x: _Floats) -> tuple[float, float]:
    return float(np.mean(x)), float(np.std(x, ddof=1)) / math.sqrt(x.size)


def _t_greater(mean: float, se: float, n: int, threshold: float, alpha: float) -> _Rule:
    """The one-sided t-test and t bounds from the mean and its standard error (> 0)."""
    p = float(_special.stdtr(n - 1, -(mean - threshold) / se))  # P(T >= t)
    half = float(_special.stdtrit(n - 1, 1 - alpha)) * se
    return p, mean - half, mean + half


def _robust_fieller(
    num: _Floats, den: _Floats, ratio: float, threshold: float, alpha: float, rng: _Gen, b: int
) -> _Rule:
    """Fieller's rule with the t quantiles replaced by small-resample bootstrap-t pivots
    of ``d(r) = num - r * den``, the values whose mean a ratio ``r`` is about.

    The p-value takes the pivots at the claim's R. Each bound is the r at which the
    statistic ``t(r)`` equals the quantile of the pivots *at that r* (the same resampled
    prompts for every r), found by root-finding: the interval is the set of ratios around
    the estimate that the twin's test does not reject. (Pivots of
    ``num - ratio * den`` at the estimate alone mix the denominator's noise into them,
    which hides the skew of ``d``; that version passed too many ratios at R with
    left-skewed values.)"""
    sign = 1.0 if float(np.mean(den)) > 0 else -1.0
    moments = _paired_moments(num, den, rng, b)

    def pivots_at(r: float) -> _Floats:
        return sign * moments.pivots(r)

    def excess(r: float, upper: bool) -> float:
        """``t(r)`` minus the twin's critical pivot at r (its (k+1)-th largest, or
        smallest); positive where the twin's test rejects the ratio r (from above, or
        from below); nan when too few pivots are left."""
        pivots = pivots_at(r)
        kept = pivots.size
        if (kept + 1) * alpha < 1:
            return math.nan
        k = _max_exceedances(alpha, kept)
        at = kept - 1 - k if upper else k
        critical = float(np.partition(pivots, at)[at])
        d = num - r * den
        t = float(_pivots(np.array([sign * np.mean(d)]),
                          np.array([np.std(d, ddof=1) / math.sqrt(num.size)]))[0])
        return t - critical if upper else critical - t

    def bound(upper: bool, unbounded: float) -> float:
        """The ratio nearest the estimate at which the twin's test starts rejecting:
        bracketed by doubling steps away from the estimate (from one delta-method
        standard error), then found by Brent's method."""
        from scipy.optimize import brentq

        direction = -1.0 if upper else 1.0
        residual = num - ratio * den
        se = float(np.std(residual, ddof=1) / (math.sqrt(num.size) * abs(np.mean(den))))
        inside, width = ratio, max(se, 1e-9 * max(1.0, abs(ratio)))
        for _ in range(_BOUND_STEPS):
            outside = ratio + direction * width
            value = excess(outside, upper)
            if math.isnan(value):
                return unbounded
            if value > 0:
                break
            inside, width = outside, 2 * width
        else:
            return unbounded
        def signed(r: float) -> float:  # not rejected (excess <= 0) counts as negative
            value = excess(r, upper)
            return value if value > 0 else min(value, -1e-300)

        if signed(inside) > 0:  # even the estimate is rejected (degenerate values,
            return float(inside)  # e.g. a numerator that is rounding noise around 0)
        # negative at inside, positive at outside: the root is where the twin's p
        # crosses alpha
        root = brentq(signed, inside, outside, xtol=1e-13 * max(1.0, abs(inside)),
                      maxiter=200)
        # the last ratio the twin does not reject, on the estimate's side of the root
        return float(root) if excess(float(root), upper) <= 0 else \
            float(np.nextafter(root, ratio))

    pivots = pivots_at(threshold)
    kept = pivots.size
    if (kept + 1) * alpha < 1:  # almost every resample tied
        return 1.0, -math.inf, math.inf
    low, high = bound(True, -math.inf), bound(False, math.inf)
    if low == -math.inf:  # the quantile cannot bound the ratio from below
        return 1.0, low, high
    d = num - threshold * den
    observed = _pivots(np.array([sign * np.mean(d)]),
                       np.array([np.std(d, ddof=1) / math.sqrt(num.size)]))[0]
    return (1 + int(np.count_nonzero(pivots >= observed))) / (kept + 1), low, high


@dataclass(frozen=True, slots=True)
class _PairedMoments:
    """Per resample of ``m`` prompts (drawn once): the centred means of ``num`` and
    ``den`` and their (co)variances, so that the pivot of ``d(r) = num - r * den`` in
    every resample is a formula in r (``d`` is linear in r) rather than a new pass."""

    num: _Floats
    den: _Floats
    mean_num: _Floats
    mean_den: _Floats
    var_num: _Floats
    cov: _Floats
    var_den: _Floats
    m: int

    def pivots(self, r: float) -> _Floats:
        """:func:`_subsample_pivots` of ``num - r * den`` over the same resamples."""
        variance = np.maximum(self.var_num - 2 * r * self.cov + r * r * self.var_den, 0.0)
        sd = np.sqrt(variance)
        floor = _MIN_RESAMPLE_SD * float(np.std(self.num - r * self.den, ddof=1))
        kept = sd > floor
        return (self.mean_num[kept] - r * self.mean_den[kept]) / (sd[kept] / math.sqrt(self.m))


def _paired_moments(num: _Floats, den: _Floats, rng: _Gen, n_resamples: int) -> _PairedMoments:
    m = _subsample_size(num.size)
    parts: dict[str, list[_Floats]] = {k: [] for k in ("mn", "md", "vn", "c", "vd")}
    centred_num, centred_den = num - np.mean(num), den - np.mean(den)
    for idx in _index_blocks(rng, num.size, n_resamples, size=m):
        a, c = centred_num[idx], centred_den[idx]
        mean_a, mean_c = a.mean(axis=1), c.mean(axis=1)
        da, dc = a - mean_a[:, None], c - mean_c[:, None]
        parts["mn"].append(mean_a)
        parts["md"].append(mean_c)
        parts["vn"].append(np.einsum("ij,ij->i", da, da) / (m - 1))
        parts["c"].append(np.einsum("ij,ij->i", da, dc) / (m - 1))
        parts["vd"].append(np.einsum("ij,ij->i", dc, dc) / (m - 1))
    joined = {k: np.concatenate(v) for k, v in parts.items()}
    return _PairedMoments(num=num, den=den, mean_num=joined["mn"], mean_den=joined["md"],
                          var_num=joined["vn"], cov=joined["c"], var_den=joined["vd"], m=m)


_BOUND_STEPS = 64  # doublings of the bracket from one standard error: beyond, unbounded


_GreaterRule = Callable[[_Floats, float, float, _Gen, int], _Rule]
_GREATER_RULES: dict[str, _GreaterRule] = {
    "robust": _robust_rule,
    "t": _t_rule,
    "wilcoxon": _wilcoxon_rule,
    "permutation": _permutation_rule,
    "bootstrap": _bootstrap_rule,
}
_RATIO_NAMES = {"robust": "robust-fieller", "fieller": "fieller", "bootstrap": "bootstrap-ratio"}


def _as_values(values: ArrayLike, name: str = "values") -> _Floats:
    """Validate per-prompt values: float64, 1-D, finite, at least 2 entries."""
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numbers, one per prompt: {exc}") from exc
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per prompt), got shape {x.shape}")
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise ValueError(
            f"{name} contains {bad.size} NaN or infinite value(s), first at index "
            f"{bad[0]} ({x[bad[0]]}); drop or fix those prompts"
        )
    if x.size < 2:
        raise ValueError(f"need at least 2 prompts, got n={x.size}")
    return x


def _as_finite(value: float, name: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must lie strictly between 0 and 0.5, got {alpha!r}")


def _max_exceedances(alpha: float, n_resamples: int) -> int:
    """Largest count k with (1 + k) / (B + 1) <= alpha, exactly in floating point."""
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int | np.integer):
        raise ValueError(f"n_resamples must be an integer, got {n_resamples!r}")
    total = int(n_resamples) + 1
    k = math.floor(alpha * total) - 1
    while (k + 2) / total <= alpha:
        k += 1
    while k >= 0 and (k + 1) / total > alpha:
        k -= 1
    if k < 0:
        raise ValueError(
            f"n_resamples={n_resamples} is too small for alpha={alpha}: the smallest "
            "attainable p-value, 1 / (n_resamples + 1), must be <= alpha"
        )
    return k


def _check_denominator(den: _Floats, alpha: float) -> None:
    mean = float(np.mean(den))
    se = float(np.std(den, ddof=1)) / math.sqrt(den.size)
    if mean == 0 or abs(mean) <= _st.t.ppf(1 - alpha, den.size - 1) * se:
        raise ValueError(
            "the clean and corrupt runs do not differ on the metric (mean of the "
            f"denominator = {mean:.3g}, its sign is not stable at alpha={alpha}), so "
            "recovery is undefined; use a stronger corruption or another metric"
        )


def _is_constant(x: _Floats) -> bool:
    """True when the values have no usable spread (equal up to rounding)."""
    negligible = float(np.ptp(x)) <= 32 * _EPS * float(np.max(np.abs(x)))
    return negligible or float(np.std(x, ddof=1)) == 0.0


def _mean(x: _Floats) -> float:
    """The mean, kept inside [min, max] so that equal values give exactly that value."""
    return float(np.clip(np.mean(x), np.min(x), np.max(x)))


def _constant_rule(value: float, passes: bool) -> _Rule:
    return (0.0 if passes else 1.0, value, value)


def _t_bounds(x: _Floats, alpha: float) -> tuple[float, float]:
    mean = float(np.mean(x))
    se = float(np.std(x, ddof=1)) / math.sqrt(x.size)
    half = float(_st.t.ppf(1 - alpha, x.size - 1)) * se
    return mean - half, mean + half


def _index_blocks(
    rng: _Gen, n: int, n_resamples: int, size: int | None = None
) -> Iterator[NDArray[np.int64]]:
    """Bootstrap index matrices: ``(rows, size)`` blocks (size n by default) of indices
    into n values, holding B resamples in all."""
    width = n if size is None else size
    rows = max(1, _BLOCK_ELEMENTS // width)
    for start in range(0, n_resamples, rows):
        yield rng.integers(0, n, size=(min(rows, n_resamples - start), width))


def _subsample_size(n: int) -> int:
    """Prompts per resample of the robust rules: ``3n // 10``, at least 3, at most n."""
    return min(n, max(3, 3 * n // 10))


def _subsample_pivots(x: _Floats, rng: _Gen, n_resamples: int) -> _Floats:
    """Bootstrap-t pivots ``(mean*_m - mean) / (sd*_m / sqrt(m))`` of B resamples of
    ``m = _subsample_size(n)`` values drawn with replacement, leaving out the resamples
    whose ``sd*_m`` is at most a twentieth of the sample's: those drew (almost) only tied
    or clustered values, and their pivot, unbounded as the spread vanishes, says nothing
    about the mean. Continuous values give hardly any of them."""
    m = _subsample_size(x.size)
    centred = x - np.mean(x)
    floor = _MIN_RESAMPLE_SD * float(np.std(x, ddof=1))
    blocks = []
    for idx in _index_blocks(rng, x.size, n_resamples, size=m):
        sample = centred[idx]
        mean = sample.mean(axis=1)
        deviation = sample - mean[:, None]
        sd = np.sqrt(np.einsum("ij,ij->i", deviation, deviation) / (m - 1))
        kept = sd > floor
        blocks.append(mean[kept] / (sd[kept] / math.sqrt(m)))
    return np.concatenate(blocks)


def _twin(estimate: float, se: float, pivots: _Floats, null: float, alpha: float) -> _Rule:
    """:func:`_studentized` on the kept pivots; p = 1 and unbounded when too few are left
    for a p-value of ``alpha`` (almost every resample tied)."""
    if (pivots.size + 1) * alpha < 1:
        return 1.0, -math.inf, math.inf
    return _studentized(estimate, se, pivots, null, alpha)


def _both(first: _Rule, second: _Rule) -> _Rule:
    """The rule that passes only when both pass: the larger p, the wider bounds."""
    return (max(first[0], second[0]), min(first[1], second[1]), max(first[2], second[2]))


def _percentile_bounds(
    x: _Floats, alpha: float, rng: _Gen, n_resamples: int
) -> tuple[float, float]:
    blocks = _index_blocks(rng, x.size, n_resamples)
    means = np.concatenate([x[idx].mean(axis=1) for idx in blocks])
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def _pivots(difference: _Floats, se: _Floats) -> _Floats:
    """``difference / se``; where se is 0: +-inf, or 0 for a zero difference."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = difference / se
    degenerate = np.where(difference == 0, 0.0, np.copysign(np.inf, difference))
    return np.where(se > 0, ratio, degenerate)


def _ratio_pivots(num: _Floats, den: _Floats, ratio: float, rng: _Gen, n_resamples: int) -> _Floats:
    """Bootstrap-t pivots of the ratio of means; +inf where a resample is undefined."""
    blocks = []
    for idx in _index_blocks(rng, num.size, n_resamples):
        num_s, den_s = num[idx], den[idx]
        mean_den = den_s.mean(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = num_s.mean(axis=1) / mean_den
            residual = num_s - ratios[:, None] * den_s
            se = residual.std(axis=1, ddof=1) / (math.sqrt(num.size) * np.abs(mean_den))
            pivots = _pivots(ratios - ratio, se)
        blocks.append(np.where(mean_den != 0, pivots, np.inf))
    return np.nan_to_num(np.concatenate(blocks), nan=np.inf)


def _fieller(num: _Floats, den: _Floats, threshold: float, alpha: float) -> _Rule:
    """p-value of the paired t-test of ``num - R * den`` and Fieller's one-sided bounds.

    The bounds are the roots r of ``(mean(num) - r mean(den))^2 = q var(num - r den)``
    with ``q = t^2 / n`` (t the ``1 - alpha`` quantile with n - 1 degrees of freedom):
    the ratios at which the one-sided test sits exactly at ``alpha``. The caller has
    checked that ``mean(den)`` is significantly non-zero, so the leading coefficient is
    positive and the interval is bounded.
    """
    n = num.size
    d = num - threshold * den
    sd = float(np.std(d, ddof=1))
    sign = 1.0 if float(np.mean(den)) > 0 else -1.0
    if sd == 0:
        p = 0.0 if sign * float(np.mean(d)) > 0 else 1.0
    else:
        p = float(_st.t.sf(sign * float(np.mean(d)) / (sd / math.sqrt(n)), n - 1))
    a, b, root = _fieller_quadratic(num, den, float(_st.t.ppf(1 - alpha, n - 1)) ** 2 / n)
    return p, (b - root) / a, (b + root) / a


def _fieller_quadratic(num: _Floats, den: _Floats, q: float) -> tuple[float, float, float]:
    """``a``, ``b`` and ``sqrt(b^2 - a c)`` of ``a r^2 - 2 b r + c = 0``, the ratios r at
    which the paired t statistic of ``num - r * den`` equals ``+-sqrt(q n)``."""
    mx, my = float(np.mean(num)), float(np.mean(den))
    cov = np.cov(num, den, ddof=1)
    sxx, sxy, syy = float(cov[0, 0]), float(cov[0, 1]), float(cov[1, 1])
    a = my * my - q * syy
    b = mx * my - q * sxy
    c = mx * mx - q * sxx
    return a, b, math.sqrt(max(b * b - a * c, 0.0))


def _fieller_bound(num: _Floats, den: _Floats, pivot: float, unbounded: float) -> float:
    """The ratio r at which ``sign(mean(den)) * t(num - r * den)`` equals ``pivot``. That
    statistic goes from ``+A`` (r -> -inf) to ``-A`` (r -> +inf), ``A = sqrt(n)
    |mean(den)| / sd(den)``, with at most one turning point, so it crosses a level
    inside (-A, A) exactly once; ``unbounded`` for any other level."""
    if not math.isfinite(pivot):
        return unbounded
    a, b, root = _fieller_quadratic(num, den, pivot * pivot / num.size)
    if a <= 0:
        return unbounded
    return (b - math.copysign(root, pivot)) / a


def _studentized(estimate: float, se: float, pivots: _Floats, null: float, alpha: float) -> _Rule:
    """p-value and bounds of a bootstrap-t rule from the resampled pivots ``t*``."""
    b = pivots.size
    k = _max_exceedances(alpha, b)
    ordered = np.sort(pivots)
    low = estimate - float(ordered[b - 1 - k]) * se  # (k+1)-th largest pivot
    high = estimate - float(ordered[k]) * se  # (k+1)-th smallest pivot
    observed = (estimate - null) / se
    p = (1 + int(np.count_nonzero(pivots >= observed))) / (b + 1)
    return p, low, high


def _holm(p: _Floats) -> _Floats:
    order = np.argsort(p, kind="stable")
    scaled = (p.size - np.arange(p.size)) * p[order]
    adjusted = np.empty(p.size)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return adjusted


def _decision(
    rule: _Rule,
    effect: float,
    n: int,
    threshold: float,
    alternative: Alternative,
    method: str,
    seed: int,
    alpha: float,
) -> Decision:
    p_value, ci_low, ci_high = rule
    return Decision(
        effect=effect,
        ci_low=ci_low,
        ci_high=ci_high,
        confidence_level=1 - 2 * alpha,
        n=int(n),
        p_value=float(p_value),
        threshold=threshold,
        alternative=alternative,
        method=method,
        seed=int(seed),
        alpha=float(alpha),
    )
