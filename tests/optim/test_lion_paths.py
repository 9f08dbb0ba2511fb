"""The single-tensor, foreach and fused paths compute the same thing.

They share formulas and rounding points (fp32 math, one rounding of low-precision storage), so
they agree to within 2 fp32 ulps; on x86-64 with FMA they agree bit for bit."""

from __future__ import annotations

import importlib

import pytest
import torch

import optforge
from optforge.optim.kernels import cpu as cpu_kernel
from tests.optim.test_lion_reference import PATHS, make_params, train

# optforge.optim.lion is the functional entry, so the module is reached by its full name.
lion_module = importlib.import_module("optforge.optim.lion")

OPTIONS = [
    dict(),
    dict(weight_decay=0.3, maximize=True),
    dict(cautious=True, betas=(0.3, 0.6)),
    dict(momentum_dtype=torch.bfloat16, cautious=True),
    dict(momentum_dtype=torch.float16),
]


def _run(dtype, options, path, shapes=((257, 3), (1000,), (), (5, 4, 3))):
    params = make_params(dtype, shapes=shapes)
    opt = optforge.Lion(params, lr=1e-2, **options, **PATHS[path])
    train(params, opt)
    return [p.detach() for p in params], [opt.state[p]["exp_avg"] for p in params]


@pytest.mark.parametrize("options", OPTIONS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_paths_agree(dtype, options):
    if (dtype, options.get("momentum_dtype", dtype)) not in cpu_kernel.SUPPORTED:
        pytest.skip("a dtype pair the fused kernel rejects (tested in test_lion_errors)")
    results = {path: _run(dtype, options, path) for path in PATHS}
    ps, ms = results["single"]
    for path in ("foreach", "fused"):
        other_ps, other_ms = results[path]
        for a, b in zip(ps + ms, other_ps + other_ms, strict=True):
            assert a.dtype == b.dtype
            eps = torch.finfo(a.dtype).eps
            torch.testing.assert_close(a, b, rtol=2 * eps, atol=2 * eps * 1e-3)


def test_default_path_on_cpu_is_the_fused_kernel(monkeypatch):
    calls = []
    monkeypatch.setattr(lion_module.cpu_kernel, "lion_step", lambda *a, **k: calls.append(1))
    (w,) = make_params(shapes=[(4,)])
    w.grad = torch.ones_like(w)
    optforge.Lion([w]).step()
    assert calls, "the default CPU step should use the fused kernel"


def test_fused_false_uses_the_single_tensor_loop(monkeypatch):
    calls = []
    monkeypatch.setattr(lion_module.cpu_kernel, "lion_step", lambda *a, **k: calls.append(1))
    (w,) = make_params(shapes=[(4,)])
    w.grad = torch.ones_like(w)
    w0 = w.detach().clone()
    optforge.Lion([w], lr=0.5, fused=False).step()
    assert not calls
    torch.testing.assert_close(w.detach(), w0 - 0.5)  # sign(0.1 * 1) = 1


def test_functional_lion_matches_the_class():
    a = make_params(shapes=[(50,), (7, 3)])
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    opt = optforge.Lion(a, lr=1e-2, betas=(0.95, 0.98), weight_decay=0.1)
    m = [torch.zeros_like(p) for p in b]
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        grads = [torch.randn(p.shape, generator=gen) for p in a]
        for p, g in zip(a, grads, strict=True):
            p.grad = g
        opt.step()
        with torch.no_grad():
            optforge.optim.lion(b, grads, m, lr=1e-2, beta1=0.95, beta2=0.98, weight_decay=0.1)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.detach(), y.detach())


def test_functional_lion_rejects_mismatched_tensors():
    p = torch.zeros(4)
    with pytest.raises(TypeError, match="match their parameter"):
        optforge.optim.lion(
            [p], [torch.zeros(5)], [torch.zeros(4)], lr=0.1, beta1=0.9, beta2=0.99,
            weight_decay=0.0,
        )  # fmt: skip
    with pytest.raises(ValueError, match="equal lengths"):
        optforge.optim.lion([p], [], [], lr=0.1, beta1=0.9, beta2=0.99, weight_decay=0.0)
