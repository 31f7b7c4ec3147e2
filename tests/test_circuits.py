"""Circuits: F(X) against a hand-written forward, several patch sets per pass, the
criteria (faithfulness, completeness, minimality) on the planted model whose circuit is
known by construction, and the errors a circuit claim can make."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mechcheck.addresses import Address
from mechcheck.api import evaluate_path
from mechcheck.engine.circuits import CircuitScorer, circuit_nodes
from mechcheck.engine.interventions import BUILTIN_INTERVENTIONS
from mechcheck.kinds.base import Criterion, all_of
from mechcheck.stats import Decision
from tests.conftest import claim_context, word_rows
from tests.reference_forward import manual_forward
from tests.test_paths import sharp_loaded  # noqa: F401 - fixture

IV = {iv.name: iv for iv in BUILTIN_INTERVENTIONS}
ROOT = Path(__file__).resolve().parents[1]


def _reference_f(model: Any, prompts: list[list[int]], keep: set[tuple[Any, ...]],
                 n_layers: int, n_heads: int) -> torch.Tensor:
    """Last-position logits per prompt with every head and MLP outside ``keep`` set to
    its mean over the prompts (all of one length), by the hand-written forward."""
    traces = [manual_forward(model, ids) for ids in prompts]
    head_z = {(layer, h): torch.stack([t.head_z[(layer, h)] for t in traces]).mean(0)
              for layer in range(n_layers) for h in range(n_heads)
              if (layer, h) not in keep}
    mlp = {layer: torch.stack([t.mlp_out[layer] for t in traces]).mean(0)
           for layer in range(n_layers) if ("mlp", layer) not in keep}
    return torch.stack([manual_forward(model, ids, head_z=head_z, mlp_out=mlp).logits[-1]
                        for ids in prompts])


@pytest.mark.parametrize("arch", ["gpt2", "llama", "neox"])
def test_circuit_scores_equal_the_hand_written_forward(arch: str, sharp_loaded: Any,  # noqa: F811
                                                      ) -> None:
    loaded = sharp_loaded(arch)
    ctx = claim_context(loaded, word_rows(5, lengths=(7,)), metric="logprob")
    scorer = CircuitScorer(ctx, IV["mean"])
    keeps = [{(0, 1), (1, 2)}, {(1, 0), ("mlp", 0)}, set()]
    as_nodes = [{Address("mlp", k[1]) if k[0] == "mlp" else Address("head", k[0], k[1])
                 for k in keep} for keep in keeps]
    many = ctx.run_many("clean", [scorer._patches(frozenset(x)) for x in as_nodes])
    prompts = [list(p) for p in ctx.dataset.prompts]
    for keep, logits in zip(keeps, many):
        expected = _reference_f(loaded.model, prompts, keep, 2, 4)
        torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
        assert (logits - ctx.shared("clean").logits).abs().max() > 1e-3  # it did ablate


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_run_many_equals_one_run_per_set(arch: str, tiny_loaded: Any) -> None:
    # batch_size 8 over 9 prompts of two lengths: several sets share some passes only
    ctx = claim_context(tiny_loaded(arch), word_rows(9), metric="logprob", batch_size=8)
    sets = [{"head 0.1": "mean"}, {"head 1.2": "zero", "mlp 0": "resample"}, {},
            {"head 0.0": "mean", "blocks.1.attn.head.*": "mean"}, {"pos_embed": "zero"}
            if arch == "gpt2" else {"embed": "zero"}]
    for patches, logits in zip(sets, ctx.run_many("clean", sets)):
        torch.testing.assert_close(logits, ctx.run("clean", patches).logits,
                                   atol=1e-5, rtol=1e-5)


def test_scores_of_one_set_are_run_once(tiny_loaded: Any) -> None:
    ctx = claim_context(tiny_loaded("gpt2"), word_rows(4), metric="logprob")
    scorer = CircuitScorer(ctx, IV["mean"])
    head = Address("head", 0, 1)
    first = scorer.score({head})
    again, whole = scorer.scores([{head}, scorer.everything])
    assert scorer.runs == 2
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(whole, ctx.metric_values("clean"))


def test_a_neuron_in_a_circuit_keeps_only_that_neuron_of_its_mlp(tiny_loaded: Any) -> None:
    ctx = claim_context(tiny_loaded("gpt2"), word_rows(4), metric="logprob")
    nodes = circuit_nodes(ctx, ["neuron 1.5", "attn 0"])
    assert [str(a) for a in nodes] == ["blocks.1.mlp.neuron.5"] + [
        f"blocks.0.attn.head.{h}" for h in range(4)]
    scorer = CircuitScorer(ctx, IV["zero"], neurons=[nodes[0]])
    keep = frozenset(nodes)
    patches = scorer._patches(keep)
    assert Address("mlp", 1) not in patches and Address("mlp", 0) in patches
    assert Address("neuron", 1, 4) in patches and Address("neuron", 1, 5) not in patches


def _decision(p: float) -> Decision:
    return Decision(effect=0.0, ci_low=0.0, ci_high=0.0, confidence_level=0.9, n=5,
                    p_value=p, threshold=0.0, alternative="greater", method="t", seed=0,
                    alpha=0.05)


def test_all_of_is_decided_by_the_largest_p() -> None:
    criteria = [Criterion(name=n, decision=_decision(p), expected="")
                for n, p in (("a", 0.01), ("b", 0.2), ("c", 0.03))]
    assert all_of(criteria).name == "b"


# -- the planted model: its circuit is head 0.0, by construction ------------------------
PLANTED = """\
model: zoo:planted-prevtoken
data: {data}
metric: logit_diff
correction: none
claims:
{claims}
"""


def _planted(tmp_path: Path, claims: str) -> dict[str, Any]:
    path = tmp_path / "test_c.yaml"
    path.write_text(PLANTED.format(data=ROOT / "claims/zoo/planted.jsonl", claims=claims))
    return {r.id: r for r in evaluate_path(path)}


def test_the_planted_circuit_is_faithful_complete_and_minimal(tmp_path: Path) -> None:
    results = _planted(tmp_path, """\
  - {id: true_c, kind: circuit, components: ["head 0.0"], faithfulness: 0.95,
     completeness: 0.05, minimality: 0.5, k_sets: [random, greedy]}
  - {id: missing, kind: circuit, components: ["head 0.1", "head 1.0"], completeness: 0.1,
     k_sets: [greedy]}
  - {id: idle, kind: circuit, components: ["head 0.0", "head 0.1"], minimality: 0.05}
  - {id: idle_faithful, kind: circuit, components: ["head 0.0", "head 0.1"],
     faithfulness: 0.95}
