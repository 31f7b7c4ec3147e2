"""The pytest plugin's edges: options checked before collection, bad baselines, the
terminal table, JUnit properties, and reports that survive an interrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from tests.conftest import word_rows
from tests.test_pytest_plugin import GOOD

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
NO_CACHE = ("-p", "no:cacheprovider")


@pytest.fixture
def project(pytester: pytest.Pytester, tiny_folder: Any) -> pytest.Pytester:
    rows = word_rows(24)
    pytester.path.joinpath("data.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    pytester.makefile(".yaml", test_claims=GOOD.format(model=tiny_folder("gpt2")))
    return pytester


def _usage(result: pytest.RunResult, line: str) -> None:
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {line}"])
    text = result.stdout.str() + result.stderr.str()
    assert "collected" not in text and "Traceback" not in text and "INTERNAL" not in text
    assert text.count("ERROR:") == 1  # one usage error, not one per claim


@pytest.mark.parametrize(("args", "line"), [
    (("--mechcheck-batch-size", "0"),
     "--mechcheck-batch-size 0: the batch size must be at least 1; give "
     "--mechcheck-batch-size 1 or more (default 128)"),
    (("--mechcheck-batch-size", "-3"), "--mechcheck-batch-size -3: the batch size*"),
    (("--mechcheck-n-resamples", "10"),
     "--mechcheck-n-resamples 10: too few resamples for the bootstrap and permutation "
     "rules; give --mechcheck-n-resamples 99 or more*"),
    (("--mechcheck-device", "gpu7"),
     "--mechcheck-device gpu7: not a device; use cpu, cuda, cuda:N or mps*"),
    (("--mechcheck-checkpoints", ","),
     "--mechcheck-checkpoints ',': names no checkpoint; give checkpoints separated by "
     "commas*"),
    (("--mechcheck-checkpoints", ""), "--mechcheck-checkpoints '': names no checkpoint*"),
    (("--mechcheck-dtype", "int8"),
     "--mechcheck-dtype int8: unknown dtype; use float32 (the default), bfloat16*"),
    (("--mechcheck-max-drift", "-1", "--mechcheck-baseline", "b.json"),
     "--mechcheck-max-drift -1: the allowed drift must be a finite number of at least 0*"),
    (("--mechcheck-max-drift", "0.5"),
     "--mechcheck-max-drift needs --mechcheck-baseline; give --mechcheck-baseline "
     "OLD.json*"),
    (("--mechcheck-report-prompts", "p.xlsx"),
     "--mechcheck-report-prompts p.xlsx: unknown format '.xlsx'*"),
])
def test_bad_options_are_one_usage_error_before_collection(
        project: pytest.Pytester, args: tuple[str, ...], line: str) -> None:
    _usage(project.runpytest(*NO_CACHE, *args), line)


def test_an_unavailable_device_is_one_usage_error(project: pytest.Pytester) -> None:
    import torch

    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        _usage(project.runpytest(*NO_CACHE, "--mechcheck-device", f"cuda:{count}"),
               f"--mechcheck-device cuda:{count}: this machine has {count} cuda device(s)*")
    else:
        _usage(project.runpytest(*NO_CACHE, "--mechcheck-device", "cuda"),
               "--mechcheck-device cuda: cuda is not available on this machine*; use "
               "--mechcheck-device cpu, or leave the option out*")
    project.runpytest(*NO_CACHE, "--mechcheck-device", "cpu").assert_outcomes(
        passed=2, failed=1)


def test_the_device_option_alone_imports_torch(pytester: pytest.Pytester) -> None:
    """Checking options imports torch only when a device is given."""
    pytester.makeconftest("""
import sys
def pytest_sessionfinish(session):
    print("TORCH-LOADED" if "torch" in sys.modules else "TORCH-ABSENT")
