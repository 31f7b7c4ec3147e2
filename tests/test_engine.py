"""Interventions checked against independent references on tiny random models of every
supported architecture, with biases and norm weights perturbed away from 0/1."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from mechcheck.addresses import Address
from mechcheck.data import tokenize_rows
from mechcheck.engine.interventions import BUILTIN_INTERVENTIONS, Intervention
from mechcheck.engine.runner import Runner, position_mask
from mechcheck.errors import DataError
from tests.conftest import word_rows

ARCHS = ("gpt2", "neox", "llama", "qwen2", "mistral")
IV = {iv.name: iv for iv in BUILTIN_INTERVENTIONS}
CLEAN_INTO_CLEAN = Intervention(name="clean-into-clean", base_run="clean", source="clean",
                                replace=lambda current, source: source)


def runner_for(loaded: Any, rows: list[dict[str, Any]], **kwargs: Any) -> Runner:
    return Runner(loaded, tokenize_rows(rows, loaded.tokenizer), **kwargs)


def reference_logits(model: torch.nn.Module, runner: Runner) -> torch.Tensor:
    """Last-position logits of ``model`` run prompt by prompt (no batching)."""
    out = []
    for ids in runner.dataset.prompts:
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([ids])).logits
        out.append(logits[0, -1].float())
    return torch.stack(out)


def out_proj(loaded: Any, layer: int, which: str) -> torch.nn.Module:
    arch = loaded.adapter.arch
    path = arch.attn_out_proj if which == "attn" else arch.mlp_out_proj
    return loaded.model.get_submodule(f"{arch.blocks}.{layer}.{path}")


def zero_input_slice(module: torch.nn.Module, cols: slice) -> None:
    """Zero the weight entries that read input features ``cols`` (Conv1D or Linear)."""
    with torch.no_grad():
        if type(module).__name__ == "Conv1D":  # GPT-2 stores [in, out]
            module.weight[cols, :] = 0
        else:  # nn.Linear stores [out, in]
            module.weight[:, cols] = 0


@pytest.mark.parametrize("arch", ARCHS)
def test_zero_head_equals_zeroing_its_output_projection_slice(arch: str, tiny_loaded: Any) -> None:
    loaded = tiny_loaded(arch)
    runner = runner_for(loaded, word_rows(6))
    layer, head = 1, 2
    got = runner.patched_logits([(Address("head", layer, head), IV["zero"])])
    edited = copy.deepcopy(loaded.model)
    d_head = loaded.adapter.d_head
    zero_input_slice(out_proj(_wrap(loaded, edited), layer, "attn"),
                     slice(head * d_head, (head + 1) * d_head))
    want = reference_logits(edited, runner)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert (got - runner.logits("clean")).abs().max() > 1e-4  # the head mattered at all


@pytest.mark.parametrize("arch", ARCHS)
def test_zero_neuron_equals_zeroing_its_weight_column(arch: str, tiny_loaded: Any) -> None:
    loaded = tiny_loaded(arch)
    runner = runner_for(loaded, word_rows(4))
    got = runner.patched_logits([(Address("neuron", 0, 5), IV["zero"])])
    edited = copy.deepcopy(loaded.model)
    zero_input_slice(out_proj(_wrap(loaded, edited), 0, "mlp"), slice(5, 6))
    torch.testing.assert_close(got, reference_logits(edited, runner), atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("site", ["attn", "mlp"])
def test_zero_sublayer_equals_zeroing_its_output_projection(arch: str, site: str,
                                                            tiny_loaded: Any) -> None:
    loaded = tiny_loaded(arch)
    runner = runner_for(loaded, word_rows(4))
    got = runner.patched_logits([(Address(site, 1), IV["zero"])])
    edited = copy.deepcopy(loaded.model)
    proj = out_proj(_wrap(loaded, edited), 1, site)
    with torch.no_grad():
        proj.weight.zero_()
        if getattr(proj, "bias", None) is not None:
            proj.bias.zero_()
    torch.testing.assert_close(got, reference_logits(edited, runner), atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_patching_clean_into_clean_changes_nothing(arch: str, tiny_loaded: Any) -> None:
    loaded = tiny_loaded(arch)
    runner = runner_for(loaded, word_rows(6))
    targets = [(Address.parse(a), CLEAN_INTO_CLEAN) for a in
               ("blocks.0.attn.head.1", "blocks.1.mlp", "blocks.1.resid_pre", "blocks.0.attn")]
    torch.testing.assert_close(runner.patched_logits(targets), runner.logits("clean"),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_mean_ablation_on_one_prompt_changes_nothing(arch: str, tiny_loaded: Any) -> None:
    loaded = tiny_loaded(arch)
    runner = runner_for(loaded, word_rows(1))
    targets = [(Address.parse(a), IV["mean"]) for a in ("blocks.1.attn.head.*", "blocks.0.mlp")]
    expanded = [(a, iv) for addr, iv in targets for a in addr.expand(loaded.adapter.dims)]
    torch.testing.assert_close(runner.patched_logits(expanded), runner.logits("clean"),
                               atol=1e-5, rtol=0)


def test_denoising_with_the_whole_residual_restores_the_clean_run(tiny_loaded: Any) -> None:
    loaded = tiny_loaded("gpt2")
    runner = runner_for(loaded, word_rows(5))
    got = runner.patched_logits([(Address("resid_post", 1), IV["denoise"])])
    torch.testing.assert_close(got, runner.logits("clean"), atol=1e-5, rtol=0)
    noised = runner.patched_logits([(Address("resid_post", 1), IV["noise"])])
    torch.testing.assert_close(noised, runner.logits("corrupt"), atol=1e-5, rtol=0)


def test_resample_at_last_position_only_touches_the_last_position(tiny_loaded: Any) -> None:
    loaded = tiny_loaded("llama")
    runner = runner_for(loaded, word_rows(5))
    # Patching the final residual stream at the last position alone reproduces the
    # corrupt run's last logits; at every other position it changes nothing there.
    last = runner.patched_logits([(Address("resid_post", 1), IV["resample"])], ["last"])
    torch.testing.assert_close(last, runner.logits("corrupt"), atol=1e-5, rtol=0)
    first = runner.patched_logits([(Address("resid_post", 1), IV["resample"])], [0])
    torch.testing.assert_close(first, runner.logits("clean"), atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["gpt2", "neox", "llama"])
def test_batched_mixed_lengths_equal_each_prompt_alone(arch: str, tiny_loaded: Any) -> None:
    loaded = tiny_loaded(arch)
    rows = word_rows(9, lengths=(4, 5, 7))
    runner = runner_for(loaded, rows, batch_size=4)
    assert len(runner.dataset.groups) == 3
    torch.testing.assert_close(runner.logits("clean"), reference_logits(loaded.model, runner),
                               atol=1e-5, rtol=0)
    alone = runner_for(loaded, rows, batch_size=1)
    target = [(Address("head", 0, 1), IV["mean"])]
    torch.testing.assert_close(runner.patched_logits(target), alone.patched_logits(target),
                               atol=1e-5, rtol=0)


def test_position_mask_resolves_last_indices_and_names(tiny_loaded: Any) -> None:
    loaded = tiny_loaded("gpt2")
    ds = tokenize_rows(word_rows(2, lengths=(6,)), loaded.tokenizer)
    rows = ds.groups[0]
    mask = position_mask(ds, rows, 7, ["last", 0, -2, "S"])
    assert mask[0].nonzero().flatten().tolist() == [0, 2, 5, 6]
    assert position_mask(ds, rows, 7, None).all()
    with pytest.raises(DataError, match="no position named 'IO'"):
        position_mask(ds, rows, 7, ["IO"])
    with pytest.raises(DataError, match="outside"):
        position_mask(ds, rows, 7, [9])


def test_shared_runs_record_once(tiny_loaded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = tiny_loaded("gpt2")
    runner = runner_for(loaded, word_rows(4))
    calls = []
    real = runner._forward
    monkeypatch.setattr(runner, "_forward",
                        lambda ids, sites=(), **kw: calls.append(1) or real(ids, sites, **kw))
    targets = [(Address("head", 1, h), IV["resample"]) for h in range(4)]
    runner.prepare(runner.needs_for(targets))
    n_batches = len(runner.batches)
    assert len(calls) == 2 * n_batches  # one clean pass, one corrupt pass
    runner.patched_logits(targets)
    runner.patched_logits(targets[:1])
    assert len(calls) == 4 * n_batches  # then one pass per claim, nothing re-recorded


def _wrap(loaded: Any, model: torch.nn.Module) -> Any:
    """``loaded`` with another model object (same architecture map)."""
    return type("Edited", (), {"adapter": loaded.adapter, "model": model})()


def test_zero_pos_embed_equals_zeroing_the_position_table(tiny_loaded: Any) -> None:
    loaded = tiny_loaded("gpt2")
    runner = runner_for(loaded, word_rows(4, lengths=(5,)))
    got = runner.patched_logits([(Address("pos_embed"), IV["zero"])])
    edited = copy.deepcopy(loaded.model)
    with torch.no_grad():
        edited.transformer.wpe.weight.zero_()
    torch.testing.assert_close(got, reference_logits(edited, runner), atol=1e-5, rtol=0)


def test_zero_unembed_gives_zero_logits(tiny_loaded: Any) -> None:
    runner = runner_for(tiny_loaded("neox"), word_rows(3))
    got = runner.patched_logits([(Address("unembed"), IV["zero"])], ["last"])
    assert got.abs().max() == 0


def test_mean_by_a_column_uses_each_groups_own_mean(tiny_loaded: Any) -> None:
    loaded = tiny_loaded("gpt2")
    rows = word_rows(6, lengths=(6,))
    for i, row in enumerate(rows):
        row["template"] = f"t{i}"  # one row per template: its mean is itself
    runner = runner_for(loaded, rows)
    target = [(Address("head", 1, 0), IV["mean"]), (Address("mlp", 0), IV["mean"])]
    torch.testing.assert_close(runner.patched_logits(target, mean_by="template"),
                               runner.logits("clean"), atol=1e-5, rtol=0)
    assert (runner.patched_logits(target) - runner.logits("clean")).abs().max() > 1e-4
    for row in rows:
        row["template"] = "same"
    pooled = runner_for(loaded, rows)
    torch.testing.assert_close(pooled.patched_logits(target, mean_by="template"),
                               pooled.patched_logits(target), atol=1e-6, rtol=0)
    with pytest.raises(DataError, match="no column 'tmpl'"):
        pooled.patched_logits(target, mean_by="tmpl")


def test_mean_corrupt_with_identical_corrupt_prompts_equals_mean(tiny_loaded: Any) -> None:
    loaded = tiny_loaded("llama")
    rows = word_rows(5, lengths=(6,))
    for row in rows:
        row["corrupt"] = row["prompt"]
    runner = runner_for(loaded, rows)
    target = [(Address("head", 0, 1), IV["mean"])]
    other = [(Address("head", 0, 1), IV["mean_corrupt"])]
    torch.testing.assert_close(runner.patched_logits(other), runner.patched_logits(target),
                               atol=1e-6, rtol=0)


# --- failures of the forward pass ----------------------------------------------------------


class _OutOfMemoryAbove:
    """A forward that runs out of memory for more than ``limit`` prompts at once."""

    def __init__(self, model: torch.nn.Module, limit: int, error: type[BaseException]) -> None:
        self.real, self.limit, self.error = model.forward, limit, error
        self.sizes: list[int] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        size = int(kwargs["input_ids"].shape[0])
        self.sizes.append(size)
        if size > self.limit:
            raise self.error("CUDA out of memory. Tried to allocate 20.00 GiB") \
                if self.error is RuntimeError else self.error()
        return self.real(*args, **kwargs)


@pytest.mark.parametrize("error", [torch.OutOfMemoryError, MemoryError, RuntimeError])
def test_out_of_memory_halves_the_batch_and_gives_the_same_values(
        error: type[BaseException], tiny_loaded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = tiny_loaded("gpt2")
    rows = word_rows(10, lengths=(6,))
    expected_runner = runner_for(loaded, rows)
    target = [(Address("head", 1, 0), IV["mean"])]
    expected = expected_runner.patched_logits(target)
    expected_pattern = expected_runner.pattern(0, 1)[0]
    lines: list[str] = []
    runner = runner_for(loaded, rows, progress=lines.append)
    fake = _OutOfMemoryAbove(loaded.model, 3, error)
    monkeypatch.setattr(loaded.model, "forward", fake)
    got = runner.patched_logits(target)
    pattern = runner.pattern(0, 1)[0]
    monkeypatch.undo()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pattern, expected_pattern, rtol=1e-5, atol=1e-6)
    assert fake.sizes[:3] == [10, 5, 3]  # halved until it fits, then kept at that size
    assert all(size <= 3 for size in fake.sizes[2:])
    assert any("out of memory with 10 prompts" in line and "retrying with 5" in line
               for line in lines)


def test_out_of_memory_with_one_prompt_is_a_located_error(
        tiny_loaded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from mechcheck.errors import RunError

    loaded = tiny_loaded("gpt2")
    runner = runner_for(loaded, word_rows(4, lengths=(6,)))
    monkeypatch.setattr(loaded.model, "forward", _OutOfMemoryAbove(loaded.model, 0,
                                                                    torch.OutOfMemoryError))
    with pytest.raises(RunError) as info:
        runner.logits("clean")
    monkeypatch.undo()
    assert "ran out of memory on cpu even with one prompt at a time" in info.value.message
    assert info.value.key == "--mechcheck-batch-size"
    assert "--mechcheck-batch-size" in (info.value.hint or "")


def test_a_failing_forward_is_a_run_error_naming_the_cause_and_is_not_retried(
        tiny_loaded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from mechcheck.errors import RunError

    loaded = tiny_loaded("gpt2")
    runner = runner_for(loaded, word_rows(4, lengths=(6,)))
    calls: list[int] = []

    def broken(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise ValueError("the model refuses")

    monkeypatch.setattr(loaded.model, "forward", broken)
    for _ in range(2):
        with pytest.raises(RunError) as info:
            runner.logits("clean")
        assert info.value.message.startswith("the shared clean run failed: ValueError: the "
                                             "model refuses (raised in ")
        assert "in broken)" in info.value.message
    monkeypatch.undo()
    assert len(calls) == 1  # the failed shared pass is remembered, not run again


def test_an_intervention_that_raises_names_itself_and_leaves_no_hook(tiny_loaded: Any) -> None:
    from mechcheck.engine.hooks import hook_count
    from mechcheck.errors import RunError

    def explode(current: torch.Tensor, source: torch.Tensor | None) -> torch.Tensor:
        raise KeyError("no such thing")

    loaded = tiny_loaded("gpt2")
    runner = runner_for(loaded, word_rows(4, lengths=(6,)))
    bad = Intervention(name="explode", base_run="clean", source=None, replace=explode)
    with pytest.raises(RunError) as info:
        runner.patched_logits([(Address("head", 1, 0), bad)])
    assert "the patched run (explode on blocks.1.attn.head.0) failed: KeyError" in str(info.value)
    assert "in explode)" in str(info.value)
    assert hook_count(loaded.model) == 0


def test_unknown_position_names_suggest_the_right_case_and_list_the_names(
        tiny_loaded: Any) -> None:
    loaded = tiny_loaded("gpt2")
    runner = runner_for(loaded, word_rows(4, lengths=(6,)))
    with pytest.raises(DataError) as info:
        runner.patched_logits([(Address("head", 1, 0), IV["zero"])], at=["end"])
    assert info.value.key == "at"
    assert "defines no position named 'end'" in info.value.message
    assert "did you mean 'END'?" in (info.value.hint or "")
    assert "END, S" in (info.value.hint or "")


def test_run_many_out_of_memory_runs_fewer_sets_per_pass_with_the_same_values(
        tiny_loaded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = tiny_loaded("gpt2")
    rows = word_rows(4, lengths=(6,))
    sets = [[(Address("head", 1, h), IV["mean"])] for h in range(4)]
    expected = runner_for(loaded, rows).run_many("clean", sets)
    runner = runner_for(loaded, rows, batch_size=16)  # 4 sets of 4 prompts in one pass
    runner.prepare(runner.needs_for([t for s in sets for t in s]))
    fake = _OutOfMemoryAbove(loaded.model, 8, torch.OutOfMemoryError)
    monkeypatch.setattr(loaded.model, "forward", fake)
    got = runner.run_many("clean", sets)
    monkeypatch.undo()
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert fake.sizes == [16, 8, 8]  # four sets at once, then two and two
