"""What circuit and path claims cost, in plain forward passes, on the zoo and SmolLM2.

For each claim file (claims/zoo/test_circuits.yaml, claims/zoo/test_planted_circuit.yaml
and, with ``--smollm2``, claims/smollm2/test_circuits.yaml) it prints each claim's time
(``ClaimResult.duration_s``: its own runs and decision, after the shared runs) divided by
the time of one plain forward pass over the same prompts, and the ratio of scoring K sets
with several sets per forward pass (``ClaimContext.run_many``) to one pass per set.
Only ratios are printed: they carry over between machines better than seconds.

    python benchmarks/bench_circuits.py             # zoo only, ~1 minute on 2 cores
    python benchmarks/bench_circuits.py --smollm2   # also the real model (~3 minutes)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from mechcheck.api import evaluate_path
from mechcheck.engine.circuits import CircuitScorer
from mechcheck.engine.context import ClaimContext
from mechcheck.session import Session
from mechcheck.spec.loader import load_claim_file

ROOT = Path(__file__).resolve().parents[1]
FILES = ("claims/zoo/test_circuits.yaml", "claims/zoo/test_planted_circuit.yaml")
REAL = "claims/smollm2/test_circuits.yaml"


def _claims(session: Session, path: Path) -> list:
    registry = session.registry
    return list(load_claim_file(path, registry.kind_keys(),
                                common=registry.common_keys()).claims)


def plain_forward_s(session: Session, path: Path, repeats: int) -> float:
    """Median seconds of one unpatched forward pass over the first claim's prompts."""
    spec = _claims(session, path)[0]
    runner = session.runner(spec)
    runner.run("clean")  # warm-up
    return _best(lambda: runner.run("clean"), repeats)


def batching_ratio(session: Session, path: Path, n_sets: int) -> float:
    """Time of ``n_sets`` circuits scored one pass each over the time with run_many."""
    spec = next(s for s in _claims(session, path)
                if s.kind == "circuit" and s.params.get("components"))
    ctx = ClaimContext(session, spec)
    iv = ctx.intervention("mean", base="clean", key="ablation")
    scorer = CircuitScorer(ctx, iv)
    nodes = sorted(scorer.everything, key=str)
    sets = [frozenset(nodes[i:] + nodes[: i // 2]) for i in range(n_sets)]
    patches = [scorer._patches(x) for x in sets]
    ctx.run("clean", patches[0])  # warm the shared run, its recordings and means
    ctx.run_many("clean", patches[:2])

    def one_by_one() -> None:
        for p in patches:
            ctx.run("clean", p)

    return _best(one_by_one) / _best(lambda: ctx.run_many("clean", patches))


def _best(fn: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smollm2", action="store_true", help="also the real model")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sets", type=int, default=12, help="K sets for the batching ratio")
    args = parser.parse_args()
    files = [*FILES, *([REAL] if args.smollm2 else [])]
    print("| file | claim | kind | time / one plain forward |")
    print("|---|---|---|---|")
    for name in files:
        path = ROOT / name
        session = Session(n_resamples=999)
        plain = plain_forward_s(session, path, args.repeats)
        for result in evaluate_path(path, session):
            print(f"| {name} | {result.id} | {result.kind} | "
                  f"{result.duration_s / plain:.1f} |")
    session = Session(n_resamples=999)
    ratio = batching_ratio(session, ROOT / FILES[0], args.sets)
    print(f"\n{args.sets} circuits of induction-2l: one pass per set takes {ratio:.2f}x "
          "the time of run_many (several sets per pass)")


if __name__ == "__main__":
    main()
