"""Fitness-evaluation throughput: candidate evaluations per second, one at a time and batched.

Batches hold distinct programs (AdamW with K slightly different step sizes), the search's
situation; one-at-a-time runs the same candidates with K = 1, in the same process and with the
same threads. On a shared VM the speed drifts by tens of percent from minute to minute, so the
three measurements alternate in rounds and the report gives medians and per-round spread.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass

import torch

from optforge.tasks.registry import Task, baseline_program
from optforge.tasks.train import evaluate


@dataclass(frozen=True)
class Throughput:
    """Seconds per evaluation in each round (one at a time, batched eager, batched compiled);
    the figures are medians over rounds, and the speedup's spread is over rounds too."""

    task: str
    tier: str
    params: int
    k: int
    single: tuple[float, ...]  # s per evaluation, one at a time (eager: compiling slows K = 1)
    batched: tuple[float, ...]  # s per evaluation within a batch of k, eager
    compiled: tuple[float, ...]  # the same through torch.compile, after compiling; () if off
    compile_s: float | None  # the first compiled batch's extra time
    family: str = "adamw"  # the programs measured (distinct_programs)

    @property
    def single_s(self) -> float:
        return statistics.median(self.single)

    @property
    def single_evals_per_s(self) -> float:
        return 1.0 / self.single_s

    @property
    def batched_evals_per_s(self) -> float:
        return 1.0 / statistics.median(self.batched)

    @property
    def compiled_evals_per_s(self) -> float | None:
        return 1.0 / statistics.median(self.compiled) if self.compiled else None

    @property
    def speedup(self) -> float:
        """Best batched throughput over one-at-a-time throughput (medians)."""
        best = max(self.batched_evals_per_s, self.compiled_evals_per_s or 0.0)
        return best / self.single_evals_per_s

    @property
    def speedup_range(self) -> tuple[float, float]:
        """The speedup within each round, where both sides ran minutes apart at most: its
        min and max show how much the machine's speed drifted."""
        best = ([min(pair) for pair in zip(self.batched, self.compiled, strict=True)]
                if self.compiled else self.batched)  # fmt: skip
        ratios = [s / b for s, b in zip(self.single, best, strict=True)]
        return min(ratios), max(ratios)


FAMILIES = ("adamw", "muon")


def distinct_programs(k: int, family: str = "adamw") -> list:
    """k programs of one family with slightly different step sizes: the paper's AdamW
    (elementwise), or ``library.muon`` (Muon on the hidden matrices, AdamW on the rest: what
    the matrix operations cost). The step size is folded into ``lr`` at the top, so each is
    its own program body, as every child of a search is: the trainer steps them one by one,
    and their matrix operations in lockstep."""
    if family not in FAMILIES:
        raise ValueError(f"program family must be one of {FAMILIES}, got {family!r}")
    if family == "muon":
        from optforge.program import library
        from optforge.tasks.registry import with_step_size

        return [with_step_size(library.muon(), 0.02 * (1 + i / 1000)) for i in range(k)]
    return [baseline_program("adamw", 3e-3 * (1 + i / 1000)) for i in range(k)]


def seconds_per_evaluation(task: Task, probe_steps: int = 40) -> tuple[float, bool]:
    """Seconds for one evaluation at K = 1, and whether it was estimated: tasks longer than
    2 * probe_steps are timed at probe_steps and 2 * probe_steps steps, and the line through
    the two (fixed cost + cost per step) is extended to the task's steps."""
    program = baseline_program("adamw", 3e-3)

    def timed(steps: int) -> float:
        t = time.perf_counter()
        evaluate(dataclasses.replace(task, steps=steps), [program], [0])
        return time.perf_counter() - t

    timed(1)  # warm-up: data loading, caches
    if task.steps <= 2 * probe_steps:
        return timed(task.steps), False
    short, long = timed(probe_steps), timed(2 * probe_steps)
    per_step = (long - short) / probe_steps
    return short - per_step * probe_steps + per_step * task.steps, True


def measure(task: Task, k: int = 32, rounds: int = 3, compiled: bool = True,
            device: str = "cpu", family: str = "adamw") -> Throughput:  # fmt: skip
    """Throughput one at a time and in batches of ``k`` distinct programs of ``family``
    (eager, and compiled unless ``compiled`` is False), measured in ``rounds`` round-robin
    rounds so that a slow spell of a shared machine hits all three measurements alike."""
    programs = distinct_programs(k, family)
    seeds = list(range(k))

    def per_evaluation(n: int, **kw) -> float:
        t = time.perf_counter()
        evaluate(task, programs[:n], seeds[:n], device=device, **kw)
        return (time.perf_counter() - t) / n

    def one_at_a_time(r: int) -> float:
        pair = [(programs[i], seeds[i]) for i in (2 * r % k, (2 * r + 1) % k)]
        t = time.perf_counter()
        for program, seed in pair:
            evaluate(task, [program], [seed], device=device)
        return (time.perf_counter() - t) / len(pair)

    per_evaluation(1)  # warm-up: data loading, caches
    per_evaluation(k)
    compile_s = None
    if compiled:
        first = per_evaluation(k, compiled=True) * k
        compile_s = max(0.0, first - per_evaluation(k, compiled=True) * k)
    single, batched, fast = [], [], []
    for r in range(rounds):
        single.append(one_at_a_time(r))
        batched.append(per_evaluation(k))
        if compiled:
            fast.append(per_evaluation(k, compiled=True))
    params = task.model().num_params
    return Throughput(task.name, task.tier, params, k, tuple(single), tuple(batched),
                      tuple(fast), compile_s, family)  # fmt: skip


