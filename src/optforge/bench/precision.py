"""Low-precision Lion on real training runs: does 8-bit or bf16 momentum, or bf16 params with
stochastic rounding, train as well as fp32?

Each variant trains the same ``torch.nn.Module`` from the same seeds (same init, same batches)
with ``optforge.Lion``; only the storage changes. The table gives the final validation metric
(mean ± std over seeds), the optimizer-state bytes per parameter measured from the optimizer's
own state, and the gap to fp32. The point of stochastic rounding shows when the lr is below
bf16's resolution of typical weights: round-to-nearest then drops most updates.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

import optforge
from optforge.bench.study_tasks import CharLM
from optforge.tasks import data as datasets


@dataclass(frozen=True)
class Variant:
    name: str
    param_dtype: torch.dtype = torch.float32
    momentum_dtype: torch.dtype | None = None
    stochastic_rounding: bool = False


VARIANTS = [
    Variant("fp32 params, fp32 momentum"),
    Variant("fp32 params, bf16 momentum", momentum_dtype=torch.bfloat16),
    Variant("fp32 params, 8-bit momentum", momentum_dtype=torch.int8),
    Variant("bf16 params, round-to-nearest", torch.bfloat16),
    Variant("bf16 params, stochastic rounding", torch.bfloat16, stochastic_rounding=True),
    Variant("bf16 params, 8-bit momentum, stochastic", torch.bfloat16, torch.int8, True),
]


@dataclass
class Result:
    variant: str
    task: str
    metric: str
    values: list[float] = field(default_factory=list)
    state_bytes_per_param: float = float("nan")

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0


@dataclass(frozen=True)
class Task:
    """A model, a batch sampler and a validation metric (higher is better)."""

    name: str
    metric: str
    build: Callable[[], nn.Module]
    batch: Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]
    evaluate: Callable[[nn.Module], float]
    lr: float
    weight_decay: float
    steps: int


def fmnist_mlp(steps: int = 3000, batch: int = 128) -> Task:
    """A 784-512-512-10 MLP on Fashion-MNIST; validation accuracy on the 5,000 held-out
    training images."""
    d = datasets.fashion_mnist()
    x, y = d.x_train.reshape(len(d.x_train), -1), d.y_train
    xv, yv = d.x_val.reshape(len(d.x_val), -1), d.y_val

    def build():
        return nn.Sequential(nn.Linear(784, 512), nn.GELU(), nn.Linear(512, 512), nn.GELU(),
                             nn.Linear(512, 10))  # fmt: skip

    def sample(gen):
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        return x[idx], y[idx]

    def evaluate(model):
        dtype = next(model.parameters()).dtype
        with torch.no_grad():
            return (model(xv.to(dtype)).argmax(1) == yv).float().mean().item()

    return Task("fmnist-mlp", "val accuracy", build, sample, evaluate, 3e-4, 0.3, steps)


def shakespeare_lm(steps: int = 1500, batch: int = 32, ctx: int = 64) -> Task:
    """A 2-layer causal Transformer (dim 96) on Shakespeare's characters; the metric is minus
    the validation cross-entropy (nats per character) on 64 fixed windows."""
    d = datasets.shakespeare()
    vocab = len(d.vocab)
    starts = torch.linspace(0, len(d.val) - ctx - 2, 64).long()
    val = torch.stack([d.val[s : s + ctx + 1] for s in starts])

    def sample(gen):
        s = torch.randint(0, len(d.train) - ctx - 1, (batch,), generator=gen)
        w = torch.stack([d.train[i : i + ctx + 1] for i in s.tolist()])
        return w[:, :-1], w[:, 1:]

    def evaluate(model):
        with torch.no_grad():
            logits = model(val[:, :-1]).float().reshape(-1, vocab)
            return -nn.functional.cross_entropy(logits, val[:, 1:].reshape(-1)).item()

    return Task("shakespeare-lm", "-val nats/char", lambda: CharLM(vocab, ctx), sample,
                evaluate, 3e-4, 0.3, steps)  # fmt: skip


TASKS = {"fmnist-mlp": fmnist_mlp, "shakespeare-lm": shakespeare_lm}


def train(task: Task, variant: Variant, seed: int) -> tuple[float, float]:
    """Final validation metric and optimizer-state bytes per parameter of one run (cosine
    schedule to 0, constant batch sampler per seed)."""
    torch.manual_seed(seed)
    model = task.build().to(variant.param_dtype)
    opt = optforge.Lion(model.parameters(), lr=task.lr, weight_decay=task.weight_decay,
                        momentum_dtype=variant.momentum_dtype,
                        stochastic_rounding=variant.stochastic_rounding)  # fmt: skip
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / task.steps))
    )
    gen = torch.Generator().manual_seed(10_000 + seed)
    for _ in range(task.steps):
        x, y = task.batch(gen)
        if x.is_floating_point():
            x = x.to(variant.param_dtype)
        logits = model(x).float()
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    return task.evaluate(model), state_bytes_per_param(opt)


def state_bytes_per_param(opt: torch.optim.Optimizer) -> float:
    params = [p for g in opt.param_groups for p in g["params"]]
    state = sum(
        t.numel() * t.element_size()
        for s in opt.state.values()
        for t in s.values()
        if isinstance(t, torch.Tensor)
    )
    return state / sum(p.numel() for p in params)


def run(
    tasks: list[str],
    seeds: list[int],
    variants: list[Variant] = VARIANTS,
    progress: Callable[[str], None] | None = None,
    steps: int | None = None,
) -> list[Result]:
    """Every variant on every task over ``seeds``; ``steps`` overrides the tasks' lengths."""
    progress = progress or (lambda _: None)
    results = []
    for name in tasks:
        task = TASKS[name]() if steps is None else TASKS[name](steps=steps)
        for variant in variants:
            result = Result(variant.name, task.name, task.metric)
            for seed in seeds:
                progress(f"{task.name}: {variant.name}, seed {seed}")
                value, result.state_bytes_per_param = train(task, variant, seed)
                result.values.append(value)
            results.append(result)
    return results


COLUMNS = ["task", "variant", "metric (mean ± std)", "vs fp32", "state bytes/param"]


def table_rows(results: list[Result]) -> list[list[str]]:
    base = {r.task: r.mean for r in results if r.variant == VARIANTS[0].name}
    return [
        [r.task, r.variant, f"{r.mean:.4f} ± {r.std:.4f}",
         f"{r.mean - base[r.task]:+.4f}" if r.task in base else "-",
         f"{r.state_bytes_per_param:.3f}"]
        for r in results
    ]  # fmt: skip


def plot(results: list[Result], path: str) -> None:
    """One panel per task: each variant's metric with its seeds as dots."""
    from optforge._extras import pyplot

    plt = pyplot("the precision plot")

    tasks = list(dict.fromkeys(r.task for r in results))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = [r for r in results if r.task == task]
        for i, r in enumerate(rows):
            ax.errorbar(i, r.mean, yerr=r.std, fmt="o", capsize=4, color="C0")
            ax.scatter([i] * len(r.values), r.values, s=10, color="C1", zorder=3)
        ax.set_xticks(range(len(rows)), [r.variant for r in rows], rotation=30, ha="right",
                      fontsize=8)  # fmt: skip
        ax.set_title(task)
        ax.set_ylabel(rows[0].metric)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
