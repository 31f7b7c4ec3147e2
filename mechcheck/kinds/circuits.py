"""Claims about whole circuits: ``kind: circuit`` (faithfulness, completeness,
minimality; Wang et al. 2022, section 4).

F(X) is the metric with every node outside X ablated (:mod:`mechcheck.engine.circuits`);
M is the whole model and C the circuit.  Each criterion is decided on its own, and the
claim holds when every criterion it states holds (the largest p-value decides).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from mechcheck.addresses import Address
from mechcheck.engine.circuits import CircuitScorer, Nodes, circuit_nodes
from mechcheck.errors import ClaimSpecError
from mechcheck.kinds.base import (
    AT,
    MEAN_BY,
    METRIC,
    RATIO_METHODS,
    Criterion,
    Measurement,
    all_of,
    as_positive,
    keys,
)
from mechcheck.spec.schema import (
    KeySpec,
    as_choice,
    as_components,
    as_number,
    as_str,
    int_at_least,
)

if TYPE_CHECKING:
    from mechcheck.engine.context import ClaimContext
    from mechcheck.engine.runner import Needs
    from mechcheck.spec.schema import ClaimSpec
    from mechcheck.stats import Decision

__all__ = ["CIRCUIT_KEYS", "Circuit", "scorer_for"]

K_SETS = ("random", "by_class", "greedy")
CRITERIA = ("faithfulness", "faithfulness_gap", "completeness", "minimality")


def as_k_sets(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or any(item not in K_SETS for item in items):
        raise ValueError(f"got {value!r}")
    return tuple(dict.fromkeys(items))


def as_classes(value: Any) -> dict[str, tuple[str, ...]]:
    """``{class name: [components]}``."""
    if not isinstance(value, dict) or not value:
        raise ValueError(f"got {value!r}")
    return {str(name): as_components(items) for name, items in value.items()}


as_count_at_least_1 = int_at_least(1, "give 1 or more")


def as_edges(value: Any) -> tuple[str, ...]:
    """A list of ``"<head> -> <head input or logits>"`` strings."""
    items = value if isinstance(value, list) else [value]
    if not items or any(not isinstance(i, str) or "->" not in i for i in items):
        raise ValueError(f"got {value!r}")
    return tuple(items)


CIRCUIT_KEYS = keys(
    KeySpec(name="components", parse=as_components,
            expected='the circuit: a list of quoted heads, MLPs or neurons, e.g. '
            '["head 0.2", "blocks.1.attn.head.*"]'),
    KeySpec(name="edges", parse=as_edges,
            expected='the circuit as edges instead of components: a list such as '
            '["head 0.2 -> blocks.1.attn.head.1.k", "head 1.1 -> logits"]'),
    KeySpec(name="ablation", parse=as_str, default="mean",
            expected="how everything outside the circuit is ablated: mean, mean_corrupt "
            "(with mean_by) or resample (or zero, or a plugin's)"),
    KeySpec(name="keep", parse=as_components,
            expected="components never ablated and not part of the circuit, e.g. "
            '["blocks.*.mlp"] (Wang et al. ablate heads only)'),
    MEAN_BY, METRIC, AT,
)


def check_circuit(ctx: ClaimContext) -> None:
    """A circuit claim gives components or edges (one of the two)."""
    params = ctx.params
    if not params.get("components") and not params.get("edges"):
        raise ClaimSpecError("a circuit claim needs components (or edges)",
                             key="components", hint='add components: ["head 0.2", ...] '
                             'or edges: ["head 0.2 -> blocks.1.attn.head.1.k", ...]')
    if params.get("components") and params.get("edges"):
        raise ClaimSpecError("give components or edges, not both", key="edges",
                             hint="an edge circuit's heads are the ones its edges name")
    if params.get("edges") and params.get("keep"):
        raise ClaimSpecError("keep applies to node circuits", key="keep",
                             hint="an edge circuit never gates the MLPs: remove keep")


def circuit_of(ctx: ClaimContext) -> frozenset[Any]:
    """The claim's circuit: its nodes, or its edges."""
    from mechcheck.engine.edges import parse_edges

    if ctx.params.get("edges"):
        return frozenset(parse_edges(ctx, ctx.params["edges"]))
    return frozenset(circuit_nodes(ctx, ctx.params["components"]))


