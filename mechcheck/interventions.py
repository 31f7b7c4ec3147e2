"""Where plugins import :class:`Intervention` and :class:`Source` from
(docs/plugins.md); they live in :mod:`mechcheck.engine.interventions`."""

from mechcheck.engine.interventions import BUILTIN_INTERVENTIONS, Intervention, Source

__all__ = ["BUILTIN_INTERVENTIONS", "Intervention", "Source"]
