"""Claims about representations: ``probe`` (it is decodable, beyond a control) and
``erasure`` (it is used: erasing it breaks the behaviour, more than erasing a random
subspace of the same rank does).

A probe's examples and their scores come from :mod:`mechcheck.kinds.probing` and
:mod:`mechcheck.probes`; each score is averaged within its group, and the groups are
the units of the claim's decision rule (``test:``), a cluster-level test: examples of
one row (``at: all``) or one template (``group_by``) are not independent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mechcheck.errors import ClaimSpecError
from mechcheck.kinds.base import (
    AT,
    COMPONENTS,
    METRIC,
    Criterion,
    Measurement,
    all_of,
    as_min_drop,
    as_positive,
    keys,
)
from mechcheck.kinds.probing import LABEL_KEYS, Examples, at_of, examples, probe_site
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
    from mechcheck.probes import ProbeScores
    from mechcheck.spec.schema import ClaimSpec
    from mechcheck.stats import Decision

__all__ = ["Erasure", "Probe"]


_as_seeds = int_at_least(1, "at least 1")


def _as_fraction(value: Any) -> float:
    number = as_number(value)
    if not -1.0 <= number <= 1.0:
        raise ValueError(f"got {value!r}; a score between -1 and 1, e.g. 0.2")
    return number


PROBE = KeySpec(name="probe", parse=as_choice("logistic", "linear", "mlp"), default="logistic",
                expected="logistic (the default), linear or mlp; regularisation is chosen "
                "by nested cross-validation")
SEEDS = KeySpec(name="seeds", parse=_as_seeds, default=5,
                expected="how many seeded fold splits (and control draws) to average over, "
                "at least 1 (default 5)")
CONTROL_BY = KeySpec(name="control_by", parse=as_str,
                     expected="a data column whose values are the control task's types "
                     "(default: the token at the position)")


def _scores(ctx: ClaimContext, ex: Examples, *, control: str | None, seed_offset: int = 0,
            repeats: int | None = None) -> ProbeScores:
    """The probe's (and control's) held-out scores, errors located at the key at fault."""
    from mechcheck.probes import score_probe

    p, claim = ctx.params, ctx.claim
    try:
        return score_probe(ex.x, ex.labels, ex.groups, probe=p["probe"], target=p["target"],
                           folds=p["folds"], control=control, types=ex.types,
                           repeats=p["seeds"] if repeats is None else repeats,
                           seed=claim.seed + seed_offset)
    except ValueError as exc:
        text = str(exc)
        key = ("folds" if "folds" in text else
               ("control_by" if p.get("control_by") else "control")
               if text.startswith("control_task") else "label")
        raise ClaimSpecError(text, key=key) from None


def _group_values(values: np.ndarray, ex: Examples) -> np.ndarray:
    from mechcheck.probes import group_means

    return group_means(values, ex.groups)


class Probe:
    """A probe on one site decodes the label on held-out rows, and beats a control."""

    name = "probe"
    description = ("a probe on the site's activations decodes the label on held-out rows "
                   "(min_accuracy / min_r2) and beats its control task (min_selectivity)")
    keys = keys(COMPONENTS, AT, *LABEL_KEYS, PROBE, SEEDS, CONTROL_BY,
                KeySpec(name="control", parse=as_choice("control_task", "shuffled", "majority"),
                        default="control_task",
                        expected="control_task (the default: random labels per type, "
                        "Hewitt & Liang), shuffled or majority"),
                KeySpec(name="min_accuracy", parse=_as_fraction,
                        expected="a held-out accuracy, e.g. 0.9"),
                KeySpec(name="min_r2", parse=_as_fraction,
                        expected="a held-out R^2 (target: regression), e.g. 0.5"),
                KeySpec(name="min_selectivity", parse=_as_fraction,
                        expected="task score minus control score, e.g. 0.2"),
                KeySpec(name="curve", parse=as_components,
                        expected='sites to probe the same way (one seed) for the report\'s '
                        'curve, e.g. ["blocks.*.resid_post"] (described, not decided)'))

    def needs(self, claim: ClaimSpec, ctx: ClaimContext) -> Needs:
        sites = [probe_site(ctx), *ctx.resolve(claim.params.get("curve") or (), "curve")]
        return ctx.record_needs("clean", sites)

    def measure(self, claim: ClaimSpec, ctx: ClaimContext) -> Measurement:
        p = claim.params
        score_name = _score_key(p)
        site = probe_site(ctx)
        ex = examples(ctx, site)
        scores = _scores(ctx, ex, control=p["control"] if p.get("min_selectivity") is not None
                         or p.get("curve") else None)
        criteria = _probe_criteria(ctx, scores, ex, score_name)
        decisive = all_of(criteria)
        profile = tuple(_curve_point(ctx, a) for a in ctx.resolve(p.get("curve") or (), "curve"))
        return Measurement(decision=decisive.decision,
                           intervention=f"none (clean run; {p['probe']} probe, "
                           f"{p['folds']}-fold CV x {p['seeds']} seeds)",
                           metric=None, components=(str(site),),
                           expected="; ".join(c.expected for c in criteria),
                           criteria=tuple(criteria), profile=profile)


def _score_key(p: Any) -> str:
    regression = p["target"] == "regression"
    if p.get("min_accuracy") is not None and regression:
        raise ClaimSpecError("min_accuracy applies to classes; this label is a regression "
                             "target", key="min_accuracy", hint="use min_r2")
    if p.get("min_r2") is not None and not regression:
        raise ClaimSpecError("min_r2 applies to target: regression", key="min_r2",
                             hint="use min_accuracy for classes, or set target: regression")
    if all(p.get(k) is None for k in ("min_accuracy", "min_r2", "min_selectivity")):
        raise ClaimSpecError("a probe claim needs a threshold", key="kind",
                             hint="add min_accuracy (or min_r2) and/or min_selectivity, "
                             "e.g. min_selectivity: 0.2")
    return "R^2" if regression else "accuracy"


def _probe_criteria(ctx: ClaimContext, scores: ProbeScores, ex: Examples,
                    score_name: str) -> list[Criterion]:
    p = ctx.params
    task = float(scores.task.mean())
    detail = (f"held-out {score_name} {task:.3f} over {len(ex.labels)} examples in "
              f"{len(np.unique(ex.groups))} groups (chance {scores.chance:.3f}); "
              f"per fold {', '.join(f'{v:.3f}' for v in scores.fold_task)}; "
              f"{scores.complexity}")
    criteria = []
    threshold = p.get("min_accuracy") if p.get("min_r2") is None else p.get("min_r2")
    if threshold is not None:
        key = "min_accuracy" if p.get("min_r2") is None else "min_r2"
        decision = _decide_score(ctx, scores.task, ex, threshold)
        criteria.append(Criterion(name=key, decision=decision, detail=detail,
                                  expected=f"probe {score_name} > {threshold:.4g}"))
    if p.get("min_selectivity") is not None:
        assert scores.control is not None
        control = float(scores.control.mean())
        decision = ctx.decide_greater(_group_values(scores.task - scores.control, ex),
                                      float(p["min_selectivity"]))
        criteria.append(Criterion(
            name="min_selectivity", decision=decision,
            expected=f"selectivity ({score_name} - {p['control']}) > {p['min_selectivity']:.4g}",
            detail=f"task {task:.3f}, {p['control']} {control:.3f}, selectivity "
            f"{task - control:.3f}; control per fold "
            f"{', '.join(f'{v:.3f}' for v in scores.fold_control)}; {detail}"))
    return criteria


def _decide_score(ctx: ClaimContext, task: np.ndarray, ex: Examples,
                  threshold: float) -> Decision:
    """The held-out score's decision: with one example per group and 0/1 scores (one
    seed), the exact binomial test (a t-test on 0/1 values near 1 rejects too often);
    otherwise the claim's rule on the group means."""
    from mechcheck.stats import test_proportion

    values = _group_values(task, ex)
    binary = len(values) == len(task) and bool(np.isin(values, (0.0, 1.0)).all())
    if binary and 0.0 < threshold < 1.0:
        return test_proportion(values, threshold, alpha=ctx.claim.alpha, seed=ctx.claim.seed)
    return ctx.decide_greater(values, threshold)


