"""Exact, fast fits for the probes of :mod:`mechcheck.probes`.

A probe's regularisation is chosen by a grouped inner cross-validation, so one claim
fits thousands of small probes (tens of examples, hundreds of features).  scikit-learn's
``GridSearchCV`` around a ``Pipeline`` spends more time on bookkeeping than on the fits,
so :func:`choose_and_fit` does the same search by hand: the same inner splits
(``GroupKFold``), the features standardised on each inner training split as
``StandardScaler`` does (population standard deviation; a constant feature keeps scale
1), the grid in its order, the mean inner score deciding with ties going to the first
value (as ``GridSearchCV.best_index_``), a value whose fit fails on some split unable to
win, then a refit on all training examples.

The binary logistic probe is solved by :class:`BinaryLogistic`: the minimiser of
``0.5 * ||w||^2 + C * sum_i log(1 + exp(-s_i (w . x_i + b)))`` (``s_i = +-1``, the
intercept unpenalised: scikit-learn's ``LogisticRegression`` objective) lies in the span
of the training examples (at the optimum ``w = -C * sum_i g_i x_i``), so writing ``w =
X^T a`` turns Newton's method into ``(n + 1)``-dimensional solves where examples are
fewer than features (Newton on ``(w, b)`` itself otherwise), with a backtracking line
search, until the gradient is below 1e-9 (scikit-learn's lbfgs stops at 1e-4).
Other probes use scikit-learn's estimators.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["BinaryLogistic", "Standardised", "choose_and_fit", "fit_standardised"]

_TOL = 1e-9
_MAX_STEPS = 100


class BinaryLogistic:
    """L2-regularised binary logistic regression with an unpenalised intercept, fitted
    by Newton's method in the span of the training examples (see the module docstring).

    Attributes (after :meth:`fit`): ``coef_`` ``[d]``, ``intercept_``, ``classes_``.
    """

    def __init__(self, C: float = 1.0) -> None:  # noqa: N803 - scikit-learn's name
        self.C = C

    def fit(self, x: np.ndarray, y: np.ndarray) -> BinaryLogistic:
        self.classes_ = np.unique(y)
        if len(self.classes_) != 2:
            raise ValueError(f"BinaryLogistic needs two classes, got {len(self.classes_)}")
        s = np.where(y == self.classes_[1], 1.0, -1.0)
        x = np.asarray(x, dtype=np.float64)
        if len(x) <= x.shape[1]:  # fewer examples than features: solve in their span
            a, b = _newton(x @ x.T, s, float(self.C))
            self.coef_, self.intercept_ = x.T @ a, b
        else:
            self.coef_, self.intercept_ = _newton_primal(x, s, float(self.C))
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) @ self.coef_ + self.intercept_

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes_[(self.decision_function(x) > 0).astype(int)]


def _objective(margin: np.ndarray, a: np.ndarray, ka: np.ndarray, s: np.ndarray,
               c: float) -> float:
    return float(c * np.logaddexp(0.0, -s * margin).sum() + 0.5 * a @ ka)


def _newton(k: np.ndarray, s: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    """``(a, b)`` minimising ``c * sum log(1 + exp(-s (K a + b))) + 0.5 a^T K a``.

    With ``g = dloss/dmargin`` and ``D = diag(dg/dmargin)``, the gradient is ``(K (c g +
    a), c 1^T g)``; its zero is found from the (n+1)-system ``(c D K + I) da + c D 1 db =
    -(c g + a)``, ``c 1^T D K da + c 1^T D 1 db = -c 1^T g`` (the a-rows divided by K)."""
    n = len(s)
    a = np.zeros(n)
    b = 0.0
    ka = k @ a
    margin = ka + b
    value = _objective(margin, a, ka, s, c)
    for _ in range(_MAX_STEPS):
        p = 1.0 / (1.0 + np.exp(s * margin))  # sigmoid(-s * margin)
        g = -s * p
        residual = c * g + a
        grad_b = c * g.sum()
        if max(np.abs(k @ residual).max(initial=0.0), abs(grad_b)) < _TOL * max(1.0, c * n):
            break
        d = p * (1.0 - p)
        system = np.empty((n + 1, n + 1))
        system[:n, :n] = c * d[:, None] * k + np.eye(n)
        system[:n, n] = c * d
        system[n, :n] = c * (d @ k)
        system[n, n] = c * d.sum() + 1e-12
        rhs = -np.concatenate([residual, [grad_b]])
        step = _solve(system, rhs)
        da, db = step[:n], float(step[n])
        t = 1.0
        while t > 1e-10:  # backtracking: Newton steps can overshoot far from the optimum
            new_a, new_b = a + t * da, b + t * db
            new_ka = k @ new_a
            new_margin = new_ka + new_b
            new_value = _objective(new_margin, new_a, new_ka, s, c)
            if new_value <= value + 1e-12 * max(1.0, abs(value)):
                break
            t *= 0.5
        else:
            break
        a, b, ka, margin, value = new_a, new_b, new_ka, new_margin, new_value
        if abs(t * db) + np.abs(t * da).max(initial=0.0) < 1e-15:
            break
    return a, b


def _solve(system: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(system, rhs)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(system, rhs, rcond=None)[0]


def _newton_primal(x: np.ndarray, s: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    """``(w, b)`` minimising the same objective by Newton's method on ``(w, b)``
    itself (``d + 1`` unknowns: the cheaper way when examples outnumber features)."""
    n, d = x.shape
    xa = np.hstack([x, np.ones((n, 1))])
    theta = np.zeros(d + 1)
    penalty = np.ones(d + 1)
    penalty[d] = 0.0  # the intercept is not penalised

    def value(t: np.ndarray) -> float:
        return float(c * np.logaddexp(0.0, -s * (xa @ t)).sum() + 0.5 * (t[:d] @ t[:d]))

    current = value(theta)
    for _ in range(_MAX_STEPS):
        p = 1.0 / (1.0 + np.exp(s * (xa @ theta)))
        grad = penalty * theta + c * (xa.T @ (-s * p))
        if np.abs(grad).max() < _TOL * max(1.0, c * n):
            break
        hessian = c * (xa.T * (p * (1.0 - p))) @ xa + np.diag(penalty)
        hessian[d, d] += 1e-12
        step = -_solve(hessian, grad)
        t = 1.0
        while t > 1e-10:
            new = theta + t * step
            new_value = value(new)
            if new_value <= current + 1e-12 * max(1.0, abs(current)):
                break
            t *= 0.5
        else:
            break
        theta, current = new, new_value
        if np.abs(t * step).max() < 1e-15:
            break
    return theta[:d], float(theta[d])


class Standardised:
    """A fitted estimator applied to standardised features (what ``make_pipeline(
    StandardScaler(), estimator)`` predicts)."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, estimator: Any) -> None:
        self.mean, self.scale, self.estimator = mean, scale, estimator

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict((x - self.mean) / self.scale))


