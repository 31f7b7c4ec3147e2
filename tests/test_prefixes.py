"""Prefix reuse in plain runs (mechcheck.engine.prefixes) against full forward passes.

Every run is made twice: by a runner whose shared passes kept their blocks' outputs
(so blocks before the first patched one return them instead of computing, and the
final block may see the last position only) and by a runner with
``MECHCHECK_PLAIN_SWEEP=1`` (every block of every run computes).  The models are the
tiny 3-layer GPT-2, GPT-NeoX and Llama (grouped-query) of tests/test_sweep.py, with
perturbed biases and norms and their matrices scaled up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch

from mechcheck.addresses import Address
from mechcheck.engine import prefixes, sweep
from mechcheck.engine.runner import Runner
from mechcheck.engine.runs import Placed
from tests.test_sweep import ARCHS, IV, LAYERS, TOL, _runner, models  # noqa: F401

A = Address.parse


def _steer(seed: int) -> Callable[[torch.Tensor, np.ndarray], torch.Tensor]:
    """A PatchFn adding a fixed random vector (as a steering claim does)."""
    def add(current: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return current + 3 * torch.randn(current.shape[-1], generator=g).to(current.dtype)
    return add


@contextmanager
def _plain(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with monkeypatch.context() as m:
        m.setenv(sweep.PLAIN_SWITCH, "1")
        yield


@contextmanager
def _block_calls(runner: Runner, layer: int) -> Iterator[list[int]]:
    """Count the calls of block ``layer``'s attention module (not called when the
    block returns a recording)."""
    adapter = runner.loaded.adapter
    calls: list[int] = []
    module = adapter.module(adapter.attention_module(layer))
    handle = module.register_forward_hook(lambda *_: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert (a - b).abs().max().item() < TOL


def _patch_cases(runner: Runner) -> list[tuple[dict[Address, Any], dict[str, Any]]]:
    corrupt = runner.run("corrupt", record=[A("blocks.2.attn.head.1"), A("blocks.1.resid_post")])
    return [
        ({A("blocks.1.resid_post"): _steer(0)}, {"at": ["last"]}),
        ({A("blocks.2.attn.head.1"): corrupt}, {}),
        ({A("blocks.1.resid_post"): Placed(corrupt, ["S"])}, {}),
        ({A("blocks.2.mlp"): _steer(1)}, {"at": ["S", "last"]}),
        ({A("blocks.1.attn"): IV["zero"], A("blocks.2.attn.head.0"): IV["mean"]}, {}),
        ({A("ln_final"): _steer(2)}, {}),
        ({A("blocks.1.resid_pre"): _steer(3)}, {"positions": "all"}),
        ({A("blocks.1.mlp"): _steer(4)}, {"record": [A("blocks.2.resid_post"),
                                                      A("blocks.1.attn.head.2")]}),
    ]


@pytest.mark.parametrize("arch", ARCHS)
def test_a_run_from_the_kept_prefix_equals_the_full_forward(
        arch: str, models: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    loaded = models[arch]
    fast = _runner(loaded)
    with _plain(monkeypatch):
        plain = _runner(loaded)
        plain_cases = _patch_cases(plain)
        wanted = [plain.run("clean", [(a, s) for a, s in patches.items()],
                            **{k: v for k, v in kw.items()}) for patches, kw in plain_cases]
    for (patches, kw), expected in zip(_patch_cases(fast), wanted):
        got = fast.run("clean", list(patches.items()), **kw)
        _close(got.logits, expected.logits)
        assert not torch.equal(expected.logits, plain.logits("clean"))  # the patch acts
        for address in kw.get("record", ()):
            for x, y in zip(got.activations(address), expected.activations(address)):
                _close(x, y)
        if kw.get("positions") == "all":
            assert got.all_logits is not None and expected.all_logits is not None
            for x, y in zip(got.all_logits, expected.all_logits):
                _close(x, y)


@pytest.mark.parametrize("arch", ARCHS)
def test_run_many_groups_sets_by_their_first_block(
        arch: str, models: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    loaded = models[arch]
    sets = [[(A(f"blocks.{la}.resid_post"), _steer(la))] for la in range(LAYERS)]
    sets += [[(A("blocks.0.attn.head.1"), IV["zero"]), (A("blocks.2.mlp"), _steer(9))],
             [(A("embed"), _steer(5))], []]
    with _plain(monkeypatch):
        plain = _runner(loaded)
        wanted = [plain.run("clean", s).logits for s in sets]
    fast = _runner(loaded)
    for got, expected in zip(fast.run_many("clean", sets), wanted):
        _close(got, expected)


def test_blocks_before_the_first_patch_are_not_computed(
        models: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    loaded = models["llama"]
    patch = [(A("blocks.2.resid_pre"), _steer(0))]
    fast = _runner(loaded)
    fast.logits("clean")
    with _block_calls(fast, 0) as first, _block_calls(fast, 2) as third:
        fast.run("clean", patch)
        fast.run_many("clean", [patch, patch])
    assert first == [] and len(third) == 2 * len(fast.batches)
    with _plain(monkeypatch):
        plain = _runner(loaded)
        plain.logits("clean")
        with _block_calls(plain, 0) as first:
            plain.run("clean", patch)
        assert len(first) == len(plain.batches)


def test_past_the_budget_every_kth_block_is_kept_and_runs_start_earlier(
        models: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    loaded = models["gpt2"]
    fast = _runner(loaded)
    per_block = len(fast.dataset) * fast.dataset.max_len * loaded.adapter.dims.d_model * 4
    fast.prefixes.budget = 2 * per_block  # room for 2 of the 3 blocks: keep every 2nd
    assert fast.prefixes.layers_to_keep(len(fast.dataset), fast.dataset.max_len, 4) == [0, 2]
    assert fast.prefixes.start("clean", 0, 2) == (0, None)  # nothing kept yet
    fast.logits("clean")
    start, output = fast.prefixes.start("clean", 0, 2)
    assert start == 1 and output is not None  # block 1 is not kept: start after block 0
    patch = [(A("blocks.2.attn.head.3"), IV["zero"])]
    with _plain(monkeypatch):
        wanted = _runner(loaded).run("clean", patch).logits
    _close(fast.run("clean", patch).logits, wanted)


def test_first_block_of_addresses() -> None:
    from mechcheck.models.archs import BUILTIN_ARCHS  # noqa: F401 - adapters below

    class Dims:
        n_layers = 4

    class Adapter:
        dims = Dims()

    adapter: Any = Adapter()
    first = prefixes.first_block
    assert first(adapter, [A("blocks.2.mlp"), A("blocks.3.attn.head.1")]) == 2
    assert first(adapter, [A("ln_final")]) == 4
    assert first(adapter, [A("blocks.2.mlp"), A("embed")]) == 0
    assert first(adapter, [A("blocks.2.mlp"), A("unembed")]) is None
    assert first(adapter, [A("blocks.1.attn.head.0.pattern")]) is None
    assert first(adapter, []) is None
