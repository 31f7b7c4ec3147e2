"""What a claim kind can ask for while it measures: components, metrics, runs.

:class:`ClaimContext` is the claim kinds' only window onto models, data and
registries, bound to one claim.  Its public methods (runs with patches and
recordings, activations, attention patterns, means, gradients, metric values and the
claim's decision rule) are all that the built-in kinds use.  Every error it raises is
located at the claim key at fault, so a kind never needs to build error messages
about components, metrics or interventions itself.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mechcheck.addresses import Address
from mechcheck.engine.attention import attention_score
from mechcheck.engine.lens import Lens
from mechcheck.engine.runner import Needs, PatchSpec, Runner, position_mask, unknown_position
from mechcheck.engine.runs import PatchRequest, Placed, RunResult
from mechcheck.errors import ClaimSpecError, DataError, MechcheckError, describe_exception

if TYPE_CHECKING:
    from mechcheck.data import Dataset
    from mechcheck.engine.interventions import Intervention
    from mechcheck.metrics import Metric, MetricInputs
    from mechcheck.models.loading import LoadedModel
    from mechcheck.session import Session
    from mechcheck.spec.schema import ClaimSpec
    from mechcheck.stats import Decision

__all__ = ["ClaimContext", "Placed", "RunResult"]


class ClaimContext:
    """The engine as one claim's kind sees it: its components, metric and runs.

    Bound to one claim (``ctx.claim``), so no method takes the claim.  Every method
    here is public and is all a built-in kind uses, so a plugin kind has the same
    power.  Errors are located at the claim key at fault.

    Args:
        session: the session whose models, data and registry the claim uses.
        claim: the claim being measured.
    """

    def __init__(self, session: Session, claim: ClaimSpec) -> None:
        self.session = session
        self.claim = claim
        self.n_resamples = session.n_resamples
        self._values: dict[str, np.ndarray] = {}  # per-prompt values, by report column

    @property
    def params(self) -> Mapping[str, Any]:
        """The claim's kind-specific keys, parsed."""
        return self.claim.params

    # -- lookups ---------------------------------------------------------------
    def _runner(self) -> Runner:
        """The runner of the claim's model and data (private: kinds use the methods
        below)."""
        return self.session.runner(self.claim)

    @property
    def dataset(self) -> Dataset:
        """The claim's tokenized prompts."""
        return self._runner().dataset

    @property
    def model(self) -> LoadedModel:
        """The claim's loaded model, its tokenizer and adapter."""
        return self._runner().loaded

    @property
    def lens(self) -> Lens:
        """The model's final norm and unembedding (:class:`~mechcheck.engine.lens.Lens`):
        the logit lens, and the norm as an affine map for direct effects."""
        adapter = self.model.adapter
        cached = vars(adapter).get("_lens")  # one per model: the norm map is read once
        if cached is None:
            cached = vars(adapter)["_lens"] = Lens(adapter)
        return cached

    def components(self, key: str = "components") -> tuple[Address, ...]:
        """The addresses of the claim key ``key``, expanded and checked."""
        adapter = self.model.adapter
        try:
            return adapter.resolve(self.params[key])
        except MechcheckError as exc:
            raise exc.located(key=key) from None

    def component_names(self, key: str = "components") -> tuple[str, ...]:
        return tuple(str(a) for a in self.components(key))

    def metric(self) -> Metric:
        """The claim's metric (``metric:``)."""
        metric = self.session.registry.lookup("metrics", self.params["metric"], key="metric")
        if metric.needs_wrong and self.dataset.wrongs is None:
            raise DataError(f"metric {metric.name} needs a 'wrong' column in the data",
                            key="metric", hint="add a wrong (contrast) token to every row, "
                            "or use logprob, prob, accuracy or kl")
        return metric

    def intervention(self, name: str, *, base: str, key: str) -> Intervention:
        """The registered intervention ``name``, which must run on ``base`` prompts."""
        iv = self.session.registry.lookup("interventions", name, key=key)
        if iv.base_run != base:
            raise ClaimSpecError(
                f"intervention '{name}' runs on {iv.base_run} prompts, but this claim kind "
                f"intervenes on the {base} run", key=key,
                hint="necessary/negligible take ablations of the clean run (zero, mean, "
                "resample, noise); sufficient takes denoise",
            )
        return iv

    def require_test(self, allowed: str | tuple[str, ...], why: str) -> None:
        """Raise at ``test:`` unless the claim's test is one of ``allowed``."""
        if self.claim.test not in ((allowed,) if isinstance(allowed, str) else allowed):
            raise ClaimSpecError(f"test: {self.claim.test} does not apply here", key="test",
                                 hint=why)

    # -- needs (what the shared runs record before any claim is measured) --------
    def ablation_needs(self, name: str, *, base: str) -> Needs:
        """What patching the claim's components with intervention ``name`` reads,
        and the patched run itself (a :class:`PatchRequest` in ``Needs.patched``, so
        that the runner can plan it with the file's other patched runs)."""
        targets = self._targets(name, base)
        needs = self._runner().needs_for(targets)
        needs.runs.add("clean")
        at = self.params.get("at")
        needs.patched.append(PatchRequest.of(targets, at, self.params.get("mean_by")))
        return needs

    def record_needs(self, run: str, addresses: Sequence[Address]) -> Needs:
        """The shared ``run`` recording ``addresses`` (see :meth:`activations`)."""
        adapter = self.model.adapter
        return Needs(runs={"clean", run},
                     record={(run, adapter.site(a)) for a in addresses if a.site != "pattern"},
                     patterns={int(a.layer) for a in addresses  # type: ignore[arg-type]
                               if a.site == "pattern" and run == "clean"})

    def pattern_needs(self) -> Needs:
        """The clean run recording the attention pattern of the claim's head."""
        return Needs(patterns={int(self._head().layer)})  # type: ignore[arg-type]

    # -- runs ------------------------------------------------------------------
    def run(self, base: str = "clean",
            patches: Mapping[Address | str, PatchSpec | str] | None = None, *,
            record: Sequence[Address | str] = (), at: Sequence[int | str] | None = None,
            positions: str = "last") -> RunResult:
        """A run of the model over the claim's ``base`` prompts with ``patches``.

        Args:
            base: ``"clean"`` or ``"corrupt"``.
            patches: address -> what replaces its activation: an intervention (or the
                name of a registered one), a :class:`RunResult` that recorded the
                address (its values), or a function ``(current, rows) -> new``; any of
                them wrapped in :class:`~mechcheck.engine.runs.Placed` acts at its own
                positions instead of ``at``.
            record: addresses whose values to record (as they reach the site).
            at: positions where the patches act (``last``, indices, named positions);
                None for every position.
            positions: ``"last"`` (last-position logits) or ``"all"`` (also every
                position's logits, ``RunResult.all_logits``).
        """
        if positions not in ("last", "all"):
            raise ValueError(f"positions must be 'last' or 'all', got {positions!r}")
        specs: list[tuple[Address, Any]] = []
        for address, spec in (patches or {}).items():
            if isinstance(spec, str):
                spec = self.intervention(spec, base=base, key="patch")
            elif isinstance(spec, Placed) and isinstance(spec.spec, str):
                spec = Placed(self.intervention(spec.spec, base=base, key="patch"), spec.at)
            for concrete in self._expand(address):
                specs.append((concrete, spec))
        wanted = [c for a in record for c in self._expand(a)]
        try:
            return self._runner().run(base, specs, record=wanted, at=at, positions=positions)
        except DataError as exc:
            raise exc.located(key=exc.key or "data") from None

    def run_many(self, base: str,
                 patch_sets: Sequence[Mapping[Address | str, PatchSpec | str]], *,
                 at: Sequence[int | str] | None = None) -> list[torch.Tensor]:
        """Last-position logits ``[n, vocab]`` of one run over the ``base`` prompts per
        patch set (each as :meth:`run`'s ``patches``), several sets per forward pass:
        the cheap way to score many circuits or ablations."""
        sets = []
        for patches in patch_sets:
            specs: list[tuple[Address, Any]] = []
            for address, spec in patches.items():
                if isinstance(spec, str):
                    spec = self.intervention(spec, base=base, key="ablation")
                specs.extend((concrete, spec) for concrete in self._expand(address))
            sets.append(specs)
        try:
            return self._runner().run_many(base, sets, at=at)
        except DataError as exc:
            raise exc.located(key=exc.key or "data") from None

    def metric_of(self, logits: torch.Tensor) -> np.ndarray:
        """The claim's metric per prompt for last-position ``logits`` ``[n, vocab]``."""
        return self._apply_metric(logits)

    def shared(self, run: str = "clean") -> RunResult:
        """The shared ``clean`` or ``corrupt`` run (computed once per model and data)."""
        return self._runner().shared(run)

    def recorded(self, run: str, addresses: Sequence[Address | str]) -> RunResult:
        """The shared ``run`` with every one of ``addresses`` recorded (in one more pass
        at most, when the shared pass did not record them already)."""
        concrete = [c for a in addresses for c in self._expand(a)]
        self._runner().prepare(self.record_needs(run, concrete))
        return self.shared(run)

    def resolve(self, items: Sequence[Address | str], key: str) -> tuple[Address, ...]:
        """Addresses written under the claim key ``key``, expanded and checked against
        the model (errors located at ``key``)."""
        try:
            return self.model.adapter.resolve(list(items))
        except MechcheckError as exc:
            raise exc.located(key=key) from None

    def activations(self, run: str | RunResult, address: Address | str) -> list[torch.Tensor]:
        """Per row, ``address``'s activation ``[pos, width]`` in ``run`` (a shared run's
        name, recorded on first use, or a :class:`RunResult`)."""
        if isinstance(run, RunResult):
            return run.activations(address)
        (concrete,) = self._expand(address)
        self._runner().prepare(self.record_needs(run, [concrete]))
        return self.shared(run).activations(concrete)

    def derived(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute()``, once per model and data: a value that depends only on the
        shared runs (a lens's scores at a layer, say), kept for the file's other claims
        under ``key`` (which should name the kind, e.g. ``("decodes", site, ...)``).
        An exception is not kept: the next claim computes again."""
        memo = self._runner().derived
        if key not in memo:
            memo[key] = compute()
        return memo[key]

    def text_activations(self, texts: Sequence[str], address: Address | str, *,
                         key: str) -> list[torch.Tensor]:
        """Per text, ``address``'s activation ``[pos, width]`` when the model reads
        ``texts`` (prompts that are not the claim's data rows, such as a steering
        contrast set); errors are located at the claim key ``key``."""
        (concrete,) = self._expand(address)
        empty = [i for i, t in enumerate(texts) if not str(t).strip()]
        if not texts or empty:
            what = "no prompts" if not texts else f"prompt {empty[0]} is empty"
            raise DataError(f"{key}: {what}", key=key, hint="give at least one non-empty prompt")
        try:
            return self._runner().record_texts(list(texts), [concrete],
                                               what=f"the run on {key}'s prompts")[concrete]
        except MechcheckError as exc:
            raise exc.located(key=exc.key or key) from None

    def positions_of(self, row: int, at: Sequence[int | str] | None, *,
                     key: str = "at") -> list[int]:
        """Row ``row``'s token indices named by ``at`` (``last``, indices, names from
        the data; None: every position), in order, without repeats."""
        length = len(self.dataset.prompts[row])
        if at is None:
            return list(range(length))
        try:
            mask = position_mask(self.dataset, np.asarray([row]), length, at)
        except DataError as exc:
            raise exc.located(key=key) from None
        return [int(i) for i in torch.nonzero(mask[0]).flatten()]

    def pattern(self, layer: int, head: int) -> list[torch.Tensor]:
        """Per row, head ``layer.head``'s clean attention pattern ``[query, key]``."""
        return self.activations("clean", Address("pattern", layer, head))

    def means(self, address: Address | str, run: str = "clean",
              by: str | None = None) -> dict[Any, torch.Tensor]:
        """``run``'s mean of ``address`` per position ``[max_len, width]``: key None for
        the mean over all rows, else one per value of the data column ``by``."""
        (concrete,) = self._expand(address)
        try:
            return self._runner().means(concrete, run, by)
        except DataError as exc:
            raise exc.located(key=exc.key or "data") from None

    def gradients(self, addresses: Sequence[Address | str], base: str = "clean",
                  ) -> dict[Address, list[torch.Tensor]]:
        """Per row, the gradient of the claim's metric with respect to each address's
        activation in the ``base`` run, ``[pos, width]`` (for attribution patching:
        the first-order change of the metric is ``(a' - a) . grad``)."""
        metric = self.metric()
        runner = self._runner()
        inputs = self._inputs()

        def objective(logits: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
            return metric(logits, _rows_of(inputs, rows))

        concrete = [c for a in addresses for c in self._expand(a)]
        return runner.gradients(base, concrete, objective)

    # -- measurements ------------------------------------------------------------
    def metric_values(self, run: str | RunResult, *, keep: str | None = None) -> np.ndarray:
        """The claim's metric per prompt for a shared run (by name: its values are
        kept as that report column) or a :class:`RunResult` (kept as ``keep``)."""
        logits = self._runner().logits(run) if isinstance(run, str) else run.logits
        values = self._apply_metric(logits)
        name = run if isinstance(run, str) else keep
        return self.keep(name, values) if name else values

    def keep(self, name: str, values: np.ndarray) -> np.ndarray:
        """Keep per-prompt ``values`` for the report's per-prompt table (columns
        ``clean``, ``corrupt``, ``patched``, ``score`` are shown by name)."""
        self._values[name] = values
        return values

    def per_prompt(self) -> dict[str, list[Any]] | None:
        """The per-prompt values computed for the claim so far, as report columns:
        ``row``, the runs' metric values (``clean``, ``corrupt``, ``patched``), the
        attention ``score``, ``difference`` (patched minus the run patched into), then
        the data's extra columns; None when none were computed."""
        kept = self._values
        if not kept:
            return None
        n = len(next(iter(kept.values())))
        columns: dict[str, list[Any]] = {"row": list(range(n))}
        for name in ("clean", "corrupt", "patched", "score"):
            if name in kept:
                columns[name] = kept[name].tolist()
        base = kept.get("_base")
        if base is not None and "patched" in kept:
            columns["difference"] = (kept["patched"] - base).tolist()
        try:
            dataset = self.dataset
        except MechcheckError:
            return columns
        for name, values in dataset.columns.items():
            if name not in columns and len(values) == n:
                columns[name] = [v if isinstance(v, (str, int, float, bool)) or v is None
                                 else str(v) for v in values]
        return columns

    def metric_pair(self, name: str, *, base: str) -> tuple[np.ndarray, np.ndarray, str]:
        """Metric values of the base run and of the run with the claim's components
        patched by intervention ``name`` (at the claim's ``at:``, with its
        ``mean_by:``), and a label for reports."""
        targets = self._targets(name, base)
        mean_by = self.params.get("mean_by")
        at = self.params.get("at")
        try:
            patched = self._runner().patched_logits(targets, at, mean_by=mean_by)
        except DataError as exc:
            raise exc.located(key=exc.key or "data") from None
        iv = targets[0][1]
        label = iv.description
        is_mean = iv.source is not None and iv.source.reduce == "mean"
        if mean_by and not is_mean:
            raise ClaimSpecError(f"mean_by applies to mean ablations, not to '{name}'",
                                 key="mean_by", hint="use ablation: mean or mean_corrupt, "
                                 "or remove mean_by")
        if mean_by:
            label += f" per {mean_by}"
        if at is not None:
            label += f" at {', '.join(map(str, at))}"
        base_values = self.metric_values(base)
        self.keep("_base", base_values)
        return base_values, self.keep("patched", self._apply_metric(patched)), label

    def _apply_metric(self, logits: torch.Tensor) -> np.ndarray:
        metric = self.metric()
        try:
            values = torch.as_tensor(metric(logits, self._inputs())).double().cpu().numpy()
        except MechcheckError:
            raise
        except Exception as exc:  # noqa: BLE001 - a plugin metric's failure, named
            raise MechcheckError(f"metric {metric.name} raised {describe_exception(exc)}",
                                 key="metric", hint="fix the metric's function (a plugin's?) "
                                 "or choose another metric") from exc
        return _checked_values(values, metric.name, len(self.dataset))

    def _inputs(self) -> MetricInputs:
        runner = self._runner()
        return _metric_inputs(runner.dataset, runner.logits("clean"), runner.loaded.tokenizer)

    def percent_of_clean(self, key: str, value: float | str, clean: np.ndarray) -> float:
        """A threshold: ``value`` itself, or a ``"40%"`` share of the clean mean."""
        if not isinstance(value, str):
            return float(value)
        fraction = float(value.rstrip("%")) / 100.0
        base = float(np.mean(clean))
        if base <= 0:
            raise ClaimSpecError(
                f"{key}: '{value}' is a share of the clean metric's mean, which is "
                f"{base:.4g} here", key=key,
                hint="a percentage needs a positive clean mean: give an absolute number",
            )
        return fraction * base

    def stats_call(self, key: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call a decision rule, turning its ValueError into an error at ``key``."""
        try:
            return fn(*args, **kwargs)
        except ValueError as exc:
            raise MechcheckError(str(exc), key=key) from None

    def decide_greater(self, values: np.ndarray, threshold: float) -> Decision:
        """The claim's decision rule (``test:``, a registered
        :class:`~mechcheck.rules.DecisionRule`) on "the mean of ``values`` exceeds
        ``threshold``", at the claim's alpha and seed."""
        from mechcheck.rules import decide_greater

        return decide_greater(self.session.registry, self.claim, values, threshold,
                              self.n_resamples)

    # -- attention ----------------------------------------------------------------
    def _head(self) -> Address:
        addresses = self.components()
        if len(addresses) != 1 or addresses[0].site != "head":
            raise ClaimSpecError(
                f"attends takes exactly one head, got {', '.join(map(str, addresses))}",
                key="components", hint='write one head, e.g. components: ["head 1.4"]')
        return addresses[0]

    def attention_scores(self) -> tuple[np.ndarray, str]:
        """Per prompt, the claim's head's attention score (``pattern:`` or
        ``from:``/``to:``), kept as the report's ``score`` column, and a label."""
        head = self._head()
        dataset = self.dataset
        patterns = self.pattern(int(head.layer), int(head.index))  # type: ignore[arg-type]
        scores = np.empty(len(dataset))
        source, target = self.params.get("from"), self.params.get("to")
        pattern_name = self.params.get("pattern")
        label = self._pattern_label(pattern_name, source, target)
        for rows in self._runner().batches:
            pattern = torch.stack([patterns[int(r)] for r in rows])
            if pattern_name:
                tokens = torch.tensor([dataset.prompts[int(r)] for r in rows],
                                      device=pattern.device)
                score = attention_score(self.session.registry, pattern_name)
                scores[rows] = score(pattern, tokens).double().cpu().numpy()
            else:
                for b, row in enumerate(rows):
                    named = dataset.positions[int(row)]
                    _check_named(dataset, int(row), source, target)
                    scores[row] = float(pattern[b, named[str(source)], named[str(target)]])
        bad = np.flatnonzero(np.isnan(scores))
        if bad.size:
            raise DataError(f"{dataset.row_label(int(bad[0]))} has no position to "
                            f"score for {label}", key="pattern",
                            hint="every prompt needs a repeated token for induction and "
                            "duplicate_token scores")
        return self.keep("score", scores), label

    def _pattern_label(self, pattern: str | None, source: str | None,
                       target: str | None) -> str:
        if pattern and (source or target):
            raise ClaimSpecError("give either pattern: or from:/to:, not both", key="pattern",
                                 hint="remove one of them")
        if pattern:
            return f"{pattern} score"
        if not (source and target):
            raise ClaimSpecError("attends needs pattern: or both from: and to:", key="pattern",
                                 hint="e.g. pattern: induction, or from: END and to: IO")
        return f"attention {source}->{target}"

    # -- plumbing -------------------------------------------------------------------
    def _expand(self, address: Address | str) -> tuple[Address, ...]:
        try:
            return self.model.adapter.resolve([address])
        except MechcheckError as exc:
            raise exc.located(key=exc.key or "components") from None

    def _targets(self, name: str, base: str) -> list[tuple[Address, Any]]:
        key = "patch" if base == "corrupt" else "ablation"
        iv = self.intervention(name, base=base, key=key)
        return [(address, iv) for address in self.components()]


def _checked_values(values: np.ndarray, name: str, n: int) -> np.ndarray:
    """A metric's per-prompt values, which must be ``n`` finite numbers."""
    if values.shape != (n,):
        raise MechcheckError(f"metric {name} returned values of shape {tuple(values.shape)} "
                             f"for {n} prompts", key="metric",
                             hint="a metric returns one number per prompt: a tensor [n]")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        rows = ", ".join(str(int(r)) for r in bad[:5]) + (" ..." if bad.size > 5 else "")
        raise MechcheckError(
            f"metric {name} gave {values[bad[0]]} (not a finite number) for {bad.size} of "
            f"{n} prompts (rows {rows})", key="metric",
            hint="the decision rules need finite values: check the metric (e.g. a "
            "probability of 0 under log) and the rows named")
    return values


def _rows_of(inputs: MetricInputs, rows: np.ndarray) -> MetricInputs:
    """The metric inputs of the prompts ``rows`` only."""
    from mechcheck.metrics import MetricInputs

    index = torch.as_tensor(np.asarray(rows, dtype=np.int64))
    return MetricInputs(
        answers=inputs.answers[index], wrongs=None if inputs.wrongs is None else
        inputs.wrongs[index], clean_logits=inputs.clean_logits[index.to(
            inputs.clean_logits.device)],
        columns={k: tuple(v[int(r)] for r in rows) for k, v in inputs.columns.items()},
        tokenizer=inputs.tokenizer)


def _check_named(dataset: Dataset, row: int, source: Any, target: Any) -> None:
    """Raise for the from:/to: names that ``row`` lacks, both in one error if both."""
    named = dataset.positions[row]
    errors = [unknown_position(dataset, row, str(name), key=key)
              for key, name in (("from", source), ("to", target)) if name not in named]
    if len(errors) == 1:
        raise errors[0]
    if errors:
        first, second = errors
        raise DataError(f"{first.message}; {second.message}", key="from",
                        hint=f"{first.hint}; for to: the same names apply")


def _metric_inputs(ds: Any, clean_logits: torch.Tensor, tokenizer: Any) -> Any:
    from mechcheck.metrics import MetricInputs

    return MetricInputs(
        answers=torch.as_tensor(ds.answers),
        wrongs=None if ds.wrongs is None else torch.as_tensor(ds.wrongs),
        clean_logits=clean_logits, columns=ds.columns, tokenizer=tokenizer,
    )
