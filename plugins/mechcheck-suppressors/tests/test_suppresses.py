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
        assert rise.effect == pytest.approx(-drop.effect, abs=1e-9)
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
