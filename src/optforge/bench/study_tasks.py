"""Training set-ups for optimizer studies: ``torch.nn.Module`` models trained the way a user
trains them (one model, ``loss.backward()``, ``opt.step()``), on the project's offline data.

Each task builds its model at a named size, samples batches from a seeded generator and
scores the model on a fixed validation set; the metric is "higher is better" (accuracy, or
minus the validation loss in nats per character).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from optforge.tasks import data as datasets


@dataclass(frozen=True)
class StudyTask:
    name: str
    metric: str
    sizes: tuple[str, ...]  # model sizes it knows, smallest first
    build: Callable[[str], nn.Module]
    sample: Callable[[torch.Generator, int], tuple[Tensor, Tensor]]
    evaluate: Callable[[nn.Module], float]
    loss: Callable[[Tensor, Tensor], Tensor]
    steps: int  # default training length
    batch: int  # default batch size


def _cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))


class CharLM(nn.Module):
    """A causal pre-norm Transformer over characters."""

    def __init__(self, vocab: int, ctx: int, dim: int = 96, depth: int = 2, heads: int = 4):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(ctx, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True,
                                           norm_first=True, activation="gelu")  # fmt: skip
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(dim, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(ctx))

    def forward(self, ids: Tensor) -> Tensor:
        h = self.embed(ids) + self.pos[: ids.shape[1]]
        n = ids.shape[1]
        return self.head(self.blocks(h, mask=self.mask[:n, :n].to(h.dtype), is_causal=True))


class ViT(nn.Module):
    """A small Vision Transformer: patch embedding, pre-norm blocks, mean pooling."""

    def __init__(self, image: int = 28, patch: int = 7, dim: int = 64, depth: int = 2,
                 heads: int = 4, classes: int = 10):  # fmt: skip
        super().__init__()
        self.patch = patch
        self.embed = nn.Linear(patch * patch, dim)
        self.pos = nn.Parameter(torch.randn((image // patch) ** 2, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True,
                                           norm_first=True, activation="gelu")  # fmt: skip
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: Tensor) -> Tensor:
        b, p = x.shape[0], self.patch
        patches = x.unfold(1, p, p).unfold(2, p, p).reshape(b, -1, p * p)
        h = self.blocks(self.embed(patches) + self.pos)
        return self.head(self.norm(h).mean(1))


def _image_task(name: str, data, build: Callable[[str], nn.Module], sizes, steps, batch,
                val: int) -> StudyTask:  # fmt: skip
    x, y = data.x_train, data.y_train
    xv, yv = data.x_val[:val], data.y_val[:val]

    def sample(gen: torch.Generator, n: int):
        idx = torch.randint(0, len(x), (n,), generator=gen)
        return x[idx], y[idx]

    @torch.no_grad()
    def evaluate(model: nn.Module) -> float:
        correct = sum((model(xv[i : i + 1000]).argmax(-1) == yv[i : i + 1000]).sum().item()
                      for i in range(0, len(xv), 1000))  # fmt: skip
        return correct / len(xv)

    return StudyTask(name, "val accuracy", sizes, build, sample, evaluate, _cross_entropy,
                     steps, batch)  # fmt: skip


def _text_task(name: str, data, sizes: dict[str, dict], steps: int, batch: int, ctx: int = 64,
               windows: int = 256) -> StudyTask:  # fmt: skip
    vocab = len(data.vocab)
    starts = torch.linspace(0, len(data.val) - ctx - 2, windows).long()
    val = torch.stack([data.val[s : s + ctx + 1] for s in starts])

    def sample(gen: torch.Generator, n: int):
        s = torch.randint(0, len(data.train) - ctx - 1, (n,), generator=gen)
        w = data.train[s[:, None] + torch.arange(ctx + 1)]
        return w[:, :-1], w[:, 1:]

    @torch.no_grad()
    def evaluate(model: nn.Module) -> float:
        losses = [_cross_entropy(model(val[i : i + 64, :-1]), val[i : i + 64, 1:]).item()
                  for i in range(0, len(val), 64)]  # fmt: skip
        return -sum(losses) / len(losses)

    return StudyTask(name, "-val nats/char", tuple(sizes),
                     lambda size: CharLM(vocab, ctx, **sizes[size]), sample, evaluate,
                     _cross_entropy, steps, batch)  # fmt: skip


VIT_SIZES = {"small": dict(dim=32, depth=2, heads=2), "base": dict(dim=64, depth=3, heads=4)}
LM_SIZES = {"small": dict(dim=48, depth=2, heads=3), "base": dict(dim=96, depth=3, heads=4)}


def fmnist_vit() -> StudyTask:
    return _image_task("fmnist-vit", datasets.fashion_mnist(),
                       lambda size: ViT(**VIT_SIZES[size]), tuple(VIT_SIZES), 2000, 128,
                       val=5000)  # fmt: skip


def shakespeare_lm() -> StudyTask:
    return _text_task("shakespeare-lm", datasets.shakespeare(), LM_SIZES, 2000, 64)


def kjv_lm() -> StudyTask:
    return _text_task("kjv-lm", datasets.kjv(), LM_SIZES, 2000, 64)


def digits_mlp() -> StudyTask:
    """Tests: an MLP on sklearn's 8x8 digits (images flattened by the model)."""
    sizes = {"small": 32, "base": 64}

    def build(size: str) -> nn.Module:
        h = sizes[size]
        return nn.Sequential(nn.Flatten(), nn.Linear(64, h), nn.GELU(), nn.Linear(h, 10))

    return _image_task("digits-mlp", datasets.digits(), build, tuple(sizes), 100, 32, val=300)


TASKS: dict[str, Callable[[], StudyTask]] = {
    "fmnist-vit": fmnist_vit,
    "shakespeare-lm": shakespeare_lm,
    "kjv-lm": kjv_lm,
    "digits-mlp": digits_mlp,
}
