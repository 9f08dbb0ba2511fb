"""8-bit blockwise momentum: ~1 byte per parameter instead of 4.

The momentum is cut into blocks of ``BLOCK`` elements; each block stores its absolute maximum
(fp32) and one signed 8-bit code per element on a square-root scale:

    code = sign(m) * floor(127 * sqrt(|m| / absmax) + 1/2)
    m    = sign(code) * (code / 127)^2 * absmax

The square root spends the codes where momentum values are dense (near zero): an element at 1%
of its block's maximum keeps ~8% relative precision instead of the ~40% a linear code would
give, which matters because Lion's update is the sign of a mix of momentum and gradient. The
block maximum is exact, so the largest element of each block is stored without error.
Tensors smaller than ``MIN_NUMEL`` (biases, norms) stay fp32: the saving would be negligible.
Storage: 1 + 4 / BLOCK bytes per element (1.016).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

BLOCK = 256
MIN_NUMEL = 4096
CODE_MAX = 127.0


def quantized_size(numel: int) -> int:
    """Blocks (absmax entries) for a tensor of ``numel`` elements."""
    return math.ceil(numel / BLOCK)


def wants_quantized(p: Tensor) -> bool:
    return p.numel() >= MIN_NUMEL


def zeros(p: Tensor) -> tuple[Tensor, Tensor]:
    """Codes and block maxima of an all-zero momentum for ``p``."""
    codes = torch.zeros_like(p, dtype=torch.int8, memory_format=torch.contiguous_format)
    absmax = torch.zeros(quantized_size(p.numel()), dtype=torch.float32, device=p.device)
    return codes, absmax


def dequantize(codes: Tensor, absmax: Tensor) -> Tensor:
    """The fp32 momentum the codes stand for, shaped like ``codes``."""
    q = _blocks(codes.reshape(-1).to(torch.float32), absmax.numel()) / CODE_MAX
    values = q.abs().mul_(q).mul_(absmax[:, None])  # sign(q) * q^2 * absmax
    return values.reshape(-1)[: codes.numel()].reshape(codes.shape)


def quantize_(m: Tensor, codes: Tensor, absmax: Tensor) -> None:
    """Store fp32 ``m`` into ``codes`` and ``absmax`` in place (round to nearest code)."""
    blocks = _blocks(m.reshape(-1).to(torch.float32), absmax.numel())
    torch.amax(blocks.abs(), dim=1, out=absmax)
    scaled = blocks / absmax.clamp(min=torch.finfo(torch.float32).tiny)[:, None]
    # round half up (floor(x + 0.5)): what the Triton kernel computes too
    q = scaled.abs().sqrt_().mul_(CODE_MAX).add_(0.5).floor_().mul_(scaled.sign())
    codes.copy_(q.reshape(-1)[: codes.numel()].reshape(codes.shape))


def _blocks(flat: Tensor, n_blocks: int) -> Tensor:
    pad = n_blocks * BLOCK - flat.numel()
    if pad:
        flat = torch.nn.functional.pad(flat, (0, pad))
    return flat.reshape(n_blocks, BLOCK)
