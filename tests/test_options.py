"""Checks of run options shared by the pytest plugin and `mechcheck check`."""

from __future__ import annotations

import pytest

from mechcheck import options
from mechcheck.errors import MechcheckError


def test_batch_size_and_resamples() -> None:
    assert options.check_batch_size(1, option="--b") == 1
    with pytest.raises(MechcheckError, match="--b 0: the batch size must be at least 1"):
        options.check_batch_size(0, option="--b")
    assert options.check_n_resamples(99, option="--r") == 99
    with pytest.raises(MechcheckError, match="--r 98: too few resamples") as info:
        options.check_n_resamples(98, option="--r")
    assert info.value.key == "--r" and "99 or more" in str(info.value.hint)


def test_dtype() -> None:
    for name in ("float32", "bfloat16", "float16", "float64"):
        assert options.check_dtype(name, option="--d") == name
    for bad in ("int8", "fp16", "", "float8"):
        with pytest.raises(MechcheckError, match="unknown dtype"):
            options.check_dtype(bad, option="--d")


def test_checkpoints() -> None:
    assert options.parse_checkpoints(None, option="--c") is None
    assert options.parse_checkpoints(" step5, step10 ,step5", option="--c") == (
        "step5", "step10")
    for empty in ("", ",", " , ,"):
        with pytest.raises(MechcheckError, match="names no checkpoint"):
            options.parse_checkpoints(empty, option="--c")


def test_max_drift() -> None:
    assert options.check_max_drift(None, option="--x", baseline=None,
                                   baseline_option="--b") is None
    assert options.check_max_drift(0.0, option="--x", baseline="b.json",
                                   baseline_option="--b") == 0.0
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(MechcheckError, match="must be a finite number of at least 0"):
            options.check_max_drift(bad, option="--x", baseline="b.json",
                                    baseline_option="--b")
    with pytest.raises(MechcheckError, match="--x needs --b"):
        options.check_max_drift(0.5, option="--x", baseline=None, baseline_option="--b")


def test_devices() -> None:
    import torch

    assert options.check_device(None, option="--dev") is None
    assert options.check_device("auto", option="--dev") is None
    assert options.check_device("cpu", option="--dev") == "cpu"
    for nonsense in ("gpu7", "cuda:x", "cpu:zero", "42"):
        with pytest.raises(MechcheckError, match=f"--dev {nonsense}: not a device"):
            options.check_device(nonsense, option="--dev")
    if torch.cuda.is_available():
        assert options.check_device("cuda:0", option="--dev") == "cuda:0"
        count = torch.cuda.device_count()
        with pytest.raises(MechcheckError, match=f"this machine has {count} cuda"):
            options.check_device(f"cuda:{count}", option="--dev")
    else:
        with pytest.raises(MechcheckError, match="--dev cuda: cuda is not available on "
                           "this machine"):
            options.check_device("cuda", option="--dev")
    with pytest.raises(MechcheckError, match="meta is not available"):
        options.check_device("meta", option="--dev")
