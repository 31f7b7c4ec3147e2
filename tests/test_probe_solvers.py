"""mechcheck.probe_solvers against scikit-learn, the second implementation.

The binary logistic solver must reach scikit-learn's ``LogisticRegression`` optimum
(same objective) at least as closely as lbfgs does; the hand-written grid search must
choose what ``GridSearchCV(make_pipeline(StandardScaler(), estimator))`` chooses, from
the same inner scores, and predict what its refitted pipeline predicts.  The features
have shifted means and unequal scales (a bug in standardisation would show), and a
weak signal, so that the regularisation matters.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from mechcheck.probe_solvers import BinaryLogistic, choose_and_fit


def _problem(n: int, d: int, seed: int, *, classes: int = 2,
             regression: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.2, 5.0, size=d) + rng.normal(0, 3, size=d)
    direction = rng.normal(size=(d, max(classes, 1)))
    signal = (x - x.mean(0)) / x.std(0) @ direction / np.sqrt(d)
    if regression:
        return x, signal[:, 0] + rng.normal(0, 0.5, size=n)
    y = np.argmax(signal + rng.gumbel(size=signal.shape), axis=1) if classes > 2 else \
        (signal[:, 0] + rng.logistic(size=n) * 0.5 > 0).astype(int)
    return x, y


def _sk_objective(w: np.ndarray, b: float, x: np.ndarray, s: np.ndarray, c: float) -> float:
    return float(0.5 * w @ w + c * np.logaddexp(0, -s * (x @ w + b)).sum())


@pytest.mark.parametrize(("n", "d"), [(48, 576), (300, 20), (40, 40)])
@pytest.mark.parametrize("c", [1e-2, 1e-1, 1.0, 100.0])
def test_binary_logistic_reaches_the_optimum_of_sklearns_objective(n: int, d: int,
                                                                   c: float) -> None:
    from sklearn.linear_model import LogisticRegression

    x, y = _problem(n, d, seed=n + d)
    x = (x - x.mean(0)) / x.std(0) + 0.3  # standardised, then shifted (intercept at work)
    ours = BinaryLogistic(C=c).fit(x, y)
    theirs = LogisticRegression(C=c, solver="lbfgs", tol=1e-12, max_iter=100_000).fit(x, y)
    s = np.where(y == 1, 1.0, -1.0)
    mine = _sk_objective(ours.coef_, ours.intercept_, x, s, c)
    sk = _sk_objective(theirs.coef_[0], float(theirs.intercept_[0]), x, s, c)
    assert mine <= sk + 1e-7 * max(1.0, abs(sk))
    scale = np.abs(theirs.coef_[0]).max()
    assert np.abs(ours.coef_ - theirs.coef_[0]).max() < 1e-3 * scale
    assert abs(ours.intercept_ - float(theirs.intercept_[0])) < 1e-3 * max(1.0, scale)
    margin = theirs.decision_function(x)
    sure = np.abs(margin) > 1e-6
    assert np.array_equal(ours.predict(x)[sure], theirs.predict(x)[sure])


def test_binary_logistic_keeps_the_class_labels() -> None:
    x, y = _problem(30, 5, seed=1)
    labels = np.where(y == 1, "baba", "abba")
    model = BinaryLogistic(C=1.0).fit(x, labels)
    assert set(model.predict(x)) <= {"abba", "baba"}
    with pytest.raises(ValueError, match="two classes"):
        BinaryLogistic().fit(x, np.zeros(30))


def _grid_search(x: np.ndarray, y: np.ndarray, groups: np.ndarray, estimator: Any,
                 name: str, values: tuple[float, ...]) -> Any:
    from sklearn.model_selection import GridSearchCV, GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline = make_pipeline(StandardScaler(), estimator)
    step = pipeline.steps[-1][0]
    search = GridSearchCV(pipeline, {f"{step}__{name}": values}, cv=GroupKFold(n_splits=3),
                          refit=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(x, y, groups=groups)
    return search


def _sk(kind: str) -> tuple[Any, str, tuple[float, ...], bool]:
    from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier

    if kind == "logistic":  # to the optimum (lbfgs's default tol 1e-4 leaves margins off by 1e-2)
        return (LogisticRegression(solver="lbfgs", tol=1e-10, max_iter=100_000), "C",
                (1e-2, 1e-1, 1.0), True)
    if kind == "ridge_classifier":
        return RidgeClassifier(), "alpha", (1e-1, 10.0, 1e3), True
    return Ridge(), "alpha", (1e-1, 10.0, 1e3), False


@pytest.mark.parametrize(("kind", "classes", "n", "d", "group_size"), [
    ("logistic", 2, 48, 576, 1), ("logistic", 2, 300, 20, 3), ("logistic", 5, 120, 30, 1),
    ("ridge_classifier", 5, 300, 20, 3), ("ridge_classifier", 2, 48, 576, 1),
    ("ridge", 0, 300, 20, 1), ("ridge", 0, 48, 576, 3),
])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_hand_written_search_chooses_and_predicts_as_grid_search_cv(
        kind: str, classes: int, n: int, d: int, group_size: int, seed: int) -> None:
    from sklearn.base import clone

    x, y = _problem(n + 40, d, seed, classes=max(classes, 2), regression=classes == 0)
    groups = np.arange(n + 40) // group_size
    train, test = slice(0, n), slice(n, None)
    estimator, name, values, is_classes = _sk(kind)
    if kind == "logistic" and classes == 2:
        make = lambda v: BinaryLogistic(C=v)  # noqa: E731 - what mechcheck uses
    else:
        make = lambda v: clone(estimator).set_params(**{name: v})  # noqa: E731
    model, chosen = choose_and_fit(x[train], y[train], groups[train], make, values, 3,
                                   classes=is_classes)
    search = _grid_search(x[train], y[train], groups[train], estimator, name, values)
    assert chosen == next(iter(search.best_params_.values()))
    got, expected = model.predict(x[test]), search.predict(x[test])
    if is_classes:
        if kind == "logistic" and classes == 2:
            margin = search.decision_function(x[test])
            sure = np.abs(margin) > 1e-6
            assert np.array_equal(got[sure], expected[sure])
        else:
            assert np.array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-8)


def test_a_value_that_fails_on_an_inner_split_cannot_win() -> None:
    """One inner training split has a single class: the logistic fit raises there, so
    each value's mean is nan, as in GridSearchCV, and the first value is kept."""
    x, _ = _problem(12, 4, seed=3)
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])  # the first group holds class 0
    model, chosen = choose_and_fit(x, y, groups, lambda v: BinaryLogistic(C=v),
                                   (1e-2, 1e-1, 1.0), 3, classes=True)
    assert chosen == 1e-2
    assert set(model.predict(x)) <= {0, 1}
