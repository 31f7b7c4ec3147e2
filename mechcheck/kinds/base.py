"""What every claim kind shares: :class:`Measurement`, the :class:`ClaimKind`
protocol, and the claim keys several kinds accept.

A claim kind declares the keys it accepts (for the loader) and turns one validated
claim into a :class:`Measurement`: per-prompt values reduced by its decision rule to a
:class:`~mechcheck.stats.Decision`.  Kinds reach models, data and the registries only
through the :class:`~mechcheck.engine.context.ClaimContext` they are given, bound to
the claim, so a plugin kind is written the same way as a built-in one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from mechcheck.spec.schema import (
    KeySpec,
    as_components,
    as_number,
    as_number_or_percent,
    as_positions,
    as_str,
)

if TYPE_CHECKING:
    from mechcheck.engine.context import ClaimContext
    from mechcheck.engine.runner import Needs
    from mechcheck.spec.schema import ClaimSpec
    from mechcheck.stats import Decision

__all__ = ["ABLATION", "AT", "COMPONENTS", "MEAN_BY", "METRIC", "ClaimKind", "Criterion",
           "Measurement", "all_of", "keys"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Criterion:
    """One of several conditions a claim makes (a circuit's faithfulness, its
    completeness ...), decided on its own.

    Attributes:
        name: the claim key that states it (``faithfulness``).
        decision: its decision (p-value already combined over its sub-tests).
        expected: what it claims, in words (``F(C)/F(M) > 0.8``).
        detail: what decided it, e.g. the K set or component that broke it.
    """

    name: str
    decision: Decision
    expected: str
    detail: str = ""

    def record(self) -> dict[str, Any]:
        """The report's form: name, effect, bounds, threshold, p, method, passed."""
        d = self.decision
        return {"name": self.name, "effect": d.effect, "ci_low": d.ci_low,
                "ci_high": d.ci_high, "threshold": d.threshold, "p_value": d.p_value,
                "method": d.method, "n": d.n, "passed": bool(d.p_value <= d.alpha),
                "expected": self.expected, "detail": self.detail}


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    """What a claim kind measured: the decision and how to describe it.

    ``criteria`` lists the claim's separate conditions when it makes several (each
    must hold; ``decision`` is then the one with the largest p-value, see
    :func:`all_of`).  ``profile`` holds described, not decided, points for the
    report's curve (e.g. a probe's selectivity per layer, a steering shift per scale):
    one mapping each, with a ``site`` or ``scale`` label and numbers, ``ci_low`` and
    ``ci_high`` bounding the curve's main value."""

    decision: Decision
    intervention: str
    metric: str | None
    components: tuple[str, ...]
    expected: str  # e.g. "logprob drop > 3.0"
    criteria: tuple[Criterion, ...] = ()
    profile: tuple[Mapping[str, Any], ...] = ()


def all_of(criteria: Sequence[Criterion]) -> Criterion:
    """The criterion that decides "every one of ``criteria`` holds": the one with the
    largest p-value (an intersection-union test is level alpha with no correction:
    the claim fails unless each criterion's own test passes)."""
    return max(criteria, key=lambda c: (c.decision.p_value, -criteria.index(c)))


class ClaimKind(Protocol):
    """What a claim kind provides (built-in or plugin).

    ``needs`` says what the shared clean/corrupt runs must record for the claim (all
    claims of a file are recorded in one pass); ``measure`` measures it.  Both get the
    claim and a :class:`~mechcheck.engine.context.ClaimContext` bound to it.
    """

    @property
    def name(self) -> str: ...

    @property
    def keys(self) -> Mapping[str, KeySpec]: ...

    @property
    def description(self) -> str: ...

    def needs(self, claim: ClaimSpec, ctx: ClaimContext) -> Needs: ...

    def measure(self, claim: ClaimSpec, ctx: ClaimContext) -> Measurement: ...


def as_min_drop(value: Any) -> float | str:
    return as_number_or_percent(value)


def as_positive(value: Any) -> float:
    number = as_number(value)
    if number <= 0:
        raise ValueError(f"got {value!r}, which is not positive")
    return number


COMPONENTS = KeySpec(name="components", required=True, parse=as_components,
                     expected='a list of quoted addresses, e.g. '
                              '["head 9.9", "blocks.10.attn.head.*"]')
METRIC = KeySpec(name="metric", required=True, parse=as_str,
                 expected="a metric: logit_diff, logprob, prob, accuracy, kl or "
                 "greater_than_pd (or a plugin's)")
AT = KeySpec(name="at", parse=as_positions,
             expected="last, a token index, a position name from the data, or a list of them")
ABLATION = KeySpec(name="ablation", required=True, parse=as_str,
                   expected="an intervention: zero, mean, mean_corrupt or resample (or noise, "
                   "or a plugin's)")
MEAN_BY = KeySpec(name="mean_by", parse=as_str,
                  expected="a data column such as template: mean ablation then takes the "
                  "mean over the rows sharing the row's value")


RATIO_METHODS = {"robust": "robust", "t": "fieller", "bootstrap": "bootstrap"}
"""``test:`` -> the ratio rule's method (:func:`mechcheck.stats.test_ratio`), for the
kinds that decide a recovery or faithfulness ratio."""


def keys(*specs: KeySpec) -> dict[str, KeySpec]:
    """A kind's ``keys`` table from its KeySpecs."""
    return {spec.name: spec for spec in specs}
