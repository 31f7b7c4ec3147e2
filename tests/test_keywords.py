"""`-k` expressions of `mechcheck check`, and the outcomes pytest gives claims."""

from __future__ import annotations

import re

import pytest

from mechcheck.errors import MechcheckError
from mechcheck.keywords import Keyword
from mechcheck.outcomes import FAILING, outcome, xfail_before, xfail_reason

NAMES = {"a": ("head_ok", "test_heads.yaml"), "b": ("head_bad[step5]", "test_heads.yaml"),
         "c": ("mlp_ok", "test_mlp.yaml", "xfail")}


def _chosen(expression: str) -> list[str]:
    keyword = Keyword.parse(expression)
    return [k for k, names in NAMES.items() if keyword.matches(names)]


@pytest.mark.parametrize(("expression", "chosen"), [
    ("", ["a", "b", "c"]),
    ("ok", ["a", "c"]),
    ("OK", ["a", "c"]),  # case-insensitive, as pytest -k
    ("not ok", ["b"]),
    ("heads and not bad", ["a"]),
    ("bad or mlp", ["b", "c"]),
    ("not (bad or mlp)", ["a"]),
    ("not not ok", ["a", "c"]),
    ("step5", ["b"]),
    ("head_bad[step5]", ["b"]),
    ("xfail", ["c"]),
    ("ok and heads or mlp", ["a", "c"]),  # and binds tighter than or
    ("nothing", []),
])
def test_expressions(expression: str, chosen: list[str]) -> None:
    assert _chosen(expression) == chosen


@pytest.mark.parametrize(("expression", "message"), [
    ("ok and", "ends too early"),
    ("(ok", "ends too early"),
    ("ok)", "unexpected ')'"),
    ("and ok", "expected a word, got 'and'"),
    ("ok bad", "unexpected 'bad'"),
    ("ok & bad", "unexpected character '&'"),
])
def test_malformed_expressions(expression: str, message: str) -> None:
    with pytest.raises(MechcheckError, match=re.escape(message)) as info:
        Keyword.parse(expression)
    assert info.value.key == "-k" and "-k 'heads and not negligible'" in str(info.value.hint)


def test_outcomes_follow_pytest_strict_xfail() -> None:
    assert [outcome(v, None) for v in ("pass", "fail", "error", "skip")] == [
        "passed", "failed", "failed", "skipped"]
    assert [outcome(v, "why") for v in ("pass", "fail", "error", "skip")] == [
        "xpassed", "xfailed", "failed", "skipped"]
    assert FAILING == {"failed", "xpassed"}


def test_xfail_before_follows_the_checkpoint_order() -> None:
    class Claim:
        xfail = None
        xfail_before = "step20"

    order = ("step5", "step10", "step20", "step40")
    assert [xfail_reason(Claim(), c, order) for c in order] == [
        "expected to fail before step20 (xfail_before)"] * 2 + [None, None]
    assert xfail_before(Claim(), None, (None,)) is None
    assert xfail_before(Claim(), "step5", ("step5",)) is None  # step20 not in the run
