"""``mechcheck.html_report.render`` and ``onsets`` as documented (docs/python-api.md);
they live in :mod:`mechcheck.report.html`."""

from mechcheck.report.html import check_output, onsets, render

__all__ = ["check_output", "onsets", "render"]
