"""Causal tracing of SmolLM2-135M's factual recall, and the heatmap of the docs.

Run from the repository root::

    python docs/models/smollm2_tracing.py                 # measure and draw
    python docs/models/smollm2_tracing.py --json t.json   # keep the numbers / redraw

One ``traced`` claim (``kind: traced``, mechcheck/kinds/tracing.py) sweeps every layer's
residual stream, MLP and attention (MLP and attention with a window of 10 layers, as
in Meng et al. 2022; every ``--step``-th layer) at the subject's last token and at the
last position, on the first
``--n`` facts of ``claims/smollm2/facts.jsonl`` with ``--samples`` noise draws (3σ of
the embedding matrix's entries); it is evaluated with :func:`mechcheck.evaluate_path`
and its profile drawn by the HTML report's own figure code
(:func:`mechcheck.report.figures.grid_figure`) into ``docs/tracing-heatmap.png``.

By default every layer is swept (180 cells; ``--step 2`` takes every second layer) on
the first 20 facts with 2 draws: 362 forward passes of the 20 facts, about 5 minutes on
two busy CPU cores.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import yaml

import mechcheck
from mechcheck.report.figures import grid_figure
from mechcheck.report.results import ClaimResult

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
FACTS = ROOT / "claims" / "smollm2" / "facts.jsonl"
OUT = ROOT / "docs" / "tracing-heatmap.png"


def measure(n: int, samples: int, step: int) -> dict[str, Any]:
    """The sweep's profile (one point per site, layer and position) and its verdict."""
    layers: Any = "*" if step == 1 else list(range(0, 30, step))
    claim = {"id": "smollm2_facts_tracing", "kind": "traced", "layers": layers,
             "site": ["resid", "mlp", "attn"], "window": 10,
             "at": ["subject_last", "last"], "samples": samples,
             # decided on the first series, resid at subject_last: the subject's last
             # token matters before layer 23 (where attention 23 moves the fact), not after
             "peak": [0, 22]}
    spec = {"model": "zoo:smollm2-135m", "data": str(FACTS), "n": n, "claims": [claim]}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "test_tracing_sweep.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
        (result,) = mechcheck.evaluate_path(path)
    if result.verdict == "error":
        raise SystemExit(result.message)
    return {"id": result.id, "verdict": result.verdict, "n": result.n,
            "samples": samples, "profile": [dict(p) for p in result.profile]}


def draw(found: dict[str, Any], out: Path) -> None:
    result = ClaimResult(file="claims/smollm2/facts.jsonl", id=found["id"],
                         model="zoo:smollm2-135m", verdict=found["verdict"],
                         profile=found["profile"])
    out.write_bytes(grid_figure(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="facts (the first n rows)")
    parser.add_argument("--samples", type=int, default=2, help="noise draws per fact")
    parser.add_argument("--step", type=int, default=1, help="every step-th layer (of 30)")
    parser.add_argument("--json", type=Path, help="write the numbers here; if the file "
                        "exists, draw its numbers instead of measuring again")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.json and args.json.exists():
        found = json.loads(args.json.read_text())
    else:
        found = measure(args.n, args.samples, args.step)
        if args.json:
            args.json.write_text(json.dumps(found, indent=1))
    draw(found, OUT)
    for site in ("resid", "mlp", "attn"):
        for position in ("subject_last", "last"):
            cells = [p for p in found["profile"]
                     if p["site"] == site and p["position"] == position]
            best = max(cells, key=lambda p: p["effect"])
            print(f"{site:5s} at {position:12s}: peak layer {best['layer']:2d}, IE "
                  f"{best['effect']:.3f} ({best['ci_low']:.3f} to {best['ci_high']:.3f})")


if __name__ == "__main__":
    main()
