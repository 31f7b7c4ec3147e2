"""The pytest plugin (entry point ``pytest11: mechcheck``).

pytest imports this module on every run, so it imports nothing heavy: torch and
transformers load only when a claim file is collected or the ``mechcheck`` fixture
is used.  Plugin state lives on a :class:`MechcheckPlugin` object kept in
``config.stash[PLUGIN_KEY]``, a Python test's checker in ``item.stash[CHECKER_KEY]``
(:mod:`mechcheck.collect`), and each claim item owns its result (read from its file
node, which measures the file in its setup); results travel from xdist workers in the call report's
``user_properties``, and each claim's main numbers are plain named test properties
(as ``record_property`` makes them), which ``--junitxml`` writes.

Options are checked in ``pytest_configure``, before anything is collected: a mistake is
one usage error, not one failure per claim.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Generator, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from mechcheck.collect import CHECKER_KEY, PLUGIN_KEY, ClaimFileNode, ClaimItem

if TYPE_CHECKING:
    from mechcheck.report.results import ClaimResult
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
TABLE_OPTION = "--mechcheck-table"
PROMPTS_OPTION = "--mechcheck-report-prompts"
INCOMPLETE_OPTION = "--mechcheck-allow-incomplete"
FILES_INI = "mechcheck_files"
PLUGINS_INI = "mechcheck_plugins"
RESULT_PROPERTY = "mechcheck_result"
RANK_PROPERTY = "mechcheck_checkpoint_rank"
MISSING_PROPERTY = "mechcheck_no_result"
# The values each claim's testcase gets as JUnit XML properties, in this order.
JUNIT_FIELDS = ("verdict", "effect", "ci_low", "ci_high", "threshold", "p_value",
                "p_adjusted", "n")


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
    group.addoption(TABLE_OPTION, choices=("all", "failed", "none"), default="all",
                    help="the mechcheck claims table in the terminal summary: every claim "
                    "(all, the default), only those that make the run fail, or none")
    group.addoption(PROMPTS_OPTION, metavar="PATH", default=None,
                    help="write each claim's per-prompt values to PATH (.csv, or .parquet "
                    "with pyarrow)")
    group.addoption(INCOMPLETE_OPTION, action="store_true",
                    help="accept a --mechcheck-baseline report of a run that stopped early "
                    '("complete": false)')
    parser.addini(FILES_INI, default="test_*.yaml",
                  help="glob(s) of claim files to collect, space separated (default test_*.yaml)")
    parser.addini(PLUGINS_INI, type="linelist", default=[],
                  help="modules to register as mechcheck plugins (besides entry points)")


class MechcheckPlugin:
    """Session state: the mechcheck session, the baseline and gathered results."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._session: Session | None = None
        self.results: list[ClaimResult] = []
        # (file, checkpoint) -> position of the checkpoint in the file's declared order
        self._ranks: dict[tuple[str, str | None], int] = {}
        self._baseline: dict[Any, ClaimResult] | None = None
        self.report_error: str | None = None
        self.report_note: str | None = None
        self.finished = 0  # tests whose teardown was reported
        self.no_result: list[str] = []  # claim items that ended without a result
        self._wrote_progress = False
        # conftest.py and -p plugins that implement mechcheck_* hooks, by registration
        self.hook_plugins: list[object] = []

    def pytest_plugin_registered(self, plugin: object, plugin_name: str | None = None) -> None:
        """Take up the ``mechcheck_*`` hooks of a pytest plugin (a ``conftest.py``, a
        ``-p`` module); pytest replays this hook for the plugins registered before."""
        if plugin is self or not _implements_mechcheck_hooks(plugin):
            return
        if any(p is plugin for p in self.hook_plugins):
            return
        _check_hook_names(plugin, plugin_name)
        self.hook_plugins.append(plugin)
        if self._session is not None:  # a conftest.py found during collection
            self._session.registry = self._registry()

    def pytest_collection(self, session: pytest.Session) -> None:
        """With ``mechcheck_*`` hooks in a conftest.py or -p plugin, build the registry
        before collecting, so that a clash between plugins is one usage error (without
        such plugins it waits for the first claim file, keeping plain runs light)."""
        if not self.hook_plugins:
            return
        try:
            self.session  # noqa: B018 - build (and check) the registry now
        except pytest.UsageError:
            raise
        except Exception:  # noqa: BLE001 - e.g. an ini plugin that does not import:
            self._session = None  # collection reports it, as without conftest plugins

    def _registry(self) -> Any:
        import importlib

        import pluggy

        from mechcheck.errors import MechcheckError
        from mechcheck.plugins import Registry, get_plugin_manager

        plugins = [importlib.import_module(m) for m in self.config.getini(PLUGINS_INI)]
        for module in plugins:
            _check_hook_names(module, module.__name__)
        try:
            return Registry.from_plugins(get_plugin_manager([*plugins, *self.hook_plugins]))
        except pluggy.PluginValidationError as exc:
            raise pytest.UsageError(f"mechcheck plugin {exc.plugin!r}: {exc}") from None
        except MechcheckError as exc:  # two plugins register one name
            raise _usage_error(exc) from None

    @property
    def baseline(self) -> dict[Any, ClaimResult]:
        """The baseline's results by (file, id, checkpoint); empty without one."""
        if self._baseline is None:
            from mechcheck.report.baseline import index
            from mechcheck.report.io import read_report

            path = self.config.getoption(BASELINE_OPTION)
            allow = bool(self.config.getoption(INCOMPLETE_OPTION))
            self._baseline = index(read_report(path, allow_incomplete=allow,
                                               allow_option=INCOMPLETE_OPTION)) if path else {}
        return self._baseline

    @property
    def session(self) -> Session:
        if self._session is None:
            from mechcheck.session import Session

            opt = self.config.getoption
            self._session = Session(
                registry=self._registry(),
                device=opt(DEVICE_OPTION), dtype=opt(DTYPE_OPTION),
                batch_size=opt(BATCH_OPTION), n_resamples=opt(RESAMPLES_OPTION),
                allow_pickle=opt(PICKLE_OPTION), trust_remote_code=opt(REMOTE_CODE_OPTION),
                progress=self._progress_writer(),
            )
        return self._session

    def _progress_writer(self) -> Any:
        """Writes the session's progress lines on the terminal (none under ``-q`` and
        on xdist workers, whose output pytest does not show)."""
        terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        if terminal is None or self.config.get_verbosity() < 0 or \
                hasattr(self.config, "workerinput"):
            return None

        capture = self.config.pluginmanager.get_plugin("capturemanager")

        def write(line: str) -> None:
            # the lines come while a test runs: out of capture, as pytest's live logs
            with capture.global_and_fixture_disabled() if capture else nullcontext():
                terminal.write_line(f"mechcheck: {line}", cyan=True)
            self._wrote_progress = True

        return write

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Iterator[None]:
        return (yield from self._restoring_prefix(item))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[None]:
        return (yield from self._restoring_prefix(item))

    def _restoring_prefix(self, item: pytest.Item) -> Iterator[None]:
        """After progress lines, start the file's line of dots again (``-v`` and xdist
        write a line per test anyway)."""
        self._wrote_progress = False
        try:
            return (yield)
        finally:
            terminal = self.config.pluginmanager.get_plugin("terminalreporter")
            if self._wrote_progress and terminal is not None and \
                    self.config.get_verbosity() == 0:
                fspath = self.config.rootpath / item.nodeid.split("::")[0]
                terminal.ensure_newline()
                terminal.currentfspath = fspath
                terminal.write(os.path.relpath(fspath, self.config.invocation_params.dir)
                               + " ")
            self._wrote_progress = False

    def checkpoints(self, parsed: Any) -> tuple[str | None, ...]:
        """The checkpoints a file runs on: the option's, else the file's, else none."""
        from mechcheck.options import parse_checkpoints

        option = parse_checkpoints(self.config.getoption(CHECKPOINTS_OPTION),
                                   option=CHECKPOINTS_OPTION)
        return option or tuple(parsed.checkpoints) or (None,)

    def with_baseline(self, result: ClaimResult) -> ClaimResult:
        """``result`` compared with the baseline's (itself without a baseline)."""
        if not self.baseline:
            return result
        from mechcheck.report.baseline import apply_baseline

        return apply_baseline(result, self.baseline, self.config.getoption(DRIFT_OPTION))

    def record(self, result: ClaimResult) -> None:
        self.results.append(result)

    # -- hooks, registered with this object in pytest_configure --------------------
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        from mechcheck.report.results import ClaimResult

        if report.when == "teardown":
            self.finished += 1
            self.no_result += [str(v) for k, v in report.user_properties
                               if k == MISSING_PROPERTY]
        if report.when != "call":
            return
        rank = dict(report.user_properties).get(RANK_PROPERTY)
        results = [ClaimResult.from_record(cast(dict[str, Any], value))
                   for name, value in report.user_properties if name == RESULT_PROPERTY]
        for result in results:
            self.record(result)
            if rank is not None:
                self._ranks[(result.file, result.checkpoint)] = cast(int, rank)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if hasattr(self.config, "workerinput") or self.config.option.collectonly:
            return
        path = self.config.getoption(REPORT_OPTION)
        prompts = self.config.getoption(PROMPTS_OPTION)
        if not path and not prompts:
            return
        from mechcheck.errors import MechcheckError

        stopped = self.incomplete(session, exitstatus)
        try:
            if path:
                self._write_report(Path(path), stopped)
            if prompts:
                from mechcheck.report.prompt_values import write_prompt_values

                written = write_prompt_values(self.ordered(), prompts, key=PROMPTS_OPTION,
                                              complete=stopped is None)
                self.report_note = (self.report_note or "") + \
                    f"\nper-prompt values written to {written}"
        except (MechcheckError, OSError) as exc:
            self.report_error = str(exc)
            session.exitstatus = pytest.ExitCode.USAGE_ERROR

    def _write_report(self, path: Path, stopped: str | None) -> None:
        from mechcheck.report.io import write_report

        if stopped is not None and not self.results and path.exists():
            self.report_note = (f"report {os.fspath(path)} kept as it was: the run stopped "
                                f"before any claim was measured ({stopped})")
            return
        meta = {"regressions": [c.describe() for c in self.changes()
                                if c.kind in ("regression", "drift")]}
        written = write_report(self.ordered(), path, meta=meta if self.baseline else None,
                               complete=stopped is None, incomplete_reason=stopped)
        self.report_note = f"report written to {os.fspath(written)}"
        if stopped is not None:
            self.report_note += (f" (incomplete: {stopped}; {len(self.results)} result(s)"
                                 + (', "complete": false)' if written == path else ")"))

    def incomplete(self, session: pytest.Session, exitstatus: int) -> str | None:
        """Why the run did not measure everything it collected, or None if it did."""
        reasons = []
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            reasons.append("interrupted")
        stop = session.shouldfail or session.shouldstop
        if isinstance(stop, str):
            reasons.append(stop)
        if self.finished < session.testscollected:
            reasons.append(f"{session.testscollected - self.finished} of "
                           f"{session.testscollected} test(s) did not finish")
        if self.no_result:
            reasons.append(f"{len(self.no_result)} claim(s) ended without a result: "
                           + ", ".join(self.no_result[:3])
                           + (" ..." if len(self.no_result) > 3 else ""))
        return "; ".join(reasons) or None

    def changes(self) -> list[Any]:
        """Differences from the baseline among the claims that ran."""
        from mechcheck.report.baseline import compare

        ran = {(r.file, r.id, r.checkpoint) for r in self.results}
        old = [r for k, r in self.baseline.items() if k in ran]
        return compare(old, self.ordered(), max_drift=self.config.getoption(DRIFT_OPTION))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from mechcheck.report.io import summary_table

        lines = summary_table(self.ordered(), show=self.config.getoption(TABLE_OPTION),
                              timing=self.config.get_verbosity() > 0)
        if lines:
            terminalreporter.section("mechcheck claims")
            for line in lines:
                terminalreporter.write_line(line)
        self._each_summary(terminalreporter)
        if self.results and self.baseline:
            from mechcheck.report.baseline import format_changes

            changes = self.changes()
            bad = [c for c in changes if c.kind in ("regression", "drift")]
            terminalreporter.write_line(
                f"baseline {self.config.getoption(BASELINE_OPTION)}: {len(bad)} "
                f"regression(s), {len(changes) - len(bad)} other change(s)")
            for line in format_changes(changes):
                terminalreporter.write_line(f"  {line}")
        if self.report_error:
            terminalreporter.write_line(f"mechcheck report NOT written: {self.report_error}",
                                        red=True)
        for line in (self.report_note or "").strip().splitlines():
            terminalreporter.write_line(line)

    def _each_summary(self, terminalreporter: Any) -> None:
        """A text heatmap of each ``each: true`` claim's results (layers x heads)."""
        if not any(r.each_of for r in self.results):
            return
        from mechcheck.report.figures import each_groups, text_heatmap

        terminalreporter.section("mechcheck per-component claims")
        for (file, parent, checkpoint), group in each_groups(self.ordered()).items():
            where = f" [{checkpoint}]" if checkpoint else ""
            terminalreporter.write_line(f"{Path(file).name}::{parent}{where}")
            for line in text_heatmap(group, width=118).splitlines():
                terminalreporter.write_line(f"  {line}")

    def ordered(self) -> list[ClaimResult]:
        """Results in file and line order, then checkpoints in their declared order
        (not alphabetical: step5 before step10), whatever order workers finished in."""
        return sorted(self.results, key=lambda r: (
            r.file, r.line or 0, self._ranks.get((r.file, r.checkpoint), -1),
            r.checkpoint or "", r.id))


