"""The engine: forward passes, the one hook owner, interventions, sites and scores.

Claim kinds see the engine through :class:`~mechcheck.engine.context.ClaimContext`; the
:class:`~mechcheck.engine.runner.Runner` behind it is private to mechcheck.
"""

from __future__ import annotations

from mechcheck.engine.runner import Needs, Runner, position_mask, unknown_position

__all__ = ["Needs", "Runner", "position_mask", "unknown_position"]
