"""Abstract execution: what a program does, found without running it on data.

- Types: every value is a ``tensor`` (the parameter's shape) or a ``scalar``; ``w g v1 v2`` are
  tensors, ``lr``, constants and the per-tensor inputs (``hidden aspect step``) are scalars,
  reductions give scalars, matrix operations take and give tensors, and elementwise results
  are tensors if any argument is. All values share the parameter's floating dtype, so a shape
  error is the only type error: a program whose update or returned states are scalars, that
  gives a matrix operation a scalar, or that reads a name never assigned, is invalid.
- Redundancy, across steps: a statement is live only if its value reaches ``update``, directly
  or through a state that a live statement reads at the next step. A state written but never
  read (before being overwritten next step) is dead, and so is everything only it needs.
- Structural hash: a hash of the live dataflow graph, so programs differing only in variable
  names, the order of independent statements, dead code, or the argument order of commutative
  operations hash alike.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Literal

from optforge.program.primitives import INPUT_NAMES, LEAVES, PRIMITIVES
from optforge.program.program import INPUTS, STATES, Program

Type = Literal["tensor", "scalar"]
_INPUT_TYPES: dict[str, Type] = {"w": "tensor", "g": "tensor", "v1": "tensor", "v2": "tensor",
                                 "lr": "scalar"}  # fmt: skip


@dataclass(frozen=True)
class Analysis:
    """The result of :func:`analyze`; ``valid`` is False when ``errors`` is not empty."""

    errors: tuple[str, ...]
    types: tuple[Type, ...]  # the type each statement assigns, in statement order
    redundant: frozenset[int]  # indices of statements whose result is never used
    reads: frozenset[str]  # states (v1, v2) that live statements read
    live_outputs: tuple[bool, bool, bool]  # which of (update, v1, v2) matter
    structural_hash: str
    arg_types: tuple[tuple[Type, ...], ...] = field(repr=False, default=())
    inputs: frozenset[str] = frozenset()  # per-tensor inputs (hidden, aspect, step) live
    shaped: bool = False  # live statements use a matrix operation or a per-tensor input

    @property
    def valid(self) -> bool:
        return not self.errors

    @property
    def redundant_fraction(self) -> float:
        return len(self.redundant) / len(self.types) if self.types else 0.0


@functools.lru_cache(maxsize=65536)
def analyze(program: Program) -> Analysis:
    """Type-check ``program``, find its redundant statements and hash its live structure."""
    errors, types, arg_types = _infer_types(program)
    if errors:
        return Analysis(tuple(errors), tuple(types), frozenset(), frozenset(),
                        (False, False, False), "", tuple(arg_types))  # fmt: skip
    live, reads, live_outputs = _liveness(program)
    redundant = frozenset(range(len(program))) - live
    used = [program.statements[i] for i in sorted(live)]
    inputs = frozenset(a for s in used for a in s.args if a in INPUT_NAMES)
    shaped = bool(inputs) or any(PRIMITIVES[s.op].kind == "matrix" for s in used)
    return Analysis(
        errors=(),
        types=tuple(types),
        redundant=redundant,
        reads=frozenset(reads),
        live_outputs=live_outputs,
        structural_hash=_structural_hash(program, live_outputs),
        arg_types=tuple(arg_types),
        inputs=inputs,
        shaped=shaped,
    )


def _infer_types(program: Program) -> tuple[list[str], list[Type], list[tuple[Type, ...]]]:
    env: dict[str, Type] = dict(_INPUT_TYPES)
    errors: list[str] = []
    types: list[Type] = []
    arg_types: list[tuple[Type, ...]] = []
    for i, s in enumerate(program.statements):
        args: list[Type] = []
        for a in s.args:
            if isinstance(a, float) or a in LEAVES:
                args.append("scalar")
            elif a in env:
                args.append(env[a])
            else:
                errors.append(f"statement {i + 1} ({s.source()}): {a!r} is not defined")
                args.append("tensor")
        kind = PRIMITIVES[s.op].kind
        if kind == "matrix" and "scalar" in args:
            errors.append(
                f"statement {i + 1} ({s.source()}): {s.op} acts on each tensor's matrix, "
                f"not on the scalar {s.args[args.index('scalar')]!r}"
            )
        if kind == "reduce":
            out: Type = "scalar"
        else:  # elementwise and global results broadcast over their arguments
            out = "tensor" if "tensor" in args else "scalar"
        env[s.target] = out
        types.append(out)
        arg_types.append(tuple(args))
    for slot, name in zip(("update", "v1", "v2"), program.returns, strict=True):
        if name not in env:
            errors.append(f"returned {slot} {name!r} is not defined")
        elif env[name] != "tensor":
            errors.append(
                f"returned {slot} {name!r} is a scalar; it must have the parameter's shape"
            )
    return errors, types, arg_types


def _liveness(program: Program) -> tuple[frozenset[int], set[str], tuple[bool, bool, bool]]:
    """Live statements, the states they read, and which outputs matter, to a fixed point:
    start from ``update``; a state output matters once a live statement reads that state."""
    needed = {0}  # output slots: 0 update, 1 v1, 2 v2
    while True:
        live, reads = _backward(program, needed)
        more = {1 + STATES.index(s) for s in reads} - needed
        if not more:
            return live, reads, tuple(i in needed for i in range(3))
        needed |= more


def _backward(program: Program, slots: set[int]) -> tuple[frozenset[int], set[str]]:
    want = {program.returns[i] for i in slots}
    live: set[int] = set()
    for i in range(len(program) - 1, -1, -1):
        s = program.statements[i]
        if s.target in want:
            want.discard(s.target)
            live.add(i)
            want.update(a for a in s.args if isinstance(a, str) and a not in LEAVES)
    return frozenset(live), {s for s in STATES if s in want}


def _structural_hash(program: Program, live_outputs: tuple[bool, bool, bool]) -> str:
    """Hash the expression DAG behind each live output (names and order disappear)."""
    env: dict[str, str] = {name: name for name in INPUTS}
    memo: dict[str, str] = {}

    def node(op: str, args: list[str]) -> str:
        if PRIMITIVES[op].commutative:
            args = sorted(args)
        key = f"{op}({','.join(args)})"
        if key not in memo:  # a short digest keeps deep DAGs linear in size
            memo[key] = hashlib.blake2b(key.encode(), digest_size=10).hexdigest()
        return memo[key]

    for s in program.statements:
        args = [env.get(a, a) if isinstance(a, str) else repr(a) for a in s.args]
        env[s.target] = args[0] if s.op == "identity" else node(s.op, args)
    outputs = [
        env[n] if live else "-" for n, live in zip(program.returns, live_outputs, strict=True)
    ]
    return hashlib.sha256("|".join(outputs).encode()).hexdigest()[:32]
