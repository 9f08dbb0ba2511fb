"""Triton kernels behind ``triton.py`` (kept apart so that Triton is imported only when used).

Every program steps one chunk, read from a chunk list of (tensor index, first element, end)
triples built by ``triton.py``; the element types of the example pointers ``P0``, ``G0``, ``M0``
type the address table's raw addresses.

``ALIGNED`` chunks are the 128-bit path: every tensor they touch starts on a 16-byte boundary
and the chunk's bounds are multiples of ``VEC`` elements (16 bytes of the narrowest tensor), so
the kernel tells Triton so (``tl.multiple_of``) and Triton emits vector loads and stores
(``ld.global.v4``). Full blocks are stepped without a mask, the chunk's last partial block with
one; both vectorize, because the mask is constant over each aligned group of ``VEC``.
Unaligned chunks (views at odd offsets, the last few elements of a tensor) run the same code
without the hints: scalar accesses, same arithmetic, same bits.
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
def _load(ptr, idx, mask, MASKED: tl.constexpr):
    if MASKED:  # noqa: SIM108
        x = tl.load(ptr + idx, mask=mask, other=0)
    else:
        x = tl.load(ptr + idx)
    return x


@triton.jit
def _store(ptr, idx, x, mask, seed, STOCHASTIC: tl.constexpr, MASKED: tl.constexpr):
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
    if MASKED:
        tl.store(ptr + idx, x.to(ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(ptr + idx, x.to(ptr.dtype.element_ty))


@triton.jit
def _sign(x):
    return tl.where(x > 0, 1.0, tl.where(x < 0, -1.0, 0.0))


@triton.jit
def _locate(table, chunks, nt, P0, G0, M0, ALIGNED: tl.constexpr, VEC: tl.constexpr):
    k = tl.program_id(0)
    t = tl.load(chunks + 3 * k)
    start = tl.load(chunks + 3 * k + 1)
    end = tl.load(chunks + 3 * k + 2)
    p = tl.load(table + t).to(tl.pointer_type(P0.dtype.element_ty))
    g = tl.load(table + nt + t).to(tl.pointer_type(G0.dtype.element_ty))
    m = tl.load(table + 2 * nt + t).to(tl.pointer_type(M0.dtype.element_ty))
    if ALIGNED:  # promises checked on the host (triton.py: _Table)
        p = tl.multiple_of(p, 16)
        g = tl.multiple_of(g, 16)
        m = tl.multiple_of(m, 16)
        start = tl.multiple_of(start, VEC)
        end = tl.multiple_of(end, VEC)
    return t, start, end, p, g, m


@triton.jit
def _absmax_pointer(absmaxes, t, ALIGNED: tl.constexpr):
    ptr = tl.load(absmaxes + t).to(tl.pointer_type(tl.float32))
    if ALIGNED:
        ptr = tl.multiple_of(ptr, 16)
    return ptr


@triton.jit
def _load_momentum(m_ptr, absmaxes, t, offset, end, idx, mask, QUANT: tl.constexpr,
                   QBLOCK: tl.constexpr, BLOCK: tl.constexpr, ALIGNED: tl.constexpr,
                   MASKED: tl.constexpr):  # fmt: skip
    """fp32 momentum: stored as is, or decoded from 8-bit codes and per-block maxima
    (kernels/quant.py: m = sign(q) (q/127)^2 absmax). A block's maxima are read once, as a
    vector, and broadcast over its elements."""
    if QUANT:
        absmax_ptr = _absmax_pointer(absmaxes, t, ALIGNED)
        q = _load(m_ptr, idx, mask, MASKED).to(tl.float32) / 127.0
        first = offset // QBLOCK + tl.arange(0, BLOCK // QBLOCK)
        a = tl.load(absmax_ptr + first, mask=first * QBLOCK < end, other=0.0)
        qq = tl.reshape(tl.abs(q) * q, (BLOCK // QBLOCK, QBLOCK))
        m = tl.reshape(qq * a[:, None], (BLOCK,))
    else:
        m = _load(m_ptr, idx, mask, MASKED).to(tl.float32)
    return m


@triton.jit
def _store_quantized(m_ptr, absmaxes, t, offset, end, m, mask, BLOCK: tl.constexpr,
                     QBLOCK: tl.constexpr, ALIGNED: tl.constexpr,
                     MASKED: tl.constexpr):  # fmt: skip
    """Encode fp32 ``m`` (one BLOCK, aligned to QBLOCK) as codes and per-block maxima."""
    absmax_ptr = _absmax_pointer(absmaxes, t, ALIGNED)
    if MASKED:
        m = tl.where(mask, m, 0.0)
    blocks = tl.reshape(m, (BLOCK // QBLOCK, QBLOCK))
    absmax = tl.max(tl.abs(blocks), axis=1)
    scaled = tl.div_rn(tl.abs(blocks), tl.maximum(absmax, 1.1754944e-38)[:, None])
    codes = tl.floor(tl.sqrt_rn(scaled) * 127.0 + 0.5) * _sign(blocks)
    idx = offset + tl.arange(0, BLOCK)
    _store(m_ptr, idx, tl.reshape(codes, (BLOCK,)).to(tl.int8), mask, 0, False, MASKED)
    first = offset // QBLOCK + tl.arange(0, BLOCK // QBLOCK)
    tl.store(absmax_ptr + first, absmax, mask=first * QBLOCK < end)


@triton.jit
def _grad_scale(grad_scale, AMP: tl.constexpr):
    """AMP's loss scale, read once per program (the grads are divided by it)."""
    gs = 1.0
    if AMP:
        gs = tl.load(grad_scale)
    return gs


