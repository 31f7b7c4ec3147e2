"""Probes with controls (mechcheck.probes) and ``kind: probe`` (mechcheck.kinds.probes,
mechcheck.kinds.probing), checked against a second implementation written here:

- held-out scores against a hand-written nested cross-validation with scikit-learn
  (outer folds from :func:`fold_of`, the regularisation chosen by an inner GroupKFold
  loop written out below, StandardScaler + the estimator refitted on the outer training
  folds), for logistic, ridge-classifier and ridge-regression probes;
- the controls: ``control_task`` labels (one per type, the task's label distribution),
  ``shuffled`` near chance on a planted signal, ``majority`` by hand;
- the decision rule on group means at the null boundary (its level by simulation);
- the probe kind end to end on a tiny model with perturbed biases and norms: its
  examples against ``output_hidden_states`` of the HF model on token ids made by hand,
  its accuracy and selectivity against the reference, and its located errors.
"""

from __future__ import annotations

import copy
import json
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mechcheck.probes import control_task, fold_of, group_means, score_probe
from tests.conftest import assert_located_errors, claim_context, parsed

# The regularisation grids the probes promise to search (mechcheck/probes.py docs):
# logistic C, ridge alpha.  Written out here, not imported, so a change shows.
CS = (1e-2, 1e-1, 1.0)
ALPHAS = (1e-1, 10.0, 1e3)
INNER_FOLDS = 3


# -- the reference: nested cross-validation written out ----------------------------------
def _estimator(kind: str, value: float) -> Any:
    from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    est = {"logistic": lambda: LogisticRegression(C=value, max_iter=5000),
           "ridge_classes": lambda: RidgeClassifier(alpha=value),
           "ridge": lambda: Ridge(alpha=value)}[kind]()
    return make_pipeline(StandardScaler(), est)


def _inner_score(kind: str, y: np.ndarray, predicted: np.ndarray) -> float:
    if kind == "ridge":  # R^2 of the validation fold
        return float(1.0 - ((y - predicted) ** 2).sum() / ((y - y.mean()) ** 2).sum())
    return float(np.mean(predicted == y))


