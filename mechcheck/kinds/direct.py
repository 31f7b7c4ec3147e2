"""Direct logit attribution: ``kind: direct_effect``.

The residual stream at the read position is a sum of what the components wrote:
``x = embeddings + sum_L (attn_L + mlp_L)``.  The final norm is affine in ``x`` once
its divisor ``s = scale(x)`` is fixed, so with ``s`` frozen at the clean run's value
the logit difference splits into one term per summand:

    LD = sum_c  N_lin(c; s) . (u_answer - u_wrong)  +  b_norm . (u_answer - u_wrong)
         + (b_unembed[answer] - b_unembed[wrong])

(``N_lin`` the norm's linear part, ``u`` the unembedding rows; with ``target: answer``
the answer's row and logit alone).  A component's *direct effect* is its term: what
it writes straight into the logits, not through later components.  A head's output
is its slice of the output projection's input times the projection's matching
columns (the projection's bias is a term of its own, ``blocks.L.attn bias``); a
neuron's is its activation times the down projection's column.

The claim decides the direct effect of the components (summed, when there are
several) per prompt: ``min_effect`` (it exceeds) or ``max_effect`` (an equivalence
test: it is within +-max_effect, "writes nothing directly").  ``relative_to: total``
adds the total effect, the drop of the same logit difference when the components are
ablated (``ablation:``, zero by default, at every position) and reads it at the same
position: ``min_share`` claims the direct effect is at least that share of the total,
``max_share`` that it is below it (the component acts mostly through later ones).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mechcheck.addresses import Address
from mechcheck.errors import ClaimSpecError, DataError
from mechcheck.kinds.base import (
    COMPONENTS,
    RATIO_METHODS,
    Criterion,
    Measurement,
    all_of,
    as_positive,
    keys,
)
from mechcheck.spec.schema import KeySpec, as_choice, as_components, as_number, as_positions, as_str

if TYPE_CHECKING:
    from mechcheck.engine.context import ClaimContext
    from mechcheck.engine.runner import Needs
    from mechcheck.models.adapter import ModelAdapter
    from mechcheck.spec.schema import ClaimSpec

__all__ = ["ATTRIBUTABLE", "DirectEffect", "component_output", "decomposition",
           "direct_effects", "direction_of", "read_positions"]

ATTRIBUTABLE = ("embed", "pos_embed", "attn", "mlp", "head", "neuron")
"""The sites whose output is a summand of the residual stream, so has a direct effect."""

TARGETS = ("logit_diff", "answer")


# -- what a component adds to the residual stream ------------------------------------------
def _check_attributable(adapter: ModelAdapter, address: Address,
                        key: str = "components") -> None:
    if address.site not in ATTRIBUTABLE:
        raise ClaimSpecError(
            f"{address} is not something a component writes into the residual stream, so "
            "it has no direct effect",
            hint="give a component's output: embed, pos_embed, blocks.L.attn, "
            "blocks.L.attn.head.H, blocks.L.mlp or blocks.L.mlp.neuron.N (the residual "
            "stream itself is what kind: decodes reads)", key=key)
    arch = adapter.arch
    normed = arch.attn_out if address.site == "head" else \
        arch.mlp_out if address.site == "neuron" else None
    if normed is not None:
        whole = "attn" if address.site == "head" else "mlp"
        raise ClaimSpecError(
            f"{address}: in {arch.name} the block's output passes through a norm "
            f"({normed}) after the projection, so a single {address.site}'s share of it is "
            "not defined", key=key,
            hint=f"use the whole layer, blocks.{address.layer}.{whole}")


def _projection(adapter: ModelAdapter, address: Address) -> torch.nn.Module:
    return adapter.module(adapter.site(address).module)


def component_output(adapter: ModelAdapter, address: Address | str,
                     recorded: torch.Tensor) -> torch.Tensor:
    """What ``address`` adds to the residual stream, ``[pos, d_model]`` float64, from
    its recorded activation ``recorded`` ``[pos, width]`` (as
    :meth:`~mechcheck.engine.runs.RunResult.activations` gives it).

    ``embed``, ``pos_embed``, ``blocks.L.attn`` and ``blocks.L.mlp`` are recorded as
    they enter the stream (output biases included).  A head is recorded as its slice
    of the output projection's input, so its output is that slice times the
    projection's columns for it (no bias); a neuron likewise through the down
    projection.  Handles ``nn.Linear`` (weight ``[out, in]``) and GPT-2's ``Conv1D``
    (weight ``[in, out]``).

    Raises:
        ClaimSpecError: the address is not a component's output (``resid_post``,
            ``q``, a pattern ...), or the architecture norms the block output after
            the projection (Gemma 2/3), so a head's or neuron's share is undefined.
    """
    address = Address.parse(address)
    _check_attributable(adapter, address)
    values = recorded.detach().double().cpu()
    if address.site not in ("head", "neuron"):
        return values
    module = _projection(adapter, address)
    weight: torch.Tensor = module.weight  # type: ignore[assignment]
    weight = weight.detach().double().cpu()
    cols = adapter.columns(address)
    if isinstance(module, torch.nn.Linear):
        return values @ weight[:, cols].T
    return values @ weight[cols, :]  # Conv1D keeps [in, out]


def projection_bias(adapter: ModelAdapter, layer: int, which: str = "attn") -> torch.Tensor:
    """``[d_model]`` float64: the bias of layer ``layer``'s attention output projection
    (``which="attn"``) or MLP down projection (``"mlp"``); zero when it has none."""
    address = Address("head" if which == "attn" else "neuron", layer, 0)
    bias = getattr(_projection(adapter, address), "bias", None)
    if bias is None:
        return torch.zeros(adapter.dims.d_model, dtype=torch.float64)
    return bias.detach().double().cpu()


# -- reading positions and directions ------------------------------------------------------
def read_positions(ctx: ClaimContext, at: Sequence[int | str] | None = None) -> list[int]:
    """Per row, the one token index ``at`` names (default ``last``).

    Raises:
        ClaimSpecError: ``at`` names more than one position in some row.
    """
    at = tuple(at) if at else ("last",)
    out = []
    for row in range(len(ctx.dataset)):
        found = ctx.positions_of(row, at)
        if len(found) != 1:
            raise ClaimSpecError(
                f"at: {list(at)} names {len(found)} positions in row {row}; a direct "
                "effect is read at one position", key="at",
                hint="give one position: last (the default), an index or a name")
        out.append(found[0])
    return out


def target_of(ctx: ClaimContext, target: str | None = None) -> str:
    """``logit_diff`` or ``answer``: the claim's ``target:``, else ``logit_diff`` when
    the data has a wrong column and ``answer`` when it has none."""
    target = target or ctx.params.get("target")
    if target is None:
        return "answer" if ctx.dataset.wrongs is None else "logit_diff"
    if target == "logit_diff" and ctx.dataset.wrongs is None:
        raise DataError("target: logit_diff needs a 'wrong' column in the data",
                        key="target", hint="add a wrong (contrast) token to every row, or "
                        "use target: answer (the answer's own logit)")
    return target


def direction_of(ctx: ClaimContext, target: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the unembedding direction ``[n, d_model]`` (``u_answer - u_wrong``, or
    ``u_answer``) and the unembedding bias term ``[n]``, float64."""
    lens = ctx.lens
    answers = torch.as_tensor(ctx.dataset.answers)
    direction, bias = lens.directions(answers), lens.unembed_bias(answers)
    if target == "logit_diff":
        wrongs = torch.as_tensor(ctx.dataset.wrongs)
        direction = direction - lens.directions(wrongs)
        bias = bias - lens.unembed_bias(wrongs)
    return direction, bias


