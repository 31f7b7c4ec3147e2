"""Claims that the answer is readable from the residual stream: ``decodes`` (the logit
lens, nostalgebraist 2020; the tuned lens, Belrose et al. 2023).

The lens applies the model's own final norm and unembedding (``ctx.lens``) to a residual
site (``blocks.L.resid_pre``, ``resid_mid`` or ``resid_post``) at one position per
prompt (``at:``, the last by default), recorded in the file's shared clean run.  The
score per prompt is the answer's ``logprob``, its ``logit_diff`` against the row's wrong
token, ``accuracy`` (1 where the answer is the lens's top token) or its ``rank`` (1 =
top), the answer and wrong tokens being the data's own (the ids the metrics use).  Ties
count against the answer: its rank is the number of tokens scored at least as high, so
a lens that gives every token the same logit puts the answer at the bottom, not the top.

Decision rules, per site:

* ``min_score: t``: the mean score exceeds ``t`` (the claim's ``test:``); for
  ``accuracy`` (0/1 per prompt) the exact binomial test on the share of top-1 prompts;
* ``max_score: t``: the negative claim "not readable here": ``t - score`` has a mean
  above 0 (accuracy: the share of prompts whose answer is *not* the top token exceeds
  ``1 - t``, binomial);
* ``max_rank: R``: more than ``min_fraction`` (default 0.5) of the prompts have the
  answer within the lens's top ``R`` tokens (exact binomial on the 0/1 indicators;
  with 0.5 this is a sign test that the median rank is at most ``R``).

Several sites (``layers: [a, b]``, ``layers: "*"`` or a list of ``components``) are each
decided as their own criterion; the claim holds when every one does
(:func:`~mechcheck.kinds.base.all_of`).  Each site and each ``curve`` site (measured,
not decided) is a point of the report's layer curve.

``lens: tuned`` first maps each site's vector through the affine translator of a file
written by ``mechcheck lens train`` (:mod:`mechcheck.tuned_lens`), and reads only the
rows the translator did not train on.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mechcheck.addresses import Address
from mechcheck.errors import ClaimSpecError, DataError
from mechcheck.kinds.base import AT, Criterion, Measurement, all_of, keys
from mechcheck.spec.schema import (
    KeySpec,
    as_choice,
    as_components,
    as_number,
    as_str,
    int_at_least,
)

if TYPE_CHECKING:
    from mechcheck.engine.context import ClaimContext
    from mechcheck.engine.runner import Needs
    from mechcheck.spec.schema import ClaimSpec
    from mechcheck.stats import Decision
    from mechcheck.tuned_lens import Translator

__all__ = ["SCORES", "Decodes", "lens_scores", "lens_sites"]

SCORES = ("logprob", "logit_diff", "accuracy", "rank")
RESIDUAL_SITES = ("resid_pre", "resid_mid", "resid_post")


def _as_layers(value: Any) -> tuple[str, ...] | tuple[int, ...]:
    """``"*"``, one layer index, or ``[a, b]``: the inclusive range a..b."""
    if value == "*":
        return ("*",)
    if isinstance(value, int) and not isinstance(value, bool):
        items = [value, value]
    elif isinstance(value, list) and len(value) == 2:
        items = value
    else:
        raise ValueError(f"got {value!r}; for another set of sites list them under "
                         "components:")
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in items):
        raise ValueError(f"got {value!r}; layer indices are integers of 0 or more")
    a, b = items
    if a > b:
        raise ValueError(f"got {value!r}; the range [a, b] needs a <= b")
    return (a, b)


def _as_curve(value: Any) -> tuple[Any, ...]:
    """Like ``layers:`` (``"*"``, an index, ``[a, b]``) or a list of residual sites."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return ("sites", *as_components(value))
    return ("layers", *_as_layers(value))


_as_rank = int_at_least(1, "rank 1 is the top token")


def _as_open_fraction(value: Any) -> float:
    number = as_number(value)
    if not 0.0 < number < 1.0:
        raise ValueError(f"got {value!r}; a share strictly between 0 and 1")
    return number


LAYERS = KeySpec(name="layers", parse=_as_layers,
                 expected='"*" (every layer), a layer index, or [a, b] (layers a to b '
                 "inclusive): the sites blocks.L.resid_post")