def scorer_for(ctx: ClaimContext) -> Any:
    """The claim's circuit scorer (of nodes, or of edges): its ablation (with
    ``mean_by``) at its ``at``."""
    from mechcheck.engine.edges import EdgeScorer

    check_circuit(ctx)
    params = ctx.params
    iv = ctx.intervention(params["ablation"], base="clean", key="ablation")
    if params.get("mean_by") and (iv.source is None or iv.source.reduce != "mean"):
        raise ClaimSpecError(f"mean_by applies to mean ablations, not to "
                             f"'{params['ablation']}'", key="mean_by",
                             hint="use ablation: mean or mean_corrupt, or remove mean_by")
    if params.get("edges"):
        if params.get("at") is not None:
            raise ClaimSpecError("at applies to node circuits", key="at",
                                 hint="an edge circuit ablates at every position")
        return EdgeScorer(ctx, iv.with_mean_by(params.get("mean_by")))
    circuit = circuit_nodes(ctx, params["components"])
    kept = circuit_nodes(ctx, params["keep"], key="keep") if params.get("keep") else ()
    both = set(circuit) & set(kept)
    if both:
        raise ClaimSpecError(f"keep: {', '.join(map(str, both))} is also in components",
                             key="keep", hint="a kept component is outside the circuit: "
                             "name it in one of the two")
    return CircuitScorer(ctx, iv.with_mean_by(params.get("mean_by")), at=params.get("at"),
                         neurons=[a for a in circuit if a.site == "neuron"], keep=kept)


def circuit_needs(ctx: ClaimContext) -> Needs:
    """The shared runs that ablating every node of the model reads (one pass)."""
    from mechcheck.engine.circuits import model_nodes
    from mechcheck.engine.runner import Needs

    iv = ctx.intervention(ctx.params["ablation"], base="clean", key="ablation")
    if iv.source is None:
        return Needs()
    addresses = list(model_nodes(ctx))
    if ctx.params.get("components"):
        layers = {a.layer for a in circuit_nodes(ctx, ctx.params["components"])
                  if a.site == "neuron"}
        addresses += [a for layer in sorted(layers)  # type: ignore[type-var]
                      for a in ctx.resolve([f"blocks.{layer}.mlp.neuron.0"], "components")]
    return ctx.record_needs(iv.source.run, addresses)


class Circuit:
    """A circuit is faithful, complete and minimal (Wang et al. 2022)."""

    name = "circuit"
    description = ("a circuit: faithful (F(C)/F(M) >= faithfulness), complete and minimal, "
                   "with everything outside it ablated")
    keys = {
        **CIRCUIT_KEYS,
        **keys(
            KeySpec(name="faithfulness", parse=as_number,
                    expected="the least share of the model's metric the circuit keeps, "
                    "F(C)/F(M), e.g. 0.8"),
            KeySpec(name="faithfulness_gap", parse=as_positive,
                    expected="the largest |F(M) - F(C)|, in the metric's units"),
            KeySpec(name="completeness", parse=as_positive,
                    expected="c: for every K, |F(C\\K) - F(M\\K)| <= c * |F(M)| (c * "
                    "|F(M) - F(empty)| with relative_to: empty), e.g. 0.2"),
            KeySpec(name="minimality", parse=as_positive,
                    expected="m: every component moves F(C\\K) by >= m * |F(M)| for some "
                    "K, e.g. 0.01"),
            KeySpec(name="k_sets", parse=as_k_sets, default=("random", "greedy"),
                    expected="random, by_class, greedy or a list of them"),
            KeySpec(name="n_k_sets", parse=as_count_at_least_1, default=10,
                    expected="how many random K sets (an integer, 1 or more)"),
            KeySpec(name="search_budget", parse=as_count_at_least_1, default=60,
                    expected="how many K sets the greedy search may score (1 or more)"),
            KeySpec(name="classes", parse=as_classes,
                    expected="{class name: [components]}, the circuit's classes (for "
                    "k_sets: by_class)"),
            KeySpec(name="relative_to", parse=as_choice("nothing", "empty"),
                    default="nothing",
                    expected="nothing (F(C)/F(M)) or empty ((F(C) - F(empty)) / "
                    "(F(M) - F(empty)))"),
        ),
    }

    def needs(self, claim: ClaimSpec, ctx: ClaimContext) -> Needs:
        check_circuit(ctx)
        stated = [k for k in CRITERIA if claim.params.get(k) is not None]
        if not stated:
            raise ClaimSpecError("a circuit claim states at least one criterion",
                                 key="faithfulness", hint="add faithfulness, "
                                 "faithfulness_gap, completeness or minimality")
        if "by_class" in claim.params["k_sets"] and not claim.params.get("classes"):
            raise ClaimSpecError("k_sets: by_class needs classes", key="k_sets",
                                 hint="add classes: {name: [components]} or drop by_class")
        return circuit_needs(ctx)

    def measure(self, claim: ClaimSpec, ctx: ClaimContext) -> Measurement:
        scorer = scorer_for(ctx)
        circuit = circuit_of(ctx)
        study = _Study(ctx, scorer, circuit)
        criteria = [getattr(study, name)(claim.params[name]) for name in CRITERIA
                    if claim.params.get(name) is not None]
        what = "edges" if claim.params.get("edges") else "nodes"
        label = (f"{scorer.ablation.description} outside the circuit "
                 f"({len(circuit)} {what}; {scorer.runs} circuits scored)")
        ctx.keep("patched", study.f_circuit)
        ctx.keep("_base", study.f_model)
        return Measurement(decision=all_of(criteria).decision, intervention=label,
                           metric=ctx.metric().name,
                           components=tuple(map(str, _ordered(circuit))),
                           expected=" and ".join(c.expected for c in criteria),
                           criteria=tuple(criteria))


