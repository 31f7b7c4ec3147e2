"""Baselines: regressions, drift, and `mechcheck compare`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mechcheck.cli import main
from mechcheck.report.baseline import apply_baseline, compare, index
from mechcheck.report.io import write_report
from mechcheck.report.results import ClaimResult
from tests.conftest import word_rows


def _r(id: str, verdict: str, effect: float, checkpoint: str | None = None) -> ClaimResult:
    return ClaimResult(file="f.yaml", id=id, model="m", checkpoint=checkpoint,
                       verdict=verdict, effect=effect, line=3)


def test_compare_finds_regressions_drift_and_fixes() -> None:
    old = [_r("a", "pass", 1.0), _r("b", "pass", 1.0), _r("c", "fail", 0.0),
           _r("d", "pass", 1.0, "s1"), _r("gone", "pass", 1.0)]
    new = [_r("a", "fail", 0.1), _r("b", "pass", 1.6), _r("c", "pass", 2.0),
           _r("d", "pass", 1.0, "s2"), _r("e", "pass", 1.0)]
    kinds = {(c.id, c.checkpoint): c.kind for c in compare(old, new, max_drift=0.5)}
    assert kinds == {("a", None): "regression", ("b", None): "drift", ("c", None): "fixed",
                     ("d", "s2"): "new", ("e", None): "new", ("d", "s1"): "missing",
                     ("gone", None): "missing"}
    assert ("b", None) not in {(c.id, c.checkpoint) for c in compare(old, new)}


def test_apply_baseline_fails_a_drifted_pass() -> None:
    baseline = index([_r("b", "pass", 1.0)])
    moved = apply_baseline(_r("b", "pass", 1.6), baseline, 0.5)
    assert moved.verdict == "fail" and moved.reason == "drift"
    assert "moved by +0.6 (allowed 0.5)" in moved.message
    kept = apply_baseline(_r("b", "pass", 1.2), baseline, 0.5)
    assert kept.verdict == "pass" and kept.baseline_effect == 1.0


def test_compare_command_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_report([_r("a", "pass", 1.0)], tmp_path / "old.json")
    write_report([_r("a", "fail", 0.0)], tmp_path / "new.json")
    write_report([_r("a", "pass", 1.1)], tmp_path / "same.json")
    assert main(["compare", str(tmp_path / "old.json"), str(tmp_path / "new.json")]) == 1
    assert "f.yaml::a: regression (pass -> fail)" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "old.json"), str(tmp_path / "same.json")]) == 0
    assert main(["compare", str(tmp_path / "old.json"), str(tmp_path / "same.json"),
                 "--max-drift", "0.05"]) == 1


def test_baseline_option_lists_regressions(pytester: pytest.Pytester, tiny_folder: Any) -> None:
    pytester.path.joinpath("d.jsonl").write_text("\n".join(json.dumps(r) for r in word_rows(10)))
    claim = """\
model: {model}
data: d.jsonl
claims:
  - id: first
    kind: attends
    components: ["head 0.0"]
    pattern: first_token
    min_score: {score}
"""
    pytester.makefile(".yaml", test_b=claim.format(model=tiny_folder("gpt2"), score=0.0))
    pytester.runpytest("-p", "no:cacheprovider", "--mechcheck-report", "old.json")
    result = pytester.runpytest("-p", "no:cacheprovider", "--mechcheck-baseline", "old.json",
                                "--mechcheck-max-drift", "1e-9", "--mechcheck-report", "n.json")
    result.assert_outcomes(passed=1)  # identical rerun: no drift at all
    pytester.makefile(".yaml", test_b=claim.format(model=tiny_folder("gpt2"), score=0.9))
    result = pytester.runpytest("-p", "no:cacheprovider", "--mechcheck-baseline", "old.json",
                                "--mechcheck-report", "new.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["baseline old.json: 1 regression(s), 0 other change(s)",
                                 "  test_b.yaml::first: regression (pass -> fail)"])
    body = json.loads(pytester.path.joinpath("new.json").read_text())
    assert body["regressions"] == ["test_b.yaml::first: regression (pass -> fail)"]
    assert body["results"][0]["baseline_verdict"] == "pass"


def test_unreadable_reports_are_clean_errors(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["compare", str(tmp_path / "bad.json"), str(tmp_path / "missing.json")]) == 2
    assert "cannot read the report" in capsys.readouterr().err
