"""The pytest plugin (entry point ``pytest11: mechcheck``).

pytest imports this module on every run, so it imports nothing heavy: torch and
transformers load only when a claim file is collected or the ``mechcheck`` fixture
is used.  Plugin state lives on a :class:`MechcheckPlugin` object kept in
``config.stash``; results travel from xdist workers in ``report.user_properties``.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from mechcheck.collect import PLUGIN_KEY, ClaimFileNode, ClaimItem

if TYPE_CHECKING:
    from mechcheck.results import ClaimResult
    from mechcheck.session import Session

__all__ = ["MechcheckPlugin"]

REPORT_OPTION = "--mechcheck-report"
DEVICE_OPTION = "--mechcheck-device"
DTYPE_OPTION = "--mechcheck-dtype"
BATCH_OPTION = "--mechcheck-batch-size"
RESAMPLES_OPTION = "--mechcheck-n-resamples"
PICKLE_OPTION = "--mechcheck-allow-pickle"
CHECKPOINTS_OPTION = "--mechcheck-checkpoints"
BASELINE_OPTION = "--mechcheck-baseline"
DRIFT_OPTION = "--mechcheck-max-drift"
REMOTE_CODE_OPTION = "--mechcheck-trust-remote-code"
FILES_INI = "mechcheck_files"
PLUGINS_INI = "mechcheck_plugins"
RESULT_PROPERTY = "mechcheck_result"
RANK_PROPERTY = "mechcheck_checkpoint_rank"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mechcheck", "mechanistic claims")
    group.addoption(REPORT_OPTION, metavar="PATH", default=None,
                    help="write every claim result to PATH (.json or .csv)")
    group.addoption(DEVICE_OPTION, default=None,
                    help="device for models: cpu, cuda, cuda:1 ... (default: cuda if available)")
    group.addoption(DTYPE_OPTION, default="float32", help="model dtype (default float32)")
    group.addoption(BATCH_OPTION, type=int, default=128,
                    help="most prompts per forward pass (default 128)")
    group.addoption(RESAMPLES_OPTION, type=int, default=9999,
                    help="resamples for bootstrap and permutation rules (default 9999)")
    group.addoption(CHECKPOINTS_OPTION, metavar="A,B,C", default=None,
                    help="run every claim once per checkpoint (hf revisions, subfolders of a "
                    "local model, zoo checkpoints); overrides the files' checkpoints:")
    group.addoption(BASELINE_OPTION, metavar="OLD.json", default=None,
                    help="compare with a saved report: a claim that passed there and fails "
                    "now is a regression")
    group.addoption(DRIFT_OPTION, metavar="X", type=float, default=None,
                    help="with --mechcheck-baseline, also fail a claim whose effect moved by "
                    "more than X")
    group.addoption(PICKLE_OPTION, action="store_true",
                    help="allow loading pickle (.bin) checkpoints, which can run code")
    group.addoption(REMOTE_CODE_OPTION, action="store_true",
                    help="pass trust_remote_code=True to transformers")
    parser.addini(FILES_INI, default="test_*.yaml",
                  help="glob(s) of claim files to collect, space separated (default test_*.yaml)")
    parser.addini(PLUGINS_INI, type="linelist", default=[],
                  help="modules to register as mechcheck plugins (besides entry points)")


class MechcheckPlugin:
    """Session state: the mechcheck session, parsed files and gathered results."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._session: Session | None = None
        self.parsed: dict[str, Any] = {}
        self._file_results: dict[tuple[str, str | None], dict[str, ClaimResult]] = {}
        self.results: list[ClaimResult] = []
        # (file, checkpoint) -> position of the checkpoint in the file's declared order
        self._ranks: dict[tuple[str, str | None], int] = {}
        self._baseline: dict[Any, ClaimResult] | None = None
        self.report_error: str | None = None

    @property
    def baseline(self) -> dict[Any, ClaimResult]:
        """The baseline's results by (file, id, checkpoint); empty without one."""
        if self._baseline is None:
            from mechcheck.baseline import index
            from mechcheck.report import read_report

            path = self.config.getoption(BASELINE_OPTION)
            self._baseline = index(read_report(path)) if path else {}
        return self._baseline

    @property
    def session(self) -> Session:
        if self._session is None:
            import importlib

            from mechcheck.session import Session

            opt = self.config.getoption
            plugins = [importlib.import_module(m) for m in self.config.getini(PLUGINS_INI)]
            self._session = Session(
                plugins=plugins,
                device=opt(DEVICE_OPTION), dtype=opt(DTYPE_OPTION),
                batch_size=opt(BATCH_OPTION), n_resamples=opt(RESAMPLES_OPTION),
                allow_pickle=opt(PICKLE_OPTION), trust_remote_code=opt(REMOTE_CODE_OPTION),
            )
        return self._session

    def checkpoints(self, parsed: Any) -> tuple[str | None, ...]:
        """The checkpoints a file runs on: the option's, else the file's, else none."""
        option = self.config.getoption(CHECKPOINTS_OPTION)
        if option:
            return tuple(c.strip() for c in option.split(",") if c.strip())
        return tuple(parsed.checkpoints) or (None,)

    def result_for(self, item: ClaimItem) -> ClaimResult:
        """The item's result; the first item of a file (and checkpoint) evaluates them all."""
        from mechcheck.evaluate import evaluate_file
        from mechcheck.spec.loader import claim_name

        key = (str(item.path), item.checkpoint)
        if key not in self._file_results:
            parsed = self.parsed[key[0]]
            results = evaluate_file(parsed, self.session, checkpoint=item.checkpoint)
            names = ["<file>"] if parsed.error is not None else [
                claim_name(c, i) for i, c in enumerate(parsed.claims)]
            suffix = "" if item.checkpoint is None else f"[{item.checkpoint}]"
            table: dict[str, ClaimResult] = {}
            for name, result in zip(names, results):
                table.setdefault(name + suffix, result)
                table.setdefault(f"{name}@line{result.line}{suffix}", result)
            self._file_results[key] = table
        result = self._file_results[key][item.name]
        if self.baseline:
            from mechcheck.baseline import apply_baseline

            result = apply_baseline(result, self.baseline,
                                    self.config.getoption(DRIFT_OPTION))
        return result

    def record(self, result: ClaimResult) -> None:
        self.results.append(result)

    # -- hooks, registered with this object in pytest_configure --------------------
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        from mechcheck.results import ClaimResult

        if report.when != "call":
            return
        rank = dict(report.user_properties).get(RANK_PROPERTY)
        for name, value in report.user_properties:
            if name == RESULT_PROPERTY:
                result = ClaimResult.from_record(cast(dict[str, Any], value))
                self.record(result)
                if rank is not None:
                    self._ranks[(result.file, result.checkpoint)] = cast(int, rank)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        path = self.config.getoption(REPORT_OPTION)
        if path and not hasattr(self.config, "workerinput"):
            from mechcheck.errors import MechcheckError
            from mechcheck.report import write_report

            meta = {"regressions": [c.describe() for c in self.changes()
                                    if c.kind in ("regression", "drift")]}
            try:
                write_report(self.ordered(), Path(path), meta=meta if self.baseline else None)
            except (MechcheckError, OSError) as exc:
                self.report_error = str(exc)
                session.exitstatus = pytest.ExitCode.USAGE_ERROR

    def changes(self) -> list[Any]:
        """Differences from the baseline among the claims that ran."""
        from mechcheck.baseline import compare

        ran = {(r.file, r.id, r.checkpoint) for r in self.results}
        old = [r for k, r in self.baseline.items() if k in ran]
        return compare(old, self.ordered(), max_drift=self.config.getoption(DRIFT_OPTION))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.report_error:
            terminalreporter.write_line(f"mechcheck report NOT written: {self.report_error}",
                                        red=True)
        if not self.results:
            return
        from mechcheck.report import summary_table

        terminalreporter.section("mechcheck claims")
        for line in summary_table(self.ordered()):
            terminalreporter.write_line(line)
        if self.baseline:
            from mechcheck.baseline import format_changes

            changes = self.changes()
            bad = [c for c in changes if c.kind in ("regression", "drift")]
            terminalreporter.write_line(
                f"baseline {self.config.getoption(BASELINE_OPTION)}: {len(bad)} "
                f"regression(s), {len(changes) - len(bad)} other change(s)")
            for line in format_changes(changes):
                terminalreporter.write_line(f"  {line}")
        path = self.config.getoption(REPORT_OPTION)
        if path and not self.report_error:
            terminalreporter.write_line(f"report written to {os.fspath(path)}")

    def ordered(self) -> list[ClaimResult]:
        """Results in file and line order, then checkpoints in their declared order
        (not alphabetical: step5 before step10), whatever order workers finished in."""
        return sorted(self.results, key=lambda r: (
            r.file, r.line or 0, self._ranks.get((r.file, r.checkpoint), -1),
            r.checkpoint or "", r.id))