def _final(ctx: ClaimContext) -> Address:
    """The residual stream that enters the final norm: the last block's output."""
    return Address("resid_post", ctx.model.adapter.dims.n_layers - 1)


class _Reader:
    """The clean run's frozen norm scale and direction at each row's read position."""

    def __init__(self, ctx: ClaimContext, record: Sequence[Address],
                 at: Sequence[int | str] | None, target: str | None) -> None:
        self.ctx = ctx
        self.target = target_of(ctx, target)
        self.positions = read_positions(ctx, at)
        final = _final(ctx)
        self.run = ctx.recorded("clean", [final, *record])
        finals = self.run.activations(final)
        self.resid = torch.stack([finals[i][p].double().cpu()
                                  for i, p in enumerate(self.positions)])
        self.norm = ctx.lens.norm
        self.scale = self.norm.scale(self.resid)  # [n, 1]
        self.direction, self.unembed_bias = direction_of(ctx, self.target)

    def effect(self, written: torch.Tensor) -> np.ndarray:
        """Per row, the direct effect of ``written`` ``[n, d_model]`` (at the read
        positions) through the frozen norm onto the direction."""
        lin = self.norm.linear(written, self.scale)
        return (lin * self.direction).sum(-1).numpy()

    def of(self, address: Address) -> np.ndarray:
        adapter = self.ctx.model.adapter
        acts = self.run.activations(address)
        written = torch.stack([component_output(adapter, address, acts[i][p:p + 1])[0]
                               for i, p in enumerate(self.positions)])
        return self.effect(written)

    def constant(self, vector: torch.Tensor) -> np.ndarray:
        """The direct effect of a vector written at every position (a bias)."""
        return self.effect(vector.double().expand(len(self.positions), -1))


