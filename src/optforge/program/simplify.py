"""Automatic simplification: the paper's by-hand clean-up of discovered programs, as code.

``simplify`` rewrites a program into a smaller canonical program that computes the same
updates (tests check the fingerprint is unchanged):

1. SSA: every assignment gets its own name, so rewrites never confuse two values;
2. to a fixed point: copy propagation, constant folding, and algebraic rewrites
   (``x / sqrt(x*x)``, ``x / sqrt(square(x))``, ``x / abs(x)`` -> ``sign(x)``;
   ``sign(a*x)`` -> ``sign(x)`` for a constant ``a > 0``;
   ``sign(sign(x))`` -> ``sign(x)``; ``orthogonalize(c*x)``, ``orthogonalize(x/c)`` ->
   ``orthogonalize(x)`` for a constant ``c > 0`` (it divides by the norm first);
   ``interp(x, interp(x, y, a), b)`` -> ``interp(x, y, a*b)``
   (two EMAs of the same input are one EMA); ``interp(x, y, 0)`` -> ``x``,
   ``interp(x, y, 1)`` -> ``y``; ``--x`` -> ``x``; ``x*1``, ``x/1``, ``x+0``, ``x-0`` -> ``x``;
   ``x*-1`` -> ``-x``; ``0-x`` -> ``-x``; ``x*x`` -> ``square(x)``), and common
   subexpressions merged;
3. dead code and dead state removal (analysis.py's cross-step liveness); an unused state
   slot returns its input unchanged, so no memory is spent on it;
4. canonical order and names: statements in a deterministic topological order keyed by their
   structure, temporaries ``t1, t2, ...``, outputs named ``update``, ``v1``, ``v2`` where
   that does not shadow a later read.

Rewrites that change values only where the original produced NaN (``x / abs(x)`` at ``x = 0``)
are applied: the simplified program is defined where the original was.
"""

from __future__ import annotations

import hashlib
import heapq
import math

import torch

from optforge.program.analysis import analyze
from optforge.program.layout import ScalarSegments
from optforge.program.primitives import CONSTANT_VALUES, LEAVES, PRIMITIVES
from optforge.program.program import INPUTS, MAX_LITERAL, STATES, Arg, Program, Statement

_MAX_PASSES = 100


def simplify(program: Program) -> Program:
    """A smaller, canonical program with the same behaviour (see the module docstring)."""
    analysis = analyze(program)
    if not analysis.valid:
        return program
    graph = _Graph.from_program(program)
    for _ in range(_MAX_PASSES):
        if not graph.rewrite_once():
            break
    return graph.emit()


