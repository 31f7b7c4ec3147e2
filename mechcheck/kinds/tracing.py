"""Causal tracing of factual associations (Meng et al. 2022, ROME): ``traced``.

The **corrupted run** adds Gaussian noise to the token embeddings (``embed``) of the
subject's tokens: the positions ``subject:`` names, from the data (``SUBJ_FIRST`` ..
``SUBJ_LAST`` by default).  The noise's standard deviation is ``noise:`` times the
standard deviation of the entries of the embedding matrix (``3σ`` by default, as in the
paper) or an absolute number.  Each of ``samples:`` draws is seeded from the claim's
``seed``, the row and the draw, so the same seed gives the same noise, and the same draw
is used for the corrupted run and for every restored run of that row (as in the paper's
code):

    noise(row, draw) = std * torch.randn((n_subject_tokens, d_model),
        generator=torch.Generator().manual_seed(
            int(numpy.random.SeedSequence([seed, row, draw]).generate_state(1)[0])))

**Restoring** a site (``blocks.L.resid_post``, ``blocks.L.mlp``, ``blocks.L.attn``, also
``resid_pre``, ``resid_mid`` and ``embed``) at a position gives it its value from the
clean run there, on top of the noise.  The **indirect effect** of the site is

    IE = p(answer | corrupted, site restored) - p(answer | corrupted)

and the **total effect** ``TE = p(answer | clean) - p(answer | corrupted)``, with ``p``
the softmax probability of the row's answer token at the last position, each averaged
over the draws per prompt.  ``window: w`` restores, for an ``mlp`` or ``attn`` site of
layer L, that site in the w layers ``L - w//2 .. L + ceil(w/2) - 1`` (clipped to the
model), as the paper's code does for its window of 10; it does not apply to the
residual stream.

What is decided:

- without ``layers:``: the ``components`` restored *together* at the positions of
  ``at`` (together): ``min_effect`` on the per-prompt IE (the claim's ``test:``), or
  ``min_share`` on the ratio ``mean(IE) / mean(TE)`` (the ratio rule of ``sufficient``,
  Fieller's test and its bootstrap twin);
- with ``layers:`` and ``site:`` (one site or a list; ``at`` one position or a list):
  a sweep, each cell (site, layer, position) restored alone.  Every cell is reported
  in the claim's profile (the report draws layers x positions as a heatmap, one panel
  per site); the decision is on the *first* site and *first* position listed: with
  ``min_effect`` (or ``min_share``) every layer of that series must exceed it (each
  layer one criterion), and with ``peak: [a, b]`` the mean IE of layers a..b must
  exceed the IE of every layer of the sweep outside a..b (one paired criterion per
  outside layer).

``at:`` takes ``last``, token indices, the data's position names and, here,
``subject_first`` / ``subject_last`` (the first and last of the ``subject:`` span).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mechcheck.addresses import Address
from mechcheck.engine.runs import Placed
from mechcheck.errors import ClaimSpecError, DataError
from mechcheck.kinds.base import RATIO_METHODS, Criterion, Measurement, all_of, keys
from mechcheck.spec.schema import (
    KeySpec,
    as_components,
    as_number,
    as_positions,
    int_at_least,
)

if TYPE_CHECKING:
    from mechcheck.engine.context import ClaimContext
    from mechcheck.engine.runner import Needs
    from mechcheck.spec.schema import ClaimSpec

__all__ = ["SITES", "SUBJECT_ALIASES", "Traced", "noise_draw", "noise_seed", "parse_noise",
           "window_layers"]

SITES = ("resid", "mlp", "attn")
"""The ``site:`` names of a sweep: ``resid`` is ``blocks.L.resid_post``."""
SUBJECT_ALIASES = ("subject_first", "subject_last")
"""Position names ``at:`` takes besides the data's own (see the module docstring)."""
RESTORABLE = ("embed", "resid_pre", "resid_mid", "resid_post", "attn", "mlp")
_SIGMA = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(σ|sigma)\s*$")


def parse_noise(value: Any) -> tuple[str, float]:
    """``"3σ"``/``"3sigma"`` -> ("sigma", 3.0); a positive number -> ("abs", it)."""
    if isinstance(value, str):
        match = _SIGMA.match(value)
        if match is None or float(match.group(1)) <= 0:
            raise ValueError(f"got {value!r}")
        return "sigma", float(match.group(1))
    number = as_number(value)
    if number <= 0:
        raise ValueError(f"got {value!r}; the noise's std must be positive")
    return "abs", number