SITES = KeySpec(name="components", parse=as_components,
                expected='residual sites, e.g. ["blocks.20.resid_post", "blocks.3.resid_pre"]')


class Decodes:
    """The lens reads the answer off the residual stream at each site."""

    name = "decodes"
    description = ("the final norm and unembedding applied to a residual site (the logit "
                   "lens, or a tuned lens) give the answer a score above min_score / a "
                   "rank within max_rank, decided per site")
    keys = keys(
        SITES, LAYERS, AT,
        KeySpec(name="metric", parse=as_choice(*SCORES), default="logprob",
                expected="the lens's score per prompt: logprob (the default), logit_diff, "
                "accuracy or rank"),
        KeySpec(name="min_score", parse=as_number,
                expected="the least mean score, e.g. -2.0 (accuracy: a share, e.g. 0.8)"),
        KeySpec(name="max_score", parse=as_number,
                expected="the negative claim: the mean score stays below this, e.g. -6.0"),
        KeySpec(name="max_rank", parse=_as_rank,
                expected="an integer of at least 1: the answer is within the top max_rank "
                "tokens on more than min_fraction of the prompts"),
        KeySpec(name="min_fraction", parse=_as_open_fraction, default=0.5,
                expected="with max_rank: the share of prompts that must have the answer in "
                "the top max_rank, strictly between 0 and 1 (default 0.5)"),
        KeySpec(name="lens", parse=as_choice("logit", "tuned"), default="logit",
                expected="logit (the default: the model's own final norm and unembedding) "
                "or tuned (an affine translator per site first, from translator:)"),
        KeySpec(name="translator", parse=as_str,
                expected="with lens: tuned, the .safetensors file written by mechcheck "
                "lens train (path relative to the claim file)"),
        KeySpec(name="curve", parse=_as_curve,
                expected='sites measured and drawn but not decided: "*", [a, b] or a list '
                'of residual sites, e.g. ["blocks.*.resid_post"]'),
    )

    def needs(self, claim: ClaimSpec, ctx: ClaimContext) -> Needs:
        decided, curve = lens_sites(ctx)
        return ctx.record_needs("clean", [*decided, *curve])

    def measure(self, claim: ClaimSpec, ctx: ClaimContext) -> Measurement:
        p = claim.params
        rule = _rule(p)
        decided, curve = lens_sites(ctx)
        translator = _translator(ctx, [*decided, *curve])
        rows = _rows(ctx, translator)
        score_name = "rank" if rule.key == "max_rank" else p["metric"]
        criteria, profile = [], []
        positions = _positions(ctx, rows)
        for site in [*decided, *(s for s in curve if s not in decided)]:
            scores = lens_scores(ctx, site, score_name, rows=rows, translator=translator,
                                 positions=positions)
            point = _point(ctx, rule, site, scores, decided=site in decided)
            if site in decided:
                criterion = _criterion(ctx, rule, site, scores)
                criteria.append(criterion)
                point["passed"] = bool(criterion.decision.p_value <= criterion.decision.alpha)
            profile.append(point)
            if len(decided) == 1 and site in decided and translator is None:
                ctx.keep("score", scores)
        decisive = all_of(criteria)
        where = _where(ctx)
        lens = "logit lens" if translator is None else f"tuned lens ({p['translator']})"
        held = "" if translator is None else f", {len(rows)} held-out rows"
        expected = (criteria[0].expected if len(criteria) == 1 else
                    f"{_rule_text(rule, score_name)} at each of {len(criteria)} sites")
        return Measurement(
            decision=decisive.decision,
            intervention=f"none (clean run; {lens} at {where}{held})",
            metric=score_name, components=tuple(str(s) for s in decided),
            expected=expected, criteria=tuple(criteria),
            profile=tuple(sorted(profile, key=_order)) if len(profile) > 1 else ())