def _curve_point(ctx: ClaimContext, address: Any) -> dict[str, Any]:
    """One site of the report's curve: task, control and selectivity with its interval."""
    ex = examples(ctx, address)
    scores = _scores(ctx, ex, control=ctx.params["control"], repeats=1)
    assert scores.control is not None
    decision = ctx.decide_greater(_group_values(scores.task - scores.control, ex), 0.0)
    return {"site": str(address), "layer": address.layer,
            "task": float(scores.task.mean()), "control": float(scores.control.mean()),
            "selectivity": decision.effect, "ci_low": decision.ci_low,
            "ci_high": decision.ci_high, "chance": scores.chance}


class Erasure:
    """Erasing the label's linear information at the site lowers the metric by more
    than ``min_drop``, and by more than erasing a random subspace of the same rank."""

    name = "erasure"
    description = ("erasing the label (fitted on the other folds) at the site lowers the "
                   "metric by more than min_drop and more than a random subspace does")
    keys = keys(COMPONENTS, AT, *LABEL_KEYS, METRIC,
                KeySpec(name="eraser", parse=as_choice("leace", "mean_projection", "inlp"),
                        default="leace", expected="leace (the default), mean_projection "
                        "or inlp"),
                KeySpec(name="control", parse=as_choice("random_subspace", "none"),
                        default="random_subspace",
                        expected="random_subspace (the default) or none"),
                KeySpec(name="min_drop", required=True, parse=as_min_drop,
                        expected="a number, e.g. 1.0, or a share of the clean mean, '40%'"),
                KeySpec(name="min_excess", parse=as_number, default=0.0,
                        expected="how much more than the random subspace's the drop must "
                        "be (default 0: any significant excess)"),
                KeySpec(name="chance_margin", parse=as_positive, default=0.1,
                        expected="how far a fresh probe after erasure may be from the "
                        "majority-class baseline on the same rows (default 0.1)"),
                KeySpec(name="probe", parse=as_choice("logistic", "linear", "mlp"),
                        default="logistic", expected="the fresh probe of the erased check: "
                        "logistic (the default), linear or mlp"))

    def needs(self, claim: ClaimSpec, ctx: ClaimContext) -> Needs:
        return ctx.record_needs("clean", [probe_site(ctx)])

    def measure(self, claim: ClaimSpec, ctx: ClaimContext) -> Measurement:
        from mechcheck.probes import fold_of

        p = claim.params
        site = probe_site(ctx)
        ex = examples(ctx, site)
        if p["target"] == "classes" and len(set(ex.labels.tolist())) < 2:
            raise ClaimSpecError("the label has one value on every example", key="label",
                                 hint="choose a label that varies")
        try:
            strata = ex.labels if p["target"] == "classes" else None
            fold = fold_of(ex.groups, p["folds"], claim.seed, strata)
        except ValueError as exc:
            raise ClaimSpecError(str(exc), key="folds") from None
        erasers, controls = _fit_erasers(ctx, ex, fold)
        row_fold = ex.row_fold(fold)
        clean = ctx.metric_values("clean")
        erased = _erased_metric(ctx, site, erasers, row_fold, keep="patched")
        metric = ctx.metric()
        sign = 1.0 if metric.higher_is_better else -1.0
        drop = sign * (clean - erased)
        threshold = ctx.percent_of_clean("min_drop", p["min_drop"], clean)
        rank = erasers[0].rank
        criteria = [Criterion(name="min_drop", decision=ctx.decide_greater(drop, threshold),
                              expected=f"{metric.name} drop after {p['eraser']} erasure "
                              f"> {threshold:.4g}",
                              detail=f"rank {rank} erased at {_where(ctx)}; mean drop "
                              f"{drop.mean():.4g}")]
        if controls:
            random_drop = sign * (clean - _erased_metric(ctx, site, controls, row_fold))
            excess = float(p["min_excess"])
            criteria.append(Criterion(
                name="control", decision=ctx.decide_greater(drop - random_drop, excess),
                expected=f"drop exceeds a random rank-{rank} subspace's"
                + (f" by more than {excess:.4g}" if excess else ""),
                detail=f"random subspace drop {random_drop.mean():.4g}"))
        criteria.append(_fresh_probe(ctx, ex, erasers, fold))
        return Measurement(decision=all_of(criteria).decision,
                           intervention=f"{p['eraser']} erasure of {p['label']} at "
                           f"{_where(ctx)} (fitted on the other folds)",
                           metric=metric.name, components=(str(site),),
                           expected="; ".join(c.expected for c in criteria),
                           criteria=tuple(criteria))


