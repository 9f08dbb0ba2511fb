"""Built-in reference optimizers for the batched trainer: what the program language cannot say.

The language has no step counter, so AdamW as users run it (``torch.optim.AdamW``: bias
correction and epsilon) cannot be written as a program. Baselines must be the real thing,
though, or a discovered program "beats AdamW" only by beating a handicapped one. A
``Builtin`` trains in the same batch, from the same init and data, as the programs it is
compared with; its text form (``torch_adamw(eta=0.003, beta1=0.9, ...)``) travels in jobs
and journals like a program's source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from optforge.program.program import Program, parse

NAMES = ("torch_adamw",)
_TEXT = re.compile(r"^\s*(\w+)\s*\((.*)\)\s*$", re.S)


@dataclass(frozen=True)
class Builtin:
    """``torch.optim.AdamW`` with a step size ``eta`` times the task's schedule:
    ``w <- w (1 - lr wd) - lr m_hat / (sqrt(v_hat) + eps)``, bias-corrected moments."""

    name: str = "torch_adamw"
    eta: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in NAMES:
            raise ValueError(f"unknown built-in optimizer {self.name!r} (known: {NAMES})")
        for beta in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, beta) < 1.0:
                raise ValueError(f"{beta} must be in [0, 1), got {getattr(self, beta)}")
        if self.eta <= 0 or self.eps < 0 or self.weight_decay < 0:
            raise ValueError(
                f"eta must be > 0, eps and weight_decay >= 0; got eta={self.eta}, "
                f"eps={self.eps}, weight_decay={self.weight_decay}"
            )

    def source(self) -> str:
        args = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)[1:])
        return f"{self.name}({args})"

    def scaled(self, factor: float) -> Builtin:
        """The same optimizer with its whole update times ``factor`` (its step size and its
        decay: AdamW's update is ``lr * (direction + wd * w)``)."""
        return Builtin(self.name, self.eta * factor, self.beta1, self.beta2, self.eps,
                       self.weight_decay)  # fmt: skip


def parse_optimizer(text: str) -> Program | Builtin:
    """A program's source, or a built-in's text form."""
    match = _TEXT.match(text)
    if match and match.group(1) in NAMES:
        kwargs = {}
        for part in filter(None, (p.strip() for p in match.group(2).split(","))):
            key, _, value = part.partition("=")
            kwargs[key.strip()] = float(value)
        return Builtin(match.group(1), **kwargs)
    return parse(text)


class BuiltinUpdater:
    """Steps the rows of ``theta`` that one built-in optimizer trains (its moments live in the
    rows' ``v1``/``v2``, as a program's states would); the step count is its own."""

    def __init__(self, optimizer: Builtin, rows: list[int], theta, v1, v2):
        self.optimizer, self.rows, self.tensors = optimizer, rows, (theta, v1, v2)
        self.t = 0

    def step(self, alive: list[bool], grad: Tensor, lr: Tensor, step=None) -> None:
        self.t += 1  # its own count (``step``, the programs' input, is the same number)
        rows = [r for r in self.rows if alive[r]]
        if not rows:
            return
        o, (theta, m, v) = self.optimizer, self.tensors
        i = torch.tensor(rows, device=theta.device)
        g = grad[i]
        m_i = m[i].mul_(o.beta1).add_(g, alpha=1 - o.beta1)
        v_i = v[i].mul_(o.beta2).addcmul_(g, g, value=1 - o.beta2)
        step = lr * o.eta
        bias1 = 1 - o.beta1**self.t
        bias2 = 1 - o.beta2**self.t
        denominator = (v_i / bias2).sqrt_().add_(o.eps)
        w = theta[i] * (1 - step * o.weight_decay)
        theta[i] = w - step / bias1 * m_i / denominator
        m[i], v[i] = m_i, v_i
