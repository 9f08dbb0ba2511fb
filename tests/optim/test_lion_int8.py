"""8-bit blockwise momentum (``momentum_dtype=torch.int8``) against a float64 re-implementation
of its formula, through Lion's step and through checkpoints."""

from __future__ import annotations

import io
import math

import pytest
import torch

import optforge
from optforge.optim.kernels import quant
from tests import reference
from tests.optim.test_lion_training import TEST_ACCURACY, fit, mlp


def ref_roundtrip(m: torch.Tensor, block=256) -> torch.Tensor:
    """float64: per block, code = floor(127 sqrt(|m|/absmax) + 1/2) sign(m), back as
    (code/127)^2 absmax."""
    flat = m.double().reshape(-1)
    out = torch.empty_like(flat)
    for start in range(0, flat.numel(), block):
        b = flat[start : start + block]
        absmax = b.abs().max()
        if absmax == 0:
            out[start : start + block] = 0
            continue
        code = torch.floor(127 * torch.sqrt(b.abs() / absmax) + 0.5) * torch.sign(b)
        out[start : start + block] = torch.sign(code) * (code / 127) ** 2 * absmax
    return out.reshape(m.shape)


@pytest.mark.parametrize("numel", [4096, 5000, 256 * 40 + 1])
def test_roundtrip_matches_the_float64_formula(numel):
    m = torch.randn(numel) * torch.logspace(-4, 0, numel)  # magnitudes over 4 decades
    codes, absmax = quant.zeros(m)
    quant.quantize_(m, codes, absmax)
    got = quant.dequantize(codes, absmax).double()
    want = ref_roundtrip(m)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-12)
    assert codes.dtype == torch.int8 and absmax.numel() == math.ceil(numel / 256)
    # Each block's largest element is stored exactly.
    blocks = m[: (numel // 256) * 256].reshape(-1, 256)
    idx = blocks.abs().argmax(1)
    exact = got[: (numel // 256) * 256].reshape(-1, 256).gather(1, idx[:, None]).squeeze(1)
    torch.testing.assert_close(exact, blocks.gather(1, idx[:, None]).squeeze(1).double())


def test_lion_step_with_int8_momentum_matches_reference():
    torch.manual_seed(0)
    p0 = torch.randn(8192)
    p = torch.nn.Parameter(p0.clone())
    bias = torch.nn.Parameter(torch.randn(10))  # small: stays fp32
    opt = optforge.Lion([p, bias], lr=1e-2, weight_decay=0.1, momentum_dtype=torch.int8)
    cfg = reference.StepConfig(1e-2, 0.9, 0.99, 0.1)
    p_ref, m_ref = p0.double(), torch.zeros(8192, dtype=torch.float64)
    for _ in range(10):
        g = torch.randn(8192)
        p.grad, bias.grad = g.clone(), torch.randn(10)
        opt.step()
        p_ref, m_ref = reference.lion_step(p_ref, m_ref, g.double(), cfg)
        m_ref = ref_roundtrip(m_ref)
    state = opt.state[p]
    assert state["exp_avg"].dtype == torch.int8 and state["exp_avg_absmax"].dtype == torch.float32
    assert opt.state[bias]["exp_avg"].dtype == torch.float32
    # The sign may differ where c is within fp32 rounding of 0: allow a handful of elements.
    mismatched = ((p.detach().double() - p_ref).abs() > 1e-5).sum().item()
    assert mismatched <= 8
    m = quant.dequantize(state["exp_avg"], state["exp_avg_absmax"]).double()
    assert ((m - m_ref).abs() > 1e-3 * m_ref.abs().max()).sum().item() <= 8


def _save_load(opt):
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf)


@pytest.mark.parametrize(("src", "dst"), [(torch.int8, torch.int8), (torch.int8, None),
                                          (None, torch.int8)])  # fmt: skip
def test_checkpoints_convert_between_int8_and_float(src, dst):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(64, 128, dtype=torch.bfloat16))
    opt = optforge.Lion([p], lr=1e-3, momentum_dtype=src)
    for _ in range(3):
        p.grad = torch.randn_like(p)
        opt.step()
    state = opt.state[p]
    m_before = (
        quant.dequantize(state["exp_avg"], state["exp_avg_absmax"])
        if src == torch.int8
        else state["exp_avg"].float()
    )
    other = optforge.Lion([torch.nn.Parameter(p.detach().clone())], lr=1e-3, momentum_dtype=dst)
    other.load_state_dict(_save_load(opt))
    (q,) = other.param_groups[0]["params"]
    loaded = other.state[q]
    if dst == torch.int8:
        assert loaded["exp_avg"].dtype == torch.int8
        m_after = quant.dequantize(loaded["exp_avg"], loaded["exp_avg_absmax"])
        if src == torch.int8:  # codes and maxima come back bit for bit (not via bf16)
            assert torch.equal(loaded["exp_avg_absmax"], state["exp_avg_absmax"])
            assert torch.equal(loaded["exp_avg"], state["exp_avg"])
    else:
        assert "exp_avg_absmax" not in loaded and loaded["exp_avg"].dtype == torch.bfloat16
        m_after = loaded["exp_avg"].float()
    torch.testing.assert_close(m_after, m_before, rtol=0.02, atol=2e-2 * m_before.abs().max())


def test_fp32_momentum_of_bf16_params_survives_a_checkpoint_exactly():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(300, dtype=torch.bfloat16))
    opt = optforge.Lion([p], lr=1e-3, momentum_dtype=torch.float32)
    p.grad = torch.randn_like(p)
    opt.step()
    other = optforge.Lion([torch.nn.Parameter(p.detach().clone())], momentum_dtype=torch.float32)
    other.load_state_dict(_save_load(opt))
    loaded = next(iter(other.state.values()))["exp_avg"]
    assert torch.equal(loaded, opt.state[p]["exp_avg"])  # not rounded through bf16


@pytest.mark.parametrize("path", [dict(fused=True), dict(foreach=True)], ids=["fused", "foreach"])
def test_int8_momentum_learns_digits(path):
    model = mlp(0)
    opt = optforge.Lion(model.parameters(), lr=2e-3, weight_decay=0.1,
                        momentum_dtype=torch.int8, **path)  # fmt: skip
    _, accuracy = fit(model, opt)
    assert accuracy >= TEST_ACCURACY
    assert any("exp_avg_absmax" in s for s in opt.state.values())


@pytest.mark.parametrize("options", [dict(), dict(cautious=True, maximize=True, weight_decay=0.5)],
                         ids=str)  # fmt: skip
def test_triton_kernel_decodes_and_encodes_like_the_torch_path(options, monkeypatch):
    """The fused Triton path reads and writes the 8-bit codes itself; it must leave the same
    codes, block maxima and params as decoding, stepping and encoding in torch."""
    from optforge.optim.kernels import triton as triton_kernel

    if torch.cuda.is_available() or not triton_kernel.interpreted():
        pytest.skip("runs the kernel under Triton's interpreter (GPU: test_lion_gpu.py)")
    monkeypatch.setattr(triton_kernel, "STEP_CPU_TENSORS", True)
    calls = []
    real = triton_kernel.lion_step
    monkeypatch.setattr(triton_kernel, "lion_step",
                        lambda *a, **k: calls.append(k.get("absmaxes") is not None)
                        or real(*a, **k))  # fmt: skip
    shapes = [(5000,), (triton_kernel.CHUNK + 3000,), (64, 70), (10,)]  # tails, chunks, small
    results = []
    for path in (dict(fused=True), dict(fused=False)):
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
        opt = optforge.Lion(params, lr=1e-2, momentum_dtype=torch.int8, **options, **path)
        gen = torch.Generator().manual_seed(1)
        for _ in range(3):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
        results.append([(p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items()})
                        for p in params])  # fmt: skip
    assert True in calls  # the quantized tensors went through the kernel
    for (p, state), (q, ref) in zip(*results, strict=True):
        assert torch.equal(p, q)
        assert state.keys() == ref.keys()
        for key in state:
            assert torch.equal(state[key], ref[key]), key