""")
    pytester.makepyfile(test_plain="def test_x():\n    pass\n")
    plain = pytester.runpytest_subprocess(*NO_CACHE, "-s", "--mechcheck-batch-size", "4")
    plain.stdout.fnmatch_lines(["*TORCH-ABSENT*"])
    device = pytester.runpytest_subprocess(*NO_CACHE, "-s", "--mechcheck-device", "cpu")
    device.stdout.fnmatch_lines(["*TORCH-LOADED*"])


@pytest.mark.parametrize(("content", "line"), [
    (None, "cannot read the report old.json: No such file or directory; give a .json "
     "report written by --mechcheck-report*"),
    ("{oops", "cannot read the report old.json: it is not JSON*"),
    ('{"results": []}', "cannot read the report old.json: it is not a mechcheck report*"),
    ('{"mechcheck_report": 1, "results": [{"id": "x"}]}',
     "cannot read the report old.json: results[[]0[]] has no text 'file'*"),
    ('{"mechcheck_report": 1, "complete": false, "incomplete_reason": "interrupted", '
     '"results": []}',
     "the report old.json is incomplete: interrupted*; rerun to completion for a complete "
     "report, or pass --mechcheck-allow-incomplete to use the claims it has"),
])
def test_a_bad_baseline_is_one_usage_error_before_any_claim(
        project: pytest.Pytester, content: str | None, line: str) -> None:
    if content is not None:
        project.path.joinpath("old.json").write_text(content)
    result = project.runpytest(*NO_CACHE, "--mechcheck-baseline", "old.json",
                               "--mechcheck-report", "new.json")
    _usage(result, line)
    assert not project.path.joinpath("new.json").exists()


def test_an_incomplete_baseline_is_accepted_when_asked(project: pytest.Pytester) -> None:
    project.path.joinpath("old.json").write_text(json.dumps({
        "mechcheck_report": 1, "complete": False, "incomplete_reason": "interrupted",
        "results": []}))
    result = project.runpytest(*NO_CACHE, "--mechcheck-baseline", "old.json",
                               "--mechcheck-allow-incomplete")
    result.assert_outcomes(passed=2, failed=1)


def test_table_option_and_quiet(project: pytest.Pytester) -> None:
    every = project.runpytest(*NO_CACHE, "-q")
    every.stdout.fnmatch_lines(["*mechcheck claims*", "claim *verdict*",
                                "test_claims.yaml::attends_first*pass*"])
    failed = project.runpytest(*NO_CACHE, "--mechcheck-table", "failed")
    failed.stdout.fnmatch_lines(["*mechcheck claims*", "claim *verdict*",
                                 "test_claims.yaml::big_drop*fail (refuted)*"])
    assert "test_claims.yaml::attends_first " not in failed.stdout.str()
    none = project.runpytest(*NO_CACHE, "--mechcheck-table", "none",
                             "--mechcheck-report", "r.json")
    assert "mechcheck claims" not in none.stdout.str()
    none.stdout.fnmatch_lines(["report written to r.json"])
    bad = project.runpytest(*NO_CACHE, "--mechcheck-table", "some")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--mechcheck-table: invalid choice: 'some'*"])


def test_verbose_adds_claim_timing_and_progress_lines(project: pytest.Pytester) -> None:
    result = project.runpytest(*NO_CACHE, "-v")
    result.stdout.fnmatch_lines([
        "*test_claims.yaml::attends_first*",
        "mechcheck: model * loaded on cpu (float32) in * s",
        "mechcheck: clean run*",
        "mechcheck: test_claims.yaml: 3 claim(s) in * s (1 fail, 2 pass)",
        "*test_claims.yaml::attends_first PASSED*",
        "*mechcheck claims*",
        "claim *verdict*n*seconds",
        "test_claims.yaml::attends_first*24  *.*",
    ])
    plain = project.runpytest(*NO_CACHE)
    plain.stdout.fnmatch_lines(["mechcheck: model * loaded*",
                                "test_claims.yaml .F. *[[]100%[]]"])
    assert " seconds" not in plain.stdout.str()
    assert "mechcheck: model" not in project.runpytest(*NO_CACHE, "-q").stdout.str()


def test_report_not_written_comes_after_the_table(project: pytest.Pytester) -> None:
    project.path.joinpath("blocker").write_text("")
    result = project.runpytest(*NO_CACHE, "--mechcheck-report", "blocker/out.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(["*mechcheck claims*", "*test_claims.yaml::tiny_change*",
                                 "mechcheck report NOT written: *cannot create the report's "
                                 "folder*"])


def test_junit_properties_are_plain_named_values(project: pytest.Pytester) -> None:
    project.runpytest(*NO_CACHE, "--junitxml", "out.xml", "--mechcheck-report", "r.json")
    cases = {c.get("name"): c for c in ET.parse(project.path / "out.xml").iter("testcase")}
    props = {p.get("name"): p.get("value") for p in cases["big_drop"].iter("property")}
    assert list(props) == ["verdict", "effect", "ci_low", "ci_high", "threshold", "p_value",
                           "p_adjusted", "n"]
    record = next(r for r in json.loads((project.path / "r.json").read_text())["results"]
                  if r["id"] == "big_drop")
    assert props["verdict"] == "fail" and props["n"] == "24"
    for name in ("effect", "ci_low", "ci_high", "threshold", "p_value", "p_adjusted"):
        assert float(props[name]) == pytest.approx(record[name])
    assert "mechcheck_result" not in (project.path / "out.xml").read_text()


def test_junit_properties_and_report_under_xdist(project: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    result = project.runpytest_subprocess(*NO_CACHE, "-p", "xdist", "-n", "2",
                                          "--junitxml", "out.xml", "--mechcheck-report",
                                          "r.json")
    result.assert_outcomes(passed=2, failed=1)
    body = json.loads((project.path / "r.json").read_text())
    assert body["complete"] is True  # every worker's teardowns were counted
    assert [r["id"] for r in body["results"]] == ["attends_first", "big_drop", "tiny_change"]
    cases = {c.get("name"): c for c in ET.parse(project.path / "out.xml").iter("testcase")}
    props = {p.get("name"): p.get("value") for p in cases["tiny_change"].iter("property")}
    assert props["verdict"] == "pass" and props["threshold"] == "50.0"


def test_xfail_before_reason_is_in_the_report(pytester: pytest.Pytester) -> None:
    from tests.conftest import checkpointed_project

    text = checkpointed_project(pytester.path, ("step5", "step10"))
    text = text.replace("    min_score: 0.99\n", "    min_score: 0.99\n    xfail_before: step10\n")
    pytester.makefile(".yaml", test_ck=text)
    result = pytester.runpytest(*NO_CACHE, "--mechcheck-report", "r.json",
                                "--mechcheck-report-prompts", "p.csv")
    result.assert_outcomes(passed=2, failed=1, xfailed=1)
    records = json.loads((pytester.path / "r.json").read_text())["results"]
    xfail = {(r["id"], r["checkpoint"]): r["xfail"] for r in records}
    assert xfail[("never", "step5")] == "expected to fail before step10 (xfail_before)"
    assert xfail[("never", "step10")] is None and xfail[("first", "step5")] is None
    result.stdout.fnmatch_lines(["per-prompt values written to p.csv"])
    import pandas as pd

    prompts = pd.read_csv(pytester.path / "p.csv")
    assert list(prompts.columns)[:4] == ["file", "id", "checkpoint", "row"]
    assert len(prompts) == 4 * 12 and "score" in prompts.columns  # 2 claims x 2 steps
    never = prompts[(prompts["id"] == "never") & (prompts["checkpoint"] == "step5")]
    assert never["row"].tolist() == list(range(12))


# -- interrupted runs -----------------------------------------------------------------
def test_stopping_early_writes_an_incomplete_report(project: pytest.Pytester) -> None:
    project.runpytest(*NO_CACHE, "--mechcheck-report", "r.json")
    result = project.runpytest(*NO_CACHE, "-x", "--mechcheck-report", "r.json",
                               "--mechcheck-report-prompts", "p.csv")
    result.assert_outcomes(passed=1, failed=1)
    body = json.loads((project.path / "r.json").read_text())
    assert body["complete"] is False
    assert body["incomplete_reason"] == "stopping after 1 failures; 1 of 3 test(s) did not finish"
    assert [r["id"] for r in body["results"]] == ["attends_first", "big_drop"]
    result.stdout.fnmatch_lines(['report written to r.json (incomplete: stopping after 1 '
                                 'failures; *; 2 result(s), "complete": false)',
                                 "per-prompt values written to p.partial.csv"])
    csv = project.runpytest(*NO_CACHE, "-x", "--mechcheck-report", "r.csv")
    assert not (project.path / "r.csv").exists()
    csv.stdout.fnmatch_lines(["report written to r.partial.csv (incomplete: *)"])
    complete = project.runpytest(*NO_CACHE, "--mechcheck-report", "r.json")
    complete.assert_outcomes(passed=2, failed=1)
    assert json.loads((project.path / "r.json").read_text())["complete"] is True


def test_a_claim_that_crashes_without_a_result_makes_the_report_incomplete(
        project: pytest.Pytester) -> None:
    project.makeconftest("""
