"""Per-prompt values: `--mechcheck-report-prompts` and `mechcheck check --report-prompts`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mechcheck.errors import MechcheckError
from mechcheck.report.prompt_values import check_prompts_path, prompt_frame, write_prompt_values
from mechcheck.report.results import ClaimResult


def _results() -> list[ClaimResult]:
    one = ClaimResult(file="f.yaml", id="drop", model="m", verdict="pass", per_prompt={
        "row": [0, 1, 2], "clean": [2.0, 3.0, 4.0], "patched": [1.0, 1.5, 5.0],
        "difference": [1.0, 1.5, -1.0], "template": ["a", "b", "a"]})
    two = ClaimResult(file="f.yaml", id="attn", model="m", checkpoint="step5",
                      verdict="fail", per_prompt={"row": [3, 4], "score": [0.1, 0.9]})
    none = ClaimResult(file="f.yaml", id="broken", model="m", verdict="error")
    return [one, two, none]


def test_frame_is_long_with_keys_first() -> None:
    frame = prompt_frame(_results())
    assert list(frame.columns) == ["file", "id", "checkpoint", "row", "clean", "patched",
                                   "difference", "template", "score"]
    assert frame["id"].tolist() == ["drop"] * 3 + ["attn"] * 2
    assert frame["row"].tolist() == [0, 1, 2, 3, 4]
    assert frame.loc[3, "checkpoint"] == "step5" and frame.loc[4, "score"] == 0.9
    assert frame["difference"].iloc[:3].tolist() == [1.0, 1.5, -1.0]
    assert list(prompt_frame([_results()[2]]).columns) == ["file", "id", "checkpoint", "row"]
    bad = ClaimResult(file="f", id="x", model="m", per_prompt={"row": [0], "clean": []})
    with pytest.raises(ValueError, match="unequal lengths"):
        prompt_frame([bad])


def test_csv_written_and_read_back(tmp_path: Path) -> None:
    import pandas as pd

    path = write_prompt_values(_results(), tmp_path / "sub" / "prompts.csv")
    frame = pd.read_csv(path)
    assert len(frame) == 5 and frame["template"].tolist()[:3] == ["a", "b", "a"]
    partial = write_prompt_values(_results()[:1], tmp_path / "sub" / "prompts.csv",
                                  complete=False)
    assert partial.name == "prompts.partial.csv" and len(pd.read_csv(path)) == 5


def test_parquet_needs_pyarrow(monkeypatch: pytest.MonkeyPatch) -> None:
    from mechcheck.report import prompt_values

    real = importlib.util.find_spec
    monkeypatch.setattr(prompt_values.importlib.util, "find_spec",
                        lambda name: None if name == "pyarrow" else real(name))
    with pytest.raises(MechcheckError, match="--p out.parquet: writing parquet needs "
                       "pyarrow, which is not installed") as info:
        check_prompts_path("out.parquet", key="--p")
    assert "name the file *.csv" in str(info.value.hint)
    with pytest.raises(MechcheckError, match="unknown format '.txt'"):
        check_prompts_path("out.txt", key="--p")


def test_parquet_when_pyarrow_is_installed(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    import pandas as pd

    path = write_prompt_values(_results(), tmp_path / "p.parquet")
    assert pd.read_parquet(path)["row"].tolist() == [0, 1, 2, 3, 4]
