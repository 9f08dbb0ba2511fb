"""The fused Triton path (CUDA's fused Lion) on every option, run here on CPU tensors under
Triton's interpreter (tests/conftest.py): the same kernel source a GPU compiles, so its logic
(address tables, chunking, masks, dtypes, AMP, tensor lr, rounding) is what is tested."""

from __future__ import annotations

import importlib

import pytest
import torch

import optforge
from optforge.optim.kernels import triton as triton_kernel
from tests.optim.test_lion_reference import (
    CONFIGS,
    STEPS,
    assert_close_fp32,
    make_params,
    momentum_scale,
    replay,
    train,
)

pytest.importorskip("triton")
lion_module = importlib.import_module("optforge.optim.lion")
# Sizes around the kernel's chunk and block: empty, size 1, a partial block, several chunks.
SHAPES = [(0,), (1,), (37, 19), (), (triton_kernel.CHUNK + 1000,)]
DTYPE_PAIRS = [
    (torch.float32, torch.float32),
    (torch.float32, torch.bfloat16),
    (torch.bfloat16, torch.bfloat16),
    (torch.bfloat16, torch.float32),
    (torch.float16, torch.float16),
    (torch.float16, torch.float32),
]
OPTIONS = [
    dict(),
    dict(weight_decay=0.3, maximize=True),
    dict(cautious=True, betas=(0.3, 0.6)),
    dict(cautious=True, maximize=True, weight_decay=1.0),
]


