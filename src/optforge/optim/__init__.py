"""Optimizers: Lion with single-tensor, foreach and fused paths."""

from optforge.optim.kernels.cpu import KernelBuildError
from optforge.optim.lion import Lion, lion

__all__ = ["KernelBuildError", "Lion", "lion"]
