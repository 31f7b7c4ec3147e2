"""The circuit hypothesis tests of Shi et al. (2024) as claim kinds: ``equivalent``,
``independent``, ``minimal_edges`` and ``sufficient_vs_random``.

s is the claim's metric per prompt and F(X) the metric with every node outside X
ablated (:mod:`mechcheck.engine.circuits`).  The statistics are in
:mod:`mechcheck.circuit_stats`; each claim passes only on evidence for what it states
(the paper's tests are written the other way round: see docs/circuit-tests.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mechcheck.engine.circuits import CircuitScorer, Nodes
from mechcheck.kinds.base import Criterion, Measurement, keys
from mechcheck.kinds.circuits import (
    CIRCUIT_KEYS,
    as_count_at_least_1,
    check_circuit,
    circuit_needs,
    circuit_of,
    scorer_for,
)
from mechcheck.spec.schema import KeySpec, as_number

if TYPE_CHECKING:
    from mechcheck.engine.context import ClaimContext
    from mechcheck.engine.runner import Needs
    from mechcheck.spec.schema import ClaimSpec
    from mechcheck.stats import Decision

__all__ = ["Equivalent", "Independent", "MinimalEdges", "SufficientVsRandom"]


def _open_unit(value: object) -> float:
    number = as_number(value)
    if not 0 < number < 1:
        raise ValueError(f"got {value!r}, which is not between 0 and 1")
    return number


def _epsilon(value: object) -> float:
    number = as_number(value)
    if not 0 < number < 0.5:
        raise ValueError(f"got {value!r}, which is not between 0 and 0.5")
    return number


Q = KeySpec(name="q", parse=_open_unit, default=0.9,
            expected="the share of random circuits to beat, between 0 and 1 (0.9)")
N_RANDOM = KeySpec(name="n_random", parse=as_count_at_least_1, default=100,
                   expected="how many random circuits to draw (an integer, 1 or more)")


class _CircuitTest:
    """What the four kinds share: the circuit, its scorer and the report."""

    name = ""
    description = ""

    def needs(self, claim: ClaimSpec, ctx: ClaimContext) -> Needs:
        check_circuit(ctx)
        return circuit_needs(ctx)

    def measure(self, claim: ClaimSpec, ctx: ClaimContext) -> Measurement:
        scorer = scorer_for(ctx)
        circuit = circuit_of(ctx)
        criterion = self.decide(ctx, scorer, circuit)
        what = "edges" if claim.params.get("edges") else "nodes"
        label = (f"{scorer.ablation.description} outside the circuit "
                 f"({len(circuit)} {what}; {scorer.runs} circuits scored)")
        return Measurement(decision=criterion.decision, intervention=label,
                           metric=ctx.metric().name,
                           components=tuple(sorted(map(str, circuit))),
                           expected=criterion.expected, criteria=(criterion,))

    def decide(self, ctx: ClaimContext, scorer: CircuitScorer,
               circuit: Nodes) -> Criterion:  # pragma: no cover - each kind's own
        raise NotImplementedError


def _random_sets(pool: Nodes, size: int, count: int, seed: int) -> list[Nodes]:
    rng = np.random.default_rng(seed)
    ordered = sorted(pool, key=str)
    size = min(size, len(ordered))
    return [frozenset(ordered[i] for i in rng.choice(len(ordered), size, replace=False))
            for _ in range(count)]


class Equivalent(_CircuitTest):
    """The circuit wins against the model on about half the prompts."""

    name = "equivalent"
    description = ("the circuit and the model are equivalent: |P(F(C) > F(M)) - 1/2| < "
                   "epsilon (Shi et al.'s equivalence test, exact binomial TOST)")
    keys = {**CIRCUIT_KEYS, **keys(KeySpec(
        name="epsilon", parse=_epsilon, default=0.1,
        expected="the equivalence margin on the win probability, between 0 and 0.5"))}

    def decide(self, ctx: ClaimContext, scorer: CircuitScorer, circuit: Nodes) -> Criterion:
        from mechcheck.circuit_stats import equivalence

        f_model, f_circuit = scorer.scores([scorer.everything, circuit])
        ctx.keep("_base", f_model)
        ctx.keep("patched", f_circuit)
        eps = ctx.params["epsilon"]
        decision = ctx.stats_call("epsilon", equivalence, f_circuit, f_model, epsilon=eps,
                                  alpha=ctx.claim.alpha)
        return Criterion(name="equivalent", decision=decision,
                         expected=f"|P(F(C) > F(M)) - 1/2| < {eps:.4g}")


class Independent(_CircuitTest):
    """With the circuit knocked out, what is left says nothing about the model's
    output (HSIC)."""

    name = "independent"
    description = ("the model without the circuit is (nearly) independent of the model: "
                   "normalised HSIC of F(M without C) and F(M) below max_dependence")
    keys = {**CIRCUIT_KEYS, **keys(
        KeySpec(name="max_dependence", parse=_open_unit, default=0.1,
                expected="the largest normalised HSIC that counts as independent, "
                "between 0 and 1"),
        KeySpec(name="n_permutations", parse=as_count_at_least_1, default=1000,
                expected="permutations of the HSIC test of dependence (1 or more)"))}

    def decide(self, ctx: ClaimContext, scorer: CircuitScorer, circuit: Nodes) -> Criterion:
        from mechcheck.circuit_stats import independence_test, independent

        claim = ctx.claim
        f_model, f_rest = scorer.scores([scorer.everything, scorer.everything - circuit])
        ctx.keep("_base", f_model)
        ctx.keep("patched", f_rest)
        limit = claim.params["max_dependence"]
        decision = ctx.stats_call("max_dependence", independent, f_rest, f_model,
                                  max_dependence=limit, alpha=claim.alpha, seed=claim.seed,
                                  n_resamples=ctx.n_resamples)
        p_dep = independence_test(f_rest, f_model, n_permutations=claim.params[
            "n_permutations"], seed=claim.seed)
        return Criterion(name="independent", decision=decision,
                         expected=f"normalised HSIC(F(M without C), F(M)) < {limit:.4g}",
                         detail=f"permutation p-value of dependence {p_dep:.4g}")


class MinimalEdges(_CircuitTest):
    """Every component matters more than a random extra one (Shi et al.'s minimality
    test, Holm-corrected over the components)."""

    name = "minimal_edges"
    description = ("every component of the circuit matters more than a random component "
                   "added to it, in more than a share q of randomly inflated circuits")
    keys = {**CIRCUIT_KEYS, **keys(
        Q, N_RANDOM,
        KeySpec(name="inflate", parse=as_count_at_least_1,
                expected="how many random components inflate the circuit (default: as "
                "many as it has)"))}

    def decide(self, ctx: ClaimContext, scorer: CircuitScorer, circuit: Nodes) -> Criterion:
        from mechcheck.circuit_stats import minimal_components

        claim = ctx.claim
        ordered = sorted(circuit, key=str)
        f_circuit, *without = scorer.scores([circuit, *(circuit - {v} for v in ordered)])
        ctx.keep("patched", f_circuit)
        scores = {str(v): float(np.mean((w - f_circuit) ** 2)) for v, w in zip(ordered, without)}
        outside = scorer.everything - circuit
        size = claim.params.get("inflate") or len(circuit)
        extras = _random_sets(outside, size, claim.params["n_random"], claim.seed)
        rng = np.random.default_rng(claim.seed + 1)
        dropped = [sorted(x, key=str)[int(rng.integers(len(x)))] for x in extras]
        flat = scorer.scores([y for x, r in zip(extras, dropped)
                              for y in (circuit | x, (circuit | x) - {r})])
        random_scores = np.array([np.mean((flat[2 * i + 1] - flat[2 * i]) ** 2)
                                  for i in range(len(extras))])
        per, decision = ctx.stats_call("q", minimal_components, scores, random_scores,
                                       q=claim.params["q"], alpha=claim.alpha)
        worst = max(per, key=lambda name: per[name].p_value)
        return Criterion(name="minimal_edges", decision=decision,
                         expected=f"every component beats a random extra one in more than "
                         f"{claim.params['q']:.4g} of {len(extras)} inflated circuits",
                         detail=f"least needed: {worst} (beats {per[worst].effect:.3g})")


class SufficientVsRandom(_CircuitTest):
    """The circuit is closer to the model than a share q of random circuits of its size
    (Shi et al.'s sufficiency "tail test")."""

    name = "sufficient_vs_random"
    description = ("the circuit is closer to the model than more than a share q of random "
                   "circuits of the same size")
    keys = {**CIRCUIT_KEYS, **keys(Q, N_RANDOM)}

    def decide(self, ctx: ClaimContext, scorer: CircuitScorer, circuit: Nodes) -> Criterion:
        from mechcheck.circuit_stats import sufficient_against_random

        claim = ctx.claim
        f_model, f_circuit = scorer.scores([scorer.everything, circuit])
        ctx.keep("_base", f_model)
        ctx.keep("patched", f_circuit)
        randoms = _random_sets(scorer.everything, len(circuit),
                               claim.params["n_random"], claim.seed)
        distances = np.array([np.mean((f - f_model) ** 2) for f in scorer.scores(randoms)])
        own = float(np.mean((f_circuit - f_model) ** 2))
        decision: Decision = ctx.stats_call("q", sufficient_against_random, own, distances,
                                            q=claim.params["q"], alpha=claim.alpha)
        return Criterion(name="sufficient_vs_random", decision=decision,
                         expected=f"closer to the model than more than {claim.params['q']:.4g}"
                         f" of {len(randoms)} random circuits of {len(circuit)} "
                         f"{'edges' if claim.params.get('edges') else 'nodes'}",
                         detail=f"mean squared distance to the model {own:.4g}; random "
                         f"circuits' median {float(np.median(distances)):.4g}")
