"""Simulated out-of-memory: the planted model's forward raises for batches above
1 rows (the CPU allocator's error); it touches OOM_RAISED each time it does."""

import functools
from pathlib import Path

import transformers

LIMIT = 1
_original = transformers.GPT2LMHeadModel.forward


def _error():
    return RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: "
                        "not enough memory: you tried to allocate 21474836480 bytes.")


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
