"""Argument checks with one wording: ``ValueError`` (``TypeError`` for a wrong kind) saying what, value, what to do."""

from __future__ import annotations

import math
import numbers

import torch


def integer(name: str, value, minimum: int = 1) -> int:
    """``value`` as an ``int`` if an integer ``>= minimum`` (numpy, torch scalars too; not ``bool``), else raise."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__}).")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}.")
    return int(value)


def number(name: str, value, low: float = -math.inf, high: float = math.inf, *, low_open: bool = False) -> float:
    """``value`` as a finite ``float`` in ``[low, high]`` (``(low, high]`` with ``low_open``); raise otherwise."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__}).")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}.")
    if value < low or value > high or (low_open and value == low):
        raise ValueError(f"{name} must lie in {'(' if low_open else '['}{low:g}, {high:g}], got {value:g}.")
    return value


def finite(name: str, tensor: torch.Tensor, hint: str = "check what produced it") -> torch.Tensor:
    """Raise if ``tensor`` holds NaN or infinite values; return it unchanged."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}.")
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s) of {tensor.numel()}; {hint}.")
    return tensor


def shape(name: str, tensor: torch.Tensor, expected: str, ok: bool) -> None:
    """Raise unless ``ok``; ``expected`` spells the wanted shape, e.g. ``"(N, H, W, 3)"``."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {expected}, got {type(tensor).__name__}.")
    if not ok:
        raise ValueError(f"{name} must have shape {expected}, got {tuple(tensor.shape)}.")
