"""The tasks mechcheck ships with, registered by :mod:`mechcheck.builtin`."""

from __future__ import annotations

from mechcheck.tasks.greater_than import GREATER_THAN
from mechcheck.tasks.induction import INDUCTION
from mechcheck.tasks.ioi import IOI

BUILTIN_TASKS = (INDUCTION, IOI, GREATER_THAN)

__all__ = ["BUILTIN_TASKS"]
