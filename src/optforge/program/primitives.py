"""The primitive table: every operation an optimizer program may call.

Each entry says how many arguments it takes, how to compute it with torch, its shape rule, and
its domain (where it produces NaN or inf). The shape rules are:

- ``elementwise``: the result has the broadcast shape of the arguments (a tensor if any argument
  is a tensor, else a scalar);
- ``reduce``: the result is one scalar per parameter tensor (``global_norm``: one for all);
- ``global``: tensor-shaped, but computed from all parameter tensors together;
- ``matrix``: tensor-shaped, computed per parameter tensor on its matrix view
  (``layout.py``: ``orthogonalize``, row and column statistics); its arguments must be tensors;
- ``constant``: no arguments, a fixed scalar (``pi``, ``e``, ``eps``), written without a call;
- ``input``: no arguments, a scalar per parameter tensor that the caller supplies (``hidden``,
  ``aspect``) or the step count (``step``), written without a call.

Each entry carries its code for both export targets: ``code``, the torch expression that
optforge runs and ``optforge export`` writes, and ``jax``, the same operation in ``jax.numpy``
that ``optforge export --format optax`` writes (over ``layout_jax.py``: its ``seg`` has
``layout.py``'s methods, and its ``sign`` and ``lerp`` are torch's, where ``jnp`` differs);
None would mean "no JAX form", which that export refuses by name.
``tests/program/test_export_optax.py`` checks every entry's two forms against each other.

Values reach the torch implementations as tensors. A "scalar" is either a 0-dim tensor or, when
a program runs over several parameter tensors at once (``execute.Segments``), one value per
parameter tensor; reductions and matrix operations receive the segment layout
(``layout.Segments``) to act within each tensor.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from optforge.program.layout import NS_EPS

Kind = Literal["elementwise", "reduce", "global", "matrix", "constant", "input"]
Target = Literal["torch", "jax"]
TARGETS = ("torch", "jax")
SEGMENTED = ("reduce", "global", "matrix")  # kinds whose code reads the layout ``seg``
EPS = 1e-8


@dataclass(frozen=True)
class Primitive:
    """One operation. ``code`` is a torch expression over the argument names ``params``
    (and ``seg`` for reductions and matrix operations); it is both what runs (compiled once
    at import, from this module's own constant strings) and what ``optforge export`` writes
    into standalone modules, so the two cannot drift apart. ``jax`` is the same expression in
    jax.numpy, for ``optforge export --format optax``."""

    name: str
    params: tuple[str, ...]
    kind: Kind
    code: str
    domain: str
    symbol: str | None = None  # infix operator in program text (+ - * /), "-" for negative
    commutative: bool = False
    jax: str | None = None  # ``code`` in jax.numpy (``jnp``, ``jax``), for the optax export

    def code_for(self, target: Target) -> str | None:
        """The expression for an export target: ``code`` for torch, ``jax`` for JAX (None:
        this primitive has no form there)."""
        if target not in TARGETS:
            raise ValueError(f"unknown export target {target!r} (one of {TARGETS})")
        return self.code if target == "torch" else self.jax

    @property
    def arity(self) -> int:
        return len(self.params)

    @functools.cached_property
    def fn(self) -> Callable[..., Tensor]:
        """The implementation; reductions, globals and matrix operations take the segment
        layout first."""
        names = ("seg", *self.params) if self.kind in SEGMENTED else self.params
        return eval(f"lambda {', '.join(names)}: {self.code}", {"torch": torch})  # noqa: S307


def _op(name, params, code, domain="defined everywhere", kind="elementwise", **kw) -> Primitive:
    if kind == "constant":  # a Python literal: the same text for every target
        kw.setdefault("jax", code)
    return Primitive(name, tuple(params.split()), kind, code, domain, **kw)


_X, _XY = "x", "x y"
PRIMITIVES: dict[str, Primitive] = {
    p.name: p
    for p in [
        # arithmetic, written infix in program text; `y = x` is identity
        _op("identity", _X, "x", jax="x"),
        _op("add", _XY, "torch.add(x, y)", symbol="+", commutative=True, jax="jnp.add(x, y)"),
        _op("sub", _XY, "torch.sub(x, y)", symbol="-", jax="jnp.subtract(x, y)"),
        _op("mul", _XY, "torch.mul(x, y)", symbol="*", commutative=True, jax="jnp.multiply(x, y)"),
        _op("div", _XY, "torch.div(x, y)", "inf or NaN where y = 0", symbol="/",
            jax="jnp.divide(x, y)"),
        _op("negative", _X, "torch.neg(x)", symbol="-", jax="jnp.negative(x)"),
        # unary maths
        _op("abs", _X, "torch.abs(x)", jax="jnp.abs(x)"),
        _op("sign", _X, "torch.sign(x)", "sign(NaN) = 0, as torch.sign",
            jax="sign(x)"),
        _op("square", _X, "torch.square(x)", "inf for |x| > 1.8e19 (fp32)", jax="jnp.square(x)"),
        _op("cube", _X, "x * x * x", "inf for |x| > 7e12 (fp32)", jax="x * x * x"),
        _op("sqrt", _X, "torch.sqrt(x)", "NaN for x < 0", jax="jnp.sqrt(x)"),
        _op("cbrt", _X, "torch.sign(x) * torch.abs(x).pow(1.0 / 3.0)",
            jax="jnp.sign(x) * jnp.power(jnp.abs(x), 1.0 / 3.0)"),
        _op("rsqrt", _X, "torch.rsqrt(x)", "inf at 0, NaN for x < 0", jax="jax.lax.rsqrt(x)"),
        _op("reciprocal", _X, "torch.reciprocal(x)", "inf at 0", jax="jnp.reciprocal(x)"),
        _op("invert", _X, "1.0 - x", "defined everywhere (1 - x, the complement of a factor)",
            jax="1.0 - x"),
        _op("exp", _X, "torch.exp(x)", "inf for x > 88.7 (fp32)", jax="jnp.exp(x)"),
        _op("exp2", _X, "torch.exp2(x)", "inf for x > 128 (fp32)", jax="jnp.exp2(x)"),
        _op("exp10", _X, "torch.pow(10.0, x)", "inf for x > 38.5 (fp32)", jax="jnp.power(10.0, x)"),
        _op("expm1", _X, "torch.expm1(x)", "inf for x > 88.7 (fp32)", jax="jnp.expm1(x)"),
        _op("log", _X, "torch.log(x)", "-inf at 0, NaN for x < 0", jax="jnp.log(x)"),
        _op("log2", _X, "torch.log2(x)", "-inf at 0, NaN for x < 0", jax="jnp.log2(x)"),
        _op("log10", _X, "torch.log10(x)", "-inf at 0, NaN for x < 0", jax="jnp.log10(x)"),
        _op("log1p", _X, "torch.log1p(x)", "-inf at -1, NaN for x < -1", jax="jnp.log1p(x)"),
        _op("sin", _X, "torch.sin(x)", jax="jnp.sin(x)"),
        _op("cos", _X, "torch.cos(x)", jax="jnp.cos(x)"),
        _op("tan", _X, "torch.tan(x)", "poles at pi/2 + k*pi", jax="jnp.tan(x)"),
        _op("arcsin", _X, "torch.asin(x)", "NaN for |x| > 1", jax="jnp.arcsin(x)"),
        _op("arccos", _X, "torch.acos(x)", "NaN for |x| > 1", jax="jnp.arccos(x)"),
        _op("arctan", _X, "torch.atan(x)", jax="jnp.arctan(x)"),
        _op("sinh", _X, "torch.sinh(x)", "inf for |x| > 89.4 (fp32)", jax="jnp.sinh(x)"),
        _op("cosh", _X, "torch.cosh(x)", "inf for |x| > 89.4 (fp32)", jax="jnp.cosh(x)"),
        _op("tanh", _X, "torch.tanh(x)", jax="jnp.tanh(x)"),
        _op("arcsinh", _X, "torch.asinh(x)", jax="jnp.arcsinh(x)"),
        _op("arccosh", _X, "torch.acosh(x)", "NaN for x < 1", jax="jnp.arccosh(x)"),
        _op("arctanh", _X, "torch.atanh(x)", "inf at |x| = 1, NaN for |x| > 1",
            jax="jnp.arctanh(x)"),
        _op("sigmoid", _X, "torch.sigmoid(x)", jax="jax.nn.sigmoid(x)"),
        _op("relu", _X, "torch.relu(x)", jax="jax.nn.relu(x)"),
        # binary and ternary
        _op("power", _XY, "torch.pow(x, y)", "NaN for x < 0 with non-integer y; inf for 0**(y<0)",
            jax="jnp.power(x, y)"),
        _op("maximum", _XY, "torch.maximum(x, y)", commutative=True, jax="jnp.maximum(x, y)"),
        _op("minimum", _XY, "torch.minimum(x, y)", commutative=True, jax="jnp.minimum(x, y)"),
        _op("clip", "x c", "torch.minimum(torch.maximum(x, -torch.abs(c)), torch.abs(c))",
            "defined everywhere (clamps x to [-|c|, |c|])",
            jax="jnp.minimum(jnp.maximum(x, -jnp.abs(c)), jnp.abs(c))"),
        _op("interp", "x y a", "torch.lerp(x, y, a)",
            "defined everywhere ((1 - a)*x + a*y)",
            jax="lerp(x, y, a)"),
        # reductions: one scalar per parameter tensor
        _op("norm", _X, "torch.sqrt(seg.sum(x * x))", "defined everywhere (L2 norm)",
            kind="reduce", jax="jnp.sqrt(seg.sum(x * x))"),
        _op("mean", _X, "seg.mean(x)", kind="reduce", jax="seg.mean(x)"),
        _op("dot", _XY, "seg.sum(x * y)", kind="reduce", commutative=True, jax="seg.sum(x * y)"),
        _op("cosine_sim", _XY,
            "seg.sum(x * y) / (torch.sqrt(seg.sum(x * x)) * torch.sqrt(seg.sum(y * y)))",
            "NaN when x or y is all zeros", kind="reduce", commutative=True,
            jax="seg.sum(x * y) / (jnp.sqrt(seg.sum(x * x)) * jnp.sqrt(seg.sum(y * y)))"),
        # across all parameter tensors
        _op("global_norm", _X, "torch.sqrt(seg.total(x * x))",
            "defined everywhere (one scalar for all tensors)", kind="reduce",
            jax="jnp.sqrt(seg.total(x * x))"),
        _op("clip_by_global_norm", "x c",
            "x * torch.clamp(torch.abs(c) / torch.sqrt(seg.total(x * x)), max=1.0)",
            "NaN when x is all zeros", kind="global",
            jax="x * jnp.minimum(jnp.abs(c) / jnp.sqrt(seg.total(x * x)), 1.0)"),
        # constants, written as bare names
        _op("pi", "", repr(math.pi), kind="constant"),
        _op("e", "", repr(math.e), kind="constant"),
        _op("eps", "", repr(EPS), f"defined everywhere ({EPS:g})", kind="constant"),
        # matrix operations: per tensor, on its matrix view (2-D as is, >=3-D as
        # (shape[0], rest), 1-D as a 1 x n row); tensor arguments only
        _op("orthogonalize", _X, "seg.orthogonalize(x)",
            f"defined everywhere (Muon's Newton-Schulz on x / max(|x|_F, {NS_EPS:g}); "
            "a vector gives x / |x|, an all-zero tensor stays zero)", kind="matrix",
            jax="seg.orthogonalize(x)"),
        _op("row_mean", _X, "seg.row_mean(x)", "defined everywhere (broadcast over the row)",
            kind="matrix", jax="seg.row_mean(x)"),
        _op("col_mean", _X, "seg.col_mean(x)", "defined everywhere (broadcast over the column)",
            kind="matrix", jax="seg.col_mean(x)"),
        _op("row_rms", _X, "torch.sqrt(seg.row_mean(x * x))",
            "defined everywhere (broadcast over the row)", kind="matrix",
            jax="jnp.sqrt(seg.row_mean(x * x))"),
        _op("col_rms", _X, "torch.sqrt(seg.col_mean(x * x))",
            "defined everywhere (broadcast over the column)", kind="matrix",
            jax="jnp.sqrt(seg.col_mean(x * x))"),
        # inputs, written as bare names: one value per parameter tensor
        _op("hidden", "", "seg.input('hidden', dtype)",
            "1 for a hidden weight matrix, 0 otherwise (set by the task or the optimizer)",
            kind="input", jax="seg.input('hidden', dtype)"),
        _op("aspect", "", "seg.input('aspect', dtype)",
            "Muon's shape factor sqrt(max(1, fan_out / fan_in)), 1 for vectors", kind="input",
            jax="seg.input('aspect', dtype)"),
        _op("step", "", "step", "the step count: 1 at the first step", kind="input", jax="step"),
    ]
}  # fmt: skip

CONSTANTS = {name: p for name, p in PRIMITIVES.items() if p.kind == "constant"}
INPUT_NAMES = tuple(name for name, p in PRIMITIVES.items() if p.kind == "input")
LEAVES = {name: p for name, p in PRIMITIVES.items() if p.kind in ("constant", "input")}
"""Bare names that are not variables: the constants and the per-tensor inputs."""
MATRIX_OPS = tuple(name for name, p in PRIMITIVES.items() if p.kind == "matrix")
CONSTANT_VALUES = {"pi": math.pi, "e": math.e, "eps": EPS}
INFIX = {p.symbol: p.name for p in PRIMITIVES.values() if p.symbol and p.arity == 2}
