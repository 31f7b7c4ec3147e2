"""Scoring circuits: the metric with everything outside a set of components ablated.

Wang et al. (2022) write F(X) for the metric of the model in which every component
outside X is ablated; F(M) is the whole model's metric (nothing ablated), F(C) a
circuit's.  The components here are the model's nodes: every attention head and every
MLP.  A circuit that names some neurons of an MLP keeps those neurons and ablates the
MLP's other neurons.  An ``attn L`` in a circuit stands for all of layer L's heads.

:class:`CircuitScorer` computes F(X) per prompt for many X at once (several sets per
forward pass, :meth:`ClaimContext.run_many`) and remembers every X it has scored, so a
criterion that needs F(C \\ K) for many K pays once per distinct set.  Built only from
the claim context's public primitives.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from mechcheck.addresses import Address
from mechcheck.errors import ClaimSpecError

if TYPE_CHECKING:
    from mechcheck.engine.context import ClaimContext
    from mechcheck.engine.interventions import Intervention

__all__ = ["CircuitScorer", "Nodes", "circuit_nodes", "model_nodes"]

Nodes = frozenset[Address]


def model_nodes(ctx: ClaimContext) -> tuple[Address, ...]:
    """Every head and every MLP of the claim's model."""
    return ctx.resolve(["blocks.*.attn.head.*", "blocks.*.mlp"], "components")


def circuit_nodes(ctx: ClaimContext, items: Sequence[str], key: str = "components",
                  ) -> tuple[Address, ...]:
    """The circuit's components as nodes: heads, MLPs and neurons (``attn L`` becomes
    layer L's heads)."""
    out: list[Address] = []
    for address in ctx.resolve(items, key):
        if address.site == "attn":
            out.extend(ctx.resolve([f"blocks.{address.layer}.attn.head.*"], key))
        elif address.site in ("head", "mlp", "neuron"):
            out.append(address)
        else:
            raise ClaimSpecError(
                f"{key}: {address} is not a node of a circuit", key=key,
                hint="a circuit is made of heads (head 9.9), MLPs (mlp 3), neurons "
                "(neuron 3.100) or whole attention layers (attn 3)")
    return tuple(dict.fromkeys(out))


class CircuitScorer:
    """F(X) per prompt for sets X of nodes, with one ablation for everything outside X.

    Args:
        ctx: the claim's context.
        ablation: the intervention applied to every node outside X (its base run is
            the clean run).
        at: positions where the ablation acts (None: every position).
        neurons: neurons the circuits may name; their MLPs are then split into
            neurons (the ones outside X ablated) instead of ablated whole.
        keep: nodes that are never ablated and belong to no X (Wang et al. keep the
            MLPs and ablate heads only); they are in the model M of every F(X).
    """

    def __init__(self, ctx: ClaimContext, ablation: Intervention, *,
                 at: Sequence[int | str] | None = None, neurons: Iterable[Address] = (),
                 keep: Iterable[Address] = ()):
        self.ctx = ctx
        self.ablation = ablation
        self.at = at
        self.kept = frozenset(keep)
        self._split = {int(n.layer) for n in neurons}  # type: ignore[arg-type]
        self.nodes = tuple(a for a in model_nodes(ctx) if a not in self.kept
                           and not (a.site == "mlp" and int(a.layer) in self._split))  # type: ignore[arg-type]
        self._neurons: dict[int, tuple[Address, ...]] = {
            layer: ctx.resolve([f"blocks.{layer}.mlp.neuron.*"], "components")
            for layer in sorted(self._split)}
        self._cache: dict[Nodes, np.ndarray] = {}

    @property
    def everything(self) -> Nodes:
        """The whole model M as a set of nodes (the kept ones left out: they are always
        there)."""
        return frozenset(self.nodes) | frozenset(
            n for group in self._neurons.values() for n in group)

    def score(self, keep: Iterable[Address]) -> np.ndarray:
        """F(keep): the metric per prompt with every node outside ``keep`` ablated."""
        (values,) = self.scores([frozenset(keep)])
        return values

    def scores(self, sets: Sequence[Iterable[Address]]) -> list[np.ndarray]:
        """F(X) for each X of ``sets`` (several per forward pass; each distinct set is
        run once per scorer)."""
        wanted = [frozenset(s) for s in sets]
        todo = list(dict.fromkeys(x for x in wanted if x not in self._cache))
        whole = self.everything
        if whole in todo:
            self._cache[whole] = self.ctx.metric_values("clean")
            todo.remove(whole)
        if todo:
            logits = self.ctx.run_many("clean", [self._patches(x) for x in todo], at=self.at)
            for x, values in zip(todo, logits):
                self._cache[x] = self.ctx.metric_of(values)
        return [self._cache[x] for x in wanted]

    @property
    def runs(self) -> int:
        """How many distinct sets were scored (patched runs, for the benchmark)."""
        return len(self._cache)

    def _patches(self, keep: Nodes) -> dict[Address | str, Intervention]:
        ablated = [a for a in self.nodes if a not in keep]
        ablated += [n for group in self._neurons.values() for n in group if n not in keep]
        return {a: self.ablation for a in ablated}
