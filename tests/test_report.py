"""Reports: JSON round trip, CSV columns, DataFrame, terminal table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mechcheck.errors import MechcheckError
from mechcheck.report import read_report, results_frame, summary_table, write_report
from mechcheck.results import REPORT_FIELDS, ClaimResult, format_failure


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
    assert header == list(REPORT_FIELDS)
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
