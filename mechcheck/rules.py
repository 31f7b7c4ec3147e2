"""Named decision rules for one-sided claims, selectable with the claim key ``test:``.

A :class:`DecisionRule` decides "the per-prompt effect exceeds the threshold" for the
kinds ``necessary``, ``attends`` and ``performs``.  The built-in rules (``robust``,
``t``, ``wilcoxon``, ``permutation``, ``bootstrap``) wrap
:func:`mechcheck.stats.test_greater` and are registered through the hook
``mechcheck_decision_rules`` like a plugin's.  ``negligible`` and ``sufficient`` keep
their own fixed tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mechcheck.errors import MechcheckError

if TYPE_CHECKING:
    from mechcheck.plugins import Registry
    from mechcheck.spec.schema import ClaimSpec
    from mechcheck.stats import Decision, GreaterTest

__all__ = ["BUILTIN_RULES", "DecisionRule", "GreaterRule", "decide_greater"]


class GreaterRule(Protocol):
    """``greater(values, threshold, *, alpha, seed, n_resamples) -> Decision``."""

    def __call__(self, values: np.ndarray, threshold: float, *, alpha: float, seed: int,
                 n_resamples: int) -> Decision: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class DecisionRule:
    """A named one-sided test of H0: effect <= threshold against H1: effect > threshold.

    Attributes:
        name: the name claim files use (``test: robust``).
        greater: ``(values [n], threshold, *, alpha, seed, n_resamples) -> Decision``;
            ``p_value <= alpha`` must mean the claim holds, and ``ci_low``/``ci_high``
            are one-sided ``1 - alpha`` bounds of the effect it tests.  It raises
            ``ValueError`` for values it cannot decide.
        description: one line for docs and ``--mechcheck-plugins``-style listings.
    """

    name: str
    greater: GreaterRule | Callable[..., Decision]
    description: str = ""


def _builtin_greater(test: GreaterTest, values: np.ndarray, threshold: float, *,
                     alpha: float, seed: int, n_resamples: int) -> Decision:
    from mechcheck.stats import test_greater

    return test_greater(values, threshold, alpha=alpha, test=test, seed=seed,
                        n_resamples=n_resamples)


_DESCRIPTIONS: dict[GreaterTest, str] = {
    "robust": "the t-test and a bootstrap-t from small resamples must both pass (default)",
    "t": "one-sample t-test of the mean",
    "wilcoxon": "Wilcoxon signed-rank test (the mean only for symmetric values)",
    "permutation": "sign-flip permutation test of the mean",
    "bootstrap": "studentised bootstrap (bootstrap-t) of the mean",
}

BUILTIN_RULES = tuple(
    DecisionRule(name=name, greater=partial(_builtin_greater, name), description=text)
    for name, text in _DESCRIPTIONS.items()
)


def decide_greater(registry: Registry, claim: ClaimSpec, values: Any, threshold: float,
                   n_resamples: int) -> Decision:
    """Decide "effect > threshold" for ``claim`` with the rule its ``test:`` names.

    Raises:
        ClaimSpecError: at key ``test`` when no such rule is registered.
        MechcheckError: at key ``test`` when a plugin's rule returns something other
            than a :class:`~mechcheck.stats.Decision`.
    """
    from mechcheck.stats import Decision

    rule: DecisionRule = registry.lookup("rules", claim.test, key="test")
    decision = rule.greater(np.asarray(values, dtype=np.float64), threshold,
                            alpha=claim.alpha, seed=claim.seed, n_resamples=n_resamples)
    if not isinstance(decision, Decision):
        raise MechcheckError(
            f"decision rule '{rule.name}' returned {type(decision).__name__}, not a "
            "Decision", key="test",
            hint="a rule's greater() must return mechcheck.stats.Decision")
    return decision
