"""Interventions: what replaces a component's activation in a patched run.

An intervention is declarative: which prompts the patched run feeds the model
(``base_run``), where the replacement values come from (a :class:`Source`, as data),
and a pure function that builds the replacement from the current activation and that
source.  The engine (:mod:`mechcheck.engine.runner`) installs it through the one hook
owner, :mod:`mechcheck.engine.hooks`, at the positions a claim's ``at:`` selects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import torch

__all__ = ["BUILTIN_INTERVENTIONS", "Intervention", "Source"]

RUNS = ("clean", "corrupt")


@dataclass(frozen=True, slots=True)
class Source:
    """Where replacement values come from.

    Attributes:
        run: ``"clean"`` or ``"corrupt"``: the shared run whose activation at the same
            component supplies the values.
        reduce: None for the same row's activation; ``"mean"`` for the mean over the
            rows (per position).
        by: with ``reduce="mean"``, a data column: the mean over the rows sharing the
            row's value (Wang et al.'s per-template means).  A claim's ``mean_by:``
            sets it.
    """

    run: str
    reduce: Literal["mean"] | None = None
    by: str | None = None

    def __post_init__(self) -> None:
        if self.run not in RUNS:
            raise ValueError(f"Source.run must be 'clean' or 'corrupt', got {self.run!r}")
        if self.reduce not in (None, "mean"):
            raise ValueError(f"Source.reduce must be None or 'mean', got {self.reduce!r}")
        if self.by is not None and self.reduce != "mean":
            raise ValueError("Source.by applies to reduce='mean' only")

    def describe(self) -> str:
        what = f"the {self.run} run's" if self.reduce is None else f"the {self.run} mean"
        return what + (f" per {self.by}" if self.by else "")


_NAMED_SOURCES = {
    "clean": Source("clean"),
    "corrupt": Source("corrupt"),
    "mean": Source("clean", "mean"),
    "corrupt_mean": Source("corrupt", "mean"),
}


def as_source(value: Source | str | None) -> Source | None:
    """A :class:`Source` from itself, None, or one of the names plugins used before
    sources were data (``"clean"``, ``"corrupt"``, ``"mean"``, ``"corrupt_mean"``)."""
    if value is None or isinstance(value, Source):
        return value
    if isinstance(value, str) and value in _NAMED_SOURCES:
        return _NAMED_SOURCES[value]
    raise ValueError(f"an intervention's source must be a mechcheck.interventions.Source "
                     f"or None, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Intervention:
    """A named way to replace activations.

    Attributes:
        name: the name claim files use (``ablation: mean``).
        base_run: ``"clean"`` or ``"corrupt"``: the prompts of the patched run.
        source: where the replacement values come from (a :class:`Source`), or None
            when ``replace`` needs none.  The names ``"clean"``, ``"corrupt"``,
            ``"mean"`` and ``"corrupt_mean"`` are accepted and turned into sources.
        replace: ``(current [b, pos, w], source [b, pos, w] | None) -> replacement``.
        description: one line for reports and failure messages.
    """

    name: str
    base_run: str
    source: Source | None
    replace: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", as_source(self.source))

    @property
    def needs_corrupt(self) -> bool:
        return self.base_run == "corrupt" or (self.source is not None
                                               and self.source.run == "corrupt")

    def with_mean_by(self, column: str | None) -> Intervention:
        """This intervention with its mean taken per value of ``column``."""
        if column is None or self.source is None or self.source.reduce != "mean":
            return self
        return replace(self, source=replace(self.source, by=column))


def _zeros(current: torch.Tensor, source: torch.Tensor | None) -> torch.Tensor:
    return torch.zeros_like(current)


def _source(current: torch.Tensor, source: torch.Tensor | None) -> torch.Tensor:
    assert source is not None
    return source.to(current.dtype)


BUILTIN_INTERVENTIONS = (
    Intervention(name="zero", base_run="clean", source=None, replace=_zeros,
                 description="zero-ablate"),
    Intervention(name="mean", base_run="clean", source=Source("clean", "mean"),
                 replace=_source,
                 description="mean-ablate (clean-prompt mean per position)"),
    Intervention(name="mean_corrupt", base_run="clean", source=Source("corrupt", "mean"),
                 replace=_source,
                 description="mean-ablate with the corrupt prompts' mean per position "
                 "(Wang et al.'s knockout over p_ABC)"),
    Intervention(name="resample", base_run="clean", source=Source("corrupt"),
                 replace=_source,
                 description="resample-ablate (activation on the row's corrupt prompt)"),
    Intervention(name="noise", base_run="clean", source=Source("corrupt"), replace=_source,
                 description="noise (patch corrupt activations into the clean run)"),
    Intervention(name="denoise", base_run="corrupt", source=Source("clean"), replace=_source,
                 description="denoise (patch clean activations into the corrupt run)"),
)
