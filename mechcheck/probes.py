"""Probes with controls: held-out scores of a probe and of its control task.

A probe is fitted by cross-validation over *groups* (a row, or every row sharing a
value of ``group_by``), so no group is ever both trained and scored on; each example
is scored by the probe of the fold that held it out.  Scores are per example:
``1``/``0`` for a right/wrong class, and for a regression target ``1 - (y - y_hat)^2 /
s^2`` (``s^2`` the target's variance), whose mean is the held-out R^2.

The controls (Hewitt & Liang 2019; Belinkov 2022) score a probe of the same kind on
labels that carry no information the probe should be credited with:

- ``control_task``: each *type* (the token at the example's position, or a data
  column) gets a label drawn at random from the task's label distribution, once, so a
  probe can only succeed by memorising types;
- ``shuffled``: the labels permuted across examples;
- ``majority``: no probe, the training folds' majority class (or mean).

Selectivity is the task's score minus the control's on the same held-out examples.
:func:`score_probe` repeats the cross-validation with ``repeats`` seeds (a new fold
split and control draw each) and averages each example's scores over them, so a claim
does not hang on one split.  :mod:`mechcheck.probe_solvers` chooses the regularisation
(as scikit-learn's ``GridSearchCV`` would) and solves the binary logistic probe; the
other probes are scikit-learn's (imported on first use).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CONTROLS", "PROBES", "ProbeScores", "control_task", "fit_and_score", "fold_of",
           "group_means", "probe_jobs", "score_probe"]

PROBES = ("logistic", "linear", "mlp")
CONTROLS = ("control_task", "shuffled", "majority")
_CS = (1e-2, 1e-1, 1.0)  # logistic C grid (nested CV)
_ALPHAS = (1e-1, 10.0, 1e3)  # ridge alpha grid
_MLP_ALPHAS = (1e-3, 1.0)
_MLP_HIDDEN = 32
_INNER_FOLDS = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeScores:
    """Held-out scores of a probe (and of its control, when one was asked for).

    Attributes:
        task: per example, the probe's held-out score (mean over repeats).
        control: per example, the control's score, or None.
        groups: per example, its group (the unit of the decision rule).
        chance: the majority-class rate (classes) or 0 (R^2 of the mean).
        fold_task / fold_control: the pooled score of each fold of the first repeat.
        complexity: the probe, its parameter count and the regularisation chosen.
    """

    task: np.ndarray
    control: np.ndarray | None
    groups: np.ndarray
    chance: float
    fold_task: tuple[float, ...]
    fold_control: tuple[float, ...]
    complexity: str


def fold_of(groups: np.ndarray, folds: int, seed: int,
            strata: np.ndarray | None = None) -> np.ndarray:
    """Per example, its fold: the distinct groups shuffled (seeded) and dealt out to
    ``folds`` folds in turn, so each group lies in one fold.  With ``strata`` (e.g. the
    class labels) the groups are dealt out stratum by stratum (a group's stratum is
    that of its first example), so every fold has about the same class balance: a
    probe that learned nothing then scores chance, not below it (with unbalanced folds
    the training majority is the held-out minority).

    Raises:
        ValueError: fewer groups than folds.
    """
    unique, first = np.unique(groups, return_index=True)
    if len(unique) < folds:
        raise ValueError(f"{len(unique)} groups cannot be split into {folds} folds; use "
                         f"folds: {max(2, len(unique))} or fewer, or more rows")
    order = np.random.default_rng(seed).permutation(len(unique))
    if strata is not None:
        keys = np.asarray([str(v) for v in np.asarray(strata, dtype=object)[first]])
        order = order[np.argsort(keys[order], kind="stable")]
    fold = np.empty(len(unique), dtype=np.int64)
    fold[order] = np.arange(len(unique)) % folds
    lookup = dict(zip(unique.tolist(), fold.tolist()))
    return np.asarray([lookup[g] for g in groups.tolist()], dtype=np.int64)


def group_means(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """The mean of ``values`` within each group, in the order of first appearance."""
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    sums = np.bincount(inverse, weights=values)
    counts = np.bincount(inverse)
    return (sums / counts)[np.argsort(first, kind="stable")]


def score_probe(x: np.ndarray, y: np.ndarray, groups: np.ndarray, *, probe: str = "logistic",
                target: str = "classes", folds: int = 5, control: str | None = None,
                types: np.ndarray | None = None, repeats: int = 1,
                seed: int = 0) -> ProbeScores:
    """Cross-validated held-out scores of a ``probe`` on ``x`` -> ``y``, and of its
    ``control``, averaged over ``repeats`` seeded fold splits.

    Args:
        x: ``[n, d]`` features (one example per row).
        y: ``[n]`` labels (classes: any values; regression: numbers).
        groups: ``[n]`` group of each example (folds never split a group).
        types: ``[n]`` type of each example, for ``control="control_task"``.

    Raises:
        ValueError: bad arguments, with what to use instead.
    """
    _check(x, y, groups, probe, target, control, types)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # probe-sized BLAS calls are slower threaded
        return _score_probe(x, y, groups, probe, target, folds, control, types, repeats, seed)


def _score_probe(x: np.ndarray, y: np.ndarray, groups: np.ndarray, probe: str, target: str,
                 folds: int, control: str | None, types: np.ndarray | None, repeats: int,
                 seed: int) -> ProbeScores:
    y = np.asarray(y, dtype=np.float64) if target == "regression" else _codes(y)
    task_sum = np.zeros(len(y))
    control_sum = np.zeros(len(y))
    fold_task: list[float] = []
    fold_control: list[float] = []
    chosen: list[str] = []
    for r in range(repeats):
        strata = None if target == "regression" else y
        fold = fold_of(groups, folds, seed + r, strata)
        rng = np.random.default_rng([seed, r, 1])
        task = _held_out(x, y, fold, groups, probe, target, chosen, seed + r)
        task_sum += task
        if r == 0:
            fold_task = [float(task[fold == f].mean()) for f in range(folds)]
        if control is None:
            continue
        ctrl = _control_scores(x, y, fold, groups, probe, target, control, types, rng,
                               seed + r)
        control_sum += ctrl
        if r == 0:
            fold_control = [float(ctrl[fold == f].mean()) for f in range(folds)]
    chance = 0.0 if target == "regression" else float(np.bincount(y.astype(int)).max() / len(y))
    return ProbeScores(task=task_sum / repeats,
                       control=None if control is None else control_sum / repeats,
                       groups=np.asarray(groups), chance=chance, fold_task=tuple(fold_task),
                       fold_control=tuple(fold_control),
                       complexity=_complexity(probe, target, x.shape[1], y, chosen))


def fit_and_score(x_train: np.ndarray, y_train: np.ndarray, groups_train: np.ndarray,
                  x_test: np.ndarray, y_test: np.ndarray, *, probe: str = "logistic",
                  target: str = "classes") -> np.ndarray:
    """Per test example, the score of one probe fitted on the training examples (its
    regularisation chosen by a grouped inner cross-validation on them)."""
    y = np.concatenate([y_train, y_test])
    y = np.asarray(y, dtype=np.float64) if target == "regression" else _codes(y)
    train, test = y[:len(y_train)], y[len(y_train):]
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        model, _ = _fit(x_train, train, groups_train, probe, target)
        variance = float(np.var(y)) if target == "regression" else 1.0
        return _score(model, x_test, test, target, variance)


def _check(x: np.ndarray, y: np.ndarray, groups: np.ndarray, probe: str, target: str,
           control: str | None, types: np.ndarray | None) -> None:
    if probe not in PROBES:
        raise ValueError(f"probe: {probe!r} is not one of {', '.join(PROBES)}")
    if target not in ("classes", "regression"):
        raise ValueError(f"target: {target!r} must be classes or regression")
    if control is not None and control not in CONTROLS:
        raise ValueError(f"control: {control!r} is not one of {', '.join(CONTROLS)}")
    if x.ndim != 2 or len(x) != len(y) or len(y) != len(groups):
        raise ValueError(f"features {x.shape}, {len(y)} labels and {len(groups)} groups "
                         "do not line up")
    if control == "control_task" and (types is None or len(types) != len(y)):
        raise ValueError("control_task needs a type per example")
    if target == "classes" and len(set(np.asarray(y).tolist())) < 2:
        raise ValueError("the label has one value on every example, so there is nothing "
                         "to decode; choose a label that varies")


def _codes(y: np.ndarray) -> np.ndarray:
    """Class labels as 0..k-1 (in sorted order of their text)."""
    labels = [str(v) for v in np.asarray(y, dtype=object).tolist()]
    names = sorted(set(labels))
    index = {name: i for i, name in enumerate(names)}
    return np.asarray([index[v] for v in labels], dtype=np.int64)


def _held_out(x: np.ndarray, y: np.ndarray, fold: np.ndarray, groups: np.ndarray,
              probe: str, target: str, chosen: list[str], seed: int = 0) -> np.ndarray:
    """Per example, the score of the probe fitted on the other folds."""
    scores = np.empty(len(y))
    variance = float(np.var(y)) if target == "regression" else 1.0
    folds = np.unique(fold)
    fitted = _map(_fit, [(x[fold != f], y[fold != f], groups[fold != f], probe, target)
                         for f in folds])
    for f, (model, choice) in zip(folds, fitted):
        test = fold == f
        chosen.append(choice)
        scores[test] = _score(model, x[test], y[test], target, variance)
    return scores


def probe_jobs() -> int:
    """How many processes fit a cross-validation's folds at once: the environment
    variable ``MECHCHECK_PROBE_JOBS``, else 1: the linear probes' fits take
    milliseconds (:mod:`mechcheck.probe_solvers`), about what handing them to a worker
    costs; more can pay for ``mlp`` probes.
    The folds are independent, so the results do not depend on it."""
    import os

    written = os.environ.get("MECHCHECK_PROBE_JOBS")
    if written is not None:
        try:
            return max(1, int(written))
        except ValueError:
            raise ValueError(f"MECHCHECK_PROBE_JOBS={written!r} is not a whole number; "
                             "set it to 1 (no worker processes) or more") from None
    return 1


def _map(fn: Any, calls: list[tuple[Any, ...]]) -> list[Any]:
    """``[fn(*args) for args in calls]``, in worker processes when ``probe_jobs() > 1``
    (joblib's pool, kept between calls)."""
    jobs = min(probe_jobs(), len(calls))
    if jobs <= 1:
        return [fn(*args) for args in calls]
    from joblib import Parallel, delayed

    return Parallel(n_jobs=jobs)(delayed(_in_worker)(fn, args) for args in calls)


def _in_worker(fn: Any, args: tuple[Any, ...]) -> Any:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return fn(*args)


def _score(model: Any, x: np.ndarray, y: np.ndarray, target: str,
           variance: float) -> np.ndarray:
    predicted = _predict(model, x)
    if target == "regression":
        return 1.0 - (y - predicted) ** 2 / max(variance, 1e-300)
    return (predicted == y).astype(np.float64)


def _predict(model: Any, x: np.ndarray) -> np.ndarray:
    if isinstance(model, tuple):  # a constant: ("constant", value)
        return np.full(len(x), model[1])
    return np.asarray(model.predict(x))


def _fit(x: np.ndarray, y: np.ndarray, groups: np.ndarray, probe: str,
         target: str) -> tuple[Any, str]:
    """A probe fitted on (x, y); its regularisation chosen by an inner grouped CV."""
    if target == "classes" and len(np.unique(y)) < 2:
        return ("constant", y[0]), "constant (one class in training)"
    from mechcheck.probe_solvers import choose_and_fit, fit_standardised

    estimator, grid = _estimator(probe, target, binary=len(np.unique(y)) == 2)
    inner = min(_INNER_FOLDS, len(np.unique(groups)))
    if inner < 2:
        return fit_standardised(estimator, x, y), "default (too few groups to tune)"
    (name, values), = grid.items()
    model, value = choose_and_fit(x, y, groups, lambda v: _with(estimator, name, v),
                                  values, inner, classes=target == "classes")
    return model, f"{name}={value:g}"


def _with(estimator: Any, name: str, value: float) -> Any:
    """A fresh copy of ``estimator`` with its parameter ``name`` set to ``value``."""
    from sklearn.base import clone

    if not hasattr(estimator, "get_params"):  # mechcheck's own solver
        return type(estimator)(**{name: value})
    return clone(estimator).set_params(**{name: value})


def _estimator(probe: str, target: str, *,
               binary: bool = False) -> tuple[Any, dict[str, Sequence[float]]]:
    if probe == "logistic" and target == "classes" and binary:
        from mechcheck.probe_solvers import BinaryLogistic

        return BinaryLogistic(), {"C": _CS}
    if probe == "logistic" and target == "classes":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(solver="lbfgs", max_iter=2000), {"C": _CS}
    if probe == "mlp":
        from sklearn.neural_network import MLPClassifier, MLPRegressor

        cls = MLPRegressor if target == "regression" else MLPClassifier
        return cls(hidden_layer_sizes=(_MLP_HIDDEN,), max_iter=500, random_state=0), \
            {"alpha": _MLP_ALPHAS}
    from sklearn.linear_model import Ridge, RidgeClassifier

    return (Ridge() if target == "regression" else RidgeClassifier()), {"alpha": _ALPHAS}


def _control_scores(x: np.ndarray, y: np.ndarray, fold: np.ndarray, groups: np.ndarray,
                    probe: str, target: str, control: str, types: np.ndarray | None,
                    rng: np.random.Generator, seed: int) -> np.ndarray:
    if control == "majority":
        scores = np.empty(len(y))
        variance = float(np.var(y)) if target == "regression" else 1.0
        for f in np.unique(fold):
            test = fold == f
            train = y[~test]
            value = train.mean() if target == "regression" else np.bincount(
                train.astype(int)).argmax()
            scores[test] = _score(("constant", value), x[test], y[test], target, variance)
        return scores
    if control == "shuffled":
        labels = y[rng.permutation(len(y))]
    else:
        assert types is not None
        labels = control_task(y, types, rng, regression=target == "regression")
    if target != "regression":  # folds balanced for the control's own labels
        fold = fold_of(groups, len(np.unique(fold)), seed, strata=labels)
    return _held_out(x, labels, fold, groups, probe, target, [], seed)


def control_task(y: np.ndarray, types: np.ndarray, rng: np.random.Generator, *,
                 regression: bool = False) -> np.ndarray:
    """Hewitt & Liang's control labels: each distinct type gets one label drawn from
    the labels' empirical distribution (redrawn while every type drew the same class).

    Raises:
        ValueError: fewer than two types, so the control would be a constant.
    """
    keys = [str(t) for t in np.asarray(types, dtype=object).tolist()]
    distinct = sorted(set(keys))
    if len(distinct) < 2:
        raise ValueError(f"control_task: every example has the same type ({distinct[0]!r}), "
                         "so its control labels would be one constant; key the control on a "
                         "column that varies (control_by: COLUMN) or use control: shuffled")
    for _ in range(100):
        drawn = rng.choice(y, size=len(distinct), replace=True)
        if regression or len(np.unique(drawn)) > 1:
            break
    lookup = dict(zip(distinct, drawn.tolist()))
    return np.asarray([lookup[k] for k in keys], dtype=y.dtype)


def _complexity(probe: str, target: str, width: int, y: np.ndarray,
                chosen: Sequence[str]) -> str:
    outputs = 1 if target == "regression" or len(np.unique(y)) == 2 else len(np.unique(y))
    if probe == "mlp":
        params = (width + 1) * _MLP_HIDDEN + (_MLP_HIDDEN + 1) * outputs
        shape = f"MLP {width}->{_MLP_HIDDEN}->{outputs}"
    else:
        params = (width + 1) * outputs
        shape = f"{probe} {width}->{outputs}"
    picks = sorted(set(chosen), key=lambda c: (-list(chosen).count(c), c))  # no set order
    return f"{shape}, {params} parameters; chosen by nested CV: {', '.join(picks[:3])}"
