"""Optimizers: Lion with single-tensor, foreach and fused paths."""

from optforge.optim.lion import Lion, lion

__all__ = ["Lion", "lion"]
