"""Argument checks with one wording: ``ValueError`` (``TypeError`` for a wrong kind) saying what, value, what to do."""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch


def require(ok, message: str, error: type[Exception] = ValueError) -> None:
    """Raise ``error(message)`` unless ``ok``: a check with its own wording, in one line where it happens."""
    if not ok:
        raise error(message)


def kind(name: str, value, types, hint: str) -> None:
    """Raise ``TypeError`` unless ``value`` is one of ``types`` (``type(None)``: None); ``hint``: how to get one."""
    types = types if isinstance(types, tuple) else (types,)
    names = ["None" if t is type(None) else f"a {t.__module__.removeprefix('helpers.')}.{t.__name__}" for t in types]
    msg = f"{name} must be {' or '.join(names)}, got {type(value).__name__}; {hint}."
    require(isinstance(value, types), msg, TypeError)


def integer(name: str, value, minimum: int = 1) -> int:
    """``value`` as an ``int`` if an integer ``>= minimum`` (numpy, torch scalars too; not ``bool``), else raise."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = value.item()
    whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    got = value if whole else f"{value!r} ({type(value).__name__})"
    msg = f"{name} must be an integer >= {minimum}, got {got}. Pass a whole number >= {minimum}."
    require(whole and value >= minimum, msg)
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
    ok = math.isfinite(value) and low <= value <= high and not (low_open and value == low)
    require(ok, f"{name} must be {wanted}, got {value:g}. Pass {wanted}.")
    return value


def flag(name: str, value) -> bool:
    """``value`` as a ``bool`` if it is one (Python or numpy); raise otherwise (``"no"`` would count as true)."""
    got = f"{value!r} ({type(value).__name__})"
    require(isinstance(value, (bool, np.bool_)), f"{name} must be True or False, got {got}. Pass True or False.")
    return bool(value)


def choice(name: str, value, options: tuple) -> None:
    """Raise unless ``value`` is one of ``options`` (strings)."""
    wanted = " or ".join(", ".join(map(repr, options)).rsplit(", ", 1))
    require(isinstance(value, str) and value in options, f"{name} must be {wanted}, got {value!r}.")


def _tensor(name: str, tensor, of: str = "") -> None:
    msg = f"{name} must be a torch.Tensor{of}, got {type(tensor).__name__}. Convert it with torch.as_tensor."
    require(isinstance(tensor, torch.Tensor), msg, TypeError)


def finite(name: str, tensor: torch.Tensor, hint: str = "check what produced it") -> torch.Tensor:
    """Raise if ``tensor`` holds NaN or infinite values; return it unchanged."""
    _tensor(name, tensor)
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s) of {tensor.numel()}; {hint}.")
    return tensor


def shape(name: str, tensor: torch.Tensor, expected: str, ok, finite_hint: str | bool = False) -> torch.Tensor:
    """The tensor if ``ok`` (a bool, or a test: ``lambda t: t.dim() == 4``) and, with ``finite_hint``, finite."""
    _tensor(name, tensor, f" of shape {expected}")
    require(ok(tensor) if callable(ok) else ok, f"{name} must have shape {expected}, got {tuple(tensor.shape)}.")
    if finite_hint:
        finite(name, tensor, *([finite_hint] if isinstance(finite_hint, str) else []))
    return tensor


def device(name: str, value) -> torch.device:
    """``value`` as a ``torch.device`` this machine has; raise otherwise."""
    try:
        dev = torch.device(value)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"{name} must be a device such as 'cpu' or 'cuda', got {value!r} ({exc}).") from exc
    msg = f"{name}={value!r} asks for a GPU, but torch sees none (torch.cuda.is_available() is False). Use 'cpu', "
    msg += "or data.pick_device() to take the GPU only where there is one."
    require(dev.type != "cuda" or torch.cuda.is_available(), msg)
    return dev
