"""mechcheck.engine.lens: the final norm read off the model, and the lens's logits.

The norm map is checked against the module itself and against the textbook formulas
written here, on tiny models whose norm weights and biases are perturbed (so a map that
dropped the bias or the weight would be visibly wrong), and on a Gemma-style norm whose
gain is ``1 + weight``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from mechcheck.addresses import Address
from mechcheck.engine.lens import Lens, norm_map
from mechcheck.errors import ModelLoadError


class _GemmaNorm(torch.nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.eps = 1e-6
        self.weight = torch.nn.Parameter(torch.randn(d, generator=torch.Generator().manual_seed(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return x * (1.0 + self.weight)


class _NotANorm(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x)


def _textbook(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm or RMSNorm written out from its definition, from the module's own
    parameters (float64)."""
    x = x.double()
    w = module.weight.detach().double()
    if isinstance(module, torch.nn.LayerNorm):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + module.eps) * w + module.bias.detach().double()
    eps = module.variance_epsilon
    return x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + eps) * w


@pytest.mark.parametrize("arch", ["gpt2", "neox", "llama"])
def test_norm_map_is_the_model_final_norm(arch: str, tiny_loaded: Any) -> None:
    loaded = tiny_loaded(arch)
    adapter = loaded.adapter
    module = adapter.module(adapter.site(Address(site="ln_final")).module)
    found = norm_map(module, adapter.dims.d_model)
    x = torch.randn(5, adapter.dims.d_model, generator=torch.Generator().manual_seed(2)) * 3
    assert found.centered == isinstance(module, torch.nn.LayerNorm)
    assert torch.allclose(found(x), _textbook(module, x), atol=1e-5)
    # the perturbation is visible: a map that forgot the weight or the bias is off
    assert (found.weight - 1).abs().max() > 0.01
    if found.centered:
        assert found.bias.abs().max() > 0.01


def test_frozen_linear_parts_add_up_to_the_norm(tiny_loaded: Any) -> None:
    """With the divisor frozen at x's own, the summands' linear parts plus the bias are
    N(x): what makes direct effects add up."""
    loaded = tiny_loaded("gpt2")
    lens = Lens(loaded.adapter)
    d = loaded.adapter.dims.d_model
    parts = torch.randn(4, d, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x = parts.sum(0)
    scale = lens.norm.scale(x)
    total = sum(lens.norm.linear(p, scale) for p in parts) + lens.norm.bias
    assert torch.allclose(total, lens.norm(x), atol=1e-10)


def test_gemma_style_gain_is_read_as_one_plus_weight() -> None:
    module = _GemmaNorm(16)
    found = norm_map(module, 16)
    assert not found.centered
    assert torch.allclose(found.weight, 1.0 + module.weight.detach().double(), atol=1e-6)


def test_a_module_that_is_not_a_norm_is_a_load_error() -> None:
    with pytest.raises(ModelLoadError, match="neither a LayerNorm nor an RMSNorm"):
        norm_map(_NotANorm(), 8)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_lens_at_the_last_residual_is_the_model_output(arch: str, tiny_loaded: Any) -> None:
    loaded = tiny_loaded(arch)
    ids = torch.tensor([[1, 5, 7, 9, 11]])
    # the final norm's input, caught by a hook written here (output_hidden_states would
    # do, but transformers then leaves its own recording hooks on the shared model)
    captured: dict[str, torch.Tensor] = {}
    norm = loaded.adapter.module(loaded.adapter.arch.ln_final)
    handle = norm.register_forward_pre_hook(lambda m, a: captured.setdefault("x", a[0]))
    try:
        with torch.no_grad():
            out = loaded.model(ids)
    finally:
        handle.remove()
    got = Lens(loaded.adapter).logits(captured["x"])
    assert torch.allclose(got, out.logits.float(), atol=1e-5)
