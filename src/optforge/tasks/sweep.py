"""Tune the library baselines on a task: a grid of step sizes and weight decays, several seeds.

The best configuration is chosen on the tuning seeds and then re-measured on fresh seeds, so
the reported fitness is not inflated by the choice (a best-of-grid on the same seeds is).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from optforge.program.program import Program
from optforge.tasks import memory
from optforge.tasks.registry import Task, baseline_program
from optforge.tasks.train import Result, evaluate


@dataclass(frozen=True)
class Grid:
    """Step sizes x weight decays x betas (``()``: the optimizer's default betas)."""

    etas: tuple[float, ...]
    weight_decays: tuple[float, ...]
    betas: tuple[tuple[float, ...], ...] = ((),)

    def configs(self) -> list[tuple[float, ...]]:
        return [(eta, wd, *b) for b in self.betas for eta in self.etas
                for wd in self.weight_decays]  # fmt: skip


HALF_DECADES = tuple(round(10 ** (e / 2), 12) for e in range(-8, -1))  # 1e-4, 3.16e-4, ... 1e-1
# Muon's step on hidden matrices: its orthogonalized update has unit singular values, so the
# good step sizes sit higher than Adam's (torch's 1e-3 default up to Keller Jordan's 0.02-0.05)
MUON_ETAS = tuple(round(10 ** (e / 2), 12) for e in range(-6, 0))  # 1e-3 ... 0.316
GRIDS: dict[str, Grid] = {
    "sgd": Grid((0.03, 0.1, 0.3, 1.0, 3.0), (0.0,)),
    "momentum": Grid((0.01, 0.03, 0.1, 0.3, 1.0), (0.0,)),
    "adamw": Grid((3e-4, 1e-3, 3e-3, 1e-2, 3e-2), (0.0, 0.1)),
    "lion": Grid((3e-4, 1e-3, 3e-3, 1e-2, 3e-2), (0.0, 1.0)),
    # AdamW as users run it (torch.optim.AdamW), two beta pairs, a wide log grid
    "torch_adamw": Grid(HALF_DECADES[1:], (0.0, 0.01, 0.1, 1.0), ((0.9, 0.999), (0.9, 0.95))),
    # Muon as users run it; its AdamW part is the task's tuned AdamW (``Task.adam_part``)
    "muon": Grid(MUON_ETAS, (0.0, 0.01, 0.1, 1.0)),
}
# issue-10 style wide grids for Lion: its two recommended beta pairs, 3-10x larger decays
WIDE_GRIDS: dict[str, Grid] = {
    **GRIDS,
    "sgd": Grid((0.01, 0.03, 0.1, 0.3, 1.0, 3.0), (0.0,)),
    "lion": Grid(HALF_DECADES[:-1], (0.0, 0.1, 1.0, 10.0), ((0.9, 0.99), (0.95, 0.98))),
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
    device: str = "cpu",
) -> list[Result]:
    """Evaluate (program, seed) pairs in batches of ``batch`` candidates on ``device`` (fewer
    when a batch does not fit its memory)."""
    results: list[Result] = []
    memory.cap(device)
    for start in range(0, len(candidates), batch):
        chunk = candidates[start : start + batch]

        def run(part):
            return evaluate(task, [p for p, _ in part], [s for _, s in part], device=device)

        results += memory.in_fitting_batches(chunk, run, (task.name, str(device)))
        if progress:
            progress(len(results), len(candidates))
    return results


@dataclass(frozen=True)
class Tuned:
    optimizer: str
    grid: dict[tuple[float, ...], Summary]  # (eta, weight decay, *betas) -> tuning-seed summary
    best: tuple[float, ...] | None
    held_out: Summary | None
    on_edge: bool = False  # the best step size is still at an end of the (extended) grid


def tune(
    task: Task,
    optimizers: Sequence[str] = tuple(GRIDS),
    seeds: int = 3,
    progress: Callable[[int, int], None] | None = None,
    *,
    grids: dict[str, Grid] = GRIDS,
    held_out_seeds: int | None = None,
    extend: int = 0,
    device: str = "cpu",
) -> list[Tuned]:
    """Grid-search each optimizer on seeds 0..seeds-1; re-measure the best on fresh seeds
    (``held_out_seeds`` of them, default ``seeds``). ``extend`` > 0 grows the step-size grid
    by a half-decade past whichever end holds the best, up to that many times, so that no
    reported optimum sits on an edge of its grid."""
    unknown = [n for n in optimizers if n not in grids]
    if unknown:
        raise ValueError(f"unknown optimizers {unknown} (known: {', '.join(grids)})")
    tuned = []
    for name in optimizers:
        configs = _configs(task, name, grids[name])
        grid = _sweep(task, name, configs, seeds, progress, device)
        for _ in range(extend):
            best = _best(grid)
            etas = sorted({c[0] for c in grid})
            if best is None or etas[0] < best[0] < etas[-1]:
                break
            eta = best[0] * (10**0.5 if best[0] == etas[-1] else 10**-0.5)
            # every setting of the other axes at the best step size, extended ones included
            more = [(round(eta, 12), *c[1:]) for c in grid if c[0] == best[0]]
            grid.update(_sweep(task, name, more, seeds, progress, device))
        best = _best(grid)
        etas = sorted({c[0] for c in grid})
        edge = best is not None and len(etas) > 1 and best[0] in (etas[0], etas[-1])
        tuned.append(Tuned(name, grid, best, None, edge))
    n = held_out_seeds or seeds
    held = evaluate_many(task, [(baseline_program(t.optimizer, *t.best), HELD_OUT_SEED + s)
                                for t in tuned if t.best for s in range(n)],
                         device=device)  # fmt: skip
    out, i = [], 0
    for t in tuned:
        if t.best is None:
            out.append(t)
            continue
        out.append(Tuned(t.optimizer, t.grid, t.best, Summary.of(held[i : i + n]), t.on_edge))
        i += n
    return out


def _configs(task: Task, name: str, grid: Grid) -> list[tuple[float, ...]]:
    """The grid's settings; Muon's carry the task's tuned AdamW for its non-matrix tensors."""
    if name != "muon":
        return grid.configs()
    return [(eta, wd, *task.adam_part()) for eta in grid.etas for wd in grid.weight_decays]


def _sweep(task, name, configs, seeds, progress,
           device="cpu") -> dict[tuple[float, ...], Summary]:  # fmt: skip
    candidates = [(baseline_program(name, *c), s) for c in configs for s in range(seeds)]
    results = evaluate_many(task, candidates, progress=progress, device=device)
    return {c: Summary.of(results[i * seeds : (i + 1) * seeds]) for i, c in enumerate(configs)}


def _best(grid: dict[tuple[float, ...], Summary]) -> tuple[float, ...] | None:
    ok = {k: v for k, v in grid.items() if v.mean is not None}
    return max(ok, key=lambda k: ok[k].mean) if ok else None