@triton.jit
def _grad(g_ptr, idx, mask, gs, MAXIMIZE: tl.constexpr, AMP: tl.constexpr,
          MASKED: tl.constexpr):  # fmt: skip
    g = _load(g_ptr, idx, mask, MASKED).to(tl.float32)
    if AMP:
        g = g / gs
    if MAXIMIZE:
        g = -g
    return g


@triton.jit
def _count_block(p_ptr, g_ptr, m_ptr, absmaxes, t, offset, end, w1, gs,
                 MAXIMIZE: tl.constexpr, AMP: tl.constexpr, SMALL1: tl.constexpr,
                 QUANT: tl.constexpr, BLOCK: tl.constexpr, QBLOCK: tl.constexpr,
                 ALIGNED: tl.constexpr, MASKED: tl.constexpr):  # fmt: skip
    idx = offset + tl.arange(0, BLOCK)
    mask = idx < end
    g = _grad(g_ptr, idx, mask, gs, MAXIMIZE, AMP, MASKED)
    m = _load_momentum(m_ptr, absmaxes, t, offset, end, idx, mask, QUANT, QBLOCK, BLOCK,
                       ALIGNED, MASKED)  # fmt: skip
    agree = _sign(_lerp(m, g, w1, SMALL1)) * g > 0
    if MASKED:
        agree = agree & mask
    return agree.to(tl.int32)


@triton.jit
def count_agreement(
    table, absmaxes, chunks, nt, counts, w1, grad_scale, P0, G0, M0,
    MAXIMIZE: tl.constexpr, AMP: tl.constexpr, SMALL1: tl.constexpr, QUANT: tl.constexpr,
    BLOCK: tl.constexpr, QBLOCK: tl.constexpr, ALIGNED: tl.constexpr, VEC: tl.constexpr,
):  # fmt: skip
    """Cautious pass 1: per tensor, how many elements have sign(c) * g > 0."""
    t, start, end, p_ptr, g_ptr, m_ptr = _locate(table, chunks, nt, P0, G0, M0, ALIGNED, VEC)
    gs = _grad_scale(grad_scale, AMP)
    total = tl.zeros([BLOCK], dtype=tl.int32)  # a chunk's count fits: CHUNK < 2^31
    full_end = start + (end - start) // BLOCK * BLOCK
    for offset in range(start, full_end, BLOCK):
        total += _count_block(p_ptr, g_ptr, m_ptr, absmaxes, t, offset, end, w1, gs,
                              MAXIMIZE, AMP, SMALL1, QUANT, BLOCK, QBLOCK, ALIGNED,
                              False)  # fmt: skip
    if full_end < end:
        total += _count_block(p_ptr, g_ptr, m_ptr, absmaxes, t, full_end, end, w1, gs,
                              MAXIMIZE, AMP, SMALL1, QUANT, BLOCK, QBLOCK, ALIGNED,
                              True)  # fmt: skip
    tl.atomic_add(counts + t, tl.sum(total, axis=0).to(tl.int64))


