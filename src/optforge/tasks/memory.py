"""Candidates per training batch that fit the device.

On a GPU the whole generation (times the fitness's multipliers and seeds) is meant to train as
one batched model; how many rows fit depends on the task, the program and the GPU, so it is
found, not configured: a batch starts with every row (or the user's ``batch=N``), is halved
after an out-of-memory error, and the size that fitted is remembered per (task, device) for
later batches. A candidate's fitness does not depend on its batch, so a retried half gives the
same numbers. The CUDA allocator is capped at a stated fraction of the device
(``OPTFORGE_GPU_MEMORY_FRACTION``, default 0.9) so the search leaves room for others.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

FRACTION_ENV = "OPTFORGE_GPU_MEMORY_FRACTION"
DEFAULT_FRACTION = 0.9

T = TypeVar("T")
R = TypeVar("R")
_fitted: dict[tuple[str, str], int] = {}  # (task, device) -> rows that fitted last time
_capped: set[str] = set()


def memory_fraction() -> float:
    """The share of a GPU's memory a search may allocate, from the environment."""
    text = os.environ.get(FRACTION_ENV, "").strip()
    if not text:
        return DEFAULT_FRACTION
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise ValueError(f"{FRACTION_ENV}={text!r}: must be a number in (0, 1], e.g. 0.8")
    return value


def cap(device: str | torch.device) -> None:
    """Cap this process's CUDA allocator on ``device`` (once); nothing on other devices."""
    device = torch.device(device)
    if device.type != "cuda" or str(device) in _capped:
        return
    torch.cuda.set_per_process_memory_fraction(memory_fraction(), device)
    _capped.add(str(device))


def in_fitting_batches(rows: Sequence[T], run: Callable[[Sequence[T]], list[R]],
                       key: tuple[str, str], limit: int | None = None) -> list[R]:  # fmt: skip
    """``run`` over consecutive parts of ``rows``, each as large as fits (at most ``limit``);
    results in row order. One row that does not fit re-raises the out-of-memory error."""
    size = min(limit or len(rows), _fitted.get(key, len(rows))) or 1
    out: list[R] = []
    start = 0
    while start < len(rows):
        part = rows[start : start + size]
        try:
            out += run(part)
        except torch.OutOfMemoryError:
            if len(part) == 1:
                raise
            size = max(1, len(part) // 2)
            _fitted[key] = size
            _release(key[1])
            continue
        start += len(part)
    return out


def _release(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def forget() -> None:
    """Drop the remembered sizes (tests; a process that changes GPUs)."""
    _fitted.clear()
