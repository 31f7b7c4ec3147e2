"""The plugin's tests run with entry-point plugins loaded (as after ``pip install``)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.pop("MECHCHECK_DISABLE_PLUGIN_AUTOLOAD", None)