def _junit_properties(results: list[ClaimResult]) -> list[tuple[str, object]]:
    """Each result's main numbers as named test properties, which ``--junitxml``
    writes as ``<property>`` elements; a test with several claims gets ``claim``
    before each one's."""
    properties: list[tuple[str, object]] = []
    for result in results:
        if len(results) > 1:
            properties.append(("claim", result.id))
        properties += [(name, getattr(result, name)) for name in JUNIT_FIELDS
                       if getattr(result, name) is not None]
    return properties


def _usage_error(exc: Any) -> pytest.UsageError:
    return pytest.UsageError(f"{exc.message}; {exc.hint}" if exc.hint else exc.message)


def _check_options(config: pytest.Config) -> None:
    """Every mechcheck option, checked before collection: one usage error each."""
    from mechcheck import options
    from mechcheck.errors import MechcheckError
    from mechcheck.report.io import check_report_path

    opt = config.getoption
    options.check_batch_size(opt(BATCH_OPTION), option=BATCH_OPTION)
    options.check_n_resamples(opt(RESAMPLES_OPTION), option=RESAMPLES_OPTION)
    options.check_dtype(opt(DTYPE_OPTION), option=DTYPE_OPTION)
    options.check_device(opt(DEVICE_OPTION), option=DEVICE_OPTION)
    options.parse_checkpoints(opt(CHECKPOINTS_OPTION), option=CHECKPOINTS_OPTION)
    options.check_max_drift(opt(DRIFT_OPTION), option=DRIFT_OPTION,
                            baseline=opt(BASELINE_OPTION), baseline_option=BASELINE_OPTION)
    report = opt(REPORT_OPTION)
    if report:
        try:
            check_report_path(report)
        except MechcheckError as exc:
            raise MechcheckError(f"{REPORT_OPTION} {report}: {exc.message}",
                                 key=REPORT_OPTION, hint=exc.hint) from None
    if opt(PROMPTS_OPTION):
        from mechcheck.report.prompt_values import check_prompts_path

        check_prompts_path(opt(PROMPTS_OPTION), key=PROMPTS_OPTION)


