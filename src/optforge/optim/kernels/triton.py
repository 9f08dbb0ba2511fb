"""The fused multi-tensor Lion step for accelerator tensors, in Triton.

One launch steps every (param, grad, momentum) triple of a group that shares a dtype
combination: a device-side table holds the tensors' addresses and sizes, the tensors are cut into
fixed-size chunks, and each Triton program steps one chunk, reading p, g, m and writing p, m
once (20 bytes per fp32 parameter, the bandwidth floor). Per-tensor launches (bitsandbytes,
FlashLion) pay a launch and a tail per tensor; a flat buffer would force a copy or a new
parameter layout on the user. The arithmetic mirrors the C kernel (``lion_cpu.c``) and the
foreach path: fp32 compute, ATen's two-branch lerp, round-to-nearest-even storage.

What makes it safe for real training stacks:
  * the lr may be a device tensor (read in the kernel: no host sync, capturable in a CUDA
    graph); Lion has no step counter, so nothing else lives on the host;
  * ``grad_scale`` / ``found_inf`` from ``torch.amp.GradScaler`` are read in the kernel: grads
    are divided by the scale, and a step with ``found_inf != 0`` writes nothing, as torch's
    fused AdamW does;
  * the address tables are cached keyed on ``data_ptr()`` (never ``id()``: ``.data`` and
    ``DTensor.to_local()`` return new wrappers every step), so a steady-state step builds no
    table and copies nothing to the device.

Without a GPU the same kernels run on CPU tensors under Triton's interpreter
(``TRITON_INTERPRET=1`` set before Triton is imported): that is how CI tests their logic.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os

import torch
from torch import Tensor

_F32, _BF16, _F16 = torch.float32, torch.bfloat16, torch.float16
# (param dtype, momentum dtype) pairs the kernel steps; fp64 stays on the foreach path. int8
# momentum is the 8-bit blockwise format of kernels/quant.py (codes + per-block maxima).
SUPPORTED = {(p, m) for p in (_F32, _BF16, _F16) for m in (_F32, _BF16, _F16)}
SUPPORTED_QUANTIZED = {(p, torch.int8) for p in (_F32, _BF16, _F16)}
CHUNK = 32768  # elements per Triton program (a tensor's tail chunk is shorter)
BLOCK = 2048  # elements per loop iteration inside a program
# How every launch compiles. No floating-point contraction: the kernel writes its fused
# multiply-adds itself (tl.fma, as ATen's lerp), and a contracted ``a * b + c`` elsewhere (the
# 8-bit codes, a tensor lr's decay) would round differently from the torch paths and from the
# interpreter the tests run (Triton 3.9 contracts unless told; 3.10 will not by default).
COMPILE_OPTIONS = dict(num_warps=4, enable_fp_fusion=False)
_TABLE_CACHE_SIZE = 8  # address tables kept per process (a few param groups x dtype splits)


@functools.cache
def available() -> bool:
    """True when Triton imports and can run: a CUDA device, or the interpreter."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available() or interpreted()


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


# Tests set this (with TRITON_INTERPRET=1) to send CPU tensors through the Triton path of
# optforge.Lion instead of the C kernel.
STEP_CPU_TENSORS = False


def runs_on(device: torch.device) -> bool:
    """Whether the Triton kernel steps tensors on ``device`` in this process."""
    if device.type == "cuda":
        return available()
    return device.type == "cpu" and STEP_CPU_TENSORS and interpreted() and available()


