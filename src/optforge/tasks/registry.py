"""Named tasks: data + model + steps + batch + schedule + metric, in tiers.

- tier ``A``: the search proxies, cheapest (one vision, one language task);
- tier ``B`` (~10x A) and ``C`` (~100x A): bigger models and more steps, for funnel selection;
- ``meta``: meta-validation tasks the search never trains on (another corpus, other data);
- ``test``: tiny tasks for the test suite.

A program's ``lr`` input is the task's schedule multiplier (warm-up then cosine, peak 1.0), so
its own constants set its absolute step size. ``baselines`` hold the tuned constants of the
library optimizers (``docs/tasks.md``, ``optforge tune``); the search compares against them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from optforge.program import library
from optforge.program.program import Program, Statement
from optforge.tasks import data as datasets
from optforge.tasks.builtin import Builtin
from optforge.tasks.models import MLP, BatchedModel, CharLM, ViT
from optforge.tasks.train import cross_entropy

SEED_STRIDE = 1_000_003  # keeps the data-order stream of seed s apart from the init stream
SCORE_TOKENS = 1024  # validation tokens per candidate in one forward pass


@dataclass(frozen=True)
class Task:
    name: str
    tier: Literal["A", "B", "C", "meta", "test"]
    dataset: str  # a loader name in tasks.data
    architecture: str  # "vit", "mlp" or "lm"
    config: tuple[tuple[str, int], ...]  # model constructor arguments
    steps: int
    batch: int
    eval_size: int  # validation images, or validation windows of text
    warmup: float = 0.05
    description: str = ""
    eval_offset: int = 0  # vision: the first validation image scored (tasks share the split)
    baselines: tuple[tuple[str, tuple[float, ...]], ...] = field(default=())

    # -- data and model -----------------------------------------------------------------------

    @property
    def language(self) -> bool:
        return self.architecture == "lm"

    @property
    def sparse_gradients(self) -> bool:
        """Some parameters get exactly zero gradients: the embedding rows of characters a
        batch does not contain."""
        return self.language

    @property
    def metric(self) -> str:
        return "-validation loss" if self.language else "validation accuracy"

    def data(self):
        return getattr(datasets, self.dataset)()

    def model(self) -> BatchedModel:
        cfg = dict(self.config)
        if self.architecture == "vit":
            return ViT(**cfg)
        if self.architecture == "mlp":
            return MLP(**cfg)
        return CharLM(vocab=len(self.data().vocab), **cfg)

    def batches(self, seeds, device=None) -> Callable[[int], tuple[Tensor, Tensor]]:
        """Step t -> (x, y) for K candidates; candidate k's data order follows seeds[k]. The
        dataset moves to ``device`` once; only each step's indices (drawn on the CPU from
        seeded generators, so every device sees the same batches) travel per step."""
        device = torch.device(device or "cpu")
        gens = [torch.Generator().manual_seed(s + SEED_STRIDE) for s in seeds]
        if not self.language:
            x_train, y_train = self._on(device, "train")
            n = len(x_train)

            def images(t: int):
                idx = torch.stack([torch.randint(0, n, (self.batch,), generator=g) for g in gens])
                idx = idx.to(device, non_blocking=True)
                x = x_train.index_select(0, idx.flatten())
                return x.reshape(*idx.shape, *x.shape[1:]), y_train[idx]

            return images
        context = dict(self.config)["context"]
        (train,) = self._on(device, "text")
        n = len(train) - context - 1
        offsets = torch.arange(context + 1, device=device)

        def text(t: int):
            starts = torch.stack([torch.randint(0, n, (self.batch,), generator=g) for g in gens])
            windows = train[starts.to(device, non_blocking=True)[..., None] + offsets]
            return windows[..., :-1], windows[..., 1:]

        return text

    @functools.cache  # noqa: B019 - tasks are immutable singletons
    def _on(self, device: torch.device, part: str) -> tuple[Tensor, ...]:
        """The training data (``train``: prepared images and labels; ``text``: the corpus) or
        the validation set (``val``) on ``device``, moved there once."""
        if part == "train":
            tensors = (self._train_inputs(), self.data().y_train)
        elif part == "text":
            tensors = (self.data().train,)
        else:
            tensors = self._validation()
        return tuple(t.to(device) for t in tensors)

    def loss(self, logits: Tensor, y: Tensor) -> Tensor:
        return cross_entropy(logits, y)

    # -- fitness ------------------------------------------------------------------------------

    @torch.no_grad()
    def score(self, model: BatchedModel, theta: Tensor) -> list[float]:
        """Validation accuracy (vision) or -validation loss (language) per candidate, on a
        fixed validation subset of ``eval_size`` items."""
        k, views = theta.shape[0], model.views(theta)
        x, y = self._on(theta.device, "val")
        totals = torch.zeros(k, device=theta.device)
        # chunks of a fixed size, whatever K: activations stay a few MB per candidate (huge
        # ones cost a page fault per 4 KB at every call) and a candidate's score does not
        # depend on the batch it was scored in
        chunk = max(1, SCORE_TOKENS // model.tokens)
        for start in range(0, len(x), chunk):
            xb, yb = x[start : start + chunk], y[start : start + chunk]
            n = len(xb)
            xb, yb = xb.expand(k, *xb.shape), yb.expand(k, *yb.shape)
            logits = model.forward(views, xb)
            if self.language:
                totals += cross_entropy(logits, yb) * n
            else:
                totals += (logits.argmax(-1) == yb).float().sum(1)
        mean = totals / len(x)
        return (-mean if self.language else mean).tolist()

    @functools.cache  # noqa: B019 - tasks are immutable singletons
    def _train_inputs(self) -> Tensor:
        return self.model().prepare(self.data().x_train)

    @functools.cache  # noqa: B019 - tasks are immutable singletons
    def _validation(self) -> tuple[Tensor, Tensor]:
        d = self.data()
        gen = torch.Generator().manual_seed(12345)
        if not self.language:
            a, b = self.eval_offset, self.eval_offset + self.eval_size
            if b > len(d.x_val):
                raise ValueError(f"task {self.name}: validation images {a}-{b} of {len(d.x_val)}")
            return self.model().prepare(d.x_val[a:b]), d.y_val[a:b]
        context = dict(self.config)["context"]
        starts = torch.randint(0, len(d.val) - context - 1, (self.eval_size,), generator=gen)
        windows = d.val[starts[:, None] + torch.arange(context + 1)]
        return windows[:, :-1], windows[:, 1:]

    # -- baselines ----------------------------------------------------------------------------

    @property
    def adamw(self) -> str:
        """The AdamW baseline to compare with: torch's (bias correction, eps) where tuned."""
        return "torch_adamw" if "torch_adamw" in dict(self.baselines) else "adamw"

    @property
    def strongest(self) -> tuple[str, ...]:
        """The baselines a discovery must beat: tuned AdamW, Lion and Muon, those tuned."""
        tuned = dict(self.baselines)
        return tuple(n for n in (self.adamw, "lion", "muon") if n in tuned)

    def adam_part(self) -> tuple[float, ...]:
        """Tuned AdamW as ``(eta, weight decay, beta1, beta2)``: the AdamW half of Muon as
        users run it."""
        tuned = dict(self.baselines)
        if self.adamw in tuned:
            eta, wd, *betas = tuned[self.adamw]
            return (eta, wd, *(betas or MUON_DEFAULT_ADAM))
        raise KeyError(
            f"task {self.name!r} has no tuned AdamW: tune it before Muon, whose "
            f"non-matrix tensors it trains (optforge tune --optimizers torch_adamw)"
        )

    def baseline(self, name: str) -> Program | Builtin:
        """The tuned library optimizer ``name`` as a program for this task."""
        params = dict(self.baselines).get(name)
        if params is None:
            known = ", ".join(n for n, _ in self.baselines) or "none"
            raise KeyError(f"task {self.name!r} has no tuned baseline {name!r} (has: {known})")
        return baseline_program(name, *params)


