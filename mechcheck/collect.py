"""pytest nodes for claim files: one :class:`ClaimFileNode` per file, one
:class:`ClaimItem` per claim (and checkpoint).

The file node owns its results: its :meth:`~ClaimFileNode.setup` measures every claim
of the file as one family (so ``-k`` never changes a verdict), and each item reads its
own result from its parent by position.  pytest runs a collector's setup inside the
setup phase of its first item, so ``--durations`` shows the file's shared work as that
item's setup and each claim's own check as its call.

A file that cannot be read as a claim file still collects, as a single item that
fails with the error: a broken file never interrupts the session.  A bad claim in a
readable file is an item that fails with its spec error, without a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pytest

from mechcheck.errors import MechcheckError
from mechcheck.outcomes import xfail_before

if TYPE_CHECKING:
    from mechcheck.pytest_plugin import MechcheckPlugin
    from mechcheck.python_form import Checker
    from mechcheck.report.results import ClaimResult
    from mechcheck.spec.schema import ClaimFile

__all__ = ["CHECKER_KEY", "PLUGIN_KEY", "ClaimFailed", "ClaimFileNode", "ClaimItem",
           "item_names"]

PLUGIN_KEY: pytest.StashKey[MechcheckPlugin] = pytest.StashKey()
"""``config.stash``: the session's :class:`~mechcheck.pytest_plugin.MechcheckPlugin`."""
CHECKER_KEY: pytest.StashKey[Checker] = pytest.StashKey()
"""``item.stash``: the ``mechcheck`` fixture's checker of a Python test, if it used one."""


class ClaimFailed(Exception):
    """A claim was measured and did not pass its decision rule."""

    def __init__(self, result: ClaimResult) -> None:
        super().__init__(result.message)
        self.result = result


class ClaimErrored(Exception):
    """A claim could not be measured (spec, data or model error)."""

    def __init__(self, result: ClaimResult) -> None:
        super().__init__(result.message)
        self.result = result


