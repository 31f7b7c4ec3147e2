"""The built-in claim kinds end to end on a tiny model: which rule each uses and which
``test:`` values each takes."""

from __future__ import annotations

from pathlib import Path

from mechcheck.api import evaluate_path
from mechcheck.session import Session

ROWS = Path(__file__).resolve().parents[1] / "claims" / "zoo" / "induction.jsonl"
SUFFICIENT = f"""\
model: zoo:induction-2l
data: {ROWS}
n: 40
metric: logprob
claims:
  - id: residual_default
    kind: sufficient
    components: ["blocks.1.resid_post"]
    min_recovery: 0.9
  - id: residual_bootstrap
    kind: sufficient
    components: ["blocks.1.resid_post"]
    min_recovery: 0.9
    test: bootstrap
  - id: residual_fieller
    kind: sufficient
    components: ["blocks.1.resid_post"]
    min_recovery: 0.9
    test: t
  - id: embeddings_only
    kind: sufficient
    components: ["embed"]
    at: last
    min_recovery: 0.9
  - id: wrong_test
    kind: sufficient
    components: ["blocks.1.resid_post"]
    min_recovery: 0.9
    test: wilcoxon
"""


def test_sufficient_rules_and_tests(tmp_path: Path) -> None:
    """On the zoo's induction model, denoising the whole last residual stream recovers the
    whole gap (effect 1) under each rule; the last token's embedding, which the clean
    and corrupt prompts share, recovers nothing."""
    path = tmp_path / "test_sufficient.yaml"
    path.write_text(SUFFICIENT)
    default, bootstrap, fieller, embed, wrong = evaluate_path(path, Session(device="cpu"))
    assert (default.verdict, default.method) == ("pass", "robust-fieller")
    assert (bootstrap.verdict, bootstrap.method) == ("pass", "bootstrap-ratio")
    assert (fieller.verdict, fieller.method) == ("pass", "fieller")
    assert abs(default.effect - 1.0) < 1e-4 and default.effect == bootstrap.effect
    # the robust rule passes only where Fieller's does, with the wider interval
    assert default.ci_low <= fieller.ci_low and default.ci_high >= fieller.ci_high
    assert default.p_value >= fieller.p_value
    assert embed.verdict == "fail" and embed.effect < 0.9
    assert wrong.verdict == "error"
    assert "test: wilcoxon does not apply here" in wrong.message
    for name in ("test: robust", "test: t", "test: bootstrap"):
        assert name in wrong.message


NEGLIGIBLE_AND_NECESSARY = f"""\
model: zoo:induction-2l
data: {ROWS}
n: 40
metric: logprob
claims:
  - id: layer_0_negligible
    kind: negligible
    components: ["head 0.0", "head 0.1"]
    ablation: mean
    margin: 0.1
  - id: layer_0_negligible_tost
    kind: negligible
    components: ["head 0.0", "head 0.1"]
    ablation: mean
    margin: 0.1
    test: t
  - id: negligible_wrong_test
    kind: negligible
    components: ["head 0.0", "head 0.1"]
    ablation: mean
    margin: 0.1
    test: bootstrap
  - id: head_1_1_necessary
    kind: necessary
    components: ["head 1.1"]
    ablation: mean
    min_drop: 0.2
  - id: head_1_1_necessary_t
    kind: necessary
    components: ["head 1.1"]
    ablation: mean
    min_drop: 0.2
    test: t
"""


