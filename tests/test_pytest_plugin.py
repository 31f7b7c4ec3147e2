"""End-to-end: write claim files, run pytest on them with pytester, check outcomes,
failure text, reports and the terminal summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import word_rows

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

GOOD = """\
model: {model}
data: data.jsonl
metric: logit_diff
claims:
  - id: attends_first
    kind: attends
    components: ["head 1.0"]
    pattern: first_token
    min_score: 0.0
  - id: big_drop
    kind: necessary
    components: [blocks.1.attn.head.*]
    ablation: zero
    min_drop: 100.0
  - id: tiny_change
    kind: negligible
    components: ["blocks.1.attn.head.0"]
    ablation: mean
    margin: 50
"""


@pytest.fixture
def project(pytester: pytest.Pytester, tiny_folder: Any) -> pytest.Pytester:
    rows = word_rows(24)
    pytester.path.joinpath("data.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    pytester.makefile(".yaml", test_claims=GOOD.format(model=tiny_folder("gpt2")))
    return pytester


def test_claims_pass_and_fail_with_actionable_text(project: pytest.Pytester) -> None:
    result = project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "*test_claims.yaml:10 claim 'big_drop' failed: refuted",
        "*intervention  zero-ablate blocks.1.attn.head.0, *blocks.1.attn.head.3",
        "*metric        logit_diff",
        "*expected      logit_diff drop > 100",
        "*observed      * (90% CI * to *, n=24, robust, seed 0)",
        "*fix           the interval lies wholly on the wrong side*",
        "*mechcheck claims*",
        "*test_claims.yaml::attends_first*pass*",
    ])
    assert "Traceback" not in result.stdout.str()
    assert "mechcheck/" not in result.stdout.str().split("FAILURES")[1].split("mechcheck claims")[0]


def test_report_json_and_csv_have_the_public_fields(project: pytest.Pytester) -> None:
    project.runpytest("-p", "no:cacheprovider", "--mechcheck-report", "out.json")
    body = json.loads(project.path.joinpath("out.json").read_text())
    fields = ["file", "id", "model", "checkpoint", "kind", "components", "intervention",
              "metric", "n", "effect", "ci_low", "ci_high", "threshold", "p_value",
              "p_adjusted", "verdict", "message", "seed", "duration_s"]
    assert [r["id"] for r in body["results"]] == ["attends_first", "big_drop", "tiny_change"]
    for record in body["results"]:
        assert list(record)[: len(fields)] == fields
    big = body["results"][1]
    assert big["verdict"] == "fail" and big["checkpoint"] is None
    assert big["components"] == [f"blocks.1.attn.head.{h}" for h in range(4)]
    assert big["p_adjusted"] >= big["p_value"]
    project.runpytest("-p", "no:cacheprovider", "--mechcheck-report", "out.csv")
    import pandas as pd

    frame = pd.read_csv(project.path / "out.csv")
    assert list(frame.columns) == [*fields, "reason", "xfail", "line", "each_of"]
    assert frame["verdict"].tolist() == ["pass", "fail", "pass"]
    assert frame["reason"].fillna("").tolist() == ["", "refuted", ""]
    assert frame["line"].tolist() == [5, 10, 15]
    assert frame["xfail"].isna().all()


def test_report_path_mistakes_are_usage_errors(project: pytest.Pytester) -> None:
    """A wrong suffix stops the run before anything is computed; a folder that cannot be
    created is reported after the run (exit code 4), never as an internal error."""
    result = project.runpytest("-p", "no:cacheprovider", "--mechcheck-report", "out.txt")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mechcheck-report out.txt: unknown report format '.txt'*"])
    project.path.joinpath("blocker").write_text("")
    result = project.runpytest("-p", "no:cacheprovider", "--mechcheck-report",
                               "blocker/out.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(["*mechcheck report NOT written:*cannot create the report's "
                                 "folder *blocker*", "*fix: give a path in a folder*"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    project.runpytest("-p", "no:cacheprovider", "--mechcheck-report", "new/dir/out.json")
    assert project.path.joinpath("new", "dir", "out.json").is_file()


def test_same_seed_same_report(project: pytest.Pytester) -> None:
    reports = []
    for name in ("a.json", "b.json"):
        project.runpytest("-p", "no:cacheprovider", "--mechcheck-report", name)
        body = json.loads(project.path.joinpath(name).read_text())
        for record in body["results"]:
            record.pop("duration_s")
        reports.append(body)
    assert reports[0] == reports[1]


def test_selecting_one_claim_keeps_the_file_wide_correction(project: pytest.Pytester) -> None:
    project.runpytest("-p", "no:cacheprovider", "--mechcheck-report", "all.json")
    project.runpytest("-p", "no:cacheprovider", "-k", "tiny_change",
                      "--mechcheck-report", "one.json")
    every = json.loads(project.path.joinpath("all.json").read_text())["results"]
    one = json.loads(project.path.joinpath("one.json").read_text())["results"]
    assert len(one) == 1
    assert one[0]["p_adjusted"] == next(r for r in every if r["id"] == "tiny_change")["p_adjusted"]


def test_broken_files_and_claims_do_not_stop_the_others(project: pytest.Pytester) -> None:
    project.makefile(".yaml", test_broken="model: x\nclaims:\n  - id: [unclosed\n")
    project.makefile(".yaml", test_mixed=f"""\
