"""A one-sided sign test of the median, with a distribution-free interval.

H0: median(values) <= threshold against H1: median(values) > threshold.  The
p-value is exact: with ``m`` values different from the threshold, ``s`` of them above
it, ``p = P(Binomial(m, 1/2) >= s)``.  The bounds of the median are order statistics:
the lower bound is the ``k``-th smallest value for the largest ``k`` with
``P(Binomial(n, 1/2) <= k - 1) <= alpha`` (the upper one mirrors it), so each holds with
probability at least ``1 - alpha`` whatever the distribution.  It tests the median,
not the mean: a few prompts with very large effects do not carry it.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from mechcheck.stats import Decision

__all__ = ["median_bounds", "sign_test"]


def median_bounds(values: np.ndarray, alpha: float) -> tuple[float, float]:
    """One-sided ``1 - alpha`` lower and upper confidence bounds of the median.

    Raises:
        ValueError: when there are too few values for any bound at this ``alpha``.
    """
    x = np.sort(values)
    n = x.size
    # the largest k with P(B <= k - 1) <= alpha, B ~ Binomial(n, 1/2)
    k = int(stats.binom.ppf(alpha, n, 0.5))
    if stats.binom.cdf(k, n, 0.5) > alpha:
        k -= 1
    k += 1  # now P(B <= k - 1) <= alpha
    if k < 1:
        need = int(np.ceil(np.log(alpha) / np.log(0.5)))
        raise ValueError(f"the sign test needs at least {need} prompts at alpha={alpha:g}, "
                         f"got {n}")
    return float(x[k - 1]), float(x[n - k])


def sign_test(values: np.ndarray, threshold: float, *, alpha: float, seed: int,
              n_resamples: int) -> Decision:
    """Decide "the median effect exceeds ``threshold``" (``seed`` and ``n_resamples``
    are recorded but unused: the test is exact).

    Raises:
        ValueError: for values that are not finite numbers, fewer than 2 of them, or
            too few for the bounds at this ``alpha``.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size < 2 or not np.isfinite(x).all():
        raise ValueError("the sign test needs at least 2 finite values, one per prompt")
    diff = x - threshold
    above = int((diff > 0).sum())
    informative = int((diff != 0).sum())
    p_value = float(stats.binom.sf(above - 1, informative, 0.5)) if informative else 1.0
    low, high = median_bounds(x, alpha)
    return Decision(effect=float(np.median(x)), ci_low=low, ci_high=high,
                    confidence_level=1 - 2 * alpha, n=int(x.size), p_value=p_value,
                    threshold=float(threshold), alternative="greater", method="sign",
                    seed=int(seed), alpha=float(alpha))
