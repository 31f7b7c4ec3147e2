"""Tests of the claim-file loader (mechcheck.spec.loader)."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mechcheck.errors import ClaimSpecError
from mechcheck.spec import claim_name, load_claim_file, parse_claim_text
from mechcheck.spec.schema import (
    COMMON_KEYS,
    ClaimFile,
    ClaimSpec,
    KeySpec,
    as_choice,
    as_components,
    as_number,
    as_positions,
)

COMPONENTS = KeySpec(name="components", expected="a component address or a list of them",
                     parse=as_components, required=True)
KINDS = {
    "necessary": {
        "components": COMPONENTS,
        "ablation": KeySpec(name="ablation", expected="one of zero, mean, resample",
                            parse=as_choice("zero", "mean", "resample"), default="mean"),
        "min_drop": KeySpec(name="min_drop", expected="a number, e.g. 1.5",
                            parse=as_number, required=True),
        "metric": KeySpec(name="metric", expected="a metric such as logprob",
                          parse=as_choice("logprob", "logit_diff", "prob"), required=True),
        "at": KeySpec(name="at", expected="last, a position name or index",
                      parse=as_positions, default=("last",)),
    },
    "attends": {
        "components": COMPONENTS,
        "pattern": KeySpec(name="pattern", expected="one of induction, previous",
                           parse=as_choice("induction", "previous"), required=True),
        "min_score": KeySpec(name="min_score", expected="a number between 0 and 1",
                             parse=as_number, required=True),
    },
}

VALID = """\
model: ../models/induction-2l
data: induction.jsonl
metric: logprob
claims:
  - id: layer1_heads_necessary
    kind: necessary
    components: [blocks.1.attn.head.*]
    ablation: zero
    min_drop: 3.0
  - id: head_1_0_induction
    kind: attends
    components: ["head 1.0"]
    pattern: induction
    min_score: 0.7
