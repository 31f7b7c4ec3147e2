"""Reports: result records, JSON/CSV files, tables, HTML, figures and baselines.

``mechcheck.report.write_report``, ``read_report``, ``load_report`` and ``matrix`` are
public (see docs/python-api.md); they live in :mod:`mechcheck.report.io`.
"""

from __future__ import annotations

from mechcheck.report.io import (
    TABLE_CHOICES,
    ReportFile,
    check_report_path,
    check_writable,
    load_report,
    matrix,
    partial_path,
    read_report,
    require_complete,
    results_frame,
    summary_table,
    write_atomic,
    write_report,
)

__all__ = ["TABLE_CHOICES", "ReportFile", "check_report_path", "check_writable",
           "load_report", "matrix", "partial_path", "read_report", "require_complete",
           "results_frame", "summary_table", "write_atomic", "write_report"]