def _scaler(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    return mean, scale


def fit_standardised(estimator: Any, x: np.ndarray, y: np.ndarray) -> Standardised:
    """``estimator`` fitted on the standardised ``x`` (as ``make_pipeline(
    StandardScaler(), estimator).fit(x, y)``)."""
    mean, scale = _scaler(x)
    return Standardised(mean, scale, estimator.fit((x - mean) / scale, y))


def _score(predicted: np.ndarray, y: np.ndarray, classes: bool) -> float:
    if classes:
        return float(np.mean(predicted == y))
    total = float(((y - y.mean()) ** 2).sum())
    residual = float(((y - predicted) ** 2).sum())
    if total == 0:  # scikit-learn's r2_score on a constant target
        return 1.0 if residual == 0 else 0.0
    return 1.0 - residual / total


def choose_and_fit(x: np.ndarray, y: np.ndarray, groups: np.ndarray, make: Any,
                   values: Sequence[float], inner: int, *,
                   classes: bool) -> tuple[Standardised, float]:
    """The probe ``make(value)`` with ``value`` of ``values`` chosen by a grouped
    ``inner``-fold cross-validation on ``(x, y)``, refitted on all of it; and the value.

    ``make(value)`` returns an unfitted estimator (``fit``/``predict``)."""
    from sklearn.model_selection import GroupKFold

    scores = np.full((len(values), inner), np.nan)
    with warnings.catch_warnings():
        # an inner split with a class missing fails that value, which then cannot win;
        # lbfgs stopping at max_iter on a strongly regularised fit changes no prediction
        warnings.filterwarnings("ignore", module=r"sklearn\.")
        for j, (train, test) in enumerate(GroupKFold(n_splits=inner).split(x, y, groups)):
            mean, scale = _scaler(x[train])
            x_train, x_test = (x[train] - mean) / scale, (x[test] - mean) / scale
            for i, value in enumerate(values):
                try:
                    model = make(value).fit(x_train, y[train])
                except ValueError:
                    continue  # e.g. one class in this inner training split
                scores[i, j] = _score(np.asarray(model.predict(x_test)), y[test], classes)
        means = scores.mean(axis=1)
        best = int(np.argmax(np.where(np.isnan(means), -np.inf, means)))
        model = fit_standardised(make(values[best]), x, y)
    return model, values[best]
