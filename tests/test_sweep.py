"""The exact sweep engine (mechcheck.engine.sweep) against the plain path.

Every request is computed twice: by ``Runner.sweep`` / a planned ``patched_logits``
(prefix reuse, the final block at the last position only, copies batched) and by the
plain patched run of a second runner (one full forward per request, which
tests/test_engine.py checks against hand-made weight edits); zero head ablations are
also checked here against zeroing the head's rows of the output projection.  The
models are tiny 3-layer GPT-2, GPT-NeoX and Llama (grouped-query: 4 query heads, 2
key/value heads) with perturbed biases and norms, their matrices scaled up so that
one head's effect on the logits is far above the 1e-5 tolerance.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from mechcheck.addresses import Address
from mechcheck.data import tokenize_rows
from mechcheck.engine import sweep
from mechcheck.engine.hooks import hook_count, replayed
from mechcheck.engine.interventions import BUILTIN_INTERVENTIONS, Intervention
from mechcheck.engine.runner import Needs, Runner
from mechcheck.engine.runs import PatchRequest
from mechcheck.errors import DataError
from mechcheck.models.archs import BUILTIN_ARCHS
from mechcheck.models.loading import load_model
from tests.conftest import word_rows
from tests.test_engine import reference_logits, zero_input_slice

ARCHS = ("gpt2", "neox", "llama")
IV = {iv.name: iv for iv in BUILTIN_INTERVENTIONS}
LAYERS = 3
TOL = 1e-5


@pytest.fixture(scope="module")
def models(tiny_folder: Callable[..., Path]) -> dict[str, Any]:
    """Own copies (not the shared fixtures), matrices scaled x3 for larger effects."""
    out = {}
    for arch in ARCHS:
        loaded = load_model(str(tiny_folder(arch, n_layers=LAYERS)), archs=BUILTIN_ARCHS,
                            device="cpu")
        with torch.no_grad():
            for p in loaded.model.parameters():
                if p.dim() == 2:
                    p.mul_(3.0)
        out[arch] = loaded
    return out


def _rows(n: int = 10) -> list[dict[str, Any]]:
    rows = word_rows(n, seed=5)
    for i, row in enumerate(rows):
        row["template"] = f"t{i % 3}"
    return rows


def _runner(loaded: Any, rows: list[dict[str, Any]] | None = None) -> Runner:
    return Runner(loaded, tokenize_rows(rows or _rows(), loaded.tokenizer))


def _requests(n_layers: int) -> list[PatchRequest]:
    one = PatchRequest.of
    last = n_layers - 1
    return [
        *(one([(Address("head", la, h), IV["zero"])]) for la in range(n_layers) for h in range(4)),
        one([(Address("head", 1, 2), IV["mean"])], at=["last"]),
        one([(Address("head", 0, 1), IV["mean"])], at=[1]),
        one([(Address("head", 1, 0), IV["resample"])], at=["S"]),
        one([(Address("head", 0, 3), IV["mean"])], mean_by="template"),
        one([(Address("head", 1, 1), IV["mean_corrupt"])], at=["S", "last"], mean_by="template"),
        one([(Address("head", 1, 2), IV["denoise"])]),
        one([(Address("resid_pre", 1), IV["denoise"])], at=["S"]),
        one([(Address("neuron", 1, 5), IV["zero"]), (Address("neuron", 1, 9), IV["zero"])]),
        one([(Address("mlp", 0), IV["resample"])]),
        one([(Address("mlp", last), IV["mean"])]),
        one([(Address("attn", 1), IV["zero"])], at=[-2]),
        one([(Address("resid_pre", 2), IV["noise"])], at=["S"]),
        one([(Address("resid_post", 0), IV["mean"])]),
        one([(Address("resid_post", last), IV["zero"])]),
        # a circuit: the earliest layer decides the prefix
        one([(Address("head", 2, 1), IV["zero"]), (Address("head", 1, 3), IV["mean"]),
             (Address("mlp", 2), IV["resample"])]),
        one([(Address("v", 1, 3), IV["resample"]), (Address("q", 2, 0), IV["zero"])]),
        one([(Address("embed"), IV["mean"])], at=["S"]),
        one([(Address("ln_final"), IV["resample"])]),
    ]


def _plain(runner: Runner, request: PatchRequest) -> torch.Tensor:
    return runner._plain_patched(request.targets, request.at, mean_by=request.mean_by)


def _worst(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.mark.parametrize(("arch", "tokens"), [(a, sweep.TOKENS_PER_PASS) for a in ARCHS]
                         + [("llama", 1)])  # copies batched, or one at a time
def test_sweep_equals_the_plain_path(arch: str, tokens: int, models: dict[str, Any],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sweep, "TOKENS_PER_PASS", tokens)
    loaded = models[arch]
    requests = _requests(LAYERS)
    fast, plain = _runner(loaded), _runner(loaded)
    low_rank: list[int] = []
    real = sweep.Sweeper._low_rank

    def counted(self: Any, base: str, layer: int, *args: Any) -> Any:
        low_rank.append(layer)
        return real(self, base, layer, *args)

    monkeypatch.setattr(sweep.Sweeper, "_low_rank", counted)
    computed = fast._sweeper().compute(requests)
    assert set(computed) == set(requests)  # every one took the fast path
    heads = [r for r in requests if all(a.site == "head" for a, _ in r.targets)]
    assert low_rank and len(heads) > 3  # the head ablations took the low-rank update
    clean = plain.logits("clean")
    for request, got in zip(requests, fast.sweep(requests)):
        want = _plain(plain, request)
        assert _worst(got, want) < TOL, request
        assert _worst(computed[request], want) < TOL, request
        assert _worst(want, clean) > 100 * TOL or request.at is not None, request
    assert hook_count(loaded.model) == 0


@pytest.mark.parametrize("arch", ARCHS)
def test_zero_head_sweep_equals_zeroing_the_heads_output_projection_rows(
        arch: str, models: dict[str, Any]) -> None:
    loaded = models[arch]
    runner = _runner(loaded)
    heads = [(0, 1), (1, 3), (2, 2)]
    got = runner.sweep([PatchRequest.of([(Address("head", la, h), IV["zero"])])
                        for la, h in heads])
    d_head, arch_map = loaded.adapter.d_head, loaded.adapter.arch
    for (layer, head), logits in zip(heads, got):
        edited = copy.deepcopy(loaded.model)
        proj = edited.get_submodule(f"{arch_map.blocks}.{layer}.{arch_map.attn_out_proj}")
        zero_input_slice(proj, slice(head * d_head, (head + 1) * d_head))
        assert _worst(logits, reference_logits(edited, runner)) < TOL, (layer, head)


def test_the_final_block_runs_at_the_last_position_only_when_nothing_there_is_patched(
        models: dict[str, Any]) -> None:
    runner = _runner(models["llama"])
    engine = runner._sweeper()
    plans = {str(r.targets[0][0]): engine._plan(r) for r in _requests(LAYERS)}
    assert plans["blocks.1.attn.head.2"].last_only  # type: ignore[union-attr]
    assert plans["blocks.1.attn.head.2"].start == 1  # type: ignore[union-attr]
    assert plans["blocks.1.attn.head.2"].low_rank  # type: ignore[union-attr]
    assert not plans["blocks.2.mlp"].low_rank  # type: ignore[union-attr]
    assert not plans["blocks.2.mlp"].last_only  # type: ignore[union-attr]
    assert not plans["blocks.2.resid_post"].last_only  # type: ignore[union-attr]
    assert not plans["ln_final"].last_only  # type: ignore[union-attr]
    assert plans["blocks.2.attn.head.1"].start == 1  # type: ignore[union-attr]  # the circuit
    assert plans["embed"].start == 0  # type: ignore[union-attr]


def test_planned_patched_logits_come_from_the_sweep_and_equal_the_plain_path(
        models: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = models["gpt2"]
    requests = _requests(LAYERS)[::2]
    fast, plain = _runner(loaded), _runner(loaded)
    fast.prepare(Needs(patched=list(requests)))
    calls: list[int] = []
    real = sweep.Sweeper.compute
    monkeypatch.setattr(sweep.Sweeper, "compute",
                        lambda self, chunk: calls.append(len(chunk)) or real(self, chunk))
    monkeypatch.setattr(sweep, "CACHE_BYTES", 5 * 4 * 10 * loaded.model.config.vocab_size)
    for request in requests:
        got = fast.patched_logits(request.targets, request.at, mean_by=request.mean_by)
        assert _worst(got, _plain(plain, request)) < TOL, request
    assert calls == [5, 5, 5]  # 15 requests in chunks of 5 (the cache's bound), in order
    assert fast._pending == [] and fast._sweeper().ready == {}
    # a planned request the fast path cannot take does not discard its chunk's results
    bad = PatchRequest.of([(Address("head", 0, 0), IV["zero"])], at=["NOPE"])
    fast.prepare(Needs(patched=[requests[0], bad, requests[1]]))
    assert _worst(fast.patched_logits(requests[0].targets), _plain(plain, requests[0])) < TOL
    with pytest.raises(DataError, match="NOPE"):
        fast.patched_logits(bad.targets, bad.at)
    assert requests[1] in fast._sweeper().ready
    fast.patched_logits(requests[1].targets, requests[1].at, mean_by=requests[1].mean_by)
    assert calls == [5, 5, 5, 3] and fast._sweeper().ready == {}
    # not planned: the plain path
    again = requests[0]
    got = fast.patched_logits(again.targets, again.at)
    assert calls == [5, 5, 5, 3] and _worst(got, _plain(plain, again)) < TOL


def test_the_switch_turns_the_fast_path_off(models: dict[str, Any],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    runner = _runner(models["gpt2"])
    request = _requests(LAYERS)[5]
    runner.prepare(Needs(patched=[request]))
    monkeypatch.setenv(sweep.PLAIN_SWITCH, "1")
    monkeypatch.setattr(sweep.Sweeper, "compute", lambda self, chunk: pytest.fail("fast"))
    runner.patched_logits(request.targets)
    runner.sweep([request])


def test_requests_the_fast_path_cannot_take_fall_back(models: dict[str, Any]) -> None:
    loaded = models["gpt2"]
    runner, plain = _runner(loaded), _runner(loaded)
    adapter = loaded.adapter
    sae = PatchRequest.of([(Address.parse("blocks.0.resid_post.sae.s.3"), IV["zero"])])
    unembed = PatchRequest.of([(Address("unembed"), IV["zero"])])
    a_run = PatchRequest.of([(Address("head", 0, 0), runner.shared("clean"))])  # type: ignore[list-item]
    a_function = PatchRequest.of([(Address("head", 0, 0), lambda cur, rows: cur)])  # type: ignore[list-item]
    mixed = PatchRequest.of([(Address("head", 0, 0), IV["zero"]),
                             (Address("head", 1, 0), IV["denoise"])])
    for request in (sae, unembed, a_run, a_function, mixed):
        assert runner._sweeper()._plan(request) is None, request
        assert sweep.start_layer(adapter, request) is None or request is mixed
    # bad positions and columns fall back too, so the plain run reports them as usual
    bad_at = PatchRequest.of([(Address("head", 0, 0), IV["zero"])], at=["NOPE"])
    bad_by = PatchRequest.of([(Address("head", 0, 0), IV["mean"])], mean_by="nope")
    good = _requests(LAYERS)[4]
    assert set(runner._sweeper().compute([bad_at, bad_by, good])) == {good}
    [got] = runner.sweep([unembed])
    assert _worst(got, _plain(plain, unembed)) == 0


def test_an_error_inside_the_replay_restores_the_model(models: dict[str, Any]) -> None:
    loaded = models["neox"]
    runner = _runner(loaded)
    blocks = loaded.adapter.module(loaded.adapter.arch.blocks)

    def boom(current: torch.Tensor, source: torch.Tensor | None) -> torch.Tensor:
        raise RuntimeError("boom")

    bad = Intervention(name="boom", base_run="clean", source=None, replace=boom)
    request = PatchRequest.of([(Address("head", 2, 0), bad)])
    with pytest.raises(RuntimeError, match="boom"):
        runner._sweeper().compute([request])
    assert hook_count(loaded.model) == 0
    assert all("forward" not in block.__dict__ for block in blocks)
    # the plain path reports it as a located run error; sweep() falls back to it
    from mechcheck.errors import RunError

    with pytest.raises(RunError, match="boom"):
        runner.sweep([request])
    with pytest.raises(ValueError, match="inside"):
        with replayed(loaded.adapter, 2, torch.zeros(1), last_only=["gpt_neox.layers.2.mlp"]):
            assert all("forward" in blocks[i].__dict__ for i in range(2))
            raise ValueError("inside")
    assert hook_count(loaded.model) == 0
    assert all("forward" not in block.__dict__ for block in blocks)
    # a forward the module already had as an attribute comes back
    own = blocks[0].forward
    blocks[0].forward = own  # type: ignore[method-assign]
    try:
        with replayed(loaded.adapter, 1, torch.zeros(1)):
            assert blocks[0].forward is not own
        assert blocks[0].__dict__["forward"] is own
    finally:
        del blocks[0].forward


def test_a_sweep_on_each_checkpoint_equals_its_plain_path(tiny_folder: Callable[..., Path]) -> None:
    for seed in (11, 12):  # two checkpoints of one model: each has its own runner
        loaded = load_model(str(tiny_folder("gpt2", seed=seed, n_layers=LAYERS)),
                            archs=BUILTIN_ARCHS, device="cpu")
        requests = _requests(LAYERS)[:12]
        fast, plain = _runner(loaded), _runner(loaded)
        for request, got in zip(requests, fast.sweep(requests)):
            assert _worst(got, _plain(plain, request)) < TOL


CLAIMS = """\
model: {model}
data: rows.jsonl
claims:
  - id: head_{layer}_{head}
    kind: necessary
    components: ["blocks.{layer}.attn.head.{head}"]
    ablation: {ablation}
    metric: logit_diff
    min_drop: 0.0
