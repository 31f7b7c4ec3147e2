"""``kind: activates`` (mechcheck.kinds.features): an SAE feature is active where a data
column marks.  Precision and recall are checked against counts made here from the
SAE's formula on the model's hidden states (plain torch), on a tiny model with a
random SAE, and on ``zoo:planted-feature-read`` with a ground-truth SAE built by hand
from its known residual directions (feature 72 = FA, "the token before is in group A").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats as st

from mechcheck.errors import MechcheckError
from mechcheck.kinds.features import Activates
from mechcheck.sae import SAE, save_sae
from mechcheck.zoo.planted_feature import GROUP_A, feature_rows
from tests.conftest import assert_located_errors, claim_context, word_rows
from tests.test_sae import SITE, hand_encode, hand_hidden, hand_ids, random_sae

FA, FB = 72, 73  # planted-feature-read: the feature block's coordinates


def ground_truth_sae() -> SAE:
    """One feature per known direction of blocks.0.resid_post (token, position, FA, FB,
    none: coordinates 0-74), read and written by the unit vectors themselves."""
    eye = torch.eye(128)[:75]
    return SAE(W_enc=eye.t().clone(), b_enc=torch.zeros(75), W_dec=eye.clone(),
               b_dec=torch.zeros(128), site="blocks.0.resid_post")


def after_a_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Planted-feature rows with ``after_a``: one flag per token (<bos> first), 1 where
    the token before is a group A word."""
    rows = feature_rows(n=n, seed=seed)
    for row in rows:
        words = str(row["prompt"]).split()
        row["after_a"] = [0, 0, *(int(w in GROUP_A) for w in words[:-1])]
    return rows


@pytest.fixture(scope="module")
def planted() -> Any:
    from mechcheck.session import Session

    loaded = Session().model("zoo:planted-feature-read")
    yield loaded
    loaded.adapter.saes = {}


def measure(loaded: Any, rows: list[dict[str, Any]], sae: SAE, **params: Any) -> Any:
    loaded.adapter.saes = {"s": sae}
    full = {"threshold": 0.0, "at": None, **params}
    ctx = claim_context(loaded, rows, kind="activates", **full)
    return Activates().measure(ctx.claim, ctx)


def hand_rates(acts: list[np.ndarray], marks: list[set[int]], threshold: float = 0.0,
               skip_first: bool = False) -> tuple[int, int, int]:
    """(active and marked, active, marked) positions, counted here."""
    both = active = marked = 0
    for values, marked_here in zip(acts, marks):
        for pos, value in enumerate(values):
            if skip_first and pos == 0:
                continue
            a, m = value > threshold, pos in marked_here
            both += a and m
            active += a
            marked += m
    return both, active, marked


def test_planted_true_feature_has_full_precision_and_recall(planted: Any) -> None:
    rows = after_a_rows(40, seed=1)
    sae = ground_truth_sae()
    # threshold 1: the attention's e^-40 leak leaves FA at ~1e-17 where it is off
    result = measure(planted, rows, sae, components=[f"{SITE}.sae.s.{FA}"], marks="after_a",
                     min_precision=0.9, min_recall=0.9, threshold=1.0)
    ids = [hand_ids(planted.tokenizer, str(r["prompt"])) for r in rows]
    hidden = [hand_hidden(planted.model, i).double() for i in ids]
    acts = [h[:, FA].numpy() for h in hidden]
    marks = [{i for i, v in enumerate(r["after_a"]) if v} for r in rows]
    both, active, marked = hand_rates(acts, marks, threshold=1.0)
    assert both == active == marked > 50  # by construction: FA = 8 exactly there
    criteria = {c.name: c.decision for c in result.criteria}
    assert criteria["min_precision"].effect == 1.0 and criteria["min_recall"].effect == 1.0
    assert criteria["min_precision"].n == active and criteria["min_recall"].n == marked
    # exact binomial: p = P(Bin(n, 0.9) >= n) = 0.9^n
    assert criteria["min_recall"].p_value == pytest.approx(0.9 ** marked, rel=1e-9)
    assert criteria["min_precision"].ci_low == pytest.approx(0.05 ** (1 / active), rel=1e-9)
    assert result.decision.p_value <= 0.05
    # the profile: mean activation per position name, counted here
    profile = {p["site"]: p for p in result.profile}
    ends = [acts[r][int(rows[r]["positions"]["END"])] for r in range(len(rows))]
    top = max(float(a.max()) for a in acts)
    assert profile["END"]["activation"] == pytest.approx(np.mean(ends) / top, abs=1e-6)
    assert profile["END"]["active"] == pytest.approx(np.mean([e > 1.0 for e in ends]))
    assert profile["END"]["marked"] == pytest.approx(np.mean([
        rows[r]["group_prev"] == "A" for r in range(len(rows))]))
    assert {"PREV", "END", "other"} <= set(profile)


