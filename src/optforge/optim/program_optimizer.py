"""Any optimizer program as a ``torch.optim.Optimizer``."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from optforge.optim._shared import check_lr, closure_loss
from optforge.program import execute
from optforge.program.analysis import analyze
from optforge.program.program import Program, ProgramError, parse

NONFINITE = ("raise", "skip")


class NonFiniteUpdateError(FloatingPointError):
    """A program produced NaN or inf; raised before anything was modified."""


class ProgramOptimizer(Optimizer):
    """Step parameters with an optimizer program: ``w <- w - update``.

    Args:
        params: parameters or parameter groups (a group may carry its own ``program``).
        program: a :class:`~optforge.program.Program` or its source text. Its ``lr`` input is
            the group's ``lr`` (schedulers scale it); its constants are its hyper-parameters.
        lr: learning rate handed to the program.
        nonfinite: what to do when the update or new state holds NaN/inf: ``"raise"`` a
            :class:`NonFiniteUpdateError` or ``"skip"`` the step; in both cases parameters and
            state are left as they were, and ``skipped_steps`` counts the skipped ones.
        hidden: the program's per-tensor input ``hidden`` for the tensors of a group: True
            (hidden weight matrices, where Muon-like updates go), False, or None (default):
            decided per tensor by shape, a matrix view with at least 2 rows and 2 columns.
            The shape rule cannot tell embeddings and the output head from hidden layers;
            :func:`hidden_groups` labels a model's parameters by the full rule.

    State ``v1``/``v2`` (zeros at start) is allocated only for states the program reads; the
    step count (``state[p]["step"]``, the program's ``step`` input) is kept as torch.optim
    keeps it. The program is stored as source text in the param groups, so it survives
    ``state_dict``.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        program: Program | str,
        lr: float | Tensor = 1.0,
        *,
        nonfinite: str = "raise",
        hidden: bool | None = None,
    ) -> None:
        defaults = dict(lr=lr, program=_source(program), nonfinite=nonfinite, hidden=hidden)
        _check(defaults)
        super().__init__(params, defaults)
        self.skipped_steps = 0

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "program" in param_group:
            param_group = {**param_group, "program": _source(param_group["program"])}
        _check({**self.defaults, **param_group})
        super().add_param_group(param_group)
        for p in self.param_groups[-1]["params"]:
            if not (p.is_floating_point()):
                self.param_groups.pop()
                raise TypeError(
                    f"ProgramOptimizer optimizes floating-point tensors; got a parameter of "
                    f"dtype {p.dtype} and shape {tuple(p.shape)}"
                )

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # checkpoints from before per-tensor inputs
            group.setdefault("hidden", None)

    def program(self, group: int = 0) -> Program:
        return _parsed(self.param_groups[group]["program"])

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = closure_loss(closure)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if any(p.grad.is_sparse for p in params):
                raise TypeError("ProgramOptimizer does not support sparse gradients")
            program = _parsed(group["program"])
            analysis = analyze(program)
            reads = analysis.reads
            states = {name: [self._state(p, name) for p in params] if name in reads else None
                      for name in ("v1", "v2")}  # fmt: skip
            steps = [self._step(p) for p in params]
            # this step's count, for programs that read it; stored once the step is taken
            step = torch.stack(steps) + 1 if "step" in analysis.inputs else None
            update, v1, v2 = execute.run_foreach(
                program, params, [p.grad for p in params], states["v1"], states["v2"],
                float(group["lr"]), hidden=_hidden(group), step=step,
            )  # fmt: skip
            if not execute.finite(*[torch.cat([t.reshape(-1) for t in ts])
                                    for ts in (update, v1, v2) if ts]):  # fmt: skip
                if group["nonfinite"] == "raise":
                    raise NonFiniteUpdateError(
                        "the program produced NaN or inf; parameters and state are unchanged "
                        "(pass nonfinite='skip' to skip such steps)"
                    )
                self.skipped_steps += 1
                continue
            torch._foreach_sub_(
                params, [u.to(p.dtype) for u, p in zip(update, params, strict=True)]
            )
            for name, new in (("v1", v1), ("v2", v2)):
                if name in reads:
                    torch._foreach_copy_(states[name], new)
            torch._foreach_add_(steps, 1.0)
        return loss

    def _step(self, p: Tensor) -> Tensor:
        state = self.state[p]
        if "step" not in state:
            state["step"] = torch.tensor(0.0, dtype=torch.float32, device=p.device)
        return state["step"]

    def _state(self, p: Tensor, name: str) -> Tensor:
        state = self.state[p]
        if name not in state:
            state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state[name]


@functools.lru_cache(maxsize=256)
def _parsed(source: str) -> Program:
    return parse(source)


def _source(program: Program | str) -> str:
    if isinstance(program, Program):
        return program.source()
    if isinstance(program, str):
        return parse(program).source()
    raise TypeError(f"program must be a Program or its source text, got {type(program).__name__}")


def _hidden(group: dict[str, Any]) -> list[bool] | None:
    """One flag per tensor of the group when it says, else None (the shape rule)."""
    hidden = group.get("hidden")
    if hidden is None:
        return None
    return [bool(hidden)] * sum(p.grad is not None for p in group["params"])


def _check(group: dict[str, Any]) -> None:
    check_lr(group["lr"])
    if group.get("hidden") not in (None, True, False):
        raise ValueError(f"Invalid hidden: {group['hidden']!r} (must be True, False or None)")
    if group["nonfinite"] not in NONFINITE:
        raise ValueError(f"Invalid nonfinite: {group['nonfinite']!r} (must be one of {NONFINITE})")
    analysis = analyze(_parsed(group["program"]))
    if not analysis.valid:
        raise ProgramError("invalid program: " + "; ".join(analysis.errors))
