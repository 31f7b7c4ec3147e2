"""Localisation sweeps on SmolLM2-135M through mechcheck's public API, and their figures.

Run from the repository root::

    python docs/models/smollm2_recall.py            # both figures
    python docs/models/smollm2_recall.py --only facts

Each sweep is a claim file written to a temporary folder, one ``necessary`` claim per
component (``correction: none``, a threshold of 0), evaluated with
:func:`mechcheck.evaluate_path`; the effect of each claim is the mean drop of the metric
over the prompts, and its interval the claim's 90 % interval.  The figures are

- ``docs/models/smollm2-135m-facts.png``: factual recall on ``claims/smollm2/facts.jsonl``,
  the drop in the answer's log-probability when each layer's MLP at the subject's last
  token, or each layer's attention at the last position, is replaced by its output on
  another fact's prompt (``noise``);
- ``docs/models/smollm2-135m-greater-than.png``: greater-than, the drop in the
  probability difference when each layer's MLP or attention, or each head of the six
  layers whose attention matters most, is given its output on the corrupt prompt (start
  year ..01), at every position.

Every claim is one forward pass of the 135M-parameter model over the prompts: the two
sweeps (about 200 claims) took about 30 minutes on two busy CPU cores.  With ``--json
FILE`` the numbers are saved, and a later run with the same FILE redraws from them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import yaml

import mechcheck

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
FACTS = ROOT / "claims" / "smollm2" / "facts.jsonl"
MODEL = "zoo:smollm2-135m"
N_LAYERS, N_HEADS = 30, 9


def sweep(session: mechcheck.Session, common: dict[str, Any],
          components: list[str], chunk: int = 30, **keys: Any) -> list[dict[str, float]]:
    """One necessary claim per component; returns effect, ci_low, ci_high, n of each.

    The claims are evaluated ``chunk`` at a time (one claim file each); the session keeps
    the model and the shared clean and corrupt runs between chunks."""
    out: list[dict[str, float]] = []
    for start in range(0, len(components), chunk):
        part = components[start:start + chunk]
        claims = [{"id": f"c{start + i}", "kind": "necessary", "components": [c],
                   "min_drop": 0.0, **keys} for i, c in enumerate(part)]
        with tempfile.TemporaryDirectory() as tmp:
            spec = {**common, "correction": "none", "claims": claims}
            path = Path(tmp) / "test_sweep.yaml"
            path.write_text(yaml.safe_dump(spec, sort_keys=False))
            results = mechcheck.evaluate_path(path, session)
        bad = [r for r in results if r.verdict == "error"]
        if bad:
            raise SystemExit(bad[0].message)
        out += [{"effect": r.effect, "ci_low": r.ci_low, "ci_high": r.ci_high, "n": r.n}
                for r in results]
        print(f"  {keys}: {start + len(part)}/{len(components)}", flush=True)
    return out


def facts_sweeps(session: mechcheck.Session, n: int) -> dict[str, Any]:
    common = {"model": MODEL, "data": str(FACTS), "metric": "logprob", "n": n}
    mlps = [f"mlp {layer}" for layer in range(N_LAYERS)]
    attns = [f"attn {layer}" for layer in range(N_LAYERS)]
    return {
        "mlp_subject": sweep(session, common, mlps, ablation="noise", at="SUBJ_LAST"),
        "attn_last": sweep(session, common, attns, ablation="noise", at="last"),
    }


def greater_than_sweeps(session: mechcheck.Session, n: int,
                        head_layers: int = 6) -> dict[str, Any]:
    """Layer sweeps of MLP and attention, then every head of the ``head_layers`` layers
    whose attention matters most (a sweep of all 270 heads costs 270 runs)."""
    common = {"model": MODEL, "task": {"name": "greater_than", "n": n, "seed": 0},
              "metric": "greater_than_pd"}
    mlps = [f"mlp {layer}" for layer in range(N_LAYERS)]
    attns = [f"attn {layer}" for layer in range(N_LAYERS)]
    found: dict[str, Any] = {"mlp": sweep(session, common, mlps, ablation="noise"),
                             "attn": sweep(session, common, attns, ablation="noise")}
    ranked = sorted(range(N_LAYERS), key=lambda layer: -found["attn"][layer]["effect"])
    layers = sorted(ranked[:head_layers])
    heads = [f"head {layer}.{h}" for layer in layers for h in range(N_HEADS)]
    found["head_layers"] = layers
    found["heads"] = sweep(session, common, heads, chunk=N_HEADS * 2, ablation="noise")
    return found


def _layer_plot(ax: Any, series: dict[str, list[dict[str, float]]], ylabel: str) -> None:
    for label, rows in series.items():
        effect = [r["effect"] for r in rows]
        low = [r["ci_low"] for r in rows]
        high = [r["ci_high"] for r in rows]
        line = ax.plot(range(len(rows)), effect, marker="o", ms=3, label=label)[0]
        ax.fill_between(range(len(rows)), low, high, color=line.get_color(), alpha=0.2)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False, fontsize=8)


def draw_facts(found: dict[str, Any], out: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    n = found["mlp_subject"][0]["n"]
    _layer_plot(ax, {
        "MLP at the subject's last token": found["mlp_subject"],
        "attention at the last position": found["attn_last"],
    }, "drop in log p(answer)")
    ax.set_title(f"SmolLM2-135M factual recall: patching one layer from another fact "
                 f"(n={n}, 90% CI)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    plt.close(fig)


def draw_greater_than(found: dict[str, Any], out: Path) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8),
                                      gridspec_kw={"width_ratios": [1.25, 1]})
    n = found["mlp"][0]["n"]
    _layer_plot(left, {"MLP": found["mlp"], "attention": found["attn"]},
                "drop in probability difference")
    left.set_title(f"layer outputs from the corrupt prompt (..01), n={n}, 90% CI",
                   fontsize=9)
    layers = found["head_layers"]
    grid = np.array([r["effect"] for r in found["heads"]]).reshape(len(layers), N_HEADS).T
    bound = max(abs(grid).max(), 1e-6)
    image = right.imshow(grid, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound,
                         origin="lower")
    right.set_xticks(range(len(layers)), [str(layer) for layer in layers])
    right.set_xlabel("layer (the layers whose attention matters most)")
    right.set_ylabel("head")
    right.set_yticks(range(N_HEADS))
    right.set_title("each head from the corrupt prompt: drop in PD", fontsize=9)
    for (h, k), value in np.ndenumerate(grid):
        if abs(value) >= 0.25 * bound:
            right.text(k, h, f"{value:.2f}", ha="center", va="center", fontsize=6)
    fig.colorbar(image, ax=right, fraction=0.05)
    fig.suptitle("SmolLM2-135M greater-than (digit tokens): 'from the year 1739 to the "
                 "year 17' -> tens digit", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["facts", "greater-than"])
    parser.add_argument("--n", type=int, default=21, help="facts per facts sweep")
    parser.add_argument("--n-greater-than", type=int, default=27,
                        help="greater-than prompts per sweep (3 per start year)")
    parser.add_argument("--json", type=Path, help="write the sweeps' numbers here; if the "
                        "file exists, its numbers are drawn instead of measured again")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    session = mechcheck.Session(device="cpu", n_resamples=999)
    found: dict[str, Any] = {}
    if args.json and args.json.exists():
        found = json.loads(args.json.read_text())   # redraw without measuring again
    if args.only in (None, "facts"):
        if "facts" not in found:
            found["facts"] = facts_sweeps(session, args.n)
        draw_facts(found["facts"], HERE / "smollm2-135m-facts.png")
    if args.only in (None, "greater-than"):
        if "greater_than" not in found:
            found["greater_than"] = greater_than_sweeps(session, args.n_greater_than)
        draw_greater_than(found["greater_than"], HERE / "smollm2-135m-greater-than.png")
        if args.json:
            args.json.write_text(json.dumps(found, indent=1))
    if args.json:
        args.json.write_text(json.dumps(found, indent=1))


if __name__ == "__main__":
    main()
