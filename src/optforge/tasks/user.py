"""Your own fitness task: any ``torch.nn.Module`` with a loss and a metric, trained K at a time.

The built-in tasks use hand-batched models (``models.py``). A user's model is batched for them:
``ModuleModel`` keeps the K candidates' parameters in the usual ``theta [K, P]`` and runs the
module once per candidate *inside* ``torch.func.vmap`` over ``torch.func.functional_call``, so
one call computes all K forward passes and autograd gives all K gradients. Candidate k's
initial weights are the module built under ``torch.manual_seed(seed_k)`` and its batches come
from a generator seeded by ``seed_k``, so a candidate's fitness does not depend on the batch it
trains in, and the same seed gives the same fitness.

Write a factory returning a :class:`UserTask` in an importable module and pass
``--task package.module:factory`` to ``optforge search / eval / tune`` (or the same string to
the Python API). Example: ``docs/examples/digits_cnn.py``.

Limits: layers that draw random numbers while training (dropout) are refused, since their noise
would depend on the batch; BatchNorm must not track running statistics (buffers are read-only
inside the batched call); use LayerNorm/GroupNorm or ``track_running_stats=False``.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from optforge.optim.hidden import hidden_names
from optforge.tasks.models import BatchedModel, ParamSpec

SEED_STRIDE = 1_000_003  # as the registry's tasks: the data stream of seed s apart from its init
SCORE_ITEMS = 1024  # validation items per batched forward pass when scoring


def accuracy(outputs: Tensor, targets: Tensor) -> Tensor:
    """Fraction of items whose largest output is the target class."""
    return (outputs.argmax(-1) == targets).float().mean()


@dataclass(frozen=True)
class UserTask:
    """A fitness task from a user's model and data.

    Args:
        name: shown in reports.
        model: builds the ``nn.Module``; called under ``torch.manual_seed(seed)`` per candidate.
        train: ``(inputs, targets)`` tensors; each step samples ``batch`` rows per candidate.
        val: ``(inputs, targets)`` the fitness is measured on.
        loss: ``(outputs, targets) -> scalar`` for one candidate's batch (e.g. cross-entropy).
        metric: ``(outputs, targets) -> scalar`` tensor, higher is better (default: accuracy);
            the string ``"-loss"`` scores minus ``loss`` (language models).
        steps, batch, warmup: training length, batch size, warm-up fraction of the schedule.
        sparse_gradients: some parameters can get exactly zero gradients (embeddings): the
            search's default warm start then carries an epsilon.
        baselines: tuned ``name -> (step size, weight decay[, beta1, beta2])`` for
            ``torch_adamw``, ``adamw``, ``lion``, ``sgd``, ``momentum`` (``optforge tune``
            prints them); the funnel compares finalists with these.
    """

    name: str
    model: Callable[[], nn.Module]
    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    loss: Callable[[Tensor, Tensor], Tensor] = nn.functional.cross_entropy
    metric: Callable[[Tensor, Tensor], Tensor] | str = accuracy
    steps: int = 500
    batch: int = 32
    warmup: float = 0.05
    sparse_gradients: bool = False
    baselines: tuple[tuple[str, tuple[float, ...]], ...] | Mapping = field(default=())
    description: str = ""

    def __post_init__(self) -> None:
        for name in ("steps", "batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"UserTask {self.name!r}: {name} must be an int >= 1, got {value!r}"
                )
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(
                f"UserTask {self.name!r}: warmup must be in [0, 1), got {self.warmup!r}"
            )
        for split in ("train", "val"):
            pair = getattr(self, split)
            pair_ok = isinstance(pair, tuple | list) and len(pair) == 2
            if not (pair_ok and all(isinstance(t, Tensor) for t in pair)
                    and len(pair[0]) == len(pair[1])):  # fmt: skip
                raise TypeError(
                    f"UserTask {self.name!r}: {split} must be (inputs, targets), two tensors of "
                    f"the same length"
                )
        if isinstance(self.metric, str) and self.metric != "-loss":
            raise ValueError(
                f"UserTask {self.name!r}: metric {self.metric!r} is not known (use a function "
                f"(outputs, targets) -> scalar, or '-loss')"
            )
        if isinstance(self.baselines, Mapping):
            object.__setattr__(self, "baselines", tuple(self.baselines.items()))


class ModuleTask:
    """A :class:`UserTask` behind the interface of the registry's tasks (``registry.Task``):
    what the trainer, the search, the funnel and the tuner call."""

    tier = "user"

    def __init__(self, spec: UserTask, name: str) -> None:
        self.spec, self.name = spec, name
        self.steps, self.batch, self.warmup = spec.steps, spec.batch, spec.warmup
        self.sparse_gradients = spec.sparse_gradients
        self.baselines = spec.baselines
        self.description = spec.description or spec.name
        self.language = spec.metric == "-loss"
        self.metric = "-validation loss" if self.language else "validation metric"

    def __repr__(self) -> str:
        return f"ModuleTask({self.name!r})"

    def model(self) -> ModuleModel:
        return _module_model(self.spec.model)

    def batches(self, seeds, device=None) -> Callable[[int], tuple[Tensor, Tensor]]:
        """Step t -> (x [K, batch, ...], y [K, batch, ...]) on ``device``; candidate k's rows
        follow seeds[k] (indices drawn on the CPU, so every device sees the same batches)."""
        x, y = self._on(torch.device(device or "cpu"), "train")
        gens = [torch.Generator().manual_seed(s + SEED_STRIDE) for s in seeds]

        def sample(t: int):
            idx = torch.stack([torch.randint(0, len(x), (self.batch,), generator=g) for g in gens])
            idx = idx.to(x.device, non_blocking=True)
            return x[idx], y[idx]

        return sample

    @functools.cache  # noqa: B019 - one per task reference, kept for the process
    def _on(self, device: torch.device, part: str) -> tuple[Tensor, Tensor]:
        return tuple(t.to(device) for t in getattr(self.spec, part))

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Loss per candidate [K] from batched outputs [K, B, ...]."""
        return vmap(self.spec.loss)(outputs, targets)

    @torch.no_grad()
    def score(self, model: ModuleModel, theta: Tensor) -> list[float]:
        k, views = theta.shape[0], model.views(theta)
        x, y = self._on(theta.device, "val")
        metric = self._metric()
        total = torch.zeros(k, device=theta.device)
        for start in range(0, len(x), SCORE_ITEMS):  # fixed chunks: a score is K-independent
            xb, yb = x[start : start + SCORE_ITEMS], y[start : start + SCORE_ITEMS]
            outputs = model.forward(views, xb.expand(k, *xb.shape))
            total += vmap(metric)(outputs, yb.expand(k, *yb.shape)).float() * len(xb)
        return (total / len(x)).tolist()

    def _metric(self) -> Callable[[Tensor, Tensor], Tensor]:
        if self.spec.metric == "-loss":
            return lambda outputs, targets: -self.spec.loss(outputs, targets)
        return self.spec.metric

    @property
    def adamw(self) -> str:
        return "torch_adamw" if "torch_adamw" in dict(self.baselines) else "adamw"

    def baseline(self, name: str):
        from optforge.tasks.registry import baseline_program

        params = dict(self.baselines).get(name)
        if params is None:
            known = ", ".join(n for n, _ in self.baselines) or "none"
            raise KeyError(f"task {self.name!r} has no tuned baseline {name!r} (has: {known})")
        return baseline_program(name, *params)


