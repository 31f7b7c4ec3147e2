"""The engine's public run primitives: a head's q/k/v sites against the models' own
reshaping, patches from runs and functions, recordings, means, all-position logits
and gradients; on tiny random models with perturbed biases and norms (GPT-2's fused
c_attn, GPT-NeoX's per-head fused query_key_value, Llama-family grouped-query
attention)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch

from mechcheck.addresses import Address
from mechcheck.engine.interventions import BUILTIN_INTERVENTIONS, Intervention, Source
from mechcheck.engine.runs import RunResult
from mechcheck.errors import ClaimSpecError
from tests.conftest import word_rows
from tests.test_engine import reference_logits, runner_for

ARCHS = ("gpt2", "neox", "llama", "qwen2", "mistral")
IV = {iv.name: iv for iv in BUILTIN_INTERVENTIONS}


def _attn(loaded: Any, layer: int) -> torch.nn.Module:
    arch = loaded.adapter.arch
    return loaded.model.get_submodule(f"{arch.blocks}.{layer}.{arch.attn}")


def reference_head_inputs(loaded: Any, ids: list[int], layer: int,
                          head: int) -> dict[str, torch.Tensor]:
    """Head ``head``'s q, k, v ``[pos, d_head]`` on one prompt, read from the projection
    outputs with the reshaping each transformers model does itself."""
    attn, cfg = _attn(loaded, layer), loaded.model.config
    out: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Any:
        def hook(module: Any, args: Any, output: torch.Tensor) -> None:
            out[name] = output.detach()[0]
        return hook

    name = type(loaded.model).__name__
    modules = ({"qkv": attn.c_attn} if name.startswith("GPT2") else
               {"qkv": attn.query_key_value} if name.startswith("GPTNeoX") else
               {"q": attn.q_proj, "k": attn.k_proj, "v": attn.v_proj})
    handles = [m.register_forward_hook(keep(n)) for n, m in modules.items()]
    try:
        with torch.inference_mode():
            loaded.model(input_ids=torch.tensor([ids]))
    finally:
        for h in handles:
            h.remove()
    pos = len(ids)
    if name.startswith("GPT2"):  # split into thirds, then heads
        d = cfg.n_embd
        q, k, v = out["qkv"].split(d, dim=-1)
        per = d // cfg.n_head
        return {n: t.view(pos, cfg.n_head, per)[:, head] for n, t in zip("qkv", (q, k, v))}
    if name.startswith("GPTNeoX"):  # heads first, then q|k|v inside each head
        per = cfg.hidden_size // cfg.num_attention_heads
        chunks = out["qkv"].view(pos, cfg.num_attention_heads, 3 * per)[:, head].chunk(3, -1)
        return dict(zip("qkv", chunks))
    per = cfg.head_dim if getattr(cfg, "head_dim", None) else \
        cfg.hidden_size // cfg.num_attention_heads
    group = cfg.num_attention_heads // cfg.num_key_value_heads
    return {"q": out["q"].view(pos, -1, per)[:, head],
            "k": out["k"].view(pos, -1, per)[:, head // group],
            "v": out["v"].view(pos, -1, per)[:, head // group]}


@pytest.mark.parametrize("arch", ARCHS)
def test_recorded_q_k_v_are_the_heads_own_vectors(arch: str, tiny_loaded: Any) -> None:
    loaded = tiny_loaded(arch)
    runner = runner_for(loaded, word_rows(5))
    layer, head = 1, 3
    addresses = [Address(w, layer, head) for w in ("q", "k", "v")]
    run = runner.run("clean", record=addresses)
    for row, ids in enumerate(runner.dataset.prompts):
        ref = reference_head_inputs(loaded, ids, layer, head)
        for address in addresses:
            got = run.activations(address)[row]
            torch.testing.assert_close(got, ref[address.site], rtol=1e-5, atol=1e-6)


def _zero_output_columns(module: torch.nn.Module, cols: slice) -> None:
    """Zero the weight and bias entries that write output features ``cols``."""
    with torch.no_grad():
        if type(module).__name__ == "Conv1D":  # [in, out]
            module.weight[:, cols] = 0
        else:  # nn.Linear [out, in]
            module.weight[cols, :] = 0
        if getattr(module, "bias", None) is not None:
            module.bias[cols] = 0


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("which", ["q", "k", "v"])
def test_zeroing_a_heads_input_equals_zeroing_its_projection_columns(
        arch: str, which: str, tiny_loaded: Any) -> None:
    loaded = tiny_loaded(arch)
    runner = runner_for(loaded, word_rows(6))
    layer, head = 0, 2
    address = Address(which, layer, head)
    got = runner.patched_logits([(address, IV["zero"])])
    edited = copy.deepcopy(loaded.model)
    attn = edited.get_submodule(f"{loaded.adapter.arch.blocks}.{layer}.{loaded.adapter.arch.attn}")
    cfg = loaded.model.config
    name = type(loaded.model).__name__
    if name.startswith("GPT2"):  # columns written independently of the adapter's arithmetic
        per = cfg.n_embd // cfg.n_head
        start = "qkv".index(which) * cfg.n_embd + head * per
        _zero_output_columns(attn.c_attn, slice(start, start + per))
    elif name.startswith("GPTNeoX"):
        per = cfg.hidden_size // cfg.num_attention_heads
        start = head * 3 * per + "qkv".index(which) * per
        _zero_output_columns(attn.query_key_value, slice(start, start + per))
    else:
        per = cfg.hidden_size // cfg.num_attention_heads
        index = head if which == "q" else head // (cfg.num_attention_heads
                                                   // cfg.num_key_value_heads)
        module = getattr(attn, f"{which}_proj")
        _zero_output_columns(module, slice(index * per, (index + 1) * per))
    reference = reference_logits(edited, runner)
    error = (got - reference).abs().max()
    effect = (got - runner.logits("clean")).abs().max()  # random weights: small but real
    assert error < effect / 100, (float(error), float(effect))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_zero_keys_make_the_pattern_uniform_over_the_causal_positions(
        arch: str, tiny_loaded: Any) -> None:
    # q . 0 = 0 for every key (rotary turns 0 into 0), so softmax is uniform: a planted
    # answer, 1 / (i + 1) at query i, for the head and (GQA) every head of its group
    loaded = tiny_loaded(arch)
    runner = runner_for(loaded, word_rows(4, lengths=(7,)))
    zero_k = Intervention(name="zero-k", base_run="clean", source=None,
                          replace=lambda current, source: torch.zeros_like(current))
    layer, head = 1, 1
    run = runner.run("clean", [(Address("k", layer, head), zero_k)],
                     record=[Address("pattern", layer, head)])
    pattern = run.activations(Address("pattern", layer, head))[0]
    length = pattern.shape[-1]
    expected = torch.tril(torch.ones(length, length)) / torch.arange(1, length + 1).view(-1, 1)
    torch.testing.assert_close(pattern, expected, rtol=1e-5, atol=1e-6)
    runner.prepare(type(runner.needs_for([]))(patterns={layer}))
    clean = runner.shared("clean")
    assert not torch.allclose(clean.activations(Address("pattern", layer, head))[0], expected)


@pytest.mark.parametrize("arch", ARCHS)
def test_patching_from_a_run_result_is_the_same_as_the_intervention(
        arch: str, tiny_loaded: Any) -> None:
    loaded = tiny_loaded(arch)
    runner = runner_for(loaded, word_rows(6))
    address = Address("v", 1, 1)
    corrupt = runner.run("corrupt", record=[address])
    via_run = runner.run("clean", [(address, corrupt)]).logits
    via_iv = runner.patched_logits([(address, IV["resample"])])
    torch.testing.assert_close(via_run, via_iv)
    clean = runner.run("clean", record=[address])
    torch.testing.assert_close(runner.run("clean", [(address, clean)]).logits,
                               runner.logits("clean"))


def test_a_patch_function_acts_only_at_the_positions_of_at(tiny_loaded: Any) -> None:
    loaded = tiny_loaded("gpt2")
    runner = runner_for(loaded, word_rows(5))
    address = Address("resid_pre", 1)
    seen: list[np.ndarray] = []

    def double(current: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        seen.append(rows)
        return current * 2

    patched = runner.run("clean", [(address, double)], record=[Address("resid_post", 1)],
                         at=[0])
    # the metric position (last) differs only through attention to position 0
    assert not torch.allclose(patched.logits, runner.logits("clean"))
    assert sorted(int(r) for rows in seen for r in rows) == list(range(5))
    ref = runner.run("clean", record=[address])
    for row in range(5):
        before = ref.activations(address)[row]
        torch.testing.assert_close(  # recorded before the patch at that site
            runner.run("clean", [(address, double)], record=[address], at=[0])
            .activations(address)[row], before)


def test_recording_what_a_run_lacks_or_patching_a_pattern_is_a_clear_error(
        tiny_loaded: Any) -> None:
    runner = runner_for(tiny_loaded("gpt2"), word_rows(3))
    run = runner.run("clean", record=[Address("mlp", 0)])
    with pytest.raises(ClaimSpecError, match=r"blocks.1.mlp was not recorded in this clean "
                       r"run \(recorded: blocks.0.mlp\)"):
        run.activations("blocks.1.mlp")
    with pytest.raises(ClaimSpecError, match="can be recorded, not patched"):
        runner.run("clean", [(Address("pattern", 0, 0), IV["zero"])])
    with pytest.raises(ClaimSpecError, match="from a clean run that did not record it"):
        runner.run("clean", [(Address("mlp", 1), run)])


def test_means_per_position_and_per_column_are_the_plain_means(tiny_loaded: Any) -> None:
    loaded = tiny_loaded("neox")
    rows = word_rows(8, lengths=(6,))
    for i, row in enumerate(rows):
        row["template"] = "a" if i % 3 else "b"
    runner = runner_for(loaded, rows)
    address = Address("head", 1, 2)
    acts = torch.stack(runner.run("clean", record=[address]).activations(address))
    means = runner.means(address, "clean")
    torch.testing.assert_close(means[None][: acts.shape[1]], acts.mean(0))
    by = runner.means(address, "clean", by="template")
    mask = torch.tensor([r["template"] == "b" for r in rows])
    torch.testing.assert_close(by["b"][: acts.shape[1]], acts[mask].mean(0))


def test_all_position_logits_are_the_models_own(tiny_loaded: Any) -> None:
    loaded = tiny_loaded("llama")
    runner = runner_for(loaded, word_rows(4))
    run = runner.run("clean", positions="all")
    assert run.all_logits is not None
    for ids, logits in zip(runner.dataset.prompts, run.all_logits):
        with torch.inference_mode():
            ref = loaded.model(input_ids=torch.tensor([ids])).logits[0].float()
        torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(run.logits, runner.logits("clean"))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_gradients_match_finite_differences(arch: str, tiny_loaded: Any) -> None:
    loaded = tiny_loaded(arch)
    runner = runner_for(loaded, word_rows(4, lengths=(6,)))
    answers = torch.as_tensor(runner.dataset.answers)

    def logprob(logits: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        index = torch.as_tensor(rows.astype(np.int64))
        return logits.log_softmax(-1).gather(-1, answers[index].view(-1, 1)).squeeze(-1)

    addresses = [Address("resid_pre", 1), Address("v", 0, 1), Address("head", 1, 0)]
    grads = runner.gradients("clean", addresses, logprob)
    rng = torch.Generator().manual_seed(0)
    eps = 1e-3
    base = logprob(runner.logits("clean"), np.arange(4)).double()
    for address in addresses:
        direction = [torch.randn(g.shape, generator=rng) for g in grads[address]]

        def nudge(current: torch.Tensor, rows: np.ndarray, sign: float,
                  direction: list[torch.Tensor] = direction) -> torch.Tensor:
            return current + sign * eps * torch.stack([direction[int(r)] for r in rows])

        up = runner.run("clean", [(address, lambda c, r: nudge(c, r, 1.0))]).logits
        down = runner.run("clean", [(address, lambda c, r: nudge(c, r, -1.0))]).logits
        numeric = (logprob(up, np.arange(4)).double()
                   - logprob(down, np.arange(4)).double()) / (2 * eps)
        analytic = torch.stack([(g * d).sum() for g, d in zip(grads[address], direction)])
        torch.testing.assert_close(analytic.double(), numeric, rtol=2e-2, atol=2e-3)
        assert numeric.abs().max() > 1e-3  # the direction matters: the check has teeth
    assert base.shape == (4,)


def test_sources_are_data() -> None:
    iv = Intervention(name="old", base_run="clean", source="corrupt_mean",
                      replace=lambda c, s: c)
    assert iv.source == Source("corrupt", reduce="mean") and iv.needs_corrupt
    assert IV["mean"].with_mean_by("template").source == Source("clean", "mean", "template")
    assert IV["resample"].with_mean_by("template") is IV["resample"]
    with pytest.raises(ValueError, match="must be a mechcheck.interventions.Source"):
        Intervention(name="x", base_run="clean", source="clean_mean", replace=lambda c, s: c)
    with pytest.raises(ValueError, match="by applies to reduce='mean' only"):
        Source("clean", by="template")


def test_run_results_stack_only_equal_lengths(tiny_loaded: Any) -> None:
    runner = runner_for(tiny_loaded("gpt2"), word_rows(6, lengths=(5, 7)))
    run = runner.run("clean", record=[Address("embed")])
    assert isinstance(run, RunResult)
    assert {r.shape[0] for r in run.activations("embed")} == {6, 8}
    with pytest.raises(ClaimSpecError, match="differ in length"):
        run.stacked("embed")