# -- sites ------------------------------------------------------------------------------------
def lens_sites(ctx: ClaimContext) -> tuple[list[Address], list[Address]]:
    """The claim's decided sites (``components`` or ``layers``) and its ``curve``'s, each
    a residual site of the model, in forward order."""
    p = ctx.params
    if p.get("components") is not None and p.get("layers") is not None:
        raise ClaimSpecError("give components: or layers:, not both", key="layers",
                             hint="layers: [a, b] means blocks.a..b.resid_post; list other "
                             "sites under components:")
    if p.get("components") is None and p.get("layers") is None:
        raise ClaimSpecError("a decodes claim needs components: or layers:", key="kind",
                             hint='e.g. layers: [20, 29], layers: "*" or components: '
                             '["blocks.20.resid_post"]')
    if p.get("layers") is not None:
        decided = _layer_sites(ctx, p["layers"], "layers")
    else:
        decided = _residual(ctx, ctx.resolve(p["components"], "components"), "components")
    curve: list[Address] = []
    if p.get("curve") is not None:
        form, *items = p["curve"]
        curve = (_layer_sites(ctx, tuple(items), "curve") if form == "layers" else
                 _residual(ctx, ctx.resolve(items, "curve"), "curve"))
    return sorted(dict.fromkeys(decided)), sorted(dict.fromkeys(curve))


def _layer_sites(ctx: ClaimContext, layers: tuple[Any, ...], key: str) -> list[Address]:
    n = ctx.model.adapter.dims.n_layers
    if layers == ("*",):
        return [Address("resid_post", L) for L in range(n)]
    a, b = layers
    if b >= n:
        raise ClaimSpecError(f"{key}: layer {b} does not exist: this model's layers are "
                             f"0 to {n - 1}", key=key,
                             hint=f'use layers within 0..{n - 1}, or "*" for every layer')
    return [Address("resid_post", L) for L in range(a, b + 1)]


def _residual(ctx: ClaimContext, addresses: tuple[Address, ...], key: str) -> list[Address]:
    for address in addresses:
        if address.site not in RESIDUAL_SITES:
            raise ClaimSpecError(
                f"{key}: {address} is not a residual site; the lens reads the residual "
                "stream", key=key,
                hint="use blocks.L.resid_pre, blocks.L.resid_mid or blocks.L.resid_post "
                "(for one component's own contribution, see kind: direct_effect)")
    return list(addresses)


def _order(point: Mapping[str, Any]) -> tuple[int, int]:
    return (int(point["layer"]), RESIDUAL_SITES.index(Address.parse(point["site"]).site))


# -- scores -------------------------------------------------------------------------------------
def _positions(ctx: ClaimContext, rows: np.ndarray) -> list[int]:
    """One position per row: the claim's ``at:`` (the last by default)."""
    at = ctx.params.get("at") or ("last",)
    if tuple(at) == ("all",):
        raise ClaimSpecError("at: all gives many positions; the lens scores one per prompt",
                             key="at", hint="name one position: last (the default), an "
                             "index or a position name from the data")
    out = []
    for row in rows:
        found = ctx.positions_of(int(row), at)
        if len(found) != 1:
            raise DataError(f"{ctx.dataset.row_label(int(row))}: at: names {len(found)} "
                            "positions; the lens scores one per prompt", key="at",
                            hint="name one position: last, an index or one position name")
        out.append(found[0])
    return out


def lens_logits(ctx: ClaimContext, site: Address, rows: np.ndarray,
                translator: Translator | None = None, *,
                positions: list[int] | None = None) -> torch.Tensor:
    """``[len(rows), vocab]``: the lens at ``site`` at each row's ``at:`` position (the
    clean run; or at ``positions``, one per row), through ``translator`` first when one
    is given."""
    acts = ctx.activations("clean", site)
    positions = _positions(ctx, rows) if positions is None else positions
    h = torch.stack([acts[int(r)][pos] for r, pos in zip(rows, positions)])
    if translator is not None:
        h = translator.apply(site, h)
    return ctx.lens.logits(h)


def lens_scores(ctx: ClaimContext, site: Address, score: str, *,
                rows: np.ndarray | None = None, translator: Translator | None = None,
                positions: list[int] | None = None) -> np.ndarray:
    """The lens's ``score`` (``logprob``, ``logit_diff``, ``accuracy``, ``rank``) per
    prompt at ``site``, for the data's answer (and wrong) tokens."""
    dataset = ctx.dataset
    rows = np.arange(len(dataset)) if rows is None else rows
    if score == "logit_diff" and dataset.wrongs is None:
        raise DataError("metric logit_diff needs a 'wrong' column in the data",
                        key="metric", hint="add a wrong (contrast) token to every row, "
                        "or use logprob, accuracy or rank")
    if translator is None:  # the same for every claim of the file: computed once
        key = ("lens", site, tuple(int(r) for r in rows),
               None if positions is None else tuple(positions), _at_key(ctx))
        summary = ctx.derived(key, lambda: _lens_summary(ctx, site, rows, None, positions))
    else:
        summary = _lens_summary(ctx, site, rows, translator, positions)
    if score == "logprob":
        return summary["answer"] - summary["logsumexp"]
    if score == "logit_diff":
        return summary["answer"] - summary["wrong"]
    return (summary["rank"] == 1).astype(np.float64) if score == "accuracy" else summary["rank"]


