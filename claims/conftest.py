"""The claims suite runs its files on one pytest-xdist worker per core.

``pytest claims/`` (two or more claim files) then measures files side by side, each
worker on its share of the cores (:mod:`mechcheck.workers`); a single file, ``-n 0``,
``--pdb`` and ``--collect-only`` run in this process, and ``-n N`` sets the workers.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    from mechcheck.workers import default_workers

    default_workers(config, _claim_files(config))


def _claim_files(config: pytest.Config) -> int:
    """How many claim files the command line names (files, or files under folders)."""
    patterns = str(config.getini("mechcheck_files")).split()
    count = 0
    for arg in config.args:
        path = config.invocation_params.dir / Path(arg.split("::", 1)[0])
        paths = path.rglob("*") if path.is_dir() else [path]
        count += sum(1 for p in paths if any(fnmatch.fnmatch(p.name, pat) for pat in patterns))
    return count
