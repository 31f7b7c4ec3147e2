"""Evaluate claim files from Python, outside pytest."""

from __future__ import annotations

import os
from pathlib import Path

from mechcheck.results import ClaimResult
from mechcheck.session import Session

__all__ = ["evaluate_path"]


def evaluate_path(path: str | os.PathLike, session: Session | None = None) -> list[ClaimResult]:
    """Evaluate one claim file (or every ``test_*.yaml`` under a folder), once per
    checkpoint for files with ``checkpoints:``.

    Returns the results; ``mechcheck.results_frame(results)`` makes them a DataFrame.
    """
    from mechcheck.evaluate import evaluate_file
    from mechcheck.spec.loader import load_claim_file

    session = session or Session()
    root = Path(path)
    files = sorted(root.rglob("test_*.yaml")) if root.is_dir() else [root]
    results: list[ClaimResult] = []
    for file in files:
        parsed = load_claim_file(file, session.registry.kind_keys())
        for checkpoint in parsed.checkpoints or (None,):
            results.extend(evaluate_file(parsed, session, checkpoint=checkpoint))
    return results
