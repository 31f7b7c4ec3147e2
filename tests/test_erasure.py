"""Tests for mechcheck.erasure: LEACE (plain and with covariance shrinkage) against the
concept-erasure package and a closed form, the zero-covariance guarantee, probes at the
majority rate after erasure (in sample and on held-out folds), the least-squares
optimality of LEACE, constant features left exactly alone, and the random-subspace
control."""

from __future__ import annotations

from dataclasses import replace
from functools import cache

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mechcheck.erasure import Eraser, fit_eraser

ERASING = ("leace", "mean_projection", "inlp")
ALL = (*ERASING, "random_subspace")


def _data(
    n: int, d: int, k: int, *, seed: int, rank: int | None = None, sep: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Correlated, anisotropic, non-centred features whose class means differ; with
    ``rank`` the features lie in a random affine subspace of that dimension."""
    rng = np.random.default_rng(seed)
    r = d if rank is None else rank
    mix = rng.normal(size=(r, d)) @ np.diag(rng.uniform(0.1, 5.0, size=d))
    labels = rng.integers(0, k, size=n)
    latent = rng.normal(size=(n, r)) + sep * rng.normal(size=(k, r))[labels]
    x = latent @ mix + rng.normal(scale=3.0, size=d)
    return x, labels


def _one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    return (labels[:, None] == np.arange(k)[None, :]).astype(np.float64)


def _cross_cov(x: np.ndarray, z: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)).T @ (z - z.mean(0)) / (len(x) - 1)


def _closed_form_leace(x: np.ndarray, z: np.ndarray, sigma: np.ndarray | None = None) -> np.ndarray:
    """r(X) from the oblique-projection form of the LEACE optimum:
    M = C (C^T S^+ C)^+ C^T S^+ with S = Cov(X) (or ``sigma``), C = Cov(X, Z)."""
    mu = x.mean(0)
    s = np.cov(x.T) if sigma is None else sigma
    s_pinv = np.linalg.pinv(s, hermitian=True, rtol=1e-10)
    c = _cross_cov(x, z)
    m = c @ np.linalg.pinv(c.T @ s_pinv @ c, hermitian=True, rtol=1e-10) @ c.T @ s_pinv
    return x - (x - mu) @ m.T


CASES = [  # (n, d, k, rank of the features or None)
    (200, 8, 2, None),
    (300, 16, 4, None),
    (500, 32, 2, None),
    (400, 32, 4, None),
    (250, 16, 4, 10),  # rank-deficient covariance
    (200, 24, 2, 5),
]


@pytest.mark.parametrize(("n", "d", "k", "rank"), CASES)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the package's torch.jit use
def test_leace_matches_concept_erasure_package(n: int, d: int, k: int, rank: int | None) -> None:
    LeaceEraser = pytest.importorskip("concept_erasure").LeaceEraser  # dev extra

    x, labels = _data(n, d, k, seed=n + d + k, rank=rank)
    xt, zt = torch.tensor(x), torch.tensor(_one_hot(labels, k))
    # The package's defaults add shrinkage and a trace constraint; plain LEACE has neither.
    theirs = LeaceEraser.fit(xt, zt, shrinkage=False, constrain_cov_trace=False, svd_tol=1e-9)
    ours = fit_eraser("leace", xt, labels, shrinkage=False)
    assert ours.rank == k - 1
    x_new, _ = _data(50, d, k, seed=n + d + k, rank=rank)  # same subspace, fresh draws
    scale = np.abs(x).max()
    for data in (xt, torch.tensor(x_new)):
        np.testing.assert_allclose(ours(data).numpy(), theirs(data).numpy(), atol=1e-6 * scale)
    np.testing.assert_allclose(ours.matrix.numpy(), theirs.P.numpy(), atol=1e-6)


@pytest.mark.parametrize(("n", "d", "k", "rank"), CASES)
def test_leace_matches_closed_form(n: int, d: int, k: int, rank: int | None) -> None:
    x, labels = _data(n, d, k, seed=7 * n + d, rank=rank)
    expected = _closed_form_leace(x, _one_hot(labels, k))
    got = fit_eraser("leace", x, labels.tolist(), shrinkage=False)(torch.tensor(x)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6 * np.abs(x).max())


@pytest.mark.parametrize(("n", "d", "k", "rank"), CASES)
@pytest.mark.parametrize(
    ("method", "shrinkage"), [("leace", True), ("leace", False), ("mean_projection", True)]
)
def test_cross_covariance_is_zeroed(
    n: int, d: int, k: int, rank: int | None, method: str, shrinkage: bool
) -> None:
    # The in-sample guarantee holds exactly with shrinkage too, and for the *sample*
    # cross-covariance: only Cov(X) is shrunk, and Cov(X, Z) lies in the column space
    # of the (shrunk or sample) covariance estimate, so (I - W^+ P W) Cov(X, Z) = 0.
    x, labels = _data(n, d, k, seed=n * k + d, rank=rank)
    names = np.array(["cat", "dog", "eel", "fox"])[labels]  # any hashable labels
    eraser = fit_eraser(method, torch.tensor(x), names, shrinkage=shrinkage)
    erased = eraser(torch.tensor(x)).numpy()
    z = _one_hot(labels, k)
    before = np.abs(_cross_cov(x, z)).max()
    assert before > 0.1
    assert np.abs(_cross_cov(erased, z)).max() <= 1e-8 * before
    means = np.stack([erased[labels == c].mean(0) for c in range(k)])
    np.testing.assert_allclose(
        means, np.broadcast_to(erased.mean(0), means.shape), atol=1e-8 * np.abs(x).max()
    )


def _probe_accuracy(x: np.ndarray, labels: np.ndarray, seed: int) -> tuple[float, float]:
    """Held-out accuracy of a fresh logistic regression, and the majority rate."""
    from sklearn.linear_model import LogisticRegression

    order = np.random.default_rng(seed).permutation(len(x))
    train, test = order[: len(x) // 2], order[len(x) // 2 :]
    clf = LogisticRegression(max_iter=2000).fit(x[train], labels[train])
    majority = np.mean(labels[test] == np.bincount(labels[train]).argmax())
    return float(clf.score(x[test], labels[test])), float(majority)


@pytest.mark.parametrize("method", ERASING)
@pytest.mark.parametrize("k", [2, 3])
def test_fresh_probe_is_at_majority_rate_after_erasure(method: str, k: int) -> None:
    # n_test = 1000: under "no linear information" the held-out accuracy has sd
    # <= sqrt(0.25 / 1000) ~ 0.016, so 0.05 is ~3 sd; a failed erasure stays near 1.
    x, labels = _data(2000, 16, k, seed=11 + k, sep=4.0)
    raw, majority = _probe_accuracy(x, labels, seed=5)
    assert raw > 0.95
    erased = fit_eraser(method, x, labels, seed=3)(torch.tensor(x)).numpy()
    after, majority = _probe_accuracy(erased, labels, seed=5)
    assert after <= majority + 0.05, (method, after, majority)


def test_random_subspace_of_the_same_rank_leaves_the_concept() -> None:
    # The control: removing k - 1 random directions does not remove a planted concept.
    x, labels = _data(2000, 16, 3, seed=14, sep=4.0)
    erased = fit_eraser("random_subspace", x, None, rank=2, seed=3)(torch.tensor(x)).numpy()
    assert _probe_accuracy(erased, labels, seed=5)[0] > 0.9


def test_leace_edit_is_least_squares_minimal() -> None:
    x, labels = _data(600, 12, 3, seed=21)
    z = _one_hot(labels, 3)
    mu, c, sigma = x.mean(0), _cross_cov(x, z), np.cov(x.T)

    def cost(erased: np.ndarray) -> float:
        return float(np.mean(np.sum((erased - x) ** 2, axis=1)))

    leace = cost(fit_eraser("leace", x, labels, shrinkage=False)(torch.tensor(x)).numpy())
    rivals = {"mean_projection": fit_eraser("mean_projection", x, labels)(torch.tensor(x)).numpy()}
    rng = np.random.default_rng(0)
    m_opt = c @ np.linalg.pinv(c.T @ np.linalg.inv(sigma) @ c, rtol=1e-10) @ c.T
    m_opt = m_opt @ np.linalg.inv(sigma)
    keep_c = np.eye(12) - c @ np.linalg.pinv(c, rtol=1e-10)  # N with N @ C = 0
    for i in range(20):
        b = rng.normal(size=(12, 3))  # oblique projection onto col(C) along ker(B^T)
        rivals[f"oblique{i}"] = x - (x - mu) @ (c @ np.linalg.pinv(b.T @ c, rtol=1e-10) @ b.T).T
        m = m_opt + 0.1 * rng.normal(size=(12, 12)) @ keep_c
        rivals[f"perturbed{i}"] = x - (x - mu) @ m.T
    assert cost(x - (x - mu) @ m_opt.T) == pytest.approx(leace, rel=1e-9)
    for name, erased in rivals.items():
        assert np.abs(_cross_cov(erased, z)).max() < 1e-8 * np.abs(c).max(), name
        assert leace <= cost(erased) * (1 + 1e-9), name
    assert leace < 0.9 * cost(rivals["mean_projection"])  # anisotropic: strictly better


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_leace_regression_target() -> None:
    LeaceEraser = pytest.importorskip("concept_erasure").LeaceEraser
    rng = np.random.default_rng(4)
    x, _ = _data(400, 16, 2, seed=4)
    target = x @ rng.normal(size=16) + rng.normal(size=400)
    eraser = fit_eraser(
        "leace", torch.tensor(x), torch.tensor(target), target="regression", shrinkage=False
    )
    assert eraser.rank == 1
    erased = eraser(torch.tensor(x)).numpy()
    before = np.abs(_cross_cov(x, target[:, None])).max()
    assert np.abs(_cross_cov(erased, target[:, None])).max() <= 1e-8 * before

    def r_squared(features: np.ndarray) -> float:  # in-sample OLS fit of the target
        design = np.hstack([features - features.mean(0), np.ones((len(features), 1))])
        coef, *_ = np.linalg.lstsq(design, target, rcond=None)
        return 1 - np.var(target - design @ coef) / np.var(target)

    assert r_squared(x) > 0.9 and r_squared(erased) < 1e-8
    theirs = LeaceEraser.fit(
        torch.tensor(x),
        torch.tensor(target),
        shrinkage=False,
        constrain_cov_trace=False,
        svd_tol=1e-9,
    )
    np.testing.assert_allclose(erased, theirs(torch.tensor(x)).numpy(), atol=1e-6 * np.abs(x).max())
    two = np.stack([target, x[:, 0] - x[:, 1]], axis=1)
    np.testing.assert_allclose(
        fit_eraser("leace", x, two, target="regression", shrinkage=False)(torch.tensor(x)).numpy(),
        _closed_form_leace(x, two),
        atol=1e-6 * np.abs(x).max(),
    )


# --- LEACE with covariance shrinkage --------------------------------------------------


def _shrinkage_weight(x: np.ndarray) -> float:
    """The unclipped weight ``a`` of Bodnar, Gupta & Parolya's optimal linear shrinkage
    ``a S + b T`` toward ``T = (tr S / d) I``, from their general formula
    ``a = 1 - (tr S)^2 ||T||^2 / (n (||S||^2 ||T||^2 - tr(S T)^2))`` (written out here
    independently of mechcheck.erasure, which uses the simplified form)."""
    n, d = x.shape
    xc = x - x.mean(0)
    s = xc.T @ xc / n
    t = np.trace(s) / d * np.eye(d)
    t2, s2, st = np.sum(t * t), np.sum(s * s), np.trace(s @ t)
    return float(1 - np.trace(s) ** 2 * t2 / (n * (s2 * t2 - st**2)))


def _shrunk_cov(x: np.ndarray) -> np.ndarray:
    """``a S + b T`` with ``a`` clipped to [0, 1] and ``b = (1 - a) tr(S T) / ||T||^2``."""
    n, d = x.shape
    xc = x - x.mean(0)
    s = xc.T @ xc / n
    t = np.trace(s) / d * np.eye(d)
    a = min(max(_shrinkage_weight(x), 0.0), 1.0)
    return a * s + (1 - a) * np.trace(s @ t) / np.sum(t * t) * t


def _near_isotropic(n: int, d: int, k: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features of similar variance: the shrinkage weight is far from 1 (0.6-0.75)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, size=n)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 1.5, size=d)
    return x + 0.5 * rng.normal(size=(k, d))[labels] + 3.0, labels


TOKENS, POSITIONS, FA, FB = range(4, 36), range(44, 54), 72, 73


def _token_position_feature(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows shaped like the last position of ``blocks.0.resid_post`` in
    mechcheck.zoo.planted_feature: d = 128, one-hot blocks (value 8) for a random token
    (32 dims), a random position (10 dims) and the binary feature (FA for label 1, FB
    for label 0). The other 84 coordinates are 0 and lie between the blocks, as in the
    zoo model: that layout is what made LAPACK's round-off reach them (see below)."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 2)
    x = np.zeros((n, 128))
    rows = np.arange(n)
    x[rows, TOKENS[0] + rng.integers(0, len(TOKENS), n)] = 8.0
    x[rows, POSITIONS[0] + rng.integers(0, len(POSITIONS), n)] = 8.0
    x[rows, np.where(labels == 1, FA, FB)] = 8.0
    return x, labels


SHRINK_CASES = [  # (features, n, d, k); the shrinkage weight a measured on each
    ("anisotropic", 200, 16, 2),  # a = 0.965
    ("anisotropic", 100, 64, 3),  # a = 0.938
    ("rank 10", 250, 16, 4),  # a = 0.976, rank-deficient sample covariance
    ("near-isotropic", 120, 48, 2),  # a = 0.601
    ("near-isotropic", 200, 32, 4),  # a = 0.733
    ("one-hot", 160, 128, 2),  # a = 0.904: as large as a training split of the scenario below
    ("regression", 150, 24, 1),  # a = 0.955, a numeric target
]


def _shrink_case(kind: str, n: int, d: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    seed = n + d + k
    if kind == "one-hot":
        return _token_position_feature(n, seed)
    if kind == "near-isotropic":
        return _near_isotropic(n, d, k, seed=seed)
    if kind == "regression":
        x, _ = _data(n, d, 2, seed=seed)
        rng = np.random.default_rng(seed)
        return x, x @ rng.normal(size=d) + 10 * rng.normal(size=n)
    return _data(n, d, k, seed=seed, rank=10 if kind == "rank 10" else None)


@pytest.mark.parametrize(("kind", "n", "d", "k"), SHRINK_CASES)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the package's torch.jit use
def test_shrunk_leace_matches_concept_erasure_package(kind: str, n: int, d: int, k: int) -> None:
    LeaceEraser = pytest.importorskip("concept_erasure").LeaceEraser  # dev extra

    x, labels = _shrink_case(kind, n, d, k)
    assert 0.5 < _shrinkage_weight(x) < 0.99  # unclipped, and shrinking visibly
    target = "regression" if kind == "regression" else "classes"
    z = labels[:, None] if target == "regression" else _one_hot(labels, k)
    xt = torch.tensor(x)
    # The package's defaults throughout: shrinkage on, its trace constraint (inactive on
    # these cases: erasing does not raise tr Cov) and svd_tol=0.01 (cuts nothing here).
    theirs = LeaceEraser.fit(xt, torch.tensor(z))
    ours = fit_eraser("leace", xt, labels, target=target, shrinkage=True)  # type: ignore[arg-type]
    assert ours.rank == (1 if target == "regression" else k - 1)
    scale = np.abs(x).max()
    fresh = _shrink_case(kind, n + 1, d, k)[0][:50]  # other draws of the same kind
    for data in (xt, torch.tensor(fresh)):
        np.testing.assert_allclose(ours(data).numpy(), theirs(data).numpy(), atol=1e-6 * scale)
    np.testing.assert_allclose(ours.matrix.numpy(), theirs.P.numpy(), atol=1e-6)
    plain = fit_eraser("leace", x, labels, target=target, shrinkage=False)  # type: ignore[arg-type]
    assert (ours.matrix - plain.matrix).abs().max() > 1e-3  # shrinkage changes the eraser


@pytest.mark.parametrize(("n", "d", "k", "rank"), CASES)
def test_shrunk_leace_matches_closed_form(n: int, d: int, k: int, rank: int | None) -> None:
    # LEACE is the oblique-projection optimum for whatever Cov(X) estimate it whitens with;
    # with shrinkage that is a S + (1 - a) (tr S / d) I (full rank even when S is not).
    x, labels = _data(n, d, k, seed=7 * n + d, rank=rank)
    expected = _closed_form_leace(x, _one_hot(labels, k), _shrunk_cov(x))
    got = fit_eraser("leace", x, labels.tolist(), shrinkage=True)(torch.tensor(x)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6 * np.abs(x).max())


def test_shrunk_leace_is_minimal_in_the_shrunk_metric_not_the_sample_one() -> None:
    # What shrinkage gives up: plain LEACE has the least in-sample mean squared edit among
    # erasers with Cov(r(X), Z) = 0 (test_leace_edit_is_least_squares_minimal); shrunk
    # LEACE has the least *expected* edit tr(M Sigma M^T) under its own estimate Sigma.
    x, labels = _near_isotropic(150, 20, 3, seed=31)
    z = _one_hot(labels, 3)
    mu, c, sigma = x.mean(0), _cross_cov(x, z), _shrunk_cov(x)
    shrunk = fit_eraser("leace", x, labels, shrinkage=True)
    plain = fit_eraser("leace", x, labels, shrinkage=False)

    def edits(m: np.ndarray) -> tuple[float, float]:  # (in-sample, shrunk-metric) edit
        assert np.abs(m @ c - c).max() < 1e-8 * np.abs(c).max()  # a zero-covariance eraser
        return float(np.mean(np.sum(((x - mu) @ m.T) ** 2, axis=1))), float(
            np.trace(m @ sigma @ m.T)
        )

    m_shrunk, m_plain = (np.eye(20) - e.matrix.numpy() for e in (shrunk, plain))
    sample_shrunk, metric_shrunk = edits(m_shrunk)
    sample_plain, metric_plain = edits(m_plain)
    assert sample_plain < sample_shrunk * (1 - 1e-3)  # strictly: shrinkage edits more here
    assert metric_shrunk < metric_plain * (1 - 1e-3)
    rng = np.random.default_rng(1)
    for _ in range(20):  # oblique projections onto col(C): rivals in both metrics
        b = rng.normal(size=(20, 3))
        m = c @ np.linalg.pinv(b.T @ c, rtol=1e-10) @ b.T
        assert metric_shrunk <= edits(m)[1] * (1 + 1e-9)
        assert sample_plain <= edits(m)[0] * (1 + 1e-9)


def test_shrinkage_weight_is_clipped_at_zero() -> None:
    # For white features the formula's weight scatters around 0 and can be negative (here
    # -0.048, n = d = 100); the package uses it unclipped, mechcheck clips it to 0, where
    # the estimate is (tr S / d) I and LEACE becomes the orthogonal projection:
    # mean_projection.
    x = np.random.default_rng(3).normal(size=(100, 100))
    labels = np.arange(100) % 2
    assert _shrinkage_weight(x) < -0.02
    shrunk = fit_eraser("leace", x, labels, shrinkage=True).matrix.numpy()
    np.testing.assert_allclose(
        shrunk, fit_eraser("mean_projection", x, labels).matrix.numpy(), atol=1e-10
    )
    plain = fit_eraser("leace", x, labels, shrinkage=False).matrix.numpy()
    assert np.abs(shrunk - plain).max() > 0.01


def _held_out_erased(
    x: np.ndarray, labels: np.ndarray, folds: list, method: str, shrinkage: bool = True
) -> np.ndarray:
    """Each fold's rows erased by the eraser fitted on the other folds."""
    out = np.empty_like(x)
    for train, test in folds:
        eraser = fit_eraser(method, x[train], labels[train], shrinkage=shrinkage)
        out[test] = eraser(torch.tensor(x[test])).numpy()
    return out


def _fresh_probe(x: np.ndarray, labels: np.ndarray, seed: int) -> float:
    """5-fold cross-validated accuracy of a fresh logistic regression on standardized
    features, the way mechcheck.probes (and so the erasure claim's fresh probe) fits."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    cv = StratifiedKFold(5, shuffle=True, random_state=seed + 1)
    return float(cross_val_score(probe, x, labels, cv=cv).mean())


def _feature_gap(x: np.ndarray, labels: np.ndarray, folds: list) -> float:
    """Class-mean difference of FA - FB (16 before erasure) within each held-out fold,
    averaged over the folds. (Pooled over folds it also picks up each fold's own offset,
    ``8 (2 mean(z_train) - 1)`` for plain LEACE, through the folds' class imbalance.)"""
    diff = x[:, FA] - x[:, FB]
    gaps = [diff[t][labels[t] == 1].mean() - diff[t][labels[t] == 0].mean() for _, t in folds]
    return float(np.mean(gaps))


ERASERS_OUT_OF_SAMPLE = [("leace", True), ("leace", False), ("mean_projection", True)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_held_out_erasure_leaves_no_readable_concept(seed: int) -> None:
    """The reported failure: erasers fitted on 4 of 5 folds (160 rows) of the
    token/position/feature rows, applied to the 5th, and a fresh probe on the held-out
    erased rows pooled over the folds.

    Measured, fresh probe accuracy for seeds 0, 1, 2 (chance 0.5):
    - before erasure 1.0;
    - mechcheck before this fix (plain LEACE; round-off in the constant coordinates,
      amplified by the probe's standardization): 0.99, 0.995, 0.82 (on the zoo model's
      own 200 rows, 0.77-0.99 over 8 fold seeds: the 0.935 that was reported);
    - now, leace with shrinkage (the default): 0.42, 0.37, 0.285; plain leace
      (shrinkage=False): 0.425, 0.375, 0.31; mean_projection: 0.375, 0.56, 0.42.
    Covariance shrinkage is not what fixed it: concept-erasure's own LeaceEraser, whose
    round-off reaches the constant coordinates too, reads 0.99, 0.995, 0.99 with its
    default shrinkage and 0.99, 0.99, 0.985 without. Held-out accuracy below chance is
    the usual cross-validation artefact once a fold's own rows no longer carry the label
    (each held-out fold was erased with its training folds' statistics), so the bound
    is one-sided, like the erasure claim's: accuracy <= chance + 0.1.
    """
    from sklearn.model_selection import KFold

    x, labels = _token_position_feature(200, seed)
    folds = list(KFold(5, shuffle=True, random_state=seed).split(x))  # random, like fold_of
    assert _fresh_probe(x, labels, seed) > 0.95
    const = np.ptp(x, axis=0) == 0
    for method, shrinkage in ERASERS_OUT_OF_SAMPLE:
        erased = _held_out_erased(x, labels, folds, method, shrinkage)
        accuracy = _fresh_probe(erased, labels, seed)
        assert accuracy <= 0.5 + 0.1, (method, shrinkage, accuracy)
        assert np.array_equal(erased[:, const], x[:, const])  # left exactly alone
        if method == "leace":  # FA - FB no longer differs between the classes
            gap = _feature_gap(erased, labels, folds)
            assert abs(gap) < (1e-9 if not shrinkage else 0.01 * 16), (shrinkage, gap)

    # The probe's power against what this guards: the same erasers with round-off-sized
    # (1e-16) entries in the constant coordinates' rows of L, as before the fix (signed
    # by the read-out's, which the SVD leaves arbitrary per fold).
    noise = 1e-16 * np.random.default_rng(seed).normal(size=int(const.sum()))
    out = np.empty_like(x)
    for train, test in folds:
        eraser = fit_eraser("leace", x[train], labels[train], shrinkage=False)
        left = eraser.left.numpy().copy()
        right = eraser.right.numpy()
        left[const, 0] += noise * np.sign(right[0, FA] - right[0, FB])
        noisy = replace(eraser, left=torch.from_numpy(left))
        out[test] = noisy(torch.tensor(x[test])).numpy()
    assert _fresh_probe(out, labels, seed) > 0.9


def test_balanced_folds_expose_the_shrinkage_residual() -> None:
    """With balanced folds (stratified: 20 + 20 rows each) plain LEACE is exact out of
    sample here and shrunk LEACE is not.

    The label is an exact linear function of these features, so plain LEACE's read-out
    ``R (x - mean)`` equals ``z - mean(z)`` on held-out rows too and FA - FB is the same
    on every held-out row. Shrinkage's whitening is not that exact read-out: it leaves a
    class difference of ~0.02 in FA - FB (of 16), in coordinates that erasure otherwise
    made constant, and with nothing else varying there (random folds add a per-fold
    offset that masks it) a standardizing probe reads it. Measured, fresh probe accuracy
    with data and fold seeds 0, 1, 2, 3 (this test runs seed 0): leace with shrinkage
    0.69, 0.78, 0.79, 0.635; plain leace 0.345, 0.345, 0.215, 0.31; mean_projection (for
    which FA - FB keeps a class difference of ~0.35) 0.705, 0.74, 0.765, 0.67; inlp 0.69,
    0.74, 0.65, 0.58: recorded here, not asserted. Asserted: plain LEACE's exactness and
    its fresh-probe bound, and the shrinkage residual's size.
    """
    from sklearn.model_selection import StratifiedKFold

    x, labels = _token_position_feature(200, 0)
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(x, labels))
    plain = _held_out_erased(x, labels, folds, "leace", shrinkage=False)
    assert np.ptp(plain[:, FA] - plain[:, FB]) < 1e-9
    assert _fresh_probe(plain, labels, 0) <= 0.5 + 0.1
    shrunk = _held_out_erased(x, labels, folds, "leace", shrinkage=True)
    assert 1e-3 < abs(_feature_gap(shrunk, labels, folds)) < 0.01 * 16


@pytest.mark.parametrize(
    ("method", "shrinkage"),
    [("leace", True), ("leace", False), ("mean_projection", True), ("inlp", True)],
)
def test_constant_features_are_left_exactly_alone(method: str, shrinkage: bool) -> None:
    x, labels = _token_position_feature(160, 5)
    x[:, 0] = 3.7  # a non-zero constant, whose float mean need not be exact
    eraser = fit_eraser(method, x, labels, shrinkage=shrinkage)
    const = np.ptp(x, axis=0) == 0
    assert const.sum() >= 84 and eraser.rank >= 1
    assert not eraser.left.numpy()[const].any() and not eraser.right.numpy()[:, const].any()
    fresh, _ = _token_position_feature(40, 6)
    fresh[:, 0] = 3.7
    out = eraser(torch.tensor(fresh)).numpy()
    assert np.array_equal(out[:, const], fresh[:, const])
    assert fit_eraser(method, np.ones((10, 4)), [0, 1] * 5, shrinkage=shrinkage).rank == 0


def test_mean_projection_is_orthogonal_and_removes_mean_differences() -> None:
    x, labels = _data(300, 10, 4, seed=8)
    eraser = fit_eraser("mean_projection", x, labels)
    diffs = np.stack([x[labels == c].mean(0) - x.mean(0) for c in range(4)]).T
    q, _ = np.linalg.qr(diffs[:, :3])
    np.testing.assert_allclose(eraser.matrix.numpy(), np.eye(10) - q @ q.T, atol=1e-10)


def test_random_subspace_control() -> None:
    x, _ = _data(200, 10, 2, seed=9)
    xt = torch.tensor(x)
    eraser = fit_eraser("random_subspace", xt, None, rank=3, seed=1)
    a = eraser.matrix.numpy()
    assert eraser.rank == 3 and np.linalg.matrix_rank(np.eye(10) - a) == 3
    np.testing.assert_allclose(a, a.T, atol=1e-12)  # orthogonal projection
    np.testing.assert_allclose(a @ a, a, atol=1e-12)
    np.testing.assert_allclose(eraser(eraser(xt)).numpy(), eraser(xt).numpy(), atol=1e-10)
    np.testing.assert_allclose(eraser(xt).numpy().mean(0), x.mean(0), atol=1e-10)
    again = fit_eraser("random_subspace", xt, [0, 1] * 100, rank=3, seed=1)
    assert torch.equal(again.left, eraser.left) and torch.equal(again(xt), eraser(xt))
    other = fit_eraser("random_subspace", xt, None, rank=3, seed=2)
    assert (other.matrix - eraser.matrix).abs().max() > 0.1


def test_random_subspace_is_uniform() -> None:
    # The mean projector onto a uniformly random rank-r subspace of R^d is (r / d) I.
    # Over 400 seeds each entry has sd < 0.025, so 0.1 is a 4-sd bound.
    x, _ = _data(50, 6, 2, seed=10)
    removed = [
        np.eye(6) - fit_eraser("random_subspace", x, None, rank=2, seed=s).matrix.numpy()
        for s in range(400)
    ]
    np.testing.assert_allclose(np.mean(removed, axis=0), np.eye(6) / 3, atol=0.1)


def test_inlp_is_seeded_and_bounded() -> None:
    x, labels = _data(600, 16, 3, seed=12, sep=4.0)
    first = fit_eraser("inlp", x, labels, seed=4, max_iter=3)
    assert 1 <= first.rank <= 3 * 3
    assert torch.equal(first.left, fit_eraser("inlp", x, labels, seed=4, max_iter=3).left)
    a = first.matrix.numpy()
    np.testing.assert_allclose(a @ a, a, atol=1e-10)
    np.testing.assert_allclose(a, a.T, atol=1e-10)
    assert fit_eraser("inlp", x, labels, rank=1).rank == 1


def test_inlp_stops_at_the_majority_rate() -> None:
    # Two Gaussian classes with a shared covariance: once the few directions that carry
    # the mean difference are gone, held-out accuracy falls to the majority rate and
    # INLP stops long before max_iter=20 (which would remove all 16 dimensions).
    x, labels = _data(2000, 16, 2, seed=13, sep=4.0)
    assert 1 <= fit_eraser("inlp", x, labels, seed=3).rank <= 4


@cache
def _fitted(method: str) -> Eraser:
    x, labels = _data(300, 12, 3, seed=13, sep=3.0)
    return fit_eraser(method, x, labels, rank=4 if method == "random_subspace" else None)


@pytest.mark.parametrize("method", ALL)
def test_idempotent_and_mean_preserving(method: str) -> None:
    eraser = _fitted(method)
    x, _ = _data(300, 12, 3, seed=13, sep=3.0)
    xt = torch.tensor(x)
    once = eraser(xt)
    np.testing.assert_allclose(eraser(once).numpy(), once.numpy(), atol=1e-9 * np.abs(x).max())
    np.testing.assert_allclose(once.numpy().mean(0), x.mean(0), atol=1e-9 * np.abs(x).max())


@settings(max_examples=40, deadline=None)
@given(
    method=st.sampled_from(ALL),
    lead=st.lists(st.integers(1, 4), min_size=0, max_size=3),
    dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_shapes_and_dtypes(method: str, lead: list[int], dtype: torch.dtype, seed: int) -> None:
    eraser = _fitted(method)
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(*lead, 12, generator=gen, dtype=torch.float64) * 3).to(dtype)
    out = eraser(x)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    rows = eraser(x.reshape(-1, 12).double()).reshape(x.shape)  # [n, d] path, float64
    torch.testing.assert_close(out, rows.to(dtype))


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(3, 60),
    d=st.integers(1, 10),
    k=st.integers(2, 4),
    seed=st.integers(0, 999),
    shrinkage=st.booleans(),
)
def test_leace_zeroes_cross_covariance_property(
    n: int, d: int, k: int, seed: int, shrinkage: bool
) -> None:
    x, labels = _data(n, d, k, seed=seed)
    labels[:2] = [0, 1]  # at least two classes
    erased = fit_eraser("leace", x, labels, shrinkage=shrinkage)(torch.tensor(x)).numpy()
    z = _one_hot(labels, k)
    scale = max(np.abs(_cross_cov(x, z)).max(), 1e-300)
    assert np.abs(_cross_cov(erased, z)).max() <= 1e-7 * scale


def test_batch_position_inputs_and_gradients() -> None:
    eraser = _fitted("leace")
    x = torch.randn(2, 5, 12, requires_grad=True)
    out = eraser(x)
    expected = torch.stack([eraser(x[b].detach()) for b in range(2)])
    torch.testing.assert_close(out.detach(), expected)
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


def test_to_device() -> None:
    eraser = _fitted("leace")
    moved = eraser.to("cpu")
    assert isinstance(moved, Eraser) and moved.mean.dtype == torch.float64
    assert torch.equal(moved.left, eraser.left)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_device() -> None:
    eraser = _fitted("leace")
    x = torch.randn(4, 12)
    for e in (eraser, eraser.to("cuda")):  # tensors follow x either way
        out = e(x.cuda())
        assert out.device.type == "cuda" and out.dtype == torch.float32
        torch.testing.assert_close(out.cpu(), eraser(x), rtol=1e-5, atol=1e-5)
    assert eraser.to("cuda").left.device.type == "cuda"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "leaec"}, "did you mean 'leace'"),
        ({"labels": [1] * 20}, "at least 2 classes"),
        ({"x": np.zeros((1, 4)), "labels": [0]}, "at least 2 examples"),
        ({"x": np.zeros((20,))}, r"pass \[n, d\] activations"),
        ({"labels": [0, 1] * 5}, "one label per row"),
        ({"method": "random_subspace"}, "needs rank="),
        ({"method": "random_subspace", "rank": 5}, "between 0 and d=4"),
        ({"rank": -1}, "between 0 and d=4"),
        ({"method": "inlp", "labels": np.arange(20.0), "target": "regression"}, "class labels"),
        ({"target": "regresion"}, "must be 'classes' or 'regression'"),
        ({"labels": [[0], [1]] * 10}, "hashable"),
        ({"x": np.full((20, 4), np.nan)}, "NaN"),
    ],
)
def test_errors_say_what_to_do(kwargs: dict, match: str) -> None:
    args = {
        "method": "leace",
        "x": np.random.default_rng(0).normal(size=(20, 4)),
        "labels": [0, 1] * 10,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        fit_eraser(args.pop("method"), args.pop("x"), args.pop("labels"), **args)


def test_call_rejects_wrong_width_and_integers() -> None:
    eraser = _fitted("leace")
    with pytest.raises(ValueError, match="fitted on d=12"):
        eraser(torch.zeros(3, 11))
    with pytest.raises(ValueError, match="floating-point"):
        eraser(torch.zeros(3, 12, dtype=torch.int64))
