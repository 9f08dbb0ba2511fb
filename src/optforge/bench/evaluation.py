"""Fitness-evaluation throughput: candidate evaluations per second, one at a time and batched.

Batches hold distinct programs (AdamW with K slightly different step sizes), the search's
situation; one-at-a-time runs the same candidates with K = 1.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from optforge.tasks.registry import Task, baseline_program
from optforge.tasks.train import evaluate


@dataclass(frozen=True)
class Throughput:
    task: str
    tier: str
    params: int
    single_s: float  # seconds per evaluation, one at a time (eager: compiling slows K = 1)
    batched_evals_per_s: float  # eager
    compiled_evals_per_s: float | None  # torch.compile'd forward/backward, after compiling
    compile_s: float | None  # the first compiled batch's extra time
    k: int

    @property
    def single_evals_per_s(self) -> float:
        return 1.0 / self.single_s

    @property
    def speedup(self) -> float:
        """Best batched throughput over one-at-a-time throughput."""
        best = max(self.batched_evals_per_s, self.compiled_evals_per_s or 0.0)
        return best / self.single_evals_per_s


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


def measure(task: Task, k: int = 32, singles: int = 2, compiled: bool = True) -> Throughput:
    """Throughput one at a time and in batches of ``k`` distinct programs (eager, and
    compiled unless ``compiled`` is False)."""
    programs = [baseline_program("adamw", 3e-3 * (1 + i / 1000)) for i in range(k)]
    seeds = list(range(k))
    evaluate(task, programs[:1], [0])  # warm-up: data loading, caches
    t = time.perf_counter()
    for i in range(singles):
        evaluate(task, programs[i : i + 1], [i])
    single = (time.perf_counter() - t) / singles

    def batch_seconds(**kw) -> float:
        t = time.perf_counter()
        evaluate(task, programs, seeds, **kw)
        return time.perf_counter() - t

    batched = k / batch_seconds()
    fast = compile_s = None
    if compiled:
        first = batch_seconds(compiled=True)
        steady = batch_seconds(compiled=True)
        fast, compile_s = k / steady, first - steady
    params = task.model().num_params
    return Throughput(task.name, task.tier, params, single, batched, fast, compile_s, k)
