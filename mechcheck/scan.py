"""``mechcheck scan``: measure every component's effect, then draft claims from it.

A study usually starts with a sweep ("ablate every head: which ones matter?") and only
then states claims.  :func:`scan` measures the drop of the metric when each component
alone is ablated, over a model and a data file, either exactly (one patched run per
component, :meth:`~mechcheck.engine.runner.Runner.sweep`) or by attribution patching
(first-order estimates for all, :mod:`mechcheck.engine.attribution`, then the top ones
confirmed exactly).  :func:`draft_claims` turns the top components into a claim file
of ``kind: necessary`` claims whose thresholds lie below the measured lower bounds by
a margin: a draft that the researcher edits and commits.

Effects and intervals are those of kind necessary: the drop ``clean - ablated`` per
prompt (its rise for a lower-is-better metric), the mean, and the one-sided bounds of
the claim's decision rule (``test: robust`` by default) at ``alpha``.
"""

from __future__ import annotations

import argparse
import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mechcheck.errors import ClaimSpecError, MechcheckError

if TYPE_CHECKING:
    from mechcheck.session import Session

__all__ = ["Scan", "ScanRow", "add_scan_parser", "draft_claims", "scan", "scan_command"]

METHODS = ("exact", "attribution")
# The claim keys a scan is made of, and the options that set them (for errors).
_OPTION = {"components": "--components", "metric": "--metric", "ablation": "--ablation",
           "at": "--at", "mean_by": "--mean-by", "data": "--data", "task": "--data",
           "model": "MODEL", "test": "--test", "ig_steps": "--ig-steps", "top_k": "--confirm",
           "n": "--n", "seed": "--seed"}


@dataclass
class ScanRow:
    """One component's outcome; the record :func:`~mechcheck.report.figures.component_heatmap`
    and :func:`~mechcheck.report.figures.text_heatmap` draw.

    Attributes:
        id: ``scan[<address>]``.
        components: the one address, canonical.
        effect: the exact mean drop, or (screened out by attribution) the estimate.
        ci_low, ci_high: the decision rule's one-sided bounds (None when not exact).
        p_value: of "drop > 0" by the rule (None when not exact).
        verdict: ``pass`` (drop > 0 at alpha), ``fail``, or ``skip`` (screened out).
        estimate: the attribution estimate of the drop (None for an exact scan).
        n: the number of prompts.
    """

    id: str
    components: tuple[str, ...]
    effect: float
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    verdict: str
    estimate: float | None
    n: int
    each_of: str = "scan"
    xfail: str | None = None
    drops: np.ndarray | None = field(default=None, repr=False)

    @property
    def exact(self) -> bool:
        return self.verdict != "skip"


@dataclass
class Scan:
    """A scan's settings and one :class:`ScanRow` per component (in address order)."""

    model: str
    data: str | None
    task: dict[str, Any] | None
    metric: str
    ablation: str
    at: tuple[int | str, ...] | None
    mean_by: str | None
    method: str
    ig_steps: int
    seed: int
    alpha: float
    test: str
    n: int
    clean_mean: float
    rows: list[ScanRow]
    first_n: int | None = None  # the n: (first rows) asked for
    higher_is_better: bool = True
    agreement: tuple[float, float, int] | None = None  # Spearman, top-k overlap, k

    def ranked(self) -> list[ScanRow]:
        """Exactly measured rows by effect, largest first (ties in address order)."""
        exact = [r for r in self.rows if r.exact]
        return sorted(exact, key=lambda r: -r.effect)


