"""``optforge study``: optimizers as users run them, swept and compared on ``nn.Module`` tasks.

A study is a set of runs: (task, model size, batch size, optimizer, lr, weight decay, seed).
Each run trains one model with one ``torch.optim.Optimizer`` (warm-up then cosine schedule,
weight decay on matrices only unless told otherwise), records its validation curve, and is
stored in SQLite the moment it finishes, so an interrupted study resumes without repeating a
run. The report (``study_report.py``) turns the store into tables and plots.
"""

from __future__ import annotations

import functools
import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

import optforge
from optforge.bench.study_tasks import TASKS, StudyTask
from optforge.optim.hidden import hidden_names
from optforge.optim.lion import ADAMW_RATIO

# name -> (what it is, default lr grid, default weight-decay grid); grids are log-spaced
OPTIMIZERS: dict[str, tuple[str, str, str]] = {
    "lion": ("optforge.Lion, betas (0.9, 0.99)", "1e-4:3e-3:4", "0.03:1:3"),
    "lion-0.95-0.98": ("optforge.Lion, betas (0.95, 0.98)", "1e-4:3e-3:4", "0.03:1:3"),
    "signum-0.9": ("single-beta sign momentum sign(interp(g, m, 0.9))", "1e-4:3e-3:4", "0.03:1:3"),
    "signum-0.99": ("single-beta sign momentum, beta 0.99", "1e-4:3e-3:4", "0.03:1:3"),
    "adamw": ("torch.optim.AdamW, betas (0.9, 0.999)", "3e-4:1e-2:4", "0.003:0.1:3"),
    "adam": ("torch.optim.Adam (L2 weight decay)", "3e-4:1e-2:4", "0"),
    "sgd": ("torch.optim.SGD, momentum 0.9", "0.01:0.3:4", "0:0:1"),
    "adafactor": ("torch.optim.Adafactor", "1e-3:3e-2:4", "0.003:0.1:3"),
    # no grid of its own: run after AdamW is tuned, at Lion.from_adamw(AdamW's best lr and wd)
    "lion-from-adamw": ("optforge.Lion.from_adamw(tuned AdamW's lr, wd): lr / 10, wd x 10", "", ""),
    # its grid is Muon's lr and wd only: the rest of the model runs at the study's tuned AdamW
    "muon": ("Muon on hidden matrices, the tuned AdamW elsewhere", "3e-3:0.3:5", "0.01:1:3"),
}
DERIVED = "lion-from-adamw"
ON_ADAMW = ("muon",)  # gridded, but only once AdamW is tuned (its part runs at AdamW's best)
PROGRAM_GRID = ("1/3:3:3", "0")  # a program's lr multiplies its own step size


def parse_grid(text: str) -> tuple[float, ...]:
    """``a,b,c`` (values), or ``lo:hi:n`` (n log-spaced values from lo to hi), or ``0``;
    ``1/3`` style fractions are allowed."""
    text = text.strip()
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise ValueError(f"grid {text!r}: use lo:hi:n or a comma-separated list")
        lo, hi, n = _number(parts[0]), _number(parts[1]), parts[2]
        if not n.isdigit() or int(n) < 1:
            raise ValueError(f"grid {text!r}: n must be an integer >= 1")
        n = int(n)
        if n == 1 or lo == hi:
            return (lo,)
        if lo <= 0 or hi <= 0:
            raise ValueError(f"grid {text!r}: a log-spaced grid needs lo, hi > 0")
        return tuple(lo * (hi / lo) ** (i / (n - 1)) for i in range(n))
    values = tuple(_number(v) for v in text.split(",") if v.strip())
    if not values:
        raise ValueError(f"grid {text!r} is empty")
    return values


def _number(text: str) -> float:
    text = text.strip()
    try:
        value = (
            float(text)
            if "/" not in text
            else float(text.split("/")[0]) / float(text.split("/")[1])
        )
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{text!r} must be a finite number >= 0")
    return value


def check_optimizer(name: str) -> None:
    """Known names, program files, library programs and JOURNAL[:ID] are allowed."""
    if name in OPTIMIZERS or _program(name) is not None:
        return
    raise ValueError(
        f"unknown optimizer {name!r}: use one of {', '.join(OPTIMIZERS)}, a program file, a "
        f"library program, or a search journal (JOURNAL or JOURNAL:ID)"
    )


def _program(spec: str):
    """The program ``spec`` names, or None (a built-in optimizer, or no program)."""
    from optforge.search.resolve import ProgramNotFound, resolve_program

    if spec in OPTIMIZERS:
        return None
    try:
        return resolve_program(spec)
    except ProgramNotFound:
        return None


