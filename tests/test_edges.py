"""Edge-level circuits.

First the reference :func:`tests.reference_forward.reference_edge_circuit` against
identities that follow from its definition, on tiny perturbed models with sharpened
weights (tests/test_reference_forward.py's ``tiny``); then
:func:`mechcheck.engine.edges.edge_logits` against the reference, row by row, for gpt2,
llama (rotary, grouped-query attention) and neox (parallel residual, partial rotary),
with mean and resample ablation.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
import torch

from tests.conftest import claim_context, word_rows
from tests.reference_forward import (
    _affine,
    _norm,
    _spec,
    _unembed,
    manual_forward,
    reference_edge_circuit,
)
from tests.test_paths import _sharpened, sharp_loaded  # noqa: F401  (a fixture)
from tests.test_reference_forward import BASE, SOURCE, tiny

ARCHS3 = ("gpt2", "llama", "neox")
TOL = 1e-4
EFFECT = 1e-3  # on the sharpened models, what a cut edge must change (not vacuous)
Head = tuple[int, int]


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=tol)


def gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def heads_of(model: Any) -> list[Head]:
    spec = _spec(model)
    return [(li, h) for li in range(len(spec.layers)) for h in range(spec.n_heads)]


def every_edge(heads: list[Head]) -> set[Any]:
    """Every head -> later head's q/k/v, and every head -> logits."""
    out: set[Any] = {(s, "logits") for s in heads}
    out |= {(s, (r[0], r[1], i)) for s in heads for r in heads if r[0] > s[0] for i in "qkv"}
    return out


def complete(circuit: list[Head]) -> set[Any]:
    """Every edge between the heads of ``circuit`` (and each of them to the logits)."""
    return every_edge(circuit)


def _ablated(model: Any) -> dict[Head, torch.Tensor]:
    """A head's z on the other prompt: ``SOURCE`` differs from ``BASE`` at position 2."""
    return manual_forward(model, SOURCE).head_z


def _node(model: Any, keep: set[Head], ablated: dict[Head, torch.Tensor]) -> torch.Tensor:
    """Node circuit: every head outside ``keep`` ablated, last-position logits."""
    z = {h: ablated[h] for h in heads_of(model) if h not in keep}
    return manual_forward(model, BASE, head_z=z).logits[-1]


def _contribution(model: Any, head: Head, z: torch.Tensor) -> torch.Tensor:
    return z @ _spec(model).layers[head[0]].wo[head[1]]


# --------------------------------------------------------------------------- reference

@pytest.mark.parametrize("n_layers", [2, 3])
@pytest.mark.parametrize("arch", ARCHS3)
def test_every_edge_is_the_plain_model(arch: str, n_layers: int) -> None:
    model = tiny(arch, n_layers)
    ablated, heads = _ablated(model), heads_of(model)
    plain = manual_forward(model, BASE).logits[-1]
    edges = every_edge(heads)
    assert {s for s, _ in edges} == set(heads)  # every head is a circuit head
    close(reference_edge_circuit(model, BASE, edges, ablated), plain)
    assert gap(_node(model, set(), ablated), plain) > EFFECT  # ablation matters


@pytest.mark.parametrize("n_layers", [2, 3])
@pytest.mark.parametrize("arch", ARCHS3)
def test_no_edges_is_every_head_ablated(arch: str, n_layers: int) -> None:
    model = tiny(arch, n_layers)
    ablated = _ablated(model)
    expected = manual_forward(model, BASE, head_z=dict(ablated)).logits[-1]
    close(reference_edge_circuit(model, BASE, set(), ablated), expected)


