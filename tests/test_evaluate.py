"""Evaluating a file: the family-wise correction and error isolation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mechcheck.api import evaluate_path
from mechcheck.report import results_frame
from mechcheck.session import Session
from mechcheck.stats import adjust
from tests.conftest import word_rows

FILE = """\
model: {model}
data: data.jsonl
correction: {correction}
claims:
  - id: first
    kind: attends
    components: ["head 1.0"]
    pattern: first_token
    min_score: {s1}
  - id: second
    kind: attends
    components: ["head 1.1"]
    pattern: first_token
    min_score: {s2}
  - id: broken
    kind: attends
    components: ["head 9.9"]
    pattern: first_token
    min_score: 0.1
"""


def _write(tmp_path: Path, model: Path, correction: str) -> Path:
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in word_rows(16)))
    path = tmp_path / "test_c.yaml"
    path.write_text(FILE.format(model=model, correction=correction, s1=0.2, s2=0.22))
    return path


def test_correction_is_applied_within_the_file(tmp_path: Path, tiny_folder: Any) -> None:
    session = Session(device="cpu")
    holm = evaluate_path(_write(tmp_path, tiny_folder("gpt2"), "holm"), session)
    assert [r.verdict for r in holm][2] == "error"
    raw = [r.p_value for r in holm[:2]]
    assert [r.p_adjusted for r in holm[:2]] == adjust(raw, "holm")  # errors not counted
    assert holm[0].p_adjusted >= holm[0].p_value
    none = evaluate_path(_write(tmp_path, tiny_folder("gpt2"), "none"), session)
    assert [r.p_adjusted for r in none[:2]] == raw
    frame = results_frame(holm)
    assert frame["verdict"].tolist()[2] == "error"
    assert "head 9.9" not in frame["message"].tolist()[2]  # printed canonically
    assert "blocks.9.attn.head.9" in frame["message"].tolist()[2]


def test_a_shared_model_error_names_each_claim(tmp_path: Path) -> None:
    (tmp_path / "test_m.yaml").write_text("""\
model: ./nowhere
data: d.jsonl
claims:
  - {id: first, kind: attends, components: ["head 0.0"], pattern: first_token, min_score: 0}
  - {id: second, kind: attends, components: ["head 0.0"], pattern: first_token, min_score: 0}
""")
    results = evaluate_path(tmp_path / "test_m.yaml", Session(device="cpu"))
    assert [r.verdict for r in results] == ["error", "error"]
    assert "claim 'first', key 'model'" in results[0].message
    assert "claim 'second', key 'model'" in results[1].message
    assert all(":1:" in r.message for r in results)  # the line that set model:


def test_a_claim_task_replaces_the_file_data(tmp_path: Path, tiny_folder: Any) -> None:
    """One file, two prompt sets: the file's 16 rows, and 24 rows the induction task
    generates for one claim; the family still spans both claims."""
    from mechcheck.models.tiny import DEFAULT_WORDS
    from mechcheck.zoo.induction import WORDS

    model = tiny_folder("gpt2", words=tuple(dict.fromkeys([*DEFAULT_WORDS, *WORDS])))
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in word_rows(16)))
    path = tmp_path / "test_mixed.yaml"
    path.write_text(f"""\
model: {model}
data: data.jsonl
claims:
  - id: on_file_rows
    kind: attends
    components: ["head 1.0"]
    pattern: first_token
    min_score: 0.01
  - id: on_task_rows
    kind: attends
    components: ["head 1.0"]
    pattern: induction
    min_score: 0.01
    task: {{name: induction, n: 24, seed: 3}}
""")
    results = evaluate_path(path, Session(device="cpu"))
    assert [(r.id, r.verdict, r.n) for r in results] == [
        ("on_file_rows", "pass", 16), ("on_task_rows", "pass", 24)]
    assert results[1].p_adjusted >= results[1].p_value
