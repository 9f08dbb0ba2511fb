"""Run a program on tensors.

A program runs on flat vectors: ``w g v1 v2`` hold one parameter tensor, or all of an
optimizer's parameter tensors concatenated, with ``Segments`` (layout.py) saying where each
tensor starts, its matrix view and its per-tensor inputs (``hidden``, ``aspect``).
Either way every statement is one torch call over all elements (``run_foreach`` concatenates a
list of tensors, runs once and splits the results), never a Python loop over tensors.

Scalars (``lr``, constants, reductions) are 0-dim tensors, or one value per segment; a
per-segment scalar meeting a tensor is expanded to the tensor's length (``repeat_interleave``).
Arithmetic is done in fp32 (fp64 for fp64 inputs).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Sequence

import torch
from torch import Tensor

from optforge.program.analysis import analyze
from optforge.program.layout import ScalarSegments, Segments
from optforge.program.primitives import CONSTANT_VALUES, LEAVES, PRIMITIVES, SEGMENTED
from optforge.program.program import Program, ProgramError

Kernel = Callable[..., tuple]


@functools.lru_cache(maxsize=4096)
def compile_program(program: Program) -> Kernel:
    """The program as one straight-line Python function ``f(w, g, v1, v2, lr, step, consts,
    seg, scalar_seg, dtype) -> returns``, generated once per program: a step then costs its
    torch calls and little else (an interpreter loop cost ~3x more per statement on small
    tensors). Redundant statements (analysis.py) are left out, so dead states need no memory.

    The generated text holds no program text: variables become ``r0, r1, ...``, primitives
    ``p0, p1, ...`` and literals ``consts[i]``, all bound from validated values.

    A matrix operation is not called but yielded, ``(name, seg, args)``: the kernel is then a
    generator, and whoever runs it computes the operation (``finish``), or gathers the same
    operation from many programs' kernels and computes them in one batched call
    (``lockstep``: the batched trainer's K candidates share one Newton-Schulz chain)."""
    analysis = analyze(program)
    if not analysis.valid:
        raise ProgramError("invalid program: " + "; ".join(analysis.errors))
    names: dict[str, str] = {}
    prims: dict[str, str] = {}
    literals: list[float] = []

    def var(name: str) -> str:
        return names.setdefault(name, f"r{len(names)}")

    def arg(a) -> str:
        if isinstance(a, str) and a in LEAVES and a not in CONSTANT_VALUES:
            return PRIMITIVES[a].code  # a per-tensor input, read from seg (or step)
        if isinstance(a, str) and a not in CONSTANT_VALUES:
            return var(a)
        literals.append(CONSTANT_VALUES[a] if isinstance(a, str) else float(a))
        return f"consts[{len(literals) - 1}]"

    inputs = [var(n) for n in ("w", "g", "v1", "v2", "lr")]
    # scalars that are one value for all segments (from lr and literals, not reductions)
    # broadcast as they are; only per-segment scalars need spreading over the layout
    uniform = {"lr"}
    body = []
    for i, (s, arg_types) in enumerate(zip(program.statements, analysis.arg_types, strict=True)):
        if i in analysis.redundant:
            continue
        prim = PRIMITIVES[s.op]
        fn = prims.setdefault(s.op, f"p{len(prims)}")
        takes_segments = prim.kind in SEGMENTED
        tensor_args = "tensor" in arg_types
        spread = "seg.full" if takes_segments else "seg.expand"
        # scalars that meet tensors are expanded; reductions of scalars reduce nothing
        is_uniform = [not isinstance(a, str) or a in CONSTANT_VALUES or a in uniform
                      for a in s.args]  # fmt: skip
        # a uniform scalar broadcasts by itself, except into a reduction (which needs length)
        spreads = [t == "scalar" and tensor_args and (takes_segments or not u)
                   for t, u in zip(arg_types, is_uniform, strict=True)]  # fmt: skip
        values = [f"{spread}({arg(a)})" if e else arg(a)
                  for a, e in zip(s.args, spreads, strict=True)]  # fmt: skip
        if not takes_segments and all(is_uniform):
            uniform.add(s.target)
        else:
            uniform.discard(s.target)
        if prim.kind == "matrix":  # handed to the caller, which may batch it with others
            body.append(f"    {var(s.target)} = yield ({s.op!r}, seg, ({', '.join(values)},))")
            continue
        if takes_segments:
            values.insert(0, "seg" if tensor_args else "scalar_seg")
        body.append(f"    {var(s.target)} = {fn}({', '.join(values)})")
    outputs = [names[n] if live and n in names else "None"
               for n, live in zip(program.returns, analysis.live_outputs, strict=True)]  # fmt: skip
    source = "\n".join([
        f"def kernel({', '.join(inputs)}, step, consts, seg, scalar_seg, dtype):",
        *body,
        f"    return ({', '.join(outputs)},)",
    ])  # fmt: skip
    scope = {fn: PRIMITIVES[op].fn for op, fn in prims.items()}
    exec(source, scope)  # noqa: S102 -- generated from validated names only, see docstring
    kernel = scope["kernel"]
    kernel.literals = tuple(literals)
    kernel.yields = any(" = yield (" in line for line in body)
    return kernel


@functools.lru_cache(maxsize=65536)
def _constants(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> tuple:
    """Literals become 0-dim tensors once, not at every step (callers never modify them)."""
    return tuple(torch.tensor(v, dtype=dtype, device=device) for v in values)


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
    step: float | Tensor | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """One step on tensors of equal shape: returns ``(update, new_v1, new_v2)``.

    ``v1``/``v2`` may be None when the program does not read them (then the matching output is
    None unless the program writes it from other values). ``segments`` gives the layout of the
    parameter tensors concatenated in ``w`` (default: ``w`` is one tensor, its matrix view from
    its shape). ``step`` (1 at the first step; one value, or one per tensor) is needed only by
    programs that read it.
    """
    dtype = compute_dtype(w.dtype)
    seg = segments or Segments([tuple(w.shape)], w.device)
    lr = torch.as_tensor(lr, dtype=dtype, device=w.device)
    if step is not None:
        step = torch.as_tensor(step, dtype=dtype, device=w.device)
    return prepare(program, dtype, w.device)(w, g, v1, v2, lr, seg, step)


class Prepared:
    """A program ready to step: its kernel, what it reads and its literals as tensors, so that
    a caller stepping many programs many times (the fitness evaluator) pays only the torch
    calls. Call it with ``lr`` already a 0-dim tensor of the compute dtype."""

    def __init__(self, program: Program, dtype: torch.dtype, device: torch.device):
        self.kernel = compile_program(program)
        analysis = analyze(program)
        self.reads = analysis.reads
        self.reads_step = "step" in analysis.inputs
        self.dtype = dtype
        self.consts = _constants(self.kernel.literals, dtype, device)

    def __call__(self, w, g, v1, v2, lr: Tensor, seg: Segments, step: Tensor | None = None):
        given = {"w": w, "g": g, "v1": v1, "v2": v2}
        missing = sorted(n for n in self.reads if given.get(n, 0) is None)
        if missing:
            raise ProgramError(f"the program reads {missing} but none was given")
        self._check_step(step)
        inputs = [None if v is None else _flat(v, self.dtype) for v in given.values()]
        outputs = finish(self.kernel(*inputs, lr, step, self.consts, seg, ScalarSegments,
                                     self.dtype))  # fmt: skip
        return tuple(_full(value, seg, w.shape) for value in outputs)

    def flat(self, w, g, v1, v2, lr: Tensor, seg: Segments, step: Tensor | None = None):
        """The hot path: 1-D inputs of the compute dtype, with every state the program reads
        given; outputs are 1-D (scalars expanded) or None."""
        return finish(self.flat_steps(w, g, v1, v2, lr, seg, step))

    def flat_steps(self, w, g, v1, v2, lr: Tensor, seg: Segments, step: Tensor | None = None):
        """``flat`` as a generator that yields its matrix operations (see ``lockstep``)."""
        self._check_step(step)
        outputs = self.kernel(w, g, v1, v2, lr, step, self.consts, seg, ScalarSegments,
                              self.dtype)  # fmt: skip
        if self.kernel.yields:
            outputs = yield from outputs
        return [v.expand(seg.total_length) if v is not None and v.dim() == 0 else v
                for v in outputs]  # fmt: skip

    def _check_step(self, step: Tensor | None) -> None:
        if step is None and self.reads_step:
            raise ProgramError("the program reads 'step' but no step count was given")


def finish(run):
    """The result of a kernel call, computing each matrix operation it yields as it comes."""
    if not isinstance(run, Generator):
        return run
    try:
        request = next(run)
        while True:
            request = run.send(_apply(*request))
    except StopIteration as done:
        return done.value


def lockstep(runs: Sequence[Generator], joins: dict | None = None) -> list:
    """Run several kernels (generators from ``flat_steps`` or built on it) together: each
    advances to its next matrix operation, then every pending request of one operation is
    computed in one call over all their tensors (a Newton-Schulz chain per matrix shape for
    all the programs at once), and the results are sent back. Returns each run's result.
    ``joins`` keeps the joined layouts from one call to the next (a caller stepping the
    same runs again passes the same dict)."""
    joins = {} if joins is None else joins
    results: list = [None] * len(runs)
    pending = []  # (index, run, request)
    for i, run in enumerate(runs):
        _advance(i, run, None, pending, results)
    while pending:
        by_op: dict[str, list] = {}
        for item in pending:
            by_op.setdefault(item[2][0], []).append(item)
        pending = []
        for items in by_op.values():
            answers = _apply_together([request for _, _, request in items], joins)
            for (i, run, _), answer in zip(items, answers, strict=True):
                _advance(i, run, answer, pending, results)
    return results


def _advance(i, run, answer, pending, results) -> None:
    try:
        request = next(run) if answer is None else run.send(answer)
    except StopIteration as done:
        results[i] = done.value
        return
    pending.append((i, run, request))


def _apply(op: str, seg: Segments, args: tuple) -> Tensor:
    return PRIMITIVES[op].fn(seg, *args)


def _apply_together(requests: list[tuple[str, Segments, tuple]], joins: dict) -> list[Tensor]:
    """One operation for several layouts at once: their tensors joined into one layout."""
    if len(requests) == 1:
        return [_apply(*requests[0])]
    op = requests[0][0]
    layouts = tuple(seg for _, seg, _ in requests)
    key = tuple(id(seg) for seg in layouts)
    if key not in joins:  # held with its parts, so their ids stay theirs
        joins[key] = (layouts, Segments.join(layouts))
    joined = joins[key][1]
    args = [torch.cat([request[2][j] for request in requests]) for j in range(len(requests[0][2]))]
    return list(_apply(op, joined, tuple(args)).split([seg.total_length for seg in layouts]))


@functools.lru_cache(maxsize=4096)
def prepare(program: Program, dtype: torch.dtype, device: torch.device) -> Prepared:
    return Prepared(program, dtype, device)


def _flat(value: Tensor, dtype: torch.dtype) -> Tensor:
    value = value if value.dim() == 1 else value.reshape(-1)
    return value if value.dtype == dtype else value.to(dtype)


def _full(value: Tensor | None, seg: Segments, shape: torch.Size) -> Tensor | None:
    """An output in the parameters' shape (a scalar output is broadcast to every element)."""
    if value is None:
        return None
    if value.dim() == 0:
        value = value.expand(seg.total_length)
    return value if value.shape == shape else value.reshape(shape)


def run_foreach(
    program: Program,
    ws: Sequence[Tensor],
    gs: Sequence[Tensor],
    v1s: Sequence[Tensor] | None,
    v2s: Sequence[Tensor] | None,
    lr: float | Tensor,
    *,
    hidden: Sequence[bool] | None = None,
    step: float | Tensor | None = None,
    segments: Segments | None = None,
) -> tuple[list[Tensor], list[Tensor] | None, list[Tensor] | None]:
    """One step over lists of parameter tensors (each a segment): concatenate, run once,
    split. Reductions (``norm``, ``dot``, ...) and matrix operations stay per tensor,
    ``global_norm`` spans all. ``hidden``: which tensors are hidden matrices (default:
    layout.py's rule); ``segments``: a layout made before, reused (it must match ``ws``)."""
    if not ws:
        return [], [], []
    seg = segments or Segments([tuple(w.shape) for w in ws], ws[0].device, hidden=hidden)
    flat = [_cat(ts) if ts is not None else None for ts in (ws, gs, v1s, v2s)]
    outs = run(program, *flat, lr, segments=seg, step=step)
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
