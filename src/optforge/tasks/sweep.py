"""Tune the library baselines on a task: a grid of step sizes and weight decays, several seeds.

The best configuration is chosen on the tuning seeds and then re-measured on fresh seeds, so
the reported fitness is not inflated by the choice (a best-of-grid on the same seeds is).
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from optforge.program.program import Program
from optforge.tasks.registry import Task, baseline_program
from optforge.tasks.train import Result, evaluate

GRIDS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "sgd": ((0.03, 0.1, 0.3, 1.0, 3.0), (0.0,)),
    "momentum": ((0.01, 0.03, 0.1, 0.3, 1.0), (0.0,)),
    "adamw": ((3e-4, 1e-3, 3e-3, 1e-2, 3e-2), (0.0, 0.1)),
    "lion": ((3e-4, 1e-3, 3e-3, 1e-2, 3e-2), (0.0, 1.0)),
}
HELD_OUT_SEED = 1000  # fresh seeds start here


@dataclass(frozen=True)
class Summary:
    mean: float | None  # None when any seed failed
    std: float
    values: tuple[float | None, ...]

    @classmethod
    def of(cls, results: Sequence[Result]) -> Summary:
        return cls.of_values([r.fitness for r in results])

    @classmethod
    def of_values(cls, values: Sequence[float | None]) -> Summary:
        values = tuple(values)
        if not values or any(v is None for v in values):
            return cls(None, float("nan"), values)
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0,
                   values)  # fmt: skip

    def __str__(self) -> str:
        return self.text(4)

    def text(self, digits: int = 3) -> str:
        if self.mean is None:
            return "failed"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def evaluate_many(
    task: Task,
    candidates: Sequence[tuple[Program, int]],
    batch: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> list[Result]:
    """Evaluate (program, seed) pairs in batches of ``batch`` candidates."""
    results: list[Result] = []
    for start in range(0, len(candidates), batch):
        chunk = candidates[start : start + batch]
        results += evaluate(task, [p for p, _ in chunk], [s for _, s in chunk])
        if progress:
            progress(len(results), len(candidates))
    return results


@dataclass(frozen=True)
class Tuned:
    optimizer: str
    grid: dict[tuple[float, float], Summary]  # (eta, weight decay) -> tuning-seed summary
    best: tuple[float, float] | None
    held_out: Summary | None


def tune(
    task: Task,
    optimizers: Sequence[str] = tuple(GRIDS),
    seeds: int = 3,
    progress: Callable[[int, int], None] | None = None,
) -> list[Tuned]:
    """Grid-search each optimizer on seeds 0..seeds-1; re-measure the best on fresh seeds."""
    configs = [
        (name, eta, wd) for name in optimizers for eta, wd in itertools.product(*GRIDS[name])
    ]
    candidates = [(baseline_program(n, eta, wd), s) for n, eta, wd in configs for s in range(seeds)]
    results = evaluate_many(task, candidates, progress=progress)
    tuned, best_candidates = [], []
    for name in optimizers:
        grid = {}
        for i, (n, eta, wd) in enumerate(configs):
            if n == name:
                grid[(eta, wd)] = Summary.of(results[i * seeds : (i + 1) * seeds])
        ok = {k: v for k, v in grid.items() if v.mean is not None}
        best = max(ok, key=lambda k: ok[k].mean) if ok else None
        tuned.append(Tuned(name, grid, best, None))
        if best is not None:
            best_candidates += [(baseline_program(name, *best), HELD_OUT_SEED + s)
                                for s in range(seeds)]  # fmt: skip
    held = evaluate_many(task, best_candidates)
    out, i = [], 0
    for t in tuned:
        if t.best is None:
            out.append(t)
            continue
        out.append(Tuned(t.optimizer, t.grid, t.best, Summary.of(held[i : i + seeds])))
        i += seeds
    return out
