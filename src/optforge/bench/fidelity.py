"""Fidelity of a fitness: how well it ranks programs the way larger tasks do.

A fitness is only as good as the order it puts programs in. ``optforge bench fidelity`` scores
one fixed sample of programs (``docs/data/fidelity-programs.txt``: search journal programs
across the fitness range, library optimizers, hand-written variants) with several fitness
definitions side by side, trains each program on target tasks over several seeds, and reports
Spearman's rho between each fitness and each target, the top-10 overlap, and the seconds one
candidate costs.

A definition with step-size multipliers folds its best multiplier into the program (the search
stores it so), so its target is the target task's score of the program times that multiplier;
the targets are therefore trained at x1 and at each multiplier a definition chose. Every training
result is stored in an SQLite file as it lands, so an interrupted run resumes where it stopped
and a new definition costs only its own fitness runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sqlite3
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optforge.program.program import Program
from optforge.search.fitness import parse_definition, scaled, score
from optforge.tasks import registry
from optforge.tasks.builtin import Builtin, parse_optimizer
from optforge.tasks.train import evaluate

TARGET_SEEDS = (500, 501, 502)  # apart from every fitness seed and every funnel seed


# -- the program sample ------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    name: str  # e.g. "journal:fmnist-vit-a-seed0:412 (fitness 0.66)" or "library:lion"
    optimizer: Program | Builtin

    @property
    def key(self) -> str:
        return hashlib.sha1(self.optimizer.source().encode()).hexdigest()[:16]


def read_sample(path: str | Path) -> list[Sample]:
    """Entries separated by ``## NAME`` lines, each a program's source or a built-in's text."""
    text = Path(path).read_text()
    samples, name, lines = [], None, []

    def flush():
        if name is not None:
            body = "\n".join(lines).strip()
            if not body:
                raise ValueError(f"{path}: entry {name!r} has no program")
            samples.append(Sample(name, parse_optimizer(body)))

    for line in text.splitlines():
        if line.startswith("## "):
            flush()
            name, lines = line[3:].strip(), []
        elif name is not None and not line.startswith("#"):
            lines.append(line)
    flush()
    keys = [s.key for s in samples]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{path}: the same program appears twice")
    return samples


def write_sample(path: str | Path, samples: Sequence[Sample], header: str = "") -> None:
    parts = [f"# {line}".rstrip() for line in header.splitlines()]
    for s in samples:
        parts += ["", f"## {s.name}", s.optimizer.source()]
    Path(path).write_text("\n".join(parts) + "\n")


# -- fitness definitions -----------------------------------------------------------------------


# -- the store ---------------------------------------------------------------------------------


class Store:
    """Results as they land: fitness per (definition, program), target per (task, program,
    multiplier, seed)."""

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, timeout=120.0)
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS fitness (definition TEXT, program TEXT, fitness REAL,
                multiplier REAL, seconds REAL, PRIMARY KEY (definition, program));
            CREATE TABLE IF NOT EXISTS target (task TEXT, program TEXT, multiplier REAL,
                seed INTEGER, value REAL, PRIMARY KEY (task, program, multiplier, seed));
            """
        )

    def fitness(self, definition: str) -> dict[str, tuple[float | None, float, float]]:
        rows = self.db.execute(
            "SELECT program, fitness, multiplier, seconds FROM fitness WHERE definition = ?",
            (definition,),
        )
        return {p: (f, m, s) for p, f, m, s in rows}

    def add_fitness(self, definition: str, rows) -> None:
        self._add("fitness", definition, rows)

    def targets(self, task: str) -> dict[tuple[str, float, int], float | None]:
        rows = self.db.execute(
            "SELECT program, multiplier, seed, value FROM target WHERE task = ?", (task,)
        )
        return {(p, m, s): v for p, m, s, v in rows}

    def add_targets(self, task: str, rows) -> None:
        self._add("target", task, rows)

    def _add(self, table: str, first: str, rows) -> None:
        """One transaction per batch: a batch's results land together or not at all."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(f"INSERT OR REPLACE INTO {table} VALUES (?, ?, ?, ?, ?)",
                                [(first, *row) for row in rows])  # fmt: skip


# -- the measurement ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    definition: str
    seconds_per_candidate: float
    rho: dict[str, float]  # target task -> Spearman rho
    top10: dict[str, float]  # target task -> fraction of the target's top 10 in the fitness's
    fitness: list[float | None]  # per program
    targets: dict[str, list[float | None]]  # target task -> per program (folded program)