def _as_subject(value: Any) -> tuple[int | str, ...]:
    span = as_positions(value)
    if len(span) not in (1, 2):
        raise ValueError(f"got {value!r}: one position, or the first and last of the span")
    return span


def _as_layers(value: Any) -> Any:
    if value == "*":
        return "*"
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value):
        raise ValueError(f"got {value!r}")
    return tuple(value)


def _as_sites(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or any(v not in SITES for v in items) or len(set(items)) != len(items):
        raise ValueError(f"got {value!r}")
    return tuple(items)


_as_samples = int_at_least(1, "at least 1 draw")


_as_window = int_at_least(1, "a window of at least 1 layer")


def _as_peak(value: Any) -> tuple[int, int]:
    if (not isinstance(value, list) or len(value) != 2 or any(
            isinstance(v, bool) or not isinstance(v, int) for v in value)
            or not 0 <= value[0] <= value[1]):
        raise ValueError(f"got {value!r}")
    return int(value[0]), int(value[1])


def _as_share(value: Any) -> float:
    number = as_number(value)
    if not 0 < number <= 1:
        raise ValueError(f"got {value!r}; a share between 0 and 1")
    return number


def noise_seed(seed: int, row: int, draw: int) -> int:
    """The torch seed of row ``row``'s noise draw ``draw`` under the claim's ``seed``."""
    return int(np.random.SeedSequence([seed, row, draw]).generate_state(1)[0])


def noise_draw(seed: int, row: int, draw: int, n_tokens: int, width: int,
               std: float) -> torch.Tensor:
    """The noise ``[n_tokens, width]`` added to the subject's embeddings (float32)."""
    gen = torch.Generator().manual_seed(noise_seed(seed, row, draw))
    return std * torch.randn((n_tokens, width), generator=gen, dtype=torch.float32)


def window_layers(layer: int, window: int, n_layers: int) -> list[int]:
    """The layers a window of ``window`` centred on ``layer`` restores (clipped)."""
    start = max(0, layer - window // 2)
    stop = min(n_layers, layer - (-window // 2))
    return list(range(start, stop))


class Traced:
    """Restoring a site from the clean run undoes the damage of noised subject
    embeddings: IE = p(answer | corrupted, restored) - p(answer | corrupted)."""

    name = "traced"
    description = ("causal tracing (Meng et al. 2022): restoring a site from the clean run "
                   "at a position raises p(answer) in a run with noised subject embeddings "
                   "by more than min_effect (the indirect effect)")
    keys = keys(
        KeySpec(name="components", parse=as_components,
                expected='sites to restore together, e.g. ["blocks.5.mlp"] (resid_pre, '
                "resid_mid, resid_post, attn, mlp of a layer, or embed)"),
        KeySpec(name="layers", parse=_as_layers,
                expected='a sweep: "*" (every layer), [a, b] (layers a to b inclusive), '
                "one layer, or a list of three or more layers"),
        KeySpec(name="site", parse=_as_sites, default=("resid",),
                expected="resid, mlp or attn, or a list of them (the sweep's sites)"),
        KeySpec(name="at", parse=as_positions, default=("subject_last",),
                expected="where to restore: last, subject_first, subject_last, "
                "a position name from the data or a token index, or a list of them"),
        KeySpec(name="subject", parse=_as_subject, default=("SUBJ_FIRST", "SUBJ_LAST"),
                expected="the noised span: [FIRST, LAST] position names (or indices) from "
                "the data, or one position"),
        KeySpec(name="noise", parse=parse_noise, default=("sigma", 3.0),
                expected='the noise std: "3σ" / "3sigma" (times the embedding matrix\'s '
                "std) or a positive number (absolute)"),
        KeySpec(name="samples", parse=_as_samples, default=10,
                expected="how many noise draws are averaged per prompt (default 10)"),
        KeySpec(name="window", parse=_as_window, default=1,
                expected="an integer of at least 1: restore an mlp/attn site in this many "
                "layers around L (10 in the paper)"),
        KeySpec(name="min_effect", parse=as_number,
                expected="the least mean indirect effect, in probability, e.g. 0.05"),
        KeySpec(name="min_share", parse=_as_share,
                expected="the least share of the total effect the IE recovers, e.g. 0.5"),
        KeySpec(name="peak", parse=_as_peak,
                expected="[a, b]: the first series' IE peaks in layers a..b"),
    )

    def needs(self, claim: ClaimSpec, ctx: ClaimContext) -> Needs:
        return ctx.record_needs("clean", _plan(ctx).addresses)

    def measure(self, claim: ClaimSpec, ctx: ClaimContext) -> Measurement:
        plan = _plan(ctx)
        tracer = _Tracer(ctx, plan)
        p = ctx.params
        corrupted = tracer.corrupted()
        clean = tracer.clean_probs()
        total = clean - corrupted
        ctx.keep("clean", clean)
        ctx.keep("corrupt", corrupted)
        ctx.keep("_base", corrupted)
        te = f"total effect {total.mean():.4g} (p clean {clean.mean():.4g}, corrupted " \
             f"{corrupted.mean():.4g})"
        if plan.cells is None:
            restored = tracer.restored([(plan.targets, plan.at)])[0]
            ctx.keep("patched", restored)
            criteria = [_criterion(ctx, restored - corrupted, total, te,
                                   ", ".join(plan.labels))]
            profile: tuple[dict[str, Any], ...] = ()
        else:
            values = tracer.restored([(t, [pos]) for _, _, _, t, pos in plan.cells])
            effects = {cell[:3]: v - corrupted for cell, v in zip(plan.cells, values)}
            profile = tuple(_point(ctx, cell, effects[cell[:3]]) for cell in plan.cells)
            first = [c for c in plan.cells if c[0] == plan.sites[0] and c[2] == plan.at[0]]
            criteria = _sweep_criteria(ctx, first, effects, total, te)
        decided = all_of(criteria)
        where = ", ".join(map(str, plan.at))
        return Measurement(
            decision=decided.decision,
            intervention=f"noise {_noise_text(p['noise'])} on the subject's embeddings "
            f"({p['samples']} draws); restore from the clean run at {where}",
            metric="prob", components=plan.labels,
            expected="; ".join(c.expected for c in criteria) if len(criteria) <= 3 else
            f"{criteria[0].expected} (and {len(criteria) - 1} more)",
            criteria=tuple(criteria) if len(criteria) > 1 else (), profile=profile)


# -- the plan: what is restored where -------------------------------------------------
class _Plan:
    def __init__(self) -> None:
        self.targets: list[Address] = []   # restored together (no sweep)
        self.labels: tuple[str, ...] = ()
        self.at: tuple[int | str, ...] = ()
        self.sites: tuple[str, ...] = ()
        # sweep cells: (site, layer, position item, addresses, position name for Placed)
        self.cells: list[tuple[str, int, Any, list[Address], Any]] | None = None
        self.addresses: list[Address] = []


def _plan(ctx: ClaimContext) -> _Plan:
    p = ctx.params
    plan = _Plan()
    plan.at = tuple(p["at"])
    n_layers = ctx.model.adapter.dims.n_layers
    window = p["window"]
    has_rule = sum(p.get(k) is not None for k in ("min_effect", "min_share"))
    if has_rule != 1 and p.get("peak") is None:
        raise ClaimSpecError("a traced claim needs min_effect: or min_share: (or peak: "
                             "in a sweep)", key="min_effect" if has_rule == 0 else "min_share",
                             hint="e.g. min_effect: 0.05 (IE in probability), or "
                             "min_share: 0.5 (of the total effect); give only one")
    if p.get("layers") is None:
        if p.get("components") is None:
            raise ClaimSpecError("a traced claim needs components: (restored together) or "
                                 "layers: with site: (a sweep)", key="components",
                                 hint='e.g. components: ["blocks.5.mlp"], or layers: "*" '
                                 "with site: mlp")
        if p.get("peak") is not None:
            raise ClaimSpecError("peak: applies to a sweep over layers:", key="peak",
                                 hint='add layers: "*" and site:, or use min_effect:')
        targets = ctx.components()
        for address in targets:
            _check_restorable(address)
        expanded = [w for a in targets for w in _windowed(a, window, n_layers)]
        plan.targets = list(dict.fromkeys(expanded))
        plan.labels = tuple(str(a) for a in targets) + (
            (f"window {window}",) if window > 1 else ())
        plan.addresses = plan.targets
        return plan
    if p.get("components") is not None:
        raise ClaimSpecError("give either components: (restored together) or layers: (a "
                             "sweep), not both", key="layers",
                             hint="a sweep restores each cell alone; remove one of them")
    layers = _layer_list(p["layers"], n_layers)
    bad = [la for la in layers if la >= n_layers]
    if bad:
        raise ClaimSpecError(f"layers: the model has {n_layers} layers (0-{n_layers - 1}), "
                             f"not {bad[0]}", key="layers", hint='use "*" or layers up to '
                             f"{n_layers - 1}")
    peak = p.get("peak")
    if peak is not None and not (set(range(peak[0], peak[1] + 1)) & set(layers)
                                 and set(layers) - set(range(peak[0], peak[1] + 1))):
        raise ClaimSpecError(f"peak: {list(peak)} must hold some of the sweep's layers and "
                             "leave some outside", key="peak",
                             hint="sweep more layers than the peak's range")
    plan.sites = tuple(p["site"])
    cells = []
    for site in plan.sites:
        for layer in layers:
            base = Address.parse(f"blocks.{layer}.{'resid_post' if site == 'resid' else site}")
            restored = _windowed(base, window if site != "resid" else 1, n_layers)
            for item in plan.at:
                cells.append((site, layer, item, restored, item))
    plan.cells = cells
    plan.labels = tuple(f"{s} (layers {_layer_text(layers)})" for s in plan.sites) + (
        (f"window {window}",) if window > 1 else ())
    plan.addresses = list(dict.fromkeys(a for c in cells for a in c[3]))
    return plan


def _layer_list(value: Any, n_layers: int) -> list[int]:
    """``"*"``: every layer; ``[a, b]``: a..b inclusive; else the layers listed."""
    if value == "*":
        return list(range(n_layers))
    if len(value) == 2:
        if value[1] < value[0]:
            raise ClaimSpecError(f"layers: [{value[0]}, {value[1]}] ends before it starts",
                                 key="layers", hint="write [first, last]")
        return list(range(value[0], value[1] + 1))
    return list(dict.fromkeys(value))


def _layer_text(layers: Sequence[int]) -> str:
    if list(layers) == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}"
    return ", ".join(map(str, layers))


def _check_restorable(address: Address) -> None:
    if address.site not in RESTORABLE:
        raise ClaimSpecError(f"components: {address} cannot be restored by causal tracing",
                             key="components", hint="restore a whole site: blocks.L."
                             "resid_post, blocks.L.mlp, blocks.L.attn (or resid_pre, "
                             "resid_mid, embed)")


def _windowed(address: Address, window: int, n_layers: int) -> list[Address]:
    if window == 1 or address.site not in ("mlp", "attn"):
        return [address]
    return [Address(address.site, la) for la in window_layers(int(address.layer),  # type: ignore[arg-type]
                                                             window, n_layers)]


SHARED_NOISED_BYTES = 256 * 2**20
"""The corrupted runs of a traced claim record the residual stream after every block
(for the file's other traced claims) while that takes at most this many bytes."""


def _start_layer(addresses: Sequence[Address]) -> int:
    """The first block whose computation restoring ``addresses`` changes (0 where an
    embedding is restored)."""
    layers = [a.layer for a in addresses]
    if not layers or not all(isinstance(la, int) for la in layers):
        return 0
    return min(int(la) for la in layers)  # type: ignore[arg-type]


def _noise_text(noise: tuple[str, float]) -> str:
    kind, value = noise
    return f"{value:g}σ" if kind == "sigma" else f"std {value:g}"


# -- the runs -------------------------------------------------------------------------
class _Tracer:
    """The corrupted and restored runs of one claim, several per forward pass."""

    def __init__(self, ctx: ClaimContext, plan: _Plan) -> None:
        self.ctx = ctx
        self.plan = plan
        p = ctx.params
        dataset = ctx.dataset
        self.n = len(dataset)
        self.samples = p["samples"]
        self.seed = ctx.claim.seed
        self.answers = torch.as_tensor(np.asarray(dataset.answers), dtype=torch.long)
        self.span = [_span(ctx, row) for row in range(self.n)]
        self.std = _noise_std(ctx)
        self.clean = ctx.recorded("clean", plan.addresses) if plan.addresses else \
            ctx.shared("clean")
        width = ctx.model.adapter.dims.d_model
        self.noise = [[noise_draw(self.seed, row, s, len(self.span[row]), width, self.std)
                       for s in range(self.samples)] for row in range(self.n)]
        self.noised: list[Any] = []  # per draw, the corrupted run (see corrupted())

    def _probs(self, logits: torch.Tensor) -> np.ndarray:
        probs = torch.softmax(logits.double(), dim=-1)
        return probs.gather(-1, self.answers.to(probs.device).view(-1, 1)).squeeze(-1) \
            .cpu().numpy()

    def clean_probs(self) -> np.ndarray:
        return self._probs(self.clean.logits)

    def _noise_fn(self, draw: int, keep: dict[int, set[int]] | None = None) -> Any:
        """The PatchFn adding draw ``draw``'s noise at each row's subject positions
        (except those in ``keep[row]``, where the embedding is restored)."""
        def add(current: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
            delta = torch.zeros_like(current)
            for b, row in enumerate(rows):
                row = int(row)
                noise = self.noise[row][draw].to(current.device, current.dtype)
                for i, pos in enumerate(self.span[row]):
                    if keep is None or pos not in keep.get(row, ()):
                        delta[b, pos] = noise[i]
            return current + delta
        return add

    def _sets(self, targets: Sequence[Address], at: Sequence[Any]) -> list[dict[Any, Any]]:
        ctx = self.ctx
        embed = [a for a in targets if a.site == "embed"]
        others = [a for a in targets if a.site != "embed"]
        placed = tuple(self._item(x) for x in at)
        keep = None
        if embed:
            keep = {row: set(ctx.positions_of(row, list(placed))) for row in range(self.n)}
        start = _start_layer(targets)
        sets = []
        for draw in range(self.samples):
            patches: dict[Any, Any] = {"embed": Placed(self._noise_fn(draw, keep), None)}
            if start > 0 and self.noised:
                # the corrupted run's residual stream before the first restored block
                # is what the noise made it: patch it in, and blocks before it need
                # not run again (the engine starts there)
                patches = {Address("resid_post", start - 1): Placed(self.noised[draw], None)}
            for address in others:
                patches[address] = Placed(self.clean, list(placed))
            sets.append(patches)
        return sets

    def _item(self, item: Any) -> Any:
        """An ``at:`` item as the engine's positions take it."""
        subject = self.ctx.params["subject"]
        if item == "subject_first":
            return subject[0]
        if item == "subject_last":
            return subject[-1]
        return item

    def corrupted(self) -> np.ndarray:
        """p(answer) per prompt with the subject noised, averaged over the draws; each
        draw's run records the residual stream where a restored run will start."""
        plan, ctx = self.plan, self.ctx
        jobs = [plan.targets] if plan.cells is None else [c[3] for c in plan.cells]
        starts = sorted({_start_layer(t) for t in jobs} - {0})
        layers = list(range(ctx.model.adapter.dims.n_layers - 1))
        dataset = ctx.dataset
        size = len(dataset) * dataset.max_len * ctx.model.adapter.dims.d_model * 4
        if size * len(layers) * self.samples > SHARED_NOISED_BYTES:
            layers = [s - 1 for s in starts]  # this claim's layers only, not shared
        record = [Address("resid_post", la) for la in layers]

        def runs() -> list[Any]:
            return [ctx.run("clean", {"embed": Placed(self._noise_fn(d), None)},
                            record=record) for d in range(self.samples)]

        # the same noise (seed, draws, spans, scale) gives the same runs: the file's
        # other traced claims read them
        key = ("traced", self.seed, self.samples, self.std, tuple(map(tuple, self.span)),
               tuple(layers))
        self.noised = ctx.derived(key, runs)
        return np.mean([self._probs(r.logits) for r in self.noised], axis=0)

    def restored(self, jobs: Sequence[tuple[Sequence[Address], Sequence[Any]]]
                 ) -> list[np.ndarray]:
        """Per job (addresses restored together, positions), p(answer) per prompt
        averaged over the draws."""
        sets = [s for targets, at in jobs for s in self._sets(targets, at)]
        logits = self.ctx.run_many("clean", sets)
        k = self.samples
        return [np.mean([self._probs(x) for x in logits[j * k:(j + 1) * k]], axis=0)
                for j in range(len(jobs))]


def _span(ctx: ClaimContext, row: int) -> list[int]:
    from mechcheck.engine.runner import unknown_position

    subject = ctx.params["subject"]
    dataset = ctx.dataset
    for item in subject:
        if isinstance(item, str) and item != "last" and item not in dataset.positions[row]:
            raise unknown_position(dataset, row, item, key="subject")
    ends = [ctx.positions_of(row, [item], key="subject")[0] for item in subject]
    first, last = ends[0], ends[-1]
    if last < first:
        raise DataError(f"subject: {ctx.dataset.row_label(row)}'s span ends ({last}) before "
                        f"it starts ({first})", key="subject",
                        hint="give the first position, then the last")
    return list(range(first, last + 1))


def _noise_std(ctx: ClaimContext) -> float:
    kind, value = ctx.params["noise"]
    if kind == "abs":
        return value
    adapter = ctx.model.adapter
    module = adapter.module(adapter.site(Address("embed")).module)
    weight = getattr(module, "weight", None)
    if weight is None:
        raise ClaimSpecError("noise: this model's embedding has no weight matrix to take "
                             "the std of", key="noise", hint="give the std as a number")
    scale = float(getattr(module, "embed_scale", 1.0))
    return value * scale * float(weight.detach().double().std())


# -- decisions --------------------------------------------------------------------------
def _criterion(ctx: ClaimContext, effect: np.ndarray, total: np.ndarray, te: str,
               what: str) -> Criterion:
    p = ctx.params
    if p.get("min_share") is not None:
        from mechcheck.stats import test_ratio

        ctx.require_test(("robust", "t", "bootstrap"), "min_share is a ratio, IE / total "
                         "effect: test: robust (the default), t (Fieller's) or bootstrap")
        share = p["min_share"]
        decision = ctx.stats_call("min_share", test_ratio, effect, total, share,
                                  alpha=ctx.claim.alpha, seed=ctx.claim.seed,
                                  n_resamples=ctx.n_resamples,
                                  method=RATIO_METHODS[ctx.claim.test])
        return Criterion(name="min_share", decision=decision,
                         expected=f"IE of {what} / total effect > {share:g}",
                         detail=f"IE {effect.mean():.4g}; {te}")
    return Criterion(name="min_effect", decision=ctx.decide_greater(effect, p["min_effect"]),
                     expected=f"IE of {what} > {p['min_effect']:g}",
                     detail=f"IE {effect.mean():.4g}; {te}")


def _sweep_criteria(ctx: ClaimContext, first: Sequence[Any],
                    effects: dict[Any, np.ndarray], total: np.ndarray,
                    te: str) -> list[Criterion]:
    p = ctx.params
    series = {cell[1]: effects[cell[:3]] for cell in first}
    site, item = first[0][0], first[0][2]
    criteria = []
    peak = p.get("peak")
    if peak is not None:
        inside = [la for la in series if peak[0] <= la <= peak[1]]
        mean_in = np.mean([series[la] for la in inside], axis=0)
        for layer, values in series.items():
            if layer in inside:
                continue
            criteria.append(Criterion(
                name=f"peak>{site} {layer}",
                decision=ctx.decide_greater(mean_in - values, 0.0),
                expected=f"mean IE of {site} {peak[0]}-{peak[1]} at {item} > IE of "
                f"{site} {layer}",
                detail=f"mean IE inside {mean_in.mean():.4g}, layer {layer} "
                f"{values.mean():.4g}; {te}"))
    if p.get("min_effect") is not None or p.get("min_share") is not None:
        for layer, values in series.items():
            criteria.append(_criterion(ctx, values, total, te, f"{site} {layer} at {item}"))
    return criteria


def _point(ctx: ClaimContext, cell: Any, effect: np.ndarray) -> dict[str, Any]:
    decision = ctx.decide_greater(effect, 0.0)
    return {"site": cell[0], "layer": cell[1], "position": str(cell[2]),
            "effect": decision.effect, "ci_low": decision.ci_low,
            "ci_high": decision.ci_high}