@pytest.mark.parametrize("n_layers", [2, 3])
@pytest.mark.parametrize("arch", ARCHS3)
def test_one_layer0_head_to_the_logits(arch: str, n_layers: int) -> None:
    model = tiny(arch, n_layers)
    spec, ablated, s = _spec(model), _ablated(model), (0, 1)
    got = reference_edge_circuit(model, BASE, {(s, "logits")}, ablated)
    # s has no head receivers, and heads are its only gated readers: the node circuit {s}
    close(got, _node(model, {s}, ablated))
    # The algebraic form "every head ablated, then s's (actual - ablated) output added to
    # the final residual only" is this with every MLP frozen to the all-ablated run's:
    # MLPs are not gated, they read s's actual output, so it is NOT the edge circuit.
    none = manual_forward(model, BASE, head_z=dict(ablated))
    z_s = manual_forward(model, BASE).head_z[s]  # layer 0: its inputs are the embeddings
    resid = none.resid_final + _contribution(model, s, z_s) - _contribution(model, s, ablated[s])
    algebraic = _unembed(spec, resid)[-1]
    frozen = {h: ablated[h] for h in heads_of(model) if h != s}
    close(algebraic, manual_forward(model, BASE, head_z=frozen,
                                    mlp_out=dict(none.mlp_out)).logits[-1])
    assert gap(algebraic, got) > EFFECT  # the MLPs downstream of s read it


def test_a_last_layer_head_to_the_logits_is_algebraic_under_parallel_residual() -> None:
    # neox's last MLP reads the block's input, not the head: s reaches only the logits
    model = tiny("neox")
    spec, ablated, s = _spec(model), _ablated(model), (1, 2)
    got = reference_edge_circuit(model, BASE, {(s, "logits")}, ablated)
    none = manual_forward(model, BASE, head_z=dict(ablated))
    z_s = manual_forward(model, BASE, head_z={h: ablated[h] for h in heads_of(model)
                                              if h != s}).head_z[s]
    resid = none.resid_final + _contribution(model, s, z_s) - _contribution(model, s, ablated[s])
    close(got, _unembed(spec, resid)[-1])
    assert gap(got, none.logits[-1]) > EFFECT


@pytest.mark.parametrize("n_layers", [2, 3])
@pytest.mark.parametrize("arch", ARCHS3)
def test_a_complete_subgraph_is_its_node_circuit(arch: str, n_layers: int) -> None:
    model = tiny(arch, n_layers)
    ablated = _ablated(model)
    circuit = [(0, 1), (0, 3), (n_layers - 1, 0), (n_layers - 1, 2)]
    if n_layers == 3:
        circuit.append((1, 1))
    got = reference_edge_circuit(model, BASE, complete(circuit), ablated)
    expected = _node(model, set(circuit), ablated)
    close(got, expected)
    assert gap(expected, manual_forward(model, BASE).logits[-1]) > EFFECT


@pytest.mark.parametrize("arch", ARCHS3)
def test_ablating_to_the_actual_values_changes_nothing(arch: str) -> None:
    # every head a circuit head, every head->head edge cut: every q/k/v is recomputed
    # from resid_pre minus zero deltas, which must be its own value
    model = tiny(arch, 3)
    heads = heads_of(model)
    plain = manual_forward(model, BASE)
    logits_only = {(s, "logits") for s in heads}
    close(reference_edge_circuit(model, BASE, logits_only, plain.head_z), plain.logits[-1])
    some = {((0, 1), (2, 3, "k")), ((1, 2), "logits"), ((0, 0), (1, 0, "q"))}
    close(reference_edge_circuit(model, BASE, some, plain.head_z), plain.logits[-1])
    # with another ablation the cut head->head edges matter
    assert gap(reference_edge_circuit(model, BASE, logits_only, _ablated(model)),
               plain.logits[-1]) > EFFECT


