"""The session's models: kept while they fit the budget, so a file whose claims
alternate between two models loads each once and shares its runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mechcheck.api import evaluate_path
from mechcheck.session import Session, _weight_bytes
from tests.conftest import word_rows

FILE = """\
data: data.jsonl
claims:
{claims}
"""
CLAIM = """\
  - id: c{i}
    model: {model}
    kind: attends
    components: ["head 1.0"]
    pattern: first_token
    min_score: 0.0
"""


def _alternating(tmp_path: Path, models: list[Path]) -> Path:
    import json

    (tmp_path / "data.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in word_rows(6)))
    claims = "".join(CLAIM.format(i=i, model=models[i % 2]) for i in range(4))
    path = tmp_path / "test_two.yaml"
    path.write_text(FILE.format(claims=claims))
    return path


def _two_folders(tmp_path: Path, tiny_folder: Any) -> list[Path]:
    return [tiny_folder("gpt2"), tiny_folder("llama")]


def test_alternating_models_load_once_each_within_the_budget(tmp_path: Path,
                                                            tiny_folder: Any) -> None:
    lines: list[str] = []
    path = _alternating(tmp_path, _two_folders(tmp_path, tiny_folder))
    results = evaluate_path(path, Session(device="cpu", progress=lines.append))
    assert [r.verdict for r in results] == ["pass"] * 4
    assert sum("loaded on" in line for line in lines) == 2
    assert sum(line.startswith("clean run") for line in lines) == 2


def test_a_zero_budget_keeps_one_model_and_gives_the_same_results(
        tmp_path: Path, tiny_folder: Any) -> None:
    lines: list[str] = []
    path = _alternating(tmp_path, _two_folders(tmp_path, tiny_folder))
    kept = evaluate_path(path, Session(device="cpu"))
    one = evaluate_path(path, Session(device="cpu", progress=lines.append, keep_bytes=0))
    assert sum("loaded on" in line for line in lines) > 2  # reloaded after each switch
    assert [(r.effect, r.p_value) for r in one] == [(r.effect, r.p_value) for r in kept]


def test_models_beyond_the_budget_are_released_least_recent_first(
        tmp_path: Path, tiny_folder: Any) -> None:
    first, second = _two_folders(tmp_path, tiny_folder)
    session = Session(device="cpu")
    a = session.model(str(first))
    session.keep_bytes = _weight_bytes(a) + 1  # room for one of them only
    session.model(str(second))
    assert list(session._models) == [str(session.model(str(second)).key)]
    assert _weight_bytes(a) > 0
