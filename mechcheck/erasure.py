"""Linear concept erasure: remove what a linear probe could read about a concept.

Every eraser is an affine map ``r(x) = x - L R (x - mean)`` with ``L`` ``[d, r]`` and
``R`` ``[r, d]``, fitted in float64 on ``[n, d]`` activations and class labels (or a
numeric target):

- ``leace`` (Belrose et al. 2023): ``L R = W^+ P W`` with ``W = Sigma^(-1/2)`` and ``P``
  the projection onto ``col(W Cov(X, Z))``, where ``Cov(X, Z)`` is the sample
  cross-covariance and ``Sigma`` an estimate of ``Cov(X)``:

  - ``shrinkage=True`` (the ``concept-erasure`` package's default):
    ``Sigma = a S + (1 - a) (tr S / d) I``, the optimal linear shrinkage of the sample
    covariance ``S = Xc^T Xc / n`` toward the scaled identity with the same trace
    (Bodnar, Gupta & Parolya 2014, "On the strong convergence of the optimal linear
    shrinkage estimator for large dimensional covariance matrix", J. Multivariate
    Anal. 132, arXiv:1308.2608; the same family as Ledoit & Wolf 2004). With that target
    the weight is ``a = 1 - (tr S)^2 / (n ||S - (tr S / d) I||_F^2)``, the
    Frobenius-optimal one as ``d, n -> inf`` with ``d / n`` bounded; it is clipped to
    ``[0, 1]`` (the package leaves it unclipped; the two agree whenever ``a >= 0``, and
    at ``a = 0`` LEACE becomes ``mean_projection``).
  - ``shrinkage=False`` (the default: the paper's closed form): ``Sigma = S`` with
    Bessel's correction, pseudo-inverted on its null space: plain LEACE.  Shrinkage did
    not make held-out erasure better in any case measured (tests/test_erasure.py).

  Either way ``Cov(r(X), Z) = 0`` exactly on the fitting data (only ``Cov(X)`` is
  shrunk, and ``Cov(X, Z)`` lies in ``col(Sigma)``), so the class means of ``r(X)``
  coincide; and ``r`` is the affine eraser with that property that moves ``X`` least in
  the ``Sigma``-weighted mean squared edit. That is the sample mean squared edit only
  for plain LEACE; with shrinkage the in-sample edit can be somewhat larger.
- ``mean_projection``: orthogonal projection removing the span of the class-mean
  differences (for a numeric target, the direction of ``Cov(X, z)``).
- ``inlp`` (Ravfogel et al. 2020): repeatedly fit a logistic regression and project out
  its weights until held-out accuracy is within 0.01 of the majority rate.
- ``random_subspace``: the control, projecting out a uniformly random ``rank``-subspace.

The three fitted methods leave every feature that is constant on the fitting data
exactly as it is (zero rows of ``L``, zero columns of ``R``), which is also their exact
value in exact arithmetic. Floating-point round-off there would otherwise write a copy
of the concept, scaled by ~1e-17, into a feature whose variance is ~0, and a probe that
standardizes its features (as :mod:`mechcheck.probes` does) reads that copy back
perfectly.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray

from mechcheck.errors import closest

__all__ = ["METHODS", "Eraser", "Method", "fit_eraser"]

Method = Literal["leace", "mean_projection", "inlp", "random_subspace"]
METHODS: tuple[str, ...] = ("leace", "mean_projection", "inlp", "random_subspace")
_Floats = NDArray[np.float64]
_EPS = float(np.finfo(np.float64).eps)
_RTOL_SVD = 1e-12  # cross-covariance singular values below this (relative) are rank noise
_INLP_MARGIN = 0.01  # INLP stops once held-out accuracy <= majority rate + this
_INLP_TEST_FRACTION = 0.3


@dataclass(frozen=True, slots=True, kw_only=True)
class Eraser:
    """A fitted affine eraser ``r(x) = x - left @ right @ (x - mean)``.

    Attributes:
        method: how it was fitted (one of :data:`METHODS`).
        rank: dimension of the removed subspace (columns of ``left``).
        mean: ``[d]`` mean of the fitting data (float64); ``r`` preserves it.
        left: ``[d, rank]`` float64.
        right: ``[rank, d]`` float64; for the orthogonal methods ``right == left.T``.
        seed: the seed used (``inlp`` split and ``random_subspace`` draw).
    """

    method: str
    rank: int
    mean: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor
    seed: int = 0

    @property
    def matrix(self) -> torch.Tensor:
        """The ``[d, d]`` linear part ``A`` of ``r(x) = mean + A (x - mean)``."""
        eye = torch.eye(self.mean.shape[0], dtype=torch.float64, device=self.mean.device)
        return eye - self.left @ self.right

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Erase ``x`` ``[..., d]``; returns ``[..., d]`` in ``x``'s dtype and device."""
        d = self.mean.shape[0]
        if x.ndim == 0 or x.shape[-1] != d:
            msg = f"x has shape {tuple(x.shape)}, but this eraser was fitted on d={d} features"
            raise ValueError(msg + "; pass activations whose last dimension is d")
        if not x.is_floating_point():
            raise ValueError(f"x has dtype {x.dtype}; pass floating-point activations")
        mean, left, right = (t.to(x.device) for t in (self.mean, self.left, self.right))
        x64 = x.to(torch.float64)
        return (x64 - ((x64 - mean) @ right.T) @ left.T).to(x.dtype)

    def to(self, device: torch.device | str) -> Eraser:
        """The same eraser with its tensors on ``device`` (still float64)."""
        return replace(
            self, mean=self.mean.to(device), left=self.left.to(device), right=self.right.to(device)
        )