@dataclass(frozen=True)
class Prior:
    """The per-program results of an earlier measurement (its ``--out`` JSON), so that a
    sample grown by a few programs trains only those: ``(definition, program name) ->
    (fitness, target task -> target value)`` and each definition's seconds per candidate."""

    values: dict[tuple[str, str], tuple[float | None, dict[str, float | None]]]
    seconds: dict[str, float]

    @classmethod
    def load(cls, path: str | Path) -> Prior:
        data = json.loads(Path(path).read_text())
        names, values, seconds = data["programs"], {}, {}
        for row in data["rows"]:
            seconds[row["definition"]] = row["seconds_per_candidate"]
            for i, name in enumerate(names):
                targets = {t: v[i] for t, v in row["targets"].items()}
                values[(row["definition"], name)] = (row["fitness"][i], targets)
        return cls(values, seconds)

    def covers(self, definition: str, name: str, targets: Sequence[str]) -> bool:
        held = self.values.get((definition, name))
        return held is not None and all(t in held[1] for t in targets)

    def without(self, names: set[str]) -> Prior:
        return Prior({k: v for k, v in self.values.items() if k[1] not in names}, self.seconds)


def measure(
    samples: Sequence[Sample],
    definitions: Sequence[str],
    targets: Sequence[str],
    store: Store,
    *,
    target_seeds: Sequence[int] = TARGET_SEEDS,
    fitness_seed: int = 0,
    batch: int = 48,
    progress: Callable[[str, int, int], None] | None = None,
    retime: int = 0,
    prior: Prior | None = None,
) -> list[Row]:
    """Score ``samples`` with every definition and on every target; returns one row per
    definition (in order). Seconds per candidate are those of the stored runs, or, with
    ``retime`` > 0, re-measured now on ``retime`` programs spread over the sample, one
    definition after another (for a machine that was busy while the runs were stored).
    Programs ``prior`` holds for a definition and every target take its values untrained."""
    configs = {d: parse_definition(d) for d in definitions}
    for task in targets:
        registry.get(task)
    prior = prior or Prior({}, {})
    # fitness: each definition over all programs, in batches, stored per batch
    for text, config in configs.items():
        done = store.fitness(text)
        todo = [s for s in samples if s.key not in done and not prior.covers(text, s.name, targets)]
        for start in range(0, len(todo), batch):
            part = todo[start : start + batch]
            begin = time.perf_counter()
            scored = score(config, [s.optimizer for s in part], [fitness_seed] * len(part))
            each = (time.perf_counter() - begin) / len(part)
            store.add_fitness(
                text,
                [(s.key, r.fitness, r.multiplier, each) for s, r in zip(part, scored, strict=True)],
            )
            if progress:
                progress(f"fitness {config.label}", len(samples) - len(todo) + start + len(part),
                         len(samples))  # fmt: skip
    # targets: each program at x1 and at every multiplier a definition folded into it
    needed = {(s.key, 1.0) for s in samples
              if not all(prior.covers(d, s.name, targets) for d in configs)}  # fmt: skip
    for text in configs:
        needed |= {(key, m) for key, (_, m, _) in store.fitness(text).items()}
    by_key = {s.key: s for s in samples}
    for task_name in targets:
        task = registry.get(task_name)
        have = store.targets(task_name)
        wanted = [(by_key[k], m, seed) for k, m in sorted(needed) if k in by_key
                  for seed in target_seeds]  # fmt: skip
        cells = [(s, m, seed) for s, m, seed in wanted if (s.key, m, seed) not in have]
        for start in range(0, len(cells), batch):
            part = cells[start : start + batch]
            results = evaluate(task, [scaled(s.optimizer, m) for s, m, _ in part],
                               [seed for *_, seed in part])  # fmt: skip
            rows = zip(part, results, strict=True)
            store.add_targets(task_name, [(s.key, m, seed, r.fitness) for (s, m, seed), r in rows])
            if progress:
                progress(f"target {task_name}", len(wanted) - len(cells) + start + len(part),
                         len(wanted))  # fmt: skip
    rows = [_row(text, samples, store, targets, target_seeds, prior) for text in definitions]
    if retime:
        step = max(1, len(samples) // retime)  # spread over the sample, not its first ones
        part = [s.optimizer for s in samples[::step][:retime]]
        for i, config in enumerate(configs.values()):
            score(config, part[:1], [fitness_seed])  # data, references and caches warm
            begin = time.perf_counter()
            score(config, part, [fitness_seed] * len(part))
            seconds = (time.perf_counter() - begin) / len(part)
            rows[i] = dataclasses.replace(rows[i], seconds_per_candidate=seconds)
    return rows


def agreement(rows: Sequence[Row], samples: Sequence[Sample], prior: Prior,
              names: Sequence[str]) -> float:  # fmt: skip
    """The largest absolute difference between ``rows``' fitness and target values and the
    ``prior``'s, over the programs ``names`` (re-measured): whether reusing it is sound."""
    index = {s.name: i for i, s in enumerate(samples)}
    worst = 0.0
    for row in rows:
        for name in names:
            before = prior.values.get((row.definition, name))
            if before is None:
                continue
            now = [row.fitness[index[name]], *(row.targets[t][index[name]] for t in row.targets)]
            then = [before[0], *(before[1].get(t) for t in row.targets)]
            for a, b in zip(now, then, strict=True):
                if (a is None) != (b is None):
                    return math.inf
                if a is not None:
                    worst = max(worst, abs(a - b))
    return worst


def _row(definition, samples, store: Store, targets, target_seeds, prior: Prior) -> Row:
    scored = store.fitness(definition)
    held = [prior.covers(definition, s.name, targets) for s in samples]
    fitness = [prior.values[(definition, s.name)][0] if h else scored[s.key][0]
               for s, h in zip(samples, held, strict=True)]  # fmt: skip
    rho, top10, values = {}, {}, {}
    for task in targets:
        have = store.targets(task)
        per_program = []
        for s, h in zip(samples, held, strict=True):
            if h:
                per_program.append(prior.values[(definition, s.name)][1][task])
                continue
            m = scored[s.key][1]
            seeds = [have[(s.key, m, seed)] for seed in target_seeds]
            per_program.append(None if any(v is None for v in seeds) else statistics.fmean(seeds))
        values[task] = per_program
        rho[task] = spearman(fitness, per_program)
        top10[task] = top_overlap(fitness, per_program, 10)
    # the prior's programs at its measured seconds, the new ones at theirs
    seconds = [prior.seconds[definition] if h else scored[s.key][2]
               for s, h in zip(samples, held, strict=True)]  # fmt: skip
    return Row(definition, statistics.fmean(seconds), rho, top10, fitness, values)


# -- statistics --------------------------------------------------------------------------------


def ranks(values: Sequence[float | None]) -> np.ndarray:
    """Average ranks (1 = lowest); failures (None, NaN) tie below every value."""
    x = np.array([-math.inf if v is None or math.isnan(v) else v for v in values], dtype=float)
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):  # ties share their average rank
        tied = x == value
        r[tied] = r[tied].mean()
    return r


