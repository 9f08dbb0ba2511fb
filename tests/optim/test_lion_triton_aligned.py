"""The Triton kernel's aligned (128-bit) fast path against its unaligned path and the
single-tensor loop, bit for bit, under Triton's interpreter: tensors on fresh allocations
(16-byte aligned: stepped by aligned chunks up to their last whole vector) and tensors at odd
element offsets (every chunk unaligned), at sizes around the vector, the block and the chunk.
Which chunks ran aligned is read from the launch tables, so a path that silently fell back
to the unaligned code would fail here."""

from __future__ import annotations

import importlib

import pytest
import torch

import optforge
from optforge.optim.kernels import quant
from optforge.optim.kernels import triton as triton_kernel
from tests.optim.test_lion_triton import DTYPE_PAIRS

pytest.importorskip("triton")
lion_module = importlib.import_module("optforge.optim.lion")
B, C = triton_kernel.BLOCK, triton_kernel.CHUNK
FLOAT_SIZES = [0, 1, 3, 8, B, B + 1, 2 * B + 8, C + 1]
INT8_SIZES = [4096, 4097, 4096 + 3 * 256 + 5]  # quantized from 4096 elements up
PAIRS = DTYPE_PAIRS + [(p, torch.int8) for p in (torch.float32, torch.bfloat16, torch.float16)]
OPTIONS = {
    "plain": dict(),
    "decay+maximize+tensor-lr": dict(weight_decay=0.3, maximize=True, lr=torch.tensor(0.01)),
    "cautious": dict(cautious=True, betas=(0.3, 0.6)),
}


@pytest.fixture(autouse=True)
def triton_on_cpu(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: tests/optim/test_lion_gpu.py runs the compiled kernel")
    if not triton_kernel.interpreted():
        pytest.skip("Triton's interpreter is off (TRITON_INTERPRET=1, tests/conftest.py)")
    monkeypatch.setattr(triton_kernel, "STEP_CPU_TENSORS", True)
    triton_kernel.clear_cache()


def _placed(values: torch.Tensor, odd: bool) -> torch.Tensor:
    """``values`` on a fresh allocation, or as a view one element into a larger buffer (its
    address then is not a multiple of 16 bytes)."""
    if not odd:
        return values.clone()
    buffer = torch.zeros(values.numel() + 1, dtype=values.dtype)
    view = buffer[1:].view(values.shape)
    view.copy_(values)
    return view


def _run(p_dtype, m_dtype, options, path, odd, steps=2, seed=0):
    sizes = INT8_SIZES if m_dtype == torch.int8 else FLOAT_SIZES
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(_placed(torch.randn(n, generator=gen).to(p_dtype), odd))
              for n in sizes]  # fmt: skip
    opt = optforge.Lion(params, **{"lr": 1e-2, **options}, momentum_dtype=m_dtype, **path)
    torch.manual_seed(seed)  # the stochastic-rounding seeds
    for _ in range(steps):
        for p in params:
            p.grad = _placed(torch.randn(p.shape, generator=gen).to(p_dtype), odd)
        opt.step()
    out = [p.detach().clone() for p in params]
    for p in params:
        state = opt.state[p]
        out += [state["exp_avg"].clone()]
        if "exp_avg_absmax" in state:
            out += [state["exp_avg_absmax"].clone()]
    return out


def _aligned_elements() -> tuple[int, int]:
    """(elements in aligned chunks, in unaligned chunks) of the last step's launch table."""
    totals = [0, 0]
    _, _, table = triton_kernel._tables[0]  # the most recently used
    for chunks, _, aligned in table.launches:
        rows = chunks.view(-1, 3)
        totals[0 if aligned else 1] += int((rows[:, 2] - rows[:, 1]).sum())
    return totals[0], totals[1]


def _assert_equal(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b), f"max difference {(a.float() - b.float()).abs().max()}"


@pytest.mark.parametrize("option", OPTIONS, ids=str)
@pytest.mark.parametrize(("p_dtype", "m_dtype"), PAIRS, ids=str)
def test_aligned_and_unaligned_launches_match_the_loop_bit_for_bit(p_dtype, m_dtype, option):
    options = OPTIONS[option]
    loop = _run(p_dtype, m_dtype, options, dict(fused=False, foreach=False), odd=False)
    for odd in (False, True):
        triton_kernel.clear_cache()
        fused = _run(p_dtype, m_dtype, options, dict(fused=True), odd=odd)
        _assert_equal(fused, loop)
        aligned, unaligned = _aligned_elements()
        if odd:
            assert aligned == 0 and unaligned > 0
        else:  # all but each tensor's last partial vector (partial 8-bit block) is aligned
            group = quant.BLOCK if m_dtype == torch.int8 else triton_kernel.vector_width(
                p_dtype, m_dtype)  # fmt: skip
            sizes = INT8_SIZES if m_dtype == torch.int8 else FLOAT_SIZES
            assert aligned == sum(n // group * group for n in sizes)
            assert unaligned == sum(n % group for n in sizes)


@pytest.mark.parametrize("m_dtype", [torch.bfloat16, torch.float32, torch.int8], ids=str)
def test_stochastic_rounding_is_the_same_aligned_or_not(m_dtype):
    """Stochastic rounding draws its bits from (seed, element index), not from where the
    tensor lives, so both launches give the same bits (the loop path uses torch's RNG)."""
    options = dict(stochastic_rounding=True, weight_decay=0.1)
    results = []
    for odd in (False, True):
        triton_kernel.clear_cache()
        results.append(_run(torch.bfloat16, m_dtype, options, dict(fused=True), odd=odd))
        assert (_aligned_elements()[0] == 0) == odd
    _assert_equal(*results)


@pytest.mark.parametrize("found_inf", [0.0, 1.0])
@pytest.mark.parametrize("p_dtype", [torch.float32, torch.bfloat16], ids=str)
def test_amp_grad_scale_and_found_inf_on_both_launches(p_dtype, found_inf):
    gen = torch.Generator().manual_seed(3)
    values = [torch.randn(n, generator=gen).to(p_dtype) for n in FLOAT_SIZES]
    grads = [torch.randn(n, generator=gen).to(p_dtype) * 1024 for n in FLOAT_SIZES]
    scale, inf = torch.tensor(1024.0), torch.tensor(found_inf)
    results = []
    for path, odd in ((dict(fused=False, foreach=False), False), (dict(fused=True), False),
                      (dict(fused=True), True)):  # fmt: skip
        ps = [_placed(v, odd) for v in values]
        gs = [_placed(g, odd) for g in grads]
        ms = [torch.zeros_like(v) for v in values]
        lion_module.lion(ps, gs, ms, lr=1e-2, beta1=0.9, beta2=0.99, weight_decay=0.1,
                         grad_scale=scale, found_inf=inf, **path)  # fmt: skip
        results.append([*ps, *ms])
    _assert_equal(results[1], results[0])
    _assert_equal(results[2], results[0])
    if found_inf:
        _assert_equal(results[0][: len(values)], values)