def with_step_size(program: Program, eta: float) -> Program:
    """``program`` with ``lr = lr * eta`` first: the schedule multiplier becomes a step size."""
    return Program((Statement("lr", "mul", ("lr", float(eta))), *program.statements),
                   program.returns)  # fmt: skip


BASELINE_FACTORIES = {
    "sgd": lambda wd: library.sgd(weight_decay=wd),
    "momentum": lambda wd: library.momentum(0.9, weight_decay=wd),
    "adamw": lambda wd, b1=0.9, b2=0.999: library.adamw(b1, b2, weight_decay=wd, eps=1e-8),
    "lion": lambda wd, b1=0.9, b2=0.99: library.lion(b1, b2, weight_decay=wd),
}
# AdamW as torch.optim.AdamW runs it (bias correction, eps): a built-in, not a program
BUILTIN_BASELINES = ("torch_adamw",)
# Muon as users run it: Muon on the hidden matrices, AdamW on the rest
MUON_DEFAULT_ADAM = (0.9, 0.999)


def muon_baseline(eta: float, weight_decay: float, adam_eta: float, adam_weight_decay: float,
                  *adam_betas: float) -> Program:  # fmt: skip
    """``library.muon`` at step size ``eta`` and decoupled decay ``weight_decay`` on hidden
    matrices, its AdamW part (bias-corrected, eps 1e-8) at ``adam_eta`` and
    ``adam_weight_decay`` on every other tensor: the task's tuned AdamW, so that tuning Muon
    tunes only Muon's own two numbers."""
    if eta <= 0 or adam_eta <= 0:
        raise ValueError(f"muon: step sizes must be > 0, got eta={eta}, adam_eta={adam_eta}")
    program = library.muon(weight_decay=weight_decay, adam_lr_ratio=adam_eta / eta,
                           adam_betas=tuple(adam_betas) or MUON_DEFAULT_ADAM,
                           adam_weight_decay=adam_weight_decay)  # fmt: skip
    return with_step_size(program, eta)


