"""Tests for the random-init tiny models of :mod:`mechcheck.testing.models` and the word
tokenizer of :mod:`mechcheck.models.tiny`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mechcheck.models.tiny import word_tokenizer
from mechcheck.testing.models import ARCHS, DEFAULT_WORDS, build_tiny, save_tiny

PROMPT = "when Mary and John went to the store John gave a drink to"
SMALL = {"d_model": 16, "d_mlp": 32, "max_positions": 32}


def _norm_and_bias_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    norms = {
        name
        for name, mod in model.named_modules()
        if isinstance(mod, torch.nn.LayerNorm) or type(mod).__name__.endswith("RMSNorm")
    }
    return {
        name: param
        for name, param in model.named_parameters()
        if name.endswith("bias") or name.rsplit(".", 1)[0] in norms
    }


def test_word_tokenizer_with_bos() -> None:
    tok = word_tokenizer(["a", "b", "c"], bos_token="<s>")
    assert tok("a b").input_ids == [1, 2, 3]
    assert tok.bos_token == "<s>"
    assert tok("zzz").input_ids == [1, 0]  # out of vocabulary -> <unk>
    assert len(tok) == 5


def test_word_tokenizer_without_bos_and_duplicates() -> None:
    tok = word_tokenizer(["x", "y", "x"])
    assert tok("y x").input_ids == [2, 1]
    assert len(tok) == 3


def test_word_tokenizer_rejects_whitespace() -> None:
    with pytest.raises(ValueError, match="whitespace"):
        word_tokenizer(["two words"])


def test_word_tokenizer_roundtrip(tmp_path: Path) -> None:
    tok = word_tokenizer(DEFAULT_WORDS, bos_token="<bos>")
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(PROMPT).input_ids == tok(PROMPT).input_ids
    assert again.bos_token_id == tok.bos_token_id == 1


@pytest.mark.parametrize("arch", ARCHS)
def test_build_save_reload_identical(arch: str, tmp_path: Path) -> None:
    model, tok = build_tiny(arch, seed=3, **SMALL)
    assert not model.training
    folder = save_tiny(arch, tmp_path / arch, seed=3, **SMALL)
    assert (folder / "model.safetensors").is_file()
    model2 = AutoModelForCausalLM.from_pretrained(folder)
    tok2 = AutoTokenizer.from_pretrained(folder)
    ids = tok(PROMPT, return_tensors="pt").input_ids
    assert torch.equal(tok2(PROMPT, return_tensors="pt").input_ids, ids)
    assert ids[0, 0].item() == tok.bos_token_id and (ids != tok.unk_token_id).all()
    with torch.no_grad():
        torch.testing.assert_close(model2(ids).logits, model(ids).logits, rtol=0, atol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_perturbation_moves_biases_and_norms(arch: str) -> None:
    plain, _ = build_tiny(arch, seed=0, perturb=False, **SMALL)
    moved, _ = build_tiny(arch, seed=0, **SMALL)
    before, after = _norm_and_bias_params(plain), _norm_and_bias_params(moved)
    assert before, "expected some bias or norm parameters"
    for name, param in before.items():
        assert not torch.equal(param, after[name]), name
    others = dict(moved.named_parameters())
    for name, param in plain.named_parameters():
        if name not in before:
            assert torch.equal(param, others[name]), name


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_same_seed_same_weights(arch: str) -> None:
    first, _ = build_tiny(arch, seed=7, **SMALL)
    second, _ = build_tiny(arch, seed=7, **SMALL)
    third, _ = build_tiny(arch, seed=8, **SMALL)
    pairs = zip(first.state_dict().items(), second.state_dict().items(), strict=True)
    for (name, a), (_, b) in pairs:
        assert torch.equal(a, b), name
    assert not torch.equal(first.lm_head.weight, third.lm_head.weight)


def test_llama_has_gqa_and_biases() -> None:
    model, _ = build_tiny("llama", n_heads=4, **SMALL)
    attn = model.model.layers[0].self_attn
    assert attn.k_proj.out_features < attn.q_proj.out_features
    assert attn.q_proj.bias is not None and attn.o_proj.bias is not None
    assert model.model.layers[0].mlp.up_proj.bias is not None


def test_neox_parallel_residual() -> None:
    model, _ = build_tiny("neox", **SMALL)
    assert model.config.use_parallel_residual


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown architecture"):
        build_tiny("bert")
    with pytest.raises(ValueError, match="grouped-query"):
        build_tiny("gpt2", n_kv_heads=2)
    with pytest.raises(ValueError, match="multiple of n_heads"):
        build_tiny("llama", d_model=30)
