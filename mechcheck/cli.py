"""The ``mechcheck`` command: zoo models and claim checks outside pytest.

::

    mechcheck zoo list                 # the bundled models and their checkpoints
    mechcheck zoo build NAME [--out D] # retrain a zoo model from its recipe
    mechcheck check PATH [--report R]  # evaluate claim files, print the table
    mechcheck compare OLD.json NEW.json [--max-drift X]  # regressions, exit 1 if any
    mechcheck report RESULTS.json -o report.html [--baseline OLD.json]  # or .md
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mechcheck.errors import MechcheckError
from mechcheck.results import ClaimResult

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mechcheck", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    zoo = commands.add_parser("zoo", help="the bundled tiny models").add_subparsers(
        dest="zoo_command", required=True)
    zoo.add_parser("list", help="list zoo models and their checkpoints")
    build = zoo.add_parser("build", help="train a zoo model from its recipe")
    build.add_argument("name")
    build.add_argument("--out", default=None, help="folder (default: the shipped weights)")
    check = commands.add_parser("check", help="evaluate claim files outside pytest")
    check.add_argument("path", help="a claim file or a folder of test_*.yaml files")
    check.add_argument("--report", default=None, help="write results to a .json or .csv file")
    check.add_argument("--device", default=None)
    compare = commands.add_parser("compare", help="compare two reports; exit 1 on a "
                                  "regression")
    compare.add_argument("old")
    compare.add_argument("new")
    compare.add_argument("--max-drift", type=float, default=None,
                         help="also count an effect that moved by more than this")
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
    return parser


def _compare(args: argparse.Namespace) -> int:
    from mechcheck.baseline import compare, format_changes
    from mechcheck.report import read_report

    changes = compare(read_report(args.old), read_report(args.new), max_drift=args.max_drift)
    bad = [c for c in changes if c.kind in ("regression", "drift")]
    print(f"{len(bad)} regression(s), {len(changes) - len(bad)} other change(s)")
    for line in format_changes(changes):
        print(f"  {line}")
    return 1 if bad else 0


def _report(args: argparse.Namespace) -> int:
    from mechcheck.html_report import render
    from mechcheck.report import read_report

    baseline = read_report(args.baseline) if args.baseline else None
    path = render(read_report(args.results), args.output, baseline=baseline,
                  title=args.title, max_drift=args.max_drift)
    print(f"report written to {path}")
    return 0


def _zoo(args: argparse.Namespace) -> int:
    from mechcheck import zoo

    if args.zoo_command == "list":
        for name in zoo.names():
            print(f"zoo:{name}  checkpoints: {' '.join(zoo.checkpoints(name)) or '-'}")
        return 0
    path = zoo.build(args.name, args.out)
    print(f"built zoo:{args.name} into {path}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from mechcheck.api import evaluate_path
    from mechcheck.report import summary_table, write_report
    from mechcheck.session import Session

    results = evaluate_path(args.path, Session(device=args.device))
    for line in summary_table(results):
        print(line)
    for result in results:
        if result.verdict != "pass":
            print("\n" + result.message)
    if args.report:
        write_report(results, args.report)
    return 1 if any(_counts_as_failure(r) for r in results) else 0


def _counts_as_failure(result: ClaimResult) -> bool:
    """Fail and error count; skips and expected failures (xfail) do not."""
    if result.xfail and result.verdict == "fail":
        return False
    return result.verdict in ("fail", "error")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        handlers = {"zoo": _zoo, "check": _check, "compare": _compare, "report": _report}
        return handlers[args.command](args)
    except MechcheckError as exc:
        print(f"mechcheck: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
