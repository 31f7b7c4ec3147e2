"""mechcheck-topk: the smallest complete mechcheck plugin.

It adds the metrics ``top_1``, ``top_5`` and ``top_10`` (1 where the answer is among
the k most likely next tokens, else 0) and ``answer_rank`` (the answer's rank, 1 for
the most likely token; lower is better), and the decision rule ``sign`` (a one-sided
sign test of the median).  mechcheck finds it through the entry point
``topk = "mechcheck_topk"`` in the group ``mechcheck``.
"""

from __future__ import annotations

import mechcheck
from mechcheck.metrics import Metric
from mechcheck.rules import DecisionRule
from mechcheck_topk.metrics import answer_rank, top_k
from mechcheck_topk.sign import sign_test

__all__ = ["K_VALUES", "mechcheck_decision_rules", "mechcheck_metrics"]

K_VALUES = (1, 5, 10)


@mechcheck.hookimpl
def mechcheck_metrics() -> list[Metric]:
    return [*(top_k(k) for k in K_VALUES),
            Metric(name="answer_rank", fn=answer_rank, higher_is_better=False,
                   description="the answer's rank among the next tokens (1 = most likely)")]


@mechcheck.hookimpl
def mechcheck_decision_rules() -> list[DecisionRule]:
    return [DecisionRule(name="sign", greater=sign_test,
                         description="one-sided sign test of the median (exact binomial p)")]
