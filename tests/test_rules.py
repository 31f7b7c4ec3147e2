"""Decision rules as registered entries: the built-ins wrap test_greater, ``test:``
accepts any registered name, and the kinds decide through the registry."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mechcheck.errors import ClaimSpecError, MechcheckError
from mechcheck.hookspecs import hookimpl
from mechcheck.plugins import Registry, get_plugin_manager
from mechcheck.rules import BUILTIN_RULES, DecisionRule, decide_greater
from mechcheck.spec.loader import parse_claim_text
from mechcheck.spec.schema import ClaimSpec
from mechcheck.stats import Decision, test_greater

VALUES = np.random.default_rng(1).normal(0.6, 1.0, size=30)


def _claim(test: str) -> ClaimSpec:
    return ClaimSpec(id="c", kind="performs", path="f.yaml", line=1, base_dir=".",
                     model=None, test=test, alpha=0.05, seed=3)


def _always(values: np.ndarray, threshold: float, *, alpha: float, seed: int,
            n_resamples: int) -> Decision:
    return Decision(effect=float(np.median(values)), ci_low=threshold + 1, ci_high=9.0,
                    confidence_level=1 - 2 * alpha, n=values.size, p_value=0.0,
                    threshold=threshold, alternative="greater", method="always",
                    seed=seed, alpha=alpha)


class AlwaysRule:
    @hookimpl
    def mechcheck_decision_rules(self) -> list[DecisionRule]:
        return [DecisionRule(name="always", greater=_always, description="always passes")]


def test_builtin_rules_are_the_tests_of_test_greater() -> None:
    registry = Registry.from_plugins(get_plugin_manager())
    assert list(registry.rules) == ["robust", "t", "wilcoxon", "permutation", "bootstrap"]
    assert [r.name for r in BUILTIN_RULES] == list(registry.rules)
    for name in registry.rules:
        got = decide_greater(registry, _claim(name), VALUES, 0.2, 199)
        assert got == test_greater(VALUES, 0.2, alpha=0.05, test=name, seed=3,  # type: ignore[arg-type]
                                   n_resamples=199)


def test_a_plugin_rule_decides_and_unknown_names_list_the_registered() -> None:
    registry = Registry.from_plugins(get_plugin_manager([AlwaysRule()]))
    assert decide_greater(registry, _claim("always"), VALUES, 5.0, 199).method == "always"
    with pytest.raises(ClaimSpecError, match="unknown test 'alway'") as info:
        decide_greater(registry, _claim("alway"), VALUES, 5.0, 199)
    assert info.value.key == "test"
    assert info.value.hint == ("did you mean always? registered: always, bootstrap, "
                               "permutation, robust, t, wilcoxon")


def test_a_rule_that_returns_no_decision_is_a_clear_error() -> None:
    bad = DecisionRule(name="bad", greater=lambda values, threshold, **kw: 0.5)
    registry = Registry.from_plugins(get_plugin_manager([
        type("P", (), {"mechcheck_decision_rules": hookimpl(lambda self: [bad])})()]))
    with pytest.raises(MechcheckError, match="decision rule 'bad' returned float, not a "
                       "Decision") as info:
        decide_greater(registry, _claim("bad"), VALUES, 0.0, 199)
    assert info.value.key == "test"


TEXT = """\
model: m
data: d.jsonl
test: {file_test}
claims:
  - id: a
    kind: performs
    metric: logprob
    min_value: 1
    test: {claim_test}
"""


def _parse(registry: Registry, file_test: str, claim_test: str) -> Any:
    text = TEXT.format(file_test=file_test, claim_test=claim_test)
    return parse_claim_text(text, "f.yaml", registry.kind_keys(),
                            common=registry.common_keys())


def test_the_loader_accepts_registered_rules_in_test() -> None:
    plain = Registry.from_plugins(get_plugin_manager())
    with_rule = Registry.from_plugins(get_plugin_manager([AlwaysRule()]))
    parsed = _parse(with_rule, "always", "t")
    assert parsed.error is None and parsed.claims[0].test == "t"
    parsed = _parse(with_rule, "t", "always")
    assert parsed.claims[0].test == "always"
    refused = _parse(plain, "t", "always").claims[0]
    assert isinstance(refused, ClaimSpecError) and refused.key == "test"
    assert refused.hint == ("expected one of robust (the default), t, wilcoxon, "
                            "permutation, bootstrap")
    file_level = _parse(plain, "always", "t")
    assert file_level.error is not None and file_level.error.key == "test"
    bad = _parse(with_rule, "t", "sometimes").claims[0]
    assert isinstance(bad, ClaimSpecError)
    assert bad.hint.endswith("permutation, bootstrap (or from plugins: always)")


def test_without_a_registry_the_loader_keeps_the_builtin_rules() -> None:
    registry = Registry.from_plugins(get_plugin_manager([AlwaysRule()]))
    text = TEXT.format(file_test="t", claim_test="always")
    parsed = parse_claim_text(text, "f.yaml", registry.kind_keys())
    assert isinstance(parsed.claims[0], ClaimSpecError)