""")
    true = results["true_c"]
    assert true.verdict == "pass", true.message
    assert [c["name"] for c in true.criteria] == ["faithfulness", "completeness", "minimality"]
    assert all(c["passed"] for c in true.criteria)
    # every other head and MLP has zero weights: F(C) = F(M) on every prompt
    assert true.criteria[0]["effect"] == pytest.approx(1.0, abs=1e-6)
    missing = results["missing"]
    assert missing.verdict == "fail" and missing.reason == "refuted"
    assert "criterion     completeness FAILED" in missing.message
    assert "least complete for K =" in missing.message
    idle = results["idle"]
    assert idle.verdict == "fail"
    assert idle.criteria[0]["detail"].startswith("least needed: blocks.0.attn.head.1")
    assert results["idle_faithful"].verdict == "pass"  # an idle head costs no faithfulness


def test_shi_tests_on_the_planted_model(tmp_path: Path) -> None:
    results = _planted(tmp_path, """\
  - {id: eq_true, kind: equivalent, components: ["head 0.0"]}
  - {id: eq_wrong, kind: equivalent, components: ["head 0.1"]}
  - {id: suff_true, kind: sufficient_vs_random, components: ["head 0.0"], n_random: 60}
  - {id: suff_wrong, kind: sufficient_vs_random, components: ["head 0.1"], n_random: 60}
  - {id: min_true, kind: minimal_edges, components: ["head 0.0"], n_random: 60}
  - {id: min_idle, kind: minimal_edges, components: ["head 0.0", "head 0.1"], n_random: 60}
  - {id: indep_true, kind: independent, components: ["head 0.0"]}
""")
    verdicts = {k: r.verdict for k, r in results.items()}
    assert verdicts == {"eq_true": "pass", "eq_wrong": "fail", "suff_true": "pass",
                        "suff_wrong": "fail", "min_true": "pass", "min_idle": "fail",
                        "indep_true": "pass"}, {k: r.message for k, r in results.items()}
    assert "blocks.0.attn.head.1" in results["min_idle"].criteria[0]["detail"]


def test_same_seed_same_circuit_report(tmp_path: Path) -> None:
    claims = """\
  - {id: c, kind: circuit, components: ["head 0.0", "head 1.1"], completeness: 0.1,
     minimality: 0.1, k_sets: [random], n_k_sets: 4, seed: 3}
