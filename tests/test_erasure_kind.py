"""``kind: erasure`` on the planted feature models: the verdicts known by construction,
and the erased run checked against a forward pass with the eraser applied by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mechcheck.erasure import fit_eraser
from mechcheck.errors import MechcheckError
from mechcheck.kinds.probes import Erasure
from mechcheck.models.archs import BUILTIN_ARCHS
from mechcheck.models.loading import load_model
from mechcheck.probes import fold_of
from tests.conftest import claim_context

ROOT = Path(__file__).resolve().parents[1]
ALL_ROWS = [json.loads(line) for line in
            (ROOT / "claims/zoo/planted_feature.jsonl").read_text().splitlines()]
ROWS = ALL_ROWS[:100]
BASE = {"components": ["blocks.0.resid_post"], "at": ("END",), "label": "group_prev",
        "target": "classes", "folds": 5, "metric": "logit_diff", "eraser": "leace",
        "control": "random_subspace", "min_drop": 5.0, "min_excess": 0.0, "chance_margin": 0.1,
        "probe": "logistic"}


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    return {v: load_model(f"zoo:planted-feature-{v}", archs=BUILTIN_ARCHS, device="cpu")
            for v in ("read", "unread")}


def _measure(loaded: Any, rows: list[dict[str, Any]] = ROWS,
             **params: Any) -> tuple[Any, Any]:
    ctx = claim_context(loaded, rows, kind="erasure", **{**BASE, **params})
    return Erasure().measure(ctx.claim, ctx), ctx


def _passed(measurement: Any) -> dict[str, bool]:
    return {c.name: c.decision.p_value <= c.decision.alpha for c in measurement.criteria}


@pytest.mark.parametrize("eraser", ["leace", "mean_projection"])
def test_erasing_breaks_only_the_model_that_reads_the_feature(models: dict[str, Any],
                                                              eraser: str) -> None:
    read, _ = _measure(models["read"], eraser=eraser)
    unread, _ = _measure(models["unread"], eraser=eraser)
    assert _passed(read)["min_drop"] and _passed(read)["control"]
    assert not _passed(unread)["min_drop"] and not _passed(unread)["control"]
    assert read.criteria[0].decision.effect > 10.0  # clean logit diff 11.14, to ~0
    assert abs(unread.criteria[0].decision.effect) < 0.5  # LayerNorm statistics only


def test_mean_projection_leaves_a_fresh_probe_at_the_majority_rate(
        models: dict[str, Any]) -> None:
    m, _ = _measure(models["read"], eraser="mean_projection")
    assert _passed(m) == {"min_drop": True, "control": True, "erased": True}
    assert m.decision.p_value <= 0.05


def test_the_erased_check_fails_an_eraser_that_leaves_the_feature(
        models: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """An "eraser" that removes a random direction leaves the feature readable: the
    fresh probe is right on every row, the majority on about half, so erased fails."""
    import mechcheck.erasure

    real = mechcheck.erasure.fit_eraser

    def leaky(method: str, x: Any, labels: Any, **kw: Any) -> Any:
        return real("random_subspace", x, labels, seed=kw.get("seed", 0), rank=1)

    monkeypatch.setattr(mechcheck.erasure, "fit_eraser", leaky)
    m, _ = _measure(models["read"], control="none")
    assert _passed(m) == {"min_drop": False, "erased": False}
    assert "fresh probe 0.9" in m.criteria[1].detail or "fresh probe 1.0" in m.criteria[1].detail


def _hand_erased_logit_diffs(loaded: Any, eraser: str, seed: int) -> np.ndarray:
    """Fit one eraser per fold on the other folds' END activations (read from the HF
    model's hidden states) and run each row with its fold's eraser applied by a hook."""
    model, tok = loaded.model, loaded.tokenizer
    ids = [torch.tensor([tok(r["prompt"])["input_ids"]]) for r in ROWS]
    ends = [r["positions"]["END"] for r in ROWS]
    with torch.no_grad():
        x = np.stack([model(i, output_hidden_states=True).hidden_states[1][0, e].double().numpy()
                      for i, e in zip(ids, ends)])
    labels = np.asarray([r["group_prev"] for r in ROWS], dtype=object)
    fold = fold_of(np.asarray([f"row {i}" for i in range(len(ROWS))], dtype=object), 5, seed,
                   strata=labels)
    erasers = [fit_eraser(eraser, x[fold != f], labels[fold != f], seed=seed + f)
               for f in range(5)]
    out = []
    for i, row in enumerate(ROWS):
        def hook(module: Any, args: Any, output: Any, i: int = i) -> Any:
            hidden = output[0] if isinstance(output, tuple) else output
            hidden = hidden.clone()
            hidden[0, ends[i]] = erasers[fold[i]](hidden[0, ends[i]].double()).float()
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
        handle = model.transformer.h[0].register_forward_hook(hook)
        try:
            with torch.no_grad():
                logits = model(ids[i]).logits[0, -1]
        finally:
            handle.remove()
        answer, wrong = (tok.convert_tokens_to_ids(row[k]) for k in ("answer", "wrong"))
        out.append(float(logits[answer] - logits[wrong]))
    return np.asarray(out)


@pytest.mark.parametrize("eraser", ["leace", "mean_projection"])
def test_erased_run_equals_a_hand_applied_eraser(models: dict[str, Any], eraser: str) -> None:
    _, ctx = _measure(models["read"], eraser=eraser, control="none")
    shown = np.asarray(ctx.per_prompt()["patched"])
    expected = _hand_erased_logit_diffs(models["read"], eraser, seed=ctx.claim.seed)
    np.testing.assert_allclose(shown, expected, atol=2e-4)


@pytest.mark.parametrize(("params", "key"), [
    ({"label": "no_such_column"}, "label"),
    ({"folds": 500}, "folds"),
    ({"eraser": "inlp", "target": "regression", "label": "group_prev"}, "label"),
    ({"components": ["blocks.0.resid_post", "blocks.1.resid_post"]}, "components"),
])
def test_bad_keys_are_located(models: dict[str, Any], params: dict[str, Any], key: str) -> None:
    with pytest.raises(MechcheckError) as info:
        _measure(models["read"], **params)
    assert info.value.key == key