def _where(ctx: ClaimContext) -> str:
    at = at_of(ctx)
    return "every position" if at is None else ", ".join(map(str, at))


def _fit_erasers(ctx: ClaimContext, ex: Examples, fold: np.ndarray) -> tuple[list[Any], list[Any]]:
    from mechcheck.erasure import fit_eraser

    p, seed = ctx.params, ctx.claim.seed
    erasers, controls = [], []
    for f in range(p["folds"]):
        train = fold != f
        try:
            eraser = fit_eraser(p["eraser"], ex.x[train], ex.labels[train], seed=seed + f,
                                target=p["target"])
        except ValueError as exc:
            raise ClaimSpecError(f"{p['eraser']} could not be fitted on fold {f}: {exc}",
                                 key="eraser") from None
        erasers.append(eraser)
        if p["control"] == "random_subspace":
            controls.append(fit_eraser("random_subspace", ex.x[train], ex.labels[train],
                                       seed=seed + 1000 + f, rank=max(eraser.rank, 1)))
    return erasers, controls


def _erased_metric(ctx: ClaimContext, site: Any, erasers: list[Any], row_fold: dict[int, int],
                   keep: str | None = None) -> np.ndarray:
    """The metric per prompt with each row's activation at the site erased by the
    eraser of the fold that held the row out."""
    def erase(current: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        out = current.clone()
        folds = [row_fold.get(int(row)) for row in rows]
        for f in dict.fromkeys(x for x in folds if x is not None):
            held = [b for b, x in enumerate(folds) if x == f]  # the fold's rows at once
            out[held] = erasers[f](current[held].double()).to(current.dtype)
        return out

    result = ctx.run("clean", {site: erase}, at=at_of(ctx))
    return ctx.metric_values(result, keep=keep)


def _fresh_probe(ctx: ClaimContext, ex: Examples, erasers: list[Any],
                 fold: np.ndarray) -> Criterion:
    """A fresh probe, fitted on each fold's training rows as its eraser erased them,
    must be near chance on that fold's erased held-out rows."""

    from mechcheck.probes import fit_and_score

    p = ctx.params
    scores = np.empty(len(ex.labels))
    base = np.empty(len(ex.labels))  # the training folds' majority class (or mean)
    for f, eraser in enumerate(erasers):
        held = fold == f
        erased = eraser(torch.from_numpy(ex.x)).double().numpy()
        try:
            scores[held] = fit_and_score(erased[~held], ex.labels[~held], ex.groups[~held],
                                         erased[held], ex.labels[held], probe=p["probe"],
                                         target=p["target"])
        except ValueError as exc:
            raise ClaimSpecError(str(exc), key="label") from None
        base[held] = _baseline(ex.labels[~held], ex.labels[held], ex.labels, p["target"])
    margin = p["chance_margin"]
    gap = _group_values(scores - base, ex)
    # two one-sided tests: a probe far *below* the baseline still reads the label
    tests = (ctx.decide_greater(margin - gap, 0.0), ctx.decide_greater(gap + margin, 0.0))
    name = "R^2" if p["target"] == "regression" else "accuracy"
    return Criterion(name="erased", decision=max(tests, key=lambda d: d.p_value),
                     expected=f"a fresh probe's {name} after erasure within {margin:g} of "
                     "the training majority's",
                     detail=f"fresh probe {scores.mean():.3f} after erasure, majority "
                     f"{base.mean():.3f} on the same held-out rows (effect: the distance "
                     "to the nearer edge of the band)")


def _baseline(train: np.ndarray, test: np.ndarray, labels: np.ndarray,
              target: str) -> np.ndarray:
    """Held-out scores of predicting the training majority class (regression: the
    training mean, scored as the probes are, ``1 - (y - mean)^2 / var``)."""
    if target == "regression":
        y = np.asarray(test, dtype=np.float64)
        variance = max(float(np.var(np.asarray(labels, dtype=np.float64))), 1e-300)
        return 1.0 - (y - np.asarray(train, dtype=np.float64).mean()) ** 2 / variance
    values, counts = np.unique(np.asarray([str(v) for v in train]), return_counts=True)
    majority = values[np.argmax(counts)]
    return np.asarray([str(v) == majority for v in test], dtype=np.float64)
