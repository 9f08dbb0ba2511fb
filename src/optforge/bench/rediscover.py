"""Rediscovery: can the search reach a family it does not start in? (`optforge bench rediscover`)

A positive control for the search engine, cheap enough for many seeds. The fitness is not a
training run but how closely a candidate's updates match a *target* optimizer's on fixed random
streams: four tensors (a vector, a wide and a tall hidden matrix, and a matrix that is not
hidden), ``STEPS`` steps of an lr schedule with warm-up and cosine decay, gradients with a
slowly drifting mean plus noise and a different magnitude per tensor and per row (so momentum
and per-element normalization matter), and a fixed stream of weights. The loop is open: the
candidate and the target see the same ``w`` and ``g`` at every step, so their updates are
comparable step by step (no update is fed back).

- **fitness** = the cosine between the candidate's and the target's updates, concatenated over
  all steps and tensors, each (step, tensor) block divided by the target's norm there
  (``Scorer``): 1 for the target and any positive multiple of it; a negative cosine counts as
  0 and a non-finite update fails (None, below everything);
- **solution** = the simplified candidate matches the target on *held-out* streams (another
  seed): its relative error after the best positive scale, ``sqrt(1 - cos^2)`` of that
  cosine, is below ``TOLERANCE`` (``error``).

Both algorithms start from ``library.paper_warm_start()`` in the matrix language, score each
behaviour once (a cache keyed by ``fingerprint``; hits count as candidates, as in the search),
and stop at the first solution.
"""

from __future__ import annotations

import functools
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from optforge.program import generate, library
from optforge.program.execute import prepare
from optforge.program.fingerprint import fingerprint
from optforge.program.layout import Segments
from optforge.program.program import Program
from optforge.program.simplify import simplify
from optforge.search.mutation import MutationConfig, MutationError, mutate
from optforge.search.population import replace_oldest, tournament

SHAPES = ((24,), (16, 40), (40, 16), (16, 40))
HIDDEN = (False, True, True, False)  # the last matrix is not hidden (an embedding, a head)
STEPS = 200
WARMUP = 20
CHECKS = frozenset((0, 4, 19, 49, 99, 149))  # steps after which a failed update stops the run
DTYPE = torch.float64
HELD_OUT_SEED = -1  # the streams every solution is checked on; runs use seeds >= 0
TOLERANCE = 1e-3  # see docs/search.md for the measurements behind it
ALGORITHMS = ("evolution", "random")
POPULATION = 64
TOURNAMENT = 5
MAX_LENGTH = 20


def _program(*body: str) -> Program:
    if not body[-1].startswith("return"):
        body = (*body, "return update, v1, v2")
    return library.from_body(*body)


_DECAY = ("d = w * 0.01", "update = update + d", "lr = lr * 0.001", "update = update * lr")


@dataclass(frozen=True)
class Target:
    name: str
    program: Program
    distance: int  # mutations from the warm start on the shortest path we know (tests walk it)
    about: str


TARGETS = {
    t.name: t
    for t in [
        Target("signum", _program("v1 = interp(g, v1, 0.9)", "update = sign(v1)", *_DECAY), 1,
               "sign of the warm start's momentum"),
        Target("lion", _program("c = interp(g, v1, 0.9)", "update = sign(c)", *_DECAY,
                                "v1 = interp(g, v1, 0.999)"), 3,
               "Lion, beta1 0.9 and beta2 0.999 (the warm start's two decays)"),
        Target("adam", _program(
            "g2 = square(g)", "v1 = interp(g, v1, 0.9)", "v2 = interp(g2, v2, 0.999)",
            "c1 = power(0.9, step)", "c1 = invert(c1)", "m = v1 / c1",
            "c2 = power(0.999, step)", "c2 = invert(c2)", "s = v2 / c2", "s = sqrt(s)",
            "update = m / s", *_DECAY), 7,
            "the warm start with Adam's bias correction (two new literals)"),
        Target("muon", _program(
            "g2 = square(g)", "v1 = interp(g, v1, 0.9)", "v2 = interp(g2, v2, 0.999)",
            "s = sqrt(v2)", "update = v1 / s", "o = orthogonalize(v1)", "o = o * aspect",
            "update = interp(update, o, hidden)", *_DECAY), 3,
            "the warm start on non-hidden tensors, orthogonalized momentum x aspect on hidden"),
    ]
}  # fmt: skip


