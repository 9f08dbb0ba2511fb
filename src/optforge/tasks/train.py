"""Fitness: train K candidates at once, each updated by its own program, and score them.

A candidate is a (program, seed) pair. The K candidates' parameters live in one matrix
``theta [K, P]``; one batched forward/backward serves all of them (``models.py``), and each
program then updates its own row. Candidates that share a program (several seeds of one
program) are updated together in one run over their stacked rows, unless the program uses a
global reduction, which must not mix candidates. A row depends only on its own program and
seed, so a candidate's result is the same whether it trains alone or in a batch.

A candidate fails, with a reason, when its loss or update stops being finite, when its loss
diverges (3x its initial loss), or when the evaluation runs out of time; it is then frozen
and never raises into the caller.

Everything lives on one torch device (``device``): data batches, ``theta``, program states,
the schedule and the failure bookkeeping, which records on the device the step and cause of
each candidate's failure; the host reads it once every ``sync_every`` steps (every step on
CPU, where reading is free; in chunks on a GPU, so a training step never waits for the host).
Rows are independent, so when the host learns of a failure does not change any result.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from optforge.program.execute import finish, lockstep, prepare
from optforge.program.program import Program
from optforge.tasks.builtin import Builtin, BuiltinUpdater

DIVERGENCE = 3.0  # a loss this many times the initial one has diverged


@dataclass(frozen=True)
class Result:
    fitness: float | None  # accuracy (vision) or -loss (language); None when failed
    failed: bool
    reason: str | None
    final_loss: float
    seconds: float  # the whole batch's wall time divided by its size


def schedule(steps: int, warmup: float) -> list[float]:
    """The program's ``lr`` input: linear warm-up to 1.0, then cosine decay to 0."""
    w = max(1, int(warmup * steps))
    return [(t + 1) / w if t < w else 0.5 * (1 + math.cos(math.pi * (t - w) / max(1, steps - w)))
            for t in range(steps)]  # fmt: skip


def evaluate(
    task,
    programs: Sequence[Program | Builtin],
    seeds: Sequence[int],
    *,
    time_limit: float | None = None,
    compiled: bool = False,
    device: str | torch.device = "cpu",
    sync_every: int | None = None,
) -> list[Result]:
    """Train ``len(programs)`` candidates together on ``task`` and return their results.

    ``compiled`` runs the batched forward/backward through ``torch.compile``: faster per
    candidate at K >= 8 on CPU (``optforge bench eval``); the first call for a task compiles
    for ~20 s (a few seconds once inductor's disk cache holds it), then every K >= 2 reuses
    that code, so it pays off in searches, not in one-off evaluations. K = 1 runs eager.
    Compiled and eager results agree to float rounding, not bit for bit."""
    if len(programs) != len(seeds):
        raise ValueError(f"{len(programs)} programs but {len(seeds)} seeds")
    device = torch.device(device)
    sync_every = sync_every or (1 if device.type == "cpu" else SYNC_EVERY_ACCELERATOR)
    start = time.perf_counter()
    k = len(programs)
    # one candidate runs eager: compiling would not make it faster, only compile again
    batch = Batch(task, programs, seeds, compiled=compiled and k > 1, device=device)
    lrs = torch.tensor(schedule(task.steps, task.warmup), device=device)
    failures = _Failures(k, device)
    living = [True] * k  # the host's view of failures.alive, refreshed at each sync
    initial = losses = torch.zeros(k, device=device)

    for t in range(task.steps):
        per_candidate = batch.loss(*batch.data(t))
        losses = per_candidate.detach()
        if t == 0:
            initial = losses.clone()
        failures.mark(~torch.isfinite(losses), t, LOSS_NOT_FINITE)
        failures.mark(losses > DIVERGENCE * initial, t, DIVERGED)
        grad = batch.gradient(per_candidate, failures.alive)
        failures.mark(~batch.update(grad, living, lrs[t]), t, UPDATE_NOT_FINITE)
        if (t + 1) % sync_every == 0 or t + 1 == task.steps:
            if time_limit is not None and time.perf_counter() - start > time_limit:
                failures.mark(failures.alive.clone(), t, TIME_LIMIT)
            living = failures.alive.tolist()  # the one host sync of a chunk of steps
            if not any(living):
                break
    fitness = task.score(batch.model, batch.theta.detach()) if any(living) else [None] * k
    seconds = (time.perf_counter() - start) / k
    reasons = failures.reasons(time_limit)
    final = losses.tolist()
    return [
        Result(
            fitness=float(fitness[i]) if living[i] else None,
            failed=not living[i],
            reason=reasons[i],
            final_loss=float(final[i]),
            seconds=seconds,
        )
        for i in range(k)
    ]


