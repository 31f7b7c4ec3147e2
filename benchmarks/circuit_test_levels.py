"""Simulated level, power and coverage of the circuit tests of mechcheck.circuit_stats
(Shi et al. 2024), printed as the markdown tables that docs/circuit-tests.md quotes::

    python benchmarks/circuit_test_levels.py            # the docs tables, ~6 minutes
    python benchmarks/circuit_test_levels.py --scale 0.25   # a quick look

Level: how often a test passes a claim whose truth sits exactly at its null boundary;
meant to be at most alpha (0.05). A cell above ``alpha + 2 SE`` (SE the simulation's
standard error) is marked ``!``; a coverage below ``1 - alpha - 2 SE`` likewise. Every
cell draws from its own generator, seeded from the cell's name.

* equivalence: ``delta = sign * |draw|`` with ``P(sign = +1) = 1/2 +- epsilon`` exactly
  (epsilon 0.1), the draw normal, lognormal(0, 1) or Student t with 2 degrees of freedom.
  Power: ``P(delta > 0) = 1/2`` (a faithful circuit); refuted: ``P(delta > 0) = 0.1``.
* independence_test: x and y independent, both normal, lognormal or t2; power:
  ``y = x^2 + N(0, 0.1^2)``.
* independent: x, y with a known normalized HSIC (exact for the bivariate normals, else
  the mean of ten samples of 3000), the margin set to it: the pass rate is the level,
  the share of upper (lower) bounds above (below) it the coverage. Power: independent
  normal x, y, margin 0.1.
* minimality / sufficiency: the component's (circuit's) statistic at the q-quantile
  (1 - q quantile) of a lognormal or Pareto (Lomax, shape 1.5) random-score law, q 0.9.
"""

from __future__ import annotations

import argparse
import math
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import stats as sps

from mechcheck import circuit_stats as cs
from mechcheck.stats import outcome

ALPHA = 0.05
EPSILON = 0.1
Q = 0.9

Draw = Callable[[np.random.Generator, int], Any]
SHAPES: dict[str, Draw] = {
    "normal": lambda rng, n: rng.normal(0.0, 1.0, n),
    "lognormal": lambda rng, n: rng.lognormal(0.0, 1.0, n),
    "t2": lambda rng, n: rng.standard_t(2, n),
}
RANDOM_LAWS: dict[str, tuple[Draw, Any]] = {
    "lognormal": (lambda rng, n: rng.lognormal(0.0, 1.0, n), sps.lognorm(1.0)),
    "pareto 1.5": (lambda rng, n: rng.pareto(1.5, n), sps.lomax(1.5)),
}


def _rng(*name: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(name).encode()))


def _se(reps: int) -> float:
    return math.sqrt(ALPHA * (1 - ALPHA) / reps)


def _level(rate: float, reps: int) -> str:
    return f"{rate:.3f}" + (" !" if rate > ALPHA + 2 * _se(reps) else "")


def _coverage(rate: float, reps: int) -> str:
    return f"{rate:.3f}" + (" !" if rate < 1 - ALPHA - 2 * _se(reps) else "")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _scores(rng: np.random.Generator, n: int, p_win: float, shape: str) -> tuple[Any, Any]:
    model = rng.normal(0.0, 2.0, n)
    sign = np.where(rng.random(n) < p_win, 1.0, -1.0)
    return model + sign * (np.abs(SHAPES[shape](rng, n)) + 1e-6), model


def _exact_equivalence(n: int) -> float:
    """The pass probability at P(delta > 0) = 1/2 + epsilon (by symmetry also at
    1/2 - epsilon): the binomial mass of the win counts at which the TOST passes."""
    k = np.arange(n + 1)
    lower = sps.binom.sf(k - 1, n, 0.5 - EPSILON)
    upper = sps.binom.cdf(k, n, 0.5 + EPSILON)
    passing = np.maximum(lower, upper) <= ALPHA
    return float(np.sum(sps.binom.pmf(k[passing], n, 0.5 + EPSILON)))


def _exact_binomial(size: int) -> float:
    """The pass probability of ``binomtest(k, N, q, "greater")`` at k ~ Binomial(N, q)."""
    k = np.arange(size + 1)
    passing = sps.binom.sf(k - 1, size, Q) <= ALPHA
    return float(np.sum(sps.binom.pmf(k[passing], size, Q)))


