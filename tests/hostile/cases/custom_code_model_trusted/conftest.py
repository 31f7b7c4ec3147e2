"""transformers copies a folder's model code to HF_MODULES_CACHE before it imports it:
keep that copy in this run's folder, not in the user's cache."""

from pathlib import Path

import transformers.dynamic_module_utils as dynamic

_original = dynamic.HF_MODULES_CACHE


def pytest_configure(config):
    dynamic.HF_MODULES_CACHE = str(Path(__file__).with_name("hf_modules"))


def pytest_unconfigure(config):
    dynamic.HF_MODULES_CACHE = _original
