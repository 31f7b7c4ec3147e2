"""Evaluating a file: the family-wise correction and error isolation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mechcheck.api import evaluate_path
from mechcheck.report.io import results_frame
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
    from mechcheck.testing.models import DEFAULT_WORDS
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


# --- one fault never takes down the file ---------------------------------------------------


def _two_data_files(tmp_path: Path, model: Path) -> Path:
    (tmp_path / "short.jsonl").write_text(
        "\n".join(json.dumps(r) for r in word_rows(8, lengths=(5,))))
    (tmp_path / "long.jsonl").write_text(
        "\n".join(json.dumps(r) for r in word_rows(8, seed=1, lengths=(8,))))
    path = tmp_path / "test_two.yaml"
    path.write_text(f"""\
model: {model}
claims:
  - id: on_short
    kind: attends
    data: short.jsonl
    components: ["head 0.0"]
    pattern: first_token
    min_score: 0.01
  - id: on_long
    kind: attends
    data: long.jsonl
    components: ["head 0.0"]
    pattern: first_token
    min_score: 0.01
  - id: on_long_ablated
    kind: necessary
    data: long.jsonl
    metric: logprob
    components: ["head 0.0"]
    ablation: zero
    min_drop: -100
""")
    return path


def test_a_failing_shared_run_errors_only_the_claims_that_need_it(
        tmp_path: Path, tiny_folder: Any, monkeypatch: Any) -> None:
    """The model raises on 9-token inputs (the long file's prompts with <bos>): the claims
    on that file end as located errors naming the cause; the other file's claim passes."""
    model = tiny_folder("gpt2")
    path = _two_data_files(tmp_path, model)
    session = Session(device="cpu")
    loaded = session.model(str(model), str(tmp_path))
    real = loaded.model.forward
    calls: list[int] = []

    def forward(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["input_ids"].shape[1])
        if kwargs["input_ids"].shape[1] == 9:
            raise IndexError("index out of range in self")
        return real(*args, **kwargs)

    monkeypatch.setattr(loaded.model, "forward", forward)
    results = evaluate_path(path, session)
    assert [(r.id, r.verdict) for r in results] == [
        ("on_short", "pass"), ("on_long", "error"), ("on_long_ablated", "error")]
    for result in results[1:]:
        assert f"claim '{result.id}'" in result.message
        assert "the shared clean run failed: IndexError: index out of range in self" \
            in result.message
        assert "internal error" not in result.message
    assert calls.count(9) <= 2  # the failed pass is not run once per claim


def test_a_plugin_kind_that_raises_is_named_and_the_others_are_measured(
        tmp_path: Path, tiny_folder: Any) -> None:
    from types import SimpleNamespace

    from mechcheck.hookspecs import hookimpl
    from mechcheck.kinds import Attends

    class Broken(Attends):
        name = "broken"

        def measure(self, claim: Any, ctx: Any) -> Any:
            return {}["missing"]

    plugin = SimpleNamespace(mechcheck_claim_kinds=hookimpl(lambda: [Broken()]))
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in word_rows(8)))
    path = tmp_path / "test_p.yaml"
    path.write_text(f"""\
model: {tiny_folder("gpt2")}
data: d.jsonl
claims:
  - {{id: bad, kind: broken, components: ["head 0.0"], pattern: first_token, min_score: 0}}
  - {{id: good, kind: attends, components: ["head 0.0"], pattern: first_token,
      min_score: 0.01}}
""")
    results = evaluate_path(path, Session(device="cpu", plugins=[plugin]))
    assert [(r.id, r.verdict) for r in results] == [("bad", "error"), ("good", "pass")]
    assert "failed in code that mechcheck called: KeyError: 'missing'" in results[0].message
    assert "in measure)" in results[0].message and "internal error" not in results[0].message
    assert "test_evaluate.py" in results[0].message  # where the plugin's code is


