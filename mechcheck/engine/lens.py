"""Reading the residual stream through the model's own head: :class:`Lens`.

The logit lens (nostalgebraist 2020) applies the final norm and the unembedding to a
residual vector taken before the last block; direct logit attribution applies them to
one component's output with the norm's scale *frozen* from the clean run, so that the
components' contributions add up to the final logits.  Both need the final norm as an
affine map, which :func:`norm_map` reads off the model's own module numerically (so
LayerNorm, RMSNorm and Gemma's ``1 + weight`` RMSNorm need no per-architecture code):

* ``bias`` = N(0) (a LayerNorm's bias; zero for an RMSNorm),
* ``centered``: N(c * 1) = N(0) for any c (a LayerNorm removes the mean),
* ``weight``: from N at a vector with known mean and variance.

The map is checked against the module on a random vector; a norm of another shape is a
:class:`~mechcheck.errors.ModelLoadError` that says so.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from mechcheck.addresses import Address
from mechcheck.errors import ModelLoadError

if TYPE_CHECKING:
    from mechcheck.models.adapter import ModelAdapter

__all__ = ["Lens", "NormMap", "norm_map"]


@dataclass(frozen=True, slots=True)
class NormMap:
    """The final norm as ``N(x) = center(x) / scale(x) * weight + bias`` (float64).

    Attributes:
        centered: whether the norm subtracts the mean (LayerNorm) or not (RMSNorm).
        weight: ``[d_model]``, the effective per-coordinate gain.
        bias: ``[d_model]``, zero for an RMSNorm.
        eps: the epsilon inside the square root.
    """

    centered: bool
    weight: torch.Tensor
    bias: torch.Tensor
    eps: float

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., 1]``: the norm's divisor at ``x`` (its standard deviation or RMS)."""
        x = x.double()
        if self.centered:
            return torch.sqrt(x.var(dim=-1, unbiased=False, keepdim=True) + self.eps)
        return torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)

    def linear(self, c: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The norm's linear part applied to ``c`` with the divisor frozen at ``scale``
        (no bias): what one summand of the residual stream contributes to N(x)."""
        c = c.double()
        if self.centered:
            c = c - c.mean(dim=-1, keepdim=True)
        return c / scale * self.weight

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x, self.scale(x)) + self.bias


def _eps(module: torch.nn.Module) -> float:
    for name in ("eps", "variance_epsilon", "epsilon"):
        value = getattr(module, name, None)
        if isinstance(value, (int, float)):
            return float(value)
    return 0.0


def norm_map(module: torch.nn.Module, d_model: int, *, name: str = "final norm") -> NormMap:
    """Read ``module`` (a LayerNorm or RMSNorm over ``d_model``) as a :class:`NormMap`.

    Raises:
        ModelLoadError: the module is not such a norm (checked on a random vector).
    """
    norm = copy.deepcopy(module).double()
    eps = _eps(module)
    with torch.no_grad():
        zero = torch.zeros(d_model, dtype=torch.float64)
        bias = norm(zero)
        centered = bool(torch.allclose(norm(torch.full_like(zero, 3.0)), bias, atol=1e-6))
        if centered:
            probe = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(d_model)],
                                 dtype=torch.float64)
        else:
            probe = torch.ones(d_model, dtype=torch.float64)
        guess = NormMap(centered=centered, weight=torch.ones_like(zero), bias=bias, eps=eps)
        unit = guess.linear(probe, guess.scale(probe))
        weight = (norm(probe) - bias) / unit
        found = NormMap(centered=centered, weight=weight, bias=bias, eps=eps)
        x = torch.randn(d_model, generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64) * 2.0 + 0.5
        ok = torch.allclose(found(x), norm(x), rtol=1e-6, atol=1e-6)
    if not ok:
        raise ModelLoadError(
            f"the model's {name} ({type(module).__name__}) is neither a LayerNorm nor an "
            "RMSNorm: N(x) = (x - mean) / std * w + b or x / rms * w did not match it",
            hint="the logit lens and direct effects need the final norm as an affine map "
            "of x / scale(x); register an adapter whose ln_final is such a norm")
    return found


class Lens:
    """The model's final norm and unembedding, bound to one model.

    ``lens.logits(resid)`` is the logit lens (the model's own modules, in its dtype);
    ``lens.norm`` the final norm as a :class:`NormMap` (float64), for direct effects;
    ``lens.directions(tokens)`` the unembedding rows of tokens.
    """

    def __init__(self, adapter: ModelAdapter) -> None:
        self.adapter = adapter
        self._norm_module: Any = adapter.module(adapter.site(Address(site="ln_final")).module)
        self._unembed: Any = adapter.module(adapter.site(Address(site="unembed")).module)
        self._norm: NormMap | None = None

    @property
    def norm(self) -> NormMap:
        if self._norm is None:
            self._norm = norm_map(self._norm_module, self.adapter.dims.d_model)
        return self._norm

    def logits(self, resid: torch.Tensor) -> torch.Tensor:
        """``[..., vocab]``: the final norm then the unembedding applied to ``resid``."""
        weight = self._unembed.weight
        with torch.no_grad():
            out = self._unembed(self._norm_module(resid.to(weight.dtype).to(weight.device)))
        return out.float().cpu()

    def directions(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[..., d_model]`` float64: the unembedding rows of ``tokens``."""
        weight = self._unembed.weight.detach().double().cpu()
        return weight[tokens.long().cpu()]

    def unembed_bias(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[...]`` float64: the unembedding's bias at ``tokens`` (zero when it has none)."""
        bias = getattr(self._unembed, "bias", None)
        if bias is None:
            return torch.zeros(tokens.shape, dtype=torch.float64)
        return bias.detach().double().cpu()[tokens.long().cpu()]

