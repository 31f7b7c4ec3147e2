"""Per-head sweeps on SmolLM2-135M through mechcheck's public API, and their figures.

Run from the repository root::

    python docs/models/smollm2_heads.py                 # both figures
    python docs/models/smollm2_heads.py --only heads    # or --only ioi

Each sweep is a claim file written to a temporary folder, one claim per head
(``correction: none``, a threshold of 0), evaluated with :func:`mechcheck.evaluate_path`;
a claim's effect is the mean over the prompts (an attention score, or a drop in the
logit difference).  The figures are

- ``docs/models/smollm2-135m-heads.png``: on ``claims/smollm2/induction.jsonl`` (repeated
  random words), every head's induction score and previous-token score (``attends``
  with ``pattern: induction`` and ``pattern: previous_token``);
- ``docs/models/smollm2-135m-ioi.png``: on the ``ioi`` task (templates 0, 2 and 6, as in
  ``claims/smollm2/test_ioi.yaml``), every head's attention from END to IO and from END
  to S2, the drop in logit difference when all heads of a layer are knocked out at END
  (mean over the ABC prompts, per template), and the same drop for each head of the
  layers whose knockout moves the logit difference by more than ``--layer-cut``.

The attention maps need one forward pass each; the knockouts one per layer and per
head, a few minutes on two CPU cores with the default ``--n-ioi``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import mechcheck

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
INDUCTION = ROOT / "claims" / "smollm2" / "induction.jsonl"
MODEL = "zoo:smollm2-135m"
N_LAYERS, N_HEADS = 30, 9
IOI_TEMPLATES = [0, 2, 6]


def evaluate(session: mechcheck.Session, common: dict[str, Any],
             claims: list[dict[str, Any]]) -> dict[str, Any]:
    """Evaluates the claims as one temporary claim file; returns the results by id."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "test_sweep.yaml"
        path.write_text(yaml.safe_dump({**common, "correction": "none", "claims": claims},
                                       sort_keys=False))
        results = mechcheck.evaluate_path(path, session)
    bad = [r for r in results if r.verdict == "error"]
    if bad:
        raise SystemExit(bad[0].message)
    return {r.id: r for r in results}


def head_map(results: dict[str, Any], prefix: str) -> np.ndarray:
    grid = np.full((N_LAYERS, N_HEADS), np.nan)
    for layer in range(N_LAYERS):
        for head in range(N_HEADS):
            result = results.get(f"{prefix}_{layer}_{head}")
            if result is not None:
                grid[layer, head] = result.effect
    return grid


def attends_claims(prefix: str, **keys: Any) -> list[dict[str, Any]]:
    return [{"id": f"{prefix}_{layer}_{head}", "kind": "attends",
             "components": [f"head {layer}.{head}"], "min_score": 0.0, **keys}
            for layer in range(N_LAYERS) for head in range(N_HEADS)]


def draw_map(ax: Any, grid: np.ndarray, title: str, *, cmap: str = "viridis",
             vmin: float = 0.0, vmax: float = 1.0, top: int = 4) -> Any:
    """A layers x heads heatmap with the ``top`` largest cells labelled."""
    image = ax.imshow(grid, aspect="auto", origin="lower", cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(N_HEADS))
    ax.set_yticks(range(0, N_LAYERS, 2))
    flat = np.nan_to_num(np.abs(grid), nan=-1.0).ravel()
    labelled = []
    for index in np.argsort(-flat)[:top]:
        layer, head = divmod(int(index), N_HEADS)
        value = grid[layer, head]
        dark = cmap == "viridis" and value < 0.75 * vmax or cmap != "viridis" and (
            abs(value) > 0.6 * vmax)
        ax.text(head, layer, f"{layer}.{head}\n{value:.2f}", ha="center", va="center",
                fontsize=6, color="white" if dark else "black")
        labelled.append(f"{layer}.{head} {value:.2f}")
    print(f"{title.splitlines()[0]}: {', '.join(labelled)}")
    return image


