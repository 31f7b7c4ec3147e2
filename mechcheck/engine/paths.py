"""Path patching: the effect of some components on others through one route only.

Path patching (Wang et al. 2022, App. B; Goldowsky-Dill et al. 2023) asks how much of
a metric moves when the *senders* change only along their direct paths into the
*receivers* (a head's query, key or value input, or the logits):

1. the base run and the source run are the shared clean and corrupt runs (noising:
   base clean, source corrupt; denoising: the reverse);
2. a run on the base prompts in which the senders take the source run's values (at
   ``at``), every other attention head is frozen to its base-run value (and, with
   ``freeze="heads_and_mlps"``, every other MLP too; by default the MLPs are
   recomputed), recording the receivers' inputs;
3. a run on the base prompts in which only the receivers' inputs are replaced by the
   values recorded in (2); everything else is recomputed.

The metric of (3) against the base run is the path's effect.  For ``receivers =
"logits"`` the effect of the senders on the final residual alone is wanted, so run (2)
freezes every other head *and* MLP and is itself the patched run; the final norm is
recomputed.  Built only from :class:`~mechcheck.engine.context.ClaimContext` runs, so
a plugin can do the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from mechcheck.addresses import Address
from mechcheck.engine.runs import Placed, RunResult
from mechcheck.errors import ClaimSpecError

if TYPE_CHECKING:
    from mechcheck.engine.context import ClaimContext
    from mechcheck.engine.runner import Needs

__all__ = ["DIRECTIONS", "FREEZE", "LOGITS", "PathPatch", "path_needs", "path_patch"]

LOGITS = "logits"
DIRECTIONS = ("noise", "denoise")
FREEZE = ("heads", "heads_and_mlps")
Direction = Literal["noise", "denoise"]
Freeze = Literal["heads", "heads_and_mlps"]
_SENDER_SITES = ("head", "mlp")


@dataclass(frozen=True, slots=True)
class PathPatch:
    """The runs of one path patching.

    Attributes:
        base: the shared run the patched runs read (clean when noising).
        source: the shared run the senders' values come from.
        patched: the run whose metric is compared with ``base``'s.
        senders: the senders, expanded.
        receivers: the receivers' inputs (q/k/v addresses), or ``"logits"``.
    """

    base: RunResult
    source: RunResult
    patched: RunResult
    senders: tuple[Address, ...]
    receivers: tuple[Address, ...] | str


def runs_of(direction: str) -> tuple[str, str]:
    """``(base, source)`` run names of a direction."""
    if direction not in DIRECTIONS:
        raise ClaimSpecError(f"direction: got {direction!r}", key="direction",
                             hint="noise (corrupt senders into the clean run: is the path "
                             "necessary?) or denoise (clean into corrupt: is it sufficient?)")
    return ("clean", "corrupt") if direction == "noise" else ("corrupt", "clean")


def senders_of(ctx: ClaimContext, items: Sequence[Address | str],
               key: str = "senders") -> tuple[Address, ...]:
    """The senders, which must be heads or MLPs (``attn L`` stands for layer L's heads)."""
    senders: list[Address] = []
    for address in ctx.resolve(items, key):
        if address.site == "attn":
            senders.extend(ctx.resolve([f"blocks.{address.layer}.attn.head.*"], key))
        else:
            senders.append(address)
    for address in senders:
        if address.site not in _SENDER_SITES:
            raise ClaimSpecError(
                f"{key}: {address} cannot send along a path", key=key,
                hint="senders are heads (head 0.1, blocks.0.attn.head.*, attn 0) or MLPs "
                "(mlp 0)")
    return tuple(dict.fromkeys(senders))


def receivers_of(ctx: ClaimContext, items: Sequence[Address | str] | str,
                 senders: Sequence[Address], key: str = "receivers",
                 ) -> tuple[Address, ...] | str:
    """The receivers' inputs (q/k/v addresses downstream of every sender), or
    ``"logits"``."""
    if items == LOGITS or list(items) == [LOGITS]:
        return LOGITS
    receivers = ctx.resolve([i for i in items], key)
    for address in receivers:
        if address.site not in ("q", "k", "v"):
            raise ClaimSpecError(
                f"{key}: {address} is not a head's input", key=key,
                hint="a receiver is a head's query, key or value, e.g. "
                "blocks.1.attn.head.4.k, or logits for the direct path to the unembedding")
        late = [s for s in senders if int(s.layer) >= int(address.layer)]  # type: ignore[arg-type]
        if late:
            raise ClaimSpecError(
                f"{key}: {address} reads the residual stream before {late[0]} writes to "
                "it, so no path joins them", key=key,
                hint="a receiver must be in a later layer than every sender")
    return receivers


def _frozen(ctx: ClaimContext, senders: Sequence[Address], mlps: bool) -> list[Address]:
    pattern = ["blocks.*.attn.head.*", *(["blocks.*.mlp"] if mlps else [])]
    chosen = set(senders)
    return [a for a in ctx.resolve(pattern, "senders") if a not in chosen]


def path_needs(ctx: ClaimContext, senders: Sequence[Address | str],
               direction: str = "noise") -> Needs:
    """What path patching ``senders`` reads from the shared runs: every head and MLP
    of the base run (to freeze them) and the senders in the source run."""
    base, source = runs_of(direction)
    chosen = senders_of(ctx, senders)
    needs = ctx.record_needs(base, ctx.resolve(["blocks.*.attn.head.*", "blocks.*.mlp"],
                                               "senders"))
    needs.update(ctx.record_needs(source, chosen))
    return needs


def path_patch(ctx: ClaimContext, senders: Sequence[Address | str],
               receivers: Sequence[Address | str] | str, *, direction: str = "noise",
               freeze: str = "heads", at: Sequence[int | str] | None = None) -> PathPatch:
    """Patch the path from ``senders`` to ``receivers`` (see the module docstring).

    Args:
        ctx: the claim's context (its model and prompts).
        senders: heads or MLPs whose values move.
        receivers: q/k/v addresses of later heads, or ``"logits"``.
        direction: ``"noise"`` (base clean, senders from corrupt) or ``"denoise"``.
        freeze: ``"heads"`` (every other head frozen, MLPs recomputed) or
            ``"heads_and_mlps"``.
        at: positions where the senders take the source values (None: every one).

    Returns:
        the base, source and patched runs (two forward passes beyond the shared runs
        for q/k/v receivers, one for ``"logits"``).
    """
    base_name, source_name = runs_of(direction)
    if freeze not in FREEZE:
        raise ClaimSpecError(f"freeze: got {freeze!r}", key="freeze",
                             hint="heads (MLPs recomputed) or heads_and_mlps")
    sent = senders_of(ctx, senders)
    targets = receivers_of(ctx, receivers, sent)
    direct = targets == LOGITS
    frozen = _frozen(ctx, sent, mlps=direct or freeze == "heads_and_mlps")
    base = ctx.recorded(base_name, frozen)
    source = ctx.recorded(source_name, sent)
    patches: dict[Address | str, object] = {a: base for a in frozen}
    patches.update({a: Placed(source, at) for a in sent})
    recorded = () if direct else targets
    second = ctx.run(base_name, patches, record=recorded)  # type: ignore[arg-type]
    if direct:
        return PathPatch(base, source, second, sent, LOGITS)
    third = ctx.run(base_name, {a: second for a in targets})
    return PathPatch(base, source, third, sent, targets)
