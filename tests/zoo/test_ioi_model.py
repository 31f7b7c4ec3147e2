"""The IOI zoo model (``zoo:ioi-small``): the shipped weights load and do the task, the
checkpoint before the phase change does not, the claims of
claims/zoo/test_ioi_small.yaml hold for the final model and not for that checkpoint, and
(slow) the recipe rebuilds a model that does the task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mechcheck import zoo
from mechcheck.api import evaluate_path
from mechcheck.tasks.ioi import ioi_rows
from mechcheck.zoo import ioi

ROOT = Path(__file__).resolve().parents[2]
CLAIMS = ROOT / "claims" / "zoo" / "test_ioi_small.yaml"
WEIGHTS = ROOT / "mechcheck" / "zoo" / "weights" / ioi.NAME
XFAIL = "head_2_2_is_a_name_mover"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _behaviour(folder: Path, *, n: int = 200, seed: int = 11) -> dict[str, float]:
    """IO-vs-S accuracy and logit difference on held-out prompts (a seed not used in
    training, whose sentences come from seeds 2025 and 2026)."""
    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return ioi.evaluate_ioi(model, tokenizer, ioi_rows(tokenizer, n=n, seed=seed))


def test_registered_with_its_checkpoints() -> None:
    assert ioi.NAME in zoo.names()
    steps = ioi.checkpoint_steps()
    assert zoo.checkpoints(ioi.NAME) == [f"step{s}" for s in steps]
    assert zoo.resolve(ioi.NAME) == WEIGHTS / f"step{steps[-1]}"
    for step in steps:
        assert (WEIGHTS / f"step{step}" / "model.safetensors").stat().st_size < 2_000_000


def test_shipped_model_does_the_task() -> None:
    result = _behaviour(zoo.resolve(ioi.NAME))
    assert result["accuracy"] >= 0.9 and result["logit_diff"] > 5.0, result


def test_checkpoint_before_the_phase_change_does_not() -> None:
    result = _behaviour(zoo.resolve(f"{ioi.NAME}@step500"))
    assert 0.3 < result["accuracy"] < 0.7 and abs(result["logit_diff"]) < 0.5, result


def test_shipped_tokenizer_and_recipe_record() -> None:
    folder = zoo.resolve(ioi.NAME)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.get_vocab() == ioi.make_tokenizer().get_vocab()
    record = json.loads((WEIGHTS / "recipe.json").read_text())
    assert record["name"] == ioi.NAME and record["final"]["accuracy"] >= 0.9
    assert record["recipe"]["steps"] == ioi.RECIPE.steps
    assert record["checkpoints"] == zoo.checkpoints(ioi.NAME)


def test_training_batch_is_whole_sentences() -> None:
    import random

    from mechcheck.tasks.ioi import ioi_pools

    tokenizer = ioi.make_tokenizer()
    ids, mask = ioi.training_batch(random.Random(0), tokenizer, ioi_pools(tokenizer), 8)
    assert ids.shape[0] == 8 and mask.shape == (8, ids.shape[1] - 1)
    assert (ids[:, 0] == tokenizer.bos_token_id).all()
    assert tokenizer.unk_token_id not in ids.tolist()
    lengths = mask.sum(dim=1) + 1
    last = ids[torch.arange(8), lengths - 1]
    names = set(tokenizer.convert_tokens_to_ids(list(ioi.ioi_pools(tokenizer).names)))
    assert set(last.tolist()) <= names  # every sentence ends with the IO name


def _claims_for(folder: Path, model: str) -> Path:
    text = CLAIMS.read_text()
    assert f"model: zoo:{ioi.NAME}\n" in text
    path = folder / CLAIMS.name
    path.write_text(text.replace(f"model: zoo:{ioi.NAME}\n", f"model: {model}\n"))
    return path


@pytest.mark.slow
def test_claims_hold_for_the_final_model_only(tmp_path: Path) -> None:
    final = {r.id: r.verdict for r in evaluate_path(CLAIMS)}
    assert final.pop(XFAIL) == "fail"
    assert final and set(final.values()) == {"pass"}, final
    early = evaluate_path(_claims_for(tmp_path, f"zoo:{ioi.NAME}@step500"))
    passed = {r.id for r in early if r.verdict == "pass"}
    # before the phase change nothing matters (so "negligible" holds) and head 1.2
    # already looks at the names (0.43 to IO), but no other claim holds
    assert passed <= {"layer_3_heads_negligible", "head_1_2_attends_io"}, passed


@pytest.mark.slow
def test_recipe_rebuilds_a_model_that_does_the_task(tmp_path: Path) -> None:
    out = ioi.build(tmp_path / "ioi")
    last = out / f"step{ioi.RECIPE.steps}"
    result = _behaviour(last)
    assert result["accuracy"] >= 0.9, result
    record = json.loads((out / "recipe.json").read_text())
    assert record["checkpoints"] == [f"step{s}" for s in ioi.checkpoint_steps()]
    shipped = json.loads((WEIGHTS / "recipe.json").read_text())
    first, ours = record["history"][0], shipped["history"][0]  # same seed: same init
    assert first["step"] == ours["step"] == 0
    assert first["logit_diff"] == pytest.approx(ours["logit_diff"], abs=1e-3)
