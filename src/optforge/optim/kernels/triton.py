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

import functools
import os
from collections import OrderedDict

import torch
from torch import Tensor

_F32, _BF16, _F16 = torch.float32, torch.bfloat16, torch.float16
# (param dtype, momentum dtype) pairs the kernel steps; fp64 stays on the foreach path. int8
# momentum is the 8-bit blockwise format of kernels/quant.py (codes + per-block maxima).
SUPPORTED = {(p, m) for p in (_F32, _BF16, _F16) for m in (_F32, _BF16, _F16)}
SUPPORTED_QUANTIZED = {(p, torch.int8) for p in (_F32, _BF16, _F16)}
CHUNK = 32768  # elements per Triton program (a tensor's tail chunk is shorter)
BLOCK = 2048  # elements per loop iteration inside a program
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
    device = params[0].device
    table = _table(params, grads, exp_avgs, absmaxes)
    quant = dict(QUANT=absmaxes is not None, QBLOCK=quant_block())
    lr_tensor = isinstance(lr, Tensor)
    dummy = table.addresses  # any device tensor: stands for absent optional pointers
    scale = dummy
    if cautious:
        counts = torch.zeros(len(params), dtype=torch.int64, device=device)
        kernels.count_agreement[(table.n_chunks,)](
            table.addresses, table.chunk_tensor, table.chunk_start, len(params), counts,
            1 - beta1, grad_scale if grad_scale is not None else dummy, params[0], grads[0],
            exp_avgs[0],
            MAXIMIZE=maximize, AMP=grad_scale is not None, SMALL1=abs(1 - beta1) < 0.5,
            CHUNK=CHUNK, BLOCK=BLOCK, **quant,
        )  # fmt: skip
        mean = counts.to(torch.float32) / table.numels.clamp(min=1).to(torch.float32)
        scale = 1.0 / mean.clamp_(min=1e-3)
    kernels.step[(table.n_chunks,)](
        table.addresses, table.chunk_tensor, table.chunk_start, len(params),
        lr if lr_tensor else dummy, 0.0 if lr_tensor else float(lr),
        1.0 if lr_tensor else 1.0 - float(lr) * weight_decay, weight_decay,
        1 - beta1, 1 - beta2, scale,
        grad_scale if grad_scale is not None else dummy,
        found_inf if found_inf is not None else dummy, stochastic_seed or 0,
        params[0], grads[0], exp_avgs[0],
        MAXIMIZE=maximize, CAUTIOUS=cautious, LR_TENSOR=lr_tensor,
        AMP=grad_scale is not None, SKIP=found_inf is not None,
        STOCHASTIC=stochastic_seed is not None,
        SMALL1=abs(1 - beta1) < 0.5, SMALL2=abs(1 - beta2) < 0.5,
        CHUNK=CHUNK, BLOCK=BLOCK, **quant,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Address tables


def quant_block() -> int:
    from optforge.optim.kernels import quant

    return quant.BLOCK


class _Table:
    """Device tensors describing one list of triples: 3 x nt addresses, the tensors' sizes,
    (8-bit momentum: the block maxima's addresses,) and per chunk (tensor index, first
    element)."""

    def __init__(self, params, grads, exp_avgs, absmaxes=None) -> None:
        device = params[0].device
        numels = [p.numel() for p in params]
        addresses = [t.data_ptr() for ts in (params, grads, exp_avgs) for t in ts] + numels
        addresses += [t.data_ptr() for t in absmaxes or ()]
        chunk_tensor, chunk_start = [], []
        for index, n in enumerate(numels):
            starts = range(0, n, CHUNK)
            chunk_tensor += [index] * len(starts)
            chunk_start += starts
        host = torch.tensor(addresses + chunk_tensor + chunk_start, dtype=torch.int64)
        packed = host.to(device)
        nt, nc, width = len(params), len(chunk_tensor), (5 if absmaxes else 4) * len(params)
        self.addresses = packed[:width]
        self.numels = packed[3 * nt : 4 * nt]
        self.chunk_tensor = packed[width : width + nc]
        self.chunk_start = packed[width + nc :]
        self.n_chunks = nc


_tables: OrderedDict[tuple, _Table] = OrderedDict()


def _table(params, grads, exp_avgs, absmaxes=None) -> _Table:
    key = (params[0].device, *((t.data_ptr(), t.numel()) for t in params),
           *(t.data_ptr() for t in grads), *(t.data_ptr() for t in exp_avgs),
           *(t.data_ptr() for t in absmaxes or ()))  # fmt: skip
    table = _tables.get(key)
    if table is None:
        table = _tables[key] = _Table(params, grads, exp_avgs, absmaxes)
        while len(_tables) > _TABLE_CACHE_SIZE:
            _tables.popitem(last=False)
    else:
        _tables.move_to_end(key)
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
