"""What a journal says: leaderboard, lineage of the best, statistics, a fitness plot, finalists.

Everything here reads the journal only, so ``optforge show`` works on a finished search, on
one still running (WAL lets readers in) and on one that was killed.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from optforge.search.config import SearchConfig
from optforge.search.evolution import BASELINES
from optforge.search.funnel import baseline_scores, behaviour_fitness
from optforge.search.journal import SEARCHED, Journal, baseline_name, folded_program


@dataclass(frozen=True)
class Statistics:
    generated: int
    trained: int  # training runs on the search task (misses and re-scorings)
    hit_rate: float  # cache hits / candidates generated
    redundant_fraction: float  # redundant statements / statements, over generated candidates
    failures: dict[str, int]  # reason (without the step number) -> count
    seconds: float  # the search's running time (time spent stopped is not counted)
    restarts: int

    @property
    def generated_per_second(self) -> float:
        return self.generated / self.seconds if self.seconds > 0 else 0.0

    @property
    def trained_per_second(self) -> float:
        return self.trained / self.seconds if self.seconds > 0 else 0.0


def config_of(journal: Journal) -> SearchConfig:
    return SearchConfig.from_json(journal.get_meta("config"))


def statistics_of(journal: Journal) -> Statistics:
    rows = journal.candidates("kind = 'child'")
    hits = sum(1 for r in rows if r["cache_of"] is not None)
    trained = sum(1 for r in journal.candidates(SEARCHED) if r["job"] is not None
                  and r["status"] in ("evaluated", "failed"))  # fmt: skip
    statements = sum(r["statements"] for r in rows)
    redundant = sum(r["redundant"] for r in rows)
    failures = Counter(_reason(r["reason"]) for r in rows if r["status"] == "failed")
    return Statistics(
        generated=len(rows),
        trained=trained,
        hit_rate=hits / len(rows) if rows else 0.0,
        redundant_fraction=redundant / statements if statements else 0.0,
        failures=dict(failures.most_common()),
        seconds=(journal.state() or {}).get("elapsed", 0.0),
        restarts=len(journal.events("restart")),
    )


def _reason(reason: str | None) -> str:
    """Failure reasons without their step numbers, so they can be counted."""
    if not reason:
        return "unknown"
    return reason.split(" at step ")[0]


def leaderboard(journal: Journal, top: int = 10) -> list[tuple[int, float, str]]:
    """(candidate, search fitness, source) of the best distinct behaviours."""
    ranked = sorted(((f, c) for c, f in behaviour_fitness(journal).items() if f is not None),
                    key=lambda x: (-x[0], x[1]))  # fmt: skip
    return [(c, f, folded_program(journal.candidate(c)).source()) for f, c in ranked[:top]]


def lineage(journal: Journal, candidate: int) -> list[tuple[int, str | None, float | None]]:
    """(candidate, mutation that made it, fitness) from the warm start down to ``candidate``."""
    chain = []
    current: int | None = candidate
    while current is not None:
        row = journal.candidate(current)
        chain.append((row["id"], row["mutation"], row["fitness"]))
        current = row["parent"]
    return chain[::-1]


def baselines(journal: Journal, task: str) -> dict[str, float | None]:
    out = {}
    for name in BASELINES:
        rows = journal.candidates("kind = 'baseline' AND name = ?", (baseline_name(name, task),))
        if rows:
            out[name] = rows[0]["fitness"]
    return out


def finalists(journal: Journal) -> list[dict]:
    text = journal.get_meta("finalists")
    return [] if text is None else json.loads(text)


def plot(journal: Journal, path: str | Path) -> Path:
    """Fitness of every trained candidate in order, the best so far, and the baselines."""
    from optforge._extras import pyplot

    plt = pyplot("the search's fitness plot")

    config = config_of(journal)
    rows = journal.candidates("kind = 'child'")
    xs = [i + 1 for i, r in enumerate(rows) if r["fitness"] is not None]
    ys = [r["fitness"] for r in rows if r["fitness"] is not None]
    warm = journal.candidates("kind = 'warm_start'")
    start = warm[0]["fitness"] if warm and warm[0]["fitness"] is not None else None
    best, running = [], float("-inf") if start is None else start
    for y in ys:
        running = max(running, y)
        best.append(running)
    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    ax.scatter(xs, ys, s=6, alpha=0.35, color="tab:blue", label="candidate", linewidths=0)
    ax.plot(xs, best, color="tab:blue", linewidth=2, label="best so far", drawstyle="steps-post")
    if start is not None:
        ax.axhline(start, color="grey", linestyle=":", label="warm start")
    colors = {
        "torch_adamw": "tab:orange",
        "adamw": "tab:red",
        "lion": "tab:green",
        "muon": "tab:purple",
    }
    tuned = baselines(journal, config.task)
    for name, value in tuned.items():
        if value is not None:
            ax.axhline(value, color=colors[name], linestyle="--", label=f"tuned {name}")
    if ys:
        spread = statistics.pstdev(ys) or 0.05
        low = max(min(ys), statistics.median(ys) - 3 * spread)
        ax.set_ylim(low, max(ys + [v for v in tuned.values() if v])
                    + 0.25 * spread)  # fmt: skip
    ax.set_xlabel("candidate (generated, in order)")
    ax.set_ylabel(f"fitness on {config.task}")
    ax.set_title(f"{config.algorithm} ({config.mutation.language}) on {config.task}, "
                 f"seed {config.seed}")  # fmt: skip
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


__all__ = ["Statistics", "baseline_scores", "baselines", "config_of", "finalists", "leaderboard",
           "lineage", "plot", "statistics_of"]  # fmt: skip


@dataclass(frozen=True)
class RunSummary:
    """One search journal in a line: for comparing seeds and algorithms."""

    path: str
    algorithm: str
    seed: int
    generated: int
    seconds: float
    hit_rate: float
    redundant_fraction: float
    trained: int
    best_search: float | None  # best behaviour's search-task fitness
    meta: dict[str, tuple[float | None, float]]  # task -> (mean, std) of finalist 1
    simplified_meta: dict[str, tuple[float | None, float]]  # ... of finalist 1 simplified
    baselines: dict[str, dict[str, tuple[float | None, float]]]  # task -> name -> (mean, std)
    program: str | None  # finalist 1, simplified
    traits: tuple[str, ...]


def summarize(path: str | Path) -> RunSummary:
    journal = Journal(path)
    try:
        config = config_of(journal)
        stats = statistics_of(journal)
        board = leaderboard(journal, 1)
        found = finalists(journal)
        first = found[0] if found else None
        meta, simplified_meta = (
            ({} if first is None else {t: (x["mean"], x["std"]) for t, x in first[key].items()})
            for key in ("meta", "simplified_meta")
        )
        base = {t: {n: (s.mean, s.std) for n, s in by.items()}
                for t, by in baseline_scores(journal, config).items()}  # fmt: skip
        program = first["simplified_source"] if first else (board[0][2] if board else None)
        return RunSummary(str(path), config.algorithm, config.seed, stats.generated,
                          stats.seconds, stats.hit_rate, stats.redundant_fraction,
                          stats.trained, board[0][1] if board else None, meta, simplified_meta,
                          base, program, traits(program) if program else ())  # fmt: skip
    finally:
        journal.close()


def shaped_use(journal: Journal) -> tuple[int, int, float | None]:
    """(children generated, those whose live statements use a matrix operation or read
    ``hidden``/``aspect``/``step``, the best search fitness among the latter): how much of a
    search the matrix language reached."""
    from optforge.program import parse
    from optforge.program.analysis import analyze

    rows = journal.candidates("kind = 'child'")
    shaped = [r for r in rows if analyze(parse(r["source"])).shaped]
    best = max((r["fitness"] for r in shaped if r["fitness"] is not None), default=None)
    return len(rows), len(shaped), best


def family(source: str) -> str:
    """The program's family in one word, from its live operations: ``orthogonalized`` (Muon's
    kind; with AdamW-like or sign updates only where ``hidden`` is 0, as Muon runs), ``hybrid``
    (an orthogonalized direction mixed with a sign or a second moment on the same tensors),
    ``sign`` (Lion's kind), ``Adam-like`` (divides by a second moment), else ``momentum/SGD``."""
    have = set(traits(source))
    other = have & {"sign", "second moment"}
    if "orthogonalized" in have:
        return "hybrid" if other and "reads hidden" not in have else "orthogonalized"
    if "sign" in have:
        return "sign"
    return "Adam-like" if "second moment" in have else "momentum/SGD"


def state_bytes(source: str, dtype_bytes: int = 4) -> int:
    """Optimizer-state bytes per parameter: the state slots the program's live statements
    read (a slot only written is not kept between steps) times the state dtype's size."""
    program, _, reads = _live(source)
    return dtype_bytes * len({v for v in program.returns[1:] if v in reads})


def _live(source: str):
    """(program, its live statements, the names they read)."""
    from optforge.program import parse
    from optforge.program.analysis import analyze

    program = parse(source)
    redundant = analyze(program).redundant
    live = [s for i, s in enumerate(program.statements) if i not in redundant]
    return program, live, {a for s in live for a in s.args if isinstance(a, str)}


def traits(source: str) -> tuple[str, ...]:
    """What a program's live statements do, in the paper's terms: ``sign``; ``EMA state`` (a
    state slot returns an ``interp`` of new values and its old value); ``second moment``
    (``sqrt``/``rsqrt``); ``orthogonalized``; ``reads w`` (decay, or a bound as in
    ``clip(u, w)``); ``reads hidden`` (treats hidden matrices apart); ``ignores lr``
    (no schedule: the step size is a constant of the program)."""
    program, live, reads = _live(source)
    ops = {s.op for s in live}
    last = {s.target: s for s in live}  # the statement that sets each name's final value
    out = []
    if "orthogonalize" in ops:
        out.append("orthogonalized")
    if "sign" in ops:
        out.append("sign")
    for state in program.returns[1:]:
        s = last.get(state)
        if s is not None and s.op == "interp" and state in s.args:
            out.append("EMA state")
            break
    if {"sqrt", "rsqrt"} & ops:
        out.append("second moment")
    if "w" in reads:
        out.append("reads w")
    if "hidden" in reads:
        out.append("reads hidden")
    if "lr" not in reads:
        out.append("ignores lr")
    return tuple(out)