"""

PATH = "claims/induction.yaml"


def parse(text: str, path: str = PATH) -> ClaimFile:
    return parse_claim_text(textwrap.dedent(text), path, KINDS)


def whole_file_error(text: str) -> ClaimSpecError:
    result = parse(text)
    assert result.claims == ()
    assert isinstance(result.error, ClaimSpecError)
    assert result.error.path == PATH
    return result.error


def only_claim(text: str) -> ClaimSpec | ClaimSpecError:
    result = parse(text)
    assert result.error is None
    assert len(result.claims) == 1
    return result.claims[0]


def claim_error(text: str) -> ClaimSpecError:
    error = only_claim(text)
    assert isinstance(error, ClaimSpecError)
    assert error.path == PATH
    return error


HEADER = "model: m\nmetric: logprob\nclaims:\n"


# ---------------------------------------------------------------------------
# A valid file


def test_valid_file_gives_specs_with_lines_params_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "induction.yaml"
    path.write_text(VALID)
    result = load_claim_file(path, KINDS)
    assert result.error is None and result.path == str(path)
    assert result.correction == "holm"
    first, second = result.claims
    assert isinstance(first, ClaimSpec) and isinstance(second, ClaimSpec)
    assert (first.id, first.kind, first.line) == ("layer1_heads_necessary", "necessary", 5)
    assert (second.id, second.kind, second.line) == ("head_1_0_induction", "attends", 10)
    for spec in (first, second):
        assert spec.path == str(path)
        assert spec.base_dir == str(tmp_path)
        assert spec.model == "../models/induction-2l"
        assert spec.data == "induction.jsonl"
        assert (spec.alpha, spec.seed, spec.n) == (0.05, 0, None)
        assert spec.test == COMMON_KEYS["test"].default  # the decision rules own the default
        assert spec.correction == "holm" and spec.xfail is None
    assert dict(first.params) == {
        "components": ("blocks.1.attn.head.*",), "ablation": "zero", "min_drop": 3.0,
        "metric": "logprob", "at": ("last",),
    }
    # metric is a file-level default only for kinds that accept it.
    assert dict(second.params) == {
        "components": ("head 1.0",), "pattern": "induction", "min_score": 0.7,
    }
    assert dict(first.key_lines) == {
        "model": 1, "data": 2, "metric": 3, "id": 5, "kind": 6, "components": 7,
        "ablation": 8, "min_drop": 9,
    }
    assert second.line_of("min_score") == 14 and second.line_of("model") == 1
    assert "metric" not in second.key_lines


def test_claim_keys_override_file_defaults_and_base_dir_argument() -> None:
    text = HEADER.replace("model: m", "model: m\nseed: 3\ncorrection: bh\nablation: resample") + (
        "  - {id: a, kind: necessary, components: embed, min_drop: 1, seed: 7, n: 5}\n"
        "  - {id: b, kind: necessary, components: embed, min_drop: 1, ablation: zero}\n"
    )
    result = parse_claim_text(text, "x.yaml", KINDS, base_dir="/data/here")
    a, b = result.claims
    assert result.correction == "bh" and a.correction == "bh"
    assert (a.seed, a.n, b.seed) == (7, 5, 3)
    assert a.params["ablation"] == "resample" and a.key_lines["ablation"] == 4
    assert b.params["ablation"] == "zero" and b.key_lines["ablation"] == 8
    assert a.base_dir == b.base_dir == "/data/here"
    assert a.key_lines["seed"] == 7 and b.key_lines["seed"] == 2


def test_relative_path_gives_absolute_base_dir() -> None:
    spec = parse(VALID).claims[0]
    assert spec.path == PATH
    assert spec.base_dir == os.path.abspath("claims")


def test_merge_key_inside_claims() -> None:
    text = HEADER + (
        "  - &a {id: a, kind: necessary, components: [embed], min_drop: 1.0}\n"
        "  - {<<: *a, id: b, min_drop: 2.0}\n"
    )
    a, b = parse(text).claims
    assert isinstance(b, ClaimSpec), b
    assert (a.params["min_drop"], b.params["min_drop"]) == (1.0, 2.0)
    assert b.id == "b" and b.params["components"] == ("embed",)


# ---------------------------------------------------------------------------
# Whole-file errors


@pytest.mark.parametrize("text, line", [
    ("model: m\nclaims:\n  - id: [a\n", 4),
    ("model: m\nclaims:\n  - id: a\n   kind: b\n", 4),
    ("model: 'm\n", 2),
])
def test_invalid_yaml_reports_line_and_advice(text: str, line: int) -> None:
    error = whole_file_error(text)
    assert error.line == line
    assert "not valid YAML" in error.message and f"line {line}" in error.message
    assert f"check indentation and quoting near line {line}" in error.hint


def test_tabs_get_advice() -> None:
    error = whole_file_error("claims:\n\t- id: a\n")
    assert error.line == 2 and "tabs" in error.hint


def test_deep_nesting_is_an_error() -> None:
    error = whole_file_error("claims: " + "[" * 5000 + "]" * 5000 + "\n")
    assert error.line == 1 and "nested too deeply" in error.message


def test_several_documents_are_rejected() -> None:
    error = whole_file_error("claims: [1]\n---\nclaims: [2]\n")
    assert "single document" in error.message and error.line == 2


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_file(text: str) -> None:
    error = whole_file_error(text)
    assert "empty" in error.message and error.line == 1


@pytest.mark.parametrize("text", ["- id: a\n", "just text\n", "42\n"])
def test_top_level_not_a_mapping(text: str) -> None:
    error = whole_file_error(text)
    assert "must be a mapping" in error.message and error.line == 1


def test_missing_claims() -> None:
    error = whole_file_error("model: m\ndata: d.jsonl\n")
    assert error.key == "claims" and error.line == 1
    assert "no `claims:` list" in error.message and "- id:" in error.hint


@pytest.mark.parametrize("text, message", [
    ("model: m\nclaims: []\n", "empty"),
    ("model: m\nclaims:\n", "empty"),
    ("model: m\nclaims: {id: a}\n", "must be a list"),
    ("model: m\nclaims: some text\n", "must be a list"),
])
def test_claims_empty_or_not_a_list(text: str, message: str) -> None:
    error = whole_file_error(text)
    assert error.key == "claims" and error.line == 2 and message in error.message


@pytest.mark.parametrize("text, key, line, reason, expected", [
    ("model: m\nalpha: 0.9\nclaims: [1]\n", "alpha", 2, "0.9", "between 0 and 0.5"),
    ("model: m\nn: 0\nclaims: [1]\n", "n", 2, "at least 2 prompts", "at least 2"),
    ("model: m\n\ncorrection: bonferroni\nclaims: [1]\n", "correction", 3, "bonferroni",
     "holm, bh, none"),
    ("model: [1, 2]\nclaims: [1]\n", "model", 1, "[1, 2]", "hf:<repo id>"),
    ("model: m\nseed: 1.5\nclaims: [1]\n", "seed", 2, "1.5", "an integer"),
])
def test_bad_file_level_value(text: str, key: str, line: int, reason: str,
                              expected: str) -> None:
    error = whole_file_error(text)
    assert (error.key, error.line, error.claim_id) == (key, line, None)
    assert error.message.startswith(f"{key}: ") and reason in error.message
    assert expected in error.hint


def test_unknown_top_level_key_suggests_close_ones() -> None:
    error = whole_file_error("modle: m\nclaims: [1]\n")
    assert (error.key, error.line) == ("modle", 1)
    assert "unknown key 'modle'" in error.message
    assert "did you mean 'model'" in error.hint and "claims" in error.hint


def test_kind_keys_are_allowed_at_top_level_but_not_claim_only_keys() -> None:
    assert parse("min_drop: 1\nclaims: [1]\n").error is None
    assert parse("ablation: zero\nclaims: [1]\n").error is None
    error = whole_file_error("model: m\nxfail: not yet\nclaims: [1]\n")
    assert error.key == "xfail" and error.line == 2


def test_duplicate_top_level_key() -> None:
    error = whole_file_error("model: a\ndata: d\nmodel: b\nclaims: [1]\n")
    assert (error.key, error.line) == ("model", 3)
    assert "duplicate key 'model'" in error.message and "line 1" in error.message


def test_python_tag_at_top_level_is_rejected() -> None:
    error = whole_file_error("model: !!python/object/apply:os.system ['echo hi']\nclaims: [1]\n")
    assert (error.key, error.line) == ("model", 1)
    assert "!!python/object/apply:os.system" in error.message and "not allowed" in error.message


def test_missing_file_is_an_error_not_an_exception(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    result = load_claim_file(path, KINDS)
    assert result.claims == () and isinstance(result.error, ClaimSpecError)
    assert result.path == str(path) and result.error.path == str(path)
    assert "cannot read" in result.error.message


def test_undecodable_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"claims:\n  - id: \xff\xfe\n")
    result = load_claim_file(str(path), KINDS)
    assert isinstance(result.error, ClaimSpecError) and "UTF-8" in result.error.hint


# ---------------------------------------------------------------------------
# Claim errors


def test_python_object_tag_in_a_claim_is_rejected(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    error = claim_error(HEADER + (
        "  - id: evil\n"
        "    kind: necessary\n"
        f"    components: !!python/object/apply:os.system ['touch {marker}']\n"
        "    min_drop: 1\n"
    ))
    assert (error.line, error.claim_id, error.key) == (6, "evil", "components")
    assert "!!python/object/apply:os.system" in error.message and "tag" in error.hint
    assert not marker.exists()


def test_tagged_claim_entry_is_rejected() -> None:
    error = claim_error(HEADER + "  - !!python/object/apply:os.system ['echo hi']\n")
    assert error.line == 4 and error.claim_id == "claim[0]" and "not allowed" in error.message


def test_unquoted_dotted_address_gets_quote_advice() -> None:
    error = claim_error(HEADER + (
        "  - id: head_5_10\n"
        "    kind: necessary\n"
        "    min_drop: 1\n"
        "    components: [5.10]\n"
    ))
    assert (error.line, error.claim_id, error.key) == (7, "head_5_10", "components")
    assert error.message.startswith("components: ")
    assert "quote" in error.message and '"head 5.10"' in error.message
    assert error.hint == f"expected {COMPONENTS.expected}"


def test_bad_value_from_file_default_reports_the_header_line() -> None:
    error = claim_error(
        "model: m\nmetric: accuracy\nclaims:\n"
        "  - {id: a, kind: necessary, components: embed, min_drop: 1}\n"
    )
    assert (error.line, error.claim_id, error.key) == (2, "a", "metric")
    assert "accuracy" in error.message and "logprob" in error.hint


@pytest.mark.parametrize("n", [0, 1, -3])
def test_n_must_be_at_least_two_in_a_claim(n: int) -> None:
    error = claim_error(
        HEADER + f"  - {{id: a, kind: necessary, components: embed, min_drop: 1, n: {n}}}\n")
    assert (error.key, error.line, error.claim_id) == ("n", 4, "a")
    assert error.message == f"n: got {n}; the decision rules need at least 2 prompts"
    assert error.hint == "expected an integer of at least 2: use the first n rows"
    spec = only_claim(HEADER + "  - {id: a, kind: necessary, components: embed, min_drop: 1, "
                      "n: 2}\n")
    assert isinstance(spec, ClaimSpec) and spec.n == 2


def test_one_bad_claim_does_not_hide_a_good_one() -> None:
    result = parse(HEADER + (
        "  - id: bad\n"
        "    kind: necessary\n"
        "    components: embed\n"
        "    min_drop: lots\n"
        "  - id: good\n"
        "    kind: necessary\n"
        "    components: embed\n"
        "    min_drop: 2\n"
    ))
    bad, good = result.claims
    assert isinstance(bad, ClaimSpecError) and isinstance(good, ClaimSpec)
    assert (bad.line, bad.claim_id, bad.key) == (7, "bad", "min_drop")
    assert bad.message == "min_drop: got 'lots'" and bad.hint == "expected a number, e.g. 1.5"
    assert good.id == "good" and good.line == 8


def test_claim_not_a_mapping() -> None:
    result = parse(HEADER + "  - just a string\n  - [a, list]\n")
    first, second = result.claims
    assert (first.line, first.claim_id, first.path) == (4, "claim[0]", PATH)
    assert second.claim_id == "claim[1]"
    assert second.line == 5 and "must be a mapping" in second.message


def test_claim_without_id_keeps_its_line_and_gets_a_name() -> None:
    result = parse(HEADER + (
        "  - {id: a, kind: necessary, components: embed, min_drop: 1}\n"
        "  - kind: necessary\n"
        "    components: embed\n"
        "    min_drop: 1\n"
    ))
    good, error = result.claims
    assert isinstance(error, ClaimSpecError)
    # An error without an id is labelled with the name the claim is reported under.
    assert (error.line, error.claim_id, error.key) == (5, "claim[1]", "id")
    assert "no id" in error.message and "id:" in error.hint
    assert claim_name(error, 1) == "claim[1]"
    assert claim_name(good, 0) == "a"


def test_claim_name_of_an_error_with_an_id() -> None:
    error = ClaimSpecError("x", claim_id="head_1")
    assert claim_name(error, 3) == "head_1"


def test_duplicate_ids_name_the_first_line() -> None:
    result = parse(HEADER + (
        "  - {id: a, kind: necessary, components: embed, min_drop: 1}\n"
        "  - {id: b, kind: necessary, components: embed, min_drop: 1}\n"
        "  - id: a\n"
        "    kind: necessary\n"
    ))
    first, second, third = result.claims
    assert isinstance(first, ClaimSpec) and isinstance(second, ClaimSpec)
    assert isinstance(third, ClaimSpecError)
    assert (third.line, third.claim_id, third.key) == (6, "a", "id")
    assert "duplicate id 'a'" in third.message and "line 4" in third.message


def test_duplicate_key_in_a_claim() -> None:
    error = claim_error(HEADER + (
        "  - id: a\n"
        "    kind: necessary\n"
        "    min_drop: 1\n"
        "    components: embed\n"
        "    min_drop: 2\n"
    ))
    assert (error.line, error.claim_id, error.key) == (8, "a", "min_drop")
    assert "duplicate key 'min_drop'" in error.message and "line 6" in error.message


def test_duplicate_key_in_a_nested_mapping() -> None:
    error = claim_error(HEADER + (
        "  - id: a\n"
        "    kind: necessary\n"
        "    components: embed\n"
        "    min_drop: 1\n"
        "    description: {x: 1, x: 2}\n"
    ))
    assert (error.line, error.claim_id, error.key) == (8, "a", "description")
    assert "duplicate key 'x'" in error.message


@pytest.mark.parametrize("claim, message, hint", [
    ("{id: a, components: embed}", "no kind", "registered kinds: attends, necessary"),
    ("{id: a, kind: necesary}", "unknown kind 'necesary'", "did you mean 'necessary'"),
    ("{id: a, kind: [necessary]}", "kind: got", "claim kind"),
])
def test_missing_or_unknown_kind(claim: str, message: str, hint: str) -> None:
    error = claim_error(HEADER + f"  - {claim}\n")
    assert (error.line, error.claim_id, error.key) == (4, "a", "kind")
    assert message in error.message and hint in error.hint


def test_unknown_claim_key_suggests_and_lists_accepted_keys() -> None:
    error = claim_error(HEADER + (
        "  - id: a\n"
        "    kind: necessary\n"
        "    components: embed\n"
        "    min_dorp: 3.0\n"
    ))
    assert (error.line, error.claim_id, error.key) == (7, "a", "min_dorp")
    assert "unknown key 'min_dorp'" in error.message
    assert "did you mean 'min_drop'" in error.hint
    assert "necessary claims accept" in error.hint and "ablation" in error.hint
    assert "pattern" not in error.hint


def test_key_of_another_kind_is_unknown() -> None:
    error = claim_error(HEADER + "  - {id: a, kind: attends, components: embed, min_drop: 1}\n")
    assert error.key == "min_drop" and "attends claims accept" in str(error)


@pytest.mark.parametrize("claim, kind, key", [
    ("{id: a, kind: necessary, components: embed}", "necessary", "min_drop"),
    ("{id: a, kind: attends, components: embed, min_score: 1}", "attends", "pattern"),
])
def test_missing_required_key(claim: str, kind: str, key: str) -> None:
    error = claim_error(HEADER + f"  - {claim}\n")
    assert (error.line, error.claim_id, error.key) == (4, "a", key)
    assert f"missing required key '{key}'" in error.message
    assert f"`{key}:`" in error.hint and KINDS[kind][key].expected in error.hint


def test_required_model_can_come_from_the_claim() -> None:
    claim = "{id: %s, kind: attends, components: embed, pattern: induction, min_score: 1%s}"
    text = f"claims:\n  - {claim % ('a', ', model: m')}\n  - {claim % ('b', '')}\n"
    a, b = parse(text).claims
    assert isinstance(a, ClaimSpec) and a.model == "m"
    assert isinstance(b, ClaimSpecError) and b.key == "model" and b.line == 3


def test_recursive_alias_is_an_error() -> None:
    error = claim_error(HEADER + "  - {id: a, kind: necessary, components: &c [*c], min_drop: 1}\n")
    assert error.claim_id == "a" and error.key == "components" and error.line == 4


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ["claims:", "  - description: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"  - description: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]"
              for i in range(1, 9)]
    start = time.perf_counter()
    result = parse("\n".join(lines) + "\n")
    assert time.perf_counter() - start < 2.0
    assert result.error is None
    assert all(isinstance(claim, ClaimSpecError) for claim in result.claims)
    last = result.claims[-1]
    # The line is where the first over-large value (&a4) was written.
    assert (f"  {PATH}:6: key 'description': the value expands to more than 100000 items"
            in last.message.splitlines())


# ---------------------------------------------------------------------------
# Robustness


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_arbitrary_text_never_raises(text: str) -> None:
    result = parse_claim_text(text, "fuzz.yaml", KINDS)
    assert isinstance(result, ClaimFile)
    for claim in result.claims:
        assert isinstance(claim, (ClaimSpec, ClaimSpecError))


FRAGMENTS = [
    "model: m", "metric: logprob", "claims:", "  - id: a", "  - id: a", "    kind: necessary",
    "    kind: attends", "    components: [5.10]", "    components: ['head 1.0']",
    "    min_drop: 2", "    min_dorp: 2", "    pattern: induction", "    min_score: 0.5",
    "  - &x {id: b, kind: necessary}", "  - *x", "  - {<<: *x, id: c}", "    <<: *x",
    "    at: !!python/object:os.system", "  - !!binary aGk=", "n: 0", "    n: -1",
    "    description: {a: 1, a: 2}", "alpha: .nan", "    seed: !!int 0x_", "  - [", "  -",
    "    components: !!timestamp x", "correction: bh", "    ablation: zero", "\t",
    "    at: [last, 3, 1.5]", "? [a]\n: b", "    : x", "    ~: 1", "    = : 2",
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=14))
def test_yaml_like_text_never_raises(lines: list[str]) -> None:
    result = parse_claim_text("\n".join(lines) + "\n", "fuzz.yaml", KINDS)
    assert isinstance(result, ClaimFile)
    assert (result.error is None) or result.claims == ()
    for claim in result.claims:
        assert isinstance(claim, (ClaimSpec, ClaimSpecError))
        if isinstance(claim, ClaimSpecError):
            assert claim.path == "fuzz.yaml" and isinstance(claim.line, int)


# ---------------------------------------------------------------------------
# The prompts: data: or task:, from the file or the claim


def test_claim_task_replaces_the_file_data_and_claim_data_the_file_task() -> None:
    parsed = parse(
        "model: m\nmetric: logprob\ndata: rows.jsonl\nclaims:\n"
        "  - {id: from_file, kind: necessary, components: embed, min_drop: 1}\n"
        "  - {id: generated, kind: necessary, components: embed, min_drop: 1,\n"
        "     task: {name: induction, n: 20, seed: 1}}\n")
    from_file, generated = parsed.claims
    assert isinstance(from_file, ClaimSpec) and isinstance(generated, ClaimSpec)
    assert from_file.data is not None and from_file.task is None
    assert generated.data is None and generated.task == {"name": "induction", "n": 20, "seed": 1}
    parsed = parse(
        "model: m\nmetric: logprob\ntask: {name: ioi}\nclaims:\n"
        "  - {id: own_rows, kind: necessary, components: embed, min_drop: 1, data: r.jsonl}\n")
    (own_rows,) = parsed.claims
    assert isinstance(own_rows, ClaimSpec)
    assert own_rows.task is None and own_rows.data is not None


def test_claim_with_both_data_and_task_is_an_error_at_its_line() -> None:
    error = claim_error(HEADER + "  - id: both\n    kind: necessary\n    components: embed\n"
                        "    min_drop: 1\n    data: r.jsonl\n    task: {name: ioi}\n")
    assert (error.key, error.line, error.claim_id) == ("task", 9, "both")
    assert "both data: and task:" in error.message and "give one" in (error.hint or "")


# ---------------------------------------------------------------------------
# Bounded: aliases and merge keys are expanded in linear time and counted


def _timed_parse(text: str) -> ClaimFile:
    start = time.perf_counter()
    result = parse(text)
    assert time.perf_counter() - start < 2.0, "the loader must refuse a bomb at once"
    return result


def _merge_bomb(depth: int, copies: int = 8, *, where: str = "claim") -> str:
    """Each level merges the one before ``copies`` times: as written out, level k has
    ``copies ** k`` entries, though only k + 2 distinct keys."""
    lines = ["model: m", "metric: logprob", "claims:", "  - &m0 {k0: 1, k1: 2}"]
    for i in range(1, depth):
        merges = ", ".join([f"*m{i - 1}"] * copies)
        lines.append(f"  - &m{i} {{<<: [{merges}], x{i}: 1}}")
    last = f"*m{depth - 1}"
    if where == "claim":
        lines.append(f"  - {{<<: {last}, id: boom, kind: necessary}}")
    else:
        lines.append(f"  - {{id: boom, kind: necessary, description: {{<<: {last}}}}}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("where, key", [("claim", "<<"), ("value", "description")])
def test_merge_bomb_is_refused_at_once_as_a_located_error(where: str, key: str) -> None:
    text = _merge_bomb(16, where=where)  # 8 ** 15 entries as written out
    assert len(text) < 1200
    result = _timed_parse(text)
    assert result.error is None
    boom = result.claims[-1]
    assert isinstance(boom, ClaimSpecError)
    assert boom.path == PATH and boom.key == key
    assert "the merge keys ('<<') of this mapping expand to more than 100000 entries" in str(boom)
    # The mapping whose merges first exceed the limit: 8 ** 6 > 100000 at level 6.
    assert boom.line == 10 and "merge each anchored mapping once" in str(boom)


def test_modest_merges_are_counted_but_allowed() -> None:
    text = HEADER + (
        "  - &a {id: a, kind: necessary, components: [embed], min_drop: 1.0, ablation: zero}\n"
        "  - &b {id: b, kind: necessary, components: [embed], min_drop: 2.0, at: 3}\n"
        "  - {<<: [*b, *a], id: c}\n"
    )
    a, b, c = parse(text).claims
    assert isinstance(c, ClaimSpec), c
    # Earlier merge sources win, as YAML specifies.
    assert c.params["min_drop"] == 2.0 and c.params["ablation"] == "zero"
    assert c.params["at"] == (3,)


@pytest.mark.parametrize("anchor", ["&r {<<: *r}", "&r {id: r, description: {<<: *r}}"])
def test_recursive_merge_is_an_error(anchor: str) -> None:
    result = _timed_parse(HEADER + f"  - {anchor}\n")
    (error,) = result.claims
    assert isinstance(error, ClaimSpecError) and error.line == 4
    assert "refers to the" in str(error) and "recursive alias" in str(error)


def test_billion_laughs_of_mappings_is_refused_at_once() -> None:
    lines = ["model: m", "metric: logprob", "claims:", "  - &l0 {a: lol, b: lol, c: lol}"]
    for i in range(1, 12):
        keys = ", ".join(f"k{j}: *l{i - 1}" for j in range(9))
        lines.append(f"  - &l{i} {{{keys}}}")
    lines.append("  - {id: laughs, kind: necessary, components: embed, min_drop: 1, "
                 "description: *l11}")
    result = _timed_parse("\n".join(lines) + "\n")
    laughs = result.claims[-1]
    assert isinstance(laughs, ClaimSpecError) and laughs.key == "description"
    assert laughs.claim_id == "laughs"
    assert laughs.message == "the value expands to more than 100000 items"
    assert laughs.line == 9  # &l5: 4 * 9 ** 5 > 100000


def test_a_large_value_used_by_many_claims_is_counted_each_time() -> None:
    # 90,001 items, under the limit of one value, used by 20 claims: 1.8 million items.
    lines = ["model: m", "metric: logprob", "claims:",
             "  - &s0 [head 0.0, head 0.0, head 0.0, head 0.0, head 0.0, head 0.0, head 0.0,"
             " head 0.0, head 0.0, head 0.0]"]
    lines += [f"  - &s{i} [{', '.join([f'*s{i - 1}'] * 10)}]" for i in range(1, 4)]
    lines.append("  - &big [*s3, *s3, *s3, *s3, *s3, *s3, *s3, *s3, *s3]")
    lines += [f"  - {{id: c{i}, kind: necessary, components: *big, min_drop: 1}}"
              for i in range(20)]
    result = _timed_parse("\n".join(lines) + "\n")
    assert result.claims == () and isinstance(result.error, ClaimSpecError)
    assert result.error.path == PATH and result.error.key == "components"
    assert "the claim file expands to more than 1000000 items" in result.error.message
    assert result.error.line is not None and result.error.line > 8
    assert "split the file" in (result.error.hint or "")


def test_a_shared_value_is_parsed_once_however_many_claims_use_it() -> None:
    calls: list[int] = []

    def counted(value: object) -> tuple[str, ...]:
        calls.append(1)
        return as_components(value)

    kinds = {"necessary": {**KINDS["necessary"], "components": KeySpec(
        name="components", expected="addresses", parse=counted, required=True)}}
    lines = ["model: m", "metric: logprob", "components: &all ["
             + ", ".join(f'"head 0.{h}"' for h in range(500)) + "]", "claims:"]
    lines += [f"  - {{id: c{i}, kind: necessary, components: *all, min_drop: 1}}"
              for i in range(100)]
    lines += [f"  - {{id: d{i}, kind: necessary, min_drop: 1}}" for i in range(100)]
    lines.append("  - {id: own, kind: necessary, components: [embed], min_drop: 1}")
    result = parse_claim_text("\n".join(lines) + "\n", PATH, kinds)
    assert result.error is None and len(result.claims) == 201
    assert all(isinstance(c, ClaimSpec) for c in result.claims)
    assert [len(c.params["components"]) for c in result.claims] == [500] * 200 + [1]
    assert len(calls) == 2  # the shared list once, the last claim's own list once


# ---------------------------------------------------------------------------
# Numbers, seeds and counts are checked when the file is read


def _real_kinds() -> dict:
    from mechcheck.plugins import Registry

    return Registry.from_plugins().kind_keys()


REAL = {
    "min_drop": "{id: c, kind: necessary, components: embed, metric: logprob, "
                "ablation: zero, min_drop: %s}",
    "margin": "{id: c, kind: negligible, components: embed, metric: logprob, "
              "ablation: zero, margin: %s}",
    "min_recovery": "{id: c, kind: sufficient, components: embed, metric: logprob, "
                    "min_recovery: %s}",
    "min_score": "{id: c, kind: attends, components: ['head 0.0'], pattern: induction, "
                 "min_score: %s}",
    "alpha": "{id: c, kind: attends, components: ['head 0.0'], pattern: induction, "
             "min_score: 0.5, alpha: %s}",
}


@pytest.mark.parametrize("value, shown", [(".nan", ".nan"), (".NaN", ".nan"),
                                          (".inf", ".inf"), ("-.inf", "-.inf")])
@pytest.mark.parametrize("key", sorted(REAL))
def test_non_finite_thresholds_are_load_time_errors(key: str, value: str, shown: str) -> None:
    text = "model: m\ndata: d.jsonl\nclaims:\n  - " + REAL[key] % value + "\n"
    (error,) = parse_claim_text(text, PATH, _real_kinds()).claims
    assert isinstance(error, ClaimSpecError)
    assert (error.key, error.line, error.claim_id) == (key, 4, "c")
    assert error.message == f"{key}: got {shown}, which is not a finite number"
    assert error.hint and error.hint.startswith("expected ")


@pytest.mark.parametrize("key", sorted(REAL))
def test_finite_thresholds_of_every_numeric_key_load(key: str) -> None:
    text = "model: m\ndata: d.jsonl\nclaims:\n  - " + REAL[key] % "0.25" + "\n"
    (spec,) = parse_claim_text(text, PATH, _real_kinds()).claims
    assert isinstance(spec, ClaimSpec), spec
    value = spec.alpha if key == "alpha" else spec.params[key]
    assert value == 0.25


def test_non_finite_default_is_reported_at_the_file_line() -> None:
    text = "model: m\ndata: d.jsonl\nmin_drop: .nan\nclaims:\n  - " + REAL["min_drop"].replace(
        ", min_drop: %s", "") + "\n"
    (error,) = parse_claim_text(text, PATH, _real_kinds()).claims
    assert isinstance(error, ClaimSpecError)
    assert (error.key, error.line) == ("min_drop", 3) and "not a finite number" in error.message


@pytest.mark.parametrize("value, reason", [
    ("nan%", "not a finite percentage"), ("inf%", "not a finite percentage"),
    ("-inf%", "not a finite percentage"), ("NaN %", "not a finite percentage"),
    ("lots%", "got 'lots%'"), ("40", "got '40'"),
])
def test_percentages_must_be_finite(value: str, reason: str) -> None:
    from mechcheck.spec.schema import as_number_or_percent

    with pytest.raises(ValueError, match=reason):
        as_number_or_percent(value)


def test_finite_percentages_and_numbers_pass() -> None:
    from mechcheck.spec.schema import as_number_or_percent

    assert as_number_or_percent(" 40% ") == "40%"
    assert as_number_or_percent("-2.5%") == "-2.5%"
    assert as_number_or_percent(3) == 3.0
    with pytest.raises(ValueError, match="not a finite number"):
        as_number_or_percent(float("nan"))


@pytest.mark.parametrize("value", ["0", "0.0", "0.5", "-0.05", "1", "'0.05'", "true", ".nan",
                                   ".inf", "[0.05]"])
def test_alpha_outside_zero_to_half_is_an_error(value: str) -> None:
    error = claim_error(HEADER + "  - {id: a, kind: necessary, components: embed, "
                        f"min_drop: 1, alpha: {value}}}\n")
    assert (error.key, error.line, error.claim_id) == ("alpha", 4, "a")
    assert error.message.startswith("alpha: got ")
    assert error.hint == "expected a number between 0 and 0.5, e.g. 0.05"


@pytest.mark.parametrize("value", ["1.0e-6", "0.05", "0.4999"])
def test_alpha_inside_zero_to_half_loads(value: str) -> None:
    spec = only_claim(HEADER + "  - {id: a, kind: necessary, components: embed, "
                      f"min_drop: 1, alpha: {value}}}\n")
    assert isinstance(spec, ClaimSpec) and spec.alpha == float(value)


@pytest.mark.parametrize("where", ["file", "claim"])
def test_negative_seed_is_an_error(where: str) -> None:
    if where == "file":
        error = whole_file_error("model: m\nseed: -1\nclaims: [1]\n")
        line = 2
    else:
        error = claim_error(HEADER + "  - {id: a, kind: necessary, components: embed, "
                            "min_drop: 1, seed: -1}\n")
        line = 4
    assert (error.key, error.line) == ("seed", line)
    assert error.message == "seed: got -1; a seed must be 0 or more"
    assert error.hint == "expected an integer of 0 or more, e.g. 0"


def test_seed_zero_and_large_seeds_load() -> None:
    spec = only_claim(HEADER + "  - {id: a, kind: necessary, components: embed, "
                      "min_drop: 1, seed: 123456789012}\n")
    assert isinstance(spec, ClaimSpec) and spec.seed == 123456789012


@pytest.mark.parametrize("task, reason", [
    ("{name: ioi, n: 1}", "n must be at least 2"),
    ("{name: ioi, n: 0}", "n must be at least 2"),
    ("{name: ioi, seed: -1}", "seed must be 0 or more, got -1"),
    ("{name: ioi, n: 2.5}", "n must be an integer, got 2.5"),
    ("{name: ioi, seed: true}", "seed must be an integer, got True"),
    ("{n: 20}", "the task has no name"),
    ("{name: '  '}", "the task has no name"),
    ("ioi", "got 'ioi'"),
])
def test_bad_task_counts_and_seeds(task: str, reason: str) -> None:
    error = claim_error(HEADER + "  - id: a\n    kind: necessary\n    components: embed\n"
                        f"    min_drop: 1\n    task: {task}\n")
    assert (error.key, error.line, error.claim_id) == ("task", 8, "a")
    assert error.message.startswith("task: ") and reason in error.message
    assert "n at least 2, seed 0 or more" in (error.hint or "")


def test_bad_file_level_task_is_a_file_error() -> None:
    error = whole_file_error("model: m\ntask: {name: ioi, n: 1, seed: 0}\nclaims: [1]\n")
    assert (error.key, error.line) == ("task", 2) and "n must be at least 2" in error.message


# ---------------------------------------------------------------------------
# Ids cannot look like the names mechcheck makes up


@pytest.mark.parametrize("claim_id, chars", [
    ("a@line5", "'@'"), ("claim[1]", "'[' and ']'"), ("a[step1]", "'[' and ']'"),
    ("x@y", "'@'"),
])
def test_ids_with_reserved_characters_are_errors(claim_id: str, chars: str) -> None:
    error = claim_error(HEADER + f"  - {{id: '{claim_id}', kind: necessary, "
                        "components: embed, min_drop: 1}\n")
    assert (error.key, error.line) == ("id", 4)
    assert error.message.startswith(f"id '{claim_id}' contains {chars}:")
    assert "<id>@line<N>" in error.message and "claim[<index>]" in error.message
    assert error.hint and "letters, digits" in error.hint
    # The error is not labelled with the id, so its name cannot equal a made-up one.
    assert error.claim_id == "claim[0]" and claim_name(error, 0) == "claim[0]"


def test_an_id_like_a_made_up_name_cannot_hide_a_duplicate() -> None:
    claim = "{id: %s, kind: necessary, components: embed, min_drop: 1}"
    result = parse(HEADER + f"  - {claim % 'a'}\n  - {claim % 'a'}\n"
                   f"  - {claim % repr('a@line5')}\n  - {claim % repr('claim[4]')}\n"
                   "  - {kind: necessary, components: embed, min_drop: 1}\n")
    first, second, third, fourth, fifth = result.claims
    assert isinstance(first, ClaimSpec)
    assert isinstance(second, ClaimSpecError) and "duplicate id 'a'" in second.message
    assert isinstance(third, ClaimSpecError) and "contains '@'" in third.message
    assert isinstance(fourth, ClaimSpecError) and "contains '[' and ']'" in fourth.message
    assert isinstance(fifth, ClaimSpecError) and "no id" in fifth.message
    names = [claim_name(c, i) for i, c in enumerate(result.claims)]
    assert names == ["a", "a", "claim[2]", "claim[3]", "claim[4]"]
    # The names the plugin adds for repeats (<id>@line<N>) are then unique.
    assert len({f"{n}@line{c.line}" for n, c in zip(names, result.claims)}) == 5


# ---------------------------------------------------------------------------
# Every problem of a claim in one run


def test_every_problem_of_a_claim_is_reported_together() -> None:
    error = claim_error(HEADER + (
        "  - id: many\n"             # 4
        "    kind: necessary\n"      # 5
        "    components: [5.10]\n"   # 6
        "    alpha: 0.9\n"           # 7
        "    colour: red\n"          # 8
        "    seed: -2\n"             # 9
        "    description: {x: 1, x: 2}\n"  # 10
    ))
    assert (error.line, error.claim_id, error.key) == (6, "many", "components")
    lines = error.message.splitlines()
    assert lines[0] == "6 problems in this claim:"
    listed = [line for line in lines if line.startswith(f"  {PATH}:")]
    # Keys in line order, then the missing key (at the claim's line).
    assert [line.split(": ", 2)[0] + ": " + line.split(": ", 2)[1] for line in listed] == [
        f"  {PATH}:{line}: key '{key}'" for line, key in [
            (6, "components"), (7, "alpha"), (8, "colour"), (9, "seed"), (10, "description"),
            (4, "min_drop")]
    ]
    text = str(error)
    for part in ("quote", "alpha: got 0.9, which is not between 0 and 0.5",
                 "unknown key 'colour'", "necessary claims accept",
                 "seed: got -2; a seed must be 0 or more", "duplicate key 'x'",
                 "missing required key 'min_drop'"):
        assert part in text
    assert text.count("    fix: ") == 6
    assert error.hint == "fix each problem listed above"


def test_problems_are_ordered_id_kind_keys_then_missing() -> None:
    error = claim_error(HEADER + "  - {id: 'bad[0]', kind: necesary, n: 1}\n")
    listed = [line for line in error.message.splitlines() if line.startswith(f"  {PATH}:")]
    assert len(listed) == 3
    assert "key 'id'" in listed[0] and "key 'kind'" in listed[1] and "key 'n'" in listed[2]
    # With an unknown kind only the common keys can be checked: nothing is "missing".
    assert "missing" not in error.message


def test_a_typo_is_not_also_reported_as_a_missing_key() -> None:
    error = claim_error(HEADER + "  - {id: a, kind: necessary, components: embed, "
                        "min_dorp: 1}\n")
    assert error.message == "unknown key 'min_dorp'"


def test_many_problems_are_listed_up_to_a_limit() -> None:
    keys = ", ".join(f"bogus{i}: 1" for i in range(30))
    error = claim_error(HEADER + f"  - {{id: a, kind: necessary, components: embed, "
                        f"min_drop: 1, {keys}}}\n")
    lines = error.message.splitlines()
    assert lines[0] == "30 problems in this claim:"
    assert sum(line.startswith(f"  {PATH}:4: key 'bogus") for line in lines) == 20
    assert lines[-1] == "  ... and 10 more"


def test_problems_in_inherited_defaults_are_listed_with_the_claim_s() -> None:
    error = claim_error("model: m\nmetric: accuracy\nclaims:\n"
                        "  - {id: a, kind: necessary, components: embed, min_drop: .inf}\n")
    assert (error.key, error.line) == ("metric", 2)
    assert f"  {PATH}:2: key 'metric': metric: got 'accuracy'" in error.message
    assert f"  {PATH}:4: key 'min_drop': min_drop: got .inf" in error.message


def test_an_unknown_key_with_an_unusable_value_is_one_problem() -> None:
    error = claim_error(HEADER + "  - {id: a, kind: necessary, components: embed, min_drop: 1,"
                        " colour: !!python/name:os.system ''}\n")
    assert (error.key, error.line) == ("colour", 4)
    assert error.message == "unknown key 'colour'"


def test_a_huge_claim_file_is_refused_before_it_is_read() -> None:
    claim = "  - {id: c%d, kind: necessary, components: embed, min_drop: 1}\n"
    text = HEADER + "".join(claim % i for i in range(20_000))
    assert len(text) > 1_000_000
    start = time.perf_counter()
    error = whole_file_error(text)
    assert time.perf_counter() - start < 2.0 and error.line == 1
    assert error.message == (f"the claim file is {len(text):,} characters long, more than "
                             "the limit of 1,000,000")
    assert "split it into several claim files" in (error.hint or "")


# ---------------------------------------------------------------------------
# The model's identity, parsed once into spec.source


def test_each_claim_carries_its_parsed_model_source() -> None:
    from mechcheck.models.source import ModelSource

    result = parse_claim_text(VALID.replace("../models/induction-2l", "hf:gpt2@main")
                              .replace("    min_score: 0.7",
                                       "    min_score: 0.7\n    model: /abs/folder"),
                              PATH, KINDS, base_dir="/base")
    first, second = result.claims
    assert first.model == "hf:gpt2@main"  # as written, for reports
    assert first.source == ModelSource(kind="hf", name="gpt2", revision="main")
    assert second.source == ModelSource(kind="folder", name=str(Path("/abs/folder").resolve()))
    on_step = first.at_checkpoint("step9")
    assert (on_step.model, on_step.checkpoint, on_step.source) == (
        "hf:gpt2@step9", "step9", ModelSource(kind="hf", name="gpt2", revision="step9"))
    assert first.at_checkpoint(None) is first


@pytest.mark.parametrize("model, message", [("hf:", "'hf:' names no model"),
                                            ("gguf:@x", "'gguf:@x' names no file")])
def test_a_model_value_that_does_not_parse_is_an_error_of_its_claim_at_model(
        tmp_path: Path, model: str, message: str) -> None:
    from mechcheck.errors import ModelLoadError
    from mechcheck.evaluate import evaluate_file
    from mechcheck.session import Session

    result = parse(VALID.replace("../models/induction-2l", f"'{model}'"))
    spec = result.claims[0]
    assert spec.source is None and isinstance(spec.source_error, ModelLoadError)
    assert spec.at_checkpoint("s1").source_error.message.startswith(
        f"'{model.partition('@')[0]}@s1'")
    session = Session(device="cpu")
    records = evaluate_file(result, session)
    assert [r.verdict for r in records] == ["error", "error"]
    # located at the model: key (line 1, a file-level default), with the same message
    assert records[0].message.startswith(
        f"{PATH}:1: claim 'layer1_heads_necessary', key 'model': {message}")
    assert records[0].model == model and records[0].kind == "necessary"


# ---------------------------------------------------------------------------
# The loader takes a mapping: parse_claim_mapping


def _same_but_lines(spec: ClaimSpec, other: ClaimSpec) -> bool:
    from dataclasses import fields

    skip = {"line", "key_lines"}
    return all(getattr(spec, f.name) == getattr(other, f.name)
               for f in fields(ClaimSpec) if f.name not in skip)


def test_a_mapping_parses_as_the_same_file_would_with_every_key_at_one_line() -> None:
    import yaml

    from mechcheck.spec import parse_claim_mapping

    from_text = parse_claim_text(VALID, PATH, KINDS, base_dir="/here")
    mapping = yaml.safe_load(VALID)
    from_mapping = parse_claim_mapping(mapping, PATH, 41, kinds=KINDS, base_dir="/here")
    assert from_mapping.error is None and len(from_mapping.claims) == 2
    assert from_mapping.correction == from_text.correction
    for spec, other in zip(from_mapping.claims, from_text.claims):
        assert _same_but_lines(spec, other)
        assert spec.line == 41 and set(spec.key_lines.values()) == {41}
        assert spec.key_lines.keys() == other.key_lines.keys()


@pytest.mark.parametrize("change, message", [
    (lambda m: m["claims"][0].update(ablation="half"),
     "claims/induction.yaml:41: claim 'layer1_heads_necessary', key 'ablation': "
     "ablation: got 'half'"),
    (lambda m: m["claims"][1].update(min_scor=0.7),
     "claims/induction.yaml:41: claim 'head_1_0_induction', key 'min_scor': "
     "unknown key 'min_scor'"),
    (lambda m: m["claims"][0].update(components={"head 0.0"}),
     "claims/induction.yaml:41: claim 'layer1_heads_necessary', key 'components': "
     "cannot read {'head 0.0'} in a claim: a builtins.set is not a plain value"),
    (lambda m: m["claims"].__setitem__(1, "oops"),
     "claims/induction.yaml:41: claim 'claim[1]': each entry of claims: must be a mapping"),
])
def test_a_bad_claim_in_a_mapping_is_its_own_error_at_the_line(change: Any,
                                                                message: str) -> None:
    import yaml

    from mechcheck.spec import parse_claim_mapping

    mapping = yaml.safe_load(VALID)
    change(mapping)
    result = parse_claim_mapping(mapping, PATH, 41, kinds=KINDS)
    errors = [c for c in result.claims if isinstance(c, ClaimSpecError)]
    assert len(errors) == 1 and len(result.claims) == 2
    assert str(errors[0]).startswith(message), str(errors[0])


@pytest.mark.parametrize("mapping, message", [
    ({"model": "m"}, "x.py:3: key 'claims': the file has no `claims:` list"),
    ({"claims": []}, "x.py:3: key 'claims': claims: the list is empty"),
    ({"claims": {"id": "a"}}, "x.py:3: key 'claims': claims: must be a list of claims"),
    ({"claims": [{}], "corection": "bh"}, "x.py:3: key 'corection': unknown key 'corection'"),
    ({"claims": [{}], "correction": "most"}, "x.py:3: key 'correction': correction: got "
     "'most'"),
    (["not", "a", "mapping"], "x.py:3: the top level of a claim file must be a mapping"),
])
def test_a_bad_mapping_is_a_whole_file_error_at_the_line(mapping: Any, message: str) -> None:
    from mechcheck.spec import parse_claim_mapping

    result = parse_claim_mapping(mapping, "x.py", 3, kinds=KINDS)
    assert result.claims == () and str(result.error).startswith(message), str(result.error)