def _at_key(ctx: ClaimContext) -> Hashable:
    """The claim's ``at:`` as a key (it picks the positions the lens reads)."""
    return repr(ctx.params.get("at"))


def _lens_summary(ctx: ClaimContext, site: Address, rows: np.ndarray,
                  translator: Translator | None,
                  positions: list[int] | None) -> dict[str, np.ndarray]:
    """Per prompt, what every score is made of: the answer's and the wrong token's
    logits, the log-sum-exp of all logits and the answer's rank (the tokens scored at
    least as high as the answer, so ties count against it)."""
    dataset = ctx.dataset
    logits = lens_logits(ctx, site, rows, translator, positions=positions).double()
    index = torch.as_tensor(rows, dtype=torch.long)
    answers = torch.as_tensor(dataset.answers)[index]
    picked = logits.gather(-1, answers.view(-1, 1)).squeeze(-1)
    out = {"answer": picked.numpy(), "logsumexp": torch.logsumexp(logits, dim=-1).numpy(),
           "rank": (logits >= picked.view(-1, 1)).sum(dim=-1).double().numpy()}
    if dataset.wrongs is not None:
        wrongs = torch.as_tensor(dataset.wrongs)[index]
        out["wrong"] = logits.gather(-1, wrongs.view(-1, 1)).squeeze(-1).numpy()
    return out


# -- decisions ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Rule:
    key: str  # min_score, max_score or max_rank
    threshold: float


def _rule(p: Any) -> _Rule:
    given = [k for k in ("min_score", "max_score", "max_rank") if p.get(k) is not None]
    if len(given) != 1:
        what = "no threshold" if not given else f"{' and '.join(given)}"
        raise ClaimSpecError(f"a decodes claim takes one of min_score, max_score and "
                             f"max_rank; got {what}", key=given[1] if given[1:] else "kind",
                             hint="e.g. min_score: -2.0 (logprob), max_rank: 10, or "
                             "max_score: -6.0 for 'not readable here'")
    key = given[0]
    if key != "max_rank" and p["metric"] == "rank":
        raise ClaimSpecError(f"metric: rank is claimed with max_rank, not {key}", key=key,
                             hint="write max_rank: R (the answer is in the top R on most "
                             "prompts)")
    if p["metric"] == "accuracy" and key != "max_rank" and not 0.0 < p[key] < 1.0:
        raise ClaimSpecError(f"{key}: {p[key]} for accuracy: a share strictly between 0 "
                             "and 1", key=key, hint="e.g. min_score: 0.8")
    return _Rule(key, float(p[key]))


def _rule_text(rule: _Rule, score: str) -> str:
    if rule.key == "max_rank":
        return f"answer within the lens's top {int(rule.threshold)}"
    sign = ">" if rule.key == "min_score" else "<"
    return f"lens {score} {sign} {rule.threshold:.4g}"


def _greater(ctx: ClaimContext, key: str, values: np.ndarray, threshold: float,
             binary: bool) -> Decision:
    """"The mean of ``values`` exceeds ``threshold``": the exact binomial test for 0/1
    values (a t-test on 0/1 values near 1 rejects too often), else the claim's rule."""
    from mechcheck.stats import test_proportion

    if binary:
        return ctx.stats_call(key, test_proportion, values, threshold,
                              alpha=ctx.claim.alpha, seed=ctx.claim.seed)
    return ctx.stats_call(key, ctx.decide_greater, values, threshold)


def _indicator(ctx: ClaimContext, rule: _Rule, scores: np.ndarray) -> np.ndarray:
    return (scores <= rule.threshold).astype(np.float64)