def lion_step(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    *,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    weight_decay: float,
    maximize: bool,
    cautious: bool,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
    stochastic_seed: int | None = None,
    absmaxes: list[Tensor] | None = None,
) -> None:
    """Step contiguous, same-device tensors with one (param, momentum) dtype pair in place.

    ``lr`` may be a one-element tensor on the params' device (read by the kernel). When
    ``found_inf`` is given and nonzero nothing is written; ``grad_scale`` divides the grads.
    ``stochastic_seed``: round bf16 params stochastically with this step's seed.
    ``absmaxes``: the momenta are 8-bit codes (int8) with these per-block maxima, decoded and
    re-encoded in the kernel (kernels/quant.py's format)."""
    kernels = _kernels()
    table = _table(params, grads, exp_avgs, absmaxes)
    lr_tensor = isinstance(lr, Tensor)
    dummy = table.addresses  # any device tensor: stands for absent optional pointers
    options = Options(
        maximize=maximize, cautious=cautious, lr_tensor=lr_tensor, amp=grad_scale is not None,
        skip=found_inf is not None, stochastic=stochastic_seed is not None,
        quantized=absmaxes is not None, beta1=beta1, beta2=beta2,
    )  # fmt: skip
    grad_scale = grad_scale if grad_scale is not None else dummy
    first = (table.addresses, table.absmaxes)
    scale = dummy
    if cautious:
        counts = torch.zeros(len(params), dtype=torch.int64, device=params[0].device)
        for chunks, n, aligned in table.launches:
            kernels.count_agreement[(n,)](
                *first, chunks, len(params), counts, 1 - beta1, grad_scale,
                params[0], grads[0], exp_avgs[0], **options.count_constants(aligned, table.vec),
                **COMPILE_OPTIONS,
            )  # fmt: skip
        mean = counts.to(torch.float32) / table.numels.clamp(min=1).to(torch.float32)
        scale = 1.0 / mean.clamp_(min=1e-3)
    for chunks, n, aligned in table.launches:
        kernels.step[(n,)](
            *first, chunks, len(params),
            lr if lr_tensor else dummy, 0.0 if lr_tensor else float(lr),
            1.0 if lr_tensor else 1.0 - float(lr) * weight_decay, weight_decay,
            1 - beta1, 1 - beta2, scale, grad_scale,
            found_inf if found_inf is not None else dummy, stochastic_seed or 0,
            params[0], grads[0], exp_avgs[0], **options.step_constants(aligned, table.vec),
            **COMPILE_OPTIONS,
        )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Options:
    """What makes one compiled kernel differ from another, besides the dtypes and alignment:
    the launch above and the compile report (``bench/kernels.py``) build the kernels'
    compile-time constants from this one description, so they cannot drift apart."""

    maximize: bool = False
    cautious: bool = False
    lr_tensor: bool = False
    amp: bool = False
    skip: bool = False
    stochastic: bool = False
    quantized: bool = False
    beta1: float = 0.9
    beta2: float = 0.99

    def count_constants(self, aligned: bool, vec: int) -> dict:
        return dict(
            MAXIMIZE=self.maximize, AMP=self.amp, SMALL1=abs(1 - self.beta1) < 0.5,
            QUANT=self.quantized, BLOCK=BLOCK, QBLOCK=quant_block(), ALIGNED=aligned, VEC=vec,
        )  # fmt: skip

    def step_constants(self, aligned: bool, vec: int) -> dict:
        return dict(
            self.count_constants(aligned, vec), CAUTIOUS=self.cautious,
            LR_TENSOR=self.lr_tensor, SKIP=self.skip, STOCHASTIC=self.stochastic,
            SMALL2=abs(1 - self.beta2) < 0.5,
        )  # fmt: skip


# Triton's type for each runtime argument of the kernels (``_triton_lion.py``), in order; the
# launch passes them positionally and the compile report compiles with exactly these.
_POINTERS = dict(table="*i64", absmaxes="*i64", chunks="*i64")
STEP_ARGUMENTS = dict(
    **_POINTERS, nt="i32", lr_ptr="*fp32", lr_value="fp32", decay_value="fp32",
    weight_decay="fp32", w1="fp32", w2="fp32", scale="*fp32", grad_scale="*fp32",
    found_inf="*fp32", seed="i32",
)  # fmt: skip
COUNT_ARGUMENTS = dict(**_POINTERS, nt="i32", counts="*i64", w1="fp32", grad_scale="*fp32")
TRITON_TYPES = {_F32: "fp32", _BF16: "bf16", _F16: "fp16", torch.int8: "i8"}


def signature(arguments: dict, p_dtype: torch.dtype, m_dtype: torch.dtype) -> dict:
    """A kernel's full Triton signature: its arguments, then the typed example pointers."""
    p, m = TRITON_TYPES[p_dtype], TRITON_TYPES[m_dtype]
    return dict(arguments, P0=f"*{p}", G0=f"*{p}", M0=f"*{m}")


# ---------------------------------------------------------------------------------------------
# Address tables


def quant_block() -> int:
    from optforge.optim.kernels import quant

    return quant.BLOCK


