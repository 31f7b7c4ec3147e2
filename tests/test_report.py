"""Reports: JSON round trip, CSV columns, DataFrame, terminal table."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from mechcheck.errors import MechcheckError
from mechcheck.report.io import read_report, results_frame, summary_table, write_report
from mechcheck.report.results import REPORT_FIELDS, ClaimResult, format_failure


def _results() -> list[ClaimResult]:
    return [
        ClaimResult(file="c/test_a.yaml", id="one", model="zoo:x", kind="necessary",
                    components=("blocks.1.attn.head.0",), n=10, effect=1.5, ci_low=1.0,
                    ci_high=2.0, threshold=0.5, p_value=0.001, p_adjusted=0.002,
                    verdict="pass", seed=0, line=5),
        ClaimResult(file="c/test_a.yaml", id="two", model="zoo:x", kind="negligible",
                    n=10, effect=0.3, ci_low=0.1, ci_high=float("inf"), threshold=0.2,
                    p_value=0.6, p_adjusted=0.6, verdict="fail", reason="refuted",
                    seed=0, line=9, alpha=0.05, confidence_level=0.9, method="tost",
                    correction="holm", expected="|logprob change| < 0.2",
                    intervention="zero-ablate"),
    ]


def test_json_round_trip_and_non_finite_numbers(tmp_path: Path) -> None:
    path = write_report(_results(), tmp_path / "r.json")
    body = json.loads(path.read_text())
    assert body["results"][1]["ci_high"] is None  # JSON has no infinity
    back = read_report(path)
    assert back[0] == _results()[0]
    assert back[1].ci_high is None


def test_csv_and_frame_columns(tmp_path: Path) -> None:
    write_report(_results(), tmp_path / "r.csv")
    header = (tmp_path / "r.csv").read_text().splitlines()[0].split(",")
    # appended, never reordered
    assert header == [*REPORT_FIELDS, "reason", "xfail", "line", "each_of"]
    frame = results_frame(_results())
    assert list(frame.columns)[: len(REPORT_FIELDS)] == list(REPORT_FIELDS)
    assert frame.set_index("id").loc["two", "verdict"] == "fail"
    with pytest.raises(MechcheckError, match="unknown report format"):
        write_report(_results(), tmp_path / "r.txt")


def test_report_folders_are_created_and_unwritable_ones_explained(tmp_path: Path) -> None:
    path = write_report(_results(), tmp_path / "new" / "deeper" / "r.csv")
    assert path.read_text().startswith("file,")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(MechcheckError, match="cannot create the report's folder") as info:
        write_report(_results(), tmp_path / "a_file" / "r.json")
    assert info.value.key == "--mechcheck-report"


def test_summary_table_and_failure_text() -> None:
    lines = summary_table(_results())
    assert lines[0].split() == ["claim", "verdict", "effect", "CI", "threshold", "p_adj", "n"]
    assert "fail (refuted)" in lines[2] and "test_a.yaml::two" in lines[2]
    text = format_failure(_results()[1])
    assert text.startswith("c/test_a.yaml:9 claim 'two' failed: refuted")
    assert "90% CI 0.1 to n/a, n=10, tost, seed 0" in text
    assert not math.isnan(_results()[0].effect)


def test_reports_are_replaced_atomically_and_keep_the_old_file_on_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mechcheck.report import io as report

    path = write_report(_results(), tmp_path / "r.json")
    before = path.read_text()
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()  # not mkstemp's 0600

    def broken(*args: object, **kwargs: object) -> str:
        raise OSError("disk full")

    monkeypatch.setattr(report.json, "dumps", broken)
    with pytest.raises(OSError, match="disk full"):
        write_report(_results()[:1], path)
    monkeypatch.undo()
    assert path.read_text() == before

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text('{"mechcheck_report": 1, "res')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        report.write_atomic(path, half_then_fail)
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # no temporary left


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_complete_flag_and_partial_csv(tmp_path: Path) -> None:
    from mechcheck.report.io import load_report

    done = write_report(_results(), tmp_path / "r.json")
    assert list(json.loads(done.read_text()))[:2] == ["mechcheck_report", "complete"]
    assert json.loads(done.read_text())["complete"] is True
    cut = write_report(_results()[:1], tmp_path / "cut.json", complete=False,
                       incomplete_reason="interrupted")
    body = json.loads(cut.read_text())
    assert body["complete"] is False and body["incomplete_reason"] == "interrupted"
    assert [r["id"] for r in body["results"]] == ["one"]
    with pytest.raises(MechcheckError, match=r"the report .*cut.json is incomplete: "
                       r"interrupted \(\"complete\": false; it has 1 result\(s\)\)") as info:
        read_report(cut)
    assert "--allow-incomplete" in str(info.value.hint)
    assert [r.id for r in read_report(cut, allow_incomplete=True)] == ["one"]
    assert load_report(cut).incomplete_reason == "interrupted"
    # a report written before the flag existed is complete
    old = json.loads(done.read_text())
    del old["complete"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert len(read_report(tmp_path / "old.json")) == 2
    # CSV has no room for the flag: an incomplete run's goes beside the report
    full = write_report(_results(), tmp_path / "r.csv")
    before = full.read_text()
    partial = write_report(_results()[:1], tmp_path / "r.csv", complete=False)
    assert partial == tmp_path / "r.partial.csv"
    assert full.read_text() == before
    assert len(partial.read_text().splitlines()) == 2


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read the report *bad.json: No such file or directory"),
    ("{not json", "cannot read the report *bad.json: it is not JSON (*line 1*"),
    ("[1, 2]", "*bad.json: it is not a mechcheck report (no \"mechcheck_report\": 1*"),
    ('{"results": []}', "*it is not a mechcheck report*"),
    ('{"mechcheck_report": 1, "results": {}}', '*bad.json: its "results" is not a list'),
    ('{"mechcheck_report": 1, "results": [3]}', "*bad.json: results[[]0[]] is not an object"),
    ('{"mechcheck_report": 1, "results": [{"file": "f"}]}',
     "*bad.json: results[[]0[]] has no text 'id'"),
    ('{"mechcheck_report": 1, "results": [{"file": "f", "id": "x", "verdict": "pass", '
     '"components": 5}]}', "*bad.json: results[[]0[]] is not a claim result*"),
])
def test_bad_report_files_are_clear_errors(tmp_path: Path, content: str | None,
                                           message: str) -> None:
    import fnmatch

    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(MechcheckError) as info:
        read_report(path)
    assert fnmatch.fnmatch(info.value.message, message), info.value.message
    assert "--mechcheck-report" in str(info.value.hint)


def test_csv_reports_cannot_be_read_back(tmp_path: Path) -> None:
    path = write_report(_results(), tmp_path / "r.csv")
    with pytest.raises(MechcheckError, match="a CSV report cannot be read back"):
        read_report(path)


def test_writable_paths_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mechcheck.report import io as report
    from mechcheck.report.io import check_writable

    assert check_writable(tmp_path / "new" / "r.json") == tmp_path / "new" / "r.json"
    assert (tmp_path / "new").is_dir()
    with pytest.raises(MechcheckError, match="is a folder"):
        check_writable(tmp_path / "new", key="--report")
    # a read-only folder (simulated: tests may run as root, who can write anywhere)
    monkeypatch.setattr(report.os, "access", lambda path, mode: False)
    with pytest.raises(MechcheckError, match="cannot write the report .*: permission "
                       "denied") as info:
        check_writable(tmp_path / "r.json", key="--report")
    assert info.value.key == "--report"


def test_table_choices_and_underflowed_p_values() -> None:
    tiny = replace(_results()[0], p_value=0.0, p_adjusted=0.0)
    lines = summary_table([tiny, *_results()[1:]])
    assert "< 1e-300" in lines[1] and " 0 " not in lines[1].split("0.5")[1]
    failed = summary_table(_results(), show="failed")
    assert [line.split()[0] for line in failed] == ["claim", "test_a.yaml::two"]
    assert summary_table(_results(), show="none") == []
    expected = replace(_results()[1], xfail="known")  # an expected failure does not fail
    assert summary_table([_results()[0], expected], show="failed") == []
    xpass = replace(_results()[0], xfail="known")  # XPASS(strict) does
    assert len(summary_table([xpass], show="failed")) == 2
    timed = summary_table([replace(_results()[0], duration_s=1.234)], timing=True)
    assert timed[0].split()[-1] == "seconds" and timed[1].split()[-1] == "1.23"
    text = format_failure(replace(_results()[1], p_value=0.0, p_adjusted=0.0))
    assert "p             < 1e-300 (adjusted, holm: < 1e-300; alpha 0.05)" in text


def test_matrix_keeps_claim_order_when_ids_repeat_across_files() -> None:
    from mechcheck.report.io import matrix

    results = [ClaimResult(file=f, id=i, model="m", checkpoint=c, verdict="pass")
               for f, ids in (("a.yaml", ["z", "m"]), ("b.yaml", ["m", "a", "y"]))
               for c in ("s1", "s2") for i in ids]
    table = matrix(results)
    assert list(table.index) == [("a.yaml", "z"), ("a.yaml", "m"), ("b.yaml", "m"),
                                 ("b.yaml", "a"), ("b.yaml", "y")]
    assert list(table.columns) == ["s1", "s2"]


def test_per_prompt_values_stay_out_of_the_report_unless_asked(tmp_path: Path) -> None:
    values = {"row": [0, 1], "clean": [1.0, 2.0], "patched": [0.5, float("nan")]}
    result = replace(_results()[0], per_prompt=values)
    assert "per_prompt" not in result.record()
    record = result.record(per_prompt=True)
    assert record["per_prompt"]["patched"] == [0.5, None]
    assert ClaimResult.from_record(record).per_prompt == {**values, "patched": [0.5, None]}
    body = json.loads(write_report([result], tmp_path / "r.json").read_text())
    assert "per_prompt" not in body["results"][0]
