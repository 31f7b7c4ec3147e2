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
    whole gap (effect 1) under either rule; the last token's embedding, which the clean
    and corrupt prompts share, recovers nothing."""
    path = tmp_path / "test_sufficient.yaml"
    path.write_text(SUFFICIENT)
    default, bootstrap, embed, wrong = evaluate_path(path, Session(device="cpu"))
    assert (default.verdict, default.method) == ("pass", "fieller")
    assert (bootstrap.verdict, bootstrap.method) == ("pass", "bootstrap-ratio")
    assert abs(default.effect - 1.0) < 1e-4 and default.effect == bootstrap.effect
    assert embed.verdict == "fail" and embed.effect < 0.9
    assert wrong.verdict == "error"
    assert "test: wilcoxon does not apply here" in wrong.message
    assert "test: t" in wrong.message and "test: bootstrap" in wrong.message
