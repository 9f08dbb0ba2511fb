"""Optimizers: Lion with single-tensor, foreach and fused paths."""

from optforge.optim.hidden import hidden_groups
from optforge.optim.kernels.cpu import KernelBuildError
from optforge.optim.lion import Lion, lion
from optforge.optim.program_optimizer import NonFiniteUpdateError, ProgramOptimizer

__all__ = [
    "KernelBuildError",
    "Lion",
    "NonFiniteUpdateError",
    "ProgramOptimizer",
    "hidden_groups",
    "lion",
]