@pytest.mark.parametrize("arch", ARCHS3)
def test_receiver_input_is_the_residual_minus_the_cut_senders(arch: str) -> None:
    # written out for two layers: circuit {(0, 1), (0, 3), (1, 2)}
    model = tiny(arch)
    spec, ablated = _spec(model), _ablated(model)
    a, b, r = (0, 1), (0, 3), (1, 2)
    edges = {(a, (1, 2, "q")), (b, (1, 2, "v")), (b, "logits"), (r, "logits")}
    got = reference_edge_circuit(model, BASE, edges, ablated)

    circuit = {a, b, r}
    z = {h: ablated[h] for h in heads_of(model) if h not in circuit}
    first = manual_forward(model, BASE, head_z=z)
    delta = {s: _contribution(model, s, first.head_z[s]) - _contribution(model, s, ablated[s])
             for s in (a, b)}
    layer = spec.layers[1]
    group = spec.n_heads // spec.n_kv_heads

    def proj(x: torch.Tensor, w: Any) -> torch.Tensor:
        return _affine(_norm(spec, x, layer.norm1), *w)

    resid = first.resid_pre[1]
    q = proj(resid - delta[b], layer.wq[2])              # a's edge kept, b's cut
    k = proj(resid - delta[a] - delta[b], layer.wk[2 // group])  # both cut
    v = proj(resid - delta[a], layer.wv[2 // group])     # b's edge kept
    second = manual_forward(model, BASE, head_z=z, q={r: q}, k={r: k}, v={r: v})
    expected = _unembed(spec, second.resid_final - delta[a])[-1]  # a's logits edge cut
    close(got, expected)
    assert gap(expected, _node(model, circuit, ablated)) > EFFECT


@pytest.mark.parametrize("n_layers", [2, 3])
@pytest.mark.parametrize("arch", ARCHS3)
def test_removing_an_edge_changes_the_logits_and_adding_it_back_restores_them(
        arch: str, n_layers: int) -> None:
    model = tiny(arch, n_layers)
    ablated = _ablated(model)
    last = n_layers - 1
    group = 2 if arch == "llama" else 1  # llama: edges into a kv group's k/v go to both

    def into(s: Head, layer: int, head: int, site: str) -> set[Any]:
        if site == "q" or group == 1:
            return {(s, (layer, head, site))}
        first = head - head % group
        return {(s, (layer, h, site)) for h in range(first, first + group)}

    edges: set[Any] = {((0, 1), "logits"), ((last, 2), "logits"), ((last, 3), "logits")}
    cuts = [into((0, 1), last, 2, "q"), into((0, 0), last, 2, "k"),
            into((0, 3), last, 3, "v"), {((0, 1), "logits")}]
    if n_layers == 3:
        edges |= {((1, 0), "logits")}
        cuts += [into((1, 0), 2, 2, "v"), into((0, 2), 1, 0, "v")]
    for cut in cuts:
        edges |= cut
    full = reference_edge_circuit(model, BASE, edges, ablated)
    for cut in cuts:
        without = reference_edge_circuit(model, BASE, edges - cut, ablated)
        assert gap(without, full) > EFFECT, cut
        back = reference_edge_circuit(model, BASE, (edges - cut) | cut, ablated)
        close(back, full, 0)
    # the order edges come in does not matter
    close(reference_edge_circuit(model, BASE, sorted(edges, key=str, reverse=True),
                                 ablated), full, 0)


def test_gqa_edges_into_a_kv_group_set_the_group() -> None:
    model = tiny("llama")
    spec, ablated = _spec(model), _ablated(model)
    assert spec.n_heads // spec.n_kv_heads == 2  # heads 2 and 3 share kv head 1
    s, t = (0, 1), (0, 2)
    same = {(s, (1, 2, "k")), (s, (1, 3, "k")), (t, (1, 2, "q")), ((1, 2), "logits"),
            ((1, 3), "logits"), (t, "logits")}
    got = reference_edge_circuit(model, BASE, same, ablated)
    # k input of the group: t's edge cut, s's kept
    z = {h: ablated[h] for h in heads_of(model) if h not in {s, t, (1, 2), (1, 3)}}
    first = manual_forward(model, BASE, head_z=z)
    d_t = _contribution(model, t, first.head_z[t]) - _contribution(model, t, ablated[t])
    d_s = _contribution(model, s, first.head_z[s]) - _contribution(model, s, ablated[s])
    layer, resid = spec.layers[1], first.resid_pre[1]

    def proj(x: torch.Tensor, w: Any) -> torch.Tensor:
        return _affine(_norm(spec, x, layer.norm1), *w)

    over = {"q": {(1, 2): proj(resid - d_s, layer.wq[2]),
                  (1, 3): proj(resid - d_s - d_t, layer.wq[3])},
            "k": {(1, 2): proj(resid - d_t, layer.wk[1])},
            "v": {(1, 2): proj(resid - d_s - d_t, layer.wv[1])}}
    second = manual_forward(model, BASE, head_z=z, q=over["q"], k=over["k"], v=over["v"])
    assert torch.equal(second.k[1, 2], second.k[1, 3])
    close(got, _unembed(spec, second.resid_final - d_s)[-1])
    # one head of the group alone: it still sets the group's k
    alone = reference_edge_circuit(model, BASE, same - {(s, (1, 3, "k"))}, ablated)
    assert gap(alone, got) > EFFECT


def test_edges_must_go_forward() -> None:
    model = tiny("gpt2")
    ablated = _ablated(model)
    for edge in (((1, 0), (1, 2, "q")), ((1, 0), (0, 2, "k")), ((0, 0), (1, 2, "x")),
                 ((0, 4), "logits"), ((0, 0), (2, 0, "q"))):
        with pytest.raises(ValueError):
            reference_edge_circuit(model, BASE, {edge}, ablated)


# --------------------------------------------------------------------------- engine

N_ROWS = 4
ROWS = word_rows(N_ROWS, lengths=(7,))  # one length: per-position means need no padding


def _name(edge: Any) -> str:
    (sl, sh), receiver = edge
    left = f"blocks.{sl}.attn.head.{sh}"
    if receiver == "logits":
        return f"{left} -> logits"
    rl, rh, site = receiver
    return f"{left} -> blocks.{rl}.attn.head.{rh}.{site}"


def _gqa_safe(edges: set[Any], arch: str) -> set[Any]:
    """For llama (2 query heads per kv head): copy every k/v edge to the other head of its
    group, so that the heads of a group get the same k/v inputs."""
    if arch != "llama":
        return set(edges)
    out = set(edges)
    for s, r in edges:
        if r != "logits" and r[2] in "kv":
            out.add((s, (r[0], r[1] ^ 1, r[2])))
    return out


def _cases(n_layers: int) -> dict[str, set[Any]]:
    last = n_layers - 1
    cases: dict[str, set[Any]] = {
        "none": set(),
        "one->logits": {((0, 1), "logits")},
        "last->logits": {((last, 2), "logits")},
        "q chain": {((0, 1), (last, 2, "q")), ((last, 2), "logits"), ((0, 3), "logits")},
        "k and v": {((0, 0), (last, 1, "k")), ((0, 2), (last, 1, "v")),
                    ((last, 1), "logits"), ((0, 0), "logits")},
        # (last, 0) receives but sends nothing: its output is cut from the logits
        "receiver only": {((0, 0), (last, 0, "q")), ((0, 0), (last, 0, "v")),
                          ((0, 3), (last, 3, "k")), ((last, 3), "logits")},
    }
    if n_layers >= 3:
        cases["two hops"] = {((0, 1), (1, 2, "q")), ((1, 2), (2, 0, "k")),
                             ((0, 3), (2, 0, "q")), ((2, 0), "logits"), ((1, 2), "logits")}
        cases["mixed"] = {((0, 0), (1, 1, "v")), ((0, 2), (1, 1, "q")), ((0, 2), (2, 3, "q")),
                          ((1, 1), (2, 3, "v")), ((1, 1), (2, 0, "q")), ((2, 3), "logits"),
                          ((2, 0), "logits"), ((0, 0), "logits")}
    return cases


THREE_LAYER_CASES = ("k and v", "receiver only", "two hops", "mixed", "every head->logits")


def _all_cases(heads: list[Head], n_layers: int) -> dict[str, set[Any]]:
    cases = _cases(n_layers)
    cases["every edge"] = every_edge(heads)
    cases["every head->logits"] = {(s, "logits") for s in heads}
    if n_layers >= 3:  # the engine's runs cost ~0.5 s each on two busy cores
        cases = {c: e for c, e in cases.items() if c in THREE_LAYER_CASES}
    return cases


def _load3(tiny_folder: Callable[..., Any], arch: str) -> Any:
    from mechcheck.models.archs import BUILTIN_ARCHS
    from mechcheck.models.loading import load_model
    return load_model(str(tiny_folder(arch, n_layers=3)), archs=BUILTIN_ARCHS, device="cpu")


_THREE: dict[str, Any] = {}


@pytest.fixture(scope="module")
def loaded_for(sharp_loaded: Callable[[str], Any],  # noqa: F811
               tiny_folder: Callable[..., Any]) -> Callable[[str, int], Any]:
    def get(arch: str, n_layers: int) -> Any:
        if n_layers == 2:
            return sharp_loaded(arch)
        if arch not in _THREE:
            _THREE[arch] = _sharpened(_load3(tiny_folder, arch))
        return _THREE[arch]
    return get


def _ablation(name: str) -> Any:
    from mechcheck.engine.interventions import BUILTIN_INTERVENTIONS
    return {i.name: i for i in BUILTIN_INTERVENTIONS}[name]


def _reference_ablated(model: Any, ctx: Any, ablation: str) -> list[dict[Head, torch.Tensor]]:
    """Per row, every head's ablated z."""
    prompts = [list(p) for p in ctx.dataset.prompts]
    if ablation == "resample":
        return [manual_forward(model, list(c)).head_z for c in ctx.dataset.corrupts]
    traces = [manual_forward(model, p).head_z for p in prompts]
    mean = {h: torch.stack([t[h] for t in traces]).mean(0) for h in traces[0]}
    return [mean] * len(prompts)


def _engine(ctx: Any, edges: set[Any] | list[str], ablation: str) -> torch.Tensor:
    from mechcheck.engine.edges import edge_logits, parse_edges
    names = edges if isinstance(edges, list) else sorted(_name(e) for e in edges)
    return edge_logits(ctx, parse_edges(ctx, names), _ablation(ablation))


@pytest.mark.parametrize("ablation", ["mean", "resample"])
@pytest.mark.parametrize("n_layers", [2, 3])
@pytest.mark.parametrize("arch", ARCHS3)
def test_edge_logits_equal_the_reference(arch: str, n_layers: int, ablation: str,
                                         loaded_for: Callable[[str, int], Any]) -> None:
    pytest.importorskip("mechcheck.engine.edges")
    loaded = loaded_for(arch, n_layers)
    model = loaded.model
    ctx = claim_context(loaded, ROWS, metric="logprob")
    ablated = _reference_ablated(model, ctx, ablation)
    prompts = [list(p) for p in ctx.dataset.prompts]
    plain = [manual_forward(model, p).logits[-1] for p in prompts]
    errors: dict[str, float] = {}
    for case, edges in _all_cases(heads_of(model), n_layers).items():
        edges = _gqa_safe(edges, arch)
        got = _engine(ctx, edges, ablation)
        assert got.shape[0] == len(prompts)
        effect = 0.0
        for row, ids in enumerate(prompts):
            ref = reference_edge_circuit(model, ids, edges, ablated[row])
            errors[case] = max(errors.get(case, 0.0), gap(got[row], ref))
            effect = max(effect, gap(ref, plain[row]))
        if case != "every edge":
            assert effect > EFFECT, (case, effect)  # the comparison is not vacuous
    bad = {c: e for c, e in errors.items() if e >= TOL}
    assert not bad, (arch, n_layers, ablation, bad)


@pytest.mark.parametrize("arch", ARCHS3)
def test_edge_logits_single_cut_edges(arch: str, loaded_for: Callable[[str, int], Any]) -> None:
    # each head->head edge of a 2-layer model removed alone from the complete graph
    pytest.importorskip("mechcheck.engine.edges")
    loaded = loaded_for(arch, 2)
    model = loaded.model
    ctx = claim_context(loaded, ROWS, metric="logprob")
    ablated = _reference_ablated(model, ctx, "resample")
    prompts = [list(p) for p in ctx.dataset.prompts]
    full = every_edge(heads_of(model))
    senders, receivers = [(0, 1), (0, 2)], [(1, 0, "q"), (1, 3, "k"), (1, 2, "v")]
    for s, r in itertools.product(senders, receivers):
        cut = _gqa_safe({(s, r)}, arch)
        edges = full - cut
        got = _engine(ctx, edges, "resample")
        for row, ids in enumerate(prompts):
            ref = reference_edge_circuit(model, ids, edges, ablated[row])
            assert gap(got[row], ref) < TOL, (arch, s, r, row, gap(got[row], ref))


def test_edge_logits_reject_an_inconsistent_kv_group(
        loaded_for: Callable[[str, int], Any]) -> None:
    pytest.importorskip("mechcheck.engine.edges")
    from mechcheck.errors import ClaimSpecError
    loaded = loaded_for("llama", 2)
    ctx = claim_context(loaded, ROWS, metric="logprob")
    edges = {((0, 1), (1, 2, "k")), ((1, 3), "logits"), ((1, 2), "logits")}
    with pytest.raises(ClaimSpecError):
        _engine(ctx, edges, "mean")


@pytest.mark.parametrize(("arch", "ablation", "case"), [("gpt2", "resample", "mixed"),
                                                        ("llama", "mean", "two hops")])
def test_edge_logits_in_uneven_batches(arch: str, ablation: str, case: str,
                                       loaded_for: Callable[[str, int], Any]) -> None:
    # 4 rows in batches of 3: the values stashed in the run, and each row's ablated
    # values, must stay with their rows
    pytest.importorskip("mechcheck.engine.edges")
    loaded = loaded_for(arch, 3)
    ctx = claim_context(loaded, ROWS, metric="logprob", batch_size=3)
    ablated = _reference_ablated(loaded.model, ctx, ablation)
    edges = _gqa_safe(_cases(3)[case], arch)
    got = _engine(ctx, edges, ablation)
    for row, ids in enumerate(ctx.dataset.prompts):
        ref = reference_edge_circuit(loaded.model, list(ids), edges, ablated[row])
        assert gap(got[row], ref) < TOL, (row, gap(got[row], ref))


def test_edge_to_a_head_is_an_edge_to_its_q_k_and_v(
        loaded_for: Callable[[str, int], Any]) -> None:
    pytest.importorskip("mechcheck.engine.edges")
    loaded = loaded_for("neox", 2)
    ctx = claim_context(loaded, ROWS, metric="logprob")
    short = ["blocks.0.attn.head.1 -> blocks.1.attn.head.2", "blocks.1.attn.head.2 -> logits"]
    edges = {((0, 1), (1, 2, site)) for site in "qkv"} | {((1, 2), "logits")}
    got = _engine(ctx, short, "mean")
    torch.testing.assert_close(got, _engine(ctx, edges, "mean"), rtol=0, atol=0)
    ablated = _reference_ablated(loaded.model, ctx, "mean")
    for row, ids in enumerate(ctx.dataset.prompts):
        ref = reference_edge_circuit(loaded.model, list(ids), edges, ablated[row])
        assert gap(got[row], ref) < TOL
