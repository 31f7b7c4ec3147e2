"""Hooks are removed on every path: a property test over random interventions, some of
which raise in the middle of the forward pass."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mechcheck.addresses import Address
from mechcheck.data import tokenize_rows
from mechcheck.engine.hooks import hook_count, hooked
from mechcheck.engine.interventions import BUILTIN_INTERVENTIONS, Intervention
from mechcheck.engine.runner import Runner
from mechcheck.errors import RunError
from tests.conftest import word_rows


class Boom(RuntimeError):
    pass


def _raising(after: int) -> Intervention:
    calls = {"n": 0}

    def replace(current: torch.Tensor, source: torch.Tensor | None) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] > after:
            raise Boom("raised inside the forward pass")
        return torch.zeros_like(current)

    return Intervention(name="boom", base_run="clean", source=None, replace=replace)


SITES = ["blocks.0.attn.head.1", "blocks.1.attn.head.*", "blocks.0.mlp", "blocks.1.attn",
         "blocks.1.resid_pre", "blocks.0.resid_post", "blocks.1.mlp.neuron.3", "embed",
         "ln_final"]
CLEAN_IVS = [iv for iv in BUILTIN_INTERVENTIONS if iv.base_run == "clean"]

claims = st.fixed_dictionaries({
    "arch": st.sampled_from(["gpt2", "neox", "llama"]),
    "components": st.lists(st.sampled_from(SITES), min_size=1, max_size=4, unique=True),
    "intervention": st.sampled_from(CLEAN_IVS),
    "raise_after": st.none() | st.integers(min_value=0, max_value=5),
    "at": st.none() | st.sampled_from([["last"], [0], ["S", -1]]),
})


@pytest.fixture(scope="module")
def runners(tiny_loaded: Any) -> dict[str, Runner]:
    return {arch: Runner(tiny_loaded(arch), tokenize_rows(word_rows(5, lengths=(5, 7)),
                                                          tiny_loaded(arch).tokenizer),
                         batch_size=2)
            for arch in ("gpt2", "neox", "llama")}


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(claim=claims)
def test_no_hook_is_left_behind(claim: dict[str, Any], runners: dict[str, Runner]) -> None:
    runner = runners[claim["arch"]]
    model = runner.loaded.model
    before_hooks = hook_count(model)
    before_logits = runner.logits("clean").clone()
    iv = claim["intervention"] if claim["raise_after"] is None else _raising(claim["raise_after"])
    dims = runner.loaded.adapter.dims
    targets = [(a, iv) for text in claim["components"] for a in Address.parse(text).expand(dims)]
    try:
        runner.patched_logits(targets, claim["at"])
    except RunError as exc:  # the engine names the failed run; the cause is kept
        assert isinstance(exc.__cause__, Boom)
    assert hook_count(model) == before_hooks
    with torch.inference_mode():
        ids = torch.tensor([runner.dataset.prompts[0]])
        again = model(input_ids=ids).logits[0, -1]
    torch.testing.assert_close(again, before_logits[0], atol=1e-5, rtol=0)


def test_hooked_removes_only_its_own_hooks(tiny_loaded: Any) -> None:
    loaded = tiny_loaded("gpt2")
    module = loaded.model.get_submodule("transformer.h.0.mlp")
    users = module.register_forward_hook(lambda *args: None)
    try:
        before = hook_count(loaded.model)
        site = loaded.adapter.site(Address("mlp", 0))
        with pytest.raises(Boom):
            with hooked(loaded.adapter, patches={site: _raise}, record=[site]):
                assert hook_count(loaded.model) == before + 1
                loaded.model(input_ids=torch.tensor([[1, 2, 3]]))
        assert hook_count(loaded.model) == before
        assert len(module._forward_hooks) == 1  # the user's hook survived
    finally:
        users.remove()


def _raise(act: torch.Tensor) -> torch.Tensor:
    raise Boom("patch failed")