@pytest.fixture(autouse=True)
def triton_on_cpu(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: tests/optim/test_lion_gpu.py runs the compiled kernel")
    if not triton_kernel.interpreted():
        pytest.skip("Triton's interpreter is off (TRITON_INTERPRET=1, tests/conftest.py)")
    monkeypatch.setattr(triton_kernel, "STEP_CPU_TENSORS", True)


def _device():
    return "cpu"


def _run(p_dtype, m_dtype, options, path, steps=4, shapes=SHAPES):
    params = [torch.nn.Parameter(p.to(_device())) for p in make_params(p_dtype, shapes=shapes)]
    opt = optforge.Lion(params, lr=1e-2, momentum_dtype=m_dtype, **options, **path)
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        for i, p in enumerate(params):
            # A frozen param (never a grad) and one whose grad is set to None mid-run.
            frozen, dropped = i == 2, (i == 3 and step == 2)
            grad = torch.randn(p.shape, generator=gen).to(p.dtype).to(_device())
            p.grad = None if frozen or dropped else grad
        opt.step()
    return [p.detach().cpu() for p in params], [
        opt.state[p]["exp_avg"].cpu() if p in opt.state else None for p in params
    ]


@pytest.mark.parametrize("options", OPTIONS, ids=str)
@pytest.mark.parametrize(("p_dtype", "m_dtype"), DTYPE_PAIRS, ids=str)
def test_triton_matches_the_single_tensor_loop_bit_for_bit(p_dtype, m_dtype, options):
    """Same formulas (fp32 math, ATen's lerp, one round-to-nearest-even store), so the same
    bits, including in bf16 and fp16 storage."""
    fused_ps, fused_ms = _run(p_dtype, m_dtype, options, dict(fused=True))
    loop_ps, loop_ms = _run(p_dtype, m_dtype, options, dict(fused=False, foreach=False))
    for a, b in zip(fused_ps + fused_ms, loop_ps + loop_ms, strict=True):
        if a is None or b is None:
            assert a is b
            continue
        assert a.dtype == b.dtype
        assert torch.equal(a, b), f"max difference {(a.float() - b.float()).abs().max()}"


@pytest.mark.parametrize("config", ["plain", "weight_decay", "cautious_maximize_wd", "tensor_lr"])
def test_triton_matches_float64_reference(config):
    options = CONFIGS[config]
    params = make_params()
    p0 = [p.detach().clone() for p in params]
    opt = optforge.Lion(params, **options, fused=True)
    grads, configs = train(params, opt)
    for i, p in enumerate(params):
        p_ref, m_ref = replay(p0, i, p, grads, configs, maximize=options.get("maximize", False),
                              cautious=options.get("cautious", False))  # fmt: skip
        assert_close_fp32(p.detach(), p_ref, STEPS * float(options["lr"]))
        assert_close_fp32(opt.state[p]["exp_avg"], m_ref, momentum_scale(grads, i))


def test_the_kernel_is_what_runs(monkeypatch):
    calls = []
    real = triton_kernel.lion_step
    counted = lambda *a, **k: calls.append(1) or real(*a, **k)  # noqa: E731
    monkeypatch.setattr(triton_kernel, "lion_step", counted)
    params = make_params()
    opt = optforge.Lion(params, fused=True)
    train(params, opt, steps=2)
    assert calls == [1, 1]  # one launch set per step for the whole group (one dtype pair)


def test_address_tables_are_cached_by_data_pointer():
    triton_kernel.clear_cache()
    params = make_params()
    opt = optforge.Lion(params, fused=True)
    for _ in range(3):  # grads kept in place (as zero_grad(set_to_none=False), DDP buckets)
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.copy_(torch.randn_like(p))
        opt.step()
    assert len(triton_kernel._tables) == 1
    # New wrappers of the same storage (what .data and DTensor.to_local() return) hit the cache.
    lion_module.lion([p.data for p in params], [p.grad.data for p in params],
                     [opt.state[p]["exp_avg"].data for p in params],
                     lr=1e-3, beta1=0.9, beta2=0.99, weight_decay=0.0, fused=True)  # fmt: skip
    assert len(triton_kernel._tables) == 1


def test_non_contiguous_params_are_stepped_in_place():
    base = [torch.randn(8, 6) for _ in range(2)]
    views = [b.t() for b in base]  # dense but transposed: stepped as they are
    sliced = torch.randn(10, 10)[:, ::2]  # not dense: stepped on a copy written back
    results = {}
    for path in (dict(fused=True), dict(fused=False)):
        params = [torch.nn.Parameter(t.clone()) for t in (*views, sliced)]
        opt = optforge.Lion(params, lr=0.1, weight_decay=0.1, **path)
        train(params, opt, steps=3)
        results[str(path)] = [p.detach() for p in params]
    for a, b in zip(*results.values(), strict=True):
        assert torch.equal(a, b)


def test_found_inf_skips_the_step_and_grad_scale_divides():
    params = make_params()
    for p in params:
        p.grad = torch.randn_like(p) * 1024.0
    momenta = [torch.randn_like(p) for p in params]
    before = [t.clone() for t in (*params, *momenta)]
    kw = dict(lr=0.1, beta1=0.9, beta2=0.99, weight_decay=0.1, fused=True)
    grads = [p.grad for p in params]
    lion_module.lion(params, grads, momenta, **kw, grad_scale=torch.tensor(1024.0),
                     found_inf=torch.tensor(1.0))  # fmt: skip
    assert all(torch.equal(a, b) for a, b in zip(before, (*params, *momenta), strict=True))

    lion_module.lion(params, grads, momenta, **kw, grad_scale=torch.tensor(1024.0),
                     found_inf=torch.tensor(0.0))  # fmt: skip
    expected = [t.clone() for t in before]
    e_params, e_momenta = expected[: len(params)], expected[len(params) :]
    lion_module.lion(e_params, [g / 1024.0 for g in grads], e_momenta, **kw)
    for a, b in zip((*params, *momenta), (*e_params, *e_momenta), strict=True):
        assert torch.equal(a, b)


def test_capturable_takes_a_device_lr():
    """capturable: the lr tensor is read by the kernel, so a changed value needs no new call
    set-up (what a CUDA graph replay relies on)."""
    if torch.cuda.is_available():
        pytest.skip("CPU-only check of the capturable options (the GPU check captures a graph)")
    with pytest.raises(ValueError, match="capturable=True needs fused=True and CUDA params"):
        optforge.Lion(make_params(), capturable=True)
    lr = torch.tensor(1e-2)
    params, ref = make_params(), make_params()
    opt = optforge.Lion(params, lr=lr, weight_decay=0.5, fused=True)
    ref_opt = optforge.Lion(ref, lr=1e-2, weight_decay=0.5, fused=False)
    for step in range(3):
        lr.fill_(1e-2 / (step + 1))
        ref_opt.param_groups[0]["lr"] = 1e-2 / (step + 1)
        for p, q in zip(params, ref, strict=True):
            p.grad = q.grad = torch.full_like(p, 0.5 - step)
        opt.step()
        ref_opt.step()
    for p, q in zip(params, ref, strict=True):
        torch.testing.assert_close(p, q, rtol=3e-7, atol=1e-7)


@pytest.mark.parametrize("path", [dict(fused=True), dict(foreach=True), dict(fused=False)], ids=str)
def test_stochastic_rounding_keeps_updates_below_bf16_resolution(path):
    """bf16 p = 1.0 has a resolution of 2^-7; 40 steps of 1e-3 vanish with round-to-nearest
    and survive on average with stochastic rounding (the mean over 4096 elements)."""
    steps, lr = 40, 1e-3
    means = {}
    for stochastic in (False, True):
        torch.manual_seed(0)
        p = torch.nn.Parameter(torch.ones(4096, dtype=torch.bfloat16))
        opt = optforge.Lion([p], lr=lr, stochastic_rounding=stochastic, **path)
        for _ in range(steps):
            p.grad = torch.ones_like(p)
            opt.step()
        means[stochastic] = p.double().mean().item()
    assert means[False] == 1.0
    exact = 1.0 - steps * lr
    # Each element's rounding noise has std <= 2^-8 per step, independent: the mean over 4096
    # elements after 40 steps has std <= 2^-8 * sqrt(40) / 64 ~ 4e-4; allow 5 sigma.
    assert abs(means[True] - exact) < 2e-3


def test_stochastic_rounding_is_unbiased_elementwise():
    x = torch.full((200_000,), 1.0 + 2.0**-9)  # a quarter of the way from 1 to 1 + 2^-7
    rounded = lion_module._stochastic_bf16(x).double()
    assert set(rounded.unique().tolist()) == {1.0, 1.0 + 2.0**-7}
    assert abs(rounded.mean().item() - (1.0 + 2.0**-9)) < 3e-5  # ~5 sigma of the binomial