"""


def test_a_file_of_necessary_claims_gives_the_same_results_with_and_without_the_plan(
        tmp_path: Path, tiny_folder: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from mechcheck.api import evaluate_path

    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in _rows(12)))
    model = tiny_folder("llama", n_layers=LAYERS)
    header, claim = CLAIMS.split("claims:\n")
    text = header + "claims:\n" + "".join(
        claim.format(layer=la, head=h, ablation=("zero", "mean", "resample")[h % 3])
        for la in range(LAYERS) for h in range(4)).replace("{model}", str(model))
    path = tmp_path / "test_heads.yaml"
    path.write_text(text.format(model=model))
    calls: list[int] = []
    real = sweep.Sweeper.compute
    monkeypatch.setattr(sweep.Sweeper, "compute",
                        lambda self, chunk: calls.append(len(chunk)) or real(self, chunk))
    fast = evaluate_path(path)
    assert calls == [LAYERS * 4]  # the file's 12 patched runs in one chunk
    monkeypatch.setenv(sweep.PLAIN_SWITCH, "1")
    plain = evaluate_path(path)
    assert [r.verdict for r in fast] == [r.verdict for r in plain]
    assert all(r.verdict in ("pass", "fail") for r in fast), [r.message for r in fast]
    for a, b in zip(fast, plain):
        assert a.id == b.id and a.n == b.n and a.seed == b.seed
        assert a.effect == pytest.approx(b.effect, abs=1e-5)
        assert (a.ci_low, a.ci_high) == pytest.approx((b.ci_low, b.ci_high), abs=1e-5)
        # float32 rounding: effects of ~1e-4 that differ by ~3e-10 move a p-value near
        # 0.04 by ~1e-5 (seen with one numpy/scipy build, not another)
        assert a.p_value == pytest.approx(b.p_value, rel=1e-3)


def test_a_run_two_claims_plan_is_computed_once_and_read_by_both(
        models: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = models["llama"]
    request = PatchRequest.of([(Address("head", 1, 2), IV["mean"])], at=["last"])
    other = PatchRequest.of([(Address("head", 0, 1), IV["zero"])])
    runner = _runner(loaded)
    runner.prepare(Needs(patched=[request, other, request]))
    calls: list[int] = []
    real = sweep.Sweeper.compute
    monkeypatch.setattr(sweep.Sweeper, "compute",
                        lambda self, chunk: calls.append(len(chunk)) or real(self, chunk))
    first = runner.patched_logits(request.targets, request.at)
    runner.patched_logits(other.targets)
    second = runner.patched_logits(request.targets, request.at)
    assert calls == [3]  # one chunk; the repeated run is not recomputed on the plain path
    assert torch.equal(first, second)
    assert runner._sweeper().ready == {}
