"""Evaluate the claims of one file into :class:`~mechcheck.report.results.ClaimResult` records.

The claims of a file form one family: their p-values are corrected together (Holm by
default, the file's ``correction:`` otherwise), so every claim of the file is measured
whenever any of them is asked for, and ``-k`` never changes a verdict.  Before any
claim is measured, the shared clean/corrupt runs record everything the file's claims
will read, in one pass each.  This module never imports pytest.
"""

from __future__ import annotations

import math
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from mechcheck.each import EachFailed, expand_entries, needs_model
from mechcheck.engine.context import ClaimContext
from mechcheck.engine.runner import Needs
from mechcheck.errors import (
    MechcheckError,
    ModelUnavailableError,
    describe_exception,
    raised_in_mechcheck,
)
from mechcheck.kinds import Measurement
from mechcheck.report.results import ClaimResult, format_failure
from mechcheck.session import Session
from mechcheck.spec.schema import ClaimFile, ClaimSpec

if TYPE_CHECKING:
    from mechcheck.stats import Correction

__all__ = ["evaluate_claims", "evaluate_file", "library_versions"]


def library_versions() -> dict[str, str]:
    """Versions of the libraries a result depends on."""
    import numpy
    import scipy
    import torch
    import transformers

    from mechcheck import __version__

    return {name: str(version) for name, version in (
        ("mechcheck", __version__), ("torch", torch.__version__),
        ("transformers", transformers.__version__), ("scipy", scipy.__version__),
        ("numpy", numpy.__version__))}


def evaluate_file(claim_file: ClaimFile, session: Session, *,
                  checkpoint: str | None = None) -> list[ClaimResult]:
    """Measure every claim of a parsed file and apply the file's correction.

    With ``checkpoint``, every claim runs on that checkpoint of its model, and the
    claims of the file form one family per checkpoint.  It never raises: a claim that
    cannot be measured, for whatever reason, is an ``error`` result in its place.
    """
    if claim_file.error is not None:
        return [_error_result(claim_file.path, "<file>", claim_file.error, None)]
    start = time.perf_counter()
    order = [c.at_checkpoint(checkpoint) if isinstance(c, ClaimSpec) else c
             for c in claim_file.claims]
    if needs_model(order):  # each: true claims, one entry per component
        order = expand_entries(order, session)
    specs = [c for c in order if isinstance(c, ClaimSpec)]
    try:
        results = evaluate_claims(specs, session, correction=claim_file.correction,
                                  order=order)
    except Exception as exc:  # noqa: BLE001 - a last resort: every claim still gets a result
        results = [_internal_error(c, exc) if isinstance(c, ClaimSpec) else
                   _entry_error(c, i, claim_file.path) for i, c in enumerate(order)]
    for result in results:  # the result sinks (mechcheck_claim_result)
        session.registry.emit_result(result)
    counts = Counter(r.verdict for r in results)
    at = f" at {checkpoint}" if checkpoint else ""
    session.say(f"{claim_file.path}{at}: {len(results)} claim(s) in "
                f"{time.perf_counter() - start:.2f} s ("
                + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())) + ")")
    return results


def evaluate_claims(specs: Sequence[ClaimSpec], session: Session, *,
                    correction: Correction = "holm",
                    order: Sequence[Any] | None = None) -> list[ClaimResult]:
    """Measure ``specs`` as one family.

    ``order`` lists the file's entries (specs and the ClaimSpecErrors that replaced
    bad claims) in file order; the results follow it, errors included.
    """
    contexts = {id(s): ClaimContext(session, s) for s in specs}
    screened = _screen(specs, contexts)
    failed = _prepare([s for s in specs if id(s) not in screened], contexts)
    failed.update(screened)
    measured = {id(s): failed.get(id(s)) or _measure(s, contexts[id(s)]) for s in specs}
    done = _correct(measured, specs, correction)
    results = []
    for i, item in enumerate(order if order is not None else specs):
        if isinstance(item, ClaimSpec):
            results.append(done[id(item)])
        else:
            results.append(_entry_error(item, i, ""))
    return results


def _entry_error(item: Any, index: int, path: str) -> ClaimResult:
    """The result of an entry that is no spec: the ClaimSpecError that replaced a bad
    claim, or an ``each: true`` claim that could not be expanded (a skip when its
    model is unavailable under ``skip_if_unavailable``)."""
    if isinstance(item, EachFailed):
        return _error_result(item.spec.path, item.spec.id, item.error, item.spec)
    return _error_result(item.path or path, item.claim_id or f"claim[{index}]", item, None)