SYNC_EVERY_ACCELERATOR = 25  # steps between host reads of the failure flags on a GPU
LOSS_NOT_FINITE, DIVERGED, UPDATE_NOT_FINITE, TIME_LIMIT = 1, 2, 3, 4


class _Failures:
    """Per candidate, on the device: alive, and the step and cause of its failure."""

    def __init__(self, k: int, device: torch.device) -> None:
        self.alive = torch.ones(k, dtype=torch.bool, device=device)
        self.step = torch.full((k,), -1, dtype=torch.int64, device=device)
        self.cause = torch.zeros(k, dtype=torch.int64, device=device)

    def mark(self, mask: Tensor, t: int, cause: int) -> None:
        """Candidates in ``mask`` still alive fail now (the first cause wins)."""
        new = mask & self.alive
        self.step.masked_fill_(new, t)
        self.cause.masked_fill_(new, cause)
        self.alive &= ~new

    def reasons(self, time_limit: float | None) -> list[str | None]:
        texts = {
            LOSS_NOT_FINITE: "loss not finite at step {}",
            DIVERGED: "loss diverged at step {}",
            UPDATE_NOT_FINITE: "update not finite at step {}",
            TIME_LIMIT: f"time limit {time_limit or 0:g}s at step {{}}",
        }
        return [texts[c].format(s) if c else None
                for c, s in zip(self.cause.tolist(), self.step.tolist(), strict=True)]  # fmt: skip


class Batch:
    """K candidates training together: their parameters ``theta [K, P]``, optimizer states
    and update plans, and the parts of a training step (``evaluate`` runs them and keeps the
    failure bookkeeping; ``optforge bench eval --profile`` times them one by one)."""

    def __init__(self, task, programs: Sequence[Program], seeds: Sequence[int], compiled: bool,
                 device: str | torch.device = "cpu"):  # fmt: skip
        self.model = task.model()
        self._loss = _compiled_loss(task) if compiled else _loss(task, self.model)
        # initialised on the CPU (seeded generators), so every device starts from the same theta
        self.theta = self.model.init(list(seeds)).to(torch.device(device)).requires_grad_(True)
        self.v1, self.v2 = torch.zeros_like(self.theta), torch.zeros_like(self.theta)
        self.updaters = [
            BuiltinUpdater(program, sorted(rows), self.theta, self.v1, self.v2)
            if isinstance(program, Builtin)
            else _Updater(program, rows, self.model.layout, self.theta, self.v1, self.v2)
            for program, rows in _groups(programs)
        ]
        self.t = 0  # steps taken: the programs' ``step`` input
        self._joins: dict = {}  # the joined layouts of the updaters' matrix operations
        self._reads_step = any(getattr(u, "reads_step", False) for u in self.updaters)
        self.data = task.batches(seeds, device)  # step t -> (x, y) on the device

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        """Loss per candidate [K]."""
        return self._loss(self.theta, x, y)

    def gradient(self, losses: Tensor, alive: Tensor) -> Tensor:
        total = torch.where(alive, losses, 0.0).sum()
        (grad,) = torch.autograd.grad(total, self.theta)
        return grad

    @torch.no_grad()
    def update(self, grad: Tensor, living: list[bool], lr: float | Tensor) -> Tensor:
        """Each living candidate's program steps its rows; returns which rows stay finite."""
        lr_t = lr if isinstance(lr, Tensor) else torch.tensor(lr, device=self.theta.device)
        self.t += 1
        step = None
        if self._reads_step:
            step = torch.tensor(float(self.t), device=self.theta.device)
        runs = []
        for updater in self.updaters:
            if isinstance(updater, BuiltinUpdater):
                updater.step(living, grad, lr_t, step)
            else:
                runs.append(updater.steps(living, grad, lr_t, step))
        # the programs' matrix operations run together: one Newton-Schulz chain per matrix
        # shape for all K candidates, whatever their programs
        lockstep(runs, self._joins)
        # a non-finite update leaves theta non-finite; a non-finite state shows up in the next
        # update, so one check of theta per step covers both
        return _finite_rows(self.theta)


