"""Each primitive against numpy in float64, on its domain."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optforge.program.execute import Segments
from optforge.program.layout import ScalarSegments
from optforge.program.primitives import PRIMITIVES

RNG = np.random.default_rng(0)
N = 257


def uniform(low, high):
    return RNG.uniform(low, high, N)


# name -> (numpy reference, argument samplers on the primitive's domain)
ELEMENTWISE = {
    "identity": (lambda x: x, [uniform(-5, 5)]),
    "add": (np.add, [uniform(-5, 5), uniform(-5, 5)]),
    "sub": (np.subtract, [uniform(-5, 5), uniform(-5, 5)]),
    "mul": (np.multiply, [uniform(-5, 5), uniform(-5, 5)]),
    "div": (np.divide, [uniform(-5, 5), uniform(0.1, 5) * RNG.choice([-1, 1], N)]),
    "negative": (np.negative, [uniform(-5, 5)]),
    "abs": (np.abs, [uniform(-5, 5)]),
    "sign": (np.sign, [np.append(uniform(-5, 5), 0.0)]),
    "square": (np.square, [uniform(-5, 5)]),
    "cube": (lambda x: x**3, [uniform(-5, 5)]),
    "sqrt": (np.sqrt, [uniform(0, 5)]),
    "cbrt": (np.cbrt, [uniform(-5, 5)]),
    "rsqrt": (lambda x: 1 / np.sqrt(x), [uniform(0.01, 5)]),
    "reciprocal": (np.reciprocal, [uniform(0.1, 5)]),
    "invert": (lambda x: 1 - x, [uniform(-5, 5)]),
    "exp": (np.exp, [uniform(-5, 5)]),
    "exp2": (np.exp2, [uniform(-5, 5)]),
    "exp10": (lambda x: np.power(10.0, x), [uniform(-5, 5)]),
    "expm1": (np.expm1, [uniform(-5, 5)]),
    "log": (np.log, [uniform(0.01, 5)]),
    "log2": (np.log2, [uniform(0.01, 5)]),
    "log10": (np.log10, [uniform(0.01, 5)]),
    "log1p": (np.log1p, [uniform(-0.99, 5)]),
    "sin": (np.sin, [uniform(-5, 5)]),
    "cos": (np.cos, [uniform(-5, 5)]),
    "tan": (np.tan, [uniform(-1.5, 1.5)]),
    "arcsin": (np.arcsin, [uniform(-1, 1)]),
    "arccos": (np.arccos, [uniform(-1, 1)]),
    "arctan": (np.arctan, [uniform(-5, 5)]),
    "sinh": (np.sinh, [uniform(-5, 5)]),
    "cosh": (np.cosh, [uniform(-5, 5)]),
    "tanh": (np.tanh, [uniform(-5, 5)]),
    "arcsinh": (np.arcsinh, [uniform(-5, 5)]),
    "arccosh": (np.arccosh, [uniform(1, 5)]),
    "arctanh": (np.arctanh, [uniform(-0.99, 0.99)]),
    "sigmoid": (lambda x: 1 / (1 + np.exp(-x)), [uniform(-5, 5)]),
    "relu": (lambda x: np.maximum(x, 0), [uniform(-5, 5)]),
    "power": (np.power, [uniform(0.01, 5), uniform(-3, 3)]),
    "maximum": (np.maximum, [uniform(-5, 5), uniform(-5, 5)]),
    "minimum": (np.minimum, [uniform(-5, 5), uniform(-5, 5)]),
    "clip": (lambda x, c: np.clip(x, -np.abs(c), np.abs(c)), [uniform(-5, 5), uniform(-2, 2)]),
    "interp": (
        lambda x, y, a: (1 - a) * x + a * y,
        [uniform(-5, 5), uniform(-5, 5), uniform(-1, 2)],
    ),  # fmt: skip
}


def test_the_table_has_the_papers_set_and_more():
    paper = [
        "add",
        "sub",
        "mul",
        "div",
        "abs",
        "cos",
        "sin",
        "tan",
        "arcsin",
        "arccos",
        "arctan",
        "sinh",
        "cosh",
        "tanh",
        "arcsinh",
        "arccosh",
        "arctanh",
        "exp",
        "exp2",
        "exp10",
        "expm1",
        "log",
        "log10",
        "log2",
        "log1p",
        "square",
        "sqrt",
        "cube",
        "cbrt",
        "sign",
        "reciprocal",
        "norm",
        "invert",
        "negative",
        "interp",
        "clip",
        "maximum",
        "minimum",
        "power",
        "dot",
        "cosine_sim",
        "global_norm",
        "clip_by_global_norm",
        "pi",
        "e",
        "eps",
    ]
    assert set(paper) <= set(PRIMITIVES)
    assert len(PRIMITIVES) >= 45
    for p in PRIMITIVES.values():
        assert p.domain and p.kind in ("elementwise", "reduce", "global", "matrix", "constant",
                                       "input")  # fmt: skip


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_matches_numpy(name):
    reference, samples = ELEMENTWISE[name]
    n = min(len(s) for s in samples)
    args = [s[:n] for s in samples]
    got = PRIMITIVES[name].fn(*(torch.from_numpy(a) for a in args))
    np.testing.assert_allclose(got.numpy(), reference(*args), rtol=1e-12, atol=1e-12)


def test_every_elementwise_primitive_is_tested():
    names = {n for n, p in PRIMITIVES.items() if p.kind == "elementwise"}
    assert names == set(ELEMENTWISE)


def test_constants():
    for name, value in {"pi": np.pi, "e": np.e, "eps": 1e-8}.items():
        assert float(PRIMITIVES[name].fn()) == pytest.approx(value, rel=1e-15)


LENGTHS = (5, 11, 1)


def per_tensor(values, fn):
    bounds = np.cumsum((0, *LENGTHS))
    return np.array(
        [fn(*(v[a:b] for v in values)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    )


def reduction_cases():
    x, y = uniform(-3, 3)[:17], uniform(-3, 3)[:17]
    norm = lambda v: np.sqrt(np.sum(v * v))  # noqa: E731
    return {
        "norm": ([x], per_tensor([x], norm)),
        "mean": ([x], per_tensor([x], np.mean)),
        "dot": ([x, y], per_tensor([x, y], lambda a, b: np.sum(a * b))),
        "cosine_sim": ([x, y], per_tensor([x, y], lambda a, b: np.sum(a * b) / norm(a) / norm(b))),
        "global_norm": ([x], norm(x)),
    }


@pytest.mark.parametrize("name", ["norm", "mean", "dot", "cosine_sim", "global_norm"])
def test_reductions_are_per_tensor_against_numpy(name):
    args, expected = reduction_cases()[name]
    seg = Segments(LENGTHS)
    got = PRIMITIVES[name].fn(seg, *(torch.from_numpy(a) for a in args))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_clip_by_global_norm_against_numpy():
    x = uniform(-3, 3)[:17]
    total = np.sqrt(np.sum(x * x))
    for c in (0.5, 100.0):
        c_t = torch.tensor(c, dtype=torch.float64)
        got = PRIMITIVES["clip_by_global_norm"].fn(Segments(LENGTHS), torch.from_numpy(x), c_t)
        np.testing.assert_allclose(got.numpy(), x * min(1.0, c / total), rtol=1e-12)


def test_reductions_of_scalars_treat_each_scalar_as_one_value():
    s, t = torch.tensor(-3.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)
    assert float(PRIMITIVES["norm"].fn(ScalarSegments, s)) == 3.0
    assert float(PRIMITIVES["dot"].fn(ScalarSegments, s, t)) == -6.0
    assert float(PRIMITIVES["cosine_sim"].fn(ScalarSegments, s, t)) == -1.0


@pytest.mark.parametrize(
    ("name", "args", "check"),
    [
        ("log", [-1.0], np.isnan), ("log", [0.0], np.isneginf), ("sqrt", [-1.0], np.isnan),
        ("div", [1.0, 0.0], np.isposinf), ("arcsin", [2.0], np.isnan),
        ("arccosh", [0.5], np.isnan), ("reciprocal", [0.0], np.isposinf),
        ("exp", [1000.0], np.isposinf), ("power", [-2.0, 0.5], np.isnan),
    ],
)  # fmt: skip
def test_documented_domains_hold(name, args, check):
    got = PRIMITIVES[name].fn(*(torch.tensor(a, dtype=torch.float64) for a in args))
    assert check(got.numpy())
