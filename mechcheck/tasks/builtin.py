"""The tasks mechcheck ships with and the metrics they bring, registered by
:mod:`mechcheck.builtin`."""

from __future__ import annotations

from mechcheck.tasks.greater_than import GREATER_THAN, GREATER_THAN_PD
from mechcheck.tasks.induction import INDUCTION
from mechcheck.tasks.ioi import IOI

BUILTIN_TASKS = (INDUCTION, IOI, GREATER_THAN)
# Metrics that read a task's columns (greater_than_pd reads yy): a task brings its own.
BUILTIN_TASK_METRICS = (GREATER_THAN_PD,)

__all__ = ["BUILTIN_TASKS", "BUILTIN_TASK_METRICS"]
