"""The Python form (mechcheck.python_form): keyword arguments become plain YAML values."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from mechcheck.errors import ClaimSpecError
from mechcheck.python_form import Checker, plain_claim, plain_value
from mechcheck.session import Session
from tests.conftest import word_rows


class _Colour(str, enum.Enum):
    RED = "red"


@pytest.mark.parametrize("value, plain", [
    (np.float64(0.5), 0.5), (np.float32(0.25), 0.25), (np.int64(3), 3), (np.int8(-2), -2),
    (np.bool_(True), True), (np.str_("head 0.0"), "head 0.0"),
    (np.array(["head 0.0", "head 1.0"]), ["head 0.0", "head 1.0"]),
    (np.array([1, 2]), [1, 2]), (np.array(0.5), 0.5), ((1, 2), [1, 2]),
    ((np.int64(1), "last"), [1, "last"]), (range(2), [0, 1]),
    (Path("models/x"), "models/x"), ({"name": "ioi", "n": np.int64(20)}, {"name": "ioi", "n": 20}),
    (_Colour.RED, "red"), (None, None), ("text", "text"), (1.5, 1.5),
])
def test_values_become_plain(value: Any, plain: Any) -> None:
    out = plain_value(value, "k")
    assert out == plain
    assert type(out) is type(plain)
    assert yaml.safe_load(yaml.safe_dump({"k": out})) == {"k": plain}


@pytest.mark.parametrize("value, reason, hint", [
    ({"head 0.0"}, "a set has no order", "pass a list"),
    (object(), "a builtins.object is not a plain value", "numpy scalars and arrays"),
    (b"raw", "a builtins.bytes is not a plain value", "numpy scalars and arrays"),
    ([1, object()], "a builtins.object is not a plain value", "numpy scalars and arrays"),
    ({("a", "b"): 1}, "a key must be text", "write keys as text"),
])
def test_values_that_cannot_be_written_name_the_key(value: Any, reason: str, hint: str) -> None:
    with pytest.raises(ClaimSpecError) as info:
        plain_claim({"id": "c", "components": value})
    assert info.value.key == "components" and info.value.claim_id == "c"
    assert reason in info.value.message and hint in (info.value.hint or "")


@pytest.fixture()
def checker(tmp_path: Path, tiny_folder: Callable[..., Path]) -> Checker:
    tmp_path.joinpath("d.jsonl").write_text("\n".join(json.dumps(r) for r in word_rows(12)))
    return Checker(Session(device="cpu", n_resamples=199), path=str(tmp_path / "test_x.py"),
                   shown="test_x.py", line=7)


def _claim(tiny_folder: Callable[..., Path], **changes: Any) -> dict[str, Any]:
    claim: dict[str, Any] = {"id": "first", "kind": "attends", "model": tiny_folder("gpt2"),
                             "data": "d.jsonl", "components": np.array(["head 1.0"]),
                             "pattern": "first_token", "min_score": np.float64(0.0),
                             "alpha": np.float32(0.25), "seed": np.int64(3), "n": np.int64(10),
                             "test": np.str_("t")}
    claim.update(changes)
    return claim


def test_numpy_values_and_paths_run_as_a_claim(checker: Checker,
                                               tiny_folder: Callable[..., Path]) -> None:
    (result,) = checker.evaluate([_claim(tiny_folder)])
    assert result.verdict == "pass", result.message
    assert (result.n, result.seed, result.alpha) == (10, 3, 0.25)


def test_an_unwritable_value_is_an_error_of_its_claim_only(
        checker: Checker, tiny_folder: Callable[..., Path]) -> None:
    bad = _claim(tiny_folder, id="bad", components={"head 1.0"})
    results = checker.evaluate([_claim(tiny_folder), bad, _claim(tiny_folder, id="third")])
    assert [r.verdict for r in results] == ["pass", "error", "pass"]
    error = results[1]
    assert error.id == "bad" and error.line == 7
    assert error.message.startswith("test_x.py:7: claim 'bad', key 'components': cannot "
                                    "write {'head 1.0'} in a claim: a set has no order")
    assert "fix: pass a list" in error.message and "Traceback" not in error.message


def test_an_unwritable_claim_without_a_plain_id(checker: Checker) -> None:
    (result,) = checker.evaluate([{"id": object(), "kind": "attends"}])
    assert result.verdict == "error" and result.id == "claim[0]"
    assert "key 'id': cannot write <object object" in result.message


def test_a_non_text_correction_is_a_located_error(checker: Checker,
                                                  tiny_folder: Callable[..., Path]) -> None:
    (result,) = checker.evaluate([_claim(tiny_folder)], correction=np.str_("bh"))  # type: ignore[arg-type]
    assert result.verdict == "pass", result.message
    (result,) = checker.evaluate([_claim(tiny_folder)], correction=object())  # type: ignore[arg-type]
    assert result.verdict == "error" and "correction: got '<object object" in result.message


def test_every_problem_of_a_python_claim_is_at_the_test_line(
        checker: Checker, monkeypatch: pytest.MonkeyPatch) -> None:
    """The claim goes to the loader as a mapping (parse_claim_mapping), not as YAML text:
    each problem listed is at the test function's line, none at a line of generated text."""
    import mechcheck.spec.loader as loader

    monkeypatch.setattr(loader, "parse_claim_text", None)  # not used by the Python form
    (result,) = checker.evaluate([{"id": "c", "kind": "attends", "model": "m",
                                   "data": "d.jsonl", "components": ["head 1.0"],
                                   "pattern": "first_token", "min_scor": 0.5, "alpha": 2}])
    assert result.verdict == "error" and result.line == 7
    lines = result.message.splitlines()
    assert lines[0] == "test_x.py:7: claim 'c', key 'min_scor': 2 problems in this claim:"
    listed = [line.strip() for line in lines if line.startswith("  test_x.py")]
    assert [entry.split(": ")[:2] for entry in listed] == [
        ["test_x.py:7", "key 'min_scor'"], ["test_x.py:7", "key 'alpha'"]]
