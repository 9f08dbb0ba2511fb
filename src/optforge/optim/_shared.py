"""Pieces shared by optforge's optimizers: argument checks that name the bad value and the
allowed range, and torch.optim's closure convention."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


def is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def check_lr(lr: Any) -> None:
    """A learning rate is a finite number >= 0, or a one-element floating tensor holding one."""
    if isinstance(lr, Tensor):
        if lr.numel() != 1 or not lr.is_floating_point():
            raise ValueError(
                f"Invalid learning rate: a tensor lr must hold one floating-point value, got "
                f"{lr.dtype}{list(lr.shape)}"
            )
        value = float(lr)
    elif is_number(lr):
        value = float(lr)
    else:
        raise TypeError(f"Invalid learning rate: {lr!r} (must be a float or a one-element tensor)")
    if not (0.0 <= value < math.inf):
        raise ValueError(f"Invalid learning rate: {value!r} (must be a finite number >= 0)")


def closure_loss(closure: Callable[[], Any] | None) -> Any:
    """Re-evaluate the model through ``closure`` with gradients enabled (torch.optim's rule:
    ``step`` itself runs under no_grad); None when there is no closure."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()
