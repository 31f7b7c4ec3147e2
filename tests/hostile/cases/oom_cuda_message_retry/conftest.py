"""Simulated out-of-memory: the planted model's forward raises for batches above
2 rows (a RuntimeError as older torch raises); it touches OOM_RAISED each time it does."""

import functools
from pathlib import Path

import transformers

LIMIT = 2
_original = transformers.GPT2LMHeadModel.forward


def _error():
    return RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.15 GiB "
                        "total capacity)")


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
