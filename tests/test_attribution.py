"""Attribution patching (mechcheck.engine.attribution) against plain torch autograd.

The reference here registers its own hooks on the model's modules (by their paths in
each architecture), runs one prompt at a time, takes the gradient of the metric with
torch.autograd and forms (a' - a) . grad by hand.  It shares no code with the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from mechcheck.addresses import Address
from mechcheck.data import tokenize_rows
from mechcheck.engine.attribution import attribution_scores, rank_agreement, screen
from mechcheck.engine.interventions import BUILTIN_INTERVENTIONS
from mechcheck.engine.runner import Runner
from mechcheck.errors import ClaimSpecError
from mechcheck.metrics import BUILTIN_METRICS
from tests.conftest import word_rows

IV = {iv.name: iv for iv in BUILTIN_INTERVENTIONS}
METRIC = {m.name: m for m in BUILTIN_METRICS}

# The module whose input (pre) or output (post) holds each address, per architecture.
PATHS = {
    "gpt2": {"head": ("transformer.h.{L}.attn.c_proj", "pre"),
             "mlp": ("transformer.h.{L}.mlp", "post"),
             "neuron": ("transformer.h.{L}.mlp.c_proj", "pre"),
             "ln_final": ("transformer.ln_f", "post")},
    "neox": {"head": ("gpt_neox.layers.{L}.attention.dense", "pre"),
             "mlp": ("gpt_neox.layers.{L}.mlp", "post"),
             "neuron": ("gpt_neox.layers.{L}.mlp.dense_4h_to_h", "pre"),
             "ln_final": ("gpt_neox.final_layer_norm", "post")},
    "llama": {"head": ("model.layers.{L}.self_attn.o_proj", "pre"),
              "mlp": ("model.layers.{L}.mlp", "post"),
              "neuron": ("model.layers.{L}.mlp.down_proj", "pre"),
              "ln_final": ("model.norm", "post")},
}


def _where(loaded: Any, arch: str, address: str) -> tuple[torch.nn.Module, str, slice]:
    """The module, hook direction and columns of a written address, by hand."""
    parts = address.split()
    kind = parts[0]
    d_head = loaded.model.config.hidden_size // loaded.model.config.num_attention_heads
    path, when = PATHS[arch][kind]
    cols = slice(None)
    if kind == "head":
        layer, head = (int(x) for x in parts[1].split("."))
        cols = slice(head * d_head, (head + 1) * d_head)
    elif kind == "neuron":
        layer, unit = (int(x) for x in parts[1].split("."))
        cols = slice(unit, unit + 1)
    elif kind == "mlp":
        layer = int(parts[1])
    else:
        layer = 0
    return loaded.model.get_submodule(path.format(L=layer)), when, cols


def _forward(loaded: Any, arch: str, address: str, ids: list[int],
             replace: Callable[[torch.Tensor], torch.Tensor] | None = None,
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """One prompt's last-position logits and the address's activation [pos, width]
    as it reached the module (before ``replace``), with grad enabled."""
    module, when, cols = _where(loaded, arch, address)
    seen: dict[str, torch.Tensor] = {}

    def change(x: torch.Tensor) -> torch.Tensor:
        seen["act"] = x
        if replace is None:
            return x
        y = x.clone()
        y[..., cols] = replace(x[..., cols])
        return y

    if when == "pre":
        def pre(mod: Any, args: tuple) -> tuple:
            return (change(args[0]), *args[1:])
        handle = module.register_forward_pre_hook(pre)
    else:
        def post(mod: Any, args: tuple, out: Any) -> Any:
            if isinstance(out, tuple):
                return (change(out[0]), *out[1:])
            return change(out)
        handle = module.register_forward_hook(post)
    try:
        logits = loaded.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1]
    finally:
        handle.remove()
    return logits.float(), seen["act"][0][..., cols]


def _logit_diff(logits: torch.Tensor, row: Any, ds: Any) -> torch.Tensor:
    return logits[ds.answers[row]] - logits[ds.wrongs[row]]


def _reference(loaded: Any, arch: str, ds: Any, address: str, how: str, positions: Any,
               steps: int = 0) -> np.ndarray:
    """(a' - a) . dM/da per prompt, by hand: gradient at the base run (``steps`` = 0) or
    averaged over midpoints of the path from a to a'."""
    base_prompts = ds.corrupts if how == "denoise" else ds.prompts
    other = ds.prompts if how == "denoise" else ds.corrupts
    with torch.no_grad():
        acts = [_forward(loaded, arch, address, list(p))[1] for p in base_prompts]
        sources = [_forward(loaded, arch, address, list(p))[1] for p in other] \
            if other is not None else None
    out = np.zeros(len(ds))
    for row, ids in enumerate(base_prompts):
        a = acts[row].detach()
        if how == "zero":
            target = torch.zeros_like(a)
        elif how == "mean":
            target = torch.stack([x.detach() for x in acts]).mean(dim=0)
        else:  # resample (corrupt activation), denoise (clean activation)
            assert sources is not None
            target = sources[row].detach()
        keep = torch.zeros(a.shape[0], 1, dtype=torch.bool)
        for p in positions(row, a.shape[0]):
            keep[p] = True
        delta = torch.where(keep, target - a, torch.zeros_like(a))
        alphas = [0.0] if steps == 0 else [(j + 0.5) / steps for j in range(steps)]
        total = torch.zeros_like(a)
        for alpha in alphas:
            point = (a + alpha * delta).clone().requires_grad_(True)
            logits, _ = _forward(loaded, arch, address, list(ids), lambda _x, p=point: p)
            (grad,) = torch.autograd.grad(_logit_diff(logits, row, ds), [point])
            total += grad
        out[row] = float((delta * total / len(alphas)).sum())
    return out


def _exact(loaded: Any, arch: str, ds: Any, address: str, how: str, positions: Any) -> np.ndarray:
    """M(patched) - M(base) per prompt by hand (one prompt at a time)."""
    out = np.zeros(len(ds))
    with torch.no_grad():
        acts = [_forward(loaded, arch, address, list(p))[1] for p in ds.prompts]
        for row, ids in enumerate(ds.prompts):
            a = acts[row]
            keep = torch.zeros(a.shape[0], 1, dtype=torch.bool)
            for p in positions(row, a.shape[0]):
                keep[p] = True
            target = torch.zeros_like(a) if how == "zero" else \
                torch.stack(acts).mean(dim=0)
            new = torch.where(keep, target, a)
            clean, _ = _forward(loaded, arch, address, list(ids))
            patched, _ = _forward(loaded, arch, address, list(ids), lambda _x, n=new: n)
            out[row] = float(_logit_diff(patched, row, ds) - _logit_diff(clean, row, ds))
    return out


def _setup(tiny_loaded: Any, arch: str, *, n: int = 6, lengths: tuple[int, ...] = (6, 8),
           batch_size: int = 4) -> tuple[Any, Runner]:
    loaded = tiny_loaded(arch)
    ds = tokenize_rows(word_rows(n, seed=5, lengths=lengths), loaded.tokenizer)
    return loaded, Runner(loaded, ds, batch_size=batch_size)


def _close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Equal to float32 rounding, relative to the largest value; and not all zero
    (the random tiny models' effects are small, 1e-6 to 1e-2)."""
    scale = float(np.abs(want).max())
    assert scale > 1e-8, f"{what}: the reference is zero, the test would prove nothing"
    # 1e-3 of the largest: runs that start at their first patched block round the
    # activations differently (seen: 3e-8 on values of 1e-5 to 1e-4 for tiny gpt2)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * scale, err_msg=what)


def _every(row: int, length: int) -> list[int]:
    return list(range(length))


def _s_last(row: int, length: int) -> list[int]:
    return [2, length - 1]  # S: the token that the corrupt prompts change


def _last(row: int, length: int) -> list[int]:
    return [length - 1]


@pytest.mark.parametrize("arch", ["gpt2", "neox", "llama"])
def test_matches_hand_written_autograd(tiny_loaded: Any, arch: str) -> None:
    """Heads (GQA in llama), an MLP and a neuron, zero / resample / denoise, at all
    positions or at S and the last one: the engine's estimate equals the hand-made one."""
    loaded, runner = _setup(tiny_loaded, arch, n=4, batch_size=3)
    written = ["head 0.1", "head 1.3", "mlp 0", "neuron 1.5"]
    addresses = [Address.parse(w) for w in written]
    for how, at, positions in [("zero", None, _every), ("resample", ["S", "last"], _s_last),
                               ("denoise", None, _every)]:
        got = attribution_scores(runner, addresses, IV[how], METRIC["logit_diff"], at=at)
        assert got.shape == (len(runner.dataset), len(written))
        for j, w in enumerate(written):
            want = _reference(loaded, arch, runner.dataset, w, how, positions)
            _close(got[:, j], want, f"{arch} {w} {how}")


def test_mean_ablation_and_named_positions(tiny_loaded: Any) -> None:
    """Mean ablation (the mean over prompts per position) at a named position."""
    loaded, runner = _setup(tiny_loaded, "llama", lengths=(7,))
    got = attribution_scores(runner, [Address.parse("head 0.2")], IV["mean"],
                             METRIC["logit_diff"], at=["S"])
    want = _reference(loaded, "llama", runner.dataset, "head 0.2", "mean",
                      lambda row, length: [2])
    _close(got[:, 0], want, "mean at S")


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_integrated_gradients_match_hand_written_path(tiny_loaded: Any, arch: str) -> None:
    loaded, runner = _setup(tiny_loaded, arch)
    got = attribution_scores(runner, [Address.parse("mlp 0")], IV["zero"],
                             METRIC["logit_diff"], ig_steps=3)
    want = _reference(loaded, arch, runner.dataset, "mlp 0", "zero", _every, steps=3)
    _close(got[:, 0], want, f"{arch} ig")


def test_integrated_gradients_tend_to_the_exact_effect(tiny_loaded: Any) -> None:
    """An address alone at its site: the midpoint rule's error shrinks like 1/k^2,
    and at 32 steps the estimate is the exact patching effect (to 1e-3 of it)."""
    loaded, runner = _setup(tiny_loaded, "neox", n=5, batch_size=8)
    exact = _exact(loaded, "neox", runner.dataset, "mlp 0", "zero", _every)
    errors = {}
    for k in (0, 2, 8, 32):
        got = attribution_scores(runner, [Address.parse("mlp 0")], IV["zero"],
                                 METRIC["logit_diff"], ig_steps=k)[:, 0]
        errors[k] = float(np.abs(got - exact).max())
    scale = float(np.abs(exact).max())
    assert scale > 0.05
    assert errors[0] > 1e-3 * scale  # plain attribution is only first-order here
    assert errors[2] > errors[8] > errors[32]
    assert errors[32] < 1e-3 * scale, errors


@pytest.mark.parametrize("arch", ["gpt2", "neox", "llama"])
def test_exact_where_the_metric_is_linear(tiny_loaded: Any, arch: str) -> None:
    """logit_diff is linear in the final norm's output (the unembedding is linear), so
    the first-order estimate of zero- or mean-ablating it at the last position is the
    exact effect, measured here by hand."""
    loaded, runner = _setup(tiny_loaded, arch, lengths=(7,))
    for how in ("zero", "mean"):
        got = attribution_scores(runner, [Address.parse("ln_final")], IV[how],
                                 METRIC["logit_diff"], at=["last"])[:, 0]
        exact = _exact(loaded, arch, runner.dataset, "ln_final", how, _last)
        _close(got, exact, f"{arch} ln_final {how}")


def test_batching_does_not_change_the_estimate(tiny_loaded: Any) -> None:
    loaded = tiny_loaded("gpt2")
    ds = tokenize_rows(word_rows(7, seed=2), loaded.tokenizer)
    addresses = loaded.adapter.resolve(["blocks.*.attn.head.*"])
    one = attribution_scores(Runner(loaded, ds, batch_size=1), addresses, IV["zero"],
                             METRIC["logprob"])
    many = attribution_scores(Runner(loaded, ds, batch_size=16), addresses, IV["zero"],
                              METRIC["logprob"])
    np.testing.assert_allclose(one, many, rtol=1e-4, atol=1e-6)


def test_screen_keeps_the_largest_estimated_drops(tiny_loaded: Any) -> None:
    loaded, runner = _setup(tiny_loaded, "gpt2")
    heads = list(loaded.adapter.resolve(["blocks.*.attn.head.*"]))
    per_prompt = attribution_scores(runner, heads, IV["zero"], METRIC["logit_diff"])
    drops = -per_prompt.mean(axis=0)
    kept, estimates = screen(runner, heads, IV["zero"], METRIC["logit_diff"], top_k=3)
    np.testing.assert_allclose(estimates, drops, rtol=1e-6)
    assert kept == tuple(sorted(np.argsort(-drops)[:3].tolist()))
    # a group's estimate is the sum of its members'; kl's drop is its rise
    kept, estimates = screen(runner, [heads[:2], heads[2:4]], IV["zero"],
                             METRIC["logit_diff"], top_k=1)
    np.testing.assert_allclose(estimates, [drops[:2].sum(), drops[2:4].sum()], rtol=1e-6)
    assert kept == (int(np.argmax(estimates)),)


def test_rank_agreement() -> None:
    rho, overlap = rank_agreement([3.0, 2.0, 1.0, 0.0], [30.0, 10.0, 20.0, 0.0], top=2)
    assert rho == pytest.approx(0.8)
    assert overlap == 0.5
    rho, overlap = rank_agreement([1, 2, 3], [1, 2, 3], top=5)
    assert (rho, overlap) == (pytest.approx(1.0), 1.0)


def test_errors_are_located(tiny_loaded: Any) -> None:
    loaded, runner = _setup(tiny_loaded, "gpt2")
    head = [Address.parse("head 0.0")]
    cases = [
        (dict(metric=METRIC["accuracy"]), "metric", "not differentiable"),
        (dict(metric=METRIC["kl"]), "metric", "gradient there is zero"),
        (dict(mean_by="template"), "mean_by", "mean_by applies to mean ablations"),
        (dict(ig_steps=-1), "ig_steps", "whole number >= 0"),
        (dict(addresses=[Address.parse("blocks.0.attn.head.0.pattern")]), "components",
         "cannot patch"),
    ]
    for change, key, words in cases:
        kwargs: dict[str, Any] = {"addresses": head, "metric": METRIC["logit_diff"],
                                  **change}
        with pytest.raises(ClaimSpecError) as info:
            attribution_scores(runner, kwargs.pop("addresses"), IV["zero"],
                               kwargs.pop("metric"), **kwargs)
        assert info.value.key == key and words in info.value.message, info.value
        assert info.value.hint
    with pytest.raises(ClaimSpecError) as info:
        screen(runner, head, IV["zero"], METRIC["logit_diff"], top_k=0)
    assert info.value.key == "top_k"
    # kl is fine with integrated gradients (its gradient is zero only at the clean run)
    got = attribution_scores(runner, head, IV["zero"], METRIC["kl"], ig_steps=2)
    assert np.all(got >= -1e-6)
