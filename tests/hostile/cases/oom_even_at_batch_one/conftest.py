"""Simulated out-of-memory: the planted model's forward raises for batches above
0 rows (at every batch size); it touches OOM_RAISED each time it does."""

import functools
from pathlib import Path

import torch
import transformers

LIMIT = 0
_original = transformers.GPT2LMHeadModel.forward


def _error():
    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")


@functools.wraps(_original)
def forward(self, input_ids=None, **kwargs):
    planted = "planted" in str(getattr(self.config, "_name_or_path", ""))
    if planted and input_ids is not None and input_ids.shape[0] > LIMIT:
        Path(__file__).with_name("OOM_RAISED").touch()
        raise _error()
    return _original(self, input_ids=input_ids, **kwargs)


def pytest_configure(config):
    transformers.GPT2LMHeadModel.forward = forward


def pytest_unconfigure(config):
    transformers.GPT2LMHeadModel.forward = _original
