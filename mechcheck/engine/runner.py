"""Forward passes over a dataset: the shared clean/corrupt runs and patched runs.

A :class:`Runner` belongs to one model and one dataset.  It computes the clean run
(and the corrupt run where a claim needs it) once, recording in that same pass every
activation and attention pattern that the claims will need, and then serves each
claim's patched run as one batched forward pass per group of equal-length prompts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mechcheck.addresses import Address
from mechcheck.data import Dataset
from mechcheck.engine.hooks import Patch, block_outputs, hooked, replayed
from mechcheck.engine.interventions import Intervention
from mechcheck.engine.prefixes import (
    Prefixes,
    fast_sweeps,
    final_modules,
    first_block,
    repeat_output,
    rows_of_output,
    touches_final,
)
from mechcheck.engine.runs import PatchFn, PatchRequest, Placed, RunResult
from mechcheck.engine.suffixes import Suffix, earliest_position, kv_pairs
from mechcheck.errors import (
    ClaimSpecError,
    DataError,
    MechcheckError,
    RunError,
    closest,
    describe_exception,
)
from mechcheck.models.adapter import Site
from mechcheck.models.loading import LoadedModel, eager_attention

__all__ = ["Needs", "PatchSpec", "Runner", "position_mask", "stacked_patches",
           "unknown_position"]


@dataclass(slots=True)
class Needs:
    """What the shared runs must record: ``(run, site)`` pairs and attention layers;
    and the patched runs that the claims will ask for, in order (``patched``)."""

    record: set[tuple[str, Site]] = field(default_factory=set)
    patterns: set[int] = field(default_factory=set)
    runs: set[str] = field(default_factory=lambda: {"clean"})
    patched: list[PatchRequest] = field(default_factory=list)

    def update(self, other: Needs) -> None:
        self.record |= other.record
        self.patterns |= other.patterns
        self.runs |= other.runs
        # every claim's request, repeats too: a run two claims ask for is computed
        # once and kept until both have read it
        self.patched.extend(other.patched)


def position_mask(dataset: Dataset, rows: np.ndarray, length: int,
                  at: Sequence[int | str] | None) -> torch.Tensor:
    """``[len(rows), length]`` booleans: where an intervention acts for these rows.

    ``at`` is None (every position), or a list of ``"last"``, indices (negative ones
    count from the end) and names that each row's ``positions`` define.
    """
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    if at is None:
        mask[:] = True
        return mask
    for b, row in enumerate(rows):
        for item in at:
            mask[b, _resolve_position(dataset, int(row), length, item)] = True
    return mask


def _resolve_position(dataset: Dataset, row: int, length: int, item: int | str) -> int:
    where = dataset.row_label(row)
    if item == "last":
        return length - 1
    if isinstance(item, str):
        named = dataset.positions[row]
        if item not in named:
            raise unknown_position(dataset, row, item, key="at")
        return named[item]
    index = item + length if item < 0 else item
    if not 0 <= index < length:
        raise DataError(f"at: position {item} is outside {where}'s {length} tokens",
                        key="at", hint=f"use an index from {-length} to {length - 1}")
    return index


def unknown_position(dataset: Dataset, row: int, name: str, *, key: str) -> DataError:
    """The error for a position name that row ``row`` does not define, at ``key``."""
    named = sorted(dataset.positions[row])
    near = [n for n in named if n.lower() == name.lower()] or closest(name, named)
    guess = f"did you mean {' or '.join(repr(n) for n in near)}? " if near else ""
    known = ", ".join(named) or "none"
    if dataset.source.startswith("task "):
        fix = (f"{guess}the {dataset.source.removeprefix('task ')} task names these "
               f"positions: {known}")
    elif named:
        fix = f"{guess}the rows name these positions: {known}; or add {name!r} to them"
    else:
        fix = (f"the rows define no positions: add a positions column such as "
               f'{{"{name}": 5}} to every row, or use last or a token index')
    if key == "at":
        fix += " (at: also takes last and token indices)"
    return DataError(f"{key}: {dataset.row_label(row)} defines no position named {name!r}",
                     key=key, hint=fix)


Progress = Callable[[str], None]
PatchSpec = Intervention | RunResult | PatchFn | Placed
"""What a patch replaces an activation with (see :meth:`Runner.run`); a
:class:`~mechcheck.engine.runs.Placed` one acts at its own positions."""
# Recordings of one forward pass: Site -> [rows, pos, width], ("pattern", L) -> patterns.
Store = dict[Any, torch.Tensor]


class Runner:
    """Runs one model over one dataset, caching the shared runs.

    Args:
        loaded: the model with its adapter.
        dataset: the tokenized prompts.
        batch_size: the most prompts in one forward pass.
        progress: called with a line of text after each shared run (and on retries).
    """

    def __init__(self, loaded: LoadedModel, dataset: Dataset, *, batch_size: int = 128,
                 progress: Progress | None = None) -> None:
        self.loaded = loaded
        self.dataset = dataset
        self.batch_size = batch_size
        self.batches = tuple(
            chunk for group in dataset.groups
            for chunk in np.array_split(group, max(1, -(-len(group) // batch_size)))
        )
        self._progress = progress
        self._logits: dict[str, torch.Tensor] = {}
        self._recorded: dict[tuple[str, Site], list[torch.Tensor]] = {}
        self._patterns: dict[int, list[torch.Tensor]] = {}
        self._means: dict[tuple[Site, str | None, str], dict[Any, torch.Tensor]] = {}
        self._failed: dict[tuple[Any, ...], MechcheckError] = {}
        self._max_rows = batch_size  # lowered for good after an out-of-memory retry
        parameters = _forward_parameters(loaded.model)
        self._keep_one = "logits_to_keep" in parameters
        # transformers 5.x names the keys and values "cache", 4.x "past_key_values"
        self._cache_key = "cache" if "cache" in parameters else "past_key_values"
        self._pending: list[PatchRequest] = []  # planned patched runs, in order
        self._sweep_engine: Any = None  # the Sweeper, made when first needed
        self.prefixes = Prefixes(loaded.adapter)  # the shared passes' block outputs
        self.derived: dict[Any, Any] = {}  # ClaimContext.derived's values

    # -- the shared runs -------------------------------------------------------
    def prepare(self, needs: Needs) -> None:
        """Run (or re-run) the shared passes so that everything in ``needs`` is cached.

        Raises:
            MechcheckError: a shared run failed (the same error again for every later
                request of the same pass, which is not retried).
        """
        self._plan(needs.patched)
        for run in sorted(needs.runs | {r for r, _ in needs.record}):
            sites = sorted({s for r, s in needs.record if r == run} - self._sites(run),
                           key=lambda s: (s.module, s.when))
            layers = sorted(needs.patterns - set(self._patterns)) if run == "clean" else []
            if run in self._logits and not sites and not layers:
                continue
            key = (run, tuple(sites), tuple(layers))
            if key in self._failed:
                raise _fresh(self._failed[key])
            try:
                self._shared_pass(run, sites, layers)
            except MechcheckError as exc:
                self._failed[key] = _fresh(exc)
                raise

    def _plan(self, requests: Sequence[PatchRequest]) -> None:
        """Remember the patched runs that the claims will ask for, in order (a run
        that several claims ask for once per claim)."""
        self._pending.extend(requests)

    def sweep(self, requests: Sequence[PatchRequest]) -> list[torch.Tensor]:
        """Last-position logits ``[n, vocab]`` (row order) of each patched run, now.

        Each equals ``patched_logits(request.targets, request.at,
        mean_by=request.mean_by)`` to 1e-5.
        """
        fast: dict[PatchRequest, torch.Tensor] = {}
        if fast_sweeps():
            try:
                fast = self._sweeper().compute(requests)
            except Exception:  # noqa: BLE001, S110 - the plain runs report the error
                pass
        return [fast[r] if r in fast else self._plain_patched(r.targets, r.at, mean_by=r.mean_by)
                for r in requests]

    def _sweeper(self) -> Any:
        from mechcheck.engine.sweep import Sweeper

        if self._sweep_engine is None:
            self._sweep_engine = Sweeper(self)
        return self._sweep_engine

    def _sites(self, run: str) -> set[Site]:
        return {s for r, s in self._recorded if r == run}

    def _shared_pass(self, run: str, sites: list[Site], layers: list[int]) -> None:
        self._check_run(run)
        start = time.perf_counter()
        logits: list[torch.Tensor] = []
        recorded: dict[Site, list[torch.Tensor]] = {s: [] for s in sites}
        patterns: dict[int, list[torch.Tensor]] = {la: [] for la in layers}
        what = f"the shared {run} run"
        # an eager-attention pass (patterns) rounds differently from the runs that
        # would start from its blocks' outputs: keep those of plain passes only
        keep = [] if layers else self._prefix_layers()
        n_layers = self.loaded.adapter.dims.n_layers
        keep_kv = bool(keep) and self._keeps_kv()
        for b, rows in enumerate(self.batches):
            caches: list[Any] | None = [] if keep_kv else None
            with block_outputs(self.loaded.adapter, keep) as outputs:
                batch_logits, store = self._execute(run, rows, what, record=sites,
                                                    layers=layers, caches=caches)
            if outputs and _rows_in(outputs) == len(rows):  # not pieced after running out of memory
                length = len(self.dataset.prompts[rows[0]])
                kv = kv_pairs(caches[0], n_layers, length) if caches and len(caches) == 1 \
                    else None
                self.prefixes.keep(run, b, outputs, kv)
            logits.append(batch_logits)
            for site in sites:
                recorded[site].append(store[site])
            for layer in layers:
                patterns[layer].append(store[("pattern", layer)])
        self._logits[run] = self._in_row_order(logits)
        for site, values in recorded.items():
            self._recorded[(run, site)] = values
        self._patterns.update(patterns)
        extras = [f"{len(sites)} site(s)" if sites else "",
                  f"{len(layers)} attention layer(s)" if layers else ""]
        recording = " and ".join(e for e in extras if e)
        self._say(f"{run} run: {len(self.dataset)} prompts of {self.dataset.source} on "
                  f"{self.loaded.key} in {time.perf_counter() - start:.2f} s"
                  + (f", recording {recording}" if recording else ""))

    def _prefix_layers(self) -> list[int]:
        """The blocks whose outputs the shared passes keep (none with prefix reuse off)."""
        if not fast_sweeps():
            return []
        model_dtype = getattr(self.loaded.model, "dtype", torch.float32)
        size = torch.empty((), dtype=model_dtype).element_size()
        return self.prefixes.layers_to_keep(len(self.dataset), self.dataset.max_len, size)

    def _keeps_kv(self) -> bool:
        """Whether the shared passes keep their keys and values (for suffix runs)."""
        model_dtype = getattr(self.loaded.model, "dtype", torch.float32)
        size = torch.empty((), dtype=model_dtype).element_size()
        return self.prefixes.kv_fits(len(self.dataset), self.dataset.max_len, size)

    def _suffix(self, base: str, batch: int, patches: Sequence[tuple[Address, PatchSpec]],
                mask: torch.Tensor, length: int) -> Suffix | None:
        """The suffix run of one batch whose patches all act from a position after the
        first (:mod:`mechcheck.engine.suffixes`), or None: compute every position."""
        kv = self.prefixes.kv(base, batch)
        if kv is None or not patches or not fast_sweeps():
            return None
        rows = self.batches[batch]
        start = earliest_position(self._own_mask(placed, mask, rows, length)
                                  for _, placed in patches)
        return Suffix(start, kv) if start > 0 else None

    def _own_mask(self, placed: Any, mask: torch.Tensor, rows: np.ndarray,
                  length: int) -> torch.Tensor:
        """Where one patch acts: the run's ``at`` mask, or a Placed patch's own."""
        if not isinstance(placed, Placed):
            return mask
        return position_mask(self.dataset, rows, length, placed.at).to(mask.device)

    def _first_block(self, patches: Sequence[tuple[Address, Any]],
                     record: Sequence[Address] = ()) -> int:
        """The first block a run must compute (0: every block)."""
        if not patches or not fast_sweeps():
            return 0
        first = first_block(self.loaded.adapter, [a for a, _ in patches] + list(record))
        return first or 0

    def _check_run(self, run: str) -> None:
        if run == "corrupt" and self.dataset.corrupts is None:
            raise DataError(f"{self.dataset.source} has no 'corrupt' column", key="data",
                            hint="this claim patches from corrupt prompts: add a corrupt "
                            "prompt (same token count) to every row")

    def logits(self, run: str = "clean") -> torch.Tensor:
        """Last-position logits ``[n, vocab]`` of the clean or corrupt run, row order."""
        if run not in self._logits:
            self.prepare(Needs(runs={run}))
        return self._logits[run]

    def pattern(self, layer: int, head: int) -> list[torch.Tensor]:
        """Per batch, head ``layer.head``'s clean attention pattern ``[b, query, key]``."""
        if layer not in self._patterns:
            self.prepare(Needs(patterns={layer}))
        return [p[:, head] for p in self._patterns[layer]]

    # -- patched runs -----------------------------------------------------------
    def shared(self, run: str = "clean") -> RunResult:
        """The shared clean or corrupt run, with what it recorded so far."""
        logits = self.logits(run)
        store: dict[Any, list[torch.Tensor]] = {
            site: values for (r, site), values in self._recorded.items() if r == run}
        if run == "clean":
            store.update({("pattern", layer): p for layer, p in self._patterns.items()})
        return RunResult(base=run, logits=logits, _store=store, _batches=self.batches,
                         _adapter=self.loaded.adapter)

    def patched_logits(self, targets: Sequence[tuple[Address, Intervention]],
                       at: Sequence[int | str] | None = None, *,
                       mean_by: str | None = None) -> torch.Tensor:
        """Last-position logits ``[n, vocab]`` with every target intervened on.

        ``mean_by`` names a data column (e.g. ``template``): mean ablation then uses
        the mean over the rows sharing the row's value, as Wang et al. do per template.
        A run that :meth:`prepare` planned (``Needs.patched``) comes from the exact
        sweep engine (:mod:`mechcheck.engine.sweep`), with the planned runs after it.
        """
        if fast_sweeps() and (self._pending or self._sweep_engine is not None):
            got = self._sweeper().serve(PatchRequest.of(targets, at, mean_by), self._pending)
            if got is not None:
                return got
        return self._plain_patched(targets, at, mean_by=mean_by)

    def _plain_patched(self, targets: Sequence[tuple[Address, Intervention]],
                       at: Sequence[int | str] | None = None, *,
                       mean_by: str | None = None) -> torch.Tensor:
        """:meth:`patched_logits` by one plain patched run."""
        base_runs = {iv.base_run for _, iv in targets}
        if len(base_runs) != 1:
            raise ValueError("all interventions of one run must share their base run")
        (base,) = base_runs
        self._check_column(mean_by)
        specs = [(address, iv.with_mean_by(mean_by)) for address, iv in targets]
        names = sorted({iv.name for _, iv in targets})
        what = (f"the patched run ({', '.join(names)} on "
                f"{', '.join(str(a) for a, _ in targets[:3])}{' ...' if len(targets) > 3 else ''})")
        return self.run(base, specs, at=at, what=what).logits

    def run(self, base: str, patches: Sequence[tuple[Address, PatchSpec]] = (), *,
            record: Sequence[Address] = (), at: Sequence[int | str] | None = None,
            positions: str = "last", what: str | None = None) -> RunResult:
        """One run over every prompt of ``base`` with ``patches`` applied.

        Each patch is an :class:`Intervention` (its source read from the shared runs),
        a :class:`RunResult` (that run's recorded activation of the same address) or a
        :data:`PatchFn`.  ``record`` names addresses to record (their values as they
        reach the site, before a patch there); ``positions="all"`` also keeps every
        position's logits.
        """
        self._check_run(base)
        ivs = [(a, _unplaced(spec)) for a, spec in patches
               if isinstance(_unplaced(spec), Intervention)]
        self.prepare(self.needs_for(ivs) if ivs else Needs(runs={base}))
        adapter = self.loaded.adapter
        sites = sorted({adapter.site(a) for a in record if a.site != "pattern"},
                       key=lambda s: (s.module, s.when))
        layers = sorted({int(a.layer) for a in record if a.site == "pattern"})  # type: ignore[arg-type]
        for address, _ in patches:
            if address.site == "pattern":
                raise ClaimSpecError(f"{address} can be recorded, not patched",
                                     hint="patch the head's q or k (which make its pattern) "
                                     "or its output, blocks.L.attn.head.H")
        what = what or "the patched run" if patches else what or f"a {base} run"
        first = self._first_block(patches, record)
        cut = positions == "last" and first > 0 and not touches_final(
            adapter, [a for a, _ in patches] + list(record))
        logits: list[torch.Tensor] = []
        full: list[torch.Tensor] = []
        store: dict[Any, list[torch.Tensor]] = {s: [] for s in sites}
        store.update({("pattern", la): [] for la in layers})
        for b, rows in enumerate(self.batches):
            length = len(self.dataset.prompts[rows[0]])
            mask = position_mask(self.dataset, rows, length, at)
            hooks = self._patches(patches, b, mask.to(self.loaded.device), length) \
                if patches else None
            suffix = self._suffix(base, b, patches, mask, length) \
                if positions == "last" and not sites and not layers else None
            batch_logits, recorded = self._execute(
                base, rows, what, record=sites, layers=layers, patches=hooks,
                all_positions=positions == "all",
                replay=(*self.prefixes.start(base, b, first), cut) if first else None,
                suffix=suffix)
            if positions == "all":
                full.extend(batch_logits)
                logits.append(batch_logits[:, -1])
            else:
                logits.append(batch_logits)
            for key in store:
                store[key].append(recorded[key])
        all_logits = None
        if positions == "all":
            order = np.concatenate(self.batches)
            all_logits = [full[int(i)] for i in np.argsort(order)]
        return RunResult(base=base, logits=self._in_row_order(logits),
                         recorded=tuple(record), all_logits=all_logits, _store=store,
                         _batches=self.batches, _adapter=adapter)

    def run_many(self, base: str, patch_sets: Sequence[Sequence[tuple[Address, PatchSpec]]],
                 *, at: Sequence[int | str] | None = None,
                 what: str | None = None) -> list[torch.Tensor]:
        """Last-position logits ``[n, vocab]`` of one run per patch set.

        Several sets share a forward pass: each batch of prompts is repeated once per
        set, as many times as the batch size allows, and each copy gets its own
        patches.  The logits equal those of :meth:`run` with each set alone.
        """
        self._check_run(base)
        ivs = [(a, _unplaced(s)) for ps in patch_sets for a, s in ps
               if isinstance(_unplaced(s), Intervention)]
        self.prepare(self.needs_for(ivs) if ivs else Needs(runs={base}))
        what = what or f"{len(patch_sets)} patched runs"
        out: list[list[torch.Tensor]] = [[] for _ in patch_sets]
        firsts = [self._first_block(ps) for ps in patch_sets]
        cuts = [f > 0 and not touches_final(self.loaded.adapter, [a for a, _ in ps])
                for f, ps in zip(firsts, patch_sets)]
        groups: dict[tuple[int, bool], list[int]] = {}
        for i, key in enumerate(zip(firsts, cuts)):
            groups.setdefault(key, []).append(i)  # sets that start at the same block
        for b, rows in enumerate(self.batches):
            length = len(self.dataset.prompts[rows[0]])
            mask = position_mask(self.dataset, rows, length, at).to(self.loaded.device)
            makers = [self._patches(ps, b, mask, length) for ps in patch_sets]
            for (first, cut), members in groups.items():
                replay = (*self.prefixes.start(base, b, first), cut) if first else None
                suffix = self._suffix(base, b, [t for i in members for t in patch_sets[i]],
                                      mask, length)
                self._many_in_batch(base, b, rows, [makers[i] for i in members],
                                    [out[i] for i in members], replay, what, suffix)
        return [self._in_row_order(per_batch) for per_batch in out]

    def _many_in_batch(self, base: str, b: int, rows: np.ndarray,
                       makers: Sequence[Callable[[slice], dict[Site, Patch]]],
                       out: Sequence[list[torch.Tensor]],
                       replay: tuple[int, Any, bool] | None, what: str,
                       suffix: Suffix | None = None) -> None:
        """One batch of :meth:`run_many`: the sets' copies in passes of as many as the
        batch size allows (halved after running out of memory)."""
        start, cap = 0, max(1, self._max_rows // len(rows))
        while start < len(makers):
            chunk = range(start, min(start + cap, len(makers)))
            try:
                logits = self._forward_copies(base, rows, [makers[i] for i in chunk], replay,
                                              suffix)
            except MechcheckError:
                raise
            except Exception as exc:  # noqa: BLE001 - the model's or a plugin's failure
                self._unless_out_of_memory(exc, what)
                if cap > 1:
                    cap = -(-cap // 2)
                    continue
                logits = [self._execute(base, rows, what, patches=makers[start],
                                        replay=replay, suffix=suffix)[0]]
            for i, piece in zip(chunk, logits):
                out[i].append(piece)
            start = chunk.stop

    def _forward_copies(self, base: str, rows: np.ndarray,
                        makers: Sequence[Callable[[slice], dict[Site, Patch]]],
                        replay: tuple[int, Any, bool] | None = None,
                        suffix: Suffix | None = None) -> list[torch.Tensor]:
        """One forward pass of ``rows`` repeated once per patch maker."""
        per_copy = [make(slice(None)) for make in makers]
        ids = self._inputs(base, rows).repeat(len(makers), 1)
        patches = stacked_patches(per_copy, len(rows))
        past = None
        if suffix is not None:
            ids, patches = suffix.ids(ids), suffix.patches(patches)
            past = suffix.cache(slice(None), len(makers))
        with hooked(self.loaded.adapter, patches=patches), \
                self._replaying(replay, slice(None), len(makers), suffix):
            logits = self._forward(ids, list(patches), past=past)
        return list(logits.split(len(rows)))

    def gradients(self, base: str, addresses: Sequence[Address],
                  objective: Callable[[torch.Tensor, np.ndarray], torch.Tensor],
                  ) -> dict[Address, list[torch.Tensor]]:
        """Per row, the gradient of ``objective`` with respect to each address's
        activation ``[pos, width]`` in the ``base`` run (no patches).

        ``objective(logits [b, vocab], rows) -> [b]`` gives one value per prompt (a
        metric); the gradient is of each prompt's own value, since prompts do not
        interact.  A zero ``delta`` added at every site carries the gradient, so the
        gradient at an early site includes every path through later ones.
        """
        self._check_run(base)
        adapter = self.loaded.adapter
        for address in addresses:
            if address.site in ("pos_embed", "pattern"):
                raise ClaimSpecError(f"no per-prompt gradient at {address}",
                                     hint="use embed, a residual stream site, a head or "
                                     "its q/k/v, attn, mlp or a neuron")
        sites = sorted({adapter.site(a) for a in addresses}, key=lambda s: (s.module, s.when))
        per_site: dict[Site, list[torch.Tensor]] = {s: [] for s in sites}
        for rows in self.batches:
            deltas: dict[Site, torch.Tensor] = {}

            def adder(site: Site, deltas: dict[Site, torch.Tensor] = deltas) -> Patch:
                def patch(act: torch.Tensor) -> torch.Tensor:
                    delta = torch.zeros_like(act, requires_grad=True)
                    deltas[site] = delta
                    return act + delta
                return patch

            ids = self._inputs(base, rows)
            try:
                with hooked(adapter, patches={s: adder(s) for s in sites}), torch.enable_grad():
                    output = self.loaded.model(input_ids=ids, use_cache=False)
                    values = objective(output.logits[:, -1].float(), rows)
                    grads = torch.autograd.grad(values.sum(), [deltas[s] for s in sites],
                                                allow_unused=True)
            except MechcheckError:
                raise
            except Exception as exc:  # noqa: BLE001 - the model's or a metric's failure
                raise RunError(f"the gradient run failed: {describe_exception(exc)}",
                               hint=_RUN_HINT) from exc
            for site, grad in zip(sites, grads):
                per_site[site].append(torch.zeros_like(deltas[site]) if grad is None
                                      else grad.detach())
        out: dict[Address, list[torch.Tensor]] = {}
        order = np.concatenate(self.batches)
        for address in addresses:
            site, cols = adapter.site(address), adapter.columns(address)
            rows_out = [g[i, ..., cols] for g in per_site[site] for i in range(len(g))]
            out[address] = [rows_out[int(i)] for i in np.argsort(order)]
        return out

    def record_texts(self, texts: Sequence[str], addresses: Sequence[Address], *,
                     what: str) -> dict[Address, list[torch.Tensor]]:
        """Per address, one ``[pos, width]`` activation per text of the clean model on
        ``texts`` (prompts outside the dataset, e.g. a steering contrast set), tokenized
        as the data's prompts are; texts of one length share a pass."""
        tokenizer = self.loaded.tokenizer
        ids = [tuple(int(i) for i in tokenizer(str(t))["input_ids"]) for t in texts]
        adapter = self.loaded.adapter
        sites = sorted({adapter.site(a) for a in addresses}, key=lambda s: (s.module, s.when))
        out: dict[Address, list[Any]] = {a: [None] * len(texts) for a in addresses}
        by_length: dict[int, list[int]] = {}
        for i, row in enumerate(ids):
            by_length.setdefault(len(row), []).append(i)
        for _, members in sorted(by_length.items()):
            for start in range(0, len(members), self._max_rows):
                part = members[start:start + self._max_rows]
                batch = torch.tensor([ids[i] for i in part], dtype=torch.long)
                try:
                    with hooked(adapter, record=sites) as store:
                        self._forward(batch.to(self.loaded.device), sites)
                except Exception as exc:  # noqa: BLE001 - the model's failure, named
                    raise RunError(f"{what} failed: {describe_exception(exc)}",
                                   hint=_RUN_HINT) from exc
                for address in addresses:
                    values = store[adapter.site(address)][..., adapter.columns(address)]
                    for j, i in enumerate(part):
                        out[address][i] = values[j].float().cpu()
        return out

    def needs_for(self, targets: Iterable[tuple[Address, Any]]) -> Needs:
        """The shared-run recordings that patching ``targets`` will read."""
        needs = Needs()
        for address, iv in targets:
            if not isinstance(iv, Intervention):
                continue
            needs.runs.add(iv.base_run)
            if iv.source is not None:
                needs.record.add((iv.source.run, self.loaded.adapter.site(address)))
        return needs

    def _patches(self, targets: Sequence[tuple[Address, PatchSpec]], batch: int,
                 mask: torch.Tensor, length: int) -> Callable[[slice], dict[Site, Patch]]:
        """The patches of one batch, as a function of the slice of its rows that runs."""
        adapter = self.loaded.adapter
        rows = self.batches[batch]
        by_site: dict[Site, list[_Part]] = {}
        for address, placed in targets:
            spec = _unplaced(placed)
            site = adapter.site(address)
            own = self._own_mask(placed, mask, rows, length)
            by_site.setdefault(site, []).append(
                (adapter.columns(address), spec, self._values(spec, address, site, batch), own))
        n = mask.shape[0]

        def for_rows(part: slice) -> dict[Site, Patch]:
            picked = rows[part]
            return {site: _site_patch([(cols, spec, _rows_of(v, part, n), own[part])
                                       for cols, spec, v, own in parts], picked)
                    for site, parts in by_site.items()}

        return for_rows

    def _values(self, spec: PatchSpec, address: Address, site: Site,
                batch: int) -> torch.Tensor | None:
        """The full-width source values of one patch for one batch, or None."""
        if isinstance(spec, RunResult):
            if site not in spec._store:
                raise ClaimSpecError(
                    f"patching {address} from a {spec.base} run that did not record it",
                    hint=f"record {address} in that run (record=[...])")
            return spec._store[site][batch]
        if not isinstance(spec, Intervention) or spec.source is None:
            return None
        source = spec.source
        if source.reduce is None:
            return self._recorded[(source.run, site)][batch]
        rows = self.batches[batch]
        length = len(self.dataset.prompts[rows[0]])
        means = self._means_by(site, source.by, source.run)
        keys = [None] * len(rows) if source.by is None else [
            self.dataset.columns[source.by][int(r)] for r in rows]
        return torch.stack([means[k][:length] for k in keys])

    def means(self, address: Address, run: str = "clean",
              by: str | None = None) -> dict[Any, torch.Tensor]:
        """``run``'s mean activation of ``address`` per position ``[max_len, width]``,
        over all rows (key None) or per value of the data column ``by``."""
        site = self.loaded.adapter.site(address)
        self.prepare(Needs(runs={run}, record={(run, site)}))
        cols = self.loaded.adapter.columns(address)
        return {k: v[..., cols] for k, v in self._means_by(site, by, run).items()}

    def _means_by(self, site: Site, column: str | None,
                  run: str = "clean") -> dict[Any, torch.Tensor]:
        """A run's mean activation per position ``[max_len, width]``, over all rows
        (key None) or per value of a data column."""
        self._check_column(column)
        if (site, column, run) not in self._means:
            values = [None] * len(self.dataset) if column is None else \
                list(self.dataset.columns[column])
            self._means[(site, column, run)] = {
                key: self._mean_over({i for i, v in enumerate(values) if v == key}, site, run)
                for key in dict.fromkeys(values)}
        return self._means[(site, column, run)]

    def _check_column(self, column: str | None) -> None:
        """Raise at ``mean_by`` when the data have no column ``column``."""
        if column is not None and column not in self.dataset.columns:
            known = ", ".join(sorted(self.dataset.columns)) or "none"
            raise DataError(f"mean_by: the data have no column {column!r} (extra columns: "
                            f"{known})", key="mean_by",
                            hint="add the column to every row, or drop mean_by")

    def _mean_over(self, rows: set[int], site: Site, run: str) -> torch.Tensor:
        recorded = self._recorded[(run, site)]
        width, device = recorded[0].shape[-1], recorded[0].device
        total = torch.zeros(self.dataset.max_len, width, dtype=torch.float64, device=device)
        count = torch.zeros(self.dataset.max_len, 1, dtype=torch.float64, device=device)
        for batch_rows, acts in zip(self.batches, recorded):
            keep = [b for b, r in enumerate(batch_rows) if int(r) in rows]
            if keep:
                chosen = acts.expand(len(batch_rows), *acts.shape[1:])[keep]
                total[: acts.shape[1]] += chosen.double().sum(dim=0)
                count[: acts.shape[1]] += len(keep)
        return (total / count.clamp_min(1)).to(recorded[0].dtype)

    # -- one batch, in pieces when memory runs out ------------------------------------
    def _execute(self, run: str, rows: np.ndarray, what: str, *, record: Sequence[Site] = (),
                 layers: Sequence[int] = (),
                 patches: Callable[[slice], dict[Site, Patch]] | None = None,
                 all_positions: bool = False,
                 replay: tuple[int, Any, bool] | None = None,
                 suffix: Suffix | None = None,
                 caches: list[Any] | None = None) -> tuple[torch.Tensor, Store]:
        """One batch's last-position logits and recordings.

        ``replay`` is ``(start, output, cut)``: blocks before ``start`` return
        ``output`` (what block ``start - 1`` returned in the unpatched base run,
        :mod:`mechcheck.engine.prefixes`), and with ``cut`` the final block's
        per-position modules see the last position only.  ``suffix`` computes only the
        positions from its start (:mod:`mechcheck.engine.suffixes`); ``caches``, where
        given, receives each piece's returned keys and values.

        Runs ``rows`` in pieces of at most the current batch size; a piece that runs out
        of memory is halved and retried, down to one prompt.  Any failure of the forward
        pass becomes a :class:`~mechcheck.errors.RunError` naming ``what`` failed.
        """
        pieces: list[tuple[torch.Tensor, Store, int]] = []
        start = 0
        while start < len(rows):
            size = min(self._max_rows, len(rows) - start)
            part = slice(start, start + size)
            try:
                pieces.append((*self._forward_part(run, rows, part, record, layers, patches,
                                                   all_positions, replay, suffix, caches),
                               size))
            except MechcheckError:
                raise
            except Exception as exc:  # noqa: BLE001 - the model's or a plugin's failure
                self._unless_out_of_memory(exc, what)
                if size == 1:
                    raise RunError(f"{what} ran out of memory on {self.loaded.device} even "
                                   f"with one prompt at a time ({type(exc).__name__})",
                                   key="--mechcheck-batch-size", hint=_OOM_HINT) from exc
                self._max_rows = -(-size // 2)  # 3 -> 2 -> 1
                self._say(f"out of memory with {size} prompts in one pass on "
                          f"{self.loaded.device}: retrying with {self._max_rows}")
                continue
            start += size
        logits = torch.cat([p[0] for p in pieces])
        if len(pieces) == 1:
            return logits, pieces[0][1]
        store = {key: torch.cat([_rows_of(p[1][key], slice(0, p[2]), p[2], expand=True)
                                 for p in pieces]) for key in pieces[0][1]}
        return logits, store

    def _unless_out_of_memory(self, exc: Exception, what: str) -> None:
        """Raise ``exc`` as the RunError of ``what`` unless it is an out-of-memory error
        (then free the device's cache, for a retry with fewer prompts)."""
        if not _is_out_of_memory(exc):
            raise RunError(f"{what} failed: {describe_exception(exc)}",
                           hint=_RUN_HINT) from exc
        _free_memory(self.loaded.device)

    def _forward_part(self, run: str, rows: np.ndarray, part: slice, record: Sequence[Site],
                      layers: Sequence[int],
                      patches: Callable[[slice], dict[Site, Patch]] | None,
                      all_positions: bool = False,
                      replay: tuple[int, Any, bool] | None = None,
                      suffix: Suffix | None = None,
                      caches: list[Any] | None = None) -> tuple[torch.Tensor, Store]:
        patched = patches(part) if patches is not None else {}
        ids, past = self._inputs(run, rows[part]), None
        if suffix is not None:
            ids, patched, past = suffix.ids(ids), suffix.patches(patched), suffix.cache(part)
        eager = eager_attention(self.loaded.model) if layers else nullcontext()
        with hooked(self.loaded.adapter, patches=patched, record=record,
                    patterns=layers) as store, eager, self._replaying(replay, part,
                                                                      suffix=suffix):
            logits = self._forward(ids, [*record, *patched], all_positions=all_positions,
                                   past=past, caches=caches)
        return logits, dict(store)

    def _replaying(self, replay: tuple[int, Any, bool] | None, part: slice,
                   copies: int = 1, suffix: Suffix | None = None) -> Any:
        """The context in which blocks before ``replay``'s start return its recorded
        output (for the rows ``part``, from the suffix's start, repeated ``copies``
        times); none without one."""
        if replay is None or replay[1] is None:
            return nullcontext()
        start, output, cut = replay
        adapter = self.loaded.adapter
        output = rows_of_output(output, part)
        if suffix is not None:
            output = suffix.output(output)
        return replayed(adapter, start, repeat_output(output, copies),
                        last_only=final_modules(adapter) if cut else ())

    # -- plumbing -----------------------------------------------------------------
    def _say(self, line: str) -> None:
        if self._progress is not None:
            self._progress(line)

    def _inputs(self, run: str, rows: np.ndarray) -> torch.Tensor:
        prompts = self.dataset.prompts if run == "clean" else self.dataset.corrupts
        assert prompts is not None
        ids = torch.tensor([prompts[int(i)] for i in rows], dtype=torch.long)
        return ids.to(self.loaded.device)

    def _forward(self, input_ids: torch.Tensor, sites: Iterable[Site] = (), *,
                 all_positions: bool = False, past: Any = None,
                 caches: list[Any] | None = None) -> torch.Tensor:
        """Last-position logits ``[b, vocab]`` (every position's, ``[b, pos, vocab]``,
        with ``all_positions``); the unembedding runs on the last position only unless
        a hooked site is the unembedding itself (whose positions must all exist).
        ``past``: the keys and values of the positions before ``input_ids``;
        ``caches``: a list that receives the pass's keys and values."""
        kwargs: dict[str, Any] = {"use_cache": past is not None or caches is not None}
        if past is not None:
            kwargs[self._cache_key] = past
        unembed = self.loaded.adapter.site(Address("unembed"))
        if self._keep_one and unembed not in set(sites) and not all_positions:
            kwargs["logits_to_keep"] = 1
        with torch.inference_mode():
            out = self.loaded.model(input_ids=input_ids, **kwargs)
        if caches is not None:
            caches.append(next((out[k] for k in ("cache", "past_key_values") if k in out),
                               None))
        return out.logits.float() if all_positions else out.logits[:, -1].float()

    def _in_row_order(self, per_batch: list[torch.Tensor]) -> torch.Tensor:
        order = torch.as_tensor(np.concatenate(self.batches))
        stacked = torch.cat(per_batch)
        out = torch.empty_like(stacked)
        out[order.to(stacked.device)] = stacked
        return out


_RUN_HINT = ("the model (or a plugin's intervention or hook) raised this during the forward "
             "pass; the claims that need this run cannot be measured, the others still are. "
             "Check the model and the prompts, or reproduce it by running the model on one "
             "prompt")
_OOM_HINT = ("mechcheck halved the batch down to one prompt; use a smaller dtype "
             "(--mechcheck-dtype bfloat16), shorter prompts or a device with more memory; "
             "--mechcheck-batch-size N sets the starting batch size")


# One patch of a site: its columns, what replaces them, the source values, where.
_Part = tuple[slice, Any, "torch.Tensor | None", torch.Tensor]


def stacked_patches(per_copy: Sequence[Mapping[Site, Patch]], rows: int) -> dict[Site, Patch]:
    """The patches of one pass in which a batch of ``rows`` prompts is repeated once
    per entry of ``per_copy``: copy ``j`` (rows ``j*rows .. (j+1)*rows``) gets its own
    patches, and a site a copy does not patch passes its rows through."""
    sites = sorted({s for p in per_copy for s in p}, key=lambda s: (s.module, s.when))

    def combined(site: Site) -> Patch:
        def patch(act: torch.Tensor) -> torch.Tensor:
            parts = []
            for j, patches in enumerate(per_copy):
                own = act if act.shape[0] == 1 else act[j * rows:(j + 1) * rows]
                parts.append(patches[site](own) if site in patches
                             else own.expand(rows, *own.shape[1:]))
            return torch.cat(parts)
        return patch

    return {site: combined(site) for site in sites}


def _rows_in(outputs: Mapping[int, Any]) -> int:
    """The batch size of recorded block outputs."""
    first = next(iter(outputs.values()))
    return int((first if isinstance(first, torch.Tensor) else first[0]).shape[0])


def _unplaced(spec: Any) -> Any:
    return spec.spec if isinstance(spec, Placed) else spec


def _site_patch(parts: list[_Part], rows: np.ndarray) -> Patch:
    """One site's patch: each part replaces its columns at its masked positions."""
    def patch(act: torch.Tensor) -> torch.Tensor:
        # pos_embed runs with batch 1: give every row its own copy to patch
        act = act.expand(len(rows), *act.shape[1:])
        new = act.clone()
        for cols, spec, src, mask in parts:
            keep = mask.view(*mask.shape, 1)
            current = act[..., cols]
            source = None if src is None else src[..., cols].to(act.device)
            if isinstance(spec, Intervention):
                replacement = spec.replace(current, source)
            elif isinstance(spec, RunResult):
                replacement = source  # type: ignore[assignment]
            else:
                replacement = spec(current, rows)
            new[..., cols] = torch.where(keep, replacement.to(act.dtype), current)
        return new

    return patch


def _rows_of(tensor: Any, part: slice, rows: int, *, expand: bool = False) -> Any:
    """``tensor``'s rows in ``part``; a batch-1 tensor (pos_embed's) is shared by all
    rows, so it is kept (or, with ``expand``, repeated to the part's rows)."""
    if tensor is None:
        return None
    if tensor.shape[0] == 1 and rows != 1:
        if not expand:
            return tensor
        count = len(range(*part.indices(rows)))
        return tensor.expand(count, *tensor.shape[1:])
    return tensor[part]


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or
                                              "not enough memory" in text or
                                              "can't allocate memory" in text)


def _free_memory(device: str) -> None:
    if device.startswith("cuda") and torch.cuda.is_available():
        import gc

        gc.collect()
        torch.cuda.empty_cache()


def _fresh(exc: MechcheckError) -> MechcheckError:
    """A copy of a cached error, so that each claim can add its own location."""
    import copy

    return copy.copy(exc)


def _forward_parameters(model: Any) -> set[str]:
    import inspect

    return set(inspect.signature(model.forward).parameters)