class ClaimFileNode(pytest.File):
    """A YAML claim file: collects its items, and measures them in :meth:`setup`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.parsed: ClaimFile | None = None
        self.checkpoints: tuple[str | None, ...] = (None,)
        # checkpoint -> the results of every entry of the file, or what stopped them
        self._results: dict[str | None, list[ClaimResult] | Exception] = {}

    def collect(self) -> Iterator[ClaimItem]:
        from mechcheck.spec.loader import load_claim_file

        plugin = self.config.stash[PLUGIN_KEY]
        kinds = plugin.session.registry.kind_keys()
        try:
            shown = str(self.path.relative_to(self.config.rootpath))
        except ValueError:
            shown = str(self.path)
        parsed = self.parsed = load_claim_file(self.path, kinds, shown=shown,
                                               common=plugin.session.registry.common_keys())
        if parsed.error is not None:
            yield ClaimItem.from_parent(self, name="<file>", line=parsed.error.line)
            return
        # checkpoint-major, so that each checkpoint's model is loaded once
        self.checkpoints = order = plugin.checkpoints(parsed)
        entries = self._entries(parsed, order[0])
        for checkpoint in order:
            yield from self._claim_items(entries, checkpoint, order)

    def _entries(self, parsed: ClaimFile, checkpoint: str | None) -> list[Any]:
        """The file's entries as its results will list them: a claim with ``each: true``
        is one entry per component (named for the model of the first checkpoint, which
        is loaded for it, and kept loaded for the first checkpoint's measurement)."""
        from mechcheck.each import expand_entries, needs_model
        from mechcheck.spec.schema import ClaimSpec

        if not needs_model(parsed.claims):
            return list(parsed.claims)
        session = self.config.stash[PLUGIN_KEY].session
        at = [c.at_checkpoint(checkpoint) if isinstance(c, ClaimSpec) else c
              for c in parsed.claims]
        return expand_entries(at, session)

    def _claim_items(self, entries: Sequence[Any], checkpoint: str | None,
                     order: tuple[str | None, ...]) -> Iterator[ClaimItem]:
        for index, (name, claim) in enumerate(zip(item_names(entries), entries)):
            if checkpoint is not None:
                name = f"{name}[{checkpoint}]"
            # the node id parsed from text, as pytest >= 9 parses the ids that --lf and
            # --ff cached: a name's "[...]" (id[component], id[checkpoint]) are its params
            item = ClaimItem.from_parent(self, name=name, line=claim.line, entry=claim,
                                         checkpoint=checkpoint, index=index,
                                         nodeid=f"{self.nodeid}::{name}")
            reason = getattr(claim, "xfail", None) or xfail_before(claim, checkpoint, order)
            if reason:
                item.add_marker(pytest.mark.xfail(reason=reason, strict=True,
                                                  raises=ClaimFailed))
            yield item

    def setup(self) -> None:
        """Measure the file: every claim, as one family, on the checkpoint of the first
        of its items that runs (a file with ``checkpoints:`` measures each further
        checkpoint in the setup of its first item, checkpoint-major, one model at a
        time).  It never raises for a claim: what stops the measurement is kept, and
        each item meets it when it runs."""
        first = next((item for item in self.session.items if item.parent is self), None)
        self.results(first.checkpoint if isinstance(first, ClaimItem) else self.checkpoints[0])

    def results(self, checkpoint: str | None) -> list[ClaimResult] | Exception:
        """The results of the file's entries in file order on ``checkpoint`` (measured
        on first use), or the exception that stopped measuring them."""
        if checkpoint not in self._results:
            from mechcheck.evaluate import evaluate_file

            assert self.parsed is not None, "results() before collect()"
            session = self.config.stash[PLUGIN_KEY].session
            try:
                self._results[checkpoint] = evaluate_file(self.parsed, session,
                                                          checkpoint=checkpoint)
            except Exception as exc:  # noqa: BLE001 - each item of the file reports it
                self._results[checkpoint] = exc
        return self._results[checkpoint]


def item_names(claims: Sequence[Any]) -> list[str]:
    """One distinct pytest item name per entry of a file's claims, in file order.

    A claim is named by its id (``claim[<i>]`` when it has none); a name already taken,
    e.g. by a duplicate id (an error item) is told apart by its line, ``<id>@line<N>``,
    and, should a claim's own id be that very name, by a counter after it.
    """
    from mechcheck.spec.loader import claim_name

    names: list[str] = []
    taken: set[str] = set()
    for i, claim in enumerate(claims):
        name = claim_name(claim, i)
        if name in taken:
            name = f"{name}@line{getattr(claim, 'line', None)}"
        base, count = name, 1
        while name in taken:
            count += 1
            name = f"{base}#{count}"
        taken.add(name)
        names.append(name)
    return names


class ClaimItem(pytest.Item):
    """One claim of a claim file (on one checkpoint); its result is its parent's
    ``index``-th."""

    parent: ClaimFileNode

    def __init__(self, *, line: int | None = None, entry: Any = None,
                 checkpoint: str | None = None, index: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.line = line
        self.entry = entry
        self.checkpoint = checkpoint
        self.index = index
        self.result: ClaimResult | None = None

    def setup(self) -> None:
        """Measure the file on this item's checkpoint if that is not done yet (the file's
        setup measured the first checkpoint that runs)."""
        self.parent.results(self.checkpoint)

    def runtest(self) -> None:
        results = self.parent.results(self.checkpoint)
        if isinstance(results, Exception):
            raise results
        self.result = self.config.stash[PLUGIN_KEY].with_baseline(results[self.index])
        if self.result.verdict == "fail":
            raise ClaimFailed(self.result)
        if self.result.verdict == "error":
            raise ClaimErrored(self.result)
        if self.result.verdict == "skip":
            reason = self.result.message.split("\n")[0]
            if self.result.reason != "screened out":
                reason = f"model unavailable (skip_if_unavailable): {reason}"
            raise pytest.skip.Exception(reason, _use_item_location=True)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> Any:
        if isinstance(excinfo.value, (ClaimFailed, ClaimErrored, MechcheckError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        line = None if self.line is None else self.line - 1
        return self.path, line, f"claim: {self.name}"

