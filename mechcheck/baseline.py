"""``mechcheck.baseline.compare`` and ``format_changes`` as documented
(docs/python-api.md); they live in :mod:`mechcheck.report.baseline`."""

from mechcheck.report.baseline import Change, apply_baseline, compare, format_changes, index

__all__ = ["Change", "apply_baseline", "compare", "format_changes", "index"]