def _implements_mechcheck_hooks(plugin: object) -> bool:
    name = getattr(plugin, "__name__", "")
    if isinstance(name, str) and (name == "mechcheck" or name.startswith("mechcheck.")):
        return False  # mechcheck's own modules (the built-ins register themselves)
    try:
        return any(attr.startswith("mechcheck_") and callable(getattr(plugin, attr, None))
                   for attr in dir(plugin))
    except Exception:  # noqa: BLE001 - an odd plugin object: not ours to judge
        return False


def _check_hook_names(plugin: object, plugin_name: str | None) -> None:
    """A ``mechcheck_*`` function that is no mechcheck hook is a usage error."""
    from mechcheck.plugins import HOOK_NAMES, misspelled_hooks

    wrong = [(n, near) for n, near in misspelled_hooks(plugin)
             if callable(getattr(plugin, n, None))]
    if not wrong:
        return
    label = getattr(plugin, "__file__", None) or plugin_name or repr(plugin)
    name, near = wrong[0]
    guess = f"did you mean '{near}'? " if near else ""
    raise pytest.UsageError(f"mechcheck plugin {label}: unknown hook '{name}'; {guess}"
                            f"mechcheck hooks: {', '.join(HOOK_NAMES)}")


def pytest_configure(config: pytest.Config) -> None:
    from mechcheck.errors import MechcheckError
    from mechcheck.workers import share_cores

    plugin = MechcheckPlugin(config)
    try:
        _check_options(config)
        share_cores(config)
        if config.getoption(BASELINE_OPTION):
            plugin.baseline  # noqa: B018 - read (and check) the baseline now
    except MechcheckError as exc:
        raise _usage_error(exc) from None
    config.stash[PLUGIN_KEY] = plugin
    config.pluginmanager.register(plugin, "mechcheck-session")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under ``--dist load``, keep each claim file on one worker (it is measured whole)."""
    from mechcheck.workers import scheduler

    return scheduler(config, log)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix not in (".yaml", ".yml"):
        return None
    patterns = str(parent.config.getini(FILES_INI)).split()
    if any(fnmatch.fnmatch(file_path.name, p) for p in patterns):
        return ClaimFileNode.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
        item: pytest.Item, call: pytest.CallInfo[None],
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if call.when == "teardown" and isinstance(item, ClaimItem) and item.result is None:
        report.user_properties.append((MISSING_PROPERTY, item.nodeid))
    if call.when == "call":
        _add_results(item, report)
    return report


def _add_results(item: pytest.Item, report: pytest.TestReport) -> None:
    """The item's results on its call report (and their main numbers on the item)."""
    prompts = bool(item.config.getoption(PROMPTS_OPTION))
    results = [_with_xfail(item, item.result if isinstance(item, ClaimItem) else None)]
    checker = item.stash.get(CHECKER_KEY, None)
    results += list(checker.results) if checker is not None else []
    measured = [r for r in results if r is not None]
    for result in measured:
        # the whole record, for the main process: on this (call) report only
        report.user_properties.append((RESULT_PROPERTY, result.record(per_prompt=prompts)))
    # plain values on the item: the teardown report, which --junitxml reads, has them
    item.user_properties += _junit_properties(measured)
    rank = _checkpoint_rank(item)
    if rank is not None:
        report.user_properties.append((RANK_PROPERTY, rank))


def _with_xfail(item: pytest.Item, result: ClaimResult | None) -> ClaimResult | None:
    """The result with the reason of the item's xfail mark (``xfail_before`` too)."""
    marker = item.get_closest_marker("xfail")
    if result is None or result.xfail or marker is None or not isinstance(item, ClaimItem):
        return result
    from dataclasses import replace

    return replace(result, xfail=str(marker.kwargs.get("reason") or "xfail"))


def _checkpoint_rank(item: pytest.Item) -> int | None:
    """The position of a claim item's checkpoint among its file's checkpoints."""
    if not isinstance(item, ClaimItem) or item.checkpoint is None:
        return None
    order = item.parent.checkpoints
    return order.index(item.checkpoint) if item.checkpoint in order else None


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
    request.node.stash[CHECKER_KEY] = checker
    return checker
