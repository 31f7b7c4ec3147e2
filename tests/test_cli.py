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