class ModuleModel(BatchedModel):
    """K copies of a user's module as one batched model (``torch.func``)."""

    fan_in_first = False  # torch's own layouts: Linear [out, in], conv [out, in, ...]

    def __init__(self, factory: Callable[[], nn.Module]) -> None:
        self.factory = factory
        module = _build(factory, 0)
        self.module = module
        self.names = [n for n, _ in module.named_parameters()]
        hidden = hidden_names(module)  # optim/hidden.py's rule: Linear/Conv weights, not the head
        self.specs = [ParamSpec(n, tuple(p.shape), "module", hidden=n in hidden)
                      for n, p in module.named_parameters()]  # fmt: skip
        self.buffers = {n: b.detach() for n, b in module.named_buffers()}
        if not self.specs:
            raise ValueError("the task's model has no parameters to train")

    @functools.cache  # noqa: B019 - one per device, for the model's lifetime
    def _buffers_on(self, device: torch.device) -> dict[str, Tensor]:
        return {name: b.to(device) for name, b in self.buffers.items()}

    def init(self, seeds: list[int]) -> Tensor:
        """theta [K, P]: row k is the module's own initialisation under seed k."""
        rows = []
        for seed in seeds:
            module = _build(self.factory, seed)
            rows.append(torch.cat([p.detach().reshape(-1).float() for p in module.parameters()]))
        return torch.stack(rows)

    def forward(self, p: dict[str, Tensor], x: Tensor) -> Tensor:
        buffers = self._buffers_on(x.device)

        def one(params: dict[str, Tensor], inputs: Tensor) -> Tensor:
            return functional_call(self.module, (params, buffers), (inputs,))

        try:
            return vmap(one)(p, x)
        except RuntimeError as e:
            if "randomness" in str(e):
                raise RuntimeError(
                    "the task's model draws random numbers while training (e.g. dropout): a "
                    "candidate's fitness would depend on its batch. Set dropout to 0."
                ) from e
            raise


@functools.lru_cache(maxsize=8)
def _module_model(factory: Callable[[], nn.Module]) -> ModuleModel:
    return ModuleModel(factory)


def _build(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = factory()
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"the task's model factory returned {type(module).__name__}, not an nn.Module"
        )
    module.train()
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            raise ValueError(
                f"{type(m).__name__} tracks running statistics, which cannot be updated for K "
                f"candidates at once; use track_running_stats=False, LayerNorm or GroupNorm"
            )
    return module


# ---------------------------------------------------------------------------------------------
# `--task package.module:factory`


def is_reference(name: str) -> bool:
    return ":" in name


@functools.cache
def load(reference: str) -> ModuleTask:
    """Import ``package.module:factory``, call the factory, and name the task by the reference
    (journals store it, so a resumed search or a Ray worker finds the same task)."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise KeyError(f"task reference {reference!r} must look like package.module:factory")
    if os.getcwd() not in sys.path:  # as `python -m` would: a task file in the working folder
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise KeyError(
            f"task {reference!r}: cannot import {module_name!r} ({e}); is it on PYTHONPATH?"
        ) from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise KeyError(f"task {reference!r}: {module_name} has no callable {attribute!r}")
    task = factory()
    if not isinstance(task, UserTask):
        raise KeyError(
            f"task {reference!r}: {attribute}() returned {type(task).__name__}, not a UserTask"
        )
    return ModuleTask(task, reference)


def as_task(spec: UserTask, name: str | None = None) -> ModuleTask:
    """The same from Python: a UserTask you built, for ``train.evaluate``, ``tune`` or a
    search through ``optforge.tasks.registry.register``."""
    return ModuleTask(spec, name or spec.name)