def fit_eraser(
    method: str,
    x: Any,
    labels: Any,
    *,
    seed: int = 0,
    rank: int | None = None,
    max_iter: int = 20,
    target: Literal["classes", "regression"] = "classes",
    shrinkage: bool = False,
) -> Eraser:
    """Fit a concept eraser on activations ``x`` and their concept ``labels``.

    Args:
        method: ``"leace"``, ``"mean_projection"``, ``"inlp"`` or ``"random_subspace"``.
        x: ``[n, d]`` activations (tensor, array or nested lists).
        labels: ``[n]`` class labels (any hashable values, one-hot encoded), or with
            ``target="regression"`` ``[n]`` / ``[n, m]`` floats. Ignored (may be None)
            for ``random_subspace``.
        seed: seeds the ``inlp`` held-out split and the ``random_subspace`` draw.
        rank: required for ``random_subspace``; for the other methods an optional cap on
            the removed dimension (the strongest directions are kept; ``leace``'s
            zero-covariance guarantee needs ``rank >= k - 1``).
        max_iter: most ``inlp`` iterations.
        target: ``"classes"`` (default) or ``"regression"``.
        shrinkage: ``leace`` only (the other methods ignore it): estimate ``Cov(X)`` by
            the optimal linear shrinkage toward a scaled identity that the
            ``concept-erasure`` package uses by default (Bodnar, Gupta & Parolya 2014,
            arXiv:1308.2608): ``a S + (1 - a) (tr S / d) I`` with ``S = Xc^T Xc / n``
            and ``a = 1 - (tr S)^2 / (n ||S - (tr S / d) I||_F^2)`` clipped to
            ``[0, 1]``. ``False`` gives plain LEACE (sample covariance, pseudo-inverse),
            the least-squares-minimal eraser on the fitting data. Both zero the sample
            cross-covariance with the concept on the fitting data exactly.

    Returns:
        The fitted :class:`Eraser`.

    Raises:
        ValueError: unknown method or target, bad shapes, fewer than 2 classes, n < 2,
            rank missing (``random_subspace``) or outside ``[0, d]``, ``inlp`` on a
            regression target.

    Example:
        >>> import torch
        >>> x = torch.randn(100, 4) + torch.arange(100)[:, None] % 2
        >>> eraser = fit_eraser("leace", x, [i % 2 for i in range(100)])
        >>> eraser.rank, eraser(x).shape
        (1, torch.Size([100, 4]))
    """
    xs = _check_inputs(method, x, rank, max_iter, target)
    n, d = xs.shape
    mean = xs.mean(axis=0)
    if method == "random_subspace":
        assert rank is not None
        basis, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, rank)))
        left, right = basis, basis.T
    else:
        # Features constant on the fitting data are left exactly as they are (see the
        # module docstring): fit on the others, embed with zeros.
        active = np.ptp(xs, axis=0) > 0
        xc = np.where(active, xs - mean, 0.0)
        if target == "regression":
            if method == "inlp":
                msg = "inlp fits classifiers, so it needs class labels; for a numeric target "
                raise ValueError(msg + "method='leace' or 'mean_projection' (target='regression')")
            z = _regression_target(labels, n)
            zc = z - z.mean(axis=0)
            codes = None
        else:
            codes, k = _class_codes(labels, n)
            # k - 1 indicator columns span the same cross-covariance as all k
            z = (codes[:, None] == np.arange(k - 1)[None, :]).astype(np.float64)
            zc = z - z.mean(axis=0)
        if not active.any():  # every feature constant: nothing can carry the concept
            left_a, right_a = np.zeros((0, 0)), np.zeros((0, 0))
        elif method == "inlp":
            assert codes is not None
            basis = _inlp(xc[:, active], codes, seed=seed, rank=rank, max_iter=max_iter)
            left_a, right_a = basis, basis.T
        else:
            sigma = None
            if method == "leace":  # shrink over all d features (as the package does)
                sigma = _covariance(xc, shrinkage)[np.ix_(active, active)]
            left_a, right_a = _cross_cov_eraser(xc[:, active], zc, sigma, rank)
        left = np.zeros((d, left_a.shape[1]))
        right = np.zeros((left_a.shape[1], d))
        left[active], right[:, active] = left_a, right_a
    return Eraser(
        method=method,
        rank=int(left.shape[1]),
        mean=torch.from_numpy(mean),
        left=torch.from_numpy(np.ascontiguousarray(left)),
        right=torch.from_numpy(np.ascontiguousarray(right)),
        seed=seed,
    )