def make_optimizer(name: str, model: nn.Module, lr: float, wd: float, wd_on: str,
                   adamw: tuple[float, float] | None = None):  # fmt: skip
    """The optimizer ``name`` on ``model``: decay on matrices only (``wd_on='matrices'``) or
    on every parameter (``'all'``). ``adamw`` is tuned AdamW's (lr, wd), which ``muon``
    runs its non-hidden tensors at."""
    if name == "muon":
        if adamw is None:
            raise ValueError("muon runs its non-hidden tensors at tuned AdamW: pass adamw=(lr, wd)")
        return muon_optimizer(model, lr, wd, *adamw, wd_on)
    decay = [p for p in model.parameters() if p.dim() >= 2 or wd_on == "all"]
    rest = [p for p in model.parameters() if not (p.dim() >= 2 or wd_on == "all")]
    groups = [{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if name in ("lion", "lion-0.95-0.98", DERIVED):
        betas = (0.95, 0.98) if name == "lion-0.95-0.98" else (0.9, 0.99)
        return optforge.Lion(groups, lr=lr, betas=betas)
    if name.startswith("signum-"):
        beta = float(name.split("-")[1])
        return optforge.Lion(groups, lr=lr, betas=(beta, beta))
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    if name == "adafactor":
        return torch.optim.Adafactor(groups, lr=lr)
    program = _program(name)
    if program is None:
        check_optimizer(name)
    return optforge.ProgramOptimizer(model.parameters(), program, lr=lr, nonfinite="skip")


def muon_optimizer(model: nn.Module, lr: float, wd: float, adamw_lr: float, adamw_wd: float,
                   wd_on: str = "matrices") -> optforge.ProgramOptimizer:  # fmt: skip
    """``torch.optim.Muon(lr, weight_decay=wd)`` (momentum 0.95, Nesterov) on
    ``hidden_names`` (Muon's matrices) and ``torch.optim.AdamW(adamw_lr,
    weight_decay=adamw_wd)`` on the rest,
    as one optimizer so one schedule scales both: ``library.muon`` with ``adam_lr_ratio =
    adamw_lr / lr`` (AdamW's lr follows Muon's through the schedule). AdamW's decay goes where
    the study puts AdamW's (``wd_on``); Newton-Schulz runs in fp32, not torch's bf16."""
    from optforge.program import library

    hidden = hidden_names(model)
    ratio = adamw_lr / lr
    groups: list[dict] = [
        {"params": [], "hidden": True, "program": library.muon(weight_decay=wd,
                                                                 adam_lr_ratio=ratio)},
        {"params": [], "hidden": False, "program": library.muon(
            adam_lr_ratio=ratio, adam_weight_decay=adamw_wd)},
        {"params": [], "hidden": False, "program": library.muon(adam_lr_ratio=ratio)},
    ]  # fmt: skip
    for name, p in model.named_parameters():
        decays = p.dim() >= 2 or wd_on == "all"
        groups[0 if name in hidden else 1 if decays else 2]["params"].append(p)
    groups = [g for g in groups if g["params"]]
    return optforge.ProgramOptimizer(groups, groups[0]["program"], lr=lr, nonfinite="skip")


@dataclass(frozen=True)
class RunKey:
    task: str
    size: str
    batch: int
    steps: int
    optimizer: str
    lr: float
    wd: float
    seed: int
    adamw: tuple[float, float] | None = None  # muon: the tuned AdamW (lr, wd) it ran with

    def text(self) -> str:
        """The store's key; ``adamw`` only when set, so runs stored before it keep theirs."""
        fields = asdict(self)
        if self.adamw is None:
            del fields["adamw"]
        return json.dumps(fields, sort_keys=True)


@dataclass
class RunResult:
    final: float | None  # the metric at the end (None: diverged)
    curve: list[tuple[int, float]]  # (step, metric) at each evaluation
    seconds: float
    step_ms: float  # optimizer.step() only, median


def train(task: StudyTask, key: RunKey, wd_on: str = "matrices", evals: int = 10) -> RunResult:
    """One run: seeded init and batches, warm-up (5%) then cosine decay to 0."""
    torch.manual_seed(key.seed)
    model = task.build(key.size)
    opt = make_optimizer(key.optimizer, model, key.lr, key.wd, wd_on, key.adamw)
    warm = max(1, key.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: (t + 1) / warm if t < warm
        else 0.5 * (1 + math.cos(math.pi * (t - warm) / max(1, key.steps - warm))),
    )  # fmt: skip
    gen = torch.Generator().manual_seed(1_000_003 + key.seed)
    every = max(1, key.steps // evals)
    curve, step_times, start = [], [], time.perf_counter()
    for t in range(key.steps):
        x, y = task.sample(gen, key.batch)
        loss = task.loss(model(x), y)
        if not torch.isfinite(loss):
            return RunResult(None, curve, time.perf_counter() - start, _median(step_times))
        opt.zero_grad()
        loss.backward()
        tick = time.perf_counter()
        opt.step()
        step_times.append((time.perf_counter() - tick) * 1e3)
        schedule.step()
        if (t + 1) % every == 0 or t + 1 == key.steps:
            model.eval()
            curve.append((t + 1, task.evaluate(model)))
            model.train()
    final = curve[-1][1] if curve and math.isfinite(curve[-1][1]) else None
    return RunResult(final, curve, time.perf_counter() - start, _median(step_times))


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2] if values else float("nan")


class Store:
    """Finished runs in SQLite, one row per run key, written when the run ends."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS runs (key TEXT PRIMARY KEY, task TEXT, size TEXT, "
            "batch INTEGER, steps INTEGER, optimizer TEXT, lr REAL, wd REAL, seed INTEGER, "
            "final REAL, curve TEXT, seconds REAL, step_ms REAL, finished REAL)"
        )

    def done(self) -> set[str]:
        return {k for (k,) in self.db.execute("SELECT key FROM runs")}

    def finals(self) -> dict[str, float | None]:
        """Run key -> its final metric (None: diverged)."""
        return dict(self.db.execute("SELECT key, final FROM runs"))

    def add(self, key: RunKey, result: RunResult) -> None:
        with self.db:
            self.db.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key.text(), key.task, key.size, key.batch, key.steps, key.optimizer, key.lr,
                 key.wd, key.seed, result.final, json.dumps(result.curve), result.seconds,
                 result.step_ms, time.time()),
            )  # fmt: skip

    def rows(self) -> list[dict]:
        cursor = self.db.execute("SELECT * FROM runs ORDER BY rowid")
        names = [d[0] for d in cursor.description]
        out = [dict(zip(names, r, strict=True)) for r in cursor]
        for row in out:
            row["curve"] = [tuple(p) for p in json.loads(row["curve"])]
        return out


@dataclass(frozen=True)
class Plan:
    """What to train, in stages: every grid point at seeds ``0..tune_seeds-1``; up to
    ``extend`` rounds that add a grid value beyond an edge where the best point sits (so no
    optimum is an artefact of the grid); the remaining seeds at each optimizer's best point.
    Then what builds on tuned AdamW: ``lion-from-adamw`` (if asked for) at every seed, and
    ``muon``'s own grid, extensions and seeds with AdamW's part at AdamW's best. With
    ``tune_seeds == seeds`` every grid point gets every seed."""

    task: str
    optimizers: tuple[str, ...]
    seeds: int
    sizes: tuple[str, ...]
    batches: tuple[int, ...]
    steps: int
    lr: dict[str, tuple[float, ...]]  # per optimizer
    wd: dict[str, tuple[float, ...]]
    tune_seeds: int = 0  # 0: all seeds
    extend: int = 2  # rounds of grid extension past an edge optimum

    @property
    def tuning(self) -> int:
        return self.tune_seeds or self.seeds

    def cells(self) -> Iterator[tuple[str, int]]:
        for size in self.sizes:
            for batch in self.batches:
                yield size, batch

    def gridded(self, on_adamw: bool | None = None) -> list[str]:
        """The optimizers with a grid; ``on_adamw`` True/False: only those that do / do not
        wait for tuned AdamW."""
        return [o for o in self.optimizers if o != DERIVED
                and (on_adamw is None or (o in ON_ADAMW) == on_adamw)]  # fmt: skip

    def key(self, size: str, batch: int, opt: str, lr: float, wd: float, seed: int,
            adamw: tuple[float, float] | None = None) -> RunKey:  # fmt: skip
        return RunKey(self.task, size, batch, self.steps, opt, lr, wd, seed, adamw)

    def _cells(self, finals, on_adamw: bool):
        """(size, batch, optimizer, AdamW's best or None) for the optimizers of one phase;
        an optimizer waiting for AdamW is left out where AdamW has no best yet."""
        for size, batch in self.cells():
            base = self.best(finals, size, batch, "adamw") if on_adamw else None
            for opt in self.gridded(on_adamw):
                if not on_adamw or base is not None:
                    yield size, batch, opt, base

    def grid(self, finals: dict[str, float | None], on_adamw: bool = False) -> Iterator[RunKey]:
        """Stage 1: every grid point at the tuning seeds."""
        for size, batch, opt, base in self._cells(finals, on_adamw):
            for lr in self.lr[opt]:
                for wd in self.wd[opt]:
                    for seed in range(self.tuning):
                        yield self.key(size, batch, opt, lr, wd, seed, base)

    def extensions(self, finals: dict[str, float | None],
                   on_adamw: bool = False) -> Iterator[RunKey]:  # fmt: skip
        """One round: where an optimizer's best point sits at the end of a log grid, the next
        value beyond it (one grid step) with every value of the other axis."""
        for size, batch, opt, base in self._cells(finals, on_adamw):
            top = self.best(finals, size, batch, opt, base)
            if top is None:
                continue
            lrs, wds = self.axes(finals, size, batch, opt, base)
            new_lrs = _beyond(top[0], lrs, self.lr[opt], self.extend)
            new_wds = _beyond(top[1], wds, self.wd[opt], self.extend)
            points = [(lr, wd) for lr in new_lrs for wd in wds]
            points += [(lr, wd) for lr in lrs + new_lrs for wd in new_wds]
            for lr, wd in points:
                for seed in range(self.tuning):
                    yield self.key(size, batch, opt, lr, wd, seed, base)

    def confirmations(self, finals: dict[str, float | None],
                      on_adamw: bool = False) -> Iterator[RunKey]:  # fmt: skip
        """The seeds left, at each optimizer's best point."""
        for size, batch, opt, base in self._cells(finals, on_adamw):
            top = self.best(finals, size, batch, opt, base)
            for seed in range(self.tuning, self.seeds) if top else ():
                yield self.key(size, batch, opt, *top, seed, base)

    def derived(self, finals: dict[str, float | None]) -> Iterator[RunKey]:
        """Lion at ``Lion.from_adamw`` of tuned AdamW, every seed."""
        if DERIVED not in self.optimizers:
            return
        for size, batch in self.cells():
            top = self.best(finals, size, batch, "adamw")
            for seed in range(self.seeds) if top else ():
                lr, wd = top[0] / ADAMW_RATIO, top[1] * ADAMW_RATIO
                yield self.key(size, batch, DERIVED, lr, wd, seed)

    def stages(self) -> list[Callable[[dict[str, float | None]], Iterator[RunKey]]]:
        """In order; each picks its runs from the results of the ones before."""
        first = [self.grid, *[self.extensions] * self.extend, self.confirmations, self.derived]
        if not self.gridded(on_adamw=True):
            return first
        on = [self.grid, *[self.extensions] * self.extend, self.confirmations]
        return first + [functools.partial(stage, on_adamw=True) for stage in on]

    def axes(self, finals: dict[str, float | None], size: str, batch: int, opt: str,
             adamw: tuple[float, float] | None = None,
             ) -> tuple[list[float], list[float]]:  # fmt: skip
        """The lr and wd values tried so far: the grid's and the extensions found in
        ``finals`` (so a resumed study sees its extensions again); for an optimizer run on
        tuned AdamW, only its runs on that AdamW setting."""
        lrs, wds = set(self.lr[opt]), set(self.wd[opt])
        here = json.loads(self.key(size, batch, opt, 0.0, 0.0, 0, adamw).text())
        fields = ("task", "size", "batch", "steps", "optimizer")
        for text in finals:
            key = json.loads(text)
            if all(key[f] == here[f] for f in fields) and key.get("adamw") == here.get("adamw"):
                lrs.add(key["lr"])
                wds.add(key["wd"])
        return sorted(lrs), sorted(wds)

    def best(self, finals: dict[str, float | None], size: str, batch: int, opt: str,
             adamw: tuple[float, float] | None = None) -> tuple[float, float] | None:  # fmt: skip
        """The point with the best mean final metric over the tuning seeds (a diverged seed
        sinks its point); None when every point diverged."""
        scores = {}
        lrs, wds = self.axes(finals, size, batch, opt, adamw)
        for lr in lrs:
            for wd in wds:
                values = [finals.get(self.key(size, batch, opt, lr, wd, s, adamw).text())
                          for s in range(self.tuning)]  # fmt: skip
                if all(v is not None for v in values):
                    scores[(lr, wd)] = sum(values) / len(values)
        return max(scores, key=scores.get) if scores else None

    def size(self) -> int:
        """Runs before any grid extension."""
        per_cell = sum(len(self.lr[o]) * len(self.wd[o]) * self.tuning for o in self.gridded())
        per_cell += len(self.gridded()) * (self.seeds - self.tuning)
        per_cell += self.seeds if DERIVED in self.optimizers else 0
        return per_cell * len(self.sizes) * len(self.batches)


def _beyond(value: float, tried: list[float], grid: tuple[float, ...],
            rounds: int) -> list[float]:  # fmt: skip
    """The next value past ``value`` when it is the largest or smallest tried, one step of
    ``grid``'s log spacing away and at most ``rounds`` steps past the grid's own ends (a
    resumed study stops where the first run stopped); nothing for a one-value grid or one
    with 0."""
    if len(grid) < 2 or min(grid) <= 0 or len(tried) < 2:
        return []
    low, high = sorted(grid)[:2], sorted(grid)[-2:]
    up, down = high[1] / high[0], low[0] / low[1]
    if value == max(tried) and value * up <= high[1] * up**rounds * (1 + 1e-9):
        return [value * up]
    if value == min(tried) and value * down >= low[0] * down**rounds * (1 - 1e-9):
        return [value * down]
    return []


def plan(task: str, optimizers: list[str], seeds: int = 3, sizes: list[str] | None = None,
         batches: list[int] | None = None, steps: int | None = None, lr: str | None = None,
         wd: str | None = None, tune_seeds: int | None = None,
         extend: int = 2) -> Plan:  # fmt: skip
    """Check every choice and fill the defaults; a bad one raises ValueError naming it and
    what is allowed."""
    if task not in TASKS:
        raise ValueError(f"unknown study task {task!r} (tasks: {', '.join(TASKS)})")
    spec = TASKS[task]()
    for name in optimizers:
        check_optimizer(name)
    if DERIVED in optimizers and "adamw" not in optimizers:
        raise ValueError(f"{DERIVED} is Lion.from_adamw of tuned AdamW: add adamw to the "
                         f"optimizers")  # fmt: skip
    for name in ON_ADAMW:
        if name in optimizers and "adamw" not in optimizers:
            raise ValueError(f"{name} runs its non-hidden tensors at the study's tuned "
                             f"AdamW, tuned first in the same study: add adamw to the "
                             f"optimizers")  # fmt: skip
    if not 0 <= extend <= 10:
        raise ValueError(f"extend {extend} must be between 0 and 10 rounds")
    if tune_seeds is not None and not 1 <= tune_seeds <= seeds:
        raise ValueError(f"tune seeds {tune_seeds} must be between 1 and --seeds ({seeds})")
    sizes = sizes or [spec.sizes[0]]
    for size in sizes:
        if size not in spec.sizes:
            raise ValueError(f"model size {size!r} not known for {task} (sizes: {spec.sizes})")
    lrs, wds = {}, {}
    for name in optimizers:
        if name == DERIVED:
            continue
        default_lr, default_wd = OPTIMIZERS.get(name, (None, *PROGRAM_GRID))[1:]
        lrs[name] = parse_grid(_for(name, lr) or default_lr)
        wds[name] = parse_grid(_for(name, wd) or default_wd)
    return Plan(task, tuple(optimizers), seeds, tuple(sizes), tuple(batches or [spec.batch]),
                steps or spec.steps, lrs, wds, tune_seeds or 0, extend)  # fmt: skip


def _for(name: str, text: str | None) -> str | None:
    """A grid for optimizer ``name`` from ``GRID`` or ``NAME=GRID;NAME=GRID``."""
    if not text:
        return None
    if "=" not in text:
        return text
    for part in text.split(";"):
        key, _, grid = part.partition("=")
        if key.strip() == name:
            return grid
    return None


def run(plan: Plan, store: Store, wd_on: str = "matrices",
        progress: Callable[[int, int, str], None] | None = None) -> int:  # fmt: skip
    """Train every run of ``plan`` not yet in ``store``, stage by stage (a stage picks its
    settings from the results of the ones before); returns how many were trained."""
    spec = TASKS[plan.task]()
    total, finished, trained = plan.size(), 0, 0
    for stage in plan.stages():
        done = store.done()
        keys = list(dict.fromkeys(stage(store.finals())))
        if getattr(stage, "func", stage) == plan.extensions:
            total += len(keys)
        for key in keys:
            if key.text() in done:
                finished += 1
                continue
            if progress:
                progress(finished, total, f"{key.optimizer} lr {key.lr:.3g} wd {key.wd:.3g} "
                                          f"seed {key.seed}")  # fmt: skip
            store.add(key, train(spec, key, wd_on))
            finished, trained = finished + 1, trained + 1
    if progress:
        progress(total, total, "done")
    return trained
