"""pytest nodes for claim files: one :class:`ClaimFileNode` per file, one
:class:`ClaimItem` per claim.

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
    from mechcheck.report.results import ClaimResult

__all__ = ["ClaimFailed", "ClaimFileNode", "ClaimItem", "item_names"]


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
    """A YAML claim file."""

    def collect(self) -> Iterator[ClaimItem]:
        from mechcheck.spec.loader import claim_name, load_claim_file

        plugin = self.config.stash[PLUGIN_KEY]
        kinds = plugin.session.registry.kind_keys()
        try:
            shown = str(self.path.relative_to(self.config.rootpath))
        except ValueError:
            shown = str(self.path)
        parsed = load_claim_file(self.path, kinds, shown=shown,
                                 common=plugin.session.registry.common_keys())
        plugin.parsed[str(self.path)] = parsed
        if parsed.error is not None:
            yield ClaimItem.from_parent(self, name="<file>", line=parsed.error.line)
            return
        # checkpoint-major, so that each checkpoint's model is loaded once
        order = plugin.checkpoints(parsed)
        for checkpoint in order:
            yield from self._claim_items(parsed, checkpoint, claim_name, order)

    def _claim_items(self, parsed: Any, checkpoint: str | None, claim_name: Any,
                     order: tuple[str | None, ...]) -> Iterator[ClaimItem]:
        for name, claim in zip(item_names(parsed.claims), parsed.claims):
            if checkpoint is not None:
                name = f"{name}[{checkpoint}]"
            item = ClaimItem.from_parent(self, name=name, line=claim.line, entry=claim,
                                         checkpoint=checkpoint)
            reason = getattr(claim, "xfail", None) or xfail_before(claim, checkpoint, order)
            if reason:
                item.add_marker(pytest.mark.xfail(reason=reason, strict=True,
                                                  raises=ClaimFailed))
            yield item


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
    """One claim of a claim file."""

    def __init__(self, *, line: int | None = None, entry: Any = None,
                 checkpoint: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.line = line
        self.entry = entry
        self.checkpoint = checkpoint
        self.result: ClaimResult | None = None

    def setup(self) -> None:
        """Evaluate the claim's file (the shared runs and every claim of it) here, on
        its first claim, so that ``--durations`` shows that work as setup and each
        claim's call as its own."""
        try:
            self.config.stash[PLUGIN_KEY].result_for(self)
        except Exception:  # noqa: BLE001, S110 - runtest meets it again and reports it
            pass

    def runtest(self) -> None:
        plugin = self.config.stash[PLUGIN_KEY]
        self.result = plugin.result_for(self)
        if self.result.verdict == "fail":
            raise ClaimFailed(self.result)
        if self.result.verdict == "error":
            raise ClaimErrored(self.result)
        if self.result.verdict == "skip":
            reason = self.result.message.split("\n")[0]
            raise pytest.skip.Exception(f"model unavailable (skip_if_unavailable): {reason}",
                                        _use_item_location=True)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> Any:
        if isinstance(excinfo.value, (ClaimFailed, ClaimErrored, MechcheckError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        line = None if self.line is None else self.line - 1
        return self.path, line, f"claim: {self.name}"


# Set by mechcheck.pytest_plugin (kept here so both modules share one key).
PLUGIN_KEY: pytest.StashKey[Any] = pytest.StashKey()