class _Graph:
    """SSA form: ``defs[name] = (op, args)`` in definition order, and the three outputs."""

    def __init__(self, defs: dict[str, tuple[str, tuple[Arg, ...]]], outputs: list[Arg]):
        self.defs = defs
        self.outputs = outputs

    @classmethod
    def from_program(cls, program: Program) -> _Graph:
        current: dict[str, Arg] = {name: name for name in INPUTS}
        defs: dict[str, tuple[str, tuple[Arg, ...]]] = {}
        for i, s in enumerate(program.statements):
            args = tuple(current.get(a, a) if isinstance(a, str) else a for a in s.args)
            name = f"_{i}"
            defs[name] = (s.op, args)
            current[s.target] = name
        return cls(defs, [current[n] for n in program.returns])

    # -- rewriting ----------------------------------------------------------------------------

    def rewrite_once(self) -> bool:
        """One pass of every rewrite over the graph; True when something changed."""
        alias: dict[str, Arg] = {}
        seen: dict[tuple, str] = {}  # common subexpressions
        self._types: dict[str, str] = {}
        changed = False
        for name, (op, args) in list(self.defs.items()):
            args = tuple(_follow(alias, a) for a in args)
            new = self._rewrite(op, args)
            if not isinstance(new, tuple) and self._type(new) != self._type_of(op, args):
                new = (op, args)  # never let a tensor-valued statement become a scalar
            if isinstance(new, tuple):
                key = _cse_key(*new)
                if key in seen:
                    new = seen[key]
                else:
                    seen[key] = name
            if isinstance(new, tuple):
                changed |= new != self.defs[name]
                self.defs[name] = new
            else:  # the value is another value: alias it away
                alias[name] = new
                del self.defs[name]
                changed = True
        self.outputs = [_follow(alias, o) for o in self.outputs]
        return changed

    def _def(self, arg: Arg | None) -> tuple[str, tuple[Arg, ...]] | None:
        return self.defs.get(arg) if isinstance(arg, str) else None

    def _type(self, arg: Arg) -> str:
        if isinstance(arg, float) or arg in LEAVES or arg == "lr":
            return "scalar"
        if arg in INPUTS:
            return "tensor"
        if arg not in self._types:
            self._types[arg] = self._type_of(*self.defs[arg])
        return self._types[arg]

    def _type_of(self, op: str, args: tuple[Arg, ...]) -> str:
        if PRIMITIVES[op].kind == "reduce":
            return "scalar"
        return "tensor" if any(self._type(a) == "tensor" for a in args) else "scalar"

    def _rewrite(self, op: str, args: tuple[Arg, ...]) -> tuple[str, tuple[Arg, ...]] | Arg:
        if op == "identity":
            return args[0]
        folded = _fold(op, args)
        if folded is not None:
            return folded
        x = args[0]
        y = args[1] if len(args) > 1 else None
        dx, dy = self._def(x), self._def(y)
        if op == "negative" and dx and dx[0] == "negative":
            return dx[1][0]
        if op == "mul" and x == y and isinstance(x, str):
            return ("square", (x,))
        if op == "mul":
            for a, b in ((x, y), (y, x)):
                if a == 1.0:
                    return b
                if a == -1.0:
                    return ("negative", (b,))
        if op == "div" and y == 1.0:
            return x
        if op == "add":
            for a, b in ((x, y), (y, x)):
                if a == 0.0:
                    return b
        if op == "sub" and y == 0.0:
            return x
        if op == "sub" and x == 0.0:
            return ("negative", (y,))
        if op == "div" and dy and self._is_abs_of(dy, x):
            return ("sign", (x,))
        if op == "sign" and dx and dx[0] == "sign":
            return x
        if op == "sign" and dx and dx[0] == "mul":
            a, b = dx[1]
            const, other = (a, b) if isinstance(a, float) else (b, a)
            if isinstance(const, float) and const > 0.0:
                return ("sign", (other,))
        if op == "orthogonalize" and dx and self._positive_multiple(dx) is not None:
            return ("orthogonalize", (self._positive_multiple(dx),))
        if op == "interp":
            return self._rewrite_interp(*args)
        return (op, args)

    @staticmethod
    def _positive_multiple(d: tuple[str, tuple[Arg, ...]]) -> Arg | None:
        """``x`` when ``d`` is ``c * x``, ``x * c`` or ``x / c`` for a literal ``c > 0``."""
        op, args = d
        if op == "mul":
            a, b = args
            const, other = (a, b) if isinstance(a, float) else (b, a)
            if isinstance(const, float) and const > 0.0 and not isinstance(other, float):
                return other
        if op == "div" and isinstance(args[1], float) and args[1] > 0.0:
            return args[0] if not isinstance(args[0], float) else None
        return None

    def _rewrite_interp(self, x: Arg, y: Arg, a: Arg) -> tuple[str, tuple[Arg, ...]] | Arg:
        if a == 0.0:
            return x
        if a == 1.0:
            return y
        dy = self._def(y)
        if dy and dy[0] == "interp" and dy[1][0] == x:
            inner_y, inner_a = dy[1][1], dy[1][2]
            if isinstance(a, float) and isinstance(inner_a, float):
                return ("interp", (x, inner_y, _tidy(inner_a * a)))  # two EMAs of x are one
        return ("interp", (x, y, a))

    def _is_abs_of(self, d: tuple[str, tuple[Arg, ...]], x: Arg) -> bool:
        """Is ``d`` a definition of |x|: abs(x), sqrt(x*x) or sqrt(square(x))?"""
        op, args = d
        if op == "abs":
            return args[0] == x
        inner = self._def(args[0]) if op == "sqrt" else None
        if inner and inner[0] == "square":
            return inner[1][0] == x
        return bool(inner and inner[0] == "mul" and inner[1] == (x, x))

    # -- output -------------------------------------------------------------------------------

    def emit(self) -> Program:
        self._prune()
        keys = self._structure_keys()
        return self._named_program(self._canonical_order(keys), keys)

    def _prune(self) -> None:
        """Drop dead statements and dead states (analysis.py's cross-step liveness); a dead
        state slot returns its input unchanged."""
        program = Program(tuple(Statement(n, op, args) for n, (op, args) in self.defs.items()),
                          tuple(self.outputs))  # fmt: skip
        analysis = analyze(program)
        for i, state in enumerate(STATES, start=1):
            if not analysis.live_outputs[i]:
                self.outputs[i] = state
        dead = {program.statements[i].target for i in analysis.redundant}
        self.defs = {n: d for n, d in self.defs.items() if n not in dead}

    def _canonical_order(self, keys: dict[str, str]) -> list[str]:
        """A topological order, ties broken by structure; statements producing a state
        output go as late as they can, so they can take the state's name."""
        state_outputs = set(self.outputs[1:])
        users: dict[str, list[str]] = {n: [] for n in self.defs}
        waiting = {}
        for n, (_, args) in self.defs.items():
            deps = {a for a in args if isinstance(a, str) and a in self.defs}
            waiting[n] = len(deps)
            for d in deps:
                users[d].append(n)
        ready = [(n in state_outputs, keys[n], n) for n, k in waiting.items() if k == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            n = heapq.heappop(ready)[2]
            order.append(n)
            for u in users[n]:
                waiting[u] -= 1
                if waiting[u] == 0:
                    heapq.heappush(ready, (u in state_outputs, keys[u], u))
        return order

    def _structure_keys(self) -> dict[str, str]:
        keys: dict[str, str] = {}
        for n, (op, args) in self.defs.items():
            parts = [keys.get(a, a) if isinstance(a, str) else repr(a) for a in args]
            if PRIMITIVES[op].commutative:
                parts.sort()
            text = f"{op}({','.join(parts)})"
            keys[n] = hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
        return keys

    def _named_program(self, order: list[str], keys: dict[str, str]) -> Program:
        """Temporaries t1, t2, ...; an output takes its slot's name (update, v1, v2) unless a
        later statement still reads the old state of that name."""
        last_read = {s: -1 for s in STATES}
        for i, n in enumerate(order):
            for a in self.defs[n][1]:
                if a in last_read:
                    last_read[a] = i
        rename: dict[str, str] = {}
        statements, temps = [], 0
        for i, n in enumerate(order):
            name = next(
                (slot for slot, out in zip(("update", *STATES), self.outputs, strict=True)
                 if out == n and slot not in rename.values()
                 and (slot == "update" or last_read[slot] <= i)),
                None,
            )  # fmt: skip
            if name is None:
                temps += 1
                name = f"t{temps}"
            rename[n] = name
            op, args = self.defs[n]
            if PRIMITIVES[op].commutative:  # one argument order: names by structure, then literals
                args = tuple(
                    sorted(args, key=lambda a: (isinstance(a, float), keys.get(a, str(a))))
                )
            args = tuple(rename.get(a, a) if isinstance(a, str) else a for a in args)
            statements.append(Statement(name, op, args))
        returns = tuple(rename.get(o, o) for o in self.outputs)
        return Program(tuple(statements), returns)


def _cse_key(op: str, args: tuple[Arg, ...]) -> tuple:
    if PRIMITIVES[op].commutative:
        return (op, tuple(sorted(args, key=repr)))
    return (op, args)


def _follow(alias: dict[str, Arg], arg: Arg) -> Arg:
    while isinstance(arg, str) and arg in alias:
        arg = alias[arg]
    return arg


def _fold(op: str, args: tuple[Arg, ...]) -> float | None:
    """The value of an operation on constants, when it is a finite literal."""
    if not all(isinstance(a, float) or a in CONSTANT_VALUES for a in args):
        return None
    if PRIMITIVES[op].kind == "matrix":
        return None
    values = [torch.tensor(a if isinstance(a, float) else CONSTANT_VALUES[a], dtype=torch.float64)
              for a in args]  # fmt: skip
    prim = PRIMITIVES[op]
    if prim.kind in ("reduce", "global"):
        result = prim.fn(ScalarSegments, *values)
    else:
        result = prim.fn(*values)
    value = float(result)
    if not math.isfinite(value) or abs(value) > MAX_LITERAL:
        return None
    return _tidy(value)


def _tidy(value: float) -> float:
    """A round spelling of a computed constant, when one is within an ulp: 0.1 * 3.0 reads 0.3,
    not 0.30000000000000004. Other values stay exact: inside a program an ulp can be amplified
    (``sin(x / c)`` with a huge quotient, ``log(c - g)`` near zero) into another fingerprint."""
    short = float(f"{value:.6g}")
    return short if abs(short - value) <= math.ulp(value) else value
