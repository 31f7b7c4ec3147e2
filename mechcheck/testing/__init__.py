"""Test scaffolding for mechcheck and its plugins: tiny random models and a conformance kit.

- :mod:`mechcheck.testing.models`: tiny random GPT-2, NeoX, Llama, Qwen2 and Mistral models
  with perturbed biases and norms (:func:`build_tiny`, :func:`save_tiny`,
  :func:`perturb_params`).
- :mod:`mechcheck.testing.conformance`: :func:`check_arch_map`,
  :func:`check_intervention` and :func:`check_metric`, which a plugin's tests call to
  check what the plugin registers against independent references.

Nothing at run time imports this package; it needs torch and transformers.
"""

from __future__ import annotations

from mechcheck.testing.conformance import check_arch_map, check_intervention, check_metric
from mechcheck.testing.models import (
    ARCHS,
    BOS_TOKEN,
    DEFAULT_WORDS,
    build_tiny,
    perturb_params,
    save_tiny,
)

__all__ = [
    "ARCHS",
    "BOS_TOKEN",
    "DEFAULT_WORDS",
    "build_tiny",
    "check_arch_map",
    "check_intervention",
    "check_metric",
    "perturb_params",
    "save_tiny",
]
