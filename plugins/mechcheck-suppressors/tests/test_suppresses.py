"""The suppresses kind, end to end through pytest (pytester), and against the
built-in necessary kind: the same ablation's rise is exactly the necessary drop's
negative, computed by a different path (metric_pair vs. ctx.run)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mechcheck.api import evaluate_path
from mechcheck.session import Session

CLAIMS = Path(__file__).resolve().parents[1] / "claims"

pytest_plugins = ["pytester"]


def test_the_zoo_claims_pass_and_the_name_mover_is_refuted(pytester: pytest.Pytester) -> None:
    shutil.copy(CLAIMS / "test_ioi_small.yaml", pytester.path / "test_ioi_small.yaml")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--mechcheck-n-resamples",
                                           "999")
    result.assert_outcomes(passed=1, xfailed=1)
    result.stdout.fnmatch_lines(["*head_1_1_suppresses_io*pass*",
                                 "*name_mover_1_3_does_not_suppress*refuted*"])


def test_the_rise_is_the_negative_of_the_necessary_drop(tmp_path: Path) -> None:
    claims = []
    for kind, key in (("suppresses", "min_rise"), ("necessary", "min_drop")):
        for head in ("1.1", "1.3"):
            claims.append(f"""  - id: {kind}_{head.replace('.', '_')}
    kind: {kind}
    components: ["head {head}"]
    ablation: mean_corrupt
    mean_by: template
    at: END
    {key}: 0.5""")
    path = tmp_path / "test_both.yaml"
    path.write_text("model: zoo:ioi-small\ntask: {name: ioi, n: 24, seed: 1}\n"
                    "metric: logit_diff\nclaims:\n" + "\n".join(claims) + "\n")
    results = {r.id: r for r in evaluate_path(str(path), Session(n_resamples=999))}
    for head in ("1_1", "1_3"):
        rise, drop = results[f"suppresses_{head}"], results[f"necessary_{head}"]
        assert rise.verdict != "error" and drop.verdict != "error", (rise.message, drop.message)
        # necessary reads the exact sweep, this kind a plain run: equal to float32 rounding
        assert rise.effect == pytest.approx(-drop.effect, abs=1e-5)
        assert rise.n == drop.n == 24
    assert results["necessary_1_3"].verdict == "pass"  # the name mover matters
    assert results["suppresses_1_3"].verdict == "fail"


def test_a_bad_min_rise_is_a_located_error(tmp_path: Path) -> None:
    path = tmp_path / "test_bad.yaml"
    path.write_text("model: zoo:ioi-small\ntask: {name: ioi, n: 8, seed: 0}\n"
                    "metric: logit_diff\nclaims:\n  - id: bad\n    kind: suppresses\n"
                    "    components: [\"head 1.1\"]\n    ablation: zero\n    min_rise: -1\n")
    (result,) = evaluate_path(str(path), Session(n_resamples=999))
    assert result.verdict == "error"
    assert "min_rise" in result.message and "a rise is a positive number" in result.message
    assert result.line == 9


def test_on_the_planted_model_the_rises_are_known_by_construction(tmp_path: Path) -> None:
    """zoo:planted-prevtoken: head 0.0 carries the whole circuit (zero-ablating it makes
    every logit equal, so the logit difference falls from about 9.9 to 0: a rise of
    -9.9), and head 0.1 has all weights zero (its rise is exactly 0). Neither suppresses."""
    data = Path(__file__).resolve().parents[3] / "claims" / "zoo" / "planted.jsonl"
    claims = "".join(f"""  - id: head_0_{h}
    kind: suppresses
    components: ["head 0.{h}"]
    ablation: zero
    min_rise: 0.1
""" for h in (0, 1))
    path = tmp_path / "test_planted.yaml"
    path.write_text(f"model: zoo:planted-prevtoken\ndata: {data}\nmetric: logit_diff\n"
                    f"claims:\n{claims}")
    results = {r.id: r for r in evaluate_path(str(path), Session(n_resamples=999))}
    assert -10.0 < results["head_0_0"].effect < -9.8
    assert results["head_0_1"].effect == 0.0
    assert {r.verdict for r in results.values()} == {"fail"}