def _check_inputs(method: str, x: Any, rank: int | None, max_iter: int, target: str) -> _Floats:
    if method not in METHODS:
        hint = closest(method, METHODS)
        did = f"; did you mean {hint[0]!r}?" if hint else ""
        raise ValueError(f"unknown erasure method {method!r}: use one of {METHODS}{did}")
    if target not in ("classes", "regression"):
        raise ValueError(f"{target=}, but must be 'classes' or 'regression'")
    xs = _as_float64(x)
    if xs.ndim != 2:
        raise ValueError(f"x has shape {xs.shape}; pass [n, d] activations (flatten positions)")
    n, d = xs.shape
    if n < 2:
        raise ValueError(f"x has n={n} rows; fitting an eraser needs at least 2 examples")
    if not np.isfinite(xs).all():
        raise ValueError("x contains NaN or inf; drop or fix those rows before fitting")
    if method == "random_subspace" and rank is None:
        raise ValueError("random_subspace needs rank=...: the dimension of the subspace to remove")
    if rank is not None and not 0 <= rank <= d:
        raise ValueError(f"{rank=}, but must be between 0 and d={d} (the feature dimension)")
    if max_iter < 1:
        raise ValueError(f"{max_iter=}, but must be at least 1")
    return xs


def _as_float64(a: Any) -> _Floats:
    if isinstance(a, torch.Tensor):
        a = a.detach().to("cpu", torch.float64).numpy()
    return np.asarray(a, dtype=np.float64)


def _class_codes(labels: Any, n: int) -> tuple[NDArray[np.int64], int]:
    if labels is None:
        raise ValueError("this method needs labels: one class label per row of x")
    values = labels.tolist() if isinstance(labels, (torch.Tensor, np.ndarray)) else list(labels)
    if len(values) != n:
        raise ValueError(f"got {len(values)} labels for n={n} rows of x; pass one label per row")
    try:
        classes = list(dict.fromkeys(values))  # order of first appearance
    except TypeError as exc:
        msg = "class labels must be hashable scalars (str, int, ...); for a numeric target "
        raise ValueError(msg + "pass target='regression'") from exc
    if len(classes) < 2:
        shown = f" ({classes[0]!r})" if classes else ""
        msg = f"labels have {len(classes)} distinct value{shown}; erasing a concept needs at least"
        raise ValueError(msg + " 2 classes: check the labels, or use target='regression'")
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[v] for v in values], dtype=np.int64), len(classes)


def _regression_target(labels: Any, n: int) -> _Floats:
    if labels is None:
        raise ValueError("target='regression' needs labels: one float (or row of floats) per row")
    z = _as_float64(labels)
    z = z.reshape(-1, 1) if z.ndim == 1 else z
    if z.ndim != 2 or z.shape[0] != n:
        raise ValueError(f"target has shape {z.shape} for n={n} rows; pass [n] or [n, m] floats")
    if not np.isfinite(z).all():
        raise ValueError("the regression target contains NaN or inf; drop those rows first")
    return z


def _covariance(xc: _Floats, shrinkage: bool) -> _Floats:
    """``[d, d]`` estimate of ``Cov(X)`` from centred ``xc``: the sample covariance, or
    its optimal linear shrinkage toward ``(tr S / d) I`` (see :func:`_shrinkage_weight`)."""
    n, d = xc.shape
    s = xc.T @ xc / n
    s = (s + s.T) / 2
    if not shrinkage:
        return s * (n / (n - 1))  # Bessel's correction (LEACE is scale-invariant anyway)
    a, level = _shrinkage_weight(s, n)
    out = a * s
    out[np.diag_indices(d)] += (1 - a) * level
    return out


