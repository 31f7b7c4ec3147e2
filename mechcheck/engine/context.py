"""What a claim kind can ask for while it measures: components, metrics, runs.

:class:`Context` is the claim kinds' only window onto models, data and registries.
Every error it raises is located at the claim key at fault, so a kind never needs to
build error messages about components, metrics or interventions itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mechcheck.engine.attention import attention_score
from mechcheck.engine.runner import Needs, Runner, unknown_position
from mechcheck.errors import ClaimSpecError, DataError, MechcheckError, describe_exception

if TYPE_CHECKING:
    from mechcheck.addresses import Address
    from mechcheck.engine.interventions import Intervention
    from mechcheck.metrics import Metric
    from mechcheck.session import Session
    from mechcheck.spec.schema import ClaimSpec

__all__ = ["Context"]


class Context:
    """Services for claim kinds, bound to one :class:`~mechcheck.session.Session`."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.n_resamples = session.n_resamples
        # per claim (by id()), the per-prompt values computed for it, by name
        self._values: dict[int, dict[str, np.ndarray]] = {}

    # -- lookups ---------------------------------------------------------------
    def runner(self, claim: ClaimSpec) -> Runner:
        return self.session.runner(claim)

    def components(self, claim: ClaimSpec) -> tuple[Address, ...]:
        adapter = self.runner(claim).loaded.adapter
        try:
            return adapter.resolve(claim.params["components"])
        except MechcheckError as exc:
            raise exc.located(key="components") from None

    def component_names(self, claim: ClaimSpec) -> tuple[str, ...]:
        return tuple(str(a) for a in self.components(claim))

    def metric(self, claim: ClaimSpec) -> Metric:
        metric = self.session.registry.lookup("metrics", claim.params["metric"], key="metric")
        if metric.needs_wrong and self.runner(claim).dataset.wrongs is None:
            raise DataError(f"metric {metric.name} needs a 'wrong' column in the data",
                            key="metric", hint="add a wrong (contrast) token to every row, "
                            "or use logprob, prob, accuracy or kl")
        return metric

    def intervention(self, claim: ClaimSpec, name: str, *, base: str, key: str) -> Intervention:
        iv = self.session.registry.lookup("interventions", name, key=key)
        if iv.base_run != base:
            raise ClaimSpecError(
                f"intervention '{name}' runs on {iv.base_run} prompts, but this claim kind "
                f"intervenes on the {base} run", key=key,
                hint="necessary/negligible take ablations of the clean run (zero, mean, "
                "resample, noise); sufficient takes denoise",
            )
        return iv

    def require_test(self, claim: ClaimSpec, allowed: str | tuple[str, ...], why: str) -> None:
        if claim.test not in ((allowed,) if isinstance(allowed, str) else allowed):
            raise ClaimSpecError(f"test: {claim.test} does not apply here", key="test",
                                 hint=why)

    # -- needs -----------------------------------------------------------------
    def _targets(self, claim: ClaimSpec, name: str, base: str) -> list[tuple[Address, Any]]:
        key = "patch" if base == "corrupt" else "ablation"
        iv = self.intervention(claim, name, base=base, key=key)
        return [(address, iv) for address in self.components(claim)]

    def intervention_needs(self, claim: ClaimSpec, name: str, *, base: str) -> Needs:
        runner = self.runner(claim)
        needs = runner.needs_for(self._targets(claim, name, base))
        needs.runs.add("clean")
        return needs

    def pattern_needs(self, claim: ClaimSpec) -> Needs:
        return Needs(patterns={int(self._head(claim).layer)})  # type: ignore[arg-type]

    # -- measurements ------------------------------------------------------------
    def metric_values(self, claim: ClaimSpec, run: str) -> np.ndarray:
        runner = self.runner(claim)
        return self._keep(claim, run, self._apply_metric(claim, runner.logits(run)))

    def _keep(self, claim: ClaimSpec, name: str, values: np.ndarray) -> np.ndarray:
        self._values.setdefault(id(claim), {})[name] = values
        return values

    def per_prompt(self, claim: ClaimSpec) -> dict[str, list[Any]] | None:
        """The per-prompt values computed for ``claim`` so far, as report columns:
        ``row``, the runs' metric values (``clean``, ``corrupt``, ``patched``), the
        attention ``score``, ``difference`` (patched minus the run patched into), then
        the data's extra columns; None when none were computed."""
        kept = self._values.get(id(claim))
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
            dataset = self.runner(claim).dataset
        except MechcheckError:
            return columns
        for name, values in dataset.columns.items():
            if name not in columns and len(values) == n:
                columns[name] = [v if isinstance(v, (str, int, float, bool)) or v is None
                                 else str(v) for v in values]
        return columns

    def metric_pair(self, claim: ClaimSpec, name: str, *,
                    base: str) -> tuple[np.ndarray, np.ndarray, str]:
        """Metric values of the base run and of the intervened run, and a label."""
        runner = self.runner(claim)
        targets = self._targets(claim, name, base)
        try:
            patched = runner.patched_logits(targets, claim.params.get("at"),
                                            mean_by=claim.params.get("mean_by"))
        except DataError as exc:
            raise exc.located(key=exc.key or "data") from None
        label = targets[0][1].description
        if claim.params.get("mean_by") and targets[0][1].source not in ("mean", "corrupt_mean"):
            raise ClaimSpecError(f"mean_by applies to mean ablations, not to '{name}'",
                                 key="mean_by", hint="use ablation: mean or mean_corrupt, "
                                 "or remove mean_by")
        if claim.params.get("mean_by"):
            label += f" per {claim.params['mean_by']}"
        if claim.params.get("at") is not None:
            label += f" at {', '.join(map(str, claim.params['at']))}"
        base_values = self.metric_values(claim, base)
        self._keep(claim, "_base", base_values)
        return base_values, self._keep(claim, "patched", self._apply_metric(claim, patched)), label

    def _apply_metric(self, claim: ClaimSpec, logits: torch.Tensor) -> np.ndarray:
        runner = self.runner(claim)
        metric = self.metric(claim)
        ds = runner.dataset
        inputs = _metric_inputs(ds, runner.logits("clean"), runner.loaded.tokenizer)
        try:
            values = torch.as_tensor(metric(logits, inputs)).double().cpu().numpy()
        except MechcheckError:
            raise
        except Exception as exc:  # noqa: BLE001 - a plugin metric's failure, named
            raise MechcheckError(f"metric {metric.name} raised {describe_exception(exc)}",
                                 key="metric", hint="fix the metric's function (a plugin's?) "
                                 "or choose another metric") from exc
        return _checked_values(values, metric.name, len(ds))

    def percent_of_clean(self, claim: ClaimSpec, key: str, value: float | str,
                         clean: np.ndarray) -> float:
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

    def stats_call(self, claim: ClaimSpec, key: str, fn: Callable[..., Any], *args: Any,
                   **kwargs: Any) -> Any:
        """Call a decision rule, turning its ValueError into a located error."""
        try:
            return fn(*args, **kwargs)
        except ValueError as exc:
            raise MechcheckError(str(exc), key=key) from None

    # -- attention ----------------------------------------------------------------
    def _head(self, claim: ClaimSpec) -> Address:
        addresses = self.components(claim)
        if len(addresses) != 1 or addresses[0].site != "head":
            raise ClaimSpecError(
                f"attends takes exactly one head, got {', '.join(map(str, addresses))}",
                key="components", hint='write one head, e.g. components: ["head 1.4"]')
        return addresses[0]

    def attention_scores(self, claim: ClaimSpec) -> tuple[np.ndarray, str]:
        head = self._head(claim)
        runner = self.runner(claim)
        patterns = runner.pattern(int(head.layer), int(head.index))  # type: ignore[arg-type]
        scores = np.empty(len(runner.dataset))
        source, target = claim.params.get("from"), claim.params.get("to")
        pattern_name = claim.params.get("pattern")
        label = self._pattern_label(pattern_name, source, target)
        for rows, pattern in zip(runner.batches, patterns):
            if pattern_name:
                tokens = torch.tensor([runner.dataset.prompts[int(r)] for r in rows],
                                      device=pattern.device)
                score = attention_score(self.session.registry, pattern_name)
                scores[rows] = score(pattern, tokens).double().cpu().numpy()
            else:
                for b, row in enumerate(rows):
                    named = runner.dataset.positions[int(row)]
                    _check_named(runner, int(row), source, target)
                    scores[row] = float(pattern[b, named[str(source)], named[str(target)]])
        bad = np.flatnonzero(np.isnan(scores))
        if bad.size:
            raise DataError(f"{runner.dataset.row_label(int(bad[0]))} has no position to "
                            f"score for {label}", key="pattern",
                            hint="every prompt needs a repeated token for induction and "
                            "duplicate_token scores")
        return self._keep(claim, "score", scores), label

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


def _check_named(runner: Runner, row: int, source: Any, target: Any) -> None:
    """Raise for the from:/to: names that ``row`` lacks, both in one error if both."""
    named = runner.dataset.positions[row]
    errors = [unknown_position(runner.dataset, row, str(name), key=key)
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