def target(name: str) -> Target:
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}; choose from {', '.join(TARGETS)}")
    return TARGETS[name]


# -- the streams and the fitness ----------------------------------------------------------------


@dataclass(frozen=True)
class Streams:
    w: torch.Tensor  # [STEPS, N]
    g: torch.Tensor  # [STEPS, N]
    lr: list[torch.Tensor]  # 0-dim, one per step
    step: list[torch.Tensor]  # 0-dim: 1, 2, ...
    seg: Segments

    def __post_init__(self):  # per-step rows, taken once: the loop then only calls the kernel
        object.__setattr__(self, "ws", self.w.unbind())
        object.__setattr__(self, "gs", self.g.unbind())
        object.__setattr__(self, "zeros", torch.zeros(self.seg.total_length, dtype=DTYPE))


@functools.lru_cache(maxsize=16)
def streams(seed: int, steps: int = STEPS) -> Streams:
    """Fixed random streams of weights, gradients and learning rates (made once per seed)."""
    gen = torch.Generator().manual_seed(1_000_003 + seed)
    seg = Segments(SHAPES, hidden=HIDDEN)
    ws, gs = [], []
    for shape in SHAPES:
        n = math.prod(shape)
        rows = shape[0] if len(shape) > 1 else 1

        def randn(*size):
            return torch.randn(*size, generator=gen, dtype=DTYPE)

        # gradient: a drifting mean (AR(1), correlation 0.97 per step) plus noise, times a
        # per-tensor magnitude over three decades and a per-row scale over one
        magnitude = 10.0 ** (3 * torch.rand((), generator=gen, dtype=DTYPE) - 2)
        scale = magnitude * 10.0 ** (torch.rand(rows, 1, generator=gen, dtype=DTYPE) - 0.5)
        scale = scale.expand(rows, n // rows).reshape(n)
        signal = 0.3 + 0.7 * torch.rand((), generator=gen, dtype=DTYPE)  # drift vs noise
        mean, rho = randn(n), 0.97
        g = torch.empty(steps, n, dtype=DTYPE)
        for t in range(steps):
            mean = rho * mean + math.sqrt(1 - rho**2) * randn(n)
            g[t] = scale * (signal * mean + randn(n))
        # weights: a fixed start, magnitudes around 1, drifting slowly
        w0 = randn(n) * 10.0 ** (torch.rand((), generator=gen, dtype=DTYPE) - 0.5)
        w = w0 + 0.02 * torch.cumsum(randn(steps, n), dim=0)
        ws.append(w)
        gs.append(g)
    t = torch.arange(steps, dtype=DTYPE)
    decay = 0.1 + 0.45 * (1 + torch.cos(math.pi * (t - WARMUP).clamp(min=0) / (steps - WARMUP)))
    lr = torch.where(t < WARMUP, (t + 1) / WARMUP, decay)
    return Streams(
        torch.cat(ws, dim=1), torch.cat(gs, dim=1), list(lr.unbind()),
        [torch.tensor(float(i + 1), dtype=DTYPE) for i in range(steps)], seg,
    )  # fmt: skip


def updates(program: Program, s: Streams, out: torch.Tensor | None = None) -> torch.Tensor | None:
    """The program's updates ``[steps, N]`` on the streams, from zero states, written into
    ``out`` when given; None when it cannot run."""
    try:
        prepared = prepare(program, DTYPE, torch.device("cpu"))
        v1 = v2 = s.zeros
        out = torch.empty_like(s.g) if out is None else out
        rows = zip(s.ws, s.gs, s.lr, s.step, out.unbind(), strict=True)
        for step_index, (w, g, lr, step, row) in enumerate(rows):
            update, new_v1, new_v2 = prepared.flat(w, g, v1, v2, lr, s.seg, step)
            row.copy_(update)
            if step_index in CHECKS and not bool(torch.isfinite(row).all()):
                return None  # it failed: the rest would not change that
            v1 = v1 if new_v1 is None else new_v1
            v2 = v2 if new_v2 is None else new_v2
        return out
    except (ValueError, RuntimeError, ArithmeticError):
        return None


class Scorer:
    """The fitness against one target on one seed's streams: the cosine between the
    candidate's and the target's updates with every (step, tensor) block divided by the
    target's norm there, so each tensor and each step weighs the same (unweighted, the hidden
    matrices of the Muon target would be 2% of its squared norm, and the last, smallest steps
    of the schedule little more)."""

    def __init__(self, target_program: Program, seed: int):
        self.streams = s = streams(seed)
        target = updates(target_program, s)
        if target is None:
            raise ValueError(f"the target fails on the streams of seed {seed}")
        blocks = torch.stack([b.norm(dim=1) for b in target.split(s.seg.lengths, dim=1)], 1)
        weight = torch.where(blocks > 0, 1 / blocks, torch.zeros_like(blocks))  # [steps, count]
        self.weight = torch.repeat_interleave(weight, torch.tensor(s.seg.lengths), dim=1)
        self.target = (target * self.weight).view(-1)
        self.target_norm = float(self.target.norm())
        self.buffer = torch.empty_like(s.g)

    def __call__(self, program: Program) -> float | None:
        """The weighted cosine; 0 when negative or when the update is all zeros, None when
        it fails or is not finite."""
        u = updates(program, self.streams, self.buffer)
        if u is None:
            return None
        u = u.mul_(self.weight).view(-1)
        dot, norm = float(torch.dot(u, self.target)), float(torch.dot(u, u)) ** 0.5
        if not (math.isfinite(dot) and math.isfinite(norm)):
            return None
        if norm == 0.0 or dot <= 0.0:
            return 0.0
        return min(1.0, dot / (norm * self.target_norm))


@functools.lru_cache(maxsize=16)
def _held_out(target_program: Program) -> Scorer:
    return Scorer(target_program, HELD_OUT_SEED)


def error(program: Program, target_program: Program) -> float:
    """The relative error on the held-out streams after the best positive scale,
    ``sqrt(1 - cos^2)`` of the weighted cosine (inf when the program fails or its cosine is
    not positive)."""
    cosine = _held_out(target_program)(program)
    return math.inf if not cosine else math.sqrt(max(0.0, 1.0 - cosine**2))


# -- the searches --------------------------------------------------------------------------------


@dataclass
class Row:
    target: str
    algorithm: str
    seed: int
    budget: int
    solved: bool
    candidates: int  # generated until the first solution, or the budget
    best_fitness: float
    best_error: float  # held-out error of the simplified best program
    best_program: str  # simplified
    evaluated: int  # distinct behaviours scored (cache misses)
    seconds: float


def rediscover(
    target_name: str,
    algorithm: str,
    seed: int,
    budget: int,
    *,
    start: Program | None = None,
    target_program: Program | None = None,
    population: int = POPULATION,
    tournament_size: int = TOURNAMENT,
    tolerance: float = TOLERANCE,
    progress: Callable[[int, float], None] | None = None,
) -> Row:
    """One run: evolution from ``start`` (default the warm start) or random search, until a
    solution or ``budget`` candidates. ``target_program`` overrides the named target's."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose from {', '.join(ALGORITHMS)}")
    if budget < 1:
        raise ValueError(f"budget must be at least 1, got {budget}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0 (negative seeds are held out), got {seed}")
    goal = target_program or target(target_name).program
    start = start or library.paper_warm_start()
    began = time.perf_counter()
    score, checked = Scorer(goal, seed), {}
    cache: dict[str, float | None] = {}
    best: tuple[float, Program | None] = (-1.0, None)  # random search may score nothing
    solved_at = None

    def evaluate(program: Program, n: int) -> float | None:
        nonlocal best, solved_at
        key = fingerprint(program)
        if key not in cache:
            cache[key] = score(program)
        fit = cache[key]
        if fit is not None and fit > best[0]:
            best = (fit, program)
        # a solution's held-out cosine is above sqrt(1 - tol^2) ~ 1 - tol^2 / 2: check only
        # candidates with 1 - cosine < tol^2 on the search's streams (error < 1.41 tol there)
        if fit is not None and 1 - fit < tolerance**2 and key not in checked:
            checked[key] = error(simplify(program), goal) < tolerance
            if checked[key] and solved_at is None:
                solved_at, best = n, (fit, program)
        if progress and n and (n % 50 == 0 or solved_at):
            progress(n, best[0])
        return fit

    rng = random.Random(seed)
    config = MutationConfig(language="matrix", max_length=MAX_LENGTH)
    operations, inputs = generate.operations("matrix"), generate.inputs("matrix")
    programs, fitness = [start], [evaluate(start, 0) if algorithm == "evolution" else None]
    pop, cursor = [0] * population, 0
    for n in range(1, budget + 1):
        if solved_at is not None:
            break
        if algorithm == "evolution":
            parent = tournament(pop, lambda i: fitness[i], rng, tournament_size)
            try:
                child, _ = mutate(programs[parent], rng, config)
            except MutationError:
                child = programs[parent]
        else:
            child = generate.random_program(rng, rng.randint(3, MAX_LENGTH), operations,
                                            inputs=inputs)  # fmt: skip
        programs.append(child)
        fitness.append(evaluate(child, n))
        cursor = replace_oldest(pop, cursor, len(programs) - 1)
    best_program = simplify(best[1]) if best[1] is not None else None
    return Row(
        target=target_name, algorithm=algorithm, seed=seed, budget=budget,
        solved=solved_at is not None,
        candidates=solved_at if solved_at is not None else budget,
        best_fitness=max(best[0], 0.0),
        best_error=error(best_program, goal) if best_program else math.inf,
        best_program=best_program.source() if best_program else "", evaluated=len(cache),
        seconds=time.perf_counter() - began,
    )  # fmt: skip


def run(
    targets: Sequence[str],
    algorithms: Sequence[str],
    seeds: Sequence[int],
    budget: int,
    progress: Callable[[str, int, float], None] | None = None,
    done: Callable[[Row], None] | None = None,
) -> list[Row]:
    """Every (target, algorithm, seed); ``progress(run, candidates, best)`` as they go."""
    for name in targets:
        target(name)
    for a in algorithms:
        if a not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {a!r}; choose from {', '.join(ALGORITHMS)}")
    if budget < 1:
        raise ValueError(f"budget must be at least 1, got {budget}")
    rows = []
    for name in targets:
        for a in algorithms:
            for seed in seeds:
                label = f"{name} {a} seed {seed}"
                report = (lambda n, f, label=label: progress(label, n, f)) if progress else None
                rows.append(rediscover(name, a, seed, budget, progress=report))
                if done:
                    done(rows[-1])
    return rows


# -- the table -----------------------------------------------------------------------------------

COLUMNS = ["target", "mutations from start", "algorithm", "solved",
           "median candidates to solution", "median best fitness", "median best held-out error",
           "s per run"]  # fmt: skip


def table_rows(rows: Sequence[Row]) -> list[list[str]]:
    out = []
    for name in dict.fromkeys(r.target for r in rows):
        for a in dict.fromkeys(r.algorithm for r in rows if r.target == name):
            group = [r for r in rows if r.target == name and r.algorithm == a]
            solved = [r.candidates for r in group if r.solved]
            distance = str(TARGETS[name].distance) if name in TARGETS else "-"
            out.append([
                name, distance, a, f"{len(solved)}/{len(group)}",
                f"{statistics.median(solved):.0f}" if solved else "-",
                f"{statistics.median(r.best_fitness for r in group):.4f}",
                f"{statistics.median(r.best_error for r in group):.2g}",
                f"{statistics.median(r.seconds for r in group):.0f}",
            ])  # fmt: skip
    return out


def to_json(rows: Sequence[Row]) -> list[dict]:
    return [{**asdict(r), "best_error": r.best_error if math.isfinite(r.best_error) else None}
            for r in rows]  # fmt: skip


def from_json(data: list[dict]) -> list[Row]:
    return [Row(**{**d, "best_error": math.inf if d["best_error"] is None else d["best_error"]})
            for d in data]  # fmt: skip
