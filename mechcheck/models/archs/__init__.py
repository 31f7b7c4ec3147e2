"""Declarative maps from the mechcheck address grammar onto HF architectures.

Each module defines one :class:`~mechcheck.models.adapter.ArchMap`; the built-in
plugin :mod:`mechcheck.builtin` registers them through ``mechcheck_model_adapters``.
"""

from __future__ import annotations

from mechcheck.models.archs.gpt2 import GPT2
from mechcheck.models.archs.llama import LLAMA
from mechcheck.models.archs.neox import NEOX

BUILTIN_ARCHS = (GPT2, NEOX, LLAMA)

__all__ = ["BUILTIN_ARCHS", "GPT2", "LLAMA", "NEOX"]