def scan(model: str, *, data: str | None = None, task: dict[str, Any] | None = None,
         metric: str, components: Sequence[str] = ("blocks.*.attn.head.*",),
         ablation: str = "mean", at: Sequence[int | str] | None = None,
         mean_by: str | None = None, method: str = "exact", ig_steps: int = 0,
         confirm: int = 20, seed: int = 0, alpha: float = 0.05, test: str = "robust",
         n: int | None = None, session: Session | None = None,
         base_dir: str = ".") -> Scan:
    """Every component's drop when it alone is ablated.

    Args:
        model: as a claim file's ``model:`` (``zoo:ioi-small``, a folder, ``hf:...``).
        data: a ``.jsonl``/``.csv`` data file (or ``task``: a task as ``task:`` takes it).
        metric: a registered metric; ``components``: addresses and patterns, expanded.
        ablation, at, mean_by: as kind necessary takes them.
        method: ``exact`` (every component patched) or ``attribution`` (estimates for
            all, the top ``confirm`` patched exactly).
        ig_steps: with attribution, integrated-gradient points (0: plain).
        seed, alpha, test: the decision rule's, as the claim keys.
        n: use the first n rows.
        session: the session (one with the built-ins and plugins when None).
        base_dir: the folder relative paths are read against.

    Raises:
        MechcheckError: located at the claim key at fault (see ``_OPTION``).
    """
    from mechcheck.engine.context import ClaimContext
    from mechcheck.engine.runs import PatchRequest
    from mechcheck.session import Session
    from mechcheck.spec.schema import ClaimSpec

    if method not in METHODS:
        raise ClaimSpecError(f"unknown method {method!r}", key="method",
                             hint="use exact or attribution")
    session = session or Session()
    spec = ClaimSpec(id="scan", kind="necessary", path="<scan>", line=0, base_dir=base_dir,
                     model=model, data=data, task=task, alpha=alpha, seed=seed, n=n,
                     test=test, params={"components": list(components), "metric": metric,
                                        "ablation": ablation, "at": at, "mean_by": mean_by,
                                        "min_drop": 0.0})
    ctx = ClaimContext(session, spec)
    runner = session.runner(spec)
    addresses = ctx.components()
    chosen = ctx.metric()
    iv = ctx.intervention(ablation, base="clean", key="ablation")
    if mean_by is not None and (iv.source is None or iv.source.reduce != "mean"):
        raise ClaimSpecError(f"mean_by applies to mean ablations, not to '{ablation}'",
                             key="mean_by", hint="use --ablation mean or mean_corrupt, or "
                             "drop --mean-by")
    sign = 1.0 if chosen.higher_is_better else -1.0
    clean = ctx.metric_values("clean")
    at_tuple = None if at is None else tuple(at)
    estimates: np.ndarray | None = None
    measure = list(range(len(addresses)))
    if method == "attribution":
        from mechcheck.engine.attribution import screen

        if confirm < 2:
            raise ClaimSpecError(f"confirm must be at least 2, got {confirm}", key="top_k",
                                 hint="the number of components to confirm exactly; the "
                                 "rank agreement needs at least 2")
        kept, estimates = screen(runner, list(addresses), iv, chosen,
                                 top_k=min(confirm, len(addresses)), at=at_tuple,
                                 mean_by=mean_by, ig_steps=ig_steps)
        measure = list(kept)
    elif ig_steps:
        raise ClaimSpecError("ig_steps applies to the attribution method", key="ig_steps",
                             hint="add --method attribution, or drop --ig-steps")
    requests = [PatchRequest.of([(addresses[i], iv)], at_tuple, mean_by) for i in measure]
    try:
        logits = runner.sweep(requests)
    except MechcheckError as exc:
        raise exc.located(key=exc.key or "data") from None
    rows: list[ScanRow] = []
    exact: dict[int, tuple[np.ndarray, Any]] = {}
    for i, patched in zip(measure, logits):
        drop = sign * (clean - ctx.metric_of(patched))
        exact[i] = (drop, ctx.decide_greater(drop, 0.0))
    for i, address in enumerate(addresses):
        estimate = None if estimates is None else float(estimates[i])
        name = str(address)
        if i in exact:
            drop, d = exact[i]
            verdict = "pass" if d.p_value <= alpha else "fail"
            rows.append(ScanRow(id=f"scan[{name}]", components=(name,), effect=d.effect,
                                ci_low=d.ci_low, ci_high=d.ci_high, p_value=d.p_value,
                                verdict=verdict, estimate=estimate, n=d.n, drops=drop))
        else:
            assert estimate is not None
            rows.append(ScanRow(id=f"scan[{name}]", components=(name,), effect=estimate,
                                ci_low=None, ci_high=None, p_value=None, verdict="skip",
                                estimate=estimate, n=len(clean)))
    agreement = None
    if estimates is not None:
        from mechcheck.engine.attribution import rank_agreement

        confirmed = [r for r in rows if r.exact]
        k = max(1, min(5, len(confirmed) // 2))  # a top-k of all would always agree
        rho, overlap = rank_agreement([r.estimate for r in confirmed],  # type: ignore[misc]
                                      [r.effect for r in confirmed], top=k)
        agreement = (rho, overlap, k)
    return Scan(model=model, data=data, task=task, metric=chosen.name, ablation=ablation,
                at=at_tuple, mean_by=mean_by, method=method, ig_steps=ig_steps, seed=seed,
                alpha=alpha, test=test, n=len(clean), clean_mean=float(np.mean(clean)),
                rows=rows, higher_is_better=chosen.higher_is_better, agreement=agreement,
                first_n=n)


def draft_claims(result: Scan, *, top: int, margin: float, path: str | Path,
                 session: Session | None = None, data_path: str | None = None) -> str:
    """A claim file (text) with one ``kind: necessary`` claim per component among the
    ``top`` largest exact effects whose lower bound is above 0.

    Each ``min_drop`` is ``(1 - margin)`` times the component's lower bound, taken at
    ``alpha / k`` for the ``k`` claims of the draft (so that Holm's correction over the
    file cannot undo it); the measured effect and interval are in a comment.
    ``data_path`` is written as given (default: the scan's data, relative to the
    folder of ``path``).
    """
    from mechcheck.rules import decide_greater
    from mechcheck.session import Session
    from mechcheck.spec.schema import ClaimSpec

    session = session or Session()
    chosen = [r for r in result.ranked()[:top] if r.ci_low is not None and r.ci_low > 0]
    k = max(1, len(chosen))
    folder = Path(path).resolve().parent
    if data_path is None and result.data is not None:
        data_path = _relative(result.data, folder)
    model = result.model
    if not model.startswith(("zoo:", "hf:")) and Path(model).exists():
        model = _relative(model, folder)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    what = (f"data {result.data}" if result.data else f"task {_flow(result.task)}")
    lines = [
        f"# DRAFT written by `mechcheck scan` on {when}: claims measured, not yet made.",
        f"# Measured on {result.model}, {what} ({result.n} prompts),",
        f"# metric {result.metric} (clean mean {result.clean_mean:.4g}), ablation "
        f"{result.ablation}" + (f" per {result.mean_by}" if result.mean_by else "")
        + (f" at {', '.join(map(str, result.at))}" if result.at else "") + ",",
        f"# method {result.method}"
        + (f" (ig_steps {result.ig_steps})" if result.ig_steps else "")
        + f", test {result.test}, alpha {result.alpha}, seed {result.seed}.",
        f"# Each min_drop is the measured lower bound (at alpha/{k}, for Holm over the "
        f"{k} claim(s)) less {margin:.0%}.",
        "# Thresholds set on the data they are checked on prove little: before committing,",
        "# check them on other prompts (another seed or n), rename the ids, say what each",
        "# claim means in a description, and delete the claims you do not mean to make.",
    ]
    skipped = [r for r in result.ranked()[:top] if r not in chosen]
    if skipped:
        lines.append("# Left out, their lower bounds not above 0:")
        lines += [f"#   {r.components[0]}: drop {r.effect:.3g}" for r in skipped]
    lines += [f"model: {model}"]
    if data_path is not None:
        lines.append(f"data: {data_path}")
    else:
        lines.append(f"task: {_flow(result.task)}")
    if result.first_n is not None:
        lines.append(f"n: {result.first_n}")
    lines += [f"metric: {result.metric}", f"seed: {result.seed}"]
    if result.alpha != 0.05:
        lines.append(f"alpha: {result.alpha}")
    if result.test != "robust":
        lines.append(f"test: {result.test}")
    lines.append("claims:")
    if not chosen:
        lines.append("  []  # no component's drop was above 0 at alpha")
    probe = ClaimSpec(id="draft", kind="necessary", path=str(path), line=0, base_dir=".",
                      model=None, alpha=result.alpha / k, seed=result.seed, test=result.test)
    for r in chosen:
        assert r.drops is not None
        bound = decide_greater(session.registry, probe, r.drops, 0.0,
                               session.n_resamples).ci_low
        threshold = _round_down(max(bound, 0.0) * (1.0 - margin))
        lines += [
            f"  - id: {_claim_id(r.components[0])}_necessary",
            "    kind: necessary",
            f"    components: [{r.components[0]}]",
            f"    ablation: {result.ablation}",
        ]
        if result.at:
            lines.append(f"    at: [{', '.join(map(str, result.at))}]")
        if result.mean_by:
            lines.append(f"    mean_by: {result.mean_by}")
        lines.append(f"    min_drop: {threshold:<12g}# measured {r.effect:.4g}, "
                     f"{1 - 2 * result.alpha:.0%} CI [{r.ci_low:.4g}, {r.ci_high:.4g}]")
    return "\n".join(lines) + "\n"


def format_table(result: Scan, *, top: int) -> list[str]:
    """The top components by exact effect with their intervals (and estimates)."""
    ranked = result.ranked()[:top]
    level = f"{1 - 2 * result.alpha:.0%} CI"
    width = max([9, *(len(r.components[0]) for r in ranked)])
    head = f"{'component':<{width}}  {'drop':>9}  {level:>21}  {'p':>8}  verdict"
    if result.method == "attribution":
        head += "  estimate"
    word = "drop" if result.higher_is_better else "rise"
    lines = [f"top {len(ranked)} of {len(result.rows)} components by {result.metric} {word} "
             f"({result.ablation}-ablated one at a time, {result.n} prompts, clean mean "
             f"{result.clean_mean:.4g}):", head]
    for r in ranked:
        interval = f"[{r.ci_low:.4g}, {r.ci_high:.4g}]"
        line = (f"{r.components[0]:<{width}}  {r.effect:>9.4g}  {interval:>21}  "
                f"{r.p_value:>8.2g}  {r.verdict}")
        if result.method == "attribution":
            line += f"  {r.estimate:.4g}"
        lines.append(line)
    if result.agreement is not None:
        rho, overlap, k = result.agreement
        confirmed = sum(r.exact for r in result.rows)
        lines.append(f"attribution vs exact over the {confirmed} confirmed: Spearman "
                     f"{rho:.3f}, top-{k} overlap {overlap:.0%}"
                     + (f" (ig_steps {result.ig_steps})" if result.ig_steps else ""))
    return lines


# -- the command line -----------------------------------------------------------------
def add_scan_parser(commands: Any) -> None:
    """The ``mechcheck scan`` subcommand (added to the command line's subparsers)."""
    p = commands.add_parser("scan", help="ablate every component, print the top ones, "
                            "draw a heatmap and draft claims")
    p.add_argument("model", help="the model as claim files name it: zoo:NAME, a folder, hf:ID")
    p.add_argument("--data", required=True, help="a .jsonl or .csv data file")
    p.add_argument("--metric", required=True, help="a metric, e.g. logit_diff or logprob")
    p.add_argument("--components", nargs="+", default=["blocks.*.attn.head.*"],
                   metavar="PATTERN", help="addresses or patterns (default: every head)")
    p.add_argument("--ablation", default="mean", help="zero, mean, mean_corrupt, resample "
                   "(default mean)")
    p.add_argument("--at", default=None, help="positions, comma-separated: last, indices, "
                   "names from the data (default: every position)")
    p.add_argument("--mean-by", default=None, help="a data column for per-value means")
    p.add_argument("--method", default="exact", help="exact (default) or attribution")
    p.add_argument("--ig-steps", type=int, default=0, help="attribution: integrated-"
                   "gradient points (default 0: plain attribution patching)")
    p.add_argument("--top", type=int, default=10, help="components to print and draft "
                   "(default 10)")
    p.add_argument("--confirm", type=int, default=20, help="attribution: the top estimates "
                   "confirmed by exact patching (default 20)")
    p.add_argument("--margin", type=float, default=0.2, help="draft thresholds lie this "
                   "fraction below the lower bounds (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="the decision rule's seed")
    p.add_argument("--n", type=int, default=None, help="use the first N rows")
    p.add_argument("--out", default=None, metavar="DRAFT.yaml", help="write a draft claim file")
    p.add_argument("--heatmap", default=None, metavar="PNG", help="write the heatmap (.png)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if present)")


def scan_command(args: argparse.Namespace) -> int:
    """Run ``mechcheck scan``: print the table, the text heatmap; write the files."""
    from mechcheck.report.figures import component_heatmap, text_heatmap

    _check_options(args)
    at = None if args.at is None else tuple(_position(p) for p in args.at.split(","))
    try:
        result = scan(args.model, data=str(Path(args.data).resolve()), metric=args.metric,
                      components=args.components, ablation=args.ablation, at=at,
                      mean_by=args.mean_by, method=args.method, ig_steps=args.ig_steps,
                      confirm=args.confirm, seed=args.seed, n=args.n,
                      session=_session(args))
    except MechcheckError as exc:
        raise _as_option(exc) from None
    for line in format_table(result, top=args.top):
        print(line)
    print()
    print(text_heatmap(result.rows))
    if args.heatmap:
        component_heatmap(result.rows, args.heatmap)
        print(f"heatmap written to {args.heatmap}")
    if args.out:
        text = draft_claims(result, top=args.top, margin=args.margin, path=args.out)
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"draft claim file written to {args.out}: edit it, then commit it as "
              "a test_*.yaml file")
    return 0


def _check_options(args: argparse.Namespace) -> None:
    """The options that can be checked before the model loads, one error each."""
    def bad(option: str, message: str, hint: str) -> ClaimSpecError:
        return ClaimSpecError(f"{option}: {message}", hint=hint)

    if args.method not in METHODS:
        raise bad("--method", f"unknown method {args.method!r}", "use exact or attribution")
    if not Path(args.data).is_file():
        raise bad("--data", f"no data file at {args.data}", "give a .jsonl or .csv file of "
                  "prompts, as a claim file's data: names")
    if args.top < 1:
        raise bad("--top", f"must be at least 1, got {args.top}", "e.g. --top 10")
    if args.confirm < 2:
        raise bad("--confirm", f"must be at least 2, got {args.confirm}", "e.g. --confirm 20")
    if args.ig_steps < 0:
        raise bad("--ig-steps", f"must be 0 or more, got {args.ig_steps}", "e.g. --ig-steps 5")
    if args.ig_steps and args.method != "attribution":
        raise bad("--ig-steps", "applies to --method attribution only",
                  "add --method attribution, or drop --ig-steps")
    if not 0.0 <= args.margin < 1.0:
        raise bad("--margin", f"must be a fraction from 0 to below 1, got {args.margin}",
                  "e.g. --margin 0.2: thresholds 20% below the lower bounds")
    if args.n is not None and args.n < 2:
        raise bad("--n", f"must be at least 2, got {args.n}", "e.g. --n 40")
    if args.seed < 0:
        raise bad("--seed", f"must be 0 or more, got {args.seed}", "e.g. --seed 0")
    for option, value, suffix in (("--out", args.out, (".yaml", ".yml")),
                                  ("--heatmap", args.heatmap, (".png",))):
        if value is None:
            continue
        if not value.endswith(suffix):
            raise bad(option, f"{value} does not end in {' or '.join(suffix)}",
                      f"give a file name ending in {suffix[0]}")
        parent = Path(value).resolve().parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise bad(option, f"cannot write {value}: no writable folder {parent}",
                      "create the folder, or give another path")


def _position(text: str) -> int | str:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        return text


def _session(args: argparse.Namespace) -> Session:
    from mechcheck import options
    from mechcheck.plugins import Registry, get_plugin_manager
    from mechcheck.session import Session

    options.check_device(args.device, option="--device")
    return Session(registry=Registry.from_plugins(get_plugin_manager()), device=args.device)


def _as_option(exc: MechcheckError) -> MechcheckError:
    """The error with the option that sets its claim key named instead of the key."""
    option = _OPTION.get(exc.key or "")
    if option is None:
        return exc
    located = exc.located()
    located.key = located.path = located.line = located.claim_id = None
    message = exc.message.removeprefix(f"{exc.key}: ")
    located.message = f"{option}: {message}"
    return located


def _relative(path: str, folder: Path) -> str:
    """``path`` relative to ``folder`` when that is short, else absolute."""
    absolute = Path(path).resolve()
    try:
        relative = os.path.relpath(absolute, folder)
    except ValueError:  # another drive (Windows)
        return str(absolute)
    return relative if relative.count("..") <= 2 else str(absolute)


def _claim_id(address: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in address)


def _flow(task: dict[str, Any] | None) -> str:
    import json

    return json.dumps(task or {}, sort_keys=True)


def _round_down(value: float) -> float:
    """``value`` rounded down to 3 significant digits (a threshold stays below)."""
    if value <= 0:
        return 0.0
    digits = 2 - int(np.floor(np.log10(value)))
    factor = 10.0 ** digits
    return float(np.floor(value * factor) / factor)
