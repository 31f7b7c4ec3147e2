"""Edge-level circuits: only the listed edges carry the run's own values.

An edge joins a sender head to a receiver: a later head's query, key or value input,
or the logits (ACDC, Conmy et al. 2023; edge attribution patching).  In the run of an
edge circuit E on the clean prompts:

* the circuit's heads are those named by an edge; every other head is ablated (node
  ablation, everywhere);
* the input of each receiver (a circuit head's q, k or v; the final residual for the
  logits) is the run's own residual stream minus, for every circuit head s upstream
  whose edge into it is not in E, s's contribution ``W_O^s z_s`` with its actual value
  replaced by its ablated one;
* embeddings and MLPs are not gated: they read the residual stream as it is.

A head's q/k/v is recomputed from its own input with the layer's attention input norm
and projection (weights read, not converted), so the architecture map must name the
norm (``ArchMap.attn_norm``).  Under grouped-query attention a head's k and v are its
key/value group's, so the heads of one group must receive the same k (v) edges.  All of
it happens in one forward pass, with patches that are functions
(:meth:`ClaimContext.run`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from mechcheck.addresses import Address
from mechcheck.errors import ClaimSpecError

if TYPE_CHECKING:
    from mechcheck.engine.context import ClaimContext
    from mechcheck.engine.interventions import Intervention

__all__ = ["Edge", "EdgeScorer", "all_edges", "edge_logits", "edge_patches", "parse_edges"]

LOGITS = "logits"
_INPUTS: tuple[Literal["q", "k", "v"], ...] = ("q", "k", "v")


@dataclass(frozen=True, slots=True)
class Edge:
    """One edge: a sender head and a receiver input (q/k/v address) or ``"logits"``."""

    sender: Address
    receiver: Address | str

    def __str__(self) -> str:
        return f"{self.sender} -> {self.receiver}"


def parse_edges(ctx: ClaimContext, items: Sequence[str], key: str = "edges") -> tuple[Edge, ...]:
    """Edges written ``"<head> -> <head input or head or logits>"`` (a head without
    ``.q``/``.k``/``.v`` receives on all three)."""
    out: list[Edge] = []
    for item in items:
        left, arrow, right = str(item).partition("->")
        if not arrow:
            raise ClaimSpecError(f"{key}: {item!r} is not an edge", key=key,
                                 hint='write "head 0.2 -> blocks.1.attn.head.1.k" or '
                                 '"head 1.1 -> logits"')
        senders = ctx.resolve([left.strip()], key)
        receivers: list[Address | str] = [LOGITS] if right.strip() == LOGITS else []
        if not receivers:
            for address in ctx.resolve([right.strip()], key):
                if address.site == "head":
                    receivers += [Address(i, address.layer, address.index) for i in _INPUTS]
                else:
                    receivers.append(address)
        for sender in senders:
            for receiver in receivers:
                out.append(_checked(Edge(sender, receiver), key))
    return tuple(dict.fromkeys(out))


def _checked(edge: Edge, key: str) -> Edge:
    if edge.sender.site != "head":
        raise ClaimSpecError(f"{key}: {edge} starts at {edge.sender}, not at a head",
                             key=key, hint="edges start at heads (MLPs are not gated)")
    receiver = edge.receiver
    if receiver == LOGITS:
        return edge
    assert isinstance(receiver, Address)
    if receiver.site not in _INPUTS:
        raise ClaimSpecError(f"{key}: {edge} ends at {receiver}, not at a head's input",
                             key=key, hint="an edge ends at a head (its q, k or v) or at "
                             "logits")
    if int(receiver.layer) <= int(edge.sender.layer):  # type: ignore[arg-type]
        raise ClaimSpecError(f"{key}: {edge} goes from layer {edge.sender.layer} to layer "
                             f"{receiver.layer}", key=key,
                             hint="an edge goes to a later layer")
    return edge


def _head(address: Address) -> Address:
    return Address("head", address.layer, address.index)


def edge_logits(ctx: ClaimContext, edges: Iterable[Edge], ablation: Intervention,
                ) -> torch.Tensor:
    """Last-position logits ``[n, vocab]`` of the edge circuit ``edges`` on the clean
    prompts, with ``ablation`` (a clean-run intervention) for everything cut."""
    return ctx.run("clean", edge_patches(ctx, edges, ablation)).logits


def all_edges(ctx: ClaimContext) -> frozenset[Edge]:
    """Every edge of the claim's model: each head into every later head's q, k and v,
    and into the logits."""
    heads = ctx.resolve(["blocks.*.attn.head.*"], "edges")
    out = {Edge(s, LOGITS) for s in heads}
    out |= {Edge(s, Address(i, r.layer, r.index)) for s in heads for r in heads
            if int(r.layer) > int(s.layer) for i in _INPUTS}  # type: ignore[arg-type]
    return frozenset(out)


class EdgeScorer:
    """F(E) per prompt for sets E of edges: the scorer of edge circuits, with the same
    methods as :class:`~mechcheck.engine.circuits.CircuitScorer` (several circuits per
    forward pass, each distinct set run once)."""

    def __init__(self, ctx: ClaimContext, ablation: Intervention) -> None:
        self.ctx, self.ablation = ctx, ablation
        self.everything = all_edges(ctx)
        self._cache: dict[frozenset[Edge], np.ndarray] = {}

    def score(self, edges: Iterable[Edge]) -> np.ndarray:
        (values,) = self.scores([frozenset(edges)])
        return values

    def scores(self, sets: Sequence[Iterable[Edge]]) -> list[np.ndarray]:
        wanted = [frozenset(s) for s in sets]
        todo = list(dict.fromkeys(x for x in wanted if x not in self._cache))
        if self.everything in todo:  # every edge kept: the model itself
            self._cache[self.everything] = self.ctx.metric_values("clean")
            todo.remove(self.everything)
        if todo:
            patches = [edge_patches(self.ctx, x, self.ablation) for x in todo]
            for x, logits in zip(todo, self.ctx.run_many("clean", patches)):
                self._cache[x] = self.ctx.metric_of(logits)
        return [self._cache[x] for x in wanted]

    @property
    def runs(self) -> int:
        return len(self._cache)


def edge_patches(ctx: ClaimContext, edges: Iterable[Edge], ablation: Intervention,
                 ) -> dict[Address | str, Any]:
    """The patches of one edge-circuit run (functions that read and rewrite the
    receivers' inputs in the same forward pass)."""
    edges = tuple(edges)
    adapter = ctx.model.adapter
    arch = adapter.arch
    if arch.attn_norm is None or arch.attn_out is not None:
        why = ("does not name the attention input norm (ArchMap.attn_norm)"
               if arch.attn_norm is None else "normalises attention's output before the "
               "residual, so heads' contributions do not add up")
        raise ClaimSpecError(f"edges: the {arch.name} architecture map {why}", key="edges",
                             hint="use a node circuit (components:) on this model")
    heads = ctx.resolve(["blocks.*.attn.head.*"], "edges")
    circuit = {e.sender for e in edges} | {_head(e.receiver) for e in edges
                                            if isinstance(e.receiver, Address)}
    kept = set(edges)
    stash: dict[Any, torch.Tensor] = {}
    ablated = _Ablated(ctx, ablation, sorted(circuit, key=_order))
    patches: dict[Address | str, Any] = {a: ablation for a in heads if a not in circuit}
    for s in sorted(circuit, key=_order):
        patches[s] = _stasher(stash, s)
    gated = _gated_inputs(adapter, circuit, kept)
    for layer in sorted({int(a.layer) for a in gated}):  # type: ignore[arg-type]
        patches[Address("resid_pre", layer)] = _stasher(stash, ("resid", layer))
    for receiver, cut in gated.items():
        patches[receiver] = _input_patch(ctx, receiver, cut, stash, ablated)
    last = adapter.dims.n_layers - 1
    cut_logits = [s for s in sorted(circuit, key=_order) if Edge(s, LOGITS) not in kept]
    if cut_logits:
        patches[Address("resid_post", last)] = _final_patch(ctx, cut_logits, stash, ablated)
    return patches


def _order(a: Address) -> tuple[int, int]:
    return int(a.layer), int(a.index)  # type: ignore[arg-type]


def _gated_inputs(adapter: Any, circuit: set[Address], kept: set[Edge],
                  ) -> dict[Address, list[Address]]:
    """Each circuit head's input -> the upstream circuit heads cut from it (only the
    inputs with something cut)."""
    out: dict[Address, list[Address]] = {}
    groups: dict[tuple[int, int, str], list[Address]] = {}
    for r in sorted(circuit, key=_order):
        for which in _INPUTS:
            receiver = Address(which, r.layer, r.index)
            cut = [s for s in sorted(circuit, key=_order)
                   if int(s.layer) < int(r.layer) and Edge(s, receiver) not in kept]  # type: ignore[arg-type]
            if which != "q":
                key = (int(r.layer), adapter.kv_group(int(r.index)), which)  # type: ignore[arg-type]
                groups.setdefault(key, []).append(receiver)
                others = [out.get(x, []) for x in groups[key][:-1]]
                if any(o != cut for o in others):
                    raise ClaimSpecError(
                        f"edges: {receiver} shares its {which} with {groups[key][0]} "
                        "(grouped-query attention) but receives other edges", key="edges",
                        hint=f"give the heads of one key/value group the same {which} edges")
            if cut:
                out[receiver] = cut
    return out


def _stasher(stash: dict[Any, torch.Tensor], key: Any) -> Callable[..., torch.Tensor]:
    def keep(current: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        stash[key] = current
        return current
    return keep


class _Ablated:
    """The circuit heads' ablated outputs z for some rows, ``[b, pos, d_head]`` (the
    source values are read before the run: no shared pass may start inside a hook)."""

    def __init__(self, ctx: ClaimContext, ablation: Intervention,
                 heads: Sequence[Address]) -> None:
        self.ctx, self.ablation = ctx, ablation
        source = ablation.source
        self._values: dict[Address, Any] = {}
        for head in heads:
            if source is None:
                continue
            if source.reduce == "mean":
                self._values[head] = ctx.means(head, source.run, source.by)
            else:
                self._values[head] = ctx.activations(source.run, head)
        self._by = None if source is None else source.by

    def __call__(self, head: Address, current: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        source = self.ablation.source
        length = current.shape[1]
        if source is None:
            values = None
        elif source.reduce == "mean":
            means = self._values[head]
            keys = [None] * len(rows) if self._by is None else [
                self.ctx.dataset.columns[self._by][int(r)] for r in rows]
            values = torch.stack([means[k][:length] for k in keys])
        else:
            recorded = self._values[head]
            values = torch.stack([recorded[int(r)] for r in rows])
        if values is not None:
            values = values.to(current.device, current.dtype)
        return self.ablation.replace(current, values)


def _contribution(ctx: ClaimContext, head: Address, z: torch.Tensor) -> torch.Tensor:
    """``z`` [b, pos, d_head] of ``head`` through its slice of W_O, no bias."""
    adapter = ctx.model.adapter
    module = adapter.module(adapter.site(head).module)
    cols = adapter.columns(head)
    weight: torch.Tensor = module.weight  # type: ignore[assignment]
    if isinstance(module, torch.nn.Linear):
        return z @ weight[:, cols].T.to(z.dtype)
    return z @ weight[cols, :].to(z.dtype)  # GPT-2's Conv1D keeps weights as [in, out]


def _project(module: torch.nn.Module, x: torch.Tensor, cols: slice) -> torch.Tensor:
    """The output columns ``cols`` of a projection (Linear, or GPT-2's Conv1D) of x."""
    weight: torch.Tensor = module.weight  # type: ignore[assignment]
    bias = getattr(module, "bias", None)
    part = None if bias is None else bias[cols]
    if isinstance(module, torch.nn.Linear):
        return torch.nn.functional.linear(x, weight[cols], part)
    out = x @ weight[:, cols]  # Conv1D: [in, out]
    return out if part is None else out + part


def _removed(ctx: ClaimContext, cut: Sequence[Address], stash: dict[Any, torch.Tensor],
             ablated: _Ablated, rows: np.ndarray) -> torch.Tensor:
    """The sum of the cut senders' contributions, actual minus ablated; each sender's
    is computed once per forward pass (kept with the value it was computed from)."""
    total = torch.zeros(())
    for s in cut:
        actual = stash[s]
        done = stash.get(("delta", s))
        if done is None or stash.get(("delta of", s)) is not actual:
            done = _contribution(ctx, s, actual - ablated(s, actual, rows))
            stash[("delta", s)], stash[("delta of", s)] = done, actual
        total = total + done
    return total


def _input_patch(ctx: ClaimContext, receiver: Address, cut: Sequence[Address],
                 stash: dict[Any, torch.Tensor], ablated: _Ablated) -> Callable[..., Any]:
    adapter = ctx.model.adapter
    layer = int(receiver.layer)  # type: ignore[arg-type]
    norm = adapter.module(f"{adapter.arch.blocks}.{layer}.{adapter.arch.attn_norm}")
    projection = adapter.module(adapter.site(receiver).module)
    cols = adapter.columns(receiver)

    def patch(current: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        resid = stash[("resid", layer)]
        x = resid - _removed(ctx, cut, stash, ablated, rows)
        return _project(projection, norm(x), cols)

    return patch


def _final_patch(ctx: ClaimContext, cut: Sequence[Address], stash: dict[Any, torch.Tensor],
                 ablated: _Ablated) -> Callable[..., Any]:
    def patch(current: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        return current - _removed(ctx, cut, stash, ablated, rows)
    return patch
