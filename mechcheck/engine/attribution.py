"""Attribution patching: first-order estimates of every component's patching effect.

Exact patching costs one forward pass per component.  Attribution patching (Nanda
2023; Syed, Rager & Conmy 2023) estimates all of them from one gradient: with ``a``
a component's activation in the base run, ``a'`` the value an intervention puts
there and ``M`` the metric,

    M(a') - M(a)  ~  (a' - a) . dM/da |_a

summed over the positions the intervention acts at (``at:``) and the component's
columns.  For ablations of the clean run (zero, mean, resample, noise) the gradient
is taken at the clean run; for interventions on the corrupt run (denoise) it is the
mirror: at the corrupt run, with ``a'`` the clean activation.  The shared clean and
corrupt runs plus one forward and backward pass give the estimate for every head,
MLP or neuron at once.

With ``ig_steps = k`` the gradient is averaged over ``k`` points of the straight path
from ``a`` to ``a'`` (integrated gradients, the idea Hanna et al. 2024 use for
edges, EAP-IG), by the midpoint rule ``alpha = (j + 1/2) / k``.  The path moves the
activations of one hook site (one layer's heads, one MLP, ...) together while every
other site keeps its base value, as Marks et al. (2024) do for features; so for an
address that is alone at its site the estimate tends to the exact patching effect as
``k`` grows, and the estimates of a site's addresses add up to the effect of
patching them all at once.  That costs ``k`` forward and backward passes per site.

Only exact patching decides claims: :func:`screen` picks the candidates that the
exact sweep then measures.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mechcheck.addresses import Address
from mechcheck.engine.hooks import Patch, hooked
from mechcheck.engine.interventions import Intervention
from mechcheck.engine.runner import Needs, position_mask
from mechcheck.errors import ClaimSpecError, MechcheckError, RunError, describe_exception

if TYPE_CHECKING:
    from mechcheck.engine.runner import Runner
    from mechcheck.metrics import Metric, MetricInputs
    from mechcheck.models.adapter import Site

__all__ = ["attribution_scores", "gradients_at", "rank_agreement", "screen"]

# A change added to some columns of a site's activation: (columns, [b, pos, width]).
Shift = Sequence[tuple[slice, torch.Tensor]]

_NOT_DIFFERENTIABLE_HINT = ("attribution needs a metric with a gradient: logit_diff, logprob "
                            "or prob (accuracy counts a top token and has none); or "
                            "measure every component exactly (method exact)")


def attribution_scores(runner: Runner, addresses: Sequence[Address],
                       intervention: Intervention, metric: Metric, *,
                       at: Sequence[int | str] | None = None, mean_by: str | None = None,
                       ig_steps: int = 0) -> np.ndarray:
    """Per prompt, the first-order estimate of the metric's change when each address
    alone is intervened on: ``[n_prompts, n_addresses]`` in row order.

    Args:
        runner: the model and data.
        addresses: concrete addresses (heads, MLPs, neurons, residual sites ...).
        intervention: what the exact patch would do (zero, mean, resample, denoise,
            a plugin's); its ``base_run`` is the run the gradient is taken in.
        metric: a differentiable metric of the last-position logits.
        at: positions where the intervention acts, as a claim's ``at:`` (None: all).
        mean_by: a data column; mean ablations then use per-value means.
        ig_steps: 0 for plain attribution patching; ``k >= 1`` averages the gradient
            over ``k`` midpoints of the path from the base to the patched values.

    Returns:
        The estimated ``M(patched) - M(base)`` (signed, in the metric's units).

    Raises:
        ClaimSpecError: an address that cannot be patched (``pattern``,
            ``pos_embed``), ``mean_by`` on an intervention that is no mean, a metric
            without a gradient, or a bad ``ig_steps``.
    """
    if isinstance(ig_steps, bool) or not isinstance(ig_steps, int) or ig_steps < 0:
        raise ClaimSpecError(f"ig_steps must be a whole number >= 0, got {ig_steps!r}",
                             key="ig_steps", hint="0 for plain attribution patching, or "
                             "e.g. 5 for integrated gradients over 5 points")
    addresses = tuple(addresses)
    adapter = runner.loaded.adapter
    for address in addresses:
        if address.site in ("pattern", "pos_embed"):
            raise ClaimSpecError(f"attribution patching cannot patch {address}",
                                 key="components", hint="use heads, their q/k/v, attn, mlp, "
                                 "neurons or residual-stream sites")
    iv = _with_mean_by(intervention, mean_by)
    base = iv.base_run
    if metric.name == "kl" and base == "clean" and ig_steps == 0:
        raise ClaimSpecError(
            "metric kl is at its minimum (0) on the clean run, so its gradient there is "
            "zero and every first-order estimate would be 0", key="metric",
            hint="use ig_steps >= 1 (integrated gradients), another metric, or exact patching")
    sites: dict[Site, list[int]] = {}
    for i, address in enumerate(addresses):
        sites.setdefault(adapter.site(address), []).append(i)
    needs = Needs(runs={"clean", base}, record={(base, s) for s in sites})
    if iv.source is not None:
        needs.record |= {(iv.source.run, s) for s in sites}
        needs.runs.add(iv.source.run)
    runner.prepare(needs)
    runs = {run: runner.shared(run) for run in needs.runs}
    inputs = metric_inputs(runner)
    dataset = runner.dataset
    out = np.zeros((len(dataset), len(addresses)))
    order = list(sites)
    for b, rows in enumerate(runner.batches):
        length = len(dataset.prompts[rows[0]])
        mask = position_mask(dataset, rows, length, at).to(runner.loaded.device)
        deltas = [_delta(runner, runs, iv, a, b, rows, length, mask) for a in addresses]
        parts = {site: [(adapter.columns(addresses[i]), deltas[i]) for i in members]
                 for site, members in sites.items()}
        objective = _objective(metric, inputs, rows)
        if ig_steps == 0:
            grads = gradients_at(runner, base, rows, order, objective)
        else:
            grads = {}
            for site in order:
                total: torch.Tensor | None = None
                for j in range(ig_steps):
                    alpha = (j + 0.5) / ig_steps
                    shift = [(cols, alpha * delta) for cols, delta in parts[site]]
                    (grad,) = gradients_at(runner, base, rows, [site], objective,
                                           shifts={site: shift}).values()
                    total = grad if total is None else total + grad
                assert total is not None
                grads[site] = total / ig_steps
        for i, address in enumerate(addresses):
            grad = grads[adapter.site(address)][..., adapter.columns(address)]
            score = (deltas[i].double() * grad.double()).sum(dim=(1, 2))
            out[rows, i] = score.cpu().numpy()
    return out


def gradients_at(runner: Runner, base: str, rows: np.ndarray, sites: Sequence[Site],
                 objective: Any, *, shifts: dict[Site, Shift] | None = None,
                 ) -> dict[Site, torch.Tensor]:
    """The gradient of ``objective`` at each site's activation ``[b, pos, width]`` in one
    forward and backward pass over the ``base`` prompts ``rows``, with ``shifts[site]``
    (pairs of the site's columns and a ``[b, pos, len(columns)]`` change) added to that
    site's activation first.

    ``objective(logits [b, vocab]) -> [b]`` is one value per prompt (prompts do not
    interact, so the gradient of the sum is each prompt's own).  The hooks are
    installed by :func:`mechcheck.engine.hooks.hooked` and removed on every path.

    Raises:
        ClaimSpecError: the objective does not depend on the logits through a
            gradient (``key="metric"``).
        RunError: the forward or backward pass failed.
    """
    shifts = shifts or {}
    carriers: dict[Site, torch.Tensor] = {}

    def adder(site: Site) -> Patch:
        def patch(act: torch.Tensor) -> torch.Tensor:
            if shifts.get(site):
                act = act.clone()
                for cols, change in shifts[site]:
                    act[..., cols] = act[..., cols] + change.to(act.dtype)
            carrier = torch.zeros_like(act, requires_grad=True)
            carriers[site] = carrier
            return act + carrier
        return patch

    prompts = runner.dataset.prompts if base == "clean" else runner.dataset.corrupts
    assert prompts is not None
    ids = torch.tensor([prompts[int(r)] for r in rows], dtype=torch.long,
                       device=runner.loaded.device)
    model = runner.loaded.model
    kwargs: dict[str, Any] = {"use_cache": False}
    unembed = runner.loaded.adapter.site(Address("unembed"))
    if unembed not in set(sites) and "logits_to_keep" in _parameters(model):
        kwargs["logits_to_keep"] = 1
    try:
        with hooked(runner.loaded.adapter, patches={s: adder(s) for s in sites}), \
                torch.enable_grad():
            logits = model(input_ids=ids, **kwargs).logits[:, -1].float()
            values = objective(logits)
            if not values.requires_grad:
                raise ClaimSpecError(
                    f"metric {getattr(objective, 'metric_name', '?')} is not "
                    "differentiable: its values do not depend on the logits through a "
                    "gradient", key="metric", hint=_NOT_DIFFERENTIABLE_HINT)
            grads = torch.autograd.grad(values.sum(), [carriers[s] for s in sites],
                                        allow_unused=True)
    except MechcheckError:
        raise
    except Exception as exc:  # noqa: BLE001 - the model's or a metric's failure, named
        raise RunError(f"the gradient run for attribution patching failed: "
                       f"{describe_exception(exc)}", hint="the model or the metric raised "
                       "this during the forward or backward pass") from exc
    return {site: (torch.zeros_like(carriers[site]) if grad is None else grad.detach())
            for site, grad in zip(sites, grads)}


def screen(runner: Runner, specs_addresses: Sequence[Address | Sequence[Address]],
           intervention: Intervention, metric: Metric, *, top_k: int,
           at: Sequence[int | str] | None = None, mean_by: str | None = None,
           ig_steps: int = 0) -> tuple[tuple[int, ...], np.ndarray]:
    """Which of several claims' components to confirm by exact patching.

    Each entry of ``specs_addresses`` is one claim's component(s) (an address, or the
    addresses patched together, whose first-order estimates add up).  Its estimate is
    the mean over the prompts of the estimated *drop*: the metric's fall when it is
    ablated (its rise for a lower-is-better metric such as kl), as kind necessary
    measures it exactly.

    Returns:
        ``(kept, estimates)``: the indices of the ``top_k`` largest estimated drops,
        in ascending index order (ties go to the earlier entry), and the estimate of
        every entry, ``[len(specs_addresses)]``.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ClaimSpecError(f"top_k must be a whole number >= 1, got {top_k!r}",
                             key="top_k", hint="the number of components to confirm by "
                             "exact patching, e.g. 10")
    groups = [(a,) if isinstance(a, Address) else tuple(a) for a in specs_addresses]
    flat = [a for group in groups for a in group]
    per_prompt = attribution_scores(runner, flat, intervention, metric, at=at,
                                    mean_by=mean_by, ig_steps=ig_steps)
    sign = 1.0 if metric.higher_is_better else -1.0
    mean_change = per_prompt.mean(axis=0)
    estimates = np.empty(len(groups))
    start = 0
    for g, group in enumerate(groups):
        estimates[g] = -sign * mean_change[start:start + len(group)].sum()
        start += len(group)
    ranked = sorted(range(len(groups)), key=lambda g: (-estimates[g], g))
    return tuple(sorted(ranked[:top_k])), estimates


def rank_agreement(estimate: Sequence[float], exact: Sequence[float], *,
                   top: int) -> tuple[float, float]:
    """How well an estimate ranks components as the exact effects do: Spearman's rank
    correlation over all of them, and the share of the exact top-``top`` that the
    estimate's top-``top`` holds (ties broken by position)."""
    from scipy.stats import spearmanr

    est, ex = np.asarray(estimate, dtype=float), np.asarray(exact, dtype=float)
    if est.shape != ex.shape or est.ndim != 1 or est.size < 2:
        raise ValueError("rank agreement needs two equal-length lists of at least 2 effects")
    top = max(1, min(int(top), est.size))
    rho = float(spearmanr(est, ex).statistic) if np.ptp(est) and np.ptp(ex) else float("nan")
    by_est = set(np.argsort(-est, kind="stable")[:top].tolist())
    by_exact = set(np.argsort(-ex, kind="stable")[:top].tolist())
    return rho, len(by_est & by_exact) / top


def metric_inputs(runner: Runner) -> MetricInputs:
    """What a metric reads besides the logits, for every row of ``runner``'s data."""
    from mechcheck.metrics import MetricInputs

    ds = runner.dataset
    return MetricInputs(answers=torch.as_tensor(ds.answers),
                        wrongs=None if ds.wrongs is None else torch.as_tensor(ds.wrongs),
                        clean_logits=runner.logits("clean"), columns=ds.columns,
                        tokenizer=runner.loaded.tokenizer)


# -- plumbing ----------------------------------------------------------------------
def _with_mean_by(iv: Intervention, mean_by: str | None) -> Intervention:
    if mean_by is None:
        return iv
    if iv.source is None or iv.source.reduce != "mean":
        raise ClaimSpecError(f"mean_by applies to mean ablations, not to '{iv.name}'",
                             key="mean_by", hint="use ablation: mean or mean_corrupt, or "
                             "remove mean_by")
    return iv.with_mean_by(mean_by)


def _objective(metric: Metric, inputs: MetricInputs, rows: np.ndarray) -> Any:
    from mechcheck.metrics import MetricInputs

    index = torch.as_tensor(np.asarray(rows, dtype=np.int64))
    part = MetricInputs(
        answers=inputs.answers[index],
        wrongs=None if inputs.wrongs is None else inputs.wrongs[index],
        clean_logits=inputs.clean_logits[index.to(inputs.clean_logits.device)],
        columns={k: tuple(v[int(r)] for r in rows) for k, v in inputs.columns.items()},
        tokenizer=inputs.tokenizer)

    def objective(logits: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(metric(logits, part))

    objective.metric_name = metric.name  # type: ignore[attr-defined]
    return objective


def _delta(runner: Runner, runs: dict[str, Any], iv: Intervention, address: Address,
           batch: int, rows: np.ndarray, length: int, mask: torch.Tensor) -> torch.Tensor:
    """``a' - a`` of one address for one batch at the masked positions, else 0."""
    current = _expanded(runs[iv.base_run].per_batch(address)[batch], len(rows))
    source: torch.Tensor | None = None
    if iv.source is not None:
        if iv.source.reduce is None:
            source = _expanded(runs[iv.source.run].per_batch(address)[batch], len(rows))
        else:
            means = runner.means(address, iv.source.run, iv.source.by)
            keys = [None] * len(rows) if iv.source.by is None else [
                runner.dataset.columns[iv.source.by][int(r)] for r in rows]
            source = torch.stack([means[k][:length] for k in keys]).to(current.device)
    replacement = iv.replace(current, source).to(current.dtype)
    keep = mask.view(*mask.shape, 1).to(current.device)
    return torch.where(keep, replacement - current, torch.zeros_like(current))


def _expanded(tensor: torch.Tensor, n: int) -> torch.Tensor:
    return tensor.expand(n, *tensor.shape[1:]) if tensor.shape[0] == 1 and n != 1 else tensor


def _parameters(model: Any) -> set[str]:
    return set(inspect.signature(model.forward).parameters)