def baseline_program(name: str, eta: float, weight_decay: float = 0.0,
                     *betas: float) -> Program | Builtin:  # fmt: skip
    """A library optimizer with step size ``eta``, decoupled weight decay (times lr) and,
    for AdamW and Lion, optional ``(beta1, beta2)``; for Muon, its AdamW part's
    ``(eta, weight decay, beta1, beta2)`` (``muon_baseline``)."""
    if name == "torch_adamw":
        b1, b2 = betas or (0.9, 0.999)
        return Builtin("torch_adamw", float(eta), float(b1), float(b2), 1e-8, float(weight_decay))
    if name == "muon":
        return muon_baseline(eta, weight_decay, *betas)
    if name not in BASELINE_FACTORIES:
        known = (*BASELINE_FACTORIES, *BUILTIN_BASELINES, "muon")
        raise ValueError(f"unknown baseline {name!r} (known: {', '.join(known)})")
    return with_step_size(BASELINE_FACTORIES[name](weight_decay, *betas), eta)


def _vit(**kw) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(kw.items()))


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("fmnist-vit-a", "A", "fashion_mnist", "vit",
             _vit(image=28, patch=7, dim=16, depth=1, heads=2), steps=150, batch=32,
             eval_size=1000, description="search proxy: a tiny ViT on Fashion-MNIST"),
        Task("shakespeare-lm-a", "A", "shakespeare", "lm",
             _vit(context=32, dim=32, depth=1, heads=2), steps=150, batch=16, eval_size=256,
             description="search proxy: a tiny char-level Transformer LM on Shakespeare"),
        Task("fmnist-vit-b", "B", "fashion_mnist", "vit",
             _vit(image=28, patch=7, dim=32, depth=2, heads=2), steps=500, batch=64,
             eval_size=5000, description="funnel tier B: a larger ViT, more steps"),
        Task("shakespeare-lm-b", "B", "shakespeare", "lm",
             _vit(context=64, dim=48, depth=2, heads=3), steps=500, batch=32, eval_size=512,
             description="funnel tier B: a larger LM, longer context, more steps"),
        Task("fmnist-vit-c", "C", "fashion_mnist", "vit",
             _vit(image=28, patch=4, dim=64, depth=3, heads=4), steps=3000, batch=128,
             eval_size=5000, description="funnel tier C: ~100x tier A"),
        Task("shakespeare-lm-c", "C", "shakespeare", "lm",
             _vit(context=128, dim=96, depth=3, heads=4), steps=3000, batch=64, eval_size=1024,
             description="funnel tier C: ~100x tier A"),
        Task("kjv-lm-meta", "meta", "kjv", "lm",
             _vit(context=64, dim=48, depth=2, heads=3), steps=500, batch=32, eval_size=512,
             description="meta-validation: the tier-B LM on the King James Bible"),
        Task("mnist5k-vit-meta", "meta", "mnist_5k", "vit",
             _vit(image=28, patch=7, dim=24, depth=2, heads=2), steps=400, batch=64,
             eval_size=750, description="meta-validation: a ViT of another width on MNIST-5k"),
        # proxies long enough for the schedule to matter (1,000 steps at batch 64) at the cost
        # of tier A, by shrinking width, tokens and the evaluation set (docs/tasks.md)
        Task("fmnist-mlp-p", "A", "fashion_mnist", "mlp",
             _vit(inputs=196, hidden=32, pool=2), steps=1000, batch=64,
             eval_size=1000, eval_offset=4000,
             description="long-horizon proxy: an MLP on 14x14 images, 1,000 steps at batch 64"),
        Task("shakespeare-lm-p", "A", "shakespeare", "lm",
             _vit(context=8, dim=16, depth=1, heads=2), steps=1000, batch=64, eval_size=512,
             description="long-horizon proxy: a Transformer LM on 8 characters, 1,000 steps"),
        # meta-validation at >= 30x those proxies, large validation sets, low seed spread
        Task("fmnist-vit-meta", "meta", "fashion_mnist", "vit",
             _vit(image=28, patch=7, dim=16, depth=2, heads=2), steps=1000, batch=64,
             eval_size=4000,
             description="meta-validation: a 2-layer ViT, 1,000 steps at batch 64"),
        Task("kjv-lm-meta-l", "meta", "kjv", "lm",
             _vit(context=32, dim=24, depth=1, heads=2), steps=1000, batch=32, eval_size=2048,
             description="meta-validation: a Transformer LM on the King James Bible"),
        Task("digits-mlp-test", "test", "digits", "mlp",
             _vit(inputs=64, hidden=32), steps=60, batch=32, eval_size=300,
             description="tests: an MLP on sklearn digits"),
        Task("shakespeare-lm-test", "test", "shakespeare", "lm",
             _vit(context=16, dim=16, depth=1, heads=2), steps=30, batch=8, eval_size=64,
             description="tests: a minimal LM"),
        Task("digits-mlp-test-b", "test", "digits", "mlp",
             _vit(inputs=64, hidden=64), steps=120, batch=32, eval_size=300,
             description="tests: the funnel stage after digits-mlp-test"),
        Task("mnist5k-mlp-test", "test", "mnist_5k", "mlp",
             _vit(inputs=784, hidden=16), steps=60, batch=32, eval_size=300,
             description="tests: meta-validation for digits-mlp-test (other data)"),
    ]
}  # fmt: skip