def spearman(a: Sequence[float | None], b: Sequence[float | None]) -> float:
    """Spearman's rank correlation with average ranks for ties (NaN when one side is
    constant)."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} values against {len(b)}")
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def top_overlap(a: Sequence[float | None], b: Sequence[float | None], n: int) -> float:
    """The fraction of b's top ``n`` that is also in a's top ``n`` (failures rank last)."""

    def top(values):
        key = [(-math.inf if v is None else v) for v in values]
        return set(sorted(range(len(values)), key=lambda i: (-key[i], i))[:n])

    n = min(n, len(a))
    return len(top(a) & top(b)) / n if n else math.nan


# -- report ------------------------------------------------------------------------------------


def table(rows: Sequence[Row], targets: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    columns = ["fitness", "s/candidate", *(f"rho {t}" for t in targets), "rho mean",
               *(f"top-10 {t}" for t in targets)]  # fmt: skip
    out = []
    for row in rows:
        rhos = [row.rho[t] for t in targets]
        out.append([row.definition, f"{row.seconds_per_candidate:.3f}",
                    *(f"{r:.3f}" for r in rhos), f"{statistics.fmean(rhos):.3f}",
                    *(f"{row.top10[t]:.1f}" for t in targets)])  # fmt: skip
    return columns, out


def plot(rows: Sequence[Row], targets: Sequence[str], path: str | Path) -> None:
    """One panel per (definition, target): target against fitness, one point per program."""
    from optforge._extras import pyplot

    plt = pyplot("the fidelity plot")

    fig, axes = plt.subplots(len(rows), len(targets), squeeze=False,
                             figsize=(4.2 * len(targets), 3.4 * len(rows)))  # fmt: skip
    for i, row in enumerate(rows):
        for j, task in enumerate(targets):
            ax = axes[i][j]
            pairs = [(f, t) for f, t in zip(row.fitness, row.targets[task], strict=True)
                     if f is not None and t is not None]  # fmt: skip
            if pairs:
                ax.scatter(*zip(*pairs, strict=True), s=12, alpha=0.7)
            failed = sum(
                f is None or t is None for f, t in zip(row.fitness, row.targets[task], strict=True)
            )
            ax.set_title(f"{row.definition}\nrho {row.rho[task]:.2f}, {failed} failed",
                         fontsize=8)  # fmt: skip
            ax.set_xlabel("fitness", fontsize=8)
            ax.set_ylabel(task, fontsize=8)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def to_json(rows: Sequence[Row], samples: Sequence[Sample]) -> str:
    return json.dumps(
        {
            "programs": [s.name for s in samples],
            "rows": [
                {
                    "definition": r.definition,
                    "seconds_per_candidate": r.seconds_per_candidate,
                    "rho": r.rho,
                    "top10": r.top10,
                    "fitness": r.fitness,
                    "targets": r.targets,
                }
                for r in rows
            ],  # fmt: skip
        },
        indent=1,
    )