def pytest_configure(config: pytest.Config) -> None:
    report = config.getoption(REPORT_OPTION)
    if report:
        from mechcheck.errors import MechcheckError
        from mechcheck.report import check_report_path

        try:
            check_report_path(report)
        except MechcheckError as exc:
            raise pytest.UsageError(f"{REPORT_OPTION} {report}: {exc.message}; "
                                    f"{exc.hint}") from None
    plugin = MechcheckPlugin(config)
    config.stash[PLUGIN_KEY] = plugin
    config.pluginmanager.register(plugin, "mechcheck-session")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix not in (".yaml", ".yml"):
        return None
    patterns = str(parent.config.getini(FILES_INI)).split()
    if any(fnmatch.fnmatch(file_path.name, p) for p in patterns):
        return ClaimFileNode.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    if call.when != "call":
        return
    results = [getattr(item, "result", None)]
    checker = getattr(item, "mechcheck_checker", None)
    results += list(checker.results) if checker is not None else []
    for result in results:
        if result is not None:
            report.user_properties.append((RESULT_PROPERTY, result.record()))
    rank = _checkpoint_rank(item)
    if rank is not None:
        report.user_properties.append((RANK_PROPERTY, rank))


def _checkpoint_rank(item: pytest.Item) -> int | None:
    """The position of a claim item's checkpoint among its file's checkpoints."""
    checkpoint = getattr(item, "checkpoint", None)
    plugin = item.config.stash.get(PLUGIN_KEY, None)
    if checkpoint is None or plugin is None:
        return None
    parsed = plugin.parsed.get(str(item.path))
    if parsed is None:
        return None
    order = plugin.checkpoints(parsed)
    return order.index(checkpoint) if checkpoint in order else None


@pytest.fixture
def mechcheck(request: pytest.FixtureRequest) -> Any:
    """Check claims written in Python, on the same engine and into the same report.

    Example::

        def test_head(mechcheck):
            mechcheck.check(id="h", kind="necessary", model="zoo:induction-2l",
                            data="induction.jsonl", metric="logprob",
                            components=["head 1.0"], ablation="zero", min_drop=0.5)
    """
    from mechcheck.python_form import Checker

    plugin = request.config.stash[PLUGIN_KEY]
    shown, line, _ = request.node.location
    checker = Checker(plugin.session, path=str(request.path), shown=shown,
                      line=None if line is None else line + 1)
    request.node.mechcheck_checker = checker
    return checker