# Tuned step size and weight decay per task and baseline: the best of `optforge tune --task T`
# on seeds 0-2 (0-1 for the long-horizon proxies and the new meta-validation tasks; tables
# and fresh-seed re-measurements: docs/tasks.md and docs/data/tune-TASK.md). Muon's entries
# are (eta, wd, then its AdamW part: eta, wd, beta1, beta2), the AdamW part the task's tuned
# AdamW (`optforge tune --optimizers muon --seeds 2 --held-out-seeds 5 --extend 2`).
BASELINES: dict[str, dict[str, tuple[float, ...]]] = {
    "fmnist-vit-a": {"sgd": (1.0, 0.0), "momentum": (0.3, 0.0), "adamw": (0.01, 0.0),
                     "lion": (0.03, 0.0), "muon": (0.1, 1.0, 0.01, 0.0, 0.9, 0.999)},
    "shakespeare-lm-a": {"sgd": (1.0, 0.0), "momentum": (0.3, 0.0), "adamw": (0.001, 0.0),
                         "lion": (0.01, 1.0),
                         "muon": (0.031622776602, 1.0, 0.001, 0.0, 0.9, 0.999)},
    "fmnist-vit-b": {"sgd": (1.0, 0.0), "momentum": (0.1, 0.0), "adamw": (0.003, 0.0),
                     "lion": (0.01, 1.0)},
    "shakespeare-lm-b": {"sgd": (0.3, 0.0), "momentum": (0.3, 0.0), "adamw": (0.003, 0.1),
                         "lion": (0.003, 0.0)},
    "kjv-lm-meta": {"sgd": (0.3, 0.0), "momentum": (0.1, 0.0), "adamw": (0.003, 0.0),
                    "lion": (0.003, 0.0), "muon": (0.031622776602, 0.1, 0.003, 0.0, 0.9, 0.999)},
    "mnist5k-vit-meta": {"sgd": (1.0, 0.0), "momentum": (0.3, 0.0), "adamw": (0.003, 0.0),
                         "lion": (0.01, 1.0),
                         "muon": (0.031622776602, 0.1, 0.003, 0.0, 0.9, 0.999)},
    "digits-mlp-test": {"sgd": (1.0, 0.0), "momentum": (0.3, 0.0), "adamw": (0.01, 0.0),
                        "lion": (0.03, 1.0), "muon": (1.0, 0.1, 0.01, 0.0, 0.9, 0.999)},
    "digits-mlp-test-b": {"sgd": (1.0, 0.0), "adamw": (0.01, 0.0), "lion": (0.01, 1.0),
                          "muon": (0.316227766017, 0.0, 0.01, 0.0, 0.9, 0.999)},
    "fmnist-mlp-p": {"sgd": (0.3, 0.0), "momentum": (0.1, 0.0), "adamw": (0.01, 0.1),
                     "lion": (0.01, 1.0), "torch_adamw": (0.031622776602, 0.0, 0.9, 0.999),
                     "muon": (0.1, 0.0, 0.031622776602, 0.0, 0.9, 0.999)},
    "shakespeare-lm-p": {"sgd": (1.0, 0.0), "momentum": (1.0, 0.0), "adamw": (0.01, 0.0),
                         "lion": (0.03, 1.0), "torch_adamw": (0.031622776602, 0.0, 0.9, 0.95),
                         "muon": (0.031622776602, 0.01, 0.031622776602, 0.0, 0.9, 0.95)},
    "fmnist-vit-meta": {"sgd": (1.0, 0.0), "torch_adamw": (0.031622776602, 0.1, 0.9, 0.95),
                        "lion": (0.01, 1.0, 0.9, 0.99),
                        "muon": (0.031622776602, 0.1, 0.031622776602, 0.1, 0.9, 0.95)},
    "kjv-lm-meta-l": {"sgd": (1.0, 0.0), "torch_adamw": (0.031622776602, 0.1, 0.9, 0.95),
                      "lion": (0.031622776602, 1.0, 0.9, 0.99),
                      "muon": (0.031622776602, 0.1, 0.031622776602, 0.1, 0.9, 0.95)},
    "mnist5k-mlp-test": {"sgd": (0.3, 0.0), "adamw": (0.003, 0.0), "lion": (0.01, 0.0),
                         "torch_adamw": (0.031622776602, 1.0, 0.9, 0.95),
                         "muon": (1.0, 0.1, 0.031622776602, 1.0, 0.9, 0.95)},
    "shakespeare-lm-test": {"sgd": (1.0, 0.0), "adamw": (0.01, 0.0)},
}  # fmt: skip
# The funnel after each search task: (stages of growing cost, meta-validation tasks).
# The fitness a search on the task uses unless told otherwise (`optforge search --fitness`;
# chosen by `optforge bench fidelity`, docs/search.md). Tasks not listed: their raw metric.
FITNESS: dict[str, str] = {
    "fmnist-mlp-p": "fmnist-mlp-p+shakespeare-lm-p;mult=1/3,1,3;norm;hurdle=0.5",
}
FUNNELS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "fmnist-vit-a": (("fmnist-vit-b", "fmnist-vit-c"), ("mnist5k-vit-meta",)),
    "shakespeare-lm-a": (("shakespeare-lm-b", "shakespeare-lm-c"), ("kjv-lm-meta",)),
    "digits-mlp-test": (("digits-mlp-test-b",), ("mnist5k-mlp-test",)),
    # the long-horizon proxies go straight to meta-validation on models they never train
    "fmnist-mlp-p": ((), ("fmnist-vit-meta", "kjv-lm-meta-l")),
    "shakespeare-lm-p": ((), ("fmnist-vit-meta", "kjv-lm-meta-l")),
}
TASKS = {
    name: dataclasses.replace(task, baselines=tuple(BASELINES.get(name, {}).items()))
    for name, task in TASKS.items()
}


