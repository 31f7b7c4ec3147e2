"""Forward passes over a dataset: the shared clean/corrupt runs and patched runs.

A :class:`Runner` belongs to one model and one dataset.  It computes the clean run
(and the corrupt run where a claim needs it) once, recording in that same pass every
activation and attention pattern that the claims will need, and then serves each
claim's patched run as one batched forward pass per group of equal-length prompts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mechcheck._torch_hooks import Patch, hooked
from mechcheck.addresses import Address
from mechcheck.data import Dataset
from mechcheck.errors import DataError
from mechcheck.interventions import Intervention
from mechcheck.models.adapter import Site
from mechcheck.models.loading import LoadedModel, eager_attention

__all__ = ["Needs", "Runner", "position_mask"]


@dataclass(slots=True)
class Needs:
    """What the shared runs must record: ``(run, site)`` pairs and attention layers."""

    record: set[tuple[str, Site]] = field(default_factory=set)
    patterns: set[int] = field(default_factory=set)
    runs: set[str] = field(default_factory=lambda: {"clean"})

    def update(self, other: Needs) -> None:
        self.record |= other.record
        self.patterns |= other.patterns
        self.runs |= other.runs


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
            known = ", ".join(sorted(named)) or "none"
            raise DataError(f"{where} defines no position named {item!r} (it has: {known})",
                            key="at", hint="add it to the row's positions, or use last or "
                            "a token index")
        return named[item]
    index = item + length if item < 0 else item
    if not 0 <= index < length:
        raise DataError(f"at: position {item} is outside {where}'s {length} tokens",
                        key="at", hint=f"use an index from {-length} to {length - 1}")
    return index


class Runner:
    """Runs one model over one dataset, caching the shared runs.

    Args:
        loaded: the model with its adapter.
        dataset: the tokenized prompts.
        batch_size: the most prompts in one forward pass.
    """

    def __init__(self, loaded: LoadedModel, dataset: Dataset, *, batch_size: int = 128) -> None:
        self.loaded = loaded
        self.dataset = dataset
        self.batches = tuple(
            chunk for group in dataset.groups
            for chunk in np.array_split(group, max(1, -(-len(group) // batch_size)))
        )
        self._logits: dict[str, torch.Tensor] = {}
        self._recorded: dict[tuple[str, Site], list[torch.Tensor]] = {}
        self._patterns: dict[int, list[torch.Tensor]] = {}
        self._means: dict[tuple[Site, str | None, str], dict[Any, torch.Tensor]] = {}
        self._keep_one = "logits_to_keep" in _forward_parameters(loaded.model)

    # -- the shared runs -------------------------------------------------------
    def prepare(self, needs: Needs) -> None:
        """Run (or re-run) the shared passes so that everything in ``needs`` is cached."""
        for run in sorted(needs.runs | {r for r, _ in needs.record}):
            sites = sorted({s for r, s in needs.record if r == run} - self._sites(run),
                           key=lambda s: (s.module, s.when))
            layers = sorted(needs.patterns - set(self._patterns)) if run == "clean" else []
            if run in self._logits and not sites and not layers:
                continue
            self._shared_pass(run, sites, layers)

    def _sites(self, run: str) -> set[Site]:
        return {s for r, s in self._recorded if r == run}

    def _shared_pass(self, run: str, sites: list[Site], layers: list[int]) -> None:
        self._check_run(run)
        logits: list[torch.Tensor] = []
        recorded: dict[Site, list[torch.Tensor]] = {s: [] for s in sites}
        patterns: dict[int, list[torch.Tensor]] = {la: [] for la in layers}
        for rows in self.batches:
            with hooked(self.loaded.adapter, record=sites, patterns=layers) as store:
                if layers:
                    with eager_attention(self.loaded.model):
                        logits.append(self._forward(self._inputs(run, rows), sites))
                else:
                    logits.append(self._forward(self._inputs(run, rows), sites))
            for site in sites:
                recorded[site].append(store[site])
            for layer in layers:
                patterns[layer].append(store[("pattern", layer)])
        self._logits[run] = self._in_row_order(logits)
        for site, values in recorded.items():
            self._recorded[(run, site)] = values
        self._patterns.update(patterns)

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
    def patched_logits(self, targets: Sequence[tuple[Address, Intervention]],
                       at: Sequence[int | str] | None = None, *,
                       mean_by: str | None = None) -> torch.Tensor:
        """Last-position logits ``[n, vocab]`` with every target intervened on.

        ``mean_by`` names a data column (e.g. ``template``): mean ablation then uses
        the mean over the rows sharing the row's value, as Wang et al. do per template.
        """
        base_runs = {iv.base_run for _, iv in targets}
        if len(base_runs) != 1:
            raise ValueError("all interventions of one run must share their base run")
        (base,) = base_runs
        self._check_run(base)
        self.prepare(self.needs_for(targets))
        if mean_by is not None and mean_by not in self.dataset.columns:
            known = ", ".join(sorted(self.dataset.columns)) or "none"
            raise DataError(f"mean_by: the data have no column {mean_by!r} (extra columns: "
                            f"{known})", key="mean_by",
                            hint="add the column to every row, or drop mean_by")
        logits = []
        for b, rows in enumerate(self.batches):
            mask = position_mask(self.dataset, rows, len(self.dataset.prompts[rows[0]]), at)
            patches = self._patches(targets, b, mask.to(self.loaded.device), mean_by)
            with hooked(self.loaded.adapter, patches=patches):
                logits.append(self._forward(self._inputs(base, rows), patches))
        return self._in_row_order(logits)

    def needs_for(self, targets: Iterable[tuple[Address, Intervention]]) -> Needs:
        """The shared-run recordings that patching ``targets`` will read."""
        needs = Needs()
        for address, iv in targets:
            needs.runs.add(iv.base_run)
            if iv.source is not None:
                run = iv.source.removesuffix("_mean").replace("mean", "clean")
                needs.record.add((run, self.loaded.adapter.site(address)))
        return needs

    def _patches(self, targets: Sequence[tuple[Address, Intervention]], batch: int,
                 mask: torch.Tensor, mean_by: str | None) -> dict[Site, Patch]:
        adapter = self.loaded.adapter
        by_site: dict[Site, list[tuple[slice, Intervention]]] = {}
        for address, iv in targets:
            by_site.setdefault(adapter.site(address), []).append((adapter.columns(address), iv))
        return {site: self._site_patch(site, parts, batch, mask, mean_by)
                for site, parts in by_site.items()}

    def _site_patch(self, site: Site, parts: list[tuple[slice, Intervention]], batch: int,
                    mask: torch.Tensor, mean_by: str | None) -> Patch:
        sources = {iv.source: self._source(iv.source, site, batch, mean_by) for _, iv in parts}

        def patch(act: torch.Tensor) -> torch.Tensor:
            # pos_embed runs with batch 1: give every row its own copy to patch
            act = act.expand(mask.shape[0], *act.shape[1:])
            new = act.clone()
            keep = mask.view(*mask.shape, 1)
            for cols, iv in parts:
                src = sources[iv.source]
                current = act[..., cols]
                replacement = iv.replace(current, None if src is None else src[..., cols])
                new[..., cols] = torch.where(keep, replacement.to(act.dtype), current)
            return new

        return patch

    def _source(self, source: str | None, site: Site, batch: int,
                mean_by: str | None = None) -> torch.Tensor | None:
        if source is None:
            return None
        if source in ("mean", "corrupt_mean"):
            rows = self.batches[batch]
            length = len(self.dataset.prompts[rows[0]])
            run = "corrupt" if source == "corrupt_mean" else "clean"
            means = self._means_by(site, mean_by, run)
            keys = [None] * len(rows) if mean_by is None else [
                self.dataset.columns[mean_by][int(r)] for r in rows]
            return torch.stack([means[k][:length] for k in keys])
        return self._recorded[(source, site)][batch]

    def _means_by(self, site: Site, column: str | None,
                  run: str = "clean") -> dict[Any, torch.Tensor]:
        """A run's mean activation per position ``[max_len, width]``, over all rows
        (key None) or per value of a data column."""
        if (site, column, run) not in self._means:
            values = [None] * len(self.dataset) if column is None else \
                list(self.dataset.columns[column])
            self._means[(site, column, run)] = {
                key: self._mean_over({i for i, v in enumerate(values) if v == key}, site, run)
                for key in dict.fromkeys(values)}
        return self._means[(site, column, run)]

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

    # -- plumbing -----------------------------------------------------------------
    def _inputs(self, run: str, rows: np.ndarray) -> torch.Tensor:
        prompts = self.dataset.prompts if run == "clean" else self.dataset.corrupts
        assert prompts is not None
        ids = torch.tensor([prompts[int(i)] for i in rows], dtype=torch.long)
        return ids.to(self.loaded.device)

    def _forward(self, input_ids: torch.Tensor, sites: Iterable[Site] = ()) -> torch.Tensor:
        """Last-position logits; the unembedding runs on the last position only unless
        a hooked site is the unembedding itself (whose positions must all exist)."""
        kwargs: dict[str, Any] = {"use_cache": False}
        unembed = self.loaded.adapter.site(Address("unembed"))
        if self._keep_one and unembed not in set(sites):
            kwargs["logits_to_keep"] = 1
        with torch.inference_mode():
            out = self.loaded.model(input_ids=input_ids, **kwargs)
        return out.logits[:, -1].float()

    def _in_row_order(self, per_batch: list[torch.Tensor]) -> torch.Tensor:
        order = torch.as_tensor(np.concatenate(self.batches))
        stacked = torch.cat(per_batch)
        out = torch.empty_like(stacked)
        out[order.to(stacked.device)] = stacked
        return out


def _forward_parameters(model: Any) -> set[str]:
    import inspect

    return set(inspect.signature(model.forward).parameters)
