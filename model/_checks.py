"""Argument checks shared by the public functions of ``model``: each error names the argument, what was
expected and what was found."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def check_tensor(name: str, value: object, *, ndim: int | None = None, dtype: torch.dtype | None = None,
                 floating: bool = False) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, found {type(value).__name__}")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, found shape {tuple(value.shape)}")
    if dtype is not None and value.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype}, found {value.dtype}")
    if floating and not value.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, found {value.dtype}")
    return value


def check_int(name: str, value: object, *, low: int, high: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name}: expected an integer, found {value!r} ({type(value).__name__})")
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name}: expected an integer {bound}, found {value}")
    return value


def check_float(name: str, value: object, *, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name}: expected a number, found {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name}: expected a finite number in [{lo}, {hi}], found {value}")
    return value


def check_labels(name: str, labels: Tensor, num_classes: int) -> None:
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"{name}: expected class indices in [0, {num_classes - 1}], "
                         f"found values from {int(labels.min())} to {int(labels.max())}")