def _criterion(ctx: ClaimContext, rule: _Rule, site: Address, scores: np.ndarray) -> Criterion:
    p = ctx.params
    metric = "rank" if rule.key == "max_rank" else p["metric"]
    binary = metric in ("accuracy", "rank")
    if rule.key == "max_rank":
        inside = _indicator(ctx, rule, scores)
        decision = _greater(ctx, "max_rank", inside, p["min_fraction"], True)
        expected = (f"answer in the top {int(rule.threshold)} at {site} on more than "
                    f"{p['min_fraction']:.4g} of prompts")
        detail = (f"median rank {np.median(scores):g}; top-{int(rule.threshold)} share "
                  f"{inside.mean():.3f}")
    elif rule.key == "min_score":
        decision = _greater(ctx, "min_score", scores, rule.threshold, binary)
        expected = f"lens {metric} at {site} > {rule.threshold:.4g}"
        detail = f"mean {metric} {scores.mean():.4g}"
    else:  # max_score: the negative claim, decided in the "greater" frame
        if binary:
            decision = _greater(ctx, "max_score", 1.0 - scores, 1.0 - rule.threshold, True)
            expected = (f"lens accuracy at {site} < {rule.threshold:.4g} (share of prompts "
                        f"whose top token is not the answer > {1 - rule.threshold:.4g})")
        else:
            decision = _greater(ctx, "max_score", rule.threshold - scores, 0.0, False)
            expected = (f"lens {metric} at {site} < {rule.threshold:.4g} (effect: max_score "
                        f"- {metric})")
        detail = f"mean {metric} {scores.mean():.4g}"
    verdict = "holds" if decision.p_value <= decision.alpha else "does not hold"
    return Criterion(name=str(site), decision=decision, expected=expected,
                     detail=f"{site}: {verdict}; {detail} over {len(scores)} prompts")


def _point(ctx: ClaimContext, rule: _Rule, site: Address, scores: np.ndarray, *,
           decided: bool) -> dict[str, Any]:
    """One point of the layer curve: the score (for max_rank: the top-R share) with its
    interval, and the claim's threshold where the site is decided (None on a curve
    site, which the figure leaves as a gap)."""
    p = ctx.params
    if rule.key == "max_rank":
        values, threshold, binary = _indicator(ctx, rule, scores), p["min_fraction"], True
    else:
        values, threshold = scores, rule.threshold
        binary = p["metric"] == "accuracy"
    bound_at = threshold if not binary or 0.0 < threshold < 1.0 else 0.5
    decision = _greater(ctx, rule.key, values, bound_at, binary)
    return {"site": str(site), "layer": int(site.layer),  # type: ignore[arg-type]
            "score": decision.effect, "ci_low": decision.ci_low, "ci_high": decision.ci_high,
            "threshold": float(threshold) if decided else None}


def _where(ctx: ClaimContext) -> str:
    at = ctx.params.get("at") or ("last",)
    return ", ".join(map(str, at))


# -- the tuned lens's file -----------------------------------------------------------------------
def _translator(ctx: ClaimContext, sites: list[Address]) -> Translator | None:
    p = ctx.params
    if p["lens"] == "logit":
        if p.get("translator") is not None:
            raise ClaimSpecError("translator: is read by lens: tuned only", key="translator",
                                 hint="add lens: tuned, or remove translator:")
        return None
    if p.get("translator") is None:
        raise ClaimSpecError("lens: tuned needs translator: (a file written by mechcheck "
                             "lens train)", key="translator",
                             hint="run mechcheck lens train CLAIMFILE --claim ID --out "
                             "FILE.safetensors and name that file here")
    from mechcheck.tuned_lens import load_translator

    path = Path(ctx.claim.base_dir) / p["translator"]
    return load_translator(path, ctx, sites)


def _rows(ctx: ClaimContext, translator: Translator | None) -> np.ndarray:
    n = len(ctx.dataset)
    if translator is None:
        return np.arange(n)
    trained = set(translator.train_rows)
    held = np.asarray([r for r in range(n) if r not in trained], dtype=np.int64)
    if len(held) < 2:
        raise DataError(f"the translator trained on {len(translator.train_rows)} of the "
                        f"{n} rows; {len(held)} held-out row(s) are left to decide on",
                        key="translator", hint="retrain with a larger --holdout, or give "
                        "the claim more rows")
    return held
