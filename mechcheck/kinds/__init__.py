"""The built-in claim kinds, one module per family.

:mod:`mechcheck.kinds.base` holds :class:`Measurement`, the :class:`ClaimKind`
protocol and the keys the kinds share; ``nodes`` the claims about components
(necessary, negligible, sufficient), ``attention`` the attention-pattern claims and
``behaviour`` the claim that the model does the task at all, ``paths`` path
patching, ``circuits`` whole circuits, ``hypotheses`` Shi et al.'s circuit tests,
``probes`` probes with controls and concept erasure (on ``probing``'s examples) and
``steering`` activation addition.
"""

from __future__ import annotations

from mechcheck.kinds.attention import Attends
from mechcheck.kinds.base import ClaimKind, Measurement
from mechcheck.kinds.behaviour import Performs
from mechcheck.kinds.circuits import Circuit
from mechcheck.kinds.direct import DirectEffect
from mechcheck.kinds.features import Activates
from mechcheck.kinds.hypotheses import Equivalent, Independent, MinimalEdges, SufficientVsRandom
from mechcheck.kinds.lens import Decodes
from mechcheck.kinds.nodes import Necessary, Negligible, Sufficient
from mechcheck.kinds.paths import Path
from mechcheck.kinds.probes import Erasure, Probe
from mechcheck.kinds.steering import Steers
from mechcheck.kinds.tracing import Traced

BUILTIN_KINDS = (Necessary(), Sufficient(), Negligible(), Attends(), Performs(), Path(), Circuit(),
                 Equivalent(), Independent(), MinimalEdges(), SufficientVsRandom(), Probe(),
                 Erasure(), Steers(), Decodes(), DirectEffect(), Traced(),
                 Activates())

__all__ = ["BUILTIN_KINDS", "Activates", "Attends", "Circuit", "ClaimKind", "Decodes",
           "DirectEffect", "Equivalent", "Erasure",
           "Independent", "Measurement", "MinimalEdges", "Necessary", "Negligible", "Path",
           "Performs", "Probe", "Steers", "Sufficient", "SufficientVsRandom", "Traced"]
