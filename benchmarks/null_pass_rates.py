"""How often each decision rule passes a claim whose true effect sits exactly at the
null boundary (the rule's real type-I error rate), by simulation, for every rule and
every ``test:`` choice, four per-prompt distributions and several prompt counts::

    python benchmarks/null_pass_rates.py --jobs 2 --markdown   # the docs table, ~1 hour
    python benchmarks/null_pass_rates.py --reps 400 --resamples 999 --n 20 50   # minutes
    python benchmarks/null_pass_rates.py --shift 0.5 --rules "necessary robust" "necessary t"

Every rule is meant to pass such a claim at most ``alpha`` (0.05) of the time; a cell
above ``alpha + 2 SE`` (SE the simulation's standard error) is marked ``!``. Claims
and their values, all at alpha 0.05 and at the default resample count (9999):

* ``necessary <test>``: ``test_greater(d, 0)`` with ``d`` the noise (mean 0), for
  each ``test:`` (robust is the default).
* ``negligible <test>``: ``test_inside(3 + noise, 3)``: the mean exactly at the margin.
  The rules are mirror-symmetric, so right-skewed noise at ``+m`` is also left-skewed
  noise at ``-m``.
* ``sufficient <test>``: ``test_ratio(0.5 * den + noise, den, 0.5)`` with
  ``den ~ N(2, 1)``: the recovery exactly at R = 0.5 (``t`` is Fieller's rule). A
  denominator of unstable sign is an error, counted as not passing.
* ``holm`` / ``bh``: a file of 5 ``necessary`` claims (default rule, one seed as in a
  claim file), each on its own noise and all at the null: the share of files in which
  any claim passes after the correction (family-wise error; with only true nulls, BH's
  false discovery rate is the same number).

Noise, all with mean 0: normal; Student t with 3 degrees of freedom (heavy tails);
lognormal(0, 1) minus its mean (right-skewed, skewness 6.2) and its negative
(left-skewed). Each cell draws from its own generator, so a cell's number does not
depend on ``--jobs`` or on which other cells run. docs/decision-rules.md quotes the
``--markdown`` output.

``--shift S`` moves the true value S noise standard deviations past the null boundary
(the mean to ``S * sd``, the mean change to ``3 - S * sd``, the recovery to
``0.5 + S * sd / 2``): the table is then the rules' power.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from mechcheck import stats

ALPHA = 0.05
FAMILY = 5  # claims per file for the multiple-comparison rows
MARGIN = 3.0  # negligible: the true mean sits at +MARGIN
_E = math.exp(0.5)  # mean of lognormal(0, 1)
_SD_LOGNORMAL = math.sqrt((math.e - 1) * math.e)

Draw = Callable[[np.random.Generator, int], np.ndarray]
NOISE: dict[str, Draw] = {
    "normal": lambda rng, n: rng.normal(0.0, 1.0, n),
    "t3": lambda rng, n: rng.standard_t(3, n),
    "right-skewed": lambda rng, n: rng.lognormal(0.0, 1.0, n) - _E,
    "left-skewed": lambda rng, n: _E - rng.lognormal(0.0, 1.0, n),
}
SD = {"normal": 1.0, "t3": math.sqrt(3.0), "right-skewed": _SD_LOGNORMAL,
      "left-skewed": _SD_LOGNORMAL}

# One simulated claim (or file): (generator, noise, n, seed, resamples, shift) -> passed?
# ``shift`` is the distance of the true value past the null boundary, in units of the
# noise (its SD times --shift).
Case = Callable[[np.random.Generator, Draw, int, int, int, float], bool]


def _necessary(test: str) -> Case:
    def case(rng: np.random.Generator, draw: Draw, n: int, seed: int, b: int,
             shift: float) -> bool:
        decision = stats.test_greater(draw(rng, n) + shift, 0.0, test=test,  # type: ignore[arg-type]
                                      seed=seed, n_resamples=b)
        return decision.p_value <= ALPHA

    return case


def _negligible(test: str) -> Case:
    def case(rng: np.random.Generator, draw: Draw, n: int, seed: int, b: int,
             shift: float) -> bool:
        values = MARGIN + draw(rng, n) - shift
        decision = stats.test_inside(values, MARGIN, test=test,  # type: ignore[arg-type]
                                     seed=seed, n_resamples=b)
        return decision.p_value <= ALPHA

    return case


def _sufficient(method: str) -> Case:
    def case(rng: np.random.Generator, draw: Draw, n: int, seed: int, b: int,
             shift: float) -> bool:
        den = rng.normal(2.0, 1.0, n)
        num = (0.5 + shift / 2.0) * den + draw(rng, n)  # mean(den) = 2: shift / 2 per unit
        try:
            decision = stats.test_ratio(num, den, 0.5, seed=seed, n_resamples=b,
                                        method=method)  # type: ignore[arg-type]
        except ValueError:  # denominator of unstable sign: an error, not a pass
            return False
        return decision.p_value <= ALPHA

    return case


def _family(correction: str) -> Case:
    def case(rng: np.random.Generator, draw: Draw, n: int, seed: int, b: int,
             shift: float) -> bool:
        p = [stats.test_greater(draw(rng, n) + shift, 0.0, seed=seed, n_resamples=b).p_value
             for _ in range(FAMILY)]
        return min(stats.adjust(p, correction)) <= ALPHA  # type: ignore[arg-type]

    return case


RULES: dict[str, Case] = {
    "necessary robust": _necessary("robust"),
    "necessary t": _necessary("t"),
    "necessary wilcoxon": _necessary("wilcoxon"),
    "necessary permutation": _necessary("permutation"),
    "necessary bootstrap": _necessary("bootstrap"),
    "negligible robust": _negligible("robust"),
    "negligible t": _negligible("t"),
    "sufficient robust": _sufficient("robust"),
    "sufficient t": _sufficient("fieller"),
    "sufficient bootstrap": _sufficient("bootstrap"),
    f"holm, {FAMILY} claims": _family("holm"),
    f"bh, {FAMILY} claims": _family("bh"),
}


def pass_rate(rule: str, noise: str, n: int, reps: int, resamples: int,
              shift: float = 0.0) -> float:
    """Share of ``reps`` simulated claims that ``rule`` passes, with the true value at
    the null boundary or ``shift`` noise SDs past it."""
    key = (list(RULES).index(rule), list(NOISE).index(noise), n)
    rng = np.random.default_rng((20240611, *key))
    case, draw, past = RULES[rule], NOISE[noise], shift * SD[noise]
    return sum(case(rng, draw, n, seed, resamples, past) for seed in range(reps)) / reps


def _cell(job: tuple[str, str, int, int, int, float]) -> float:
    return pass_rate(*job)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--reps", type=int, default=2000, help="simulated claims per cell")
    parser.add_argument("--n", type=int, nargs="+", default=[10, 20, 30, 50, 100],
                        help="prompts per claim")
    parser.add_argument("--resamples", type=int, default=9999,
                        help="resamples B of the resampling rules (default 9999, as claims)")
    parser.add_argument("--rules", nargs="+", choices=list(RULES), default=list(RULES),
                        metavar="RULE", help=f"rows to run (default all: {', '.join(RULES)})")
    parser.add_argument("--shift", type=float, default=0.0,
                        help="true value this many noise SDs past the null (power)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    se = math.sqrt(ALPHA * (1 - ALPHA) / args.reps)
    limit = ALPHA + 2 * se
    jobs = [(rule, noise, n, args.reps, args.resamples, args.shift)
            for rule in args.rules for noise in NOISE for n in args.n]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rates = list(pool.map(_cell, jobs))
    elapsed = time.perf_counter() - start
    table = dict(zip([job[:3] for job in jobs], rates, strict=True))
    where = f"{args.shift:g} SD past the null" if args.shift else "at the null"
    print(f"pass rate {where}, alpha {ALPHA}, {args.reps} claims per cell, "
          f"{args.resamples} resamples; simulation SE about {se:.4f}; '!' marks a rate "
          f"above alpha + 2 SE = {limit:.4f}; {elapsed:.0f} s")

    def cell(rule: str, noise: str, n: int) -> str:
        rate = table[rule, noise, n]
        return f"{rate:.3f}" + (" !" if rate > limit and not args.shift else "")

    if args.markdown:
        print("\n| rule | noise | " + " | ".join(f"n={n}" for n in args.n) + " |")
        print("|---|---|" + "---|" * len(args.n))
        for rule in args.rules:
            for noise in NOISE:
                cells = " | ".join(cell(rule, noise, n) for n in args.n)
                print(f"| {rule} | {noise} | {cells} |")
        return
    print(f"{'rule':<24}{'noise':<14}" + "".join(f"{'n=' + str(n):<10}" for n in args.n))
    for rule in args.rules:
        for noise in NOISE:
            cells = "".join(f"{cell(rule, noise, n):<10}" for n in args.n)
            print(f"{rule:<24}{noise:<14}{cells}")


if __name__ == "__main__":
    main()