class _MLPModule(torch.nn.Module):
    """models.MLP written as a user would, same layout and init scale, for the adapter run."""

    def __init__(self, inputs: int, hidden: int, classes: int = 10):
        super().__init__()
        self.w1 = torch.nn.Parameter(torch.randn(inputs, hidden) / inputs**0.5)
        self.b1 = torch.nn.Parameter(torch.zeros(hidden))
        self.w2 = torch.nn.Parameter(torch.randn(hidden, classes) / hidden**0.5)
        self.b2 = torch.nn.Parameter(torch.zeros(classes))

    def forward(self, x):
        return torch.nn.functional.gelu(x @ self.w1 + self.b1) @ self.w2 + self.b2


def adapter_comparison(task: Task, k: int = 32, rounds: int = 3) -> dict[str, list[float]]:
    """Evaluations per second of an MLP task through its hand-batched model and through the
    generic ``torch.func`` adapter (``tasks/user.py``) on the same data, steps and K, in
    alternating rounds. Only tasks whose model is an MLP have a twin here."""
    from optforge.tasks import user

    if task.architecture != "mlp":
        raise ValueError(f"the adapter comparison needs an MLP task, got {task.name}")
    cfg = dict(task.config)
    d = task.data()
    spec = user.UserTask(
        f"{task.name} (adapter)",
        lambda: _MLPModule(cfg["inputs"], cfg["hidden"]),
        (task._train_inputs(), d.y_train),
        task._validation(),
        loss=torch.nn.functional.cross_entropy,
        steps=task.steps,
        batch=task.batch,
        warmup=task.warmup,
    )
    twin = user.as_task(spec)
    programs, seeds = distinct_programs(k), list(range(k))

    def evals_per_s(t) -> float:
        start = time.perf_counter()
        evaluate(t, programs, seeds)
        return k / (time.perf_counter() - start)

    evaluate(task, programs[:2], seeds[:2])  # warm-up: data loading, caches
    evaluate(twin, programs[:2], seeds[:2])
    out: dict[str, list[float]] = {"hand-batched": [], "torch.func adapter": []}
    for _ in range(rounds):
        out["hand-batched"].append(evals_per_s(task))
        out["torch.func adapter"].append(evals_per_s(twin))
    return out


MATMULS = ("aten::bmm", "aten::mm", "aten::addmm", "aten::baddbmm")


def profile_steps(task: Task, k: int = 32, steps: int = 30, compiled: bool = True,
                  family: str = "adamw") -> dict:  # fmt: skip
    """Milliseconds per training step of a batch of ``k``, split into its parts (medians over
    ``steps`` steps after warm-up), and the part of forward + backward spent in matrix
    multiplies (torch.profiler, self time): what batching cannot shrink, since the one at a
    time run does the same multiplies."""
    from torch.profiler import ProfilerActivity, profile

    from optforge.tasks.train import Batch

    programs = distinct_programs(k, family)
    batch = Batch(task, programs, list(range(k)), compiled=compiled)
    alive, living = torch.ones(k, dtype=torch.bool), [True] * k
    parts: dict[str, list[float]] = {"data": [], "forward": [], "backward": [], "updates": []}

    def step(t: int) -> None:
        marks = [time.perf_counter()]
        x, y = batch.data(t)
        marks.append(time.perf_counter())
        losses = batch.loss(x, y)
        marks.append(time.perf_counter())
        grad = batch.gradient(losses, alive)
        marks.append(time.perf_counter())
        batch.update(grad, living, 0.5)
        marks.append(time.perf_counter())
        for name, a, b in zip(parts, marks, marks[1:], strict=False):
            parts[name].append((b - a) * 1e3)

    for t in range(5):  # warm-up (and compile)
        step(t)
    for values in parts.values():
        values.clear()
    for t in range(steps):
        step(5 + t)
    result = {name: statistics.median(values) for name, values in parts.items()}
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for t in range(10):
            step(t)
    matmul_us = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in MATMULS)
    result["matmuls"] = matmul_us / 1e3 / 10
    return result
