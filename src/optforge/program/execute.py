"""Run a program on tensors.

A program runs on flat vectors: ``w g v1 v2`` hold one parameter tensor, or all of an
optimizer's parameter tensors concatenated, with ``Segments`` saying where each tensor starts.
Either way every statement is one torch call over all elements (``run_foreach`` concatenates a
list of tensors, runs once and splits the results), never a Python loop over tensors.

Scalars (``lr``, constants, reductions) are 0-dim tensors, or one value per segment; a
per-segment scalar meeting a tensor is expanded to the tensor's length (``repeat_interleave``).
Arithmetic is done in fp32 (fp64 for fp64 inputs).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from optforge.program.analysis import analyze
from optforge.program.primitives import CONSTANT_VALUES, PRIMITIVES, ScalarSegments
from optforge.program.program import Program, ProgramError


class Segments:
    """The layout of a flat vector made of several parameter tensors, for reductions."""

    def __init__(self, lengths: Sequence[int], device: torch.device | str = "cpu"):
        self.lengths = [int(n) for n in lengths]
        self.count = len(self.lengths)
        self.total_length = sum(self.lengths)
        self._lengths_t = torch.tensor(self.lengths, device=device)

    def sum(self, x: Tensor) -> Tensor:
        """Per-segment sums of a flat tensor: shape [count]."""
        if self.count == 1:
            return x.sum().reshape(1)
        return torch.segment_reduce(x, "sum", lengths=self._lengths_t)

    def mean(self, x: Tensor) -> Tensor:
        return self.sum(x) / self._lengths_t.to(x.dtype)

    def total(self, x: Tensor) -> Tensor:
        return x.sum()

    def expand(self, x: Tensor) -> Tensor:
        """A per-segment scalar [count] spread over the flat layout [total_length]; a single
        value stays 0-dim (it broadcasts)."""
        if x.dim() == 0 or x.numel() == 1:
            return x.reshape(())
        return torch.repeat_interleave(x, self._lengths_t, output_size=self.total_length)

    def full(self, x: Tensor) -> Tensor:
        """A scalar as a full-length tensor, for reductions that mix scalars and tensors."""
        return self.expand(x).expand(self.total_length)


Step = Callable[[dict[str, Tensor], Segments], None]


@functools.lru_cache(maxsize=4096)
def compile_program(program: Program) -> tuple[Step, ...]:
    """One closure per live statement, with argument types resolved ahead of time; redundant
    statements (analysis.py) are never run, so dead states need no memory."""
    analysis = analyze(program)
    if not analysis.valid:
        raise ProgramError("invalid program: " + "; ".join(analysis.errors))
    steps = []
    for i, (s, out_type, arg_types) in enumerate(
        zip(program.statements, analysis.types, analysis.arg_types, strict=True)
    ):
        if i not in analysis.redundant:
            steps.append(_compile_statement(s.target, s.op, s.args, out_type, arg_types))
    return tuple(steps)


def _compile_statement(target, op, args, out_type, arg_types) -> Step:
    prim = PRIMITIVES[op]
    getters = [_getter(a) for a in args]
    tensor_args = "tensor" in arg_types
    # scalars that meet tensors are expanded; reductions of scalars reduce nothing
    expand = [t == "scalar" and tensor_args for t in arg_types]
    takes_segments = prim.kind in ("reduce", "global")

    def step(env: dict[str, Tensor], seg: Segments) -> None:
        values = [get(env) for get in getters]
        spread = seg.full if takes_segments else seg.expand
        values = [spread(v) if e else v for v, e in zip(values, expand, strict=True)]
        if takes_segments:
            env[target] = prim.fn(seg if tensor_args else ScalarSegments, *values)
        else:
            env[target] = prim.fn(*values)

    return step


def _getter(arg) -> Callable[[dict[str, Tensor]], Tensor]:
    if isinstance(arg, float):
        return lambda env: env["__const__"](arg)
    if arg in CONSTANT_VALUES:
        value = CONSTANT_VALUES[arg]
        return lambda env: env["__const__"](value)
    return lambda env: env[arg]


@functools.lru_cache(maxsize=65536)
def _constant(value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Literals become 0-dim tensors once, not at every step (callers never modify them)."""
    return torch.tensor(value, dtype=dtype, device=device)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def run(
    program: Program,
    w: Tensor,
    g: Tensor,
    v1: Tensor | None,
    v2: Tensor | None,
    lr: float | Tensor,
    *,
    segments: Segments | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """One step on flat tensors of equal shape: returns ``(update, new_v1, new_v2)``.

    ``v1``/``v2`` may be None when the program does not read them (then the matching output is
    None unless the program writes it from other values). ``segments`` gives the lengths of the
    parameter tensors concatenated in ``w`` (default: one tensor).
    """
    steps = compile_program(program)
    dtype = compute_dtype(w.dtype)
    shape = w.shape
    seg = segments or Segments([w.numel()], w.device)
    const = functools.partial(_constant, dtype=dtype, device=w.device)
    env: dict = {"__const__": const, "lr": torch.as_tensor(lr, dtype=dtype, device=w.device)}
    for name, value in (("w", w), ("g", g), ("v1", v1), ("v2", v2)):
        if value is not None:
            env[name] = value.reshape(-1).to(dtype)
    missing = analyze(program).reads - env.keys()
    if missing:
        raise ProgramError(f"the program reads {sorted(missing)} but none was given")
    for step in steps:
        step(env, seg)
    outputs = []
    live = analyze(program).live_outputs
    for name, needed in zip(program.returns, live, strict=True):
        value = env.get(name) if needed else None
        if value is not None:
            value = value.expand(seg.total_length) if value.dim() == 0 else value
            value = value.reshape(shape)
        outputs.append(value)
    return tuple(outputs)


def run_foreach(
    program: Program,
    ws: Sequence[Tensor],
    gs: Sequence[Tensor],
    v1s: Sequence[Tensor] | None,
    v2s: Sequence[Tensor] | None,
    lr: float | Tensor,
) -> tuple[list[Tensor], list[Tensor] | None, list[Tensor] | None]:
    """One step over lists of parameter tensors (each a segment): concatenate, run once,
    split. Reductions (``norm``, ``dot``, ...) stay per tensor, ``global_norm`` spans all."""
    if not ws:
        return [], [], []
    seg = Segments([w.numel() for w in ws], ws[0].device)
    flat = [_cat(ts) if ts is not None else None for ts in (ws, gs, v1s, v2s)]
    outs = run(program, *flat, lr, segments=seg)
    shapes = [w.shape for w in ws]
    return tuple(
        None
        if out is None
        else [p.reshape(s) for p, s in zip(out.split(seg.lengths), shapes, strict=True)]
        for out in outs
    )


def _cat(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def finite(*tensors: Tensor | None) -> bool:
    """True when every value is finite (one reduction per tensor)."""
    return all(t is None or bool(torch.isfinite(t).all()) for t in tensors)


__all__ = ["Segments", "compile_program", "compute_dtype", "finite", "run", "run_foreach"]