def direct_effects(ctx: ClaimContext, components: Sequence[Address | str], *,
                   at: Sequence[int | str] | None = None,
                   target: str | None = None, key: str = "components",
                   ) -> dict[str, np.ndarray]:
    """Per component (patterns expanded), its direct effect per prompt: its output at
    the read position ``at`` (default last), through the final norm with the clean
    run's scale there frozen, dotted with the target direction (``logit_diff``:
    ``u_answer - u_wrong``; ``answer``: ``u_answer``).

    Raises:
        ClaimSpecError: a component that writes nothing to the residual stream (at
            ``components``), or ``at`` naming several positions.
        DataError: ``target: logit_diff`` without a wrong column.
    """
    addresses = ctx.resolve(list(components), key)
    for address in addresses:
        _check_attributable(ctx.model.adapter, address, key)
    reader = _Reader(ctx, addresses, at, target)
    return {str(a): reader.of(a) for a in addresses}


def decomposition(ctx: ClaimContext, *, heads: bool = False,
                  at: Sequence[int | str] | None = None,
                  target: str | None = None) -> dict[str, np.ndarray]:
    """The clean run's target logit (difference) at ``at`` split into direct effects
    that sum to it: ``embeddings`` (the first block's input), every layer's
    ``blocks.L.attn`` (with ``heads=True``: its heads and ``blocks.L.attn bias``, the
    output projection's bias) and ``blocks.L.mlp``, ``ln_final bias`` and
    ``unembed bias``.  Per term, one value per prompt."""
    adapter = ctx.model.adapter
    n_layers, n_heads = adapter.dims.n_layers, adapter.dims.n_heads
    layers = []
    for layer in range(n_layers):
        parts = [Address("head", layer, h) for h in range(n_heads)] if heads \
            else [Address("attn", layer)]
        for part in parts:
            _check_attributable(adapter, part)
        layers.append(parts + ([Address("mlp", layer)] if adapter.dims.d_mlp else []))
    embeddings = Address("resid_pre", 0)
    reader = _Reader(ctx, [embeddings, *(a for parts in layers for a in parts)], at, target)
    acts = reader.run.activations(embeddings)
    terms = {"embeddings": reader.effect(torch.stack(
        [acts[i][p].double().cpu() for i, p in enumerate(reader.positions)]))}
    for layer, parts in enumerate(layers):
        for part in parts:
            terms[str(part)] = reader.of(part)
            if heads and part.site == "head" and part.index == n_heads - 1:
                terms[f"blocks.{layer}.attn bias"] = reader.constant(
                    projection_bias(adapter, layer, "attn"))
    terms["ln_final bias"] = (reader.norm.bias * reader.direction).sum(-1).numpy()
    terms["unembed bias"] = reader.unembed_bias.numpy()
    return terms


def target_logits(ctx: ClaimContext, logits: Sequence[torch.Tensor] | torch.Tensor,
                  target: str) -> np.ndarray:
    """Per row, the target (answer - wrong logit, or the answer's logit) of the logits
    at the read position (``logits``: one ``[vocab]`` row per prompt)."""
    ds = ctx.dataset
    rows = torch.stack([torch.as_tensor(x).double().cpu() for x in logits])
    index = torch.arange(len(ds))
    value = rows[index, torch.as_tensor(ds.answers)]
    if target == "logit_diff":
        value = value - rows[index, torch.as_tensor(ds.wrongs)]
    return value.numpy()