def test_planted_other_features_fail(planted: Any) -> None:
    rows = after_a_rows(40, seed=1)
    sae = ground_truth_sae()
    marks = [{i for i, v in enumerate(r["after_a"]) if v} for r in rows]
    ids = [hand_ids(planted.tokenizer, str(r["prompt"])) for r in rows]
    hidden = [hand_hidden(planted.model, i).double() for i in ids]
    for feature in (FB, 74, 41):  # FB, "none", position 1
        result = measure(planted, rows, sae, components=[f"{SITE}.sae.s.{feature}"],
                         marks="after_a", min_precision=0.5, threshold=1.0)
        both, active, _ = hand_rates([h[:, feature].numpy() for h in hidden], marks, 1.0)
        assert result.decision.effect == pytest.approx(both / active)
        assert result.decision.effect < 0.1 and result.decision.p_value > 0.5
        assert not result.criteria  # one bound: no separate criteria


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_rates_match_hand_counts_on_tiny_models(arch: str,
                                                tiny_loaded: Callable[..., Any]) -> None:
    loaded = tiny_loaded(arch)
    sae = random_sae(loaded.adapter.dims.d_model, seed=2)
    rows = word_rows(8, seed=4)
    for r in rows:
        r["marked"] = ["S", "last"]
    try:
        ids = [hand_ids(loaded.tokenizer, r["prompt"]) for r in rows]
        hidden = [hand_hidden(loaded.model, i) for i in ids]
        counts = (hand_encode(sae, hidden[0]) > 0.1).sum(dim=0)
        feature = int(torch.argsort(counts)[len(counts) // 2])  # active on some positions
        result = measure(loaded, rows, sae, components=[f"{SITE}.sae.s.{feature}"],
                         marks="marked", min_precision=0.2, min_recall=0.3, threshold=0.1,
                         at=(1, 2, 3, "last"))
        acts = [hand_encode(sae, h)[:, feature].numpy() for h in hidden]
        both = active = marked = 0
        for values, i in zip(acts, ids):
            for pos in sorted({1, 2, 3, len(i) - 1}):
                a, m = values[pos] > 0.1, pos in (2, len(i) - 1)
                both, active, marked = both + (a and m), active + a, marked + m
        criteria = {c.name: c.decision for c in result.criteria}
        if active:
            assert criteria["min_precision"].effect == pytest.approx(both / active)
            assert criteria["min_precision"].n == active
        assert criteria["min_recall"].effect == pytest.approx(both / marked)
        assert criteria["min_recall"].p_value == pytest.approx(
            st.binomtest(both, marked, 0.3, alternative="greater").pvalue)
        assert result.decision.p_value == max(d.p_value for d in criteria.values())
    finally:
        loaded.adapter.saes = {}


ERRORS = """\
model: {model}
data: rows.jsonl
saes:
  s: s.safetensors
claims:
  - id: ok
    kind: activates
    components: ["blocks.0.resid_post.sae.s.3"]
    marks: marked
    min_recall: 0.01
  - id: no_column
    kind: activates
    components: ["blocks.0.resid_post.sae.s.3"]
    marks: nothing
    min_recall: 0.5
  - id: bad_mark
    kind: activates
    components: ["blocks.0.resid_post.sae.s.3"]
    marks: bad
    min_recall: 0.5
  - id: unknown_name
    kind: activates
    components: ["blocks.0.resid_post.sae.s.3"]
    marks: unnamed
    min_recall: 0.5
  - id: two
    kind: activates
    components: ["blocks.0.resid_post.sae.s.3", "blocks.0.resid_post.sae.s.4"]
    marks: marked
    min_recall: 0.5
  - id: not_a_feature
    kind: activates
    components: ["blocks.0.resid_post"]
    marks: marked
    min_recall: 0.5
  - id: no_bound
    kind: activates
    components: ["blocks.0.resid_post.sae.s.3"]
    marks: marked
  - id: empty
    kind: activates
    components: ["blocks.0.resid_post.sae.s.3"]
    marks: none_marked
    min_recall: 0.5
"""


def test_errors_are_located(tmp_path: Path, tiny_folder: Callable[..., Path],
                            tiny_loaded: Callable[..., Any]) -> None:
    from mechcheck.api import evaluate_path
    from mechcheck.spec.schema import ClaimSpec  # noqa: F401 - the loader is exercised

    loaded = tiny_loaded("gpt2")
    save_sae(tmp_path / "s.safetensors", random_sae(loaded.adapter.dims.d_model))
    rows = word_rows(6, seed=2)
    for r in rows:
        r.update(marked="S", bad=[{"x": 1}], unnamed=["Q"], none_marked=[])
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    path = tmp_path / "test_act.yaml"
    path.write_text(ERRORS.format(model=tiny_folder("gpt2")))
    results = {r.id: r for r in evaluate_path(path)}
    assert results["ok"].verdict in ("pass", "fail"), results["ok"].message
    expected = {"no_column": ("marks", "the data has no column 'nothing'"),
                "bad_mark": ("marks", "gives [{'x': 1}]"),
                "unknown_name": ("marks", "defines no position named 'Q'"),
                "two": ("components", "activates takes one SAE feature"),
                "not_a_feature": ("components", "activates takes one SAE feature"),
                "no_bound": ("kind", "needs min_precision, min_recall or both"),
                "empty": ("marks", "marks none of the positions")}
    assert_located_errors(results, expected)


def test_bounds_are_checked_by_the_loader() -> None:
    spec = Activates.keys["min_precision"]
    assert spec.parse(0.5) == 0.5
    for bad in (0, 1, 1.5, "x"):
        with pytest.raises((ValueError, MechcheckError)):
            spec.parse(bad)


# -- (3) ablating a true feature on the planted model ------------------------------------
def test_planted_feature_ablation_has_the_constructed_effect(planted: Any) -> None:
    """Zeroing the FA feature at END removes 8 e_72 there: head 1.0 then writes neither
    yes nor no, so logit(answer) - logit(wrong) falls from 11.136 (64 / std of the
    residual, docs/zoo/planted-feature.md) to 0 on group A rows and stays on group B
    rows (where FA is 0 at END); the error term is 0 for this SAE."""
    from mechcheck.data import tokenize_rows
    from mechcheck.engine.runner import Runner
    from tests.test_sae import IVS, hand_logits

    rows = after_a_rows(20, seed=2)
    planted.adapter.saes = {"s": ground_truth_sae()}
    runner = Runner(planted, tokenize_rows(rows, planted.tokenizer))
    vocab = planted.tokenizer.get_vocab()
    answer = [vocab[str(r["answer"])] for r in rows]
    wrong = [vocab[str(r["wrong"])] for r in rows]

    def diff(logits: torch.Tensor) -> np.ndarray:
        return np.asarray([float(logits[i, answer[i]] - logits[i, wrong[i]])
                           for i in range(len(rows))])

    (fa,) = planted.adapter.resolve([f"{SITE}.sae.s.{FA}"])
    (error,) = planted.adapter.resolve([f"{SITE}.sae.s.error"])
    clean = diff(runner.logits("clean"))
    ablated = diff(runner.patched_logits([(fa, IVS["zero"])], at=["END"]))
    no_error = diff(runner.patched_logits([(error, IVS["zero"])]))
    group_a = np.asarray([r["group_prev"] == "A" for r in rows])
    assert 0 < group_a.sum() < len(rows)
    assert np.allclose(clean, 11.136, atol=1e-3)
    assert np.allclose(ablated[group_a], 0.0, atol=1e-4)
    assert np.allclose(ablated[~group_a], clean[~group_a], atol=1e-5)
    assert np.array_equal(no_error, clean)  # x_hat = x here: nothing to remove
    # and the same by a hand hook that zeroes coordinate 72 at the last position
    for i, r in enumerate(rows):
        ids = hand_ids(planted.tokenizer, str(r["prompt"]))

        def cut(h: torch.Tensor) -> torch.Tensor:
            out = h.clone()
            out[-1, FA] = 0.0
            return out

        logits = hand_logits(planted.model, ids, cut)
        assert float(logits[answer[i]] - logits[wrong[i]]) == pytest.approx(ablated[i],
                                                                            abs=1e-4)


def test_trained_sae_on_the_planted_model(planted: Any) -> None:
    """The shipped SAE trained by mechcheck sae train (claims/zoo/): nothing changed
    gives the model's logits exactly; zeroing feature 44 equals the hand hook."""
    from mechcheck.data import tokenize_rows
    from mechcheck.engine.runner import Runner
    from mechcheck.sae import load_sae
    from tests.test_sae import IVS, hand_logits

    root = Path(__file__).resolve().parents[1]
    sae = load_sae(root / "claims/zoo/sae_planted_feature.safetensors")
    planted.adapter.saes = {"planted": sae}
    rows = after_a_rows(12, seed=3)
    runner = Runner(planted, tokenize_rows(rows, planted.tokenizer))
    features = planted.adapter.resolve([f"{SITE}.sae.planted.*"])
    keep = lambda current, rows: current  # noqa: E731
    same = runner.run("clean", [(a, keep) for a in features]).logits
    assert torch.equal(same, runner.logits("clean"))
    (f44,) = planted.adapter.resolve([f"{SITE}.sae.planted.44"])
    zero = runner.patched_logits([(f44, IVS["zero"])]).double()
    w = sae.W_dec[44].double()

    def encode(h: torch.Tensor) -> torch.Tensor:  # top-3 of relu((h - b_dec) W_enc + b_enc)
        pre = (h.double() - sae.b_dec.double()) @ sae.W_enc.double() + sae.b_enc.double()
        kept = torch.zeros_like(pre)
        top = torch.topk(pre, 3, dim=-1)
        return kept.scatter(-1, top.indices, top.values.relu())

    for i, r in enumerate(rows):
        ids = hand_ids(planted.tokenizer, str(r["prompt"]))
        hand = hand_logits(planted.model, ids, lambda h: h - encode(h)[:, 44:45] * w)
        assert torch.allclose(zero[i], hand, atol=1e-3)
    assert (zero - runner.logits("clean").double()).abs().max() > 0.1
