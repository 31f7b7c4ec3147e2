"""MechcheckError: located() fills unset location fields in a copy and never changes the
error it is called on."""

from __future__ import annotations

import pytest

from mechcheck.errors import DataError, MechcheckError, ModelUnavailableError


def test_located_returns_a_copy_and_leaves_the_error_alone() -> None:
    error = DataError("row 3 is too long", key="data", hint="shorten it")
    first = error.located(path="a.yaml", line=4, claim_id="x", key="other")
    second = error.located(path="b.yaml", claim_id="y")
    assert (error.path, error.line, error.claim_id) == (None, None, None)
    assert type(first) is DataError and first is not error
    assert (first.path, first.line, first.claim_id, first.key) == ("a.yaml", 4, "x", "data")
    assert (second.path, second.line, second.claim_id) == ("b.yaml", None, "y")
    assert str(first) == ("a.yaml:4: claim 'x', key 'data': row 3 is too long\n"
                          "  fix: shorten it")
    assert str(error) == "key 'data': row 3 is too long\n  fix: shorten it"
    assert first.located(path="c.yaml").path == "a.yaml"  # set fields stay as they are


def test_located_keeps_the_class_and_refuses_unknown_fields() -> None:
    error = ModelUnavailableError("not in the cache", key="model")
    located = error.located(path="f.yaml", line=None)
    assert isinstance(located, ModelUnavailableError) and located.line is None
    with pytest.raises(TypeError, match="not 'lines'"):
        MechcheckError("x").located(lines=3)


def test_a_model_error_is_located_per_claim(tmp_path) -> None:
    """One model that cannot be loaded: each claim's error names its own claim and line."""
    from mechcheck.api import evaluate_path

    (tmp_path / "rows.jsonl").write_text('{"prompt": "a b", "answer": "c"}\n'
                                         '{"prompt": "b c", "answer": "d"}\n')
    (tmp_path / "test_two.yaml").write_text(
        "model: missing-folder\n"
        "data: rows.jsonl\n"
        "metric: logprob\n"
        "claims:\n"
        "  - id: first\n"
        "    kind: performs\n"
        "    min_value: 0\n"
        "  - id: second\n"
        "    kind: performs\n"
        "    min_value: 0\n")
    first, second = evaluate_path(tmp_path / "test_two.yaml")
    assert first.verdict == second.verdict == "error"
    assert "claim 'first', key 'model': no model folder" in first.message
    assert "claim 'second', key 'model': no model folder" in second.message
    assert first.line == 1 and second.line == 1
