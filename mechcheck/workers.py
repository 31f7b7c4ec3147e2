"""pytest-xdist workers: a claim file on one worker, the cores shared out among them.

A claim file is measured whole, as one family, in the setup of its first item
(:mod:`mechcheck.collect`).  Under xdist's default ``--dist load`` the items of one file
could go to several workers, each of which would then measure the whole file again;
:func:`scheduler` keeps each claim file's items together (Python tests are still spread
one by one).  And each worker would start as many torch threads as the machine has
cores, so that two workers on two cores run four threads and wait on each other
(measured here: the claims suite took four times as long as with one thread each);
:func:`share_cores` gives each worker its share.

Nothing here imports xdist or torch at module level: the pytest plugin imports it on
every run.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["THREAD_VARIABLES", "cores", "default_workers", "scheduler", "share_cores",
           "worker_count"]

THREAD_VARIABLES = ("MECHCHECK_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""Environment variables that, when set, already say how many threads a process uses:
a worker then keeps torch's own choice (``MECHCHECK_THREADS`` is set by mechcheck's
users, the others by OpenMP and MKL)."""


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers(config: Any, units: int) -> int:
    """For a suite's ``conftest.py`` (``pytest_cmdline_main``): run on one xdist worker
    per core, at most ``units`` (the pieces of work: files, tests), unless ``-n`` was
    given, xdist is not installed, or the run is ``--pdb``, ``--collect-only`` or itself
    a worker; returns the number of workers set (0: none)."""
    option = config.option
    if getattr(option, "numprocesses", 0) is not None:
        return 0  # no xdist, or -n given
    if config.getoption("usepdb") or config.getoption("collectonly") or \
            hasattr(config, "workerinput"):
        return 0
    workers = min(cores(), units)
    if workers < 2:
        return 0
    option.numprocesses = workers
    return workers


def worker_count(config: Any) -> int | None:
    """The number of xdist workers of this run, on a worker (None elsewhere)."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        return None
    return int(workerinput.get("workercount", 1))


def share_cores(config: Any) -> int | None:
    """Set torch's thread count and return it: ``MECHCHECK_THREADS`` where it is set,
    else on an xdist worker the worker's share of the cores (at least one).  None
    (nothing changed) elsewhere, or on a worker where OpenMP's or MKL's variable is set.

    Raises:
        MechcheckError: ``MECHCHECK_THREADS`` is not a positive whole number.
    """
    explicit = os.environ.get("MECHCHECK_THREADS", "").strip()
    count = worker_count(config)
    if explicit:
        threads = _positive(explicit)
    elif count is None or any(os.environ.get(v) for v in THREAD_VARIABLES[1:]):
        return None
    else:
        threads = max(1, cores() // max(1, count))
    import torch

    torch.set_num_threads(threads)
    return threads


def _positive(text: str) -> int:
    from mechcheck.errors import MechcheckError

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise MechcheckError(f"MECHCHECK_THREADS={text!r} is not a number of threads",
                             key="MECHCHECK_THREADS",
                             hint="set it to a whole number of at least 1, or unset it to "
                             "let each xdist worker take its share of the cores")
    return value


def scheduler(config: Any, log: Any) -> Any:
    """xdist's scheduler for ``--dist load`` with every claim file's items kept on one
    worker (its unit of work is the file for a claim file, the test for the rest); None
    (xdist's own) for the other ``--dist`` modes."""
    if config.getoption("dist", "no") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ClaimFileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path, _, _ = nodeid.partition("::")
            return path if path.endswith((".yaml", ".yml")) else nodeid

        def schedule(self) -> None:
            # hand out files in collection order, not by their number of items (a
            # file's cost is its model's and its claims', not its item count)
            option = self.config.option
            reorder = getattr(option, "loadscopereorder", True)
            option.loadscopereorder = False
            try:
                super().schedule()
            finally:
                option.loadscopereorder = reorder

    return ClaimFileScheduling(config, log)
