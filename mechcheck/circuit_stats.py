"""The hypothesis tests of Shi et al. (2024), "Hypothesis Testing the Circuit Hypothesis
in LLMs" (arXiv 2410.13032), as pure functions of per-prompt scores.

Every function that decides a claim returns a :class:`mechcheck.stats.Decision` in
mechcheck's convention: ``p_value <= alpha`` means the CLAIM HOLDS (a claim passes only
on evidence for it), and ``ci_low`` / ``ci_high`` are one-sided ``1 - alpha`` bounds of
the effect, so that :func:`mechcheck.stats.outcome` labels a failure "refuted" when the
bounds lie wholly on the wrong side of the threshold and "not supported" otherwise.
Where the paper's null hypothesis is the ideal itself (equivalence, minimality), the
tests here run in the other direction: the ideal is the alternative.

* :func:`equivalence`: the circuit's scores match the model's (exact binomial TOST on
  the sign of the per-prompt difference).
* :func:`hsic`, :func:`normalized_hsic`, :func:`independence_test`: the kernel
  dependence of the complement's output and the model's, and the permutation p-value
  of independence (small p = evidence of DEPENDENCE).
* :func:`independent`: the claim that the two are (nearly) independent: a bootstrap
  upper bound of the normalized HSIC below a margin.
* :func:`minimal_against_random`, :func:`minimal_components`: each component matters
  more than a random extra component (exact binomial test, Holm over the components).
* :func:`sufficient_against_random`: the circuit is closer to the model than a fraction
  ``q`` of random circuits of its size (the paper's tail test, Algorithm 1).

Only numpy and scipy are used; randomness comes only from ``np.random.default_rng(seed)``.
docs/circuit-tests.md states each test, its direction and its simulated level.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import replace

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special as _special
from scipy import stats as _st
from scipy.spatial import distance as _distance

from mechcheck.stats import Alternative, Correction, Decision, adjust

__all__ = [
    "equivalence",
    "hsic",
    "independence_test",
    "independent",
    "minimal_against_random",
    "minimal_components",
    "normalized_hsic",
    "sufficient_against_random",
]

_Floats = NDArray[np.float64]
_TIE_TOLERANCE = 1e-9  # relative to max(1, max |score|)
_BLOCK_ELEMENTS = 1 << 22  # permuted / resampled kernel entries held in memory at once


# -- equivalence -----------------------------------------------------------------------
def equivalence(
    circuit: ArrayLike, model: ArrayLike, *, epsilon: float = 0.1, alpha: float = 0.05
) -> Decision:
    """Test that the circuit behaves as the whole model: exact binomial TOST.

    With ``delta_i = circuit_i - model_i``, prompts with ``|delta_i| <= tol`` (``tol =
    1e-9 * max(1, max |score|)``) are ties and are dropped; among the ``m`` others the
    circuit wins ``k`` (``delta_i > tol``). The claim is H1: ``|P(delta > 0) - 1/2| <
    epsilon`` against H0: ``|P(delta > 0) - 1/2| >= epsilon``, decided by two one-sided
    exact binomial tests::

        p = max(P(X >= k | m, 1/2 - epsilon), P(X <= k | m, 1/2 + epsilon))

    The bounds are the one-sided ``1 - alpha`` Clopper-Pearson bounds of
    ``P(delta > 0)`` shifted by ``-1/2``, so ``p <= alpha`` iff both lie strictly inside
    ``(-epsilon, epsilon)``. If every prompt ties, the circuit's outputs are the model's:
    p = 0, effect 0 and bounds [0, 0].

    The paper (Shi et al. 2024) tests the other direction: its H0 is the equivalence
    ``|P(delta > 0) - 1/2| <= epsilon``, so rejecting it shows NON-equivalence and not
    rejecting it shows nothing. Its reference code also passes the mean score
    difference where the win fraction ``p_hat = k / m`` belongs; mechcheck uses ``p_hat``.

    Args:
        circuit: per-prompt scores of the circuit, 1-D, finite, non-empty.
        model: per-prompt scores of the whole model, paired with ``circuit``.
        epsilon: the margin, in (0, 1/2).
        alpha: significance level, in (0, 1/2).

    Returns:
        A Decision with ``effect = p_hat - 1/2``, ``threshold = epsilon``, alternative
        ``"inside"``, method ``"binomial-equivalence"`` and ``n`` the number of prompts
        (ties included; the binomial counts only the ``m`` untied ones).

    Raises:
        ValueError: on invalid scores, unpaired arrays, or epsilon or alpha out of range.
    """
    c = _scores(circuit, "circuit")
    m = _scores(model, "model")
    if c.size != m.size:
        raise ValueError(
            f"circuit and model must be paired per prompt, got {c.size} and {m.size} "
            "scores; pass one score of each per prompt")
    eps = _in_open_interval(epsilon, "epsilon", 0.0, 0.5, "a margin such as 0.1")
    _check_alpha(alpha)
    wins, trials = _wins(c, m)
    if trials == 0:
        return _decision(0.0, (0.0, 0.0, 0.0), c.size, eps, "inside",
                         "binomial-equivalence", 0, alpha)
    p = max(_at_least(wins, trials, 0.5 - eps), _at_most(wins, trials, 0.5 + eps))
    low, high = _clopper_pearson(wins, trials, alpha)
    return _decision(wins / trials - 0.5, (p, low - 0.5, high - 0.5), c.size, eps,
                     "inside", "binomial-equivalence", 0, alpha)


def _wins(circuit: _Floats, model: _Floats) -> tuple[int, int]:
    """``(k, m)``: prompts where the circuit scores higher, and prompts not tied."""
    delta = circuit - model
    scale = max(1.0, float(np.max(np.abs(circuit))), float(np.max(np.abs(model))))
    tol = _TIE_TOLERANCE * scale
    return int(np.count_nonzero(delta > tol)), int(np.count_nonzero(np.abs(delta) > tol))


def _at_least(k: int, m: int, p: float) -> float:
    """``P(X >= k)`` for ``X ~ Binomial(m, p)``."""
    return 1.0 if k <= 0 else float(_special.bdtrc(k - 1, m, p))


def _at_most(k: int, m: int, p: float) -> float:
    """``P(X <= k)`` for ``X ~ Binomial(m, p)``."""
    return 1.0 if k >= m else float(_special.bdtr(k, m, p))


def _clopper_pearson(k: int, m: int, alpha: float) -> tuple[float, float]:
    """One-sided ``1 - alpha`` exact (Clopper-Pearson) bounds of a binomial proportion:
    the p at which ``P(X >= k | p) = alpha`` and the one at which ``P(X <= k | p) =
    alpha`` (0 for k = 0, 1 for k = m)."""
    low = 0.0 if k == 0 else float(_special.betaincinv(k, m - k + 1, alpha))
    high = 1.0 if k == m else float(_special.betaincinv(k + 1, m - k, 1 - alpha))
    return low, high


# -- HSIC ------------------------------------------------------------------------------
def hsic(x: ArrayLike, y: ArrayLike) -> float:
    """The biased HSIC estimate ``tr(K H L H) / n^2`` with Gaussian kernels.

    ``K_ij = exp(-|x_i - x_j|^2 / (2 sigma_x^2))`` with ``sigma_x`` the median of the
    pairwise distances of x (1.0 if that median is 0), likewise L for y;
    ``H = I - 11'/n`` centres.

    Args:
        x: n observations, 1-D ``[n]`` or 2-D ``[n, d]``, finite, n >= 2.
        y: n observations paired with x, 1-D or 2-D.

    Returns:
        The estimate, >= 0 up to rounding.

    Raises:
        ValueError: on invalid or unpaired observations.
    """
    k, l_ = _kernel_pair(x, y)
    return _hsic(_centred(k), l_)


def normalized_hsic(x: ArrayLike, y: ArrayLike) -> float:
    """``HSIC(x, y) / sqrt(HSIC(x, x) * HSIC(y, y))``, in [0, 1]; 0 when x or y is
    constant (its centred kernel vanishes).

    Args:
        x: n observations, 1-D ``[n]`` or 2-D ``[n, d]``, finite, n >= 2.
        y: n observations paired with x, 1-D or 2-D.

    Returns:
        The normalized dependence: 0 for none, 1 when the two kernels agree.

    Raises:
        ValueError: on invalid or unpaired observations.
    """
    return _normalized(*_kernel_pair(x, y))


def independence_test(
    x: ArrayLike, y: ArrayLike, *, n_permutations: int = 1000, seed: int = 0
) -> float:
    """Permutation p-value of H0: x and y are independent (HSIC statistic).

    ``p = (1 + #{b : HSIC(x, y[perm_b]) >= HSIC(x, y)}) / (1 + n_permutations)``. A small
    p is evidence of DEPENDENCE (in the paper: the behaviour is not localized in the
    circuit); a large p is no evidence of independence, see :func:`independent`.

    Args:
        x: n observations, 1-D ``[n]`` or 2-D ``[n, d]``, finite, n >= 2.
        y: n observations paired with x, 1-D or 2-D.
        n_permutations: random permutations of y, >= 1.
        seed: seed of ``np.random.default_rng``.

    Returns:
        The p-value, in ``(0, 1]``.

    Raises:
        ValueError: on invalid or unpaired observations or ``n_permutations < 1``.
    """
    k, l_ = _kernel_pair(x, y)
    b = _count(n_permutations, "n_permutations", 1)
    kc = _centred(k)
    observed = float(np.sum(kc * l_))
    tol = 1e-10 * float(np.sum(np.abs(kc)))  # rounding of a sum reordered by permuting
    rng = np.random.default_rng(seed)
    exceed = 0
    for perms in _permutation_blocks(rng, k.shape[0], b):
        permuted = l_[perms[:, :, None], perms[:, None, :]]
        values = np.einsum("ij,bij->b", kc, permuted)
        exceed += int(np.count_nonzero(values >= observed - tol))
    return (1 + exceed) / (1 + b)


def independent(
    x: ArrayLike,
    y: ArrayLike,
    *,
    max_dependence: float = 0.1,
    alpha: float = 0.05,
    seed: int = 0,
    n_resamples: int = 999,
) -> Decision:
    """Test the claim that x and y are (nearly) independent: normalized HSIC below a margin.

    A non-significant :func:`independence_test` does not show independence, so the claim
    is H1: ``nHSIC < max_dependence`` against H0: ``nHSIC >= max_dependence``, decided
    by a bootstrap upper confidence bound. Each of the B resamples draws n prompts with
    replacement (x and y together) and computes the normalized HSIC on the original
    kernels, except that a pair of two resampled positions holding the same prompt is
    left out of the off-diagonal sums (it is replaced by the mean of that row's other
    off-diagonal entries): a duplicate pair has kernel value 1 in x and in y and would
    inflate the dependence. The identity resample gives back the sample's statistic.

    With ``k`` the largest count with ``(1 + k) / (B + 1) <= alpha``: ``ci_high`` is the
    (k+1)-th largest resampled statistic and ``p = (1 + #{b : nHSIC*_b >=
    max_dependence}) / (B + 1)``, so ``p <= alpha`` iff ``ci_high < max_dependence``.
    The sample statistic is biased upwards (the n self-pairs add about 1/n), which makes
    this bound conservative but would push a lower bound from the same resamples above
    the truth too often (covering it only 75-96% of the time instead of 95% in
    simulations). ``ci_low`` is therefore the (k+1)-th smallest of the resamples'
    DEBIASED statistic, in which a position's pair with itself is given the row mean as
    well (at most ``ci_high``). The Decision's alternative is ``"inside"``: since
    ``nHSIC >= 0``, ``|nHSIC| < m`` is ``nHSIC < m``, and the claim is "refuted" when
    ``ci_low >= max_dependence`` (the dependence is shown to exceed the margin).

    The permutation p-value of :func:`independence_test` is reported separately, as
    evidence of dependence; it does not enter this Decision.

    Args:
        x: n observations, 1-D ``[n]`` or 2-D ``[n, d]``, finite, n >= 2.
        y: n observations paired with x, 1-D or 2-D.
        max_dependence: the margin on the normalized HSIC, in (0, 1].
        alpha: significance level, in (0, 1/2).
        seed: seed of ``np.random.default_rng``.
        n_resamples: bootstrap resamples B; needs ``(B + 1) * alpha >= 1``.

    Returns:
        A Decision with ``effect`` the sample's normalized HSIC, ``threshold =
        max_dependence``, alternative ``"inside"`` and method ``"hsic-bootstrap"``.

    Raises:
        ValueError: on invalid observations or arguments.
    """
    k, l_ = _kernel_pair(x, y)
    margin = _in_open_interval(max_dependence, "max_dependence", 0.0, 1.0,
                               "a margin on the normalized HSIC such as 0.1",
                               closed_high=True)
    _check_alpha(alpha)
    b = _count(n_resamples, "n_resamples", 1)
    k_max = _max_exceedances(alpha, b)
    rng = np.random.default_rng(seed)
    biased, debiased = _bootstrap_normalized(k, l_, rng, b)
    high = float(np.sort(biased)[b - 1 - k_max])
    low = min(high, float(np.sort(debiased)[k_max]))
    rule = ((1 + int(np.count_nonzero(biased >= margin))) / (b + 1), low, high)
    return _decision(_normalized(k, l_), rule, k.shape[0], margin, "inside",
                     "hsic-bootstrap", seed, alpha)


def _kernel_pair(x: ArrayLike, y: ArrayLike) -> tuple[_Floats, _Floats]:
    a = _observations(x, "x")
    b = _observations(y, "y")
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"x and y must be paired per prompt, got {a.shape[0]} and {b.shape[0]} rows; "
            "pass one row of each per prompt")
    return _gaussian_kernel(a), _gaussian_kernel(b)


def _gaussian_kernel(z: _Floats) -> _Floats:
    """Gaussian kernel matrix, bandwidth the median pairwise distance (1.0 if it is 0)."""
    distances = _distance.pdist(z)
    sigma = float(np.median(distances))
    if not sigma > 0:
        sigma = 1.0
    kernel = _distance.squareform(np.exp(-(distances**2) / (2 * sigma**2)))
    np.fill_diagonal(kernel, 1.0)
    return np.asarray(kernel, dtype=np.float64)


def _centred(k: _Floats) -> _Floats:
    """``H K H``."""
    rows = k.mean(axis=1, keepdims=True)
    return np.asarray(k - rows - rows.T + k.mean(), dtype=np.float64)


def _hsic(kc: _Floats, l_: _Floats) -> float:
    """``tr(K H L H) / n^2`` from the centred K (``sum(HKH * L) = tr(HKH L)``)."""
    return float(np.sum(kc * l_)) / kc.shape[0] ** 2


def _normalized(k: _Floats, l_: _Floats) -> float:
    kc, lc = _centred(k), _centred(l_)
    return _ratio(_hsic(kc, l_), _hsic(kc, k), _hsic(lc, l_))


def _ratio(xy: float, xx: float, yy: float) -> float:
    if not (xx > 0 and yy > 0):
        return 0.0
    return min(1.0, max(0.0, xy / math.sqrt(xx * yy)))


def _permutation_blocks(
    rng: np.random.Generator, n: int, total: int
) -> Iterator[NDArray[np.int64]]:
    """Blocks of random permutations of ``range(n)``, ``total`` in all."""
    rows = max(1, _BLOCK_ELEMENTS // (n * n))
    for start in range(0, total, rows):
        count = min(rows, total - start)
        yield rng.permuted(np.tile(np.arange(n), (count, 1)), axis=1)


def _bootstrap_weights(rng: np.random.Generator, n: int, total: int) -> Iterator[_Floats]:
    """Blocks of bootstrap weights: ``w[b, i]`` = copies of prompt i in resample b."""
    rows = max(1, _BLOCK_ELEMENTS // (8 * n * n))
    for start in range(0, total, rows):
        count = min(rows, total - start)
        idx = rng.integers(0, n, size=(count, n))
        flat = (idx + n * np.arange(count)[:, None]).ravel()
        yield np.bincount(flat, minlength=count * n).reshape(count, n).astype(np.float64)


def _bootstrap_normalized(k: _Floats, l_: _Floats, rng: np.random.Generator,
                          total: int) -> tuple[_Floats, _Floats]:
    """Normalized HSIC of ``total`` bootstrap resamples, duplicate pairs left out:
    ``(biased, debiased)``, see :func:`_resampled_hsic`."""
    biased, debiased = [], []
    for w in _bootstrap_weights(rng, k.shape[0], total):
        kw, lw = w @ k, w @ l_
        mk, ml = _row_means(w, kw), _row_means(w, lw)
        xy = _resampled_hsic(w, mk, ml, w @ (k * l_))
        xx = _resampled_hsic(w, mk, mk, w @ (k * k))
        yy = _resampled_hsic(w, ml, ml, w @ (l_ * l_))
        biased.append(_ratios(xy[0], xx[0], yy[0]))
        debiased.append(_ratios(xy[1], xx[1], yy[1]))
    return np.concatenate(biased), np.concatenate(debiased)


def _ratios(xy: _Floats, xx: _Floats, yy: _Floats) -> _Floats:
    """:func:`_ratio` over arrays."""
    positive = (xx > 0) & (yy > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = xy / np.sqrt(np.where(positive, xx * yy, 1.0))
    return np.where(positive, np.clip(value, 0.0, 1.0), 0.0)


def _row_means(w: _Floats, kw: _Floats) -> _Floats:
    """``m_i``: the mean kernel entry of prompt i towards the other resampled prompts
    (``kw = w @ K`` for a kernel K with unit diagonal), 0 where there are none."""
    others = w.shape[1] - w
    safe = np.where(others > 0, others, 1.0)
    return np.asarray(np.where(others > 0, (kw - w) / safe, 0.0), dtype=np.float64)


def _resampled_hsic(w: _Floats, mk: _Floats, ml: _Floats,
                    gw: _Floats) -> tuple[_Floats, _Floats]:
    """Biased and debiased HSIC of resamples given as weights, duplicate pairs left out.

    For kernels K, L with unit diagonal, ``mk``, ``ml`` from :func:`_row_means` and
    ``gw = w @ (K * L)``. Over the n resampled positions, a pair of two positions holding
    the same prompt i is given the value ``mK_i`` (``mL_i``) instead of the kernel value
    1; the biased statistic keeps 1 on the diagonal (a position with itself), the
    debiased one gives the diagonal ``mK_i`` too. With ``P = sum_i w_i gw_i - sum_i w_i^2``
    (the pairs of distinct prompts) and the position row sums
    ``rK_i = 1 + (n - 1) mK_i`` (biased) or ``n mK_i`` (debiased)::

        n^2 A = n + P + sum_i w_i (w_i - 1) mK_i mL_i      (biased)
        n^2 A = P + sum_i w_i^2 mK_i mL_i                  (debiased)
        n^3 B = sum_i w_i rK_i rL_i,   n^4 C = (sum_i w_i rK_i) (sum_i w_i rL_i)
        HSIC = A - 2 B + C

    which is ``tr(K~ H L~ H) / n^2`` of those position matrices K~, L~. Weights all 1
    give back the sample's biased HSIC, and, debiased, that of K and L with the diagonal
    replaced by the rows' off-diagonal means (no self-pair bias).
    """
    n = w.shape[1]
    pairs = np.sum(w * gw, axis=1) - np.sum(w * w, axis=1)
    product = w * mk * ml
    results = []
    for a2, rk, rl in (
        (n + pairs + np.sum((w - 1) * product, axis=1), 1 + (n - 1) * mk, 1 + (n - 1) * ml),
        (pairs + np.sum(w * product, axis=1), n * mk, n * ml),
    ):
        b = np.sum(w * rk * rl, axis=1) / n**3
        c = np.sum(w * rk, axis=1) * np.sum(w * rl, axis=1) / n**4
        results.append(np.asarray(a2 / n**2 - 2 * b + c, dtype=np.float64))
    return results[0], results[1]


# -- minimality and sufficiency against random circuits -------------------------------
def minimal_against_random(
    component_score: float, random_scores: ArrayLike, *, q: float = 0.9, alpha: float = 0.05
) -> Decision:
    """Test that one component matters more than a random extra component.

    ``component_score`` is ``m_v = mean_i (s_i(C minus v) - s_i(C))^2``, the caller's
    statistic for knocking component v out of the circuit C; ``random_scores`` holds the
    same statistic for knocking one random added component out of each of N randomly
    inflated circuits. With ``k = #{j : m_v > m_rand_j}`` (ties count against v), the
    claim is H1: ``P(m_v > m_rand) > q``, decided by the exact binomial test
    ``binomtest(k, N, q, alternative="greater")``.

    The paper's reference code runs ``alternative="less"``: its H0 is the ideal
    (minimality), so rejecting it shows a component that is NOT needed.

    Args:
        component_score: m_v, a finite number.
        random_scores: the N statistics of the random components, 1-D, finite, N >= 1.
        q: the fraction of random components v must beat, in (0, 1).
        alpha: significance level, in (0, 1/2).

    Returns:
        A Decision with ``effect = k / N``, ``threshold = q``, alternative ``"greater"``,
        method ``"binomial-minimality"``, ``n = N`` and the one-sided ``1 - alpha``
        Clopper-Pearson bounds of ``P(m_v > m_rand)`` ("refuted": ``ci_high <= q``).

    Raises:
        ValueError: on invalid scores, or q or alpha out of range.
    """
    score = _finite(component_score, "component_score")
    randoms = _scores(random_scores, "random_scores")
    k = int(np.count_nonzero(score > randoms))
    return _against_random(k, randoms.size, q, alpha, "binomial-minimality")


def minimal_components(
    component_scores: Mapping[str, float],
    random_scores: ArrayLike | Mapping[str, ArrayLike],
    *,
    q: float = 0.9,
    alpha: float = 0.05,
    correction: Correction = "holm",
) -> tuple[dict[str, Decision], Decision]:
    """Test that every component of a circuit is needed (minimality).

    Each component is tested by :func:`minimal_against_random`; the p-values are then
    adjusted over the components (:func:`mechcheck.stats.adjust`, Holm by default; the
    paper's reference code leaves the correction out). The per-component Decisions
    carry the ADJUSTED p-value as ``p_value`` (their bounds stay the unadjusted
    ``1 - alpha`` ones). The circuit is minimal when every component passes, so the
    combined Decision is the intersection-union test: it is the Decision of the
    component with the largest adjusted p-value (among ties the one with the smallest
    effect, then the first in mapping order), with method
    ``"binomial-minimality-all"``; it passes iff every component passes.

    Args:
        component_scores: m_v for each component, by name; at least one.
        random_scores: the random components' statistics, shared by all components, or
            a mapping with one array per component name.
        q: the fraction of random components each must beat, in (0, 1).
        alpha: significance level, in (0, 1/2).
        correction: ``"holm"``, ``"bh"`` or ``"none"``.

    Returns:
        ``(per_component, combined)``.

    Raises:
        ValueError: on no components, invalid scores or arguments, or a mapping of
            random scores whose names differ from the components'.
    """
    if not isinstance(component_scores, Mapping) or not component_scores:
        raise ValueError(
            "component_scores must be a non-empty mapping {component name: m_v}")
    if correction not in ("holm", "bh", "none"):
        raise ValueError(f"unknown correction {correction!r}; use one of holm, bh, none")
    randoms = _randoms_by_component(component_scores, random_scores)
    raw = {name: minimal_against_random(score, randoms[name], q=q, alpha=alpha)
           for name, score in component_scores.items()}
    adjusted = adjust([d.p_value for d in raw.values()], correction)
    per = {name: replace(d, p_value=p) for (name, d), p in zip(raw.items(), adjusted)}
    worst = max(per, key=lambda name: (per[name].p_value, -per[name].effect))
    return per, replace(per[worst], method="binomial-minimality-all")


def sufficient_against_random(
    circuit_distance: float, random_distances: ArrayLike, *, q: float = 0.9,
    alpha: float = 0.05
) -> Decision:
    """Test that the circuit is closer to the model than most random circuits (tail test).

    ``circuit_distance`` is ``d(C) = mean_i (s_i(C) - s_i(M))^2``, computed by the caller;
    ``random_distances`` holds ``d`` of N random circuits of the same size. With
    ``k = #{j : d(C) <= d_rand_j}``, the claim is H1: ``P(d(C) <= d_rand) > q``, decided by
    ``binomtest(k, N, q, alternative="greater")`` (Algorithm 1 of the paper, the same
    direction as its code).

    Args:
        circuit_distance: d(C), a finite number.
        random_distances: d of the N random circuits, 1-D, finite, N >= 1.
        q: the fraction of random circuits C must beat, in (0, 1).
        alpha: significance level, in (0, 1/2).

    Returns:
        A Decision with ``effect = k / N``, ``threshold = q``, alternative ``"greater"``,
        method ``"tail-test"``, ``n = N`` and the one-sided ``1 - alpha``
        Clopper-Pearson bounds of ``P(d(C) <= d_rand)``.

    Raises:
        ValueError: on invalid distances, or q or alpha out of range.
    """
    distance = _finite(circuit_distance, "circuit_distance")
    randoms = _scores(random_distances, "random_distances")
    k = int(np.count_nonzero(distance <= randoms))
    return _against_random(k, randoms.size, q, alpha, "tail-test")


def _against_random(k: int, total: int, q: float, alpha: float, method: str) -> Decision:
    share = _in_open_interval(q, "q", 0.0, 1.0, "a fraction such as 0.9")
    _check_alpha(alpha)
    p = float(_st.binomtest(k, total, share, alternative="greater").pvalue)
    low, high = _clopper_pearson(k, total, alpha)
    return _decision(k / total, (p, low, high), total, share, "greater", method, 0, alpha)


def _randoms_by_component(
    components: Mapping[str, float], random_scores: ArrayLike | Mapping[str, ArrayLike]
) -> Mapping[str, ArrayLike]:
    if not isinstance(random_scores, Mapping):
        return {name: random_scores for name in components}
    if set(random_scores) != set(components):
        missing = sorted(set(components) - set(random_scores))
        extra = sorted(set(random_scores) - set(components))
        raise ValueError(
            "random_scores by component must name the same components as "
            f"component_scores (missing: {missing}, extra: {extra}); or pass one array "
            "shared by all")
    return random_scores


# -- validation and results ------------------------------------------------------------
def _scores(values: ArrayLike, name: str) -> _Floats:
    """Validate 1-D finite scores, at least one."""
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numbers, one per prompt: {exc}") from exc
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one score each), got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name} is empty; pass at least one score")
    _check_finite(x, name)
    return x


def _observations(values: ArrayLike, name: str) -> _Floats:
    """Validate ``[n]`` or ``[n, d]`` finite observations as ``[n, d]``, n >= 2."""
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numbers, one row per prompt: {exc}") from exc
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(
            f"{name} must be 1-D [n] or 2-D [n, d] with d >= 1, got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 prompts, got n={x.shape[0]}")
    _check_finite(x, name)
    return x


def _check_finite(x: _Floats, name: str) -> None:
    bad = np.argwhere(~np.isfinite(x))
    if bad.size:
        where = tuple(int(i) for i in bad[0])
        raise ValueError(
            f"{name} contains {len(bad)} NaN or infinite value(s), first at index "
            f"{where[0] if len(where) == 1 else where}; drop or fix those prompts")


def _finite(value: float, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be one finite number, got {value!r}") from exc
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


def _in_open_interval(value: float, name: str, low: float, high: float, hint: str,
                      closed_high: bool = False) -> float:
    number = _finite(value, name)
    inside = low < number <= high if closed_high else low < number < high
    if not inside:
        right = "]" if closed_high else ")"
        raise ValueError(f"{name} must lie in ({low:g}, {high:g}{right}, got {value!r}; "
                         f"pass {hint}")
    return number


def _check_alpha(alpha: float) -> None:
    if not (isinstance(alpha, int | float) and 0 < alpha < 0.5):
        raise ValueError(
            f"alpha must lie strictly between 0 and 0.5, got {alpha!r}; pass e.g. 0.05")


def _count(value: int, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _max_exceedances(alpha: float, total: int) -> int:
    """Largest k with ``(1 + k) / (total + 1) <= alpha``."""
    k = math.floor(alpha * (total + 1)) - 1
    while (k + 2) / (total + 1) <= alpha:
        k += 1
    while k >= 0 and (k + 1) / (total + 1) > alpha:
        k -= 1
    if k < 0:
        raise ValueError(
            f"n_resamples={total} is too small for alpha={alpha}: 1 / (n_resamples + 1) "
            f"must be <= alpha; pass n_resamples >= {math.ceil(1 / alpha) - 1}")
    return k


def _decision(effect: float, rule: tuple[float, float, float], n: int, threshold: float,
              alternative: Alternative, method: str, seed: int, alpha: float) -> Decision:
    p_value, ci_low, ci_high = rule
    return Decision(effect=float(effect), ci_low=float(ci_low), ci_high=float(ci_high),
                    confidence_level=1 - 2 * alpha, n=int(n), p_value=float(p_value),
                    threshold=float(threshold), alternative=alternative, method=method,
                    seed=int(seed), alpha=float(alpha))