ALIGNMENT = 16  # bytes: one 128-bit access


def vector_width(*dtypes: torch.dtype) -> int:
    """Elements per 128-bit access of the narrowest of ``dtypes`` (4 fp32, 8 bf16, 16 int8):
    the granularity at which an aligned chunk's bounds must fall."""
    return ALIGNMENT // min(d.itemsize for d in dtypes)


class _Table:
    """Device tensors describing one list of triples: 3 x nt addresses, the tensors' sizes,
    (8-bit momentum: the block maxima's addresses, passed as their own table,) and two chunk
    lists of (tensor index, first element, end): the aligned chunks, stepped with 128-bit
    accesses, and the rest.

    A tensor whose p, g, m (and block maxima) all start on a 16-byte boundary is aligned up to
    its last whole group of ``vec`` elements (of QBLOCK elements for 8-bit momentum, whose
    blocks must not straddle two launches); its remaining few elements, and every element of
    a tensor that is not aligned, go to the unaligned list. Both lists are built here, once
    per cached table, so a steady-state step checks nothing per tensor."""

    def __init__(self, addresses: list[int], numels: list[int], device: torch.device,
                 vec: int, group: int) -> None:  # fmt: skip
        nt = len(numels)
        rows = len(addresses) // nt  # 3, or 4 with the block maxima
        aligned_chunks: list[int] = []
        other_chunks: list[int] = []
        for index, n in enumerate(numels):
            aligned = all(addresses[r * nt + index] % ALIGNMENT == 0 for r in range(rows))
            split = n // group * group if aligned else 0
            for lo in range(0, split, CHUNK):
                aligned_chunks += (index, lo, min(lo + CHUNK, split))
            for lo in range(split, n, CHUNK):
                other_chunks += (index, lo, min(lo + CHUNK, n))
        width = 3 * nt
        host = addresses[:width] + numels + addresses[width:] + aligned_chunks + other_chunks
        packed = torch.tensor(host, dtype=torch.int64).to(device)
        table_end = len(addresses) + nt
        self.addresses = packed[:width]
        self.numels = packed[width : width + nt]
        self.absmaxes = packed[width + nt : table_end] if rows == 4 else self.addresses
        split = table_end + len(aligned_chunks)
        launches = (
            (packed[table_end:split], len(aligned_chunks) // 3, True),
            (packed[split:], len(other_chunks) // 3, False),
        )
        self.launches = tuple(launch for launch in launches if launch[1])
        self.vec = vec


_tables: list[tuple[tuple, list[int], _Table]] = []  # most recently used first
# The C methods themselves: Tensor's Python-level wrappers cost twice as much per call.
_data_ptr, _numel = torch._C.TensorBase.data_ptr, torch._C.TensorBase.numel


def _table(params, grads, exp_avgs, absmaxes=None) -> _Table:
    """The cached table for these tensors. What identifies it is what the launch needs
    anyway, every address and size, gathered by C-level ``map`` and compared as one list (a
    steady-state step does no other work per tensor, and hashes nothing), plus the dtypes
    that fix the vector width."""
    tensors = (params, grads, exp_avgs, absmaxes or ())
    key = list(map(_data_ptr, itertools.chain.from_iterable(tensors)))
    key += map(_numel, params)
    kind = (params[0].device, params[0].dtype, exp_avgs[0].dtype, absmaxes is not None)
    for i, (cached_kind, cached_key, table) in enumerate(_tables):
        if cached_key == key and cached_kind == kind:
            if i:
                _tables.insert(0, _tables.pop(i))
            return table
    device, p_dtype, m_dtype, quantized = kind
    vec = vector_width(p_dtype, m_dtype)
    group = quant_block() if quantized else vec
    n_addresses = len(key) - len(params)
    table = _Table(key[:n_addresses], key[n_addresses:], device, vec, group)
    _tables.insert(0, (kind, key, table))
    del _tables[_TABLE_CACHE_SIZE:]
    return table


def clear_cache() -> None:
    """Forget the cached address tables (they hold device memory, a few bytes per tensor)."""
    _tables.clear()


@functools.cache
def _kernels():
    """The jitted kernels, imported at first use so that importing optforge never imports
    Triton (and the interpreter switch is read when a test has set it)."""
    from optforge.optim.kernels import _triton_lion

    return _triton_lion
