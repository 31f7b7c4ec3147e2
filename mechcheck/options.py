"""Checks of run options, shared by the pytest plugin and ``mechcheck check``.

Each check returns the value to use or raises a :class:`MechcheckError` whose ``key`` is
the option as the user wrote it (``--mechcheck-batch-size`` or ``--batch-size``), so a
mistake stops the run before anything is collected or loaded, once, instead of failing
every claim.  torch is imported only to check a device that was asked for.
"""

from __future__ import annotations

from mechcheck.errors import MechcheckError

__all__ = ["DTYPES", "MIN_RESAMPLES", "check_batch_size", "check_device", "check_dtype",
           "check_max_drift", "check_n_resamples", "parse_checkpoints"]

# Floating dtypes a model can run in, with torch's aliases.
DTYPES = ("float32", "float16", "bfloat16", "float64", "float", "half", "double")
# (B + 1) * alpha >= 1 must hold for the resampling rules; 99 allows alpha = 0.01.
MIN_RESAMPLES = 99


def check_batch_size(value: int, *, option: str) -> int:
    """At least one prompt per forward pass."""
    if value < 1:
        raise MechcheckError(f"{option} {value}: the batch size must be at least 1",
                             key=option, hint=f"give {option} 1 or more (default 128)")
    return value


def check_n_resamples(value: int, *, option: str) -> int:
    """Enough resamples for the bootstrap and permutation rules."""
    if value < MIN_RESAMPLES:
        raise MechcheckError(
            f"{option} {value}: too few resamples for the bootstrap and permutation rules",
            key=option, hint=f"give {option} {MIN_RESAMPLES} or more (default 9999); "
            "(B + 1) * alpha must be at least 1")
    return value


def check_dtype(name: str, *, option: str) -> str:
    """A floating dtype that models can run in."""
    if name not in DTYPES:
        raise MechcheckError(f"{option} {name}: unknown dtype", key=option,
                             hint="use float32 (the default), bfloat16, float16 or float64")
    return name


def check_device(name: str | None, *, option: str) -> str | None:
    """A device torch knows and this machine has; None (or ``auto``) picks one later."""
    if name is None or name.strip() in ("", "auto"):
        return None
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise MechcheckError(f"{option} {name}: not a device", key=option,
                             hint="use cpu, cuda, cuda:N or mps, or leave the option out "
                             "to use cuda when available") from None
    if device.type == "cpu":
        return name
    backend = torch.backends.mps if device.type == "mps" else getattr(torch, device.type, None)
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        built = "" if device.type != "cuda" or torch.version.cuda else \
            f" (this torch, {torch.__version__}, is built without CUDA)"
        raise MechcheckError(f"{option} {name}: {device.type} is not available on this "
                             f"machine{built}", key=option,
                             hint=f"use {option} cpu, or leave the option out to use cuda "
                             "when available")
    count = getattr(backend, "device_count", None)
    if device.index is not None and count is not None and device.index >= count():
        raise MechcheckError(f"{option} {name}: this machine has {count()} {device.type} "
                             f"device(s), {device.type}:0 to {device.type}:{count() - 1}",
                             key=option, hint=f"use {device.type}:0 ... "
                             f"{device.type}:{count() - 1}")
    return name


def parse_checkpoints(text: str | None, *, option: str) -> tuple[str, ...] | None:
    """``A,B,C`` as a tuple of names; None when the option was not given.

    Raises:
        MechcheckError: the option was given but names no checkpoint (``""``, ``","``).
    """
    if text is None:
        return None
    names = tuple(c.strip() for c in text.split(",") if c.strip())
    if not names:
        raise MechcheckError(f"{option} {text!r}: names no checkpoint", key=option,
                             hint=f"give checkpoints separated by commas, e.g. {option} "
                             "step1000,step2000; or leave the option out to use the "
                             "files' checkpoints:")
    return tuple(dict.fromkeys(names))


def check_max_drift(value: float | None, *, option: str, baseline: str | None,
                    baseline_option: str) -> float | None:
    """A finite, non-negative drift, given only with a baseline."""
    if value is None:
        return None
    if not value >= 0 or value == float("inf"):
        raise MechcheckError(f"{option} {value:g}: the allowed drift must be a finite "
                             "number of at least 0", key=option,
                             hint=f"give {option} 0.1, say: the most a passing claim's "
                             "effect may move from the baseline")
    if baseline is None:
        raise MechcheckError(f"{option} needs {baseline_option}", key=option,
                             hint=f"give {baseline_option} OLD.json: drift is measured "
                             "from a baseline report")
    return value
