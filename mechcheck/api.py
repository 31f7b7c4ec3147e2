"""Evaluate claim files from Python, outside pytest."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mechcheck.report.results import ClaimResult
from mechcheck.session import Session

__all__ = ["Planned", "claim_files", "evaluate_path", "evaluate_planned", "plan_path"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Planned:
    """One claim file on one checkpoint (None: the model as written), as pytest
    collects it: the names its claims get as items and why each is expected to fail.

    ``names`` and ``xfail`` follow the file's entries (one ``<file>`` entry for a file
    that cannot be read).
    """

    parsed: Any
    checkpoint: str | None
    names: tuple[str, ...]
    xfail: tuple[str | None, ...]
    keywords: tuple[str, ...]  # the file's name and the folders above it, for -k


def claim_files(path: str | os.PathLike) -> list[Path]:
    """``path`` if it is not a folder (a missing file then evaluates to an error
    result), else every ``test_*.yaml`` below it, in sorted order."""
    root = Path(path)
    return sorted(root.rglob("test_*.yaml")) if root.is_dir() else [root]


def plan_path(path: str | os.PathLike, session: Session, *,
              checkpoints: Sequence[str] | None = None) -> list[Planned]:
    """Parse the claim files under ``path`` and list what to evaluate: each file once
    per checkpoint, the ``checkpoints`` given (as ``--mechcheck-checkpoints``), else
    the file's ``checkpoints:``, else once on the model as written."""
    from mechcheck.collect import item_names
    from mechcheck.outcomes import xfail_reason
    from mechcheck.spec.loader import load_claim_file

    root = Path(path)
    planned = []
    for file in claim_files(root):
        parsed = load_claim_file(file, session.registry.kind_keys(),
                                 common=session.registry.common_keys())
        folders = file.parent.relative_to(root).parts if root.is_dir() else ()
        keywords = (file.name, *folders)
        if parsed.error is not None:
            planned.append(Planned(parsed=parsed, checkpoint=None, names=("<file>",),
                                   xfail=(None,), keywords=keywords))
            continue
        order = tuple(checkpoints or ()) or tuple(parsed.checkpoints) or (None,)
        names = item_names(parsed.claims)
        for checkpoint in order:
            suffix = "" if checkpoint is None else f"[{checkpoint}]"
            planned.append(Planned(
                parsed=parsed, checkpoint=checkpoint,
                names=tuple(n + suffix for n in names),
                xfail=tuple(xfail_reason(c, checkpoint, order) for c in parsed.claims),
                keywords=keywords))
    return planned


def evaluate_planned(planned: Planned, session: Session) -> list[ClaimResult]:
    """Evaluate one planned file x checkpoint; each result records why it is expected
    to fail (``xfail``, also from ``xfail_before``), as the pytest report does."""
    from mechcheck.evaluate import evaluate_file

    results = evaluate_file(planned.parsed, session, checkpoint=planned.checkpoint)
    if len(results) != len(planned.xfail):
        return results
    return [r if r.xfail or not why else replace(r, xfail=why)
            for r, why in zip(results, planned.xfail)]


def evaluate_path(path: str | os.PathLike, session: Session | None = None, *,
                  checkpoints: Sequence[str] | None = None,
                  on_file: Callable[[Planned, list[ClaimResult]], None] | None = None,
                  ) -> list[ClaimResult]:
    """Evaluate one claim file (or every ``test_*.yaml`` under a folder), once per
    checkpoint for files with ``checkpoints:`` (or for each of ``checkpoints``).

    Args:
        path: a claim file or a folder.
        session: the session to use (a default one when None).
        checkpoints: run every file on these checkpoints instead of its own.
        on_file: called after each file x checkpoint with its results.

    Returns the results; ``mechcheck.results_frame(results)`` makes them a DataFrame.
    """
    if session is None:
        from mechcheck.plugins import Registry, get_plugin_manager

        session = Session(registry=Registry.from_plugins(get_plugin_manager()))
    results: list[ClaimResult] = []
    for planned in plan_path(path, session, checkpoints=checkpoints):
        done = evaluate_planned(planned, session)
        if on_file is not None:
            on_file(planned, done)
        results.extend(done)
    return results
