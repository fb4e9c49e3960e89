"""Argument checks with one wording: ``ValueError`` (``TypeError`` for a wrong kind) saying what, value, what to do."""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch


def integer(name: str, value, minimum: int = 1) -> int:
    """``value`` as an ``int`` if an integer ``>= minimum`` (numpy, torch scalars too; not ``bool``), else raise."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__}). "
            f"Pass a whole number such as {max(minimum, 1)}."
        )
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}. Pass a whole number >= {minimum}.")
    return int(value)


def number(name: str, value, low: float = -math.inf, high: float = math.inf, *, low_open: bool = False) -> float:
    """``value`` as a finite ``float`` in ``[low, high]`` (``(low, high]`` with ``low_open``); raise otherwise."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__}). Pass a number.")
    value = float(value)
    if high == math.inf:
        wanted = "a finite number" if low == -math.inf else f"a finite number {'>' if low_open else '>='} {low:g}"
    else:
        wanted = f"a number in {'(' if low_open else '['}{low:g}, {high:g}]"
    if not math.isfinite(value) or value < low or value > high or (low_open and value == low):
        raise ValueError(f"{name} must be {wanted}, got {value:g}. Pass {wanted}.")
    return value


def flag(name: str, value) -> bool:
    """``value`` as a ``bool`` if it is one (Python or numpy); raise otherwise (``"no"`` would count as true)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ValueError(f"{name} must be True or False, got {value!r} ({type(value).__name__}). Pass True or False.")


def finite(name: str, tensor: torch.Tensor, hint: str = "check what produced it") -> torch.Tensor:
    """Raise if ``tensor`` holds NaN or infinite values; return it unchanged."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}. Convert it with torch.as_tensor.")
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s) of {tensor.numel()}; {hint}.")
    return tensor


def shape(name: str, tensor: torch.Tensor, expected: str, ok) -> None:
    """Raise unless ``ok`` (a bool, or a test of the tensor: ``lambda t: t.dim() == 4``); ``expected``: ``"(N, 3)"``."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape {expected}, got {type(tensor).__name__}. "
            "Convert it with torch.as_tensor."
        )
    if not (ok(tensor) if callable(ok) else ok):
        raise ValueError(f"{name} must have shape {expected}, got {tuple(tensor.shape)}.")


def device(name: str, value) -> torch.device:
    """``value`` as a ``torch.device`` this machine has; raise otherwise."""
    try:
        dev = torch.device(value)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"{name} must be a device such as 'cpu' or 'cuda', got {value!r} ({exc}).") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"{name}={value!r} asks for a GPU, but torch sees none (torch.cuda.is_available() is False). "
            "Use 'cpu', or data.pick_device() to take the GPU only where there is one."
        )
    return dev
