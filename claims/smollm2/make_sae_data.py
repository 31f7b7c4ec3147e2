"""Writes claims/smollm2/sae_ioi.jsonl: ioi prompts for SmolLM2 with a ``names`` column.

Run from the repository root:  python claims/smollm2/make_sae_data.py

The rows are the built-in ioi task's (n=40, seed 0, templates 0, 2 and 6: each 14
tokens for every name, so they run as one batch) for SmolLM2's tokenizer, with one
extra columns, ``names`` (the positions of the three names: IO, S1 and S2) and
``end`` (the last position, END), which ``kind: activates`` reads as the positions a
feature should mark.  The SAE of
test_sae.yaml was trained on other ioi prompts (seed 1), so these are held out.
"""

from __future__ import annotations

import json
from pathlib import Path

MODEL = "zoo:smollm2-135m"
TASK = {"name": "ioi", "n": 40, "seed": 0, "templates": [0, 2, 6]}
OUT = Path(__file__).with_name("sae_ioi.jsonl")


def main() -> None:
    from mechcheck.session import Session

    session = Session()
    tokenizer = session.model(MODEL).tokenizer
    task = session.registry.lookup("tasks", TASK["name"], key="task")
    rows = [{**row, "names": ["IO", "S1", "S2"], "end": "END"}
            for row in task.rows(tokenizer, TASK)]
    OUT.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} rows to {OUT}")


if __name__ == "__main__":
    main()