model: {project.path.joinpath('test_claims.yaml').read_text().split()[1]}
data: data.jsonl
claims:
  - id: ok
    kind: attends
    components: ["head 0.1"]
    pattern: first_token
    min_score: 0.0
  - id: typo
    kind: necesary
    components: ["head 0.1"]
  - id: bad_address
    kind: attends
    components: ["head 7.1"]
    pattern: induction
    min_score: 0.5
  - id: number
    kind: attends
    components: [5.10]
    pattern: induction
    min_score: 0.5
""")
    result = project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=5)
    result.stdout.fnmatch_lines([
        "*test_broken.yaml:3*not valid YAML*",
        "*test_mixed.yaml:10: claim 'typo', key 'kind': unknown kind 'necesary'*",
        "*did you mean*necessary*",
        "*test_mixed.yaml:14: claim 'bad_address', key 'components': blocks.7.attn.head.1 "
        "does not exist in this model: layers are 0-1*",
        "*fix: did you mean blocks.1.attn.head.1?*",
        "*test_mixed.yaml:19: claim 'number', key 'components'*quote*",
    ])
    assert "Interrupted" not in result.stdout.str()
    assert "Traceback" not in result.stdout.str()


def test_missing_model_and_bad_data_are_errors_naming_the_key(project: pytest.Pytester) -> None:
    rows = word_rows(3)
    rows[1]["answer"] = "Mary John"
    rows[2]["corrupt"] = "the a"
    project.path.joinpath("bad.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    model = project.path.joinpath("test_claims.yaml").read_text().split()[1]
    project.makefile(".yaml", test_errors=f"""\
data: data.jsonl
claims:
  - id: no_model
    kind: attends
    model: ./nowhere
    components: ["head 0.1"]
    pattern: first_token
    min_score: 0.0
  - id: bad_rows
    kind: attends
    model: {model}
    data: bad.jsonl
    components: ["head 0.1"]
    pattern: first_token
    min_score: 0.0
  - id: offline
    kind: attends
    model: hf:nobody/no-such-model@step1000
    components: ["head 0.1"]
    pattern: first_token
    min_score: 0.0
""")
    result = project.runpytest("-p", "no:cacheprovider", "test_errors.yaml")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines([
        "*test_errors.yaml:5: claim 'no_model', key 'model': no model folder at *nowhere*",
        "*test_errors.yaml:12: claim 'bad_rows', key 'data': bad.jsonl row 1: answer "
        "'Mary John' is 2 tokens*",
        "*claim 'offline', key 'model': model 'nobody/no-such-model' at step1000 is not in "
        "the local HF cache*",
    ])


def test_xfail_claims_are_strict(project: pytest.Pytester, tiny_folder: Any) -> None:
    project.makefile(".yaml", test_x=f"""\
model: {tiny_folder('gpt2')}
data: data.jsonl
claims:
  - id: refuted_as_expected
    kind: attends
    components: ["head 1.0"]
    pattern: previous_token
    min_score: 0.99
    xfail: a random model has no previous-token head
  - id: passes_unexpectedly
    kind: attends
    components: ["head 1.0"]
    pattern: first_token
    min_score: 0.0
    xfail: wrongly expected to fail
""")
    result = project.runpytest("-p", "no:cacheprovider", "test_x.yaml")
    result.assert_outcomes(xfailed=1, failed=1)


def test_ini_option_changes_the_collected_pattern(project: pytest.Pytester) -> None:
    project.path.joinpath("test_claims.yaml").rename(project.path / "claims_ioi.yaml")
    project.makeini("[pytest]\nmechcheck_files = claims_*.yaml\n")
    project.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2, failed=1)


def test_python_form_uses_the_same_engine_and_report(project: pytest.Pytester,
                                                     tiny_folder: Any) -> None:
    project.makepyfile(test_python_claims=f"""
        def test_heads(mechcheck):
            result = mechcheck.check(id="py_first", kind="attends", model=r"{tiny_folder('gpt2')}",
                                     data="data.jsonl", components=["head 1.0"],
                                     pattern="first_token", min_score=0.0)
            assert result.verdict == "pass"

        def test_fails(mechcheck):
            mechcheck.check(id="py_refuted", kind="attends", model=r"{tiny_folder('gpt2')}",
                            data="data.jsonl", components=["head 1.0"],
                            pattern="previous_token", min_score=0.99)
    """)
    result = project.runpytest("-p", "no:cacheprovider", "--mechcheck-report", "r.json",
                               "test_python_claims.py")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["test_python_claims.py:7 claim 'py_refuted' failed: refuted*"])
    ids = [r["id"] for r in json.loads(project.path.joinpath("r.json").read_text())["results"]]
    assert sorted(ids) == ["py_first", "py_refuted"]


def test_importing_the_plugin_does_not_import_torch() -> None:
    code = "import sys, mechcheck.pytest_plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parent)
    assert out.stdout.strip() == "False"


def test_skip_if_unavailable_skips_hub_models_but_not_wrong_paths(
        project: pytest.Pytester) -> None:
    project.makefile(".yaml", test_hub="""\
data: data.jsonl
skip_if_unavailable: true
claims:
  - id: hub_model
    kind: attends
    model: hf:nobody/not-cached
    components: ["head 0.1"]
    pattern: first_token
    min_score: 0.0
  - id: wrong_path
    kind: attends
    model: ./not/here
    components: ["head 0.1"]
    pattern: first_token
    min_score: 0.0
""")
    result = project.runpytest("-p", "no:cacheprovider", "-rs", "test_hub.yaml")
    result.assert_outcomes(skipped=1, failed=1)
    result.stdout.fnmatch_lines(["*claim 'wrong_path', key 'model': no model folder*",
                                 "*model unavailable (skip_if_unavailable)*not in the local "
                                 "HF cache*"])
