"""The mechcheck command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mechcheck.cli import main
from tests.conftest import word_rows


def test_check_prints_the_table_and_exits_nonzero_on_failure(
        tmp_path: Path, tiny_folder: Any, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in word_rows(10)))
    (tmp_path / "test_c.yaml").write_text(f"""\
model: {tiny_folder('gpt2')}
data: d.jsonl
claims:
  - id: ok
    kind: attends
    components: ["head 0.0"]
    pattern: first_token
    min_score: 0.0
  - id: refuted_one
    kind: attends
    components: ["head 0.0"]
    pattern: previous_token
    min_score: 0.99
""")
    code = main(["check", str(tmp_path), "--report", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert code == 1
    assert "test_c.yaml::ok" in out and "fail (refuted)" in out
    assert json.loads((tmp_path / "r.json").read_text())["results"][0]["verdict"] == "pass"


def test_unknown_zoo_model_is_a_clean_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["zoo", "build", "no-such-model"]) == 2
    assert "no-such-model" in capsys.readouterr().err


HEADS = """\
model: {model}
data: d.jsonl
claims:
  - id: ok
    kind: attends
    components: ["head 0.0"]
    pattern: first_token
    min_score: 0.0
  - id: refuted_one
    kind: attends
    components: ["head 0.0"]
    pattern: previous_token
    min_score: 0.99
  - id: xf_expected
    kind: attends
    components: ["head 0.0"]
    pattern: previous_token
    min_score: 0.99
    xfail: a random model has no previous-token head
  - id: xf_passes
    kind: attends
    components: ["head 0.0"]
    pattern: first_token
    min_score: 0.0
    xfail: wrongly expected to fail
