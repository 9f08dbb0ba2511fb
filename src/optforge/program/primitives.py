"""The primitive table: every operation an optimizer program may call.

Each entry says how many arguments it takes, how to compute it with torch, its shape rule, and
its domain (where it produces NaN or inf). The shape rules are:

- ``elementwise``: the result has the broadcast shape of the arguments (a tensor if any argument
  is a tensor, else a scalar);
- ``reduce``: the result is one scalar per parameter tensor (``global_norm``: one for all);
- ``global``: tensor-shaped, but computed from all parameter tensors together;
- ``constant``: no arguments, a fixed scalar (``pi``, ``e``, ``eps``), written without a call.

Values reach the torch implementations as tensors. A "scalar" is either a 0-dim tensor or, when
a program runs over several parameter tensors at once (``execute.Segments``), one value per
parameter tensor; reductions receive the segment layout to reduce within each tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Kind = Literal["elementwise", "reduce", "global", "constant"]
EPS = 1e-8


@dataclass(frozen=True)
class Primitive:
    name: str
    arity: int
    kind: Kind
    domain: str
    fn: Callable[..., Tensor]  # reductions and globals also take the segment layout first
    symbol: str | None = None  # infix operator in program text (+ - * /), or "-" for negative
    commutative: bool = False


def _cbrt(x: Tensor) -> Tensor:
    return torch.sign(x) * torch.abs(x).pow(1.0 / 3.0)


def _clip(x: Tensor, c: Tensor) -> Tensor:
    c = torch.abs(c)
    return torch.minimum(torch.maximum(x, -c), c)


def _interp(x: Tensor, y: Tensor, a: Tensor) -> Tensor:
    x, y, a = torch.broadcast_tensors(x, y, a)
    return torch.lerp(x, y, a)


# Reductions: ``seg`` knows how the flat values split into parameter tensors.
def _norm(seg, x: Tensor) -> Tensor:
    return torch.sqrt(seg.sum(x * x))


def _dot(seg, x: Tensor, y: Tensor) -> Tensor:
    return seg.sum(x * y)


def _cosine_sim(seg, x: Tensor, y: Tensor) -> Tensor:
    return seg.sum(x * y) / (torch.sqrt(seg.sum(x * x)) * torch.sqrt(seg.sum(y * y)))


def _mean(seg, x: Tensor) -> Tensor:
    return seg.mean(x)


def _global_norm(seg, x: Tensor) -> Tensor:
    return torch.sqrt(seg.total(x * x))


def _clip_by_global_norm(seg, x: Tensor, c: Tensor) -> Tensor:
    norm = torch.sqrt(seg.total(x * x))
    return x * torch.clamp(torch.abs(c) / norm, max=1.0)


class ScalarSegments:
    """The segment layout for reductions of scalars: each scalar is one value, so its sum is
    itself (``norm(s) = |s|``, ``dot(s, t) = s*t``) and the total adds all segments."""

    @staticmethod
    def sum(x: Tensor) -> Tensor:
        return x

    mean = sum

    @staticmethod
    def total(x: Tensor) -> Tensor:
        return x.sum()


def _unary(name, fn, domain, symbol=None) -> Primitive:
    return Primitive(name, 1, "elementwise", domain, fn, symbol)


_ALL = "defined everywhere"
PRIMITIVES: dict[str, Primitive] = {
    p.name: p
    for p in [
        # arithmetic, written infix in program text; `y = x` is identity
        Primitive("identity", 1, "elementwise", _ALL, lambda x: x),
        Primitive("add", 2, "elementwise", _ALL, torch.add, "+", commutative=True),
        Primitive("sub", 2, "elementwise", _ALL, torch.sub, "-"),
        Primitive("mul", 2, "elementwise", _ALL, torch.mul, "*", commutative=True),
        Primitive("div", 2, "elementwise", "inf or NaN where the divisor is 0", torch.div, "/"),
        _unary("negative", torch.neg, _ALL, "-"),
        # unary maths
        _unary("abs", torch.abs, _ALL),
        _unary("sign", torch.sign, "sign(NaN) = 0, as torch.sign"),
        _unary("square", torch.square, "overflows to inf for |x| > 1.8e19 (fp32)"),
        _unary("cube", lambda x: x * x * x, "overflows to inf for |x| > 7e12 (fp32)"),
        _unary("sqrt", torch.sqrt, "NaN for x < 0"),
        _unary("cbrt", _cbrt, _ALL),
        _unary("rsqrt", torch.rsqrt, "inf at 0, NaN for x < 0"),
        _unary("reciprocal", torch.reciprocal, "inf at 0"),
        _unary("invert", lambda x: 1.0 - x, _ALL + " (1 - x: the complement of a factor)"),
        _unary("exp", torch.exp, "overflows to inf for x > 88.7 (fp32)"),
        _unary("exp2", torch.exp2, "overflows to inf for x > 128 (fp32)"),
        _unary("exp10", lambda x: torch.pow(10.0, x), "overflows to inf for x > 38.5 (fp32)"),
        _unary("expm1", torch.expm1, "overflows to inf for x > 88.7 (fp32)"),
        _unary("log", torch.log, "-inf at 0, NaN for x < 0"),
        _unary("log2", torch.log2, "-inf at 0, NaN for x < 0"),
        _unary("log10", torch.log10, "-inf at 0, NaN for x < 0"),
        _unary("log1p", torch.log1p, "-inf at -1, NaN for x < -1"),
        _unary("sin", torch.sin, _ALL),
        _unary("cos", torch.cos, _ALL),
        _unary("tan", torch.tan, "poles at pi/2 + k*pi"),
        _unary("arcsin", torch.asin, "NaN for |x| > 1"),
        _unary("arccos", torch.acos, "NaN for |x| > 1"),
        _unary("arctan", torch.atan, _ALL),
        _unary("sinh", torch.sinh, "overflows to inf for |x| > 89.4 (fp32)"),
        _unary("cosh", torch.cosh, "overflows to inf for |x| > 89.4 (fp32)"),
        _unary("tanh", torch.tanh, _ALL),
        _unary("arcsinh", torch.asinh, _ALL),
        _unary("arccosh", torch.acosh, "NaN for x < 1"),
        _unary("arctanh", torch.atanh, "inf at |x| = 1, NaN for |x| > 1"),
        _unary("sigmoid", torch.sigmoid, _ALL),
        _unary("relu", torch.relu, _ALL),
        # binary and ternary
        Primitive(
            "power", 2, "elementwise", "NaN for x < 0 with a non-integer y; inf for 0 ** y<0",
            torch.pow,
        ),
        Primitive("maximum", 2, "elementwise", _ALL, torch.maximum, commutative=True),
        Primitive("minimum", 2, "elementwise", _ALL, torch.minimum, commutative=True),
        Primitive("clip", 2, "elementwise", _ALL + " (clamps x to [-|c|, |c|])", _clip),
        Primitive("interp", 3, "elementwise", _ALL + " ((1 - a)*x + a*y)", _interp),
        # reductions: one scalar per parameter tensor
        Primitive("norm", 1, "reduce", _ALL + " (L2 norm)", _norm),
        Primitive("mean", 1, "reduce", _ALL, _mean),
        Primitive("dot", 2, "reduce", _ALL, _dot, commutative=True),
        Primitive(
            "cosine_sim", 2, "reduce", "NaN when either argument is all zeros", _cosine_sim,
            commutative=True,
        ),
        # across all parameter tensors
        Primitive("global_norm", 1, "reduce", _ALL + " (one scalar for all tensors)", _global_norm),
        Primitive(
            "clip_by_global_norm", 2, "global", "NaN when x is all zeros", _clip_by_global_norm
        ),
        # constants
        Primitive("pi", 0, "constant", _ALL, lambda: torch.tensor(math.pi)),
        Primitive("e", 0, "constant", _ALL, lambda: torch.tensor(math.e)),
        Primitive("eps", 0, "constant", _ALL + f" ({EPS:g})", lambda: torch.tensor(EPS)),
    ]
}  # fmt: skip

CONSTANTS = {name: p for name, p in PRIMITIVES.items() if p.kind == "constant"}
CONSTANT_VALUES = {"pi": math.pi, "e": math.e, "eps": EPS}
INFIX = {p.symbol: p.name for p in PRIMITIVES.values() if p.symbol and p.arity == 2}
GLOBAL_REDUCTIONS = {"global_norm"}
