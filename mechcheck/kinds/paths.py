"""Claims about paths: ``kind: path`` (path patching from senders to receivers)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from mechcheck.engine.paths import DIRECTIONS, FREEZE, LOGITS, path_needs, path_patch
from mechcheck.errors import ClaimSpecError
from mechcheck.kinds.base import (
    AT,
    METRIC,
    RATIO_METHODS,
    Measurement,
    as_min_drop,
    as_positive,
    keys,
)
from mechcheck.spec.schema import KeySpec, as_choice, as_components, as_number

if TYPE_CHECKING:
    from mechcheck.engine.context import ClaimContext
    from mechcheck.engine.runner import Needs
    from mechcheck.spec.schema import ClaimSpec

__all__ = ["Path", "as_receivers"]

_CRITERIA = ("min_drop", "min_recovery", "margin")


def as_receivers(value: Any) -> tuple[str, ...] | str:
    """``logits``, or a list of quoted addresses of heads' q/k/v inputs."""
    if value == LOGITS or value == [LOGITS]:
        return LOGITS
    return as_components(value)


class Path:
    """The senders' effect through their direct paths into the receivers.

    Noising (``direction: noise``) patches the senders' corrupt values into the clean
    run along the path only and claims a drop of more than ``min_drop`` (the path is
    necessary) or, with ``margin``, a change of less than ``margin`` (TOST: the path
    does not matter); denoising claims a recovery of more than ``min_recovery`` of the
    clean-corrupt gap (the path is sufficient).
    """

    name = "path"
    description = ("path patching: the senders' effect through their direct paths into "
                   "the receivers' q/k/v inputs (or the logits)")
    keys = keys(
        KeySpec(name="senders", required=True, parse=as_components,
                expected='a list of quoted heads or MLPs, e.g. ["head 0.2"]'),
        KeySpec(name="receivers", required=True, parse=as_receivers,
                expected='logits, or a list of quoted head inputs, e.g. '
                '["blocks.1.attn.head.1.k"]'),
        KeySpec(name="direction", parse=as_choice(*DIRECTIONS), default="noise",
                expected="noise (is the path necessary?) or denoise (is it sufficient?)"),
        KeySpec(name="freeze", parse=as_choice(*FREEZE), default="heads",
                expected="heads (every other head frozen, MLPs recomputed) or "
                "heads_and_mlps"),
        METRIC, AT,
        KeySpec(name="min_drop", parse=as_min_drop,
                expected="a number, or a percentage of the clean metric's mean such as "
                "'40%'"),
        KeySpec(name="min_recovery", parse=as_number,
                expected="a fraction of the clean-corrupt gap, e.g. 0.5"),
        KeySpec(name="margin", parse=as_positive,
                expected="a positive number: the largest change that counts as none"),
    )

    def needs(self, claim: ClaimSpec, ctx: ClaimContext) -> Needs:
        _criterion(claim)
        return path_needs(ctx, claim.params["senders"], claim.params["direction"])

    def measure(self, claim: ClaimSpec, ctx: ClaimContext) -> Measurement:
        params = ctx.params
        criterion = _criterion(claim)
        result = path_patch(ctx, params["senders"], params["receivers"],
                            direction=params["direction"], freeze=params["freeze"],
                            at=params.get("at"))
        metric = ctx.metric()
        base = ctx.metric_values(result.base.base)
        ctx.keep("_base", base)
        patched = ctx.metric_values(result.patched, keep="patched")
        decision, expected = _decide(ctx, criterion, base, patched)
        receivers = result.receivers
        into = "the logits" if receivers == LOGITS else ", ".join(map(str, receivers))
        label = (f"path patching ({params['direction']}, {params['freeze']} frozen) from "
                 f"{', '.join(map(str, result.senders))} into {into}")
        if params.get("at") is not None:
            label += f" at {', '.join(map(str, params['at']))}"
        return Measurement(decision=decision, intervention=label, metric=metric.name,
                           components=tuple(map(str, result.senders)), expected=expected)


def _criterion(claim: ClaimSpec) -> str:
    given = [k for k in _CRITERIA if claim.params.get(k) is not None]
    direction = claim.params["direction"]
    if len(given) != 1:
        raise ClaimSpecError(
            f"a path claim takes one of min_drop, min_recovery or margin, got "
            f"{', '.join(given) or 'none'}", key=given[-1] if given else "min_drop",
            hint="min_drop (noise: the path is necessary), margin (noise: it does not "
            "matter) or min_recovery (denoise: it is sufficient)")
    (criterion,) = given
    wanted = "denoise" if criterion == "min_recovery" else "noise"
    if direction != wanted:
        raise ClaimSpecError(f"{criterion} goes with direction: {wanted}, not {direction}",
                             key=criterion, hint=f"write direction: {wanted}, or use "
                             + ("min_recovery" if direction == "denoise" else "min_drop"))
    return criterion


def _decide(ctx: ClaimContext, criterion: str, base: np.ndarray,
            patched: np.ndarray) -> tuple[Any, str]:
    from mechcheck.stats import test_inside, test_ratio

    claim, metric = ctx.claim, ctx.metric()
    sign = 1.0 if metric.higher_is_better else -1.0
    value = claim.params[criterion]
    if criterion == "min_drop":
        threshold = ctx.percent_of_clean("min_drop", value, base)
        word = "drop" if metric.higher_is_better else "rise"
        return (ctx.decide_greater(sign * (base - patched), threshold),
                f"{metric.name} {word} > {threshold:.4g}")
    if criterion == "margin":
        ctx.require_test(("robust", "t"), "a path claim with margin takes test: robust or "
                         "test: t (two one-sided tests)")
        decision = test_inside(sign * (base - patched), value, alpha=claim.alpha,
                               seed=claim.seed, test="t" if claim.test == "t" else "robust",
                               n_resamples=ctx.n_resamples)
        return decision, f"|{metric.name} change| < {value:.4g}"
    ctx.require_test(("robust", "t", "bootstrap"), "a path claim with min_recovery takes "
                     "test: robust, t or bootstrap (as sufficient does)")
    clean = ctx.metric_values("clean")
    method = RATIO_METHODS[claim.test]
    decision = ctx.stats_call("min_recovery", test_ratio, patched - base, clean - base,
                              value, alpha=claim.alpha, seed=claim.seed,
                              n_resamples=ctx.n_resamples, method=method)
    return decision, f"{metric.name} recovery > {value:.4g}"
