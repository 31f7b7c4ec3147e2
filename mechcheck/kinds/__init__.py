"""The built-in claim kinds, one module per family.

:mod:`mechcheck.kinds.base` holds :class:`Measurement`, the :class:`ClaimKind`
protocol and the keys the kinds share; ``nodes`` the claims about components
(necessary, sufficient, negligible), ``attention`` the attention-pattern claims and
``behaviour`` the claim that the model does the task at all.
"""

from __future__ import annotations

from mechcheck.kinds.nodes import (
    BUILTIN_KINDS,
    Attends,
    ClaimKind,
    Measurement,
    Necessary,
    Negligible,
    Performs,
    Sufficient,
)

__all__ = ["BUILTIN_KINDS", "Attends", "ClaimKind", "Measurement", "Necessary",
           "Negligible", "Performs", "Sufficient"]
