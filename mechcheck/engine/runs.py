"""What one forward pass over the dataset gives back: :class:`RunResult`.

A run's recordings are kept per batch of equal-length prompts (as the engine ran
them); the accessors here give them per row, in the dataset's row order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mechcheck.addresses import Address
from mechcheck.errors import ClaimSpecError

if TYPE_CHECKING:
    from mechcheck.engine.interventions import Intervention
    from mechcheck.models.adapter import ModelAdapter

__all__ = ["PatchFn", "PatchRequest", "Placed", "RunResult"]

PatchFn = Callable[[torch.Tensor, np.ndarray], torch.Tensor]
"""A patch as a function: ``(current [b, pos, w], rows) -> replacement [b, pos, w]``.

``current`` is the component's slice of the activation for the prompts ``rows``
(dataset row indices) of one batch; the replacement acts at the positions the run's
``at`` selects.  Each position's replacement must depend on that position's activation
only (as a projection, an added vector or a replaced value does): a run whose patches
all act from position ``p`` on computes positions ``p ..`` only, and the patch then
sees zeros before ``p`` (:mod:`mechcheck.engine.suffixes`)."""


@dataclass(frozen=True, slots=True)
class Placed:
    """A patch that acts at its own positions, not the run's ``at``.

    ``ctx.run(base, {"head 0.1": Placed(corrupt_run, ["END"]), "head 1.0": clean_run})``
    patches head 0.1 at END only and head 1.0 wherever the run's ``at`` says (path
    patching freezes every head everywhere but moves the senders at ``at`` only).

    Attributes:
        spec: what replaces the activation (an intervention, a run, a function).
        at: positions, as a claim's ``at:`` (None: every position).
    """

    spec: Any
    at: Sequence[int | str] | None = None


@dataclass(frozen=True, slots=True)
class PatchRequest:
    """One patched run a claim will ask for, as :meth:`Runner.patched_logits` takes it.

    Claims announce their requests in their needs (``Needs.patched``) so that the
    runner can plan them: :meth:`Runner.sweep` computes several at once.

    Attributes:
        targets: what to patch: ``(address, intervention)`` pairs.
        at: the claim's ``at:`` as a tuple (None: every position).
        mean_by: the claim's ``mean_by:`` (a data column), or None.
    """

    targets: tuple[tuple[Address, Intervention], ...]
    at: tuple[int | str, ...] | None = None
    mean_by: str | None = None

    @classmethod
    def of(cls, targets: Sequence[tuple[Address, Intervention]],
           at: Sequence[int | str] | None = None,
           mean_by: str | None = None) -> PatchRequest:
        """The request of ``patched_logits(targets, at, mean_by=mean_by)``."""
        return cls(tuple((a, iv) for a, iv in targets),
                   None if at is None else tuple(at), mean_by)


@dataclass(frozen=True, eq=False)
class RunResult:
    """The outcome of one run: last-position logits and recorded activations.

    Attributes:
        base: ``"clean"`` or ``"corrupt"``: the prompts the model read.
        logits: ``[n, vocab]`` last-position logits, row order.
        all_logits: with ``positions="all"``, one ``[pos, vocab]`` tensor per row;
            else None.
        recorded: the addresses recorded in this run.
    """

    base: str
    logits: torch.Tensor
    recorded: tuple[Address, ...] = ()
    all_logits: list[torch.Tensor] | None = None
    _store: Mapping[Any, Sequence[torch.Tensor]] = field(default_factory=dict, repr=False)
    _batches: tuple[np.ndarray, ...] = field(default=(), repr=False)
    _adapter: ModelAdapter | None = field(default=None, repr=False)

    def activations(self, address: Address | str) -> list[torch.Tensor]:
        """Per row, the recorded activation of ``address``: ``[pos, width]`` (its own
        columns only: a head's ``d_head``, a neuron's 1), or ``[query, key]`` for a
        ``pattern``.

        Raises:
            ClaimSpecError: the address was not recorded in this run.
        """
        address = Address.parse(address)
        per_batch = self.per_batch(address)
        out: list[torch.Tensor | None] = [None] * sum(len(b) for b in self._batches)
        for rows, values in zip(self._batches, per_batch):
            for i, row in enumerate(rows):
                out[int(row)] = values[min(i, values.shape[0] - 1)]
        return out  # type: ignore[return-value]

    def per_batch(self, address: Address | str) -> list[torch.Tensor]:
        """The recorded activation of ``address`` per batch, ``[b, pos, width]``
        (``[b, query, key]`` for a pattern), in the engine's batch order."""
        address = Address.parse(address)
        adapter = self._adapter
        key: Any = None
        if adapter is not None:
            key = (("pattern", int(address.layer)) if address.site == "pattern"  # type: ignore[arg-type]
                   else adapter.site(address))
        if key not in self._store:
            known = ", ".join(str(a) for a in self.recorded) or "none"
            raise ClaimSpecError(f"{address} was not recorded in this {self.base} run "
                                 f"(recorded: {known})",
                                 hint="name it in record= when asking for the run")
        if address.site == "pattern":
            head = int(address.index)  # type: ignore[arg-type]
            return [p[:, head] for p in self._store[key]]
        cols = adapter.columns(address)  # type: ignore[union-attr]
        return [values[..., cols] for values in self._store[key]]

    def stacked(self, address: Address | str) -> torch.Tensor:
        """``[n, pos, width]`` of ``address`` when every prompt has the same length.

        Raises:
            ClaimSpecError: the prompts differ in length (use :meth:`activations`).
        """
        rows = self.activations(address)
        if len({tuple(r.shape) for r in rows}) > 1:
            raise ClaimSpecError("the prompts differ in length, so their activations do "
                                 "not stack", hint="use RunResult.activations(address), "
                                 "one tensor per row")
        return torch.stack(rows)