def _loss(task, model):
    """theta [K, P], batch -> loss per candidate [K]."""
    return lambda theta, x, y: task.loss(model.forward(model.views(theta), x), y)


@functools.cache
def _compiled_loss(task):
    """The loss compiled once per task for every K >= 2 (K = 1 would compile apart, so
    ``evaluate`` runs it eager): the number of candidates is the one dimension that varies,
    so only it is left symbolic, and a search whose batches change size from job to job does
    not compile again for each."""
    compiled = torch.compile(_loss(task, task.model()), dynamic=False)

    def loss(theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
        for tensor in (theta, x, y):
            torch._dynamo.maybe_mark_dynamic(tensor, 0)
        return compiled(theta, x, y)

    return loss


def _groups(
    programs: Sequence[Program | Builtin],
) -> list[tuple[Program | Builtin, dict[int, float | None]]]:
    """Rows that can step together: {row: factor} per program body. Programs that differ
    only in a trailing ``update = update * c`` (the step-size multipliers of one candidate,
    a program and its folded self) share their body and scale each row's update by its own
    ``c``, which computes exactly what each program computes alone. A program with a global
    reduction gets one group per row (its reduction must not mix candidates)."""
    shared: dict[Program | Builtin, dict[int, float | None]] = {}
    alone = []
    reductions = ("global_norm", "clip_by_global_norm")
    for i, p in enumerate(programs):
        if isinstance(p, Builtin):
            shared.setdefault(p, {})[i] = 1.0
            continue
        body, factor = _trailing_scale(p)
        if any(s.op in reductions for s in p.statements):
            alone.append((body, {i: factor}))
        else:
            shared.setdefault(body, {})[i] = factor
    return [*shared.items(), *alone]


def _trailing_scale(program: Program) -> tuple[Program, float | None]:
    """``program`` without a last statement ``out = out * literal`` and that literal (None
    when there is no such statement: the update is not scaled at all)."""
    out, last = program.returns[0], program.statements[-1] if program.statements else None
    if (
        last is not None
        and last.target == out
        and last.op == "mul"
        and last.args[0] == out
        and not isinstance(last.args[1], str)
        and len(program.statements) > 1
    ):
        return Program(program.statements[:-1], program.returns), float(last.args[1])
    return program, None


class _Updater:
    """One program updating its rows of theta (and their states) in one run per step; what
    does not change between steps (kernel, row index, views, layout) is worked out once."""

    def __init__(self, program: Program, rows: list[int] | dict[int, float | None],
                 layout, theta, v1, v2):  # fmt: skip
        """``rows``: the rows it steps, or {row: trailing scale of its update (None: none)};
        ``layout(copies, device)``: the ``Segments`` of that many rows (``BatchedModel.layout``
        labels each tensor)."""
        self.prepared = prepare(program, torch.float32, theta.device)
        self.reads_step = self.prepared.reads_step
        self.all_factors = rows if isinstance(rows, dict) else dict.fromkeys(rows)
        self.layout, self.tensors = layout, (theta, v1, v2)
        self._use(sorted(self.all_factors))

    def _use(self, rows: list[int]) -> None:
        self.rows = rows
        if not rows:
            return
        # each row's trailing scale, as its own program's last statement would apply it
        scales = [self.all_factors[r] for r in rows]
        self.factors = None
        if any(f is not None for f in scales):
            factors = [1.0 if f is None else f for f in scales]
            self.factors = torch.tensor(factors, device=self.tensors[0].device)[:, None]
        # one row, or a contiguous run of rows, is a flat view: updated in place, no copies
        contiguous = rows == list(range(rows[0], rows[0] + len(rows)))
        device = self.tensors[0].device
        self.index = (
            slice(rows[0], rows[-1] + 1) if contiguous else torch.tensor(rows, device=device)
        )
        self.views = [t[self.index].view(-1) for t in self.tensors] if contiguous else None
        # one layout for all the rows: a matrix operation runs once per shape, every
        # candidate's matrices of that shape in one batched matmul chain
        self.segments = self.layout(len(rows), device)

    def step(self, alive: list[bool], grad: Tensor, lr: Tensor, step: Tensor | None = None):
        finish(self.steps(alive, grad, lr, step))

    def steps(self, alive: list[bool], grad: Tensor, lr: Tensor, step: Tensor | None = None):
        """``step`` as a generator yielding the program's matrix operations (``lockstep``)."""
        if not all(alive[r] for r in self.rows):
            self._use([r for r in self.rows if alive[r]])  # a candidate failed: drop its row
        if not self.rows:
            return
        i, reads = self.index, self.prepared.reads
        if self.views:
            w, s1, s2 = self.views
            update, new_v1, new_v2 = yield from self.prepared.flat_steps(
                w, grad[i].view(-1), s1 if "v1" in reads else None,
                s2 if "v2" in reads else None, lr, self.segments, step,
            )  # fmt: skip
            # a new state that is another input (``v1 = w``, ``v1 = v2``) must keep its old
            # values through the writes below, as it would without views (ProgramOptimizer)
            new_v1, new_v2 = (_detached(new, own, (w, s1, s2))
                              for new, own in ((new_v1, s1), (new_v2, s2)))  # fmt: skip
            if self.factors is not None:
                update = (update.reshape(len(self.rows), -1) * self.factors).view(-1)
            w.sub_(update)
            for state, new in ((s1, new_v1), (s2, new_v2)):
                if new is not None and new is not state:  # an untouched state stays put
                    state.copy_(new)
            return
        theta, v1, v2 = self.tensors
        update, new_v1, new_v2 = yield from self.prepared.flat_steps(
            theta[i].view(-1), grad[i].view(-1), v1[i].view(-1) if "v1" in reads else None,
            v2[i].view(-1) if "v2" in reads else None, lr, self.segments, step,
        )  # fmt: skip
        update, new_v1, new_v2 = (None if v is None else v.view(len(self.rows), -1)
                                  for v in (update, new_v1, new_v2))  # fmt: skip
        theta[i] -= update if self.factors is None else update * self.factors
        for state, new in ((v1, new_v1), (v2, new_v2)):
            if new is not None:
                state[i] = new


def _detached(new: Tensor | None, own: Tensor, views: tuple[Tensor, ...]) -> Tensor | None:
    """``new``, copied if it is one of the views that get overwritten (other than ``own``)."""
    if new is None or new is own or not any(new is v for v in views):
        return new
    return new.clone()


def _finite_rows(theta: Tensor) -> Tensor:
    """Rows without NaN or inf: max and min carry any NaN or inf through, and two reductions
    cost an order of magnitude less than ``isfinite(theta).all(1)`` on CPU."""
    return torch.isfinite(theta.amax(dim=1)) & torch.isfinite(theta.amin(dim=1))


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy per candidate: logits [K, ..., C], y [K, ...] -> [K]."""
    k, c = logits.shape[0], logits.shape[-1]
    return (
        F.cross_entropy(logits.reshape(-1, c), y.reshape(-1), reduction="none")
        .reshape(k, -1)
        .mean(1)
    )