def heads_figure(session: mechcheck.Session, n: int, out: Path) -> None:
    import matplotlib.pyplot as plt

    common = {"model": MODEL, "data": str(INDUCTION), "n": n, "test": "t"}
    claims = (attends_claims("induction", pattern="induction")
              + attends_claims("previous", pattern="previous_token"))
    results = evaluate(session, common, claims)
    induction, previous = head_map(results, "induction"), head_map(results, "previous")
    fig, axes = plt.subplots(1, 2, figsize=(10, 7), constrained_layout=True)
    draw_map(axes[0], induction, "induction score\n(attention to the token after an "
             "earlier copy)")
    image = draw_map(axes[1], previous, "previous-token score\n(attention to the "
                     "token before)")
    fig.colorbar(image, ax=axes, shrink=0.6, label="mean attention weight")
    fig.suptitle(f"SmolLM2-135M-Instruct: attention scores of every head on "
                 f"repeated random words ({n} prompts)")
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def ioi_figure(session: mechcheck.Session, n_attn: int, n_ablate: int, layer_cut: float,
               out: Path) -> None:
    import matplotlib.pyplot as plt

    task = {"name": "ioi", "seed": 0, "templates": IOI_TEMPLATES}
    attn = evaluate(session, {"model": MODEL, "task": {**task, "n": n_attn}, "test": "t"},
                    attends_claims("io", **{"from": "END", "to": "IO"})
                    + attends_claims("s2", **{"from": "END", "to": "S2"}))
    to_io, to_s2 = head_map(attn, "io"), head_map(attn, "s2")

    knockout = {"model": MODEL, "task": {**task, "n": n_ablate}, "metric": "logit_diff",
                "ablation": "mean_corrupt", "mean_by": "template", "at": "END",
                "test": "t"}

    def necessary(prefix: str, components: dict[str, str]) -> dict[str, Any]:
        return evaluate(session, knockout, [
            {"id": f"{prefix}_{name}", "kind": "necessary", "components": [address],
             "min_drop": 0.0} for name, address in components.items()])

    layers = necessary("layer", {str(layer): f"head {layer}.*"
                                 for layer in range(N_LAYERS)})
    layer_drop = np.array([layers[f"layer_{layer}"].effect for layer in range(N_LAYERS)])
    layer_err = np.array([[layers[f"layer_{layer}"].effect - layers[f"layer_{layer}"].ci_low,
                           layers[f"layer_{layer}"].ci_high - layers[f"layer_{layer}"].effect]
                          for layer in range(N_LAYERS)]).T
    chosen = [layer for layer in range(N_LAYERS) if abs(layer_drop[layer]) > layer_cut]
    heads = necessary("head", {f"{layer}_{head}": f"head {layer}.{head}"
                               for layer in chosen for head in range(N_HEADS)})
    head_drop = head_map(heads, "head")

    fig, axes = plt.subplots(1, 4, figsize=(17, 7), constrained_layout=True,
                             gridspec_kw={"width_ratios": [1, 1, 0.8, 1]})
    image = draw_map(axes[0], to_io, "attention END → IO")
    draw_map(axes[1], to_s2, "attention END → S2")
    fig.colorbar(image, ax=axes[:2], shrink=0.6, label="mean attention weight")
    axes[2].barh(range(N_LAYERS), layer_drop, xerr=layer_err, color=[
        "tab:red" if d < 0 else "tab:blue" for d in layer_drop], alpha=0.8)
    axes[2].axvline(0, color="black", lw=0.8)
    axes[2].set_ylim(-0.5, N_LAYERS - 0.5)
    axes[2].set_yticks(range(0, N_LAYERS, 2))
    axes[2].set_ylabel("layer")
    axes[2].set_xlabel("drop in logit diff (90% CI)")
    axes[2].set_title("knock out all 9 heads of a layer\nat END", fontsize=10)
    bound = float(np.nanmax(np.abs(head_drop))) if chosen else 1.0
    image = draw_map(axes[3], head_drop, f"knock out one head at END\n(layers with "
                     f"|layer drop| > {layer_cut}; others blank)", cmap="RdBu",
                     vmin=-bound, vmax=bound, top=6)
    fig.colorbar(image, ax=axes[3], shrink=0.6, label="drop in logit diff")
    fig.suptitle(f"SmolLM2-135M-Instruct on IOI (templates {IOI_TEMPLATES}): attention "
                 f"over {n_attn} prompts; knockouts (mean over ABC prompts, per template) "
                 f"over {n_ablate}")
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["heads", "ioi"])
    parser.add_argument("--n-induction", type=int, default=40)
    parser.add_argument("--n-attn", type=int, default=36)
    parser.add_argument("--n-ioi", type=int, default=18)
    parser.add_argument("--layer-cut", type=float, default=0.25)
    args = parser.parse_args()
    session = mechcheck.Session(n_resamples=999,
                                progress=lambda line: print(line, flush=True))
    if args.only in (None, "heads"):
        heads_figure(session, args.n_induction, HERE / "smollm2-135m-heads.png")
    if args.only in (None, "ioi"):
        ioi_figure(session, args.n_attn, args.n_ioi, args.layer_cut,
                   HERE / "smollm2-135m-ioi.png")


if __name__ == "__main__":
    main()