_REGISTERED: dict[str, object] = {}


def register(task) -> str:
    """Make a task object (e.g. ``user.as_task(UserTask(...))``) known by its name in this
    process, for the Python API. Ray workers in other processes cannot see it: give them a
    ``package.module:factory`` reference instead."""
    if task.name in TASKS:
        raise ValueError(f"task name {task.name!r} is taken by a built-in task")
    _REGISTERED[task.name] = task
    return task.name


def check_data(names, what: str = "task", hint: str = "") -> None:
    """Raise ``DatasetMissing`` or ``MissingExtra`` (the message prefixed with ``what`` and the
    task's name, ``hint`` appended) for the first built-in task among ``names`` whose dataset
    is not installed, without loading any data. Users' tasks bring their own data."""
    from optforge._extras import MissingExtra

    for name in dict.fromkeys(names):
        task = get(name)
        if not isinstance(task, Task):
            continue
        try:
            datasets.check(task.dataset)
        except (datasets.DatasetMissing, MissingExtra) as e:
            raise type(e)(f"{what} {name}: {e}{hint}") from None


def get(name: str) -> Task:
    """A built-in task, a registered one, or a user's ``package.module:factory``."""
    if name in TASKS:
        return TASKS[name]
    if name in _REGISTERED:
        return _REGISTERED[name]
    from optforge.tasks import user

    if user.is_reference(name):
        return user.load(name)
    raise KeyError(
        f"unknown task {name!r} (tasks: {', '.join(TASKS)}; or your own as "
        f"package.module:factory returning an optforge.tasks.user.UserTask)"
    )
