"""Small models written for K copies at once: the proxies of the paper, sized for one CPU.

Every model keeps the parameters of K candidates in one flat matrix ``theta [K, P]`` (so one
program statement is one tensor op over a candidate's parameters) and reads them through
views ``[K, *shape]``; the forward pass uses batched matmuls over the K copies, so training K
candidates costs far less than K separate runs. Attention is plain matmul + softmax
(``scaled_dot_product_attention`` has no fast batched path on CPU).

- ``ViT``: patch embedding, pre-norm Transformer blocks, mean pooling, linear head;
- ``MLP``: one hidden layer, for flattened small images;
- ``CharLM``: a causal character-level Transformer language model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from optforge.program.layout import Segments, matrix_view


@dataclass(frozen=True)
class ParamSpec:
    name: str
    shape: tuple[int, ...]
    init: str  # "normal:<std>", "zeros", "ones"
    hidden: bool = False  # a hidden weight matrix: the programs' per-tensor input ``hidden``


class BatchedModel:
    """A model for K copies: ``specs`` list its tensors, ``forward(views, x)`` runs them.

    Tensors are labelled for the programs' per-tensor inputs: ``hidden`` marks the weight
    matrices inside the Transformer blocks (attention and MLP) and an MLP's hidden layer;
    patch and token embeddings, positions, the head, biases and norms are not hidden.
    ``fan_in_first``: weights are stored ``[in, out]`` (``x @ w``), the transpose of torch's
    Linear, so Muon's shape factor ``aspect`` is ``sqrt(max(1, out / in))`` = cols over rows."""

    specs: list[ParamSpec]
    tokens: int = 1  # positions per input item (patches, characters): sizes forward passes
    fan_in_first: bool = True

    @property
    def sizes(self) -> list[int]:
        return [math.prod(s.shape) for s in self.specs]

    def layout(self, copies: int = 1, device: torch.device | str = "cpu") -> Segments:
        """The flat layout of ``copies`` candidates' parameters, row after row: each tensor's
        matrix view, whether it is hidden, and its shape factor."""
        views = [matrix_view(s.shape) for s in self.specs]
        if self.fan_in_first:
            aspect = [math.sqrt(max(1.0, c / r)) if r > 1 else 1.0 for r, c in views]
        else:
            aspect = [math.sqrt(max(1.0, r / c)) if c else 1.0 for r, c in views]
        return Segments([s.shape for s in self.specs] * copies, device,
                        hidden=[s.hidden for s in self.specs] * copies,
                        aspect=aspect * copies)  # fmt: skip

    @property
    def num_params(self) -> int:
        return sum(self.sizes)

    def init(self, seeds: list[int]) -> Tensor:
        """theta [K, P]; row k depends only on seeds[k] (batched == one at a time)."""
        rows = []
        for seed in seeds:
            gen = torch.Generator().manual_seed(seed)
            parts = []
            for spec, n in zip(self.specs, self.sizes, strict=True):
                if spec.init == "zeros":
                    parts.append(torch.zeros(n))
                elif spec.init == "ones":
                    parts.append(torch.ones(n))
                else:
                    std = float(spec.init.split(":")[1])
                    parts.append(torch.randn(n, generator=gen) * std)
            rows.append(torch.cat(parts))
        return torch.stack(rows)

    def views(self, theta: Tensor) -> dict[str, Tensor]:
        k = theta.shape[0]
        parts = theta.split(self.sizes, dim=1)
        return {s.name: p.reshape(k, *s.shape) for s, p in zip(self.specs, parts, strict=True)}

    def prepare(self, x: Tensor) -> Tensor:
        """Data in the layout ``forward`` reads, computed once per dataset, not per step."""
        return x

    def forward(self, p: dict[str, Tensor], x: Tensor) -> Tensor:
        raise NotImplementedError


