"""Behavioural fingerprints: programs that compute the same updates hash alike.

The fingerprint runs a program for a few steps on fixed, seeded random inputs (two parameter
tensors, so per-tensor and global reductions differ; random initial states, so behaviour at
the all-zero start does not decide equivalence) in float64, and hashes the updates rounded to
30 significant bits. Functionally equivalent programs written differently (``m / sqrt(m*m)``
and ``sign(m)``, reordered or renamed statements, dead code) get the same fingerprint, so the
search can reuse a fitness; NaN and inf are hashed as such.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import torch

from optforge.program.analysis import analyze
from optforge.program.execute import Segments, run
from optforge.program.program import Program, ProgramError

STEPS = 3
LENGTHS = (13, 19)
LRS = (1.0, 0.7, 0.4)
MANTISSA_BITS = 30


@functools.cache
def _inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(20230213)  # the paper's arXiv date
    n = sum(LENGTHS)

    def normal(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    return {
        "w": normal(n),
        "v1": normal(n),
        "v2": torch.rand(n, generator=gen, dtype=torch.float64) + 0.5,
        "g": normal(STEPS, n),
    }


@functools.lru_cache(maxsize=65536)
def fingerprint(program: Program) -> str:
    """A hex digest of the program's updates over STEPS steps on fixed inputs."""
    analysis = analyze(program)
    if not analysis.valid:
        raise ProgramError("cannot fingerprint an invalid program: " + "; ".join(analysis.errors))
    x = _inputs()
    seg = Segments(LENGTHS)
    w, v1, v2 = x["w"].clone(), x["v1"].clone(), x["v2"].clone()
    digest = hashlib.sha256()
    with np.errstate(all="ignore"):
        for t in range(STEPS):
            update, new_v1, new_v2 = run(program, w, x["g"][t], v1, v2, LRS[t], segments=seg)
            digest.update(_rounded(update.numpy()))
            w = w - update
            v1 = new_v1 if new_v1 is not None else v1
            v2 = new_v2 if new_v2 is not None else v2
    return digest.hexdigest()[:32]


def _rounded(x: np.ndarray) -> bytes:
    """Round to MANTISSA_BITS significant bits; NaN and +-inf keep their own codes."""
    mantissa, exponent = np.frexp(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0))
    code = np.round(mantissa * 2.0**MANTISSA_BITS).astype(np.int64)
    flags = np.where(np.isnan(x), 1, np.where(np.isposinf(x), 2, np.where(np.isneginf(x), 3, 0)))
    exponent = np.where(code == 0, 0, exponent)  # +-0 and tiny values alike
    return np.stack([code, exponent.astype(np.int64), flags.astype(np.int64)]).tobytes()