def _fit_nested(kind: str, x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> Any:
    """Fit on (x, y) with the grid value of the best mean inner-fold score (the first
    of ties), the inner folds a GroupKFold over the training groups."""
    from sklearn.model_selection import GroupKFold

    if kind != "ridge" and len(set(y.tolist())) < 2:
        return ("constant", y[0])
    grid = CS if kind == "logistic" else ALPHAS
    n_inner = min(INNER_FOLDS, len(set(groups.tolist())))
    best, best_score = grid[0], -np.inf
    for value in grid:
        scores = []
        for train, valid in GroupKFold(n_splits=n_inner).split(x, y, groups):
            model = _estimator(kind, value).fit(x[train], y[train])
            scores.append(_inner_score(kind, y[valid], model.predict(x[valid])))
        if np.mean(scores) > best_score:
            best, best_score = value, float(np.mean(scores))
    return _estimator(kind, best).fit(x, y)


def reference_predictions(kind: str, x: np.ndarray, y: np.ndarray, groups: np.ndarray,
                          fold: np.ndarray) -> np.ndarray:
    """Each example's prediction by the probe fitted on the other folds."""
    predicted = np.empty(len(y), dtype=y.dtype)
    for f in sorted(set(fold.tolist())):
        test = fold == f
        model = _fit_nested(kind, x[~test], y[~test], groups[~test])
        predicted[test] = (np.full(test.sum(), model[1]) if isinstance(model, tuple)
                           else model.predict(x[test]))
    return predicted


def reference_scores(kind: str, x: np.ndarray, y: np.ndarray, groups: np.ndarray,
                     fold: np.ndarray) -> np.ndarray:
    predicted = reference_predictions(kind, x, y, groups, fold)
    if kind == "ridge":
        return 1.0 - (y - predicted) ** 2 / np.mean((y - y.mean()) ** 2)
    return (predicted == y).astype(np.float64)


def _my_group_means(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    order: list[Any] = []
    members: dict[Any, list[float]] = {}
    for v, g in zip(values.tolist(), groups.tolist()):
        if g not in members:
            order.append(g)
            members[g] = []
        members[g].append(v)
    return np.asarray([np.mean(members[g]) for g in order])


def planted(n_groups: int, per_group: int, *, d: int = 5, seed: int = 0,
            noise: float = 0.8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features whose first coordinate carries the class (3 classes, strings), with
    noise, in groups of ``per_group`` examples named like group_by values."""
    rng = np.random.default_rng(seed)
    n = n_groups * per_group
    classes = rng.integers(0, 3, size=n)
    x = rng.normal(size=(n, d))
    x[:, 0] += 2.5 * classes + noise * rng.normal(size=n)
    x[:, 1] -= 0.7 * (classes == 1)
    labels = np.asarray(["red", "green", "blue"], dtype=object)[classes]
    groups = np.asarray([f"template {i // per_group}" for i in range(n)], dtype=object)
    return x, labels, groups


# -- folds and group means -----------------------------------------------------------------
def test_fold_of_deals_whole_groups_evenly_and_is_seeded() -> None:
    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 6, size=23)  # groups of unequal size, like group_by templates
    groups = np.asarray([f"t{g}" for g, s in enumerate(sizes) for _ in range(s)], dtype=object)
    rng.shuffle(groups)  # members of a group need not be adjacent
    for folds in (2, 4, 5):
        fold = fold_of(groups, folds, seed=11)
        per_group = {g: set(fold[groups == g].tolist()) for g in set(groups.tolist())}
        assert all(len(f) == 1 for f in per_group.values())  # never split
        dealt = Counter(next(iter(f)) for f in per_group.values())
        assert set(dealt) == set(range(folds))
        assert max(dealt.values()) - min(dealt.values()) <= 1  # dealt out in turn
    assert np.array_equal(fold_of(groups, 4, seed=11), fold_of(groups, 4, seed=11))
    assert any(not np.array_equal(fold_of(groups, 4, seed=11), fold_of(groups, 4, seed=s))
               for s in range(12, 15))
    with pytest.raises(ValueError, match=r"3 groups cannot be split into 5 folds; use folds: 3"):
        fold_of(np.asarray(["a", "b", "c", "a"]), 5, seed=0)


def test_group_means_are_in_order_of_first_appearance() -> None:
    rng = np.random.default_rng(0)
    groups = np.asarray(rng.choice(["z", "b", "m", "a"], size=40), dtype=object)
    values = rng.normal(size=40)
    np.testing.assert_allclose(group_means(values, groups), _my_group_means(values, groups),
                               rtol=0, atol=1e-12)


# -- held-out scores against the reference ---------------------------------------------------
def test_logistic_held_out_accuracy_equals_a_hand_written_nested_cv() -> None:
    x, labels, groups = planted(20, 3)
    scores = score_probe(x, labels, groups, folds=4, seed=2)
    fold = fold_of(groups, 4, seed=2, strata=labels)
    expected = reference_scores("logistic", x, labels, groups, fold)
    np.testing.assert_array_equal(scores.task, expected)
    assert 0.6 < expected.mean() < 1.0  # the planted class is decodable, not trivially
    assert scores.fold_task == pytest.approx([expected[fold == f].mean() for f in range(4)])
    assert scores.chance == pytest.approx(max(Counter(labels.tolist()).values()) / len(labels))
    assert scores.control is None and np.array_equal(scores.groups, groups)


def test_ridge_classifier_and_regression_equal_the_reference() -> None:
    x, labels, groups = planted(16, 3, seed=4)
    fold = fold_of(groups, 3, seed=0)  # a regression target: no strata
    linear = score_probe(x, labels, groups, probe="linear", folds=3)
    np.testing.assert_array_equal(linear.task, reference_scores(
        "ridge_classes", x, labels, groups, fold_of(groups, 3, seed=0, strata=labels)))
    rng = np.random.default_rng(5)
    y = 2.0 * x[:, 0] - x[:, 2] + rng.normal(size=len(x))
    regression = score_probe(x, y, groups, probe="linear", target="regression", folds=3)
    predicted = reference_predictions("ridge", x, y, groups, fold)
    r2 = 1.0 - ((y - predicted) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert regression.task.mean() == pytest.approx(r2, abs=1e-10)
    assert 0.5 < r2 < 1.0
    np.testing.assert_allclose(regression.task, reference_scores("ridge", x, y, groups, fold),
                               rtol=0, atol=1e-10)
    assert regression.chance == 0.0


def test_repeats_average_the_seeded_splits() -> None:
    x, _, groups = planted(12, 2, seed=6)
    y = x[:, 0] + np.random.default_rng(1).normal(size=len(x))
    three = score_probe(x, y, groups, probe="linear", target="regression", folds=3, repeats=3,
                        seed=5)
    per_seed = [reference_scores("ridge", x, y, groups, fold_of(groups, 3, seed=5 + r))
                for r in range(3)]
    np.testing.assert_allclose(three.task, np.mean(per_seed, axis=0), rtol=0, atol=1e-10)
    assert np.abs(per_seed[0] - per_seed[1]).max() > 1e-3  # the splits differ
    first = per_seed[0]
    assert three.fold_task == pytest.approx(  # per fold: the first repeat's
        [first[fold_of(groups, 3, seed=5) == f].mean() for f in range(3)])


# -- controls --------------------------------------------------------------------------------
def test_control_task_gives_one_label_per_type_from_the_label_distribution() -> None:
    from scipy.stats import chisquare

    rng = np.random.default_rng(0)
    y = rng.choice([0, 1, 2], size=3000, p=[0.6, 0.3, 0.1])
    types = np.asarray([f"w{i}" for i in rng.integers(0, 2000, size=3000)], dtype=object)
    labels = control_task(y, types, np.random.default_rng(1))
    per_type: dict[str, set[int]] = {}
    for t, label in zip(types.tolist(), labels.tolist()):
        per_type.setdefault(t, set()).add(label)
    assert all(len(v) == 1 for v in per_type.values())  # one label per type
    drawn = Counter(next(iter(v)) for v in per_type.values())
    share = np.bincount(y, minlength=3) / len(y)  # the task's label distribution
    observed = np.asarray([drawn[c] for c in range(3)])
    assert chisquare(observed, share * observed.sum()).pvalue > 1e-3
    uniform = np.full(3, observed.sum() / 3)  # what a uniform draw would give: rejected
    assert chisquare(observed, uniform).pvalue < 1e-6
    again = control_task(y, types, np.random.default_rng(1))
    other = control_task(y, types, np.random.default_rng(2))
    assert np.array_equal(labels, again) and not np.array_equal(labels, other)
    # regression: each type's value is one of the task's values
    values = rng.normal(size=3000)
    drawn_values = control_task(values, types, np.random.default_rng(3), regression=True)
    assert set(drawn_values.tolist()) <= set(values.tolist())


def test_control_task_never_gives_every_type_one_class_and_needs_two_types() -> None:
    y, types = np.asarray([0, 1, 0, 1]), np.asarray(["a", "a", "b", "b"], dtype=object)
    for seed in range(40):  # two types: half of all draws would give both the same class
        labels = control_task(y, types, np.random.default_rng(seed))
        assert labels[0] != labels[2], seed
    with pytest.raises(ValueError, match="every example has the same type.*control_by"):
        control_task(y, np.asarray(["a"] * 4, dtype=object), np.random.default_rng(0))


def test_control_task_probe_memorises_types_the_task_probe_cannot_decode() -> None:
    """Features that identify the type (each type recurring across folds) and task labels
    that are noise: the task probe is near chance, the control probe, whose labels are a
    function of the type, near perfect; selectivity is negative."""
    rng = np.random.default_rng(8)
    n, n_types = 120, 6
    types = rng.integers(0, n_types, size=n)
    x = 3.0 * np.eye(n_types)[types] + 0.3 * rng.normal(size=(n, n_types))
    y = rng.integers(0, 2, size=n)
    groups = np.arange(n)
    scores = score_probe(x, y, groups, probe="linear", folds=3, control="control_task",
                         types=types.astype(object))
    assert scores.control is not None
    assert abs(scores.task.mean() - 0.5) < 0.15
    assert scores.control.mean() > 0.9
    assert (scores.task - scores.control).mean() < -0.25


def test_shuffled_control_is_near_chance_on_a_planted_signal() -> None:
    rng = np.random.default_rng(9)
    n = 200
    y = rng.integers(0, 2, size=n)
    x = rng.normal(size=(n, 4))
    x[:, 0] += 3.0 * y
    groups = np.arange(n) // 2
    scores = score_probe(x, y, groups, probe="linear", folds=4, control="shuffled", seed=1)
    assert scores.control is not None
    assert scores.task.mean() > 0.9
    assert abs(scores.control.mean() - 0.5) < 0.12


def test_majority_control_is_the_training_folds_majority_rate() -> None:
    rng = np.random.default_rng(10)
    groups = np.asarray([f"g{i // 3}" for i in range(45)], dtype=object)
    labels = np.asarray([rng.choice(["cat", "dog", "eel"], p=[0.6, 0.3, 0.1])
                         for _ in range(15) for _ in range(3)], dtype=object)
    fold = fold_of(groups, 3, seed=4, strata=labels)
    x = rng.normal(size=(45, 3))
    scores = score_probe(x, labels, groups, probe="linear", folds=3, control="majority",
                         seed=4)
    expected = np.empty(45)
    for f in range(3):
        counts = Counter(labels[fold != f].tolist()).most_common()
        assert counts[0][1] > counts[1][1]  # no tie to break
        expected[fold == f] = labels[fold == f] == counts[0][0]
    assert scores.control is not None
    np.testing.assert_array_equal(scores.control, expected)
    fold = fold_of(groups, 3, seed=4)  # regression: unstratified
    # regression: the training folds' mean, scored as 1 - (y - mean)^2 / var(y)
    y = rng.normal(size=45) + (fold == 1)
    reg = score_probe(x, y, groups, probe="linear", target="regression", folds=3,
                      control="majority", seed=4)
    expected = np.empty(45)
    for f in range(3):
        expected[fold == f] = 1 - (y[fold == f] - y[fold != f].mean()) ** 2 / np.var(y)
    assert reg.control is not None
    np.testing.assert_allclose(reg.control, expected, rtol=0, atol=1e-12)


# -- the decision's level at the null boundary ------------------------------------------------
def _rejection_rate(test: str, sizes: list[int], p: float, sims: int, *, seed: int,
                    threshold: float | None = None) -> float:
    """How often the claim's rule (the registered ``test:``, as ctx.decide_greater calls
    it) rejects "accuracy <= threshold" on group means of Bernoulli(p) correctness."""
    from mechcheck.rules import decide_greater
    from mechcheck.session import Session
    from mechcheck.spec.schema import ClaimSpec

    registry = Session().registry
    claim = ClaimSpec(id="c", kind="probe", path="x.yaml", line=1, base_dir=".", model=None,
                      test=test, alpha=0.05)
    rng = np.random.default_rng(seed)
    rejected = 0
    for _ in range(sims):
        correct = [rng.random(s) < p for s in sizes]  # examples of one group each
        values = np.asarray([c.mean() for c in correct])
        decision = decide_greater(registry, claim, values,
                                  p if threshold is None else threshold, 99)
        rejected += decision.p_value <= claim.alpha
    return rejected / sims


EQUAL = [4] * 30
UNEQUAL = [1] * 10 + [3] * 10 + [8] * 10 + [20] * 5


@pytest.mark.parametrize("test", ["robust", "t"])
@pytest.mark.parametrize(("sizes", "threshold"), [(EQUAL, 0.7), (UNEQUAL, 0.6)],
                         ids=["equal-groups", "unequal-groups"])
def test_group_mean_rule_holds_its_level_at_the_null_boundary(
        test: str, sizes: list[int], threshold: float) -> None:
    sims = 300
    rate = _rejection_rate(test, sizes, threshold, sims, seed=1)
    assert rate <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / sims), rate
    # and it is a test: 0.2 above the threshold it rejects most of the time
    assert _rejection_rate(test, sizes, threshold + 0.2, 60, seed=2,
                           threshold=threshold) > 0.6


@pytest.mark.xfail(strict=True, reason="known: with one 0/1 example per group (at: last, "
                   "no group_by) and min_accuracy near 1, the t and robust rules reject a "
                   "true 'accuracy = 0.9' about 12% of the time at n=100 (alpha 0.05); the "
                   "probe kind therefore decides 0/1 scores by the exact binomial test")
@pytest.mark.parametrize("test", ["robust", "t"])
def test_level_with_single_example_groups_near_one(test: str) -> None:
    sims = 400
    rate = _rejection_rate(test, [1] * 100, 0.9, sims, seed=3)
    assert rate <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / sims), rate


@pytest.mark.xfail(strict=True, reason="known: values without spread give p = 0, so ten "
                   "correct rows 'establish' accuracy > 0.9 although 0.9**10 = 0.35")
def test_ten_correct_rows_do_not_establish_accuracy_above_point_nine() -> None:
    from mechcheck.stats import test_greater

    assert test_greater(np.ones(10), 0.9, alpha=0.05, test="robust",
                        n_resamples=99).p_value > 0.05


# -- kind: probe end to end on a tiny model ---------------------------------------------------
LAST_WORDS = ("cat", "dog", "house", "garden", "river", "ball", "key", "ring")
IN_SET = {"cat", "dog", "house", "garden"}


def probe_rows(n_templates: int, per_template: int = 3, *, seed: int = 0) -> list[dict]:
    """Rows of random words whose label says whether the last word is in IN_SET; each
    template holds both labels (its rows alternate), prompts of 5 and 6 words."""
    from mechcheck.testing.models import DEFAULT_WORDS

    rng = random.Random(seed)
    others = [w for w in DEFAULT_WORDS if w not in LAST_WORDS]
    inside, outside = sorted(IN_SET), sorted(set(LAST_WORDS) - IN_SET)
    rows = []
    for t in range(n_templates):
        for j in range(per_template):
            last = rng.choice(inside if (t + j) % 2 == 0 else outside)
            words = rng.sample(others, rng.choice((4, 5))) + [last]
            rows.append({"prompt": " ".join(words), "answer": rng.choice(others),
                         "positions": {"S": 2}, "label": "in" if last in IN_SET else "out",
                         "template": f"T{t}", "same": "x",
                         "length": float(len(words)) + 0.1 * j,
                         "tags": [f"k{(i + j) % 3}" for i in range(len(words) + 1)]})
    return rows


def hand_ids(tokenizer: Any, prompt: str) -> list[int]:
    """<bos> and one id per word, from the vocabulary (not the tokenizer's __call__)."""
    vocab = tokenizer.get_vocab()
    return [tokenizer.bos_token_id, *(vocab[w] for w in prompt.split())]


def hf_hidden(model: Any, ids: list[int], layer: int) -> torch.Tensor:
    """blocks.{layer}.resid_post of one prompt, ``[pos, d]``, by output_hidden_states
    (entry layer + 1; not the last block, whose entry has the final norm applied)."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return out.hidden_states[layer + 1][0].double()



@pytest.fixture(scope="module")
def gpt2(tiny_loaded: Callable[..., Any]) -> Any:
    loaded = tiny_loaded("gpt2")
    norm = loaded.model.transformer.h[0].ln_1
    assert norm.bias.abs().min() > 0 and (norm.weight - 1).abs().max() > 1e-3  # perturbed
    return loaded


@pytest.fixture(scope="module")
def reference(gpt2: Any) -> Any:
    """A copy of the fixture model for the reference forward passes: transformers 5
    installs (and keeps) its own hooks for output_hidden_states, which the shared
    model must not get."""
    return copy.deepcopy(gpt2.model)


def _probe_ctx(loaded: Any, rows: list[dict], **raw: Any) -> Any:
    from mechcheck.kinds.probes import Probe

    raw.setdefault("components", ["blocks.0.resid_post"])
    return claim_context(loaded, rows, kind="probe", **parsed(Probe, **raw))


def test_positions_of_names_last_indices_and_names_in_order(gpt2: Any) -> None:
    from mechcheck.errors import DataError

    rows = probe_rows(2)
    ctx = _probe_ctx(gpt2, rows, label="label", min_accuracy=0.5)
    for row, data in enumerate(rows):
        length = len(data["prompt"].split()) + 1
        assert ctx.positions_of(row, ("last",)) == [length - 1]
        assert ctx.positions_of(row, ("last", "S", 1, "S")) == [1, 2, length - 1]
        assert ctx.positions_of(row, (-2,)) == [length - 2]
        assert ctx.positions_of(row, None) == list(range(length))
    with pytest.raises(DataError) as info:
        ctx.positions_of(0, ("END",))
    assert info.value.key == "at" and "no position named 'END'" in info.value.message
    assert "positions: S;" in info.value.hint  # the names the rows define


def _positions(at: Any, length: int) -> list[int]:
    """The positions ``at`` names in a prompt of ``length`` tokens, written out."""
    return {"default": [length - 1], "S": [2], "S,last": [2, length - 1],
            "all": list(range(length))}[at]


@pytest.mark.parametrize(("at", "label"), [("default", "label"), ("S", "token"),
                                           ("S,last", "length"), ("all", "tags"),
                                           ("all", "previous_token")])
def test_examples_are_the_models_hidden_states_at_the_positions(
        gpt2: Any, reference: Any, at: str, label: str) -> None:
    from mechcheck.kinds.probing import examples

    rows = probe_rows(3)
    raw: dict[str, Any] = {"label": label, "group_by": "template"}
    if at != "default":
        raw["at"] = at.split(",") if "," in at else at
    if label == "length":
        raw.update(target="regression", min_r2=0.1)
    else:
        raw.update(min_accuracy=0.5)
    ctx = _probe_ctx(gpt2, rows, **raw)
    ex = examples(ctx, ctx.components()[0])
    want_x, want = [], {"labels": [], "groups": [], "types": [], "rows": [], "positions": []}
    for row, data in enumerate(rows):
        ids = hand_ids(gpt2.tokenizer, data["prompt"])
        hidden = hf_hidden(reference, ids, 0)
        for pos in _positions(at, len(ids)):
            if label == "previous_token" and pos == 0:
                continue  # no token before <bos>
            want_x.append(hidden[pos])
            want["labels"].append({"label": data["label"], "token": ids[pos],
                                   "length": data["length"], "tags": data["tags"][pos],
                                   "previous_token": ids[pos - 1]}[label])
            want["groups"].append(data["template"])
            want["types"].append(ids[pos])
            want["rows"].append(row)
            want["positions"].append(pos)
    torch.testing.assert_close(torch.from_numpy(ex.x), torch.stack(want_x), rtol=0, atol=1e-5)
    assert float(torch.stack(want_x).std()) > 0.1  # perturbed model: values of size
    for name, values in want.items():
        assert getattr(ex, name).tolist() == values, name


def test_probe_kind_equals_the_reference_and_keeps_groups(gpt2: Any, reference: Any) -> None:
    """min_accuracy: the mean over templates of each template's held-out accuracy,
    averaged over two seeded splits by template; min_selectivity against the majority
    control by hand; n is the number of templates."""
    from mechcheck.kinds.probes import Probe

    rows = probe_rows(8)
    ctx = _probe_ctx(gpt2, rows, label="label", group_by="template", folds=4, seeds=2,
                     min_accuracy=0.5, min_selectivity=0.05, control="majority")
    measured = Probe().measure(ctx.claim, ctx)
    ids = [hand_ids(gpt2.tokenizer, r["prompt"]) for r in rows]
    x = np.stack([hf_hidden(reference, i, 0)[-1].numpy() for i in ids])
    y = np.asarray([r["label"] for r in rows], dtype=object)
    groups = np.asarray([r["template"] for r in rows], dtype=object)
    task, control = np.zeros(len(y)), np.zeros(len(y))
    for r in range(2):
        fold = fold_of(groups, 4, seed=r, strata=y)
        for f in range(4):  # no fold holds part of a template
            assert set(groups[fold == f].tolist()).isdisjoint(groups[fold != f].tolist())
        task += reference_scores("logistic", x, y, groups, fold) / 2
        for f in range(4):
            majority = Counter(y[fold != f].tolist()).most_common(1)[0][0]
            control[fold == f] += (y[fold == f] == majority) / 2
    by_name = {c.name: c.decision for c in measured.criteria}
    accuracy = _my_group_means(task, groups)
    assert by_name["min_accuracy"].effect == pytest.approx(accuracy.mean(), abs=1e-12)
    assert by_name["min_accuracy"].n == 8 == len(accuracy)
    assert by_name["min_selectivity"].effect == pytest.approx(
        _my_group_means(task - control, groups).mean(), abs=1e-12)
    assert abs(task.mean() - 0.5) > 0.1  # the probe does something on this model
    assert measured.components == ("blocks.0.resid_post",)


PROBE_ERRORS = """\
model: {model}
data: rows.jsonl
claims:
  - id: unknown_label
    kind: probe
    components: ["blocks.0.resid_post"]
    label: colour
    min_accuracy: 0.6
  - id: accuracy_of_regression
    kind: probe
    components: ["blocks.0.resid_post"]
    label: length
    target: regression
    min_accuracy: 0.6
  - id: r2_of_classes
    kind: probe
    components: ["blocks.0.resid_post"]
    label: label
    min_r2: 0.3
  - id: no_threshold
    kind: probe
    components: ["blocks.0.resid_post"]
    label: label
  - id: too_many_folds
    kind: probe
    components: ["blocks.0.resid_post"]
    label: label
    group_by: template
    folds: 5
    min_accuracy: 0.6
  - id: one_type
    kind: probe
    components: ["blocks.0.resid_post"]
    label: label
    group_by: template
    control_by: same
    seeds: 1
    folds: 2
    min_selectivity: 0.1
"""


def test_probe_errors_are_located_at_their_key(tmp_path: Path,
                                               tiny_folder: Callable[..., Path]) -> None:
    from mechcheck.api import evaluate_path

    rows = probe_rows(4)
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    path = tmp_path / "test_probe_errors.yaml"
    path.write_text(PROBE_ERRORS.format(model=tiny_folder("gpt2")))
    results = {r.id: r for r in evaluate_path(path)}
    expected = {
        "unknown_label": ("label", "no column 'colour'"),
        "accuracy_of_regression": ("min_accuracy", "use min_r2"),
        "r2_of_classes": ("min_r2", "min_r2 applies to target: regression"),
        "no_threshold": ("kind", "needs a threshold"),
        "too_many_folds": ("folds", "4 groups cannot be split into 5 folds"),
        "one_type": ("control_by", "every example has the same type"),
    }
    assert_located_errors(results, expected)


# -- the exact rule the probe kind uses for 0/1 held-out scores -------------------------------
@pytest.mark.parametrize("n", [10, 20, 100, 200])
@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.9, 0.95])
def test_exact_binomial_rule_has_level_alpha_at_the_boundary(n: int, threshold: float) -> None:
    """Exactly: summed over every outcome k of n Bernoulli(threshold) rows, the rule
    rejects with probability at most alpha (a t-test on the same values does not)."""
    from scipy import stats as st

    from mechcheck.stats import test_proportion

    level = sum(st.binom.pmf(k, n, threshold) for k in range(n + 1)
                if test_proportion(np.r_[np.ones(k), np.zeros(n - k)], threshold,
                                   alpha=0.05).p_value <= 0.05)
    assert level <= 0.05 + 1e-12, level


def test_exact_rule_on_ten_correct_rows() -> None:
    from mechcheck.stats import test_proportion

    d = test_proportion(np.ones(10), 0.9, alpha=0.05)
    assert d.p_value == pytest.approx(0.9 ** 10)  # P(10 of 10 | accuracy 0.9)
    assert d.ci_low == pytest.approx(0.05 ** (1 / 10))  # Clopper-Pearson, k = n
    assert d.ci_high == 1.0 and d.method == "binomial"


def test_probe_kind_decides_single_seed_accuracy_exactly() -> None:
    from mechcheck.kinds.probes import _decide_score
    from mechcheck.kinds.probing import Examples

    ex = Examples(x=np.zeros((20, 1)), labels=np.zeros(20), groups=np.arange(20),
                  types=np.zeros(20), rows=np.arange(20), positions=np.zeros(20))

    class Ctx:  # the claim's alpha and seed are all the exact rule reads
        class claim:
            alpha, seed = 0.05, 0

        def decide_greater(self, values: Any, threshold: float) -> Any:
            raise AssertionError("0/1 scores must not go to the t/bootstrap rule")

    task = np.r_[np.ones(19), 0.0]
    d = _decide_score(Ctx(), task, ex, 0.8)  # type: ignore[arg-type]
    from scipy import stats as st

    assert d.method == "binomial"
    assert d.p_value == pytest.approx(st.binom.sf(18, 20, 0.8))


def test_stratified_folds_balance_each_class() -> None:
    """Single-row groups dealt out stratum by stratum: each class's count per fold
    differs by at most one (unstratified splits of this data do not balance them)."""
    rng = np.random.default_rng(0)
    labels = np.asarray(rng.choice(["a", "b", "c"], size=97, p=[0.5, 0.3, 0.2]), dtype=object)
    groups = np.arange(97)
    for seed in range(5):
        fold = fold_of(groups, 5, seed, strata=labels)
        for label in ("a", "b", "c"):
            counts = np.bincount(fold[labels == label], minlength=5)
            assert counts.max() - counts.min() <= 1
    spread = [max(np.ptp(np.bincount(fold_of(groups, 5, s)[labels == "a"], minlength=5))
                  for _ in range(1)) for s in range(5)]
    assert max(spread) > 1


def test_the_probe_detail_does_not_depend_on_the_hash_seed() -> None:
    """The regularisation picks are listed by count, ties by value: not in set order,
    which changes with PYTHONHASHSEED (two reports of one run differed by it)."""
    import os
    import subprocess
    import sys

    code = ("import numpy as np; from mechcheck.probes import _complexity; print(_complexity("
            "'logistic', 'classes', 4, np.array([0, 1]), "
            "['C=1', 'C=0.1', 'C=0.1', 'C=1', 'C=0.01']))")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, "PYTHONHASHSEED": str(seed)},
                              check=True).stdout for seed in range(6)}
    assert outputs == {"logistic 4->1, 5 parameters; chosen by nested CV: C=0.1, C=1, "
                       "C=0.01\n"}


def test_fold_fits_in_worker_processes_give_the_same_scores(monkeypatch: Any) -> None:
    x, labels, groups = planted(20, 3)
    runs = {}
    for jobs in ("1", "2"):
        monkeypatch.setenv("MECHCHECK_PROBE_JOBS", jobs)
        runs[jobs] = score_probe(x, labels, groups, folds=4, control="shuffled", seed=5)
    assert np.array_equal(runs["1"].task, runs["2"].task)
    assert np.array_equal(runs["1"].control, runs["2"].control)
    assert runs["1"].complexity == runs["2"].complexity


def test_a_bad_probe_jobs_value_says_what_to_set(monkeypatch: Any) -> None:
    from mechcheck.probes import probe_jobs

    monkeypatch.setenv("MECHCHECK_PROBE_JOBS", "two")
    with pytest.raises(ValueError, match="MECHCHECK_PROBE_JOBS='two' is not a whole number"):
        probe_jobs()
    monkeypatch.setenv("MECHCHECK_PROBE_JOBS", "0")
    assert probe_jobs() == 1


def test_the_folds_are_fitted_in_this_process_unless_asked(monkeypatch: Any) -> None:
    from mechcheck.probes import probe_jobs

    monkeypatch.delenv("MECHCHECK_PROBE_JOBS", raising=False)
    assert probe_jobs() == 1
