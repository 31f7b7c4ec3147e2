"""How often each decision rule passes a claim whose true effect sits exactly at the
threshold (the rule's real type-I error rate), by simulation, for a few per-prompt
distributions and prompt counts::

    python benchmarks/null_pass_rates.py                 # about 1 minute on 2 cores
    python benchmarks/null_pass_rates.py --reps 4000 --n 10 30 100

Every rule is meant to pass such a claim at most ``alpha`` (0.05) of the time. The
values are per-prompt effects for ``t``/``wilcoxon`` (``test_greater``, threshold 0)
and per-prompt (numerator, denominator) pairs for the recovery ratio of ``sufficient``
(``test_ratio`` with either method, R = 0.5, denominator ~ N(2, 1)). Noise
distributions, all with mean 0: normal; Student t with 3 degrees of freedom (heavy
tails); lognormal(0, 1) minus its mean (right-skewed) and its negative (left-skewed).
docs/decision-rules.md quotes the output.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import numpy as np

from mechcheck import stats

NOISE: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "normal": lambda rng, n: rng.normal(0.0, 1.0, n),
    "t3": lambda rng, n: rng.standard_t(3, n),
    "right-skewed": lambda rng, n: rng.lognormal(0.0, 1.0, n) - math.exp(0.5),
    "left-skewed": lambda rng, n: math.exp(0.5) - rng.lognormal(0.0, 1.0, n),
}


def _greater(test: str) -> Callable[[np.random.Generator, np.ndarray, int, int], bool]:
    def rule(rng: np.random.Generator, noise: np.ndarray, seed: int, b: int) -> bool:
        decision = stats.test_greater(noise, 0.0, test=test, seed=seed,  # type: ignore[arg-type]
                                      n_resamples=b)
        return decision.p_value <= 0.05

    return rule


def _ratio(method: str) -> Callable[[np.random.Generator, np.ndarray, int, int], bool]:
    def rule(rng: np.random.Generator, noise: np.ndarray, seed: int, b: int) -> bool:
        den = rng.normal(2.0, 1.0, noise.size)
        try:
            decision = stats.test_ratio(0.5 * den + noise, den, 0.5, seed=seed, n_resamples=b,
                                        method=method)  # type: ignore[arg-type]
        except ValueError:  # denominator of unstable sign: an error, not a pass
            return False
        return decision.p_value <= 0.05

    return rule


RULES = {
    "t": _greater("t"),
    "wilcoxon": _greater("wilcoxon"),
    "sufficient t": _ratio("fieller"),
    "sufficient bootstrap": _ratio("bootstrap"),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2000, help="simulated claims per cell")
    parser.add_argument("--n", type=int, nargs="+", default=[10, 30], help="prompts per claim")
    parser.add_argument("--resamples", type=int, default=999, help="bootstrap resamples")
    args = parser.parse_args(argv)
    se = math.sqrt(0.05 * 0.95 / args.reps)
    print(f"pass rate at the threshold, alpha 0.05, {args.reps} claims per cell "
          f"(simulation SE about {se:.3f})")
    print(f"{'rule':<22}{'noise':<14}" + "".join(f"n={n:<8}" for n in args.n))
    for name, rule in RULES.items():
        for noise_name, draw in NOISE.items():
            cells = []
            for n in args.n:
                rng = np.random.default_rng(12345)
                hits = sum(rule(rng, draw(rng, n), seed, args.resamples)
                           for seed in range(args.reps))
                cells.append(f"{hits / args.reps:<10.3f}")
            print(f"{name:<22}{noise_name:<14}" + "".join(cells))


if __name__ == "__main__":
    main()
