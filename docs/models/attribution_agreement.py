"""How well attribution patching ranks components as exact patching does.

For each case below, every head is mean-ablated alone by exact patching (one patched
run per head, ``mechcheck.scan.scan``) and estimated by attribution patching, plain and
with integrated gradients (``mechcheck.engine.attribution.screen``).  The script prints
a markdown table of Spearman's rank correlation between each estimate and the exact
drops over all heads, and the overlap of their top-k sets; docs/sweeps.md shows it.

Run from the repository root (about 6 minutes on 2 busy CPU cores, most of it SmolLM2;
SmolLM2 is converted from its GGUF file on first use)::

    python docs/models/attribution_agreement.py            # every case
    python docs/models/attribution_agreement.py --zoo-only # without SmolLM2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CASES: list[dict[str, Any]] = [
    {"model": "zoo:ioi-small", "task": {"name": "ioi", "n": 48, "seed": 0},
     "what": "ioi task, 48 prompts", "metric": "logit_diff", "top": 5, "ig": 4},
    {"model": "zoo:induction-2l", "data": str(ROOT / "claims/zoo/induction.jsonl"), "n": 48,
     "what": "claims/zoo/induction.jsonl, 48 prompts", "metric": "logprob", "top": 3,
     "ig": 4},
    # 8 prompts and 2 steps keep the 270 exact runs and 30 x 2 gradient passes near 2 min
    {"model": "zoo:smollm2-135m",
     "task": {"name": "ioi", "n": 8, "seed": 0, "templates": [0, 2, 6]},
     "what": "ioi task (templates 0, 2, 6), 8 prompts", "metric": "logit_diff",
     "top": 10, "ig": 2, "real": True},
]


def agreement(case: dict[str, Any], session: Any) -> dict[str, Any]:
    """Exact drops of every head and the rank agreement of each estimate with them."""
    from mechcheck.engine.attribution import rank_agreement, screen
    from mechcheck.scan import scan

    start = time.perf_counter()
    exact = scan(case["model"], data=case.get("data"), task=case.get("task"),
                 metric=case["metric"], components=["blocks.*.attn.head.*"],
                 ablation="mean", n=case.get("n"), session=session)
    exact_s = time.perf_counter() - start
    drops = [r.effect for r in exact.rows]
    claim = _claim(case)
    runner = session.runner(claim)
    addresses = runner.loaded.adapter.resolve(["blocks.*.attn.head.*"])
    iv = session.registry.lookup("interventions", "mean", key="ablation")
    metric = session.registry.lookup("metrics", case["metric"], key="metric")
    out: dict[str, Any] = {"heads": len(drops), "exact_s": exact_s}
    for steps in (0, case["ig"]):
        start = time.perf_counter()
        _, estimates = screen(runner, list(addresses), iv, metric, top_k=1, ig_steps=steps)
        out[f"s{steps}"] = time.perf_counter() - start
        out[f"rank{steps}"] = rank_agreement(estimates, drops, top=case["top"])
        out[f"est{steps}"] = estimates
    best = max(exact.rows, key=lambda r: r.effect)
    out["best"] = f"{best.components[0]} ({best.effect:.3g})"
    return out


def _claim(case: dict[str, Any]) -> Any:
    from mechcheck.spec.schema import ClaimSpec

    return ClaimSpec(id="agreement", kind="necessary", path="<agreement>", line=0,
                     base_dir=".", model=case["model"], data=case.get("data"),
                     task=case.get("task"), n=case.get("n"), params={})


def main() -> None:
    from mechcheck.session import Session

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--zoo-only", action="store_true", help="skip SmolLM2")
    args = parser.parse_args()
    session = Session()
    print("| model | data | heads | metric | Spearman, AtP | top-k overlap, AtP | IG steps | "
          "Spearman, IG | top-k overlap, IG | largest exact drop |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for case in CASES:
        if args.zoo_only and case.get("real"):
            continue
        r = agreement(case, session)
        steps = case["ig"]
        (rho0, top0), (rho_ig, top_ig) = r["rank0"], r[f"rank{steps}"]
        k = case["top"]
        print(f"| {case['model']} | {case['what']} | {r['heads']} | {case['metric']} | "
              f"{rho0:.2f} | {top0 * k:.0f}/{k} | {steps} | {rho_ig:.2f} | "
              f"{top_ig * k:.0f}/{k} | {r['best']} |", flush=True)
        print(f"<!-- {case['model']}: exact {r['exact_s']:.1f} s, AtP {r['s0']:.1f} s, "
              f"IG {r[f's{steps}']:.1f} s -->", flush=True)


if __name__ == "__main__":
    main()