"""


@pytest.fixture
def parity(pytester: pytest.Pytester, tiny_folder: Any) -> pytest.Pytester:
    """Two claim files: plain claims with xfail, and a checkpoint sweep with
    xfail_before."""
    from tests.conftest import checkpointed_project

    sweep = checkpointed_project(pytester.path, ("step5", "step10", "step20"))
    sweep = sweep.replace("    min_score: 0.99\n", "    min_score: 0.99\n"
                          "    xfail_before: step10\n")
    pytester.makefile(".yaml", test_sweep=sweep,
                      test_heads=HEADS.format(model=tiny_folder("gpt2")))
    return pytester


def _pytest_outcomes(pytester: pytest.Pytester, args: list[str]) -> tuple[int, dict]:
    """What pytest itself says of each claim, and its exit status."""
    reprec = pytester.inline_run("-p", "no:cacheprovider", *args)
    found = {}
    for rep in reprec.getreports("pytest_runtest_logreport"):
        if rep.when == "call" or (rep.when == "setup" and not rep.passed):
            name = rep.nodeid
            if hasattr(rep, "wasxfail"):
                found[name] = "xfailed" if rep.skipped else "xpassed"
            else:
                found[name] = rep.outcome
    return int(reprec.ret), found


def _cli_outcomes(pytester: pytest.Pytester, args: list[str],
                  capsys: pytest.CaptureFixture[str]) -> tuple[int, dict, str]:
    from mechcheck.outcomes import outcome

    report = pytester.path / "cli.json"
    report.unlink(missing_ok=True)
    code = main(["check", str(pytester.path), "--report", str(report), *args])
    out = capsys.readouterr().out
    if not report.exists():
        return code, {}, out
    found = {}
    for r in json.loads(report.read_text())["results"]:
        name = f"{Path(r['file']).name}::{r['id']}" + (f"[{r['checkpoint']}]"
                                                        if r["checkpoint"] else "")
        what = outcome(r["verdict"], r["xfail"])
        found[name] = "failed" if what == "xpassed" else what  # XPASS(strict) fails
    return code, found, out


@pytest.mark.parametrize("args", [
    [],
    ["-k", "ok"],
    ["-k", "not refuted"],
    ["-k", "xf and not passes"],
    ["-k", "sweep and step5"],
    ["-k", "first or (never and not step20)"],
    ["-k", "sweep", "--checkpoints", "step20,step5"],
    ["-k", "matches_nothing"],
])
def test_check_gives_the_verdicts_and_exit_status_of_pytest(
        parity: pytest.Pytester, capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    pytest_args = [a.replace("--checkpoints", "--mechcheck-checkpoints") for a in args]
    pytest_code, by_pytest = _pytest_outcomes(parity, pytest_args)
    capsys.readouterr()
    code, by_cli, out = _cli_outcomes(parity, args, capsys)
    assert by_cli == by_pytest
    assert code == pytest_code
    if not args:
        assert by_pytest["test_heads.yaml::xf_expected"] == "xfailed"
        assert by_pytest["test_heads.yaml::xf_passes"] == "failed"  # XPASS(strict)
        assert by_pytest["test_sweep.yaml::never[step5]"] == "xfailed"  # xfail_before
        assert by_pytest["test_sweep.yaml::never[step10]"] == "failed"
        assert "claim 'xf_passes' passed, but is expected to fail (XPASS(strict))" in out
        summary = out.strip().splitlines()[-2]  # counted as pytest counts (4 failed ...)
        assert summary.startswith("4 failed, 4 passed, 2 xfailed in ")


def test_check_options_version_and_progress(
        parity: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    from mechcheck import __version__

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"mechcheck {__version__}"
    heads = str(parity.path / "test_heads.yaml")
    assert main(["check", heads, "--dtype", "int8"]) == 2
    assert "--dtype int8: unknown dtype" in capsys.readouterr().err
    assert main(["check", heads, "--batch-size", "0"]) == 2
    assert "--batch-size 0: the batch size must be at least 1" in capsys.readouterr().err
    assert main(["check", heads, "--device", "gpu7"]) == 2
    assert "--device gpu7: not a device" in capsys.readouterr().err
    assert main(["check", heads, "--checkpoints", ","]) == 2
    assert main(["check", heads, "-k", "ok and"]) == 2
    assert "-k 'ok and': the expression ends too early" in capsys.readouterr().err
    report = parity.path / "d64.json"
    assert main(["check", heads, "--dtype", "float64", "-k", "ok",
                 "--report", str(report)]) == 0
    captured = capsys.readouterr()
    assert {r["dtype"] for r in json.loads(report.read_text())["results"]} == {"float64"}
    assert "[1/1] model " in captured.err and " loaded on cpu (float64)" in captured.err
    assert "[1/1] clean run" in captured.err
    assert main(["check", heads, "-q", "-k", "ok", "--table", "none"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "claim " not in captured.out
    assert captured.out.strip().startswith("1 passed in")


def test_check_report_paths_are_checked_before_any_claim_runs(
        parity: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    (parity.path / "blocker").write_text("")
    heads = str(parity.path / "test_heads.yaml")
    assert main(["check", heads, "--report", str(parity.path / "blocker" / "r.json")]) == 2
    captured = capsys.readouterr()
    assert "cannot create the report's folder" in captured.err
    assert "loaded" not in captured.err  # nothing ran
    assert main(["check", heads, "--report", str(parity.path / "r.txt")]) == 2
    assert "unknown report format '.txt'" in capsys.readouterr().err
    assert main(["check", heads, "--report-prompts",
                 str(parity.path / "blocker" / "p.csv")]) == 2
    assert "key '--report-prompts'" in capsys.readouterr().err
    assert main(["check", str(parity.path / "nowhere")]) == 2
    assert "no claim file or folder at" in capsys.readouterr().err


def test_check_writes_an_incomplete_report_when_interrupted(
        parity: pytest.Pytester, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    # the module main() imports (pytester runs may have dropped an earlier copy)
    api = importlib.import_module("mechcheck.api")
    real = api.evaluate_planned
    calls: list[str] = []

    def interrupted_after_one(planned: Any, session: Any) -> Any:
        calls.append(planned.parsed.path)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(planned, session)

    monkeypatch.setattr(api, "evaluate_planned", interrupted_after_one)
    report = parity.path / "r.json"
    assert main(["check", str(parity.path), "--report", str(report)]) == 2
    body = json.loads(report.read_text())
    assert body["complete"] is False and body["incomplete_reason"] == "interrupted"
    assert [r["id"] for r in body["results"]] == ["ok", "refuted_one", "xf_expected",
                                                  "xf_passes"]
    assert "mechcheck: interrupted" in capsys.readouterr().err
    assert main(["compare", str(report), str(report)]) == 2
    err = capsys.readouterr().err
    assert "is incomplete: interrupted" in err and "--allow-incomplete" in err
    assert main(["compare", str(report), str(report), "--allow-incomplete"]) == 0
    html = parity.path / "r.html"
    assert main(["report", str(report), "-o", str(html)]) == 2
    assert main(["report", str(report), "-o", str(html), "--allow-incomplete"]) == 0
    assert "Incomplete run (interrupted)" in html.read_text()


def test_check_writes_per_prompt_values(parity: pytest.Pytester,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    import pandas as pd

    path = parity.path / "prompts.csv"
    main(["check", str(parity.path / "test_heads.yaml"), "--report-prompts", str(path)])
    assert f"per-prompt values written to {path}" in capsys.readouterr().out
    assert list(pd.read_csv(path).columns)[:4] == ["file", "id", "checkpoint", "row"]


def test_zoo_build_reports_training_steps(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from mechcheck import zoo
    from mechcheck.zoo._recipes import reporting

    steps: list[tuple[int, int]] = []
    with reporting(lambda done, total: steps.append((done, total))):
        zoo.build("induction-2l", tmp_path / "a", steps=3)
    assert steps == [(1, 3), (2, 3), (3, 3)]
    zoo.build("induction-2l", tmp_path / "b", steps=2)  # no callback outside reporting
    real = zoo.build
    monkeypatch.setattr(zoo, "build", lambda name, out: real(name, out, steps=4))
    assert main(["zoo", "build", "induction-2l", "--out", str(tmp_path / "c")]) == 0
    captured = capsys.readouterr()
    assert "4/4 training steps" in captured.err and "zoo:induction-2l" in captured.err
    assert f"built zoo:induction-2l into {tmp_path / 'c'}" in captured.out