import pytest

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    if item.name == "big_drop":
        raise RuntimeError("crash before the claim ran")
""")
    result = project.runpytest(*NO_CACHE, "--mechcheck-report", "r.json")
    result.assert_outcomes(passed=2, failed=1)
    body = json.loads((project.path / "r.json").read_text())
    assert body["complete"] is False
    assert body["incomplete_reason"] == ("1 claim(s) ended without a result: "
                                         "test_claims.yaml::big_drop")
    assert [r["id"] for r in body["results"]] == ["attends_first", "tiny_change"]


SLOW_KIND = '''
import os
import time

import mechcheck
from mechcheck.engine.runner import Needs


class Slow:
    name = "slow"
    description = "sleeps until interrupted"
    keys = {}

    def needs(self, claim, ctx):
        return Needs()

    def measure(self, claim, ctx):
        open(os.environ["MECHCHECK_SLOW_MARK"], "w").close()
        time.sleep(300)
        raise AssertionError("not interrupted")


@mechcheck.hookimpl
def mechcheck_claim_kinds():
    return [Slow()]
'''


def default_sigint() -> None:
    """SIGINT back to its default in the child: a shell starts background jobs with
    SIGINT ignored, and Python then raises no KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(project: pytest.Pytester, *args: str) -> tuple[int, str]:
    """Run pytest in a subprocess, send SIGINT once the slow claim runs."""
    mark = project.path / "slow-started"
    env = {**os.environ, "MECHCHECK_SLOW_MARK": str(mark),
           "PYTHONPATH": os.pathsep.join([str(project.path), *sys.path])}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", *NO_CACHE, *args],
                            cwd=project.path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, preexec_fn=default_sigint)
    try:
        deadline = time.monotonic() + 240
        while not mark.exists():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the slow claim never started"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out


