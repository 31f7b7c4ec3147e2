"""Claim items: distinct names, one evaluation per file, shared work charged to setup."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mechcheck.collect import item_names
from mechcheck.errors import ClaimSpecError
from mechcheck.spec.schema import ClaimSpec
from tests.conftest import word_rows


def _claim(claim_id: str, line: int) -> ClaimSpec:
    return ClaimSpec(id=claim_id, kind="attends", path="f.yaml", line=line, base_dir=".",
                     model=None)


def test_item_names_are_distinct_even_when_an_id_looks_generated() -> None:
    duplicate = ClaimSpecError("duplicate id 'x'", claim_id="x", line=7)
    unnamed = ClaimSpecError("the claim has no id", line=12)
    claims = [_claim("x", 3), duplicate, _claim("x@line7", 11), unnamed]
    names = item_names(claims)
    assert names == ["x", "x@line7", "x@line7@line11", "claim[3]"]
    assert len(set(names)) == len(names)


def test_ids_equal_to_generated_names_keep_every_claim_and_error(
        pytester: pytest.Pytester, tiny_folder: Any) -> None:
    pytester.path.joinpath("d.jsonl").write_text(
        "\n".join(json.dumps(r) for r in word_rows(8)))
    pytester.makefile(".yaml", test_ids=f"""\
model: {tiny_folder('gpt2')}
data: d.jsonl
claims:
  - {{id: a, kind: attends, components: ["head 0.0"], pattern: first_token, min_score: 0.01}}
  - {{id: a, kind: attends, components: ["head 0.0"], pattern: first_token, min_score: 0.01}}
  - {{id: "a@line5", kind: attends, components: ["head 0.0"], pattern: first_token,
      min_score: 0.01}}
""")
    result = pytester.runpytest("-p", "no:cacheprovider", "-rA", "--mechcheck-report", "r.json")
    records = json.loads(pytester.path.joinpath("r.json").read_text())["results"]
    assert len(records) == 3
    # the duplicate id is an error whatever the third claim is called
    assert any(r["verdict"] == "error" and "duplicate id 'a'" in r["message"] for r in records)
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) + outcomes.get("error", 0) >= 1
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) + outcomes.get("error", 0) == 3


def test_a_file_is_evaluated_once_and_its_work_is_charged_to_setup(
        pytester: pytest.Pytester, tiny_folder: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import mechcheck.evaluate as evaluate

    calls: list[str] = []
    real = evaluate.evaluate_file

    def counting(parsed: Any, session: Any, **kwargs: Any) -> Any:
        calls.append(parsed.path)
        return real(parsed, session, **kwargs)

    monkeypatch.setattr(evaluate, "evaluate_file", counting)
    pytester.path.joinpath("d.jsonl").write_text(
        "\n".join(json.dumps(r) for r in word_rows(8)))
    pytester.makefile(".yaml", test_once=f"""\
model: {tiny_folder('gpt2')}
data: d.jsonl
claims:
  - {{id: one, kind: attends, components: ["head 0.0"], pattern: first_token, min_score: 0.01}}
  - {{id: two, kind: attends, components: ["head 9.9"], pattern: first_token, min_score: 0.01}}
  - {{id: three, kind: attends, components: ["head 0.1"], pattern: first_token,
      min_score: 0.01}}
""")
    result = pytester.runpytest("-p", "no:cacheprovider", "--durations=0", "-vv")
    result.assert_outcomes(passed=2, failed=1)
    assert len(calls) == 1
    # the shared runs are the first claim's setup, not its call
    result.stdout.re_match_lines([r".*s setup\s+test_once.yaml::one"])
