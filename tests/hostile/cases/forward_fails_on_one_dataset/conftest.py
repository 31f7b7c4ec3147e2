"""The planted model's forward fails on any batch that holds the word 'drum'."""

import functools

import transformers

_original = transformers.GPT2LMHeadModel.forward


@functools.wraps(_original)
def forward(self, input_ids=None, **kwargs):
    drum = 33  # the id of 'drum' in zoo:planted-prevtoken's vocabulary
    planted = "planted" in str(getattr(self.config, "_name_or_path", ""))
    if planted and input_ids is not None and bool((input_ids == drum).any()):
        raise ValueError("simulated failure in the forward pass")
    return _original(self, input_ids=input_ids, **kwargs)


def pytest_configure(config):
    transformers.GPT2LMHeadModel.forward = forward


def pytest_unconfigure(config):
    transformers.GPT2LMHeadModel.forward = _original
