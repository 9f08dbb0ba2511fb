"""The compiled Triton kernel on a real GPU: every option against the float64 reference and the
foreach path, AMP without host syncs, a captured CUDA graph, bf16 with stochastic rounding.
Skipped without CUDA (CI has none); on a GPU machine: ``pytest tests/optim/test_lion_gpu.py``."""

from __future__ import annotations

import importlib

import pytest
import torch

import optforge
from tests.optim.test_lion_reference import (
    CONFIGS,
    STEPS,
    assert_close_fp32,
    momentum_scale,
    replay,
    train,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
SHAPES = [(0,), (1,), (37, 19), (), (100_003,), (1024, 1024)]


def _params(dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen).to(dtype).cuda()) for s in SHAPES]


@pytest.mark.parametrize("config", list(CONFIGS))
def test_fused_matches_float64_reference(config):
    options = dict(CONFIGS[config])
    if isinstance(options["lr"], torch.Tensor):
        options["lr"] = options["lr"].cuda()  # read by the kernel on the device
    params = _params()
    p0 = [p.detach().cpu().clone() for p in params]
    opt = optforge.Lion(params, **options, fused=True)
    grads, configs = train(params, opt)
    grads = [[g.cpu() for g in step] for step in grads]
    for i, p in enumerate(params):
        p_ref, m_ref = replay(p0, i, p, grads, configs, maximize=options.get("maximize", False),
                              cautious=options.get("cautious", False))  # fmt: skip
        assert_close_fp32(p.detach().cpu(), p_ref, STEPS * float(options["lr"]))
        assert_close_fp32(opt.state[p]["exp_avg"].cpu(), m_ref, momentum_scale(grads, i))


@pytest.mark.parametrize("p_dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m_dtype", [None, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("options", [{}, dict(weight_decay=0.3, maximize=True),
                                     dict(cautious=True, betas=(0.3, 0.6))], ids=str)  # fmt: skip
def test_fused_matches_foreach(p_dtype, m_dtype, options):
    out = []
    for path in (dict(fused=True), dict(foreach=True)):
        params = _params(p_dtype)
        opt = optforge.Lion(params, lr=1e-2, momentum_dtype=m_dtype, **options, **path)
        train(params, opt, steps=5)
        out.append([p.detach() for p in params] + [opt.state[p]["exp_avg"] for p in params])
    for a, b in zip(*out, strict=True):
        eps = torch.finfo(a.dtype).eps
        torch.testing.assert_close(a, b, rtol=2 * eps, atol=2 * eps * 1e-3)


def test_amp_step_makes_no_host_sync():
    """GradScaler + fused: grad_scale / found_inf read on the device, the lr a device tensor;
    after the first step (which builds the address tables) no step may synchronise."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU(), torch.nn.Linear(64, 8))
    model.cuda()
    opt = optforge.Lion(model.parameters(), lr=torch.tensor(1e-3, device="cuda"), fused=True)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**10)
    x, y = torch.randn(32, 64, device="cuda"), torch.randint(0, 8, (32,), device="cuda")
    kept = []
    for step in range(4):
        opt.zero_grad(set_to_none=False)
        with torch.autocast("cuda", dtype=torch.float16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        if step == 2:
            loss = loss * float("inf")
            kept = [p.detach().clone() for p in model.parameters()]
        scaler.scale(loss).backward()
        if step > 0:
            torch.cuda.set_sync_debug_mode("error")
        try:
            scaler.step(opt)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        scaler.update()
        if step == 2:  # the overflowed step wrote nothing
            assert all(torch.equal(a, b) for a, b in zip(kept, model.parameters(), strict=True))
    assert scaler.get_scale() < 2.0**10
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_capturable_step_replays_in_a_cuda_graph():
    params, ref = _params(), _params()
    lr = torch.tensor(1e-2, device="cuda")
    opt = optforge.Lion(params, lr=lr, weight_decay=0.1, fused=True, capturable=True)
    ref_opt = optforge.Lion(ref, lr=1e-2, weight_decay=0.1, foreach=True)
    for p in params:
        p.grad = torch.zeros_like(p)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        opt.step()  # warm-up: state, tables and kernels built outside the capture
    torch.cuda.current_stream().wait_stream(side)
    for p, q in zip(params, ref, strict=True):
        q.data.copy_(p.data)
        ref_opt.state[q]["exp_avg"] = opt.state[p]["exp_avg"].clone()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt.step()
    gen = torch.Generator(device="cuda").manual_seed(0)
    for step in range(5):
        new_lr = 1e-2 / (step + 1)
        lr.fill_(new_lr)
        ref_opt.param_groups[0]["lr"] = new_lr
        for p, q in zip(params, ref, strict=True):
            g = torch.randn(p.shape, device="cuda", generator=gen)
            p.grad.copy_(g)
            q.grad = g.clone()
        graph.replay()
        ref_opt.step()
    for p, q in zip(params, ref, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)


def test_bf16_stochastic_rounding_keeps_small_updates():
    p = torch.nn.Parameter(torch.ones(1 << 16, dtype=torch.bfloat16, device="cuda"))
    opt = optforge.Lion([p], lr=1e-3, fused=True, stochastic_rounding=True)
    for _ in range(40):
        p.grad = torch.ones_like(p)
        opt.step()
    assert abs(p.double().mean().item() - (1.0 - 40e-3)) < 1e-3


def test_default_path_on_cuda_is_foreach(monkeypatch):
    lion_module = importlib.import_module("optforge.optim.lion")
    calls = []
    monkeypatch.setattr(lion_module, "_multi_tensor_lion", lambda *a, **k: calls.append(1))
    params = _params()
    opt = optforge.Lion(params)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    assert calls == [1]