def _screen(specs: Sequence[ClaimSpec],
            contexts: dict[int, ClaimContext]) -> dict[int, ClaimResult]:
    """The results of the sweep members that ``screen: attribution`` leaves out.

    The members of one ``each: true`` claim with ``screen: attribution`` are ranked by
    attribution patching's estimate of their drop (two forward passes and a backward
    for all of them); the ``screen_top`` largest are measured exactly, as any claim,
    and only those decide.  The rest are skipped, with their estimate and rank; a
    screen that fails errors every member of its sweep."""
    from mechcheck.engine.attribution import screen

    sweeps: dict[tuple[str, str], list[ClaimSpec]] = {}
    for spec in specs:
        if spec.each_of is not None and spec.params.get("screen") == "attribution":
            sweeps.setdefault((spec.path, spec.each_of), []).append(spec)
    out: dict[int, ClaimResult] = {}
    for members in sweeps.values():
        first = members[0]
        ctx = contexts[id(first)]
        try:
            iv = ctx.intervention(first.params["ablation"], base="clean", key="ablation")
            kept, estimates = screen(
                ctx.session.runner(first), [contexts[id(m)].components() for m in members],
                iv, ctx.metric(), top_k=first.params["screen_top"], at=first.params.get("at"),
                mean_by=first.params.get("mean_by"), ig_steps=first.params["ig_steps"])
        except MechcheckError as exc:
            out.update({id(m): _error_result(m.path, m.id, exc.located(key=exc.key or "screen"),
                                             m) for m in members})
            continue
        except Exception as exc:  # noqa: BLE001 - one sweep's failure stops no other claim
            out.update({id(m): _unexpected(m, exc) for m in members})
            continue
        ranks = {i: r + 1 for r, i in enumerate(sorted(range(len(members)),
                                                       key=lambda i: (-estimates[i], i)))}
        for i, member in enumerate(members):
            if i not in kept:
                names = contexts[id(member)].component_names()
                out[id(member)] = _screened_out(member, names, float(estimates[i]) + 0.0,
                                                ranks[i], len(members), len(kept))
    return out


def _screened_out(spec: ClaimSpec, components: tuple[str, ...], estimate: float, rank: int,
                  of: int, kept: int) -> ClaimResult:
    return ClaimResult(
        file=spec.path, id=spec.id, model=spec.model, checkpoint=_checkpoint_of(spec),
        kind=spec.kind, components=components, verdict="skip", reason="screened out",
        seed=spec.seed, line=spec.line, xfail=spec.xfail, each_of=spec.each_of,
        message=f"screened out by attribution patching: its estimated drop {estimate:.4g} "
                f"ranks {rank} of {of}, and the top {kept} (screen_top) were measured "
                f"exactly; raise screen_top to measure it, or drop screen")


def _prepare(specs: Sequence[ClaimSpec],
             contexts: dict[int, ClaimContext]) -> dict[int, ClaimResult]:
    """Record what every claim needs in one shared pass per runner."""
    failed: dict[int, ClaimResult] = {}
    plans: dict[int, tuple[Any, Needs]] = {}
    for spec in specs:
        try:
            ctx = contexts[id(spec)]
            runner = ctx.session.runner(spec)
            needs = ctx.session.registry.lookup("kinds", spec.kind, key="kind").needs(spec, ctx)
        except MechcheckError as exc:
            failed[id(spec)] = _error_result(spec.path, spec.id, exc, spec)
            continue
        except Exception as exc:  # noqa: BLE001 - a plugin's bug must not stop the file
            failed[id(spec)] = _unexpected(spec, exc)
            continue
        plan = plans.setdefault(id(runner), (runner, Needs()))
        plan[1].update(needs)
    for runner, needs in plans.values():
        try:
            runner.prepare(needs)
        except Exception:  # noqa: BLE001, S110
            pass  # each claim that needs the failed run meets its error when measured
    return failed


@dataclass(frozen=True, slots=True)
class _Measured:
    """A claim measured but not yet corrected: the decision and its context."""

    spec: ClaimSpec
    measurement: Measurement
    loaded: Any
    duration_s: float
    per_prompt: dict[str, list[Any]] | None = None


