# A metric that needs a column of the data, from docs/plugins.md (quoted there).
# mechcheck_lab_target.py
import torch

import mechcheck
from mechcheck.errors import DataError
from mechcheck.metrics import Metric, MetricInputs


def _target_logprob(logits: torch.Tensor, inputs: MetricInputs) -> torch.Tensor:
    """Log-probability of the token in each row's `target` column."""
    targets = inputs.columns.get("target")
    if targets is None or any(t is None for t in targets):
        raise DataError("metric target_logprob needs a 'target' column in every row",
                        key="metric", hint="add a one-token target to every row")
    ids = [inputs.tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in targets]
    index = torch.tensor(ids, device=logits.device).view(-1, 1)
    return torch.log_softmax(logits, dim=-1).gather(-1, index).squeeze(-1)


@mechcheck.hookimpl
def mechcheck_metrics() -> list[Metric]:
    return [Metric(name="target_logprob", fn=_target_logprob,
                   description="log-probability of the row's target token")]