def _linear(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """x [K, ..., i] @ w [K, i, o] + b [K, o], one batched matmul over the K copies."""
    k, o = x.shape[0], w.shape[-1]
    y = torch.bmm(x.reshape(k, -1, x.shape[-1]), w)
    if b is not None:
        y = y + b[:, None, :]
    return y.reshape(*x.shape[:-1], o)


def _layer_norm(x: Tensor, g: Tensor, b: Tensor) -> Tensor:
    x = F.layer_norm(x, x.shape[-1:])
    shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
    return x * g.reshape(shape) + b.reshape(shape)


def _block_specs(prefix: str, d: int, mlp: int) -> list[ParamSpec]:
    std = 0.02
    return [
        ParamSpec(f"{prefix}.ln1.g", (d,), "ones"), ParamSpec(f"{prefix}.ln1.b", (d,), "zeros"),
        ParamSpec(f"{prefix}.qkv.w", (d, 3 * d), f"normal:{std}", hidden=True),
        ParamSpec(f"{prefix}.qkv.b", (3 * d,), "zeros"),
        ParamSpec(f"{prefix}.out.w", (d, d), f"normal:{std}", hidden=True),
        ParamSpec(f"{prefix}.out.b", (d,), "zeros"),
        ParamSpec(f"{prefix}.ln2.g", (d,), "ones"), ParamSpec(f"{prefix}.ln2.b", (d,), "zeros"),
        ParamSpec(f"{prefix}.fc1.w", (d, mlp), f"normal:{std}", hidden=True),
        ParamSpec(f"{prefix}.fc1.b", (mlp,), "zeros"),
        ParamSpec(f"{prefix}.fc2.w", (mlp, d), f"normal:{std}", hidden=True),
        ParamSpec(f"{prefix}.fc2.b", (d,), "zeros"),
    ]  # fmt: skip


def _trunk_specs(depth: int, dim: int, mlp: int, outputs: int) -> list[ParamSpec]:
    """The Transformer blocks, final norm and linear head that ViT and CharLM share."""
    specs = [spec for i in range(depth) for spec in _block_specs(f"block{i}", dim, mlp)]
    return specs + [
        ParamSpec("norm.g", (dim,), "ones"), ParamSpec("norm.b", (dim,), "zeros"),
        ParamSpec("head.w", (dim, outputs), "normal:0.02"),
        ParamSpec("head.b", (outputs,), "zeros"),
    ]  # fmt: skip


def _block(p: dict[str, Tensor], prefix: str, x: Tensor, heads: int, causal: bool) -> Tensor:
    """Pre-norm Transformer block on x [K, B, N, d]."""
    k, b, n, d = x.shape
    h = _layer_norm(x, p[f"{prefix}.ln1.g"], p[f"{prefix}.ln1.b"])
    qkv = _linear(h, p[f"{prefix}.qkv.w"], p[f"{prefix}.qkv.b"])
    qkv = qkv.reshape(k, b, n, 3, heads, d // heads).permute(3, 0, 1, 4, 2, 5)
    q, key, v = qkv.unbind(0)  # [K, B, heads, N, dh]; unbind's backward needs no zeros
    scores = q @ key.transpose(-1, -2) / math.sqrt(d // heads)
    if causal:  # adding 0 or -inf gives masked_fill's values, and its backward is free
        scores = scores + torch.full((n, n), float("-inf"), device=x.device).triu(1)
    att = (scores.softmax(-1) @ v).transpose(2, 3).reshape(k, b, n, d)
    x = x + _linear(att, p[f"{prefix}.out.w"], p[f"{prefix}.out.b"])
    h = _layer_norm(x, p[f"{prefix}.ln2.g"], p[f"{prefix}.ln2.b"])
    h = F.gelu(_linear(h, p[f"{prefix}.fc1.w"], p[f"{prefix}.fc1.b"]))
    return x + _linear(h, p[f"{prefix}.fc2.w"], p[f"{prefix}.fc2.b"])


class ViT(BatchedModel):
    """A small Vision Transformer for square grey images."""

    def __init__(self, image: int, patch: int, dim: int, depth: int, heads: int,
                 classes: int = 10, mlp_ratio: int = 2):  # fmt: skip
        if image % patch or dim % heads:
            raise ValueError(
                f"image {image} must divide by patch {patch}, dim {dim} by heads {heads}"
            )
        self.image, self.patch, self.dim, self.depth, self.heads = image, patch, dim, depth, heads
        self.tokens = (image // patch) ** 2
        self.specs = [
            ParamSpec("patch.w", (patch * patch, dim), f"normal:{1 / patch}"),
            ParamSpec("patch.b", (dim,), "zeros"),
            ParamSpec("pos", (self.tokens, dim), "normal:0.02"),
            *_trunk_specs(depth, dim, mlp_ratio * dim, classes),
        ]

    def prepare(self, x: Tensor) -> Tensor:
        """Images [N, H, W] -> patches [N, tokens, patch * patch], row-major patch order."""
        n, s = x.shape[0], self.image // self.patch
        patches = x.reshape(n, s, self.patch, s, self.patch).permute(0, 1, 3, 2, 4)
        return patches.reshape(n, s * s, -1).contiguous()

    def forward(self, p: dict[str, Tensor], x: Tensor) -> Tensor:
        """Prepared images x [K, B, tokens, patch * patch] -> logits [K, B, classes]."""
        tok = _linear(x, p["patch.w"], p["patch.b"])
        tok = tok + p["pos"][:, None]
        for i in range(self.depth):
            tok = _block(p, f"block{i}", tok, self.heads, causal=False)
        pooled = _layer_norm(tok, p["norm.g"], p["norm.b"]).mean(2)
        return _linear(pooled, p["head.w"], p["head.b"])


class MLP(BatchedModel):
    """One hidden GELU layer on flattened images (``pool`` > 1: average-pooled first, so a
    long proxy stays cheap)."""

    def __init__(self, inputs: int, hidden: int, classes: int = 10, pool: int = 1):
        self.pool = pool
        self.specs = [
            ParamSpec("fc1.w", (inputs, hidden), f"normal:{1 / math.sqrt(inputs)}", hidden=True),
            ParamSpec("fc1.b", (hidden,), "zeros"),
            ParamSpec("fc2.w", (hidden, classes), f"normal:{1 / math.sqrt(hidden)}"),
            ParamSpec("fc2.b", (classes,), "zeros"),
        ]

    def prepare(self, x: Tensor) -> Tensor:
        if self.pool > 1 and x.dim() == 3:
            x = F.avg_pool2d(x[:, None], self.pool)[:, 0]
        return x.flatten(1).contiguous()

    def forward(self, p: dict[str, Tensor], x: Tensor) -> Tensor:
        h = F.gelu(_linear(x.flatten(2), p["fc1.w"], p["fc1.b"]))
        return _linear(h, p["fc2.w"], p["fc2.b"])


class CharLM(BatchedModel):
    """A causal character-level Transformer language model."""

    def __init__(self, vocab: int, context: int, dim: int, depth: int, heads: int,
                 mlp_ratio: int = 2):  # fmt: skip
        if dim % heads:
            raise ValueError(f"dim {dim} must divide by heads {heads}")
        self.vocab, self.dim, self.depth, self.heads = vocab, dim, depth, heads
        self.tokens = context
        self.specs = [
            ParamSpec("embed", (vocab, dim), "normal:0.1"),
            ParamSpec("pos", (context, dim), "normal:0.02"),
            *_trunk_specs(depth, dim, mlp_ratio * dim, vocab),
        ]

    def forward(self, p: dict[str, Tensor], ids: Tensor) -> Tensor:
        """ids [K, B, T] -> next-character logits [K, B, T, vocab]."""
        k = ids.shape[0]
        offsets = (torch.arange(k, device=ids.device) * self.vocab).reshape(k, 1, 1)
        x = F.embedding(ids + offsets, p["embed"].reshape(k * self.vocab, self.dim))
        x = x + p["pos"][:, None, : ids.shape[2]]
        for i in range(self.depth):
            x = _block(p, f"block{i}", x, self.heads, causal=True)
        return _linear(_layer_norm(x, p["norm.g"], p["norm.b"]), p["head.w"], p["head.b"])