def test_negligible_and_necessary_rules_and_tests(tmp_path: Path) -> None:
    """The default rule of both kinds is the robust one; test: t is the classical rule
    (TOST, the t-test) on the same per-prompt values; negligible takes no other test."""
    path = tmp_path / "test_rules.yaml"
    path.write_text(NEGLIGIBLE_AND_NECESSARY)
    robust, tost, wrong, necessary, t = evaluate_path(path, Session(device="cpu"))
    assert (robust.method, tost.method) == ("robust-tost", "tost")
    assert (necessary.method, t.method) == ("robust", "t")
    for default, classical in ((robust, tost), (necessary, t)):
        assert default.verdict == classical.verdict == "pass"
        assert default.effect == classical.effect and default.n == classical.n == 40
        assert default.ci_low <= classical.ci_low and default.ci_high >= classical.ci_high
    assert wrong.verdict == "error"
    assert "test: bootstrap does not apply here" in wrong.message
    assert "test: robust" in wrong.message and "test: t" in wrong.message


PERFORMS = f"""\
model: zoo:induction-2l
data: {ROWS}
n: 30
claims:
  - id: does_the_task
    kind: performs
    metric: logit_diff
    min_value: 1.0
  - id: not_that_well
    kind: performs
    metric: logit_diff
    min_value: 1000
  - id: with_t
    kind: performs
    metric: logprob
    min_value: -50
    test: t
  - id: lower_is_better
    kind: performs
    metric: kl
    min_value: 0
  - id: with_components
    kind: performs
    metric: logit_diff
    components: ["head 1.0"]
    min_value: 0
"""


def test_performs_is_the_clean_metric_against_min_value(tmp_path: Path) -> None:
    """``performs`` tests the clean metric itself: its effect equals the mean logit
    difference computed here with a plain forward pass, row by row."""
    import json

    import torch

    path = tmp_path / "test_performs.yaml"
    path.write_text(PERFORMS)
    session = Session(device="cpu")
    task, too_high, with_t, kl, components = evaluate_path(path, session)
    loaded = session.model("zoo:induction-2l", str(tmp_path))
    tok, model = loaded.tokenizer, loaded.model
    diffs = []
    for line in ROWS.read_text().splitlines()[:30]:
        row = json.loads(line)
        ids = tok(row["prompt"], return_tensors="pt").input_ids
        with torch.no_grad():
            logits = model(ids).logits[0, -1]
        answer, wrong = (tok(row[k], add_special_tokens=False).input_ids[0]
                         for k in ("answer", "wrong"))
        diffs.append(float(logits[answer] - logits[wrong]))
    assert task.verdict == "pass" and task.n == 30
    assert abs(task.effect - sum(diffs) / len(diffs)) < 1e-4
    assert task.ci_low < task.effect < task.ci_high and task.method == "robust"
    assert task.intervention == "none (clean run)" and task.components == ()
    assert too_high.verdict == "fail" and too_high.effect == task.effect
    assert with_t.verdict == "pass" and with_t.method == "t"
    assert kl.verdict == "error" and "higher is better" in kl.message
    assert components.verdict == "error" and "unknown key 'components'" in components.message


def test_performs_on_the_planted_model_equals_its_known_logit_difference(
        tmp_path: Path) -> None:
    """On zoo:planted-prevtoken, ablating head 0.0 leaves every logit equal (the logit
    difference exactly 0, by construction), so the clean logit difference that
    ``performs`` tests is exactly the drop that ``necessary`` measures for head 0.0."""
    rows = ROWS.parent / "planted.jsonl"
    path = tmp_path / "test_planted_performs.yaml"
    path.write_text(f"""\
model: zoo:planted-prevtoken
data: {rows}
metric: logit_diff
claims:
  - id: copies_two_back
    kind: performs
    min_value: 9.8
  - id: head_0_0_drop
    kind: necessary
    components: ["head 0.0"]
    ablation: zero
    min_drop: 9.8
  - id: not_that_much
    kind: performs
    min_value: 10.0
""")
    performs, necessary, too_high = evaluate_path(path, Session(device="cpu"))
    assert performs.verdict == necessary.verdict == "pass"
    assert abs(performs.effect - necessary.effect) < 1e-5
    assert 9.8 < performs.effect < 10.0  # "about 9.9" (mechcheck/zoo/planted.py)
    assert too_high.verdict == "fail"
