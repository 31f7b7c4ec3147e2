"""Suffix runs (mechcheck.engine.suffixes) against full forward passes.

A run whose patches all act from position ``p`` on computes only positions ``p ..``
after the shared run's keys and values.  Every run here is made twice, by a runner
that kept its shared passes' keys and values and by one with ``MECHCHECK_PLAIN_SWEEP=1``
(every position of every block computes), on the tiny perturbed GPT-2, GPT-NeoX and
Llama (grouped-query) models of tests/test_sweep.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch

from mechcheck.addresses import Address
from mechcheck.engine.runner import Runner
from mechcheck.engine.runs import Placed
from mechcheck.engine.suffixes import Suffix, earliest_position, kv_pairs
from tests.test_prefixes import _close, _plain, _steer
from tests.test_sweep import ARCHS, IV, _runner, models  # noqa: F401

A = Address.parse


def _cases(runner: Runner) -> list[tuple[dict[Address, Any], dict[str, Any]]]:
    corrupt = runner.run("corrupt", record=[A("blocks.1.resid_post"), A("blocks.0.mlp")])
    return [
        ({A("blocks.1.resid_post"): _steer(0)}, {"at": ["last"]}),
        ({A("blocks.0.attn.head.1"): IV["zero"]}, {"at": ["last"]}),
        ({A("blocks.1.attn.head.2"): IV["mean"]}, {"at": [1]}),
        ({A("blocks.2.attn.head.0"): IV["resample"]}, {"at": ["S", "last"]}),
        ({A("blocks.1.resid_post"): Placed(corrupt, ["S"]),
          A("blocks.0.mlp"): Placed(corrupt, ["last"])}, {}),
        ({A("embed"): _steer(1)}, {"at": ["S", "last"]}),
        ({A("blocks.2.mlp"): _steer(2), A("blocks.0.attn"): IV["zero"]}, {"at": [2]}),
        ({A("ln_final"): _steer(3)}, {"at": ["last"]}),
    ]


@pytest.mark.parametrize("arch", ARCHS)
def test_a_suffix_run_equals_the_full_forward(
        arch: str, models: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    loaded = models[arch]
    with _plain(monkeypatch):
        plain = _runner(loaded)
        wanted = [plain.run("clean", list(p.items()), **kw).logits for p, kw in _cases(plain)]
    fast = _runner(loaded)
    fast.logits("corrupt")
    for (patches, kw), expected in zip(_cases(fast), wanted):
        got = fast.run("clean", list(patches.items()), **kw).logits
        _close(got, expected)
        assert not torch.equal(expected, plain.logits("clean"))  # the patch acts
    # run_many: copies of one batch in one pass, each from the group's first position
    sets = [list(p.items()) for p, kw in _cases(fast) if not kw]
    sets += [[(A("blocks.2.resid_pre"), Placed(_steer(4), ["last"]))],
             [(A("blocks.1.mlp"), Placed(_steer(5), [1]))]]
    with _plain(monkeypatch):
        plain_sets = [list(p.items()) for p, kw in _cases(plain) if not kw] + sets[-2:]
        wanted = [plain.run("clean", s).logits for s in plain_sets]
    for got, expected in zip(fast.run_many("clean", sets), wanted):
        _close(got, expected)


@contextmanager
def _lengths(runner: Runner, layer: int) -> Iterator[list[int]]:
    """The number of positions block ``layer``'s attention module sees, per call."""
    adapter = runner.loaded.adapter
    seen: list[int] = []
    module = adapter.module(adapter.attention_module(layer))

    def hook(module: Any, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        seen.append(int(hidden.shape[1]))

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


def test_only_the_positions_from_the_first_patched_one_are_computed(
        models: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    fast = _runner(models["llama"])
    fast.logits("clean")
    lengths = [len(fast.dataset.prompts[rows[0]]) for rows in fast.batches]
    with _lengths(fast, 1) as seen:
        fast.run("clean", [(A("blocks.0.mlp"), _steer(0))], at=["last"])
    assert seen == [1] * len(fast.batches)
    with _lengths(fast, 1) as seen:
        fast.run("clean", [(A("blocks.0.mlp"), _steer(0))], at=[2])
    assert seen == [n - 2 for n in lengths]
    with _lengths(fast, 1) as seen:  # a patch at position 0: every position
        fast.run("clean", [(A("blocks.0.mlp"), _steer(0))], at=[0, "last"])
    assert seen == lengths
    with _lengths(fast, 1) as seen:  # a recording needs every position
        fast.run("clean", [(A("blocks.0.mlp"), _steer(0))], at=["last"],
                 record=[A("blocks.1.resid_post")])
    assert seen == lengths
    with _plain(monkeypatch):
        plain = _runner(models["llama"])
        plain.logits("clean")
        with _lengths(plain, 1) as seen:
            plain.run("clean", [(A("blocks.0.mlp"), _steer(0))], at=["last"])
    assert seen == lengths


def test_suffix_runs_leave_the_kept_keys_and_values_as_they_were(
        models: dict[str, Any]) -> None:  # noqa: F811
    fast = _runner(models["gpt2"])
    fast.logits("clean")
    kept = fast.prefixes.kv("clean", 0)
    assert kept is not None
    before = [(k.clone(), v.clone()) for k, v in kept]
    patch = [(A("blocks.1.resid_post"), _steer(0))]
    first = fast.run("clean", patch, at=["last"]).logits
    assert torch.equal(fast.run("clean", patch, at=["last"]).logits, first)
    for copy in fast.run_many("clean", [patch, patch], at=["last"]):
        _close(copy, first)
    for (k, v), (k0, v0) in zip(fast.prefixes.kv("clean", 0), before):
        assert torch.equal(k, k0) and torch.equal(v, v0)


def test_earliest_position_and_unreadable_caches() -> None:
    masks = [torch.tensor([[False, False, True], [False, True, False]]),
             torch.tensor([[False, False, True], [False, False, True]])]
    assert earliest_position(masks) == 1
    assert earliest_position([torch.zeros(2, 3, dtype=torch.bool)]) == 0
    assert earliest_position([torch.ones(2, 3, dtype=torch.bool)]) == 0
    assert kv_pairs(object(), 2, 3) is None
    keys = torch.zeros(1, 2, 3, 4)

    class Layer:  # not a DynamicLayer (e.g. a sliding window)
        def __init__(self) -> None:
            self.keys, self.values = keys, keys

    class Cache:
        layers = [Layer(), Layer()]

    assert kv_pairs(Cache(), 2, 3) is None


def test_a_patch_sees_the_full_length_activation() -> None:
    seen: list[torch.Size] = []

    def patch(act: torch.Tensor) -> torch.Tensor:
        seen.append(act.shape)
        return act + torch.arange(act.shape[1], dtype=act.dtype).view(1, -1, 1)

    suffix = Suffix(2, [])
    out = suffix.patches({"site": patch})["site"](torch.zeros(3, 4, 5))
    assert seen == [torch.Size([3, 6, 5])]
    assert out.shape == (3, 4, 5) and out.is_contiguous()
    assert torch.equal(out[0, :, 0], torch.tensor([2.0, 3.0, 4.0, 5.0]))  # positions 2..5


def test_planned_sweeps_take_suffix_runs_too(
        models: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    from mechcheck.engine.runs import PatchRequest

    loaded = models["neox"]
    requests = [PatchRequest.of([(A("blocks.0.attn.head.1"), IV["mean"])], ["last"]),
                PatchRequest.of([(A("blocks.1.mlp"), IV["resample"])], [2]),
                PatchRequest.of([(A("blocks.0.attn.head.2"), IV["zero"])], None)]
    fast = _runner(loaded)
    fast._sweeper().compute(requests)  # the shared passes record what the runs read
    lengths = [len(fast.dataset.prompts[rows[0]]) for rows in fast.batches]
    with _lengths(fast, 2) as seen:
        got = fast._sweeper().compute(requests)  # the fast path itself, not a fallback
    assert set(got) == set(requests)
    # per batch: the last position (head 0.1, low-rank), from 2 (MLP 1), every position
    # (head 0.2), and one unpatched pass recording layer 0's attention for the low-rank
    # update
    assert sorted(seen) == sorted([1] * len(lengths) + [n - 2 for n in lengths] +
                                  lengths * 2)
    with _plain(monkeypatch):
        plain = _runner(loaded)
        for request in requests:
            _close(got[request], plain.patched_logits(request.targets, request.at))
