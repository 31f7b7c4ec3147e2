"""The tasks mechcheck ships with, registered by :mod:`mechcheck.builtin`."""

from __future__ import annotations

from mechcheck.tasks.induction import INDUCTION

BUILTIN_TASKS = (INDUCTION,)

__all__ = ["BUILTIN_TASKS"]