def _shrinkage_weight(s: _Floats, n: int) -> tuple[float, float]:
    """``(a, m)`` with ``a S + (1 - a) m I`` the optimal linear shrinkage of the
    (``1 / n``-normalised) sample covariance ``S`` of ``n`` rows toward ``m I``,
    ``m = tr S / d`` (Bodnar, Gupta & Parolya 2014, arXiv:1308.2608, with the target
    ``Sigma_0 = m I``): ``a = 1 - (tr S)^2 / (n ||S - m I||_F^2)``, clipped to ``[0, 1]``.

    The general formula, ``a = 1 - (tr S)^2 ||T||^2 / (n (||S||^2 ||T||^2 - tr(S T)^2))``
    and ``b = (1 - a) tr(S T) / ||T||^2`` for a target ``T``, reduces to this for
    ``T = m I`` (where ``b = 1 - a``, so the trace is kept); ``||S - m I||_F^2`` is
    ``||S||_F^2 - (tr S)^2 / d`` computed without the cancellation.
    """
    d = s.shape[0]
    trace = float(np.trace(s))
    level = trace / d
    spread = s.copy()
    spread[np.diag_indices(d)] -= level
    dispersion = float(np.sum(spread * spread))
    if trace <= 0 or dispersion <= 0:  # S = m I already: shrinking changes nothing
        return 1.0, level
    return float(np.clip(1 - trace * trace / (n * dispersion), 0.0, 1.0)), level


def _cross_cov_eraser(
    xc: _Floats, zc: _Floats, sigma: _Floats | None, rank: int | None
) -> tuple[_Floats, _Floats]:
    """``(L, R)`` with ``L R = W^+ P W``, ``W = sigma^(-1/2)`` (``I`` if ``sigma`` is None)
    and ``P`` the projection onto ``col(W Cov(X, Z))``, for centred ``xc`` and ``zc``."""
    n, d = xc.shape
    if sigma is not None:
        lam, v = np.linalg.eigh(sigma)
        keep = lam > max(lam[-1], 0.0) * d * _EPS  # pseudo-inverse on the null space
        v, root = v[:, keep], np.sqrt(lam[keep])
        w, w_pinv = (v / root) @ v.T, (v * root) @ v.T
    else:
        w = w_pinv = np.eye(d)
    u, s, _ = np.linalg.svd(w @ (xc.T @ zc / (n - 1)), full_matrices=False)
    u = u[:, s > s[0] * _RTOL_SVD] if s.size and s[0] > 0 else u[:, :0]
    u = u[:, :rank] if rank is not None else u
    return w_pinv @ u, u.T @ w


def _inlp(
    xc: _Floats, codes: NDArray[np.int64], *, seed: int, rank: int | None, max_iter: int
) -> _Floats:
    """Orthonormal ``[d, r]`` basis of the INLP classifiers' weight directions."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    n, d = xc.shape
    order = np.random.default_rng(seed).permutation(n)
    n_test = min(max(1, round(_INLP_TEST_FRACTION * n)), n - 1)
    test, train = order[:n_test], order[n_test:]
    counts = np.bincount(codes[train])
    if np.count_nonzero(counts) < 2:
        return np.zeros((d, 0))
    majority = float(np.mean(codes[test] == counts.argmax()))
    cap = d if rank is None else rank
    basis, rest = np.zeros((d, 0)), np.eye(d)  # removed directions, orthonormal complement
    for it in range(max_iter):
        if basis.shape[1] >= cap or rest.shape[1] == 0:
            break
        # The projected data, in coordinates of the complement (same classifier, better
        # conditioned than fitting on a rank-deficient [n, d] matrix).
        xp = xc @ rest
        clf = LogisticRegression(solver="lbfgs", max_iter=1000, random_state=seed + it)
        with warnings.catch_warnings():  # only the weight directions are used
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(xp[train], codes[train])
        if clf.score(xp[test], codes[test]) - majority <= _INLP_MARGIN:
            break
        u, s, _ = np.linalg.svd(rest @ clf.coef_.T, full_matrices=False)
        u = u[:, s > s[0] * _RTOL_SVD] if s.size and s[0] > 0 else u[:, :0]
        if u.shape[1] == 0:
            break
        q, _ = np.linalg.qr(np.hstack([basis, u]), mode="complete")
        basis, rest = q[:, : basis.shape[1] + u.shape[1]], q[:, basis.shape[1] + u.shape[1] :]
    return basis[:, :cap]