"""
    first = _planted(tmp_path, claims)["c"].record()
    second = _planted(tmp_path, claims)["c"].record()
    for record in (first, second):
        record.pop("duration_s")
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)


@pytest.mark.parametrize(("claim", "key", "text"), [
    ('{id: e, kind: circuit, components: ["head 0.0"]}', "faithfulness",
     "a circuit claim states at least one criterion"),
    ('{id: e, kind: circuit, components: ["head 0.0"], completeness: 0.1, '
     'k_sets: by_class}', "k_sets", "k_sets: by_class needs classes"),
    ('{id: e, kind: circuit, components: ["head 0.0"], completeness: 0.1, '
     'k_sets: by_class, classes: {a: ["head 0.1"]}}', "classes", "not in the circuit"),
    ('{id: e, kind: circuit, components: ["embed"], faithfulness: 0.5}', "components",
     "is not a node of a circuit"),
    ('{id: e, kind: circuit, components: ["head 0.0"], faithfulness: 0.5, metric: logprob}',
     "faithfulness", "needs a positive F(M)"),
    ('{id: e, kind: path, senders: ["head 1.0"], receivers: ["blocks.0.attn.head.1.k"], '
     'min_drop: 1}', "receivers", "no path joins them"),
    ('{id: e, kind: path, senders: ["embed"], receivers: logits, min_drop: 1}', "senders",
     "cannot send along a path"),
    ('{id: e, kind: path, senders: ["head 0.0"], receivers: ["head 1.0"], min_drop: 1}',
     "receivers", "is not a head's input"),
    ('{id: e, kind: path, senders: ["head 0.0"], receivers: logits, min_recovery: 0.5}',
     "min_recovery", "goes with direction: denoise"),
    ('{id: e, kind: path, senders: ["head 0.0"], receivers: logits, min_drop: 1, '
     'margin: 0.1}', "margin", "takes one of min_drop, min_recovery or margin"),
])
def test_bad_circuit_and_path_claims_are_located_errors(claim: str, key: str, text: str,
                                                        tmp_path: Path) -> None:
    results = _planted(tmp_path, f"  - {claim}\n  - {{id: ok, kind: circuit, components: "
                                 '["head 0.0"], faithfulness: 0.9}\n')
    error, ok = results["e"], results["ok"]
    assert error.verdict == "error", error
    assert text in error.message
    assert f"key '{key}'" in error.message or f"{key}:" in error.message, error.message
    assert ok.verdict == "pass"  # the file's other claim still runs


def test_edge_circuits_on_the_planted_model(tmp_path: Path) -> None:
    """Head 0.0's edge to the logits is the planted circuit: faithful, complete, minimal
    and better than random edge sets; an idle head's extra edge is not minimal."""
    results = _planted(tmp_path, """\
  - {id: edge, kind: circuit, edges: ["head 0.0 -> logits"], faithfulness: 0.99,
     completeness: 0.05, minimality: 0.5, k_sets: [random, greedy]}
  - {id: idle_edge, kind: circuit, edges: ["head 0.0 -> logits", "head 0.1 -> logits"],
     minimality: 0.05, k_sets: [random]}
  - {id: edge_min, kind: minimal_edges, edges: ["head 0.0 -> logits"], n_random: 60}
  - {id: edge_suff, kind: sufficient_vs_random, edges: ["head 0.0 -> logits"],
     n_random: 60}
  - {id: wrong_edge, kind: circuit, edges: ["head 0.1 -> logits"], faithfulness: 0.5}
""")
    verdicts = {k: r.verdict for k, r in results.items()}
    assert verdicts == {"edge": "pass", "idle_edge": "fail", "edge_min": "pass",
                        "edge_suff": "pass", "wrong_edge": "fail"}, \
        {k: r.message for k, r in results.items()}
    assert results["edge"].criteria[0]["effect"] == pytest.approx(1.0, abs=1e-6)
    assert results["edge"].components == ("blocks.0.attn.head.0 -> logits",)
    assert "blocks.0.attn.head.1 -> logits" in results["idle_edge"].criteria[0]["detail"]


def test_edge_scores_are_the_edge_runs_several_per_pass(tiny_loaded: Any) -> None:
    from mechcheck.engine.edges import EdgeScorer, edge_logits, parse_edges

    ctx = claim_context(tiny_loaded("gpt2"), word_rows(6), metric="logprob", batch_size=8)
    scorer = EdgeScorer(ctx, IV["mean"])
    sets = [frozenset(parse_edges(ctx, names)) for names in (
        ["head 0.1 -> logits"], ["head 0.1 -> blocks.1.attn.head.2.k", "head 1.2 -> logits"],
        [])]
    for edges, values in zip(sets, scorer.scores(sets)):
        np.testing.assert_allclose(values, ctx.metric_of(edge_logits(ctx, edges, IV["mean"])),
                                   rtol=1e-5, atol=1e-6)
    assert len(scorer.everything) == 8 + 4 * 4 * 3  # every head -> logits, 0.x -> 1.y q/k/v
    np.testing.assert_array_equal(scorer.score(scorer.everything), ctx.metric_values("clean"))