def test_sigint_keeps_what_was_measured(project: pytest.Pytester, tiny_folder: Any) -> None:
    project.makeini("[pytest]\nmechcheck_plugins = slowkind\n")
    project.makepyfile(slowkind=SLOW_KIND)
    project.makefile(".yaml", test_zslow=f"""\
model: {tiny_folder('gpt2')}
data: data.jsonl
claims:
  - id: sleeper
    kind: slow
""")
    old = {"mechcheck_report": 1, "complete": True, "results": [
        {"file": "x.yaml", "id": "old", "model": "m", "verdict": "pass"}]}
    (project.path / "r.json").write_text(json.dumps(old))
    code, out = _interrupt(project, "--mechcheck-report", "r.json")
    assert code == pytest.ExitCode.INTERRUPTED, out
    assert "KeyboardInterrupt" in out
    body = json.loads((project.path / "r.json").read_text())
    assert body["complete"] is False and body["incomplete_reason"].startswith("interrupted")
    assert [r["id"] for r in body["results"]] == ["attends_first", "big_drop",
                                                  "tiny_change"]
    assert "report written to r.json (incomplete: interrupted" in out


def test_sigint_before_any_claim_keeps_the_old_report(project: pytest.Pytester,
                                                      tiny_folder: Any) -> None:
    project.makeini("[pytest]\nmechcheck_plugins = slowkind\n")
    project.makepyfile(slowkind=SLOW_KIND)
    project.path.joinpath("test_claims.yaml").write_text(f"""\
model: {tiny_folder('gpt2')}
data: data.jsonl
claims:
  - id: sleeper
    kind: slow
  - id: attends_first
    kind: attends
    components: ["head 1.0"]
    pattern: first_token
    min_score: 0.0
""")
    old = json.dumps({"mechcheck_report": 1, "complete": True, "results": [
        {"file": "x.yaml", "id": "old", "model": "m", "verdict": "pass"}]})
    (project.path / "r.json").write_text(old)
    code, out = _interrupt(project, "--mechcheck-report", "r.json")
    assert code == pytest.ExitCode.INTERRUPTED, out
    assert (project.path / "r.json").read_text() == old
    assert "report r.json kept as it was: the run stopped before any claim was measured" in out
    assert sorted(p.name for p in project.path.glob("*.json")) == ["r.json"]