def _measure(spec: ClaimSpec, ctx: ClaimContext) -> ClaimResult | _Measured:
    start = time.perf_counter()
    try:
        kind = ctx.session.registry.lookup("kinds", spec.kind, key="kind")
        measurement = kind.measure(spec, ctx)
        loaded = ctx.model
    except MechcheckError as exc:
        return replace(_error_result(spec.path, spec.id, exc, spec),
                       duration_s=time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - one claim's failure never stops the others
        return replace(_unexpected(spec, exc), duration_s=time.perf_counter() - start)
    return _Measured(spec, measurement, loaded, time.perf_counter() - start,
                     ctx.per_prompt())


def _correct(measured: dict[int, ClaimResult | _Measured], specs: Sequence[ClaimSpec],
             correction: Correction) -> dict[int, ClaimResult]:
    from mechcheck.stats import adjust

    keys = [id(s) for s in specs]
    raw = [m.measurement.decision.p_value if isinstance(m, _Measured) else math.nan
           for m in (measured[k] for k in keys)]
    adjusted = adjust(raw, correction) if keys else []
    done: dict[int, ClaimResult] = {}
    for k, p_adj in zip(keys, adjusted):
        item = measured[k]
        done[k] = _result(item, p_adj, correction) if isinstance(item, _Measured) else item
    return done


def _result(item: _Measured, p_adjusted: float, correction: str) -> ClaimResult:
    from mechcheck.stats import outcome

    spec, m, loaded = item.spec, item.measurement, item.loaded
    d = m.decision
    label = outcome(d, p_adjusted)
    result = ClaimResult(
        file=spec.path, id=spec.id, model=spec.model,
        checkpoint=spec.checkpoint or loaded.source.revision,
        kind=spec.kind, components=m.components, intervention=m.intervention,
        metric=m.metric, n=d.n, effect=d.effect, ci_low=d.ci_low, ci_high=d.ci_high,
        threshold=d.threshold, p_value=d.p_value, p_adjusted=p_adjusted,
        verdict="pass" if label == "pass" else "fail",
        reason="" if label == "pass" else label, seed=spec.seed,
        duration_s=item.duration_s, line=spec.line, expected=m.expected, alpha=spec.alpha,
        confidence_level=d.confidence_level, method=d.method, correction=correction,
        xfail=spec.xfail, device=loaded.device, dtype=loaded.dtype,
        versions=library_versions(), per_prompt=item.per_prompt,
        criteria=[c.record() for c in m.criteria],
        profile=[dict(point) for point in m.profile], each_of=spec.each_of,
    )
    return result if label == "pass" else replace(result, message=format_failure(result))


def _error_result(path: str, claim_id: str, exc: MechcheckError,
                  spec: ClaimSpec | None) -> ClaimResult:
    verdict = "error"
    if spec is not None:
        exc = exc.located(path=spec.path, claim_id=spec.id, line=spec.line_of(exc.key))
        if spec.skip_if_unavailable and isinstance(exc, ModelUnavailableError):
            verdict = "skip"
    return ClaimResult(
        file=path, id=claim_id, model=spec.model if spec else None,
        checkpoint=_checkpoint_of(spec),
        kind=spec.kind if spec else None, verdict=verdict, message=str(exc),
        seed=spec.seed if spec else None, line=exc.line, xfail=spec.xfail if spec else None,
        each_of=spec.each_of if spec else None,
    )


def _checkpoint_of(spec: ClaimSpec | None) -> str | None:
    """The checkpoint a claim runs on, also when its model could not be loaded."""
    if spec is None or spec.checkpoint is not None:
        return None if spec is None else spec.checkpoint
    source = spec.source
    return source.revision if source is not None and source.kind in ("hf", "zoo") else None


def _unexpected(spec: ClaimSpec, exc: Exception) -> ClaimResult:
    """A claim stopped by an exception that is not a MechcheckError: a bug of mechcheck's
    when raised in mechcheck's code, else the failure of code it called (a plugin)."""
    if raised_in_mechcheck(exc):
        return _internal_error(spec, exc)
    error = MechcheckError(
        f"measuring the claim failed in code that mechcheck called: "
        f"{describe_exception(exc)}",
        hint="the function named above (a plugin's claim kind, metric or intervention) "
        "raised; fix it there. The file's other claims were still measured")
    return _error_result(spec.path, spec.id, error, spec)


def _internal_error(spec: ClaimSpec, exc: Exception) -> ClaimResult:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    error = MechcheckError(
        f"internal error while measuring: {type(exc).__name__}: {exc}",
        hint="this is a bug in mechcheck or in a plugin; please report it with this "
        "traceback:\n" + text,
    )
    return _error_result(spec.path, spec.id, error, spec)