def _key(item: Any) -> tuple[Any, ...]:
    """Nodes by layer, site and index; edges by sender, then receiver."""
    if isinstance(item, Address):
        return (item.layer or 0, item.site, item.index or 0)
    return (*_key(item.sender), str(item.receiver))


def _ordered(nodes: frozenset[Any]) -> list[Any]:
    return sorted(nodes, key=_key)


def _names(nodes: frozenset[Any]) -> str:
    return "{" + ", ".join(map(str, _ordered(nodes))) + "}" if nodes else "{}"


class _Study:
    """The criteria of one circuit claim, sharing one scorer."""

    def __init__(self, ctx: ClaimContext, scorer: Any, circuit: frozenset[Any]) -> None:
        self.ctx, self.scorer, self.circuit = ctx, scorer, circuit
        self.claim = ctx.claim
        self.relative = self.claim.params["relative_to"] == "empty"
        self.model = scorer.everything
        self.f_model, self.f_circuit = scorer.scores([self.model, circuit])
        self.f_empty = scorer.score(()) if self.relative else None
        # the unit of completeness and minimality: |F(M)|, or |F(M) - F(empty)|
        base = self.f_model if self.f_empty is None else self.f_model - self.f_empty
        self.scale = abs(float(np.mean(base)))
        self.unit = "|F(M) - F(empty)|" if self.relative else "|F(M)|"
        self.rng = np.random.default_rng(self.claim.seed)

    # -- criteria ------------------------------------------------------------------
    def faithfulness(self, share: float) -> Criterion:
        from mechcheck.stats import test_ratio

        claim, ctx = self.claim, self.ctx
        num, den = self.f_circuit, self.f_model
        word = "F(C)/F(M)"
        if self.f_empty is not None:
            num, den = num - self.f_empty, den - self.f_empty
            word = "(F(C)-F(empty))/(F(M)-F(empty))"
        elif float(np.mean(den)) <= 0:
            raise ClaimSpecError(
                f"faithfulness F(C)/F(M) needs a positive F(M), but the model's mean "
                f"{ctx.metric().name} is {float(np.mean(den)):.4g}", key="faithfulness",
                hint="add relative_to: empty (the share of F(M) - F(empty) the circuit "
                "keeps), or use a metric that is positive when the model works "
                "(logit_diff)")
        method = RATIO_METHODS.get(
            claim.test, "robust")
        decision = ctx.stats_call("faithfulness", test_ratio, num, den, share,
                                  alpha=claim.alpha, seed=claim.seed,
                                  n_resamples=ctx.n_resamples, method=method)
        return Criterion(name="faithfulness", decision=decision,
                         expected=f"{word} > {share:.4g}")

    def faithfulness_gap(self, gap: float) -> Criterion:
        decision = self._inside(self.f_model - self.f_circuit, gap)
        return Criterion(name="faithfulness_gap", decision=decision,
                         expected=f"|F(M) - F(C)| < {gap:.4g}")

    def completeness(self, share: float) -> Criterion:
        margin = share * self.scale
        sets = self._k_sets()
        pairs = [(self.circuit - k, self.model - k) for k in sets]
        flat = self.scorer.scores([x for pair in pairs for x in pair])
        decisions = [self._inside(flat[2 * i] - flat[2 * i + 1], margin)
                     for i in range(len(sets))]
        worst = int(np.argmax([d.p_value for d in decisions]))
        return Criterion(
            name="completeness", decision=decisions[worst],
            expected=f"|F(C\\K) - F(M\\K)| < {margin:.4g} (= {share:.4g} x {self.unit}) for "
            f"every K of {len(sets)}",
            detail=f"least complete for K = {_names(sets[worst])}")

    def minimality(self, share: float) -> Criterion:
        threshold = share * self.scale
        per_node: list[tuple[Decision, Address, Nodes]] = []
        for v in _ordered(self.circuit):
            candidates = self._minimality_sets(v)
            pairs = self.scorer.scores([x for k in candidates
                                        for x in (self.circuit - k, self.circuit - k - {v})])
            tests = [self._larger(pairs[2 * i] - pairs[2 * i + 1], threshold)
                     for i in range(len(candidates))]
            best = int(np.argmin([d.p_value for d in tests]))
            p = min(1.0, tests[best].p_value * len(candidates))  # some K: Bonferroni
            per_node.append((replace(tests[best], p_value=p), v, candidates[best]))
        # ties of p (floored by the resamples) go to the smallest effect
        decision, v, k = max(per_node, key=lambda item: (item[0].p_value, -item[0].effect))
        return Criterion(
            name="minimality", decision=decision,
            expected=f"every component moves F(C\\K) by > {threshold:.4g} (= {share:.4g} x "
            f"{self.unit}) for some K",
            detail=f"least needed: {v} (best K = {_names(k)})")

    # -- K sets ------------------------------------------------------------------------
    def _k_sets(self) -> list[Nodes]:
        params = self.claim.params
        sets: list[Nodes] = [frozenset()]
        if "random" in params["k_sets"]:
            sets += self._random_subsets(self.circuit, params["n_k_sets"])
        if "by_class" in params["k_sets"]:
            sets += list(self._classes().values())
        if "greedy" in params["k_sets"]:
            sets += self._greedy(params["search_budget"])
        return list(dict.fromkeys(sets))

    def _minimality_sets(self, v: Address) -> list[Nodes]:
        params = self.claim.params
        rest = self.circuit - {v}
        sets: list[Nodes] = [frozenset()]
        if "random" in params["k_sets"] and rest:
            sets += self._random_subsets(rest, params["n_k_sets"])
        if "by_class" in params["k_sets"]:
            sets += [k - {v} for k in self._classes().values() if v in k]
        return list(dict.fromkeys(sets))

    def _random_subsets(self, pool: Nodes, count: int) -> list[Nodes]:
        ordered = _ordered(pool)
        out = []
        for _ in range(count):
            keep = self.rng.random(len(ordered)) < 0.5
            out.append(frozenset(a for a, k in zip(ordered, keep) if k))
        return out

    def _classes(self) -> dict[str, Nodes]:
        out = {}
        for name, items in self.claim.params["classes"].items():
            nodes = frozenset(circuit_nodes(self.ctx, items, key="classes"))
            outside = nodes - self.circuit
            if outside:
                raise ClaimSpecError(f"classes: {name} names {_names(outside)}, which are "
                                     "not in the circuit", key="classes",
                                     hint="a class is a subset of components")
            out[name] = nodes
        return out

    def _greedy(self, budget: int) -> list[Nodes]:
        """Wang et al.'s greedy search: grow K one component at a time, each time
        adding the one that most widens |F(C\\K) - F(M\\K)|, within ``budget`` sets."""
        k: Nodes = frozenset()
        visited: list[Nodes] = []
        while len(visited) < budget:
            options = [k | {v} for v in _ordered(self.circuit - k)][: budget - len(visited)]
            if not options:
                break
            flat = self.scorer.scores([x for o in options
                                       for x in (self.circuit - o, self.model - o)])
            gaps = [abs(float(np.mean(flat[2 * i] - flat[2 * i + 1])))
                    for i in range(len(options))]
            visited += options
            k = options[int(np.argmax(gaps))]
        return visited

    # -- decisions -----------------------------------------------------------------------
    def _inside(self, values: np.ndarray, margin: float) -> Decision:
        from mechcheck.stats import test_inside

        claim = self.claim
        return self.ctx.stats_call("completeness", test_inside, values, margin,
                                   alpha=claim.alpha, seed=claim.seed,
                                   test="t" if claim.test == "t" else "robust",
                                   n_resamples=self.ctx.n_resamples)

    def _larger(self, values: np.ndarray, threshold: float) -> Decision:
        """"|mean| > threshold": the one-sided rule on the side of the mean, doubled."""
        sign = 1.0 if float(np.mean(values)) >= 0 else -1.0
        decision = self.ctx.decide_greater(sign * values, threshold)
        return replace(decision, p_value=min(1.0, 2 * decision.p_value))