def total_effects(ctx: ClaimContext, components: Sequence[Address | str], ablation: str, *,
                  at: Sequence[int | str] | None = None,
                  target: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The clean target at the read position, and its drop when ``components`` are
    ablated together (intervention ``ablation``, at every position): per prompt."""
    target = target_of(ctx, target)
    positions = read_positions(ctx, at)
    iv = ctx.intervention(ablation, base="clean", key="ablation")
    addresses = ctx.resolve(list(components), "components")
    last = tuple(at or ("last",)) == ("last",)
    mode = "last" if last else "all"

    def read(result: Any) -> np.ndarray:
        if last:
            return target_logits(ctx, result.logits, target)
        return target_logits(ctx, [lg[p] for lg, p in zip(result.all_logits, positions)],
                             target)

    clean = read(ctx.shared("clean") if last else ctx.run("clean", positions="all"))
    ablated = read(ctx.run("clean", dict.fromkeys(addresses, iv), positions=mode))
    return clean, clean - ablated


# -- the claim kind ---------------------------------------------------------------------
def _as_share(value: Any) -> float:
    number = as_number(value)
    if not 0.0 < number < 1.0:
        raise ValueError(f"got {value!r}; a share between 0 and 1 (exclusive)")
    return number


class DirectEffect:
    """The components write the target straight into the logits (direct logit
    attribution through the final norm with its clean scale frozen)."""

    name = "direct_effect"
    description = ("the components' output at the read position, through the final norm "
                   "with its clean scale frozen, moves the answer's logit (difference) by "
                   "more than min_effect (or by less than max_effect)")
    keys = keys(
        COMPONENTS,
        KeySpec(name="at", parse=as_positions,
                expected="the one position the effect is read at: last (the default), an "
                "index or a position name from the data"),
        KeySpec(name="target", parse=as_choice(*TARGETS),
                expected="logit_diff (answer minus wrong; the default when the data has a "
                "wrong column) or answer (the answer's logit)"),
        KeySpec(name="min_effect", parse=as_number,
                expected="a number: the least mean direct effect, in logits"),
        KeySpec(name="max_effect", parse=as_positive,
                expected="a positive number: the largest |direct effect| that counts as "
                "none (an equivalence test)"),
        KeySpec(name="relative_to", parse=as_choice("total"),
                expected="total: also compare with the total effect of ablating the "
                "components"),
        KeySpec(name="ablation", parse=as_str, default="zero",
                expected="the intervention for the total effect: zero (the default), "
                "mean, resample (or a plugin's)"),
        KeySpec(name="min_share", parse=_as_share,
                expected="with relative_to: total, a share in (0, 1): the direct effect "
                "is more than this share of the total effect"),
        KeySpec(name="max_share", parse=_as_share,
                expected="with relative_to: total, a share in (0, 1): the direct effect "
                "is less than this share of the total effect"),
        KeySpec(name="curve", parse=as_components,
                expected='components whose direct effects the report draws, e.g. '
                '["blocks.*.attn.head.*"]'),
    )

    def needs(self, claim: ClaimSpec, ctx: ClaimContext) -> Needs:
        p = claim.params
        addresses = [*ctx.components(), _final(ctx)]
        if p.get("curve"):
            addresses += ctx.resolve(list(p["curve"]), "curve")
        needs = ctx.record_needs("clean", addresses)
        if p.get("relative_to"):
            needs.update(ctx.ablation_needs(p["ablation"], base="clean"))
        return needs

    def measure(self, claim: ClaimSpec, ctx: ClaimContext) -> Measurement:
        p = claim.params
        _check_keys(p)
        at, components = p.get("at"), ctx.components()
        target = target_of(ctx)
        per = direct_effects(ctx, components, at=at, target=target)
        direct = np.sum(list(per.values()), axis=0)
        where = ", ".join(map(str, at)) if at else "last"
        unit = "logit difference" if target == "logit_diff" else "answer logit"
        criteria: list[Criterion] = []
        detail = f"mean direct effect {direct.mean():.4g}"
        if len(per) > 1:
            detail += " (sum of " + ", ".join(f"{k} {v.mean():.3g}" for k, v in per.items()) + ")"
        if p.get("min_effect") is not None:
            criteria.append(Criterion(
                name="min_effect", decision=ctx.decide_greater(direct, p["min_effect"]),
                expected=f"direct effect on {unit} > {p['min_effect']:.4g}", detail=detail))
        if p.get("max_effect") is not None:
            criteria.append(_negligible(claim, ctx, direct, p["max_effect"], unit, detail))
        label = f"direct logit attribution at {where} (final norm's clean scale frozen)"
        extra: dict[str, np.ndarray] = {}
        if p.get("relative_to") == "total":
            clean, total = total_effects(ctx, components, p["ablation"], at=at, target=target)
            criteria.append(_share(claim, ctx, direct, total))
            label += f" against {p['ablation']} ablation at every position"
            ctx.keep("clean", clean)
            ctx.keep("_base", clean)
            ctx.keep("patched", clean - total)
            extra["total_effect"] = total
        ctx.keep("score", direct)
        profile = _profile(ctx, p.get("curve"), at, target)
        return Measurement(decision=all_of(criteria).decision, intervention=label + " of",
                           metric=target, components=ctx.component_names(),
                           expected="; ".join(c.expected for c in criteria),
                           criteria=tuple(criteria), profile=profile)


def _check_keys(p: Mapping[str, Any]) -> None:
    shares = [k for k in ("min_share", "max_share") if p.get(k) is not None]
    if p.get("min_effect") is not None and p.get("max_effect") is not None:
        raise ClaimSpecError("give min_effect or max_effect, not both", key="max_effect",
                             hint="min_effect: the component writes the answer; max_effect: "
                             "it writes (almost) nothing directly")
    if p.get("relative_to") == "total" and len(shares) != 1:
        raise ClaimSpecError("relative_to: total needs one of min_share and max_share",
                             key="relative_to", hint="e.g. max_share: 0.5 (the direct effect "
                             "is less than half the total: it acts through later components)")
    if shares and p.get("relative_to") != "total":
        raise ClaimSpecError(f"{shares[0]} compares with the total effect, so it needs "
                             "relative_to: total", key=shares[0],
                             hint="add relative_to: total (and ablation:, zero by default)")
    if p.get("min_effect") is None and p.get("max_effect") is None and not shares:
        raise ClaimSpecError("a direct_effect claim needs min_effect, max_effect or "
                             "relative_to: total with min_share or max_share",
                             key="min_effect", hint="e.g. min_effect: 1.0")


def _negligible(claim: ClaimSpec, ctx: ClaimContext, direct: np.ndarray, margin: float,
                unit: str, detail: str) -> Criterion:
    from mechcheck.stats import test_inside

    ctx.require_test(("robust", "t"), "max_effect is decided by two one-sided tests: "
                     "test: robust (the default) or test: t")
    decision = test_inside(direct, margin, alpha=claim.alpha, seed=claim.seed,
                           test="t" if claim.test == "t" else "robust",
                           n_resamples=ctx.n_resamples)
    return Criterion(name="max_effect", decision=decision,
                     expected=f"|direct effect on {unit}| < {margin:.4g}", detail=detail)


def _share(claim: ClaimSpec, ctx: ClaimContext, direct: np.ndarray,
           total: np.ndarray) -> Criterion:
    from mechcheck.stats import test_ratio

    ctx.require_test(("robust", "t", "bootstrap"), "the share of the total effect is a "
                     "ratio: test: robust (the default), t (Fieller) or bootstrap")
    p = claim.params
    method = RATIO_METHODS[claim.test]
    share = float(direct.mean() / total.mean()) if total.mean() != 0 else float("nan")
    detail = (f"mean direct effect {direct.mean():.4g}, mean total effect "
              f"{total.mean():.4g} (share {share:.3g})")
    if p.get("min_share") is not None:
        key, threshold = "min_share", p["min_share"]
        decision = ctx.stats_call(key, test_ratio, direct, total, threshold,
                                  alpha=claim.alpha, seed=claim.seed,
                                  n_resamples=ctx.n_resamples, method=method)
        expected = f"direct / total effect > {threshold:.4g}"
    else:
        # direct / total < R  <=>  (total - direct) / total > 1 - R: the indirect share
        key, threshold = "max_share", p["max_share"]
        decision = ctx.stats_call(key, test_ratio, total - direct, total, 1.0 - threshold,
                                  alpha=claim.alpha, seed=claim.seed,
                                  n_resamples=ctx.n_resamples, method=method)
        expected = (f"direct / total effect < {threshold:.4g} (indirect share "
                    f"(total - direct) / total > {1.0 - threshold:.4g})")
    return Criterion(name=key, decision=decision, expected=expected, detail=detail)


def _profile(ctx: ClaimContext, curve: Sequence[str] | None, at: Sequence[int | str] | None,
             target: str) -> tuple[dict[str, Any], ...]:
    """One point per ``curve`` component: its mean direct effect over the prompts and
    the two-sided ``1 - 2 alpha`` t interval (described, not decided)."""
    from scipy.stats import t as student

    if not curve:
        return ()
    points = []
    addresses = sorted(set(ctx.resolve(list(curve), "curve")))  # in forward-pass order
    effects = direct_effects(ctx, addresses, at=at, target=target, key="curve")
    layers = [a.layer for a in addresses]
    by_layer = None not in layers and len(set(layers)) == len(layers)
    for address, (name, values) in zip(addresses, effects.items()):
        mean, n = float(values.mean()), len(values)
        half = float(student.ppf(1 - ctx.claim.alpha, n - 1) * values.std(ddof=1)
                     / np.sqrt(n)) if n > 1 else float("nan")
        point: dict[str, Any] = {"site": name}
        if by_layer:  # one component per layer: the report's x axis is the layer
            point["layer"] = int(address.layer)  # type: ignore[arg-type]
        point.update({"direct_effect": mean, "ci_low": mean - half, "ci_high": mean + half})
        points.append(point)
    return tuple(points)
