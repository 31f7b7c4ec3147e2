"""Tests for mechcheck.erasure: LEACE against the concept-erasure package and a closed
form, the zero-covariance guarantee, probes at the majority rate after erasure, the
least-squares optimality of LEACE, and the random-subspace control."""

from __future__ import annotations

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


def _closed_form_leace(x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """r(X) from the oblique-projection form of the LEACE optimum:
    M = C (C^T S^+ C)^+ C^T S^+ with S = Cov(X), C = Cov(X, Z)."""
    mu = x.mean(0)
    s_pinv = np.linalg.pinv(np.cov(x.T), hermitian=True, rtol=1e-10)
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
    ours = fit_eraser("leace", xt, labels)
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
    got = fit_eraser("leace", x, labels.tolist())(torch.tensor(x)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6 * np.abs(x).max())


@pytest.mark.parametrize(("n", "d", "k", "rank"), CASES)
@pytest.mark.parametrize("method", ["leace", "mean_projection"])
def test_cross_covariance_is_zeroed(n: int, d: int, k: int, rank: int | None, method: str) -> None:
    x, labels = _data(n, d, k, seed=n * k + d, rank=rank)
    names = np.array(["cat", "dog", "eel", "fox"])[labels]  # any hashable labels
    erased = fit_eraser(method, torch.tensor(x), names)(torch.tensor(x)).numpy()
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

    leace = cost(fit_eraser("leace", x, labels)(torch.tensor(x)).numpy())
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
    eraser = fit_eraser("leace", torch.tensor(x), torch.tensor(target), target="regression")
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
        fit_eraser("leace", x, two, target="regression")(torch.tensor(x)).numpy(),
        _closed_form_leace(x, two),
        atol=1e-6 * np.abs(x).max(),
    )


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
@given(n=st.integers(3, 60), d=st.integers(1, 10), k=st.integers(2, 4), seed=st.integers(0, 999))
def test_leace_zeroes_cross_covariance_property(n: int, d: int, k: int, seed: int) -> None:
    x, labels = _data(n, d, k, seed=seed)
    labels[:2] = [0, 1]  # at least two classes
    erased = fit_eraser("leace", x, labels)(torch.tensor(x)).numpy()
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