@triton.jit
def _step_block(p_ptr, g_ptr, m_ptr, absmaxes, t, offset, end, lr, decay, w1, w2,
                kept_scale, gs, seed,
                MAXIMIZE: tl.constexpr, CAUTIOUS: tl.constexpr, AMP: tl.constexpr,
                STOCHASTIC: tl.constexpr, SMALL1: tl.constexpr, SMALL2: tl.constexpr,
                QUANT: tl.constexpr, BLOCK: tl.constexpr, QBLOCK: tl.constexpr,
                ALIGNED: tl.constexpr, MASKED: tl.constexpr):  # fmt: skip
    idx = offset + tl.arange(0, BLOCK)
    mask = idx < end
    g = _grad(g_ptr, idx, mask, gs, MAXIMIZE, AMP, MASKED)
    m = _load_momentum(m_ptr, absmaxes, t, offset, end, idx, mask, QUANT, QBLOCK, BLOCK,
                       ALIGNED, MASKED)  # fmt: skip
    p = _load(p_ptr, idx, mask, MASKED).to(tl.float32)
    u = _sign(_lerp(m, g, w1, SMALL1))
    if CAUTIOUS:
        u = tl.where(u * g > 0, u * kept_scale, 0.0)
    p = tl.fma(u, -lr, p * decay)
    m = _lerp(m, g, w2, SMALL2)
    _store(p_ptr, idx, p, mask, seed + t, STOCHASTIC, MASKED)
    if QUANT:
        _store_quantized(m_ptr, absmaxes, t, offset, end, m, mask, BLOCK, QBLOCK, ALIGNED,
                         MASKED)  # fmt: skip
    else:
        _store(m_ptr, idx, m, mask, seed, False, MASKED)


@triton.jit
def step(
    table, absmaxes, chunks, nt, lr_ptr, lr_value, decay_value, weight_decay,
    w1, w2, scale, grad_scale, found_inf, seed, P0, G0, M0,
    MAXIMIZE: tl.constexpr, CAUTIOUS: tl.constexpr, LR_TENSOR: tl.constexpr,
    AMP: tl.constexpr, SKIP: tl.constexpr, STOCHASTIC: tl.constexpr,
    SMALL1: tl.constexpr, SMALL2: tl.constexpr, QUANT: tl.constexpr,
    BLOCK: tl.constexpr, QBLOCK: tl.constexpr, ALIGNED: tl.constexpr, VEC: tl.constexpr,
):  # fmt: skip
    t, start, end, p_ptr, g_ptr, m_ptr = _locate(table, chunks, nt, P0, G0, M0, ALIGNED, VEC)
    if LR_TENSOR:
        lr = tl.load(lr_ptr).to(tl.float32)
        decay = 1.0 - lr * weight_decay
    else:
        lr = lr_value
        decay = decay_value
    if SKIP:  # an overflowed AMP step: no block runs, nothing is written
        end = tl.where(tl.load(found_inf) != 0, start, end)
    gs = _grad_scale(grad_scale, AMP)
    kept_scale = 1.0
    if CAUTIOUS:
        kept_scale = tl.load(scale + t)
    full_end = start + (end - start) // BLOCK * BLOCK
    for offset in range(start, full_end, BLOCK):
        _step_block(p_ptr, g_ptr, m_ptr, absmaxes, t, offset, end, lr, decay, w1, w2,
                    kept_scale, gs, seed, MAXIMIZE, CAUTIOUS, AMP, STOCHASTIC, SMALL1,
                    SMALL2, QUANT, BLOCK, QBLOCK, ALIGNED, False)  # fmt: skip
    if full_end < end:
        _step_block(p_ptr, g_ptr, m_ptr, absmaxes, t, full_end, end, lr, decay, w1, w2,
                    kept_scale, gs, seed, MAXIMIZE, CAUTIOUS, AMP, STOCHASTIC, SMALL1,
                    SMALL2, QUANT, BLOCK, QBLOCK, ALIGNED, True)  # fmt: skip
