"""Triton kernels behind ``triton.py`` (kept apart so that Triton is imported only when used).

Every kernel locates its chunk through the address table built by ``triton.py``; the element
types of the example pointers ``P0``, ``G0``, ``M0`` type the table's raw addresses.
"""

import triton
import triton.language as tl


@triton.jit
def _lerp(start, end, w, SMALL: tl.constexpr):
    # ATen's lerp: start + w*(end - start) for w < 0.5, else end - (1 - w)*(end - start).
    if SMALL:  # noqa: SIM108 (a constexpr branch, resolved when the kernel compiles)
        out = tl.fma(end - start, w, start)
    else:
        out = tl.fma(end - start, w - 1.0, end)
    return out


@triton.jit
def _store(ptr, idx, x, mask, seed, STOCHASTIC: tl.constexpr):
    """Store fp32 ``x`` in the pointer's type. bf16 is rounded here, with integer ops: to
    nearest even (what torch's casts do; Triton's interpreter would truncate), or
    stochastically: adding 16 random low bits before truncating rounds up with probability
    equal to the dropped fraction, so updates below bf16's resolution survive on average."""
    if ptr.dtype.element_ty == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        if STOCHASTIC:
            bits += tl.randint(seed, idx.to(tl.uint32)) & 0xFFFF
        else:
            bits += 0x7FFF + ((bits >> 16) & 1)
        rounded = (bits & 0xFFFF0000).to(tl.float32, bitcast=True)
        x = tl.where(x != x, x, rounded)  # NaN stays NaN (its bits could carry into the sign)
    tl.store(ptr + idx, x.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _sign(x):
    return tl.where(x > 0, 1.0, tl.where(x < 0, -1.0, 0.0))


@triton.jit
def _locate(table, chunk_tensor, chunk_start, nt, P0, G0, M0, CHUNK: tl.constexpr):
    k = tl.program_id(0)
    t = tl.load(chunk_tensor + k)
    start = tl.load(chunk_start + k)
    p = tl.load(table + t).to(tl.pointer_type(P0.dtype.element_ty))
    g = tl.load(table + nt + t).to(tl.pointer_type(G0.dtype.element_ty))
    m = tl.load(table + 2 * nt + t).to(tl.pointer_type(M0.dtype.element_ty))
    end = tl.minimum(tl.load(table + 3 * nt + t), start + CHUNK)
    return t, start, end, p, g, m


@triton.jit
def _load_momentum(m_ptr, table, nt, t, idx, mask, QUANT: tl.constexpr, QBLOCK: tl.constexpr):
    """fp32 momentum: stored as is, or decoded from 8-bit codes and per-block maxima
    (kernels/quant.py: m = sign(q) (q/127)^2 absmax)."""
    if QUANT:
        absmax_ptr = tl.load(table + 4 * nt + t).to(tl.pointer_type(tl.float32))
        q = tl.load(m_ptr + idx, mask=mask, other=0).to(tl.float32) / 127.0
        a = tl.load(absmax_ptr + idx // QBLOCK, mask=mask, other=0.0)
        m = tl.abs(q) * q * a
    else:
        m = tl.load(m_ptr + idx, mask=mask, other=0.0).to(tl.float32)
    return m


@triton.jit
def _store_quantized(m_ptr, table, nt, t, offset, end, m, mask, BLOCK: tl.constexpr,
                     QBLOCK: tl.constexpr):  # fmt: skip
    """Encode fp32 ``m`` (one BLOCK, aligned to QBLOCK) as codes and per-block maxima."""
    absmax_ptr = tl.load(table + 4 * nt + t).to(tl.pointer_type(tl.float32))
    blocks = tl.reshape(tl.where(mask, m, 0.0), (BLOCK // QBLOCK, QBLOCK))
    absmax = tl.max(tl.abs(blocks), axis=1)
    scaled = tl.div_rn(tl.abs(blocks), tl.maximum(absmax, 1.1754944e-38)[:, None])
    codes = tl.floor(tl.sqrt_rn(scaled) * 127.0 + 0.5) * _sign(blocks)
    idx = offset + tl.arange(0, BLOCK)
    tl.store(m_ptr + idx, tl.reshape(codes, (BLOCK,)).to(tl.int8), mask=mask)
    first = offset // QBLOCK + tl.arange(0, BLOCK // QBLOCK)
    tl.store(absmax_ptr + first, absmax, mask=first * QBLOCK < end)


@triton.jit
def _grad(g_ptr, idx, mask, grad_scale, MAXIMIZE: tl.constexpr, AMP: tl.constexpr):
    g = tl.load(g_ptr + idx, mask=mask, other=0.0).to(tl.float32)
    if AMP:
        g = g / tl.load(grad_scale)
    if MAXIMIZE:
        g = -g
    return g


@triton.jit
def count_agreement(
    table, chunk_tensor, chunk_start, nt, counts, w1, grad_scale, P0, G0, M0,
    MAXIMIZE: tl.constexpr, AMP: tl.constexpr, SMALL1: tl.constexpr, QUANT: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK: tl.constexpr, QBLOCK: tl.constexpr,
):  # fmt: skip
    """Cautious pass 1: per tensor, how many elements have sign(c) * g > 0."""
    t, start, end, p_ptr, g_ptr, m_ptr = _locate(
        table, chunk_tensor, chunk_start, nt, P0, G0, M0, CHUNK
    )
    total = tl.zeros([BLOCK], dtype=tl.int64)
    for offset in range(start, end, BLOCK):
        idx = offset + tl.arange(0, BLOCK)
        mask = idx < end
        g = _grad(g_ptr, idx, mask, grad_scale, MAXIMIZE, AMP)
        m = _load_momentum(m_ptr, table, nt, t, idx, mask, QUANT, QBLOCK)
        u = _sign(_lerp(m, g, w1, SMALL1))
        total += (mask & (u * g > 0)).to(tl.int64)
    tl.atomic_add(counts + t, tl.sum(total, axis=0))


@triton.jit
def step(
    table, chunk_tensor, chunk_start, nt, lr_ptr, lr_value, decay_value, weight_decay,
    w1, w2, scale, grad_scale, found_inf, seed, P0, G0, M0,
    MAXIMIZE: tl.constexpr, CAUTIOUS: tl.constexpr, LR_TENSOR: tl.constexpr,
    AMP: tl.constexpr, SKIP: tl.constexpr, STOCHASTIC: tl.constexpr,
    SMALL1: tl.constexpr, SMALL2: tl.constexpr, QUANT: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK: tl.constexpr, QBLOCK: tl.constexpr,
):  # fmt: skip
    t, start, end, p_ptr, g_ptr, m_ptr = _locate(
        table, chunk_tensor, chunk_start, nt, P0, G0, M0, CHUNK
    )
    if LR_TENSOR:
        lr = tl.load(lr_ptr).to(tl.float32)
        decay = 1.0 - lr * weight_decay
    else:
        lr = lr_value
        decay = decay_value
    if SKIP:  # an overflowed AMP step: the loads below are masked off, nothing is written
        end = tl.where(tl.load(found_inf) != 0, start, end)
    if CAUTIOUS:
        kept_scale = tl.load(scale + t)
    for offset in range(start, end, BLOCK):
        idx = offset + tl.arange(0, BLOCK)
        mask = idx < end
        g = _grad(g_ptr, idx, mask, grad_scale, MAXIMIZE, AMP)
        m = _load_momentum(m_ptr, table, nt, t, idx, mask, QUANT, QBLOCK)
        p = tl.load(p_ptr + idx, mask=mask, other=0.0).to(tl.float32)
        u = _sign(_lerp(m, g, w1, SMALL1))
        if CAUTIOUS:
            u = tl.where(u * g > 0, u * kept_scale, 0.0)
        p = tl.fma(u, -lr, p * decay)
        m = _lerp(m, g, w2, SMALL2)
        _store(p_ptr, idx, p, mask, seed + t, STOCHASTIC)
        if QUANT:
            _store_quantized(m_ptr, table, nt, t, offset, end, m, mask, BLOCK, QBLOCK)
        else:
            _store(m_ptr, idx, m, mask, seed, False)