# -- mechcheck hooks in conftest.py and -p plugins (issue 10) ------------------------

TOP2_CLAIMS = """\
model: {model}
data: data.jsonl
claims:
  - id: top2_plugin
    kind: negligible
    metric: top2
    components: ["head 0.0"]
    ablation: zero
    margin: 0.9
"""

TOP2_PLUGIN = """
import torch
import mechcheck
from mechcheck.metrics import Metric


def _top2(logits, inputs):
    top = logits.topk(2, dim=-1).indices
    return (top == inputs.answers.view(-1, 1)).any(-1).float()


@mechcheck.hookimpl
def mechcheck_metrics():
    return [Metric(name="top2", fn=_top2, description="answer in the top two")]
"""


@pytest.fixture
def top2_project(pytester: pytest.Pytester, tiny_folder: Any) -> pytest.Pytester:
    rows = word_rows(12)
    pytester.path.joinpath("data.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    pytester.makefile(".yaml", test_top2=TOP2_CLAIMS.format(model=tiny_folder("gpt2")))
    return pytester


def test_mechcheck_hooks_in_a_conftest_are_registered(top2_project: pytest.Pytester) -> None:
    top2_project.makeconftest(TOP2_PLUGIN)
    result = top2_project.runpytest(*NO_CACHE, "--mechcheck-report", "r.json")
    result.assert_outcomes(passed=1)
    record = json.loads(top2_project.path.joinpath("r.json").read_text())["results"][0]
    assert record["metric"] == "top2"


def test_mechcheck_hooks_in_a_dash_p_plugin_are_registered(
        top2_project: pytest.Pytester) -> None:
    top2_project.makepyfile(top2_p_plugin=TOP2_PLUGIN)
    top2_project.syspathinsert()
    result = top2_project.runpytest(*NO_CACHE, "-p", "top2_p_plugin")
    result.assert_outcomes(passed=1)
    without = top2_project.runpytest(*NO_CACHE)
    without.assert_outcomes(failed=1)  # not registered: the metric is unknown
    without.stdout.fnmatch_lines(["*unknown metric 'top2'*"])


def test_a_misspelled_hook_in_a_conftest_is_a_usage_error(
        top2_project: pytest.Pytester) -> None:
    top2_project.makeconftest(TOP2_PLUGIN.replace("def mechcheck_metrics", "def mechcheck_metricz"))
    result = top2_project.runpytest(*NO_CACHE)
    _usage(result, "mechcheck plugin *conftest.py: unknown hook 'mechcheck_metricz'; did you "
           "mean 'mechcheck_metrics'? mechcheck hooks: mechcheck_attention_scores, *")


def test_a_clash_between_conftest_plugins_is_a_usage_error(
        top2_project: pytest.Pytester) -> None:
    top2_project.makeconftest(TOP2_PLUGIN)
    top2_project.makepyfile(top2_p_plugin=TOP2_PLUGIN)
    top2_project.syspathinsert()
    result = top2_project.runpytest(*NO_CACHE, "-p", "top2_p_plugin")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: two plugins register a metric named 'top2': "
                                 "*conftest.py* and *top2_p_plugin*; rename one of them*"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
