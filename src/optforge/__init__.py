"""optforge: discover optimizers by evolutionary program search, and ship the best one (Lion)."""

from optforge.optim import Lion, ProgramOptimizer, hidden_groups

__all__ = ["Lion", "ProgramOptimizer", "__version__", "hidden_groups"]
__version__ = "0.1.0"