def equivalence_tables(reps: int) -> str:
    sizes = [30, 100, 400]
    rows = []
    for shape in SHAPES:
        for side, label in ((1, "1/2 + eps"), (-1, "1/2 - eps")):
            cells = []
            for n in sizes:
                rng = _rng("equivalence", shape, side, n)
                passes = sum(cs.equivalence(*_scores(rng, n, 0.5 + side * EPSILON, shape),
                                            epsilon=EPSILON).p_value <= ALPHA
                             for _ in range(reps))
                cells.append(_level(passes / reps, reps))
            rows.append([shape, label, *cells])
    rows.append(["exact, any shape", "1/2 +- eps", *[f"{_exact_equivalence(n):.3f}"
                                                      for n in sizes]])
    level = _table(["delta", "P(delta > 0)", *[f"n = {n}" for n in sizes]], rows)
    power_sizes = [100, 200, 300, 400, 600]
    faithful, worse = [], []
    for n in power_sizes:
        rng = _rng("equivalence power", n)
        labels = [outcome(cs.equivalence(*_scores(rng, n, 0.5, "normal"))) for _ in range(reps)]
        faithful.append(f"{labels.count('pass') / reps:.3f}")
        rng = _rng("equivalence worse", n)
        labels = [outcome(cs.equivalence(*_scores(rng, n, 0.1, "normal"))) for _ in range(reps)]
        worse.append(f"{labels.count('refuted') / reps:.3f}")
    power = _table(["", *[f"n = {n}" for n in power_sizes]],
                   [["pass, P(delta > 0) = 1/2", *faithful],
                    ["refuted, P(delta > 0) = 0.1", *worse]])
    return (f"Equivalence, level ({reps} runs a cell, epsilon = {EPSILON}):\n\n{level}\n\n"
            f"Equivalence, power and refutation ({reps} runs a cell):\n\n{power}")


def independence_tables(reps: int, permutations: int) -> str:
    sizes = [20, 40, 100]
    rows = []
    for shape, draw in SHAPES.items():
        cells = []
        for n in sizes:
            rng = _rng("hsic", shape, n)
            rejections = sum(cs.independence_test(draw(rng, n), draw(rng, n),
                                                  n_permutations=permutations, seed=r) <= ALPHA
                             for r in range(reps))
            cells.append(_level(rejections / reps, reps))
        rows.append([shape, *cells])
    power = []
    for n in sizes:
        rng = _rng("hsic power", n)
        found = 0
        for r in range(reps):
            x = rng.normal(size=n)
            found += cs.independence_test(x, x**2 + 0.1 * rng.normal(size=n),
                                          n_permutations=permutations, seed=r) <= ALPHA
        power.append(f"{found / reps:.3f}")
    rows.append(["power, y = x^2 + noise", *power])
    table = _table(["x, y", *[f"n = {n}" for n in sizes]], rows)
    return (f"independence_test, rejection rate under independence and power ({reps} runs a "
            f"cell, {permutations} permutations):\n\n{table}")


def _correlated(rho: float) -> Draw:
    def draw(rng: np.random.Generator, n: int) -> Any:
        x = rng.normal(size=n)
        return x, rho * x + math.sqrt(1 - rho**2) * rng.normal(size=n)
    return draw


def _square(rng: np.random.Generator, n: int) -> Any:
    x = rng.normal(size=n)
    return x, x**2 + rng.normal(size=n)


def _t_pair(rng: np.random.Generator, n: int) -> Any:
    x = rng.standard_t(2, n)
    return x, 0.5 * x + rng.standard_t(2, n)


PAIRS: dict[str, Draw] = {
    "normal, rho 0.2": _correlated(0.2),
    "normal, rho 0.5": _correlated(0.5),
    "normal, rho 0.8": _correlated(0.8),
    "y = x^2 + N(0, 1)": _square,
    "t2, y = x/2 + t2": _t_pair,
}


