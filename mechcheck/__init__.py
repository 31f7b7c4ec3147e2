"""mechcheck: mechanistic claims about language models, tested by pytest.

The package root stays light (pytest imports the plugin on every run): heavy
modules load on first attribute access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Address",
    "ClaimResult",
    "MechcheckError",
    "Session",
    "evaluate_path",
    "hookimpl",
    "results_frame",
    "__version__",
]

_LAZY = {
    "Address": "mechcheck.addresses",
    "ClaimResult": "mechcheck.report.results",
    "MechcheckError": "mechcheck.errors",
    "Session": "mechcheck.session",
    "evaluate_path": "mechcheck.api",
    "results_frame": "mechcheck.report",
    "hookimpl": "mechcheck.hookspecs",
}

if TYPE_CHECKING:  # pragma: no cover
    from mechcheck.addresses import Address
    from mechcheck.api import evaluate_path
    from mechcheck.errors import MechcheckError
    from mechcheck.hookspecs import hookimpl
    from mechcheck.report.io import results_frame
    from mechcheck.report.results import ClaimResult
    from mechcheck.session import Session


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mechcheck' has no attribute {name!r}")
