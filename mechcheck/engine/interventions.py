"""Interventions: what replaces a component's activation in a patched run.

An intervention is declarative: which prompts the patched run feeds the model
(``base_run``), which recorded activations supply the replacement (``source``), and a
pure function that builds the replacement from the current activation and that source.
The engine (:mod:`mechcheck.engine`) installs it through the one hook owner,
:mod:`mechcheck.engine.hooks`, at the positions a claim's ``at:`` selects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["BUILTIN_INTERVENTIONS", "Intervention"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Intervention:
    """A named way to replace activations.

    Attributes:
        name: the name claim files use (``ablation: mean``).
        base_run: ``"clean"`` or ``"corrupt"``: the prompts of the patched run.
        source: the recording that supplies replacement values: ``"clean"`` or
            ``"corrupt"`` (the same row's activation in that run), ``"mean"`` (the
            clean run's mean over the dataset, per position), ``"corrupt_mean"`` (the
            same over the corrupt prompts) or None.
        replace: ``(current [b, pos, w], source [b, pos, w] | None) -> replacement``.
        description: one line for reports and failure messages.
    """

    name: str
    base_run: str
    source: str | None
    replace: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
    description: str = ""

    @property
    def needs_corrupt(self) -> bool:
        return "corrupt" in (self.base_run, self.source) or self.source == "corrupt_mean"


def _zeros(current: torch.Tensor, source: torch.Tensor | None) -> torch.Tensor:
    return torch.zeros_like(current)


def _source(current: torch.Tensor, source: torch.Tensor | None) -> torch.Tensor:
    assert source is not None
    return source.to(current.dtype)


BUILTIN_INTERVENTIONS = (
    Intervention(name="zero", base_run="clean", source=None, replace=_zeros,
                 description="zero-ablate"),
    Intervention(name="mean", base_run="clean", source="mean", replace=_source,
                 description="mean-ablate (clean-prompt mean per position)"),
    Intervention(name="mean_corrupt", base_run="clean", source="corrupt_mean",
                 replace=_source,
                 description="mean-ablate with the corrupt prompts' mean per position "
                 "(Wang et al.'s knockout over p_ABC)"),
    Intervention(name="resample", base_run="clean", source="corrupt", replace=_source,
                 description="resample-ablate (activation on the row's corrupt prompt)"),
    Intervention(name="noise", base_run="clean", source="corrupt", replace=_source,
                 description="noise (patch corrupt activations into the clean run)"),
    Intervention(name="denoise", base_run="corrupt", source="clean", replace=_source,
                 description="denoise (patch clean activations into the corrupt run)"),
)