def normal_dependence(rho: float) -> float:
    """The population normalized HSIC of a standard bivariate normal with correlation
    rho, Gaussian kernels at the population median distance ``sqrt(2) z_0.75``: each
    term of HSIC is ``E exp(-(U^2 + V^2) / (2 sigma^2)) = det(I + C / sigma^2)^(-1/2)``
    for the differences (U, V) with covariance C."""
    s2 = 2 * float(sps.norm.ppf(0.75)) ** 2

    def term(cross: float, diagonal: float = 2.0) -> float:
        c = np.array([[diagonal, cross], [cross, diagonal]])
        return float(np.linalg.det(np.eye(2) + c / s2)) ** -0.5

    def population_hsic(r: float) -> float:
        return term(2 * r) - 2 * term(r) + 1 / (1 + 2 / s2)

    return population_hsic(rho) / population_hsic(1.0)


def _true_dependence(name: str, draw: Draw) -> float:
    """The normalized HSIC of a pair: exact for the normal ones, else the mean of ten
    samples of 3000 (standard error about 0.003)."""
    if name.startswith("normal, rho"):
        return normal_dependence(float(name.split()[-1]))
    rng = _rng("truth", name)
    return float(np.mean([cs.normalized_hsic(*draw(rng, 3000)) for _ in range(10)]))


def independent_tables(reps: int, resamples: int) -> str:
    sizes = [30, 80, 200]
    rows = []
    for name, draw in PAIRS.items():
        truth = _true_dependence(name, draw)
        for n in sizes:
            rng = _rng("independent", name, n)
            passes = high = low = 0
            for r in range(reps):
                d = cs.independent(*draw(rng, n), max_dependence=truth, seed=r,
                                   n_resamples=resamples)
                passes += d.p_value <= ALPHA
                high += d.ci_high >= truth
                low += d.ci_low <= truth
            rows.append([name, f"{truth:.3f}", str(n), _level(passes / reps, reps),
                         _coverage(high / reps, reps), _coverage(low / reps, reps)])
    table = _table(["x, y", "nHSIC", "n", "pass rate (level)", "upper bound covers",
                    "lower bound covers"], rows)
    power_sizes = [30, 50, 100, 300]
    cells = []
    for n in power_sizes:
        rng = _rng("independent power", n)
        passes = sum(cs.independent(rng.normal(size=n), rng.normal(size=n), seed=r,
                                    n_resamples=resamples).p_value <= ALPHA
                     for r in range(reps))
        cells.append(f"{passes / reps:.3f}")
    power = _table(["", *[f"n = {n}" for n in power_sizes]],
                   [["pass, independent normal x, y, margin 0.1", *cells]])
    return (f"independent, at a margin equal to the true normalized HSIC ({reps} runs a "
            f"cell, B = {resamples}):\n\n{table}\n\nindependent, power ({reps} runs a "
            f"cell):\n\n{power}")


def random_tables(reps: int) -> str:
    sizes = [100, 1000, 10000]
    rows = []
    for test in ("minimality", "sufficiency"):
        for law_name, (draw, law) in RANDOM_LAWS.items():
            cells = []
            for size in sizes:
                rng = _rng(test, law_name, size)
                if test == "minimality":
                    score = float(law.ppf(Q))
                    passes = sum(cs.minimal_against_random(score, draw(rng, size), q=Q)
                                 .p_value <= ALPHA for _ in range(reps))
                else:
                    score = float(law.ppf(1 - Q))
                    passes = sum(cs.sufficient_against_random(score, draw(rng, size), q=Q)
                                 .p_value <= ALPHA for _ in range(reps))
                cells.append(_level(passes / reps, reps))
            rows.append([test, law_name, *cells])
    rows.append(["either", "exact, any law", *[f"{_exact_binomial(s):.3f}" for s in sizes]])
    table = _table(["test", "random scores", *[f"N = {s}" for s in sizes]], rows)
    return (f"Minimality and sufficiency, level at q = {Q} ({reps} runs a cell):\n\n{table}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every run count (default 1: the docs tables)")
    args = parser.parse_args(argv)

    def runs(count: int) -> int:
        return max(20, round(count * args.scale))

    print(equivalence_tables(runs(4000)), end="\n\n")
    print(independence_tables(runs(500), 200), end="\n\n")
    print(independent_tables(runs(400), 499), end="\n\n")
    print(random_tables(runs(4000)))


if __name__ == "__main__":
    main()
