"""Fitness: the one number the search asks of a candidate, built so that it predicts larger tasks.

A raw proxy score at one step size rewards the wrong things: a program whose constants are
3x off dies however good its algorithm, and a short horizon rewards greedy steps. A
``FitnessConfig`` names the remedies, each optional so ``optforge bench fidelity`` can measure
what it buys:

- **multipliers**: each candidate also trains with its whole update times m (e.g. 1/3, 1, 3,
  extra rows of the same batch); its fitness is the best of them, and the best m is returned
  so the search folds it into the child (``scaled``): evolution searches for algorithms, the
  envelope for their scale;
- **tasks**, **normalize**: the score on each task becomes the fraction of the tuned-SGD to
  tuned-AdamW gap gained, ``(f - sgd) / (adamw - sgd)``, both references being means over
  fixed seeds (``references``), and tasks are averaged, so a program must work on a vision
  and a language proxy alike;
- **seeds**: each (task, multiplier) is averaged over several seeds;
- **hurdle** (a cascade): stage 1 trains the first task, every multiplier, the first seed; a
  candidate whose stage-1 score is below the hurdle stops there with that score, the others
  pay for the rest. The hurdle is a fixed value, not a population quantile, so a candidate's
  fitness never depends on the batch or the generation it was scored in.

``FitnessConfig()`` on a task is the historical fitness: the raw metric, one seed, ×1.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from optforge.program.program import Program, Statement
from optforge.tasks import memory, registry
from optforge.tasks.builtin import Builtin
from optforge.tasks.train import evaluate

SEED_STRIDE = 7919  # fitness seed j of a candidate is seed + j * SEED_STRIDE (apart from re-scores)


@dataclass(frozen=True)
class FitnessConfig:
    tasks: tuple[str, ...] = ()  # () = the search task alone
    multipliers: tuple[float, ...] = (1.0,)
    seeds: int = 1
    normalize: bool = False
    hurdle: float | None = None  # stage-1 score a candidate needs to be scored in full
    max_batch: int | None = None  # candidates per training batch (None: all of them at once)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "multipliers", tuple(float(m) for m in self.multipliers))
        for name in self.tasks:
            registry.get(name)  # a KeyError naming the known tasks
        if not self.multipliers or any(not (m > 0 and math.isfinite(m)) for m in self.multipliers):
            raise ValueError(f"multipliers must be positive numbers, got {self.multipliers}")
        if len(set(self.multipliers)) != len(self.multipliers):
            raise ValueError(f"multipliers must be distinct, got {self.multipliers}")
        if self.seeds < 1:
            raise ValueError(f"seeds must be at least 1, got {self.seeds}")
        if len(self.tasks) > 1 and not self.normalize:
            raise ValueError(
                f"a fitness over several tasks {self.tasks} must be normalized "
                "(their metrics have different units): set normalize"
            )
        if self.max_batch is not None and self.max_batch < 1:
            raise ValueError(f"max_batch must be at least 1 or None, got {self.max_batch}")

    def on(self, task: str) -> FitnessConfig:
        """This configuration with ``task`` as its only task when it names none."""
        if self.tasks:
            return self
        return FitnessConfig((task,), self.multipliers, self.seeds, self.normalize, self.hurdle,
                             self.max_batch)  # fmt: skip

    @property
    def label(self) -> str:
        """A short name for tables: tasks, multipliers, seeds, normalization, hurdle."""
        parts = ["+".join(self.tasks) or "search task"]
        if self.multipliers != (1.0,):
            parts.append("x" + "/".join(f"{m:g}" for m in self.multipliers))
        if self.seeds > 1:
            parts.append(f"{self.seeds} seeds")
        if self.normalize:
            parts.append("normalized")
        if self.hurdle is not None:
            parts.append(f"hurdle {self.hurdle:g}")
        return ", ".join(parts)


def parse_definition(text: str) -> FitnessConfig:
    """``TASK[+TASK...][;mult=1/3,1,3][;seeds=N][;norm][;hurdle=X][;batch=N]``."""
    head, *options = [part.strip() for part in text.split(";")]
    kwargs: dict = {"tasks": tuple(t for t in head.split("+") if t)}
    for option in options:
        key, _, value = option.partition("=")
        try:
            if key == "mult":
                kwargs["multipliers"] = tuple(_number(v) for v in value.split(","))
            elif key == "seeds":
                kwargs["seeds"] = int(value)
            elif key == "norm":
                kwargs["normalize"] = True
            elif key == "hurdle":
                kwargs["hurdle"] = float(value)
            elif key == "batch":
                kwargs["max_batch"] = int(value)
            else:
                raise KeyError(key)
        except KeyError:
            raise ValueError(
                f"unknown fitness option {key!r} in {text!r} (known: mult, seeds, norm, hurdle, "
                "batch)"
            ) from None
        except (ValueError, ZeroDivisionError):
            raise ValueError(
                f"bad value {value!r} for fitness option {key!r} in {text!r} (e.g. "
                "mult=1/3,1,3; seeds=2; hurdle=0.5)"
            ) from None
    return FitnessConfig(**kwargs)


def _number(text: str) -> float:
    num, _, den = text.partition("/")
    return float(num) / float(den) if den else float(num)


@dataclass(frozen=True)
class Scored:
    fitness: float | None  # None: failed at every multiplier
    multiplier: float  # the best one, to fold into the program
    reason: str | None
    stage: int  # 1: stopped at the cascade's hurdle; 2: scored in full
    final_loss: float
    seconds: float  # training time spent on this candidate


def scaled(optimizer: Program | Builtin, factor: float) -> Program | Builtin:
    """``optimizer`` with its whole update multiplied by ``factor``: the folding of a best
    multiplier. A trailing ``update = update * c`` absorbs the factor (so folding twice does
    not grow the program); otherwise one such statement is appended. ×1 is the same object."""
    if factor == 1.0:
        return optimizer
    if isinstance(optimizer, Builtin):
        return optimizer.scaled(factor)
    out = optimizer.returns[0]
    last = optimizer.statements[-1] if optimizer.statements else None
    if (
        last is not None
        and last.target == out
        and last.op == "mul"
        and last.args[0] == out
        and isinstance(last.args[1], float)
    ):
        merged = Statement(out, "mul", (out, last.args[1] * factor))
        return Program((*optimizer.statements[:-1], merged), optimizer.returns)
    return Program((*optimizer.statements, Statement(out, "mul", (out, float(factor)))),
                   optimizer.returns)  # fmt: skip


REFERENCE_SEEDS = (1000, 1001, 1002)  # the tuned baselines' held-out seeds (docs/tasks.md)


@functools.lru_cache(maxsize=64)
def references(task_name: str) -> tuple[float, float]:
    """(tuned SGD, tuned AdamW) fitness of ``task_name``, each a mean over ``REFERENCE_SEEDS``:
    the two ends of the normalized scale. Means over fixed seeds, not the candidate's own
    seed: on one seed the two can come close (or swap) on a small task, and dividing by that
    gap would blow noise up; a fixed scale keeps each task's ranking that of its raw metric.
    AdamW is ``torch_adamw`` (bias correction and epsilon, as users run it) where tuned."""
    task = registry.get(task_name)
    known = dict(task.baselines)
    adamw = task.adamw
    if "sgd" not in known or adamw not in known:
        raise ValueError(
            f"task {task_name!r} has no tuned SGD and AdamW to normalize against "
            f"(has: {', '.join(known) or 'none'}); tune them with optforge tune"
        )
    n = len(REFERENCE_SEEDS)
    results = evaluate(task, [task.baseline("sgd")] * n + [task.baseline(adamw)] * n,
                       list(REFERENCE_SEEDS) * 2)  # fmt: skip
    if any(r.fitness is None for r in results):
        raise ValueError(f"a tuned reference of task {task_name!r} failed on a reference seed")
    low = statistics.fmean(r.fitness for r in results[:n])
    high = statistics.fmean(r.fitness for r in results[n:])
    if high - low <= 1e-6:
        raise ValueError(
            f"task {task_name!r}: tuned AdamW ({high:.4f}) does not beat tuned SGD ({low:.4f}) "
            "on the reference seeds; the normalized scale is undefined"
        )
    return low, high


def normalized(value: float | None, task: str) -> float | None:
    """The fraction of the tuned SGD to tuned AdamW gap that ``value`` gains (1 = AdamW)."""
    if value is None:
        return None
    low, high = references(task)
    return (value - low) / (high - low)


def score(
    config: FitnessConfig,
    optimizers: Sequence[Program | Builtin],
    seeds: Sequence[int],
    *,
    time_limit: float | None = None,
    compiled: bool = False,
    device: str = "cpu",
) -> list[Scored]:
    """The fitness of each optimizer (trained from its own seed) under ``config``, which must
    name its tasks (``config.on(task)``). All rows of one task train as one batch (or batches
    of ``max_batch``)."""
    if not config.tasks:
        raise ValueError("the fitness configuration names no task; use config.on(task)")
    if len(seeds) != len(optimizers):
        raise ValueError(f"{len(optimizers)} optimizers but {len(seeds)} seeds")
    cells = [[(t, s + j * SEED_STRIDE) for t in config.tasks for j in range(config.seeds)]
             for s in seeds]  # fmt: skip
    everyone = range(len(optimizers))
    results: dict = {}
    full = list(everyone)
    if config.hurdle is not None:  # the cascade: stage 1 for everyone, the rest for a few
        results = _train(config, optimizers, {i: cells[i][:1] for i in everyone}, time_limit,
                         compiled, device)  # fmt: skip
        full = [i for i in full if _at_least(_best(config, results, i, cells[i][:1])[0],
                                             config.hurdle)]  # fmt: skip
    skip = 1 if config.hurdle is not None else 0
    results.update(_train(config, optimizers, {i: cells[i][skip:] for i in full}, time_limit,
                          compiled, device))  # fmt: skip
    per_candidate: dict[int, list] = {i: [] for i in everyone}
    for key, r in results.items():
        per_candidate[key[0]].append(r)
    full_set = set(full)
    out = []
    for i in everyone:
        scored = i in full_set
        value, multiplier = _best(config, results, i, cells[i] if scored else cells[i][:1])
        mine = per_candidate[i]
        reasons = [r.reason for r in mine if r.reason]
        out.append(
            Scored(
                fitness=value,
                multiplier=multiplier,
                reason=None if value is not None else (reasons[0] if reasons else "failed"),
                stage=2 if scored else 1,
                final_loss=results[(i, *cells[i][0], multiplier)].final_loss,
                seconds=sum(r.seconds for r in mine),
            )
        )
    return out


def _train(config, optimizers, cells, time_limit, compiled, device="cpu") -> dict:
    """{(i, task, seed, multiplier): Result} for every listed cell of every optimizer i and
    every multiplier; the rows of one task train together."""
    out = {}
    tasks = dict.fromkeys(t for per in cells.values() for t, _ in per)
    memory.cap(device)
    for task_name in tasks:
        rows = [(i, s, m) for i, per in cells.items() for t, s in per if t == task_name
                for m in config.multipliers]  # fmt: skip
        task = registry.get(task_name)

        def run(part, task=task):
            return evaluate(task, [scaled(optimizers[i], m) for i, _, m in part],
                            [s for _, s, _ in part], time_limit=time_limit,
                            compiled=compiled, device=device)  # fmt: skip

        results = memory.in_fitting_batches(rows, run, (task_name, str(device)),
                                            config.max_batch)  # fmt: skip
        for (i, s, m), r in zip(rows, results, strict=True):
            out[(i, task_name, s, m)] = r
    return out


def _best(config: FitnessConfig, results: dict, i: int, cells) -> tuple[float | None, float]:
    """(fitness, multiplier): the best multiplier's mean over tasks of its mean over seeds;
    ties go to the multiplier nearest ×1. A multiplier with any failed cell is out."""
    best: tuple[float | None, float] = (None, _unit(config))
    for m in sorted(config.multipliers, key=lambda m: (abs(math.log(m)), m)):
        per_task: dict[str, list[float]] = {}
        failed = False
        for task, seed in cells:
            value = results[(i, task, seed, m)].fitness
            if config.normalize:
                value = normalized(value, task)
            if value is None:
                failed = True
                break
            per_task.setdefault(task, []).append(value)
        if failed:
            continue
        mean = statistics.fmean(statistics.fmean(v) for v in per_task.values())
        if best[0] is None or mean > best[0]:
            best = (mean, m)
    return best


def _unit(config: FitnessConfig) -> float:
    """The multiplier nearest ×1 (the one a failed candidate reports)."""
    return min(config.multipliers, key=lambda m: (abs(math.log(m)), m))


def _at_least(value: float | None, threshold: float) -> bool:
    return value is not None and value >= threshold
