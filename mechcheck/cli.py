"""The ``mechcheck`` command: zoo models and claim checks outside pytest.

::

    mechcheck zoo list                 # the bundled models and their checkpoints
    mechcheck zoo build NAME [--out D] # retrain a zoo model from its recipe
    mechcheck check PATH [--report R]  # evaluate claim files, print the table
    mechcheck compare OLD.json NEW.json [--max-drift X]  # regressions, exit 1 if any
    mechcheck report RESULTS.json -o report.html [--baseline OLD.json]  # or .md
    mechcheck lens train CLAIMS.yaml --claim ID --out T.safetensors  # a tuned lens
    mechcheck scan MODEL --data FILE --metric M [--method attribution] [--out D.yaml]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mechcheck.errors import MechcheckError

__all__ = ["main"]

# pytest's exit codes, which `mechcheck check` shares.
OK, FAILED, INTERRUPTED, USAGE, NO_CLAIMS = 0, 1, 2, 2, 5


def _parser() -> argparse.ArgumentParser:
    from mechcheck import __version__

    parser = argparse.ArgumentParser(prog="mechcheck", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"mechcheck {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    zoo = commands.add_parser("zoo", help="the bundled tiny models").add_subparsers(
        dest="zoo_command", required=True)
    zoo.add_parser("list", help="list zoo models and their checkpoints")
    build = zoo.add_parser("build", help="train a zoo model from its recipe")
    build.add_argument("name")
    build.add_argument("--out", default=None, help="folder (default: the shipped weights)")
    build.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _check_parser(commands.add_parser("check", help="evaluate claim files outside pytest"))
    compare = commands.add_parser("compare", help="compare two reports; exit 1 on a "
                                  "regression")
    compare.add_argument("old")
    compare.add_argument("new")
    compare.add_argument("--max-drift", type=float, default=None,
                         help="also count an effect that moved by more than this")
    compare.add_argument("--allow-incomplete", action="store_true",
                         help='accept reports of runs that stopped early ("complete": false)')
    report = commands.add_parser("report", help="render a JSON report as .html or .md: "
                                 "verdict heatmap, effects over checkpoints, onsets")
    report.add_argument("results", help="a JSON report (--mechcheck-report results.json)")
    report.add_argument("-o", "--output", required=True,
                        help="the report file: *.html (self-contained) or *.md")
    report.add_argument("--baseline", default=None,
                        help="an earlier JSON report: list regressions and drift")
    report.add_argument("--max-drift", type=float, default=None,
                        help="with --baseline, also list an effect that moved by more "
                        "than this")
    report.add_argument("--title", default="mechcheck report")
    report.add_argument("--allow-incomplete", action="store_true",
                        help='render reports of runs that stopped early ("complete": false)')
    from mechcheck.tuned_lens import add_lens_parser

    add_lens_parser(commands)
    from mechcheck.sae_train import add_sae_parser

    add_sae_parser(commands)
    from mechcheck.scan import add_scan_parser

    add_scan_parser(commands)
    return parser


def _check_parser(check: argparse.ArgumentParser) -> None:
    check.add_argument("path", help="a claim file or a folder of test_*.yaml files")
    check.add_argument("--report", default=None, help="write results to a .json or .csv file")
    check.add_argument("--report-prompts", default=None, metavar="PATH",
                       help="write each claim's per-prompt values to a .csv (or .parquet) "
                       "file")
    check.add_argument("-k", dest="keyword", default=None, metavar="EXPR",
                       help="only claims whose names match EXPR, as pytest -k: words, "
                       "and, or, not, parentheses")
    check.add_argument("--checkpoints", default=None, metavar="A,B,C",
                       help="run every claim once per checkpoint; overrides the files' "
                       "checkpoints:")
    check.add_argument("--device", default=None,
                       help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    check.add_argument("--dtype", default="float32",
                       help="model dtype: float32 (default), bfloat16, float16, float64")
    check.add_argument("--batch-size", type=int, default=128,
                       help="most prompts per forward pass (default 128)")
    check.add_argument("--n-resamples", type=int, default=9999,
                       help="resamples for bootstrap and permutation rules (default 9999)")
    check.add_argument("--table", choices=("all", "failed", "none"), default="all",
                       help="print every claim (default), only those that fail the run, "
                       "or no table")
    check.add_argument("-q", "--quiet", action="store_true",
                       help="no progress lines on stderr")


def _compare(args: argparse.Namespace) -> int:
    from mechcheck.options import check_max_drift
    from mechcheck.report.baseline import compare, format_changes
    from mechcheck.report.io import read_report

    check_max_drift(args.max_drift, option="--max-drift", baseline=args.old,
                    baseline_option="OLD")
    allow = args.allow_incomplete
    changes = compare(read_report(args.old, allow_incomplete=allow),
                      read_report(args.new, allow_incomplete=allow), max_drift=args.max_drift)
    bad = [c for c in changes if c.kind in ("regression", "drift")]
    print(f"{len(bad)} regression(s), {len(changes) - len(bad)} other change(s)")
    for line in format_changes(changes):
        print(f"  {line}")
    return 1 if bad else 0


def _report(args: argparse.Namespace) -> int:
    from mechcheck.options import check_max_drift
    from mechcheck.report.html import check_output, render
    from mechcheck.report.io import load_report, read_report, require_complete

    check_max_drift(args.max_drift, option="--max-drift", baseline=args.baseline,
                    baseline_option="--baseline")
    check_output(args.output)
    allow = args.allow_incomplete
    baseline = read_report(args.baseline, allow_incomplete=allow) if args.baseline else None
    loaded = load_report(args.results)
    results = require_complete(loaded, allow_incomplete=allow)
    path = render(results, args.output, baseline=baseline, title=args.title,
                  max_drift=args.max_drift, incomplete=loaded.incomplete_reason)
    print(f"report written to {path}")
    return 0


def _zoo(args: argparse.Namespace) -> int:
    from mechcheck import zoo

    if args.zoo_command == "list":
        for name in zoo.names():
            if name in zoo.PACKAGED:
                print(f"zoo:{name}  pretrained, from {zoo.PACKAGED[name]}")
                continue
            print(f"zoo:{name}  checkpoints: {' '.join(zoo.checkpoints(name)) or '-'}")
        return 0
    from mechcheck.progress import ProgressBar
    from mechcheck.zoo import _recipes  # the module the recipes themselves use

    bar: ProgressBar | None = None

    def step(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = ProgressBar(total, unit="training steps", enabled=not args.quiet,
                              counter_lines=True)
        bar.update(done, f"zoo:{args.name}")

    with _recipes.reporting(step):
        path = zoo.build(args.name, args.out)
    if bar is not None:
        bar.close()
    print(f"built zoo:{args.name} into {path}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from mechcheck import options
    from mechcheck.api import evaluate_planned, plan_path
    from mechcheck.keywords import Keyword
    from mechcheck.progress import ProgressBar
    from mechcheck.session import Session

    options.check_batch_size(args.batch_size, option="--batch-size")
    options.check_n_resamples(args.n_resamples, option="--n-resamples")
    options.check_dtype(args.dtype, option="--dtype")
    options.check_device(args.device, option="--device")
    checkpoints = options.parse_checkpoints(args.checkpoints, option="--checkpoints")
    keyword = Keyword.parse(args.keyword or "")
    if not Path(args.path).exists():
        raise MechcheckError(f"no claim file or folder at {args.path}",
                             hint="give a claim file or a folder of test_*.yaml files")
    _check_outputs(args)
    start = time.perf_counter()
    bar = ProgressBar(0, unit="file(s)", enabled=not args.quiet)
    from mechcheck.plugins import Registry, get_plugin_manager

    session = Session(registry=Registry.from_plugins(get_plugin_manager()),
                      device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                      n_resamples=args.n_resamples, progress=bar.line)
    work = []
    for planned in plan_path(args.path, session, checkpoints=checkpoints):
        chosen = [keyword.matches((name, *planned.keywords, *(["xfail"] if why else [])))
                  for name, why in zip(planned.names, planned.xfail)]
        if any(chosen):
            work.append((planned, chosen))
    bar.total = len(work)
    results: list[Any] = []
    try:
        for i, (planned, chosen) in enumerate(work):
            bar.update(i, planned.parsed.path)
            done = evaluate_planned(planned, session)
            results += [r for r, keep in zip(done, chosen + [True] * len(done)) if keep]
            bar.update(i + 1)
    except KeyboardInterrupt:
        bar.close()
        print("\nmechcheck: interrupted", file=sys.stderr)
        _finish(args, results, time.perf_counter() - start, stopped="interrupted")
        return INTERRUPTED
    bar.close()
    return _finish(args, results, time.perf_counter() - start)


def _check_outputs(args: argparse.Namespace) -> None:
    """The report paths, checked before any claim runs."""
    from mechcheck.report.io import check_report_path, check_writable

    if args.report:
        check_report_path(args.report)
        check_writable(args.report, key="--report")
    if args.report_prompts:
        from mechcheck.report.prompt_values import check_prompts_path

        check_prompts_path(args.report_prompts, key="--report-prompts")
        check_writable(args.report_prompts, key="--report-prompts")


def _finish(args: argparse.Namespace, results: list[Any], seconds: float, *,
            stopped: str | None = None) -> int:
    """Print the table, failures and a pytest-like summary line; write the reports
    (with ``stopped``, as an incomplete run's, and never over a report with nothing)."""
    from collections import Counter

    from mechcheck.outcomes import FAILING, outcome
    from mechcheck.report.io import summary_table, write_report

    for line in summary_table(results, show=args.table):
        print(line)
    outcomes = [outcome(r.verdict, r.xfail) for r in results]
    for result, what in zip(results, outcomes):
        if what == "xpassed":
            print(f"\n{result.file}:{result.line} claim '{result.id}' passed, but is "
                  f"expected to fail (XPASS(strict)): {result.xfail}")
        elif what in FAILING:
            print("\n" + result.message)
    # counted as pytest counts them: an XPASS(strict) is a failure
    counts: Counter[str] = Counter("failed" if o == "xpassed" else o for o in outcomes)
    parts = [f"{counts[k]} {k}" for k in ("failed", "passed", "skipped", "xfailed")
             if counts[k]]
    print(f"\n{', '.join(parts) or 'no claims ran'} in {seconds:.2f}s"
          + (f" ({stopped})" if stopped else ""))
    if stopped and not results:
        return NO_CLAIMS
    if args.report:
        written = write_report(results, args.report, complete=stopped is None,
                               incomplete_reason=stopped)
        print(f"report written to {written}" + (" (incomplete)" if stopped else ""))
    if args.report_prompts:
        from mechcheck.report.prompt_values import write_prompt_values

        written = write_prompt_values(results, args.report_prompts, key="--report-prompts",
                                      complete=stopped is None)
        print(f"per-prompt values written to {written}")
    if not results:
        return NO_CLAIMS
    return FAILED if any(o in FAILING for o in outcomes) else OK


def _sae(args: argparse.Namespace) -> int:
    from mechcheck.sae_train import sae_command

    return sae_command(args)


def _scan(args: argparse.Namespace) -> int:
    from mechcheck.scan import scan_command

    return scan_command(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        from mechcheck.tuned_lens import lens_command

        handlers = {"zoo": _zoo, "check": _check, "compare": _compare, "report": _report,
                    "lens": lens_command, "sae": _sae, "scan": _scan}
        return handlers[args.command](args)
    except MechcheckError as exc:
        print(f"mechcheck: {exc}", file=sys.stderr)
        return USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