def test_evaluate_file_never_raises(tmp_path: Path, tiny_folder: Any, monkeypatch: Any) -> None:
    """Even a bug of mechcheck's own outside any one claim leaves a result per claim."""
    import mechcheck.evaluate as evaluate

    def bug(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(evaluate, "_correct", bug)
    path = _two_data_files(tmp_path, tiny_folder("gpt2"))
    results = evaluate_path(path, Session(device="cpu"))
    assert [r.verdict for r in results] == ["error"] * 3
    assert all("internal error" in r.message and "a bug" in r.message for r in results)


def test_progress_reports_model_load_shared_runs_and_the_file(
        tmp_path: Path, tiny_folder: Any) -> None:
    lines: list[str] = []
    path = _two_data_files(tmp_path, tiny_folder("gpt2"))
    evaluate_path(path, Session(device="cpu", progress=lines.append))
    assert any(line.startswith("model ") and " loaded on cpu (float32) in " in line
               for line in lines)
    assert any(line.startswith("clean run: 8 prompts of short.jsonl") for line in lines)
    assert lines[-1].endswith("3 claim(s) in " + lines[-1].split(" in ")[-1])
    assert "(3 pass)" in lines[-1]


def test_unknown_from_and_to_names_are_reported_at_their_own_keys(
        tmp_path: Path, tiny_folder: Any) -> None:
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in word_rows(8)))
    path = tmp_path / "test_pos.yaml"
    path.write_text(f"""\
model: {tiny_folder("gpt2")}
data: d.jsonl
claims:
  - id: bad_to
    kind: attends
    components: ["head 0.0"]
    from: END
    to: s
    min_score: 0.1
  - id: bad_both
    kind: attends
    components: ["head 0.0"]
    from: end
    to: nowhere
    min_score: 0.1
  - id: bad_at
    kind: necessary
    metric: logprob
    components: ["head 0.0"]
    ablation: zero
    at: [End]
    min_drop: 0.1
""")
    bad_to, bad_both, bad_at = evaluate_path(path, Session(device="cpu"))
    assert bad_to.verdict == "error" and bad_to.line == 8  # the line of to:
    assert "key 'to'" in bad_to.message and "did you mean 'S'?" in bad_to.message
    assert bad_both.line == 13 and "'end'" in bad_both.message and "'nowhere'" in bad_both.message
    assert "did you mean 'END'?" in bad_both.message
    assert bad_at.line == 21 and "key 'at'" in bad_at.message
    assert "did you mean 'END'?" in bad_at.message and "END, S" in bad_at.message


def test_results_keep_their_per_prompt_values(tmp_path: Path, tiny_folder: Any) -> None:
    import numpy as np
    import torch

    rows = word_rows(10)
    for i, row in enumerate(rows):
        row["template"] = f"t{i % 3}"
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    path = tmp_path / "test_pp.yaml"
    path.write_text(f"""\
model: {tiny_folder("gpt2")}
data: d.jsonl
claims:
  - {{id: nec, kind: necessary, metric: logprob, components: ["head 0.0"], ablation: zero,
      min_drop: -100}}
  - {{id: suf, kind: sufficient, metric: kl, components: [blocks.1.resid_post],
      min_recovery: 0.5}}
  - {{id: att, kind: attends, components: ["head 0.0"], pattern: first_token,
      min_score: 0.01}}
""")
    session = Session(device="cpu")
    nec, suf, att = evaluate_path(path, session)
    values = nec.per_prompt
    assert values is not None and values["row"] == list(range(10))
    assert values["template"] == [r["template"] for r in rows]
    # the clean column is the answer's log-probability, computed here without mechcheck
    loaded = session.model(str(tiny_folder("gpt2")), str(tmp_path))
    for i, row in enumerate(rows):
        ids = loaded.tokenizer(row["prompt"])["input_ids"]
        answer = loaded.tokenizer(row["answer"], add_special_tokens=False)["input_ids"][0]
        with torch.inference_mode():
            logits = loaded.model(input_ids=torch.tensor([ids])).logits[0, -1]
        assert values["clean"][i] == pytest.approx(
            float(logits.log_softmax(-1)[answer]), abs=1e-5)
    difference = np.array(values["patched"]) - np.array(values["clean"])
    assert values["difference"] == pytest.approx(difference.tolist())
    assert -np.mean(values["difference"]) == pytest.approx(nec.effect)  # the drop tested
    assert suf.verdict == "pass", suf.message
    assert suf.per_prompt is not None and {"clean", "corrupt", "patched"} <= set(suf.per_prompt)
    # patching the whole residual stream after the last block restores the clean run
    assert suf.per_prompt["patched"] == pytest.approx(suf.per_prompt["clean"], abs=1e-4)
    assert att.per_prompt is not None and np.mean(att.per_prompt["score"]) == \
        pytest.approx(att.effect)
