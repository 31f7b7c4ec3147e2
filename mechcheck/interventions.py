"""Where plugins import :class:`Intervention` from (docs/plugins.md); it lives in
:mod:`mechcheck.engine.interventions`."""

from mechcheck.engine.interventions import BUILTIN_INTERVENTIONS, Intervention

__all__ = ["BUILTIN_INTERVENTIONS", "Intervention"]
