"""Optional packages: the extras of ``pip install 'optforge[...]'`` and the one line a user sees
when a feature's package is missing.

The core (``import optforge``, ``optforge.Lion``, the program language, ``ProgramOptimizer``,
the ``optforge`` command itself) needs torch, numpy and rich only. Everything else is imported
where it is used, through :func:`require` (or checked up front with :func:`check` before long
work), so a missing package ends in :class:`MissingExtra`, whose message names what to install.
The command line prints it as one ``error:`` line and exits with 2.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

# extra -> what it brings (README's install section says the same)
EXTRAS = {
    "plots": "matplotlib: every PNG optforge writes (search, study, bench precision/fidelity)",
    "data": "scikit-learn: the digits dataset of the test tasks",
    "search": "plots + data: what `optforge search` and `optforge study` use",
    "cluster": "Ray: `optforge search --executor ray`, on this machine or a cluster",
    "jax": "JAX and optax: running programs exported with `--format optax`",
    "dashboard": "plotly: the plots of `optforge dashboard` (its plotly.min.js, served locally)",
    "all": "search + cluster + jax + dashboard",
    "test": "all + pytest, ruff, hypothesis, selenium and Triton (its CPU interpreter runs the "
    "kernels)",
}


class MissingExtra(ImportError):
    """An optional package a feature needs is not installed; ``str(e)`` is the whole message:
    what needs which package, and the command that installs it."""


def message(feature: str, package: str, extra: str | None = None, install: str | None = None,
            reason: str | None = None) -> str:  # fmt: skip
    """``"{feature} needs {package}: pip install 'optforge[{extra}]'"`` (or ``install``)."""
    if extra is not None and extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r} (extras: {', '.join(EXTRAS)})")
    how = install or f"pip install 'optforge[{extra}]'"
    broken = f" (it does not import: {reason})" if reason else ""
    return f"{feature} needs {package}{broken}: {how}"


def require(module: str, extra: str | None, feature: str, *, package: str | None = None,
            install: str | None = None) -> ModuleType:  # fmt: skip
    """Import ``module`` and return it, or raise :class:`MissingExtra` saying that ``feature``
    needs ``package`` (default: the module's top-level name) and that ``extra`` (or the
    ``install`` command, for packages outside the extras) brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.partition(".")[0]
        missing = (e.name or "").partition(".")[0]
        reason = None if missing == top else str(e)  # installed, but one of its imports fails
        raise MissingExtra(
            message(feature, package or top, extra, install, reason), name=module
        ) from None


def check(module: str, extra: str | None, feature: str, *, package: str | None = None,
          install: str | None = None) -> None:  # fmt: skip
    """:func:`require` without importing (a spec look-up): for a check before long work, in
    the process that will not use the package itself."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        top = module.partition(".")[0]
        raise MissingExtra(message(feature, package or top, extra, install), name=module)


def pyplot(feature: str) -> ModuleType:
    """``matplotlib.pyplot`` drawing to files (the Agg backend, no display), or
    :class:`MissingExtra` naming ``feature`` and the ``plots`` extra."""
    matplotlib = require("matplotlib", "plots", feature)
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")
