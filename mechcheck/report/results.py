"""The result of one claim: a frozen record of plain values.

:class:`ClaimResult` pickles across pytest-xdist workers, serialises into the JSON and
CSV reports and becomes one DataFrame row.  ``REPORT_FIELDS`` are the report columns
that researchers' tooling depends on: new fields may be added, none renamed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["CSV_FIELDS", "REPORT_FIELDS", "ClaimResult", "format_failure", "format_p"]

REPORT_FIELDS = (
    "file", "id", "model", "checkpoint", "kind", "components", "intervention", "metric",
    "n", "effect", "ci_low", "ci_high", "threshold", "p_value", "p_adjusted", "verdict",
    "message", "seed", "duration_s",
)
# The CSV report's columns: REPORT_FIELDS, then columns appended later (never reordered).
CSV_FIELDS = (*REPORT_FIELDS, "reason", "xfail", "line", "each_of")
# Smallest positive double is ~5e-324: a p-value of exactly 0.0 from a rule underflowed.
P_FLOOR_TEXT = "< 1e-300"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimResult:
    """One claim's verdict with its numbers.

    ``verdict`` is ``pass``, ``fail`` or ``error`` (or ``skip`` for a claim whose
    ``hf:`` model could not be had under ``skip_if_unavailable: true``); ``reason``
    says why a claim failed (``not supported`` or ``refuted``) and is empty otherwise.
    ``ci_low``/``ci_high`` are one-sided (1 - alpha) bounds, together a (1 - 2 alpha)
    interval.

    ``per_prompt`` holds the values behind the decision, one list per column, all of
    the same length (one entry per prompt, in data order); it is None when they were
    not kept.  Columns: ``row`` (the 0-based row of the data file or task), then the
    kind's values (the metric on the runs computed: ``clean``, ``corrupt``,
    ``patched``; ``difference``, patched minus the run patched into; ``score`` for
    ``attends``), then the data's extra columns (``template`` ...).
    It is left out of :meth:`record` (the JSON and CSV reports) unless asked for, and
    written by ``--mechcheck-report-prompts``.

    ``criteria`` lists, for a claim that states several conditions (a circuit's
    faithfulness, completeness, minimality), one dict per condition: ``name``,
    ``effect``, ``ci_low``, ``ci_high``, ``threshold``, ``p_value``, ``method``, ``n``,
    ``passed`` (its own p at most alpha), ``expected`` and ``detail`` (what decided it:
    the K set or component that broke it).  The claim's own numbers are those of the
    criterion with the largest p-value.

    ``profile`` lists described (not decided) points of a curve the claim measured
    beside its decision: a probe's ``curve:`` (one dict per site: ``site``, ``layer``,
    ``task``, ``control``, ``selectivity``, ``ci_low``, ``ci_high``, ``chance``) or a
    steering claim's scales (``scale``, ``shift``, ``random_shift``, ``ci_low``,
    ``ci_high``).  The HTML and Markdown reports draw it.

    ``each_of`` is, for one of the claims that ``each: true`` made of a claim (named
    ``<parent>[<component>]``), the parent claim's id; None for any other claim.
    """

    file: str
    id: str
    model: str | None
    checkpoint: str | None = None
    kind: str | None = None
    components: tuple[str, ...] = ()
    intervention: str | None = None
    metric: str | None = None
    n: int | None = None
    effect: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    threshold: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    verdict: str = "error"
    message: str = ""
    seed: int | None = None
    duration_s: float = 0.0
    line: int | None = None
    reason: str = ""
    expected: str = ""
    alpha: float | None = None
    confidence_level: float | None = None
    method: str | None = None
    correction: str | None = None
    xfail: str | None = None
    device: str | None = None
    dtype: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    baseline_verdict: str | None = None
    baseline_effect: float | None = None
    per_prompt: dict[str, list[Any]] | None = None
    criteria: list[dict[str, Any]] = field(default_factory=list)
    profile: list[dict[str, Any]] = field(default_factory=list)
    each_of: str | None = None

    def record(self, *, per_prompt: bool = False) -> dict[str, Any]:
        """A JSON-ready dict: report fields first, NaN/inf as None.

        Args:
            per_prompt: also include ``per_prompt`` (left out by default: it has one
                entry per prompt and claim).
        """
        raw = asdict(self)
        raw["components"] = list(self.components)
        if not per_prompt:
            raw.pop("per_prompt")
        ordered = {k: raw.pop(k) for k in REPORT_FIELDS}
        ordered.update(raw)
        return {k: _plain(v) for k, v in ordered.items()}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ClaimResult:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in record.items() if k in known}
        values["components"] = tuple(values.get("components") or ())
        return cls(**values)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def format_p(value: float | None, spec: str = ".4g") -> str:
    """A p-value for people: ``n/a`` when missing, ``< 1e-300`` when it underflowed to 0."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if value == 0.0:
        return P_FLOOR_TEXT
    return format(value, spec)


def _criteria_lines(result: ClaimResult) -> list[str]:
    lines = []
    for c in result.criteria:
        mark = "held" if c.get("passed") else "FAILED"
        detail = f"; {c['detail']}" if c.get("detail") else ""
        lines.append(f"  criterion     {c['name']} {mark}: {_num(c.get('effect'))} (CI "
                     f"{_num(c.get('ci_low'))} to {_num(c.get('ci_high'))}, p "
                     f"{format_p(c.get('p_value'))}; {c.get('expected', '')}{detail})")
    return lines


def _num(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4g}"


def format_failure(result: ClaimResult) -> str:
    """The failure text of a claim that did not pass: location, what was tested, the
    evidence, the reason and what to try."""
    where = f"{result.file}:{result.line}" if result.line else result.file
    level = f"{result.confidence_level:.0%}" if result.confidence_level else "CI"
    lines = [
        f"{where} claim '{result.id}' failed: {result.reason}",
        f"  intervention  {result.intervention} {', '.join(result.components)}".rstrip(),
        f"  metric        {result.metric or 'attention pattern'}",
        f"  expected      {result.expected}",
        f"  observed      {_num(result.effect)}  ({level} CI {_num(result.ci_low)} to "
        f"{_num(result.ci_high)}, n={result.n}, {result.method}, seed {result.seed})",
        f"  p             {format_p(result.p_value)} (adjusted, {result.correction}: "
        f"{format_p(result.p_adjusted)}; alpha {result.alpha})",
        *_criteria_lines(result),
        f"  fix           {_advice(result)}",
    ]
    return "\n".join(lines)


def _advice(result: ClaimResult) -> str:
    alpha, raw, adjusted = result.alpha, result.p_value, result.p_adjusted
    if alpha is not None and raw is not None and adjusted is not None and raw <= alpha < adjusted:
        return (f"significant alone (p={format_p(raw)}) but not after the {result.correction} "
                "correction across the claims of this file: more prompts (a larger n), or "
                "fewer claims in the file")
    if result.reason == "refuted":
        return ("the interval lies wholly on the wrong side of the threshold: the data "
                "contradict the claim; revise the claim (other components, threshold or "
                "intervention) rather than adding data")
    return ("the interval straddles the threshold: more prompts (a larger n) may settle "
            "it; or state a threshold the effect can clear")
