"""The planted zoo model: it solves its task, builds reproducibly, passes the claims of
claims/zoo/test_planted.yaml, and a random model of the same shape (the control) fails
them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mechcheck.api import evaluate_path
from mechcheck.testing.models import save_tiny
from mechcheck.zoo import planted

ROOT = Path(__file__).resolve().parents[2]
CLAIMS = ROOT / "claims" / "zoo" / "test_planted.yaml"
DATA = ROOT / "claims" / "zoo" / "planted.jsonl"
WEIGHTS = ROOT / "mechcheck" / "zoo" / "weights" / planted.NAME
XFAIL = "head_0_1_necessary"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@torch.no_grad()
def test_logits_solve_the_task() -> None:
    torch.set_num_threads(2)
    model, tok = planted.make_model(), planted.make_tokenizer()
    for row in planted.planted_rows(n=40, seed=1):
        ids = tok(str(row["prompt"]), return_tensors="pt")["input_ids"]
        out = model(ids, output_attentions=True)
        logits = out.logits[0, -1]
        answer, wrong = tok.convert_tokens_to_ids([row["answer"], row["wrong"]])
        assert int(logits.argmax()) == answer
        assert float(logits[answer] - logits[wrong]) == pytest.approx(9.915, abs=1e-3)
        previous = torch.diagonal(out.attentions[0][0, 0], offset=-1)
        assert float(previous.min()) > 1 - 1e-6


def test_components_outside_the_circuit_are_exactly_zero() -> None:
    model = planted.make_model()
    d_head = planted.D_HEAD
    attn0 = model.transformer.h[0].attn
    assert not attn0.c_attn.weight.view(-1, 3, 2, d_head)[:, :, 1].any()  # head 0.1: q, k, v
    assert not attn0.c_proj.weight[d_head:].any()
    for name, param in model.transformer.h[1].named_parameters():
        if not name.startswith("ln_"):
            assert not param.any(), name
    for block in model.transformer.h:
        assert not any(p.any() for p in block.mlp.parameters())


def test_build_is_deterministic_and_matches_the_shipped_weights(tmp_path: Path) -> None:
    first = load_file(planted.build(tmp_path / "a") / "model.safetensors")
    second = load_file(planted.build(tmp_path / "b") / "model.safetensors")
    shipped = load_file(WEIGHTS / "model.safetensors")
    assert first.keys() == second.keys() == shipped.keys()
    assert "lm_head.weight" in first  # untied from the embedding
    for key in first:
        assert torch.equal(first[key], second[key]), key
        assert torch.equal(first[key], shipped[key]), key
    tokenizer = json.loads((tmp_path / "a" / "tokenizer.json").read_text())
    assert tokenizer == json.loads((WEIGHTS / "tokenizer.json").read_text())


def test_shipped_data_file_is_the_seeded_rows(tmp_path: Path) -> None:
    written = planted.write_rows(tmp_path / "rows.jsonl", n=100, seed=0)
    assert written.read_text() == DATA.read_text()


def _claims_for(folder: Path, model_folder: Path) -> Path:
    """A copy of the claim file and its data, with model: pointing at ``model_folder``."""
    shutil.copy(DATA, folder / DATA.name)
    text = CLAIMS.read_text()
    assert f"model: zoo:{planted.NAME}" in text
    path = folder / CLAIMS.name
    path.write_text(text.replace(f"model: zoo:{planted.NAME}", f"model: {model_folder}"))
    return path


def test_planted_model_passes_its_claims(tmp_path: Path) -> None:
    results = evaluate_path(_claims_for(tmp_path, planted.build(tmp_path / "model")))
    verdicts = {r.id: r.verdict for r in results}
    assert verdicts.pop(XFAIL) == "fail"
    assert verdicts and set(verdicts.values()) == {"pass"}, verdicts


def test_random_model_fails_the_same_claims(tmp_path: Path) -> None:
    folder = save_tiny("gpt2", tmp_path / "random", seed=0, words=planted.WORDS,
                       n_heads=planted.N_HEADS, d_model=planted.D_MODEL,
                       d_mlp=planted.D_MLP, max_positions=planted.N_POSITIONS)
    results = evaluate_path(_claims_for(tmp_path, folder))
    passed = [r.id for r in results if r.verdict == "pass"]
    assert len(results) == 8 and not passed, passed
