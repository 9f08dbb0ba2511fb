"""Regularized evolution over optimizer programs, resumable from its journal.

The search works in generations of ``batch`` children. Each child's parent wins a tournament
of ``tournament`` members drawn from its run's population; the child replaces the oldest
member. A population is a fixed array with a cursor (AutoML-Zero's layout): the next child
overwrites the slot after the last one, so "the oldest dies" needs no bookkeeping. All
populations start as copies of the warm start. ``runs`` > 1 evolves independent populations
side by side (restarts from the initial program); ``restart_after`` resets every population
to the best program so far once that many candidates passed without improvement.

A generation is proposed, written to the journal with the RNG state that follows it (one
transaction), trained job by job (one transaction each), then inserted into the populations
(one transaction). Resuming repeats nothing that was committed and redoes nothing differently:
proposals come from the stored RNG state, jobs keep their stored composition, and the fitness
cache is rebuilt from the stored decisions. Baselines of the paper use the same machinery:
``random`` draws programs from scratch, ``constants`` only perturbs the warm start's literals.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from optforge.program import generate, parse
from optforge.program.generate import random_program
from optforge.program.program import Program
from optforge.search.cache import FitnessCache
from optforge.search.config import SearchConfig
from optforge.search.executors import Job, chunk, threads_per_worker
from optforge.search.fitness import scaled
from optforge.search.journal import (
    SEARCHED,
    Journal,
    JournalError,
    Outcome,
    add_program,
    baseline_name,
    folded_program,
)
from optforge.search.mutation import mutate
from optforge.search.population import (
    replace_oldest,
    rng_from_state,
    rng_state,
    tournament,
)
from optforge.tasks import registry

BASELINES = ("torch_adamw", "adamw", "lion", "muon")  # those the task has tuned


@dataclass(frozen=True)
class Progress:
    generated: int
    budget: int
    trained: int
    failed: int
    hit_rate: float
    elapsed: float
    best_fitness: float | None
    best_source: str | None
    baselines: dict[str, float | None]

    @property
    def per_second(self) -> float:
        return self.generated / self.elapsed if self.elapsed > 0 else 0.0


def open_journal(path, config: SearchConfig | None, resume: bool) -> tuple[Journal, SearchConfig]:
    """The journal and its configuration: a new search writes ``config``; ``resume`` reads
    the stored one (a given ``config`` must then match it)."""
    journal = Journal(path)
    stored = journal.get_meta("config")
    if stored is None:
        if resume:
            raise JournalError(f"{path} holds no search to resume")
        if config is None:
            raise ValueError("a new search needs a configuration")
        journal.set_meta("config", config.to_json())
        return journal, config
    if not resume:
        raise JournalError(
            f"{path} already holds a search; pass --resume to continue it, "
            "or choose another journal file"
        )
    stored_config = SearchConfig.from_json(stored)
    return journal, stored_config


class Search:
    def __init__(
        self,
        journal: Journal,
        config: SearchConfig,
        executor,
        on_progress: Callable[[Progress], None] | None = None,
    ):
        self.journal, self.config, self.executor = journal, config, executor
        self.on_progress = on_progress or (lambda p: None)
        self.cache = FitnessCache(config.rescore_after)
        self.members: dict[int, tuple[Program, str]] = {}
        self._finite: dict[int, bool] = {}
        self._mark = time.monotonic()
        self.threads = threads_per_worker(config.workers)
        self._rebuild_cache()

    # -- the loop -----------------------------------------------------------------------------

    def run(self, seconds: float | None = None) -> Progress:
        """Search until the budget is spent or, given ``seconds``, until the search's running
        time (summed over resumes) reaches it; a started generation is always finished."""
        if self.journal.state() is None:
            self._start()
        while True:
            state = self.journal.state()
            if state["inserted"] < state["generation"]:
                self._train(state["generation"])
                self._insert(state["generation"])
            elif state["generated"] >= self.config.budget or self._out_of_time(state, seconds):
                break
            else:
                self._propose()
        return self.progress()

    def _start(self) -> None:
        """Generation 0: the warm start, and the tuned baselines for comparison."""
        config, task = self.config, registry.get(self.config.task)
        job = self.journal.next_job()
        with self.journal.transaction():
            warm = self._add(parse(config.warm_start), kind="warm_start", generation=0)
            self.journal.update_candidate(
                warm, status="pending", eval_seed=config.eval_seed, job=job
            )
            for offset, name in enumerate(n for n in BASELINES if n in dict(task.baselines)):
                ident = self._add(
                    task.baseline(name),
                    kind="baseline",
                    name=baseline_name(name, task.name),
                    generation=0,
                )
                self.journal.update_candidate(
                    ident, status="pending", eval_seed=config.eval_seed, job=job + 1 + offset
                )
            self.journal.save_state(
                {
                    "generation": 0,
                    "inserted": -1,
                    "generated": 0,
                    "rng": rng_state(random.Random(config.seed)),
                    "populations": [],
                    "cursors": [],
                    "best": None,
                    "best_fitness": None,
                    "last_improvement": 0,
                    "restarts": 0,
                }
            )
        self.cache.claim(self._fingerprint(warm), warm)

    def _propose(self) -> None:
        state, config = self.journal.state(), self.config
        rng = rng_from_state(state["rng"])
        count = min(config.batch, config.budget - state["generated"])
        children = []
        for i in range(count):
            run = (state["generated"] + i) % config.runs
            if config.algorithm == "random":
                length = rng.randint(3, config.mutation.max_length)
                language = config.mutation.language
                program = random_program(rng, length, generate.operations(language),
                                         inputs=generate.inputs(language))  # fmt: skip
                children.append((run, None, "random", program))
            else:
                parent = self._tournament(state["populations"][run], rng)
                program, how = mutate(self._folded(parent), rng, config.mutation)
                children.append((run, parent, how, program))
        generation = state["generation"] + 1
        training: list[tuple[int, int]] = []  # (candidate, seed offset)
        with self.journal.transaction():
            for run, parent, how, program in children:
                training += self._add_child(program, generation, run, parent, how)
            first_job = self.journal.next_job()
            # jobs per generation = the configured workers, so every job's composition (and
            # hence every result) follows from the configuration, not from the machine
            for j, part in enumerate(chunk(training, config.workers)):
                for candidate, offset in part:
                    self.journal.update_candidate(
                        candidate, eval_seed=config.eval_seed + offset, job=first_job + j
                    )
            self.journal.save_state(
                {
                    **state,
                    "generation": generation,
                    "generated": state["generated"] + count,
                    "rng": rng_state(rng),
                }
            )

    def _add_child(self, program, generation, run, parent, how) -> list[tuple[int, int]]:
        """Journal one child; returns [(candidate, seed offset)] when it must be trained."""
        ident = self._add(
            program, kind="child", generation=generation, run=run, parent=parent, mutation=how
        )
        fingerprint = self._fingerprint(ident)
        entry, rescore = self.cache.lookup(fingerprint)
        if entry is None:
            self.cache.claim(fingerprint, ident)
            if not self._finite[ident]:
                reason = "update not finite on the fingerprint inputs"
                self.cache.record(fingerprint, 0, None, reason)
                self.journal.update_candidate(ident, status="failed", reason=reason)
                return []
            self.journal.update_candidate(ident, status="pending")
            return [(ident, 0)]
        self.journal.update_candidate(ident, status="pending", cache_of=entry.first)
        if rescore is not None:
            return [(ident, rescore)]
        if entry.values:  # known now; otherwise resolved when this generation's jobs finish
            self._resolve(ident, fingerprint, entry.first)
        return []

    def _train(self, generation: int) -> None:
        rows = self.journal.candidates(
            "generation = ? AND status = 'pending' AND job IS NOT NULL", (generation,)
        )
        jobs: dict[int, list] = {}
        for row in rows:
            jobs.setdefault(row["job"], []).append(row)
        specs = [self._job(job, members) for job, members in sorted(jobs.items())]
        for job, evaluations in self.executor.run(specs):
            members = jobs[job.id]
            with self.journal.transaction():
                for row, ev in zip(members, evaluations, strict=True):
                    self.journal.update_candidate(
                        row["id"],
                        status="failed" if ev.fitness is None else "evaluated",
                        fitness=ev.fitness,
                        reason=ev.reason,
                        multiplier=ev.multiplier,
                    )
                self.journal.add_results(
                    Outcome(
                        row["id"],
                        self.config.task,
                        row["eval_seed"],
                        ev.fitness,
                        ev.reason,
                        ev.final_loss,
                        ev.seconds,
                    )
                    for row, ev in zip(members, evaluations, strict=True)
                )
            for row, ev in zip(members, evaluations, strict=True):
                if row["kind"] in ("warm_start", "child"):
                    offset = row["eval_seed"] - self.config.eval_seed
                    self.cache.record(
                        row["fingerprint"], offset, ev.fitness, ev.reason, ev.multiplier
                    )
            self.on_progress(self.progress())

    def _job(self, job: int, rows) -> Job:
        return Job(
            job,
            self.config.task,
            tuple(r["source"] for r in rows),
            tuple(r["eval_seed"] for r in rows),
            self.config.time_limit,
            self.config.compiled,
            self.threads,
            fitness=self.config.scoring,
        )

    def _insert(self, generation: int) -> None:
        """The generation's children replace the oldest members; best and restarts follow."""
        state, config = self.journal.state(), self.config
        rows = self.journal.candidates(f"generation = ? AND {SEARCHED}", (generation,))
        with self.journal.transaction():
            for row in rows:
                if row["status"] == "pending":  # a twin of a candidate trained alongside it
                    self._resolve(row["id"], row["fingerprint"], row["cache_of"])
            if generation == 0:
                warm = rows[0]["id"]
                state["populations"] = [[warm] * config.population for _ in range(config.runs)]
                state["cursors"] = [0] * config.runs
                state["best"], state["best_fitness"] = (
                    warm,
                    self.cache.fitness(rows[0]["fingerprint"]),
                )
            seen = state["generated"] - len(rows)
            for i, row in enumerate(r for r in rows if r["kind"] == "child"):
                run = row["run"]
                state["cursors"][run] = replace_oldest(
                    state["populations"][run], state["cursors"][run], row["id"]
                )
                fitness = self.cache.fitness(row["fingerprint"])
                best = state["best_fitness"]
                if fitness is not None and (best is None or fitness > best):
                    state["best"], state["best_fitness"] = row["id"], fitness
                    state["last_improvement"] = seen + i + 1
            if (
                config.restart_after is not None
                and generation > 0
                and state["generated"] - state["last_improvement"] >= config.restart_after
            ):
                state["populations"] = [
                    [state["best"]] * config.population for _ in range(config.runs)
                ]
                state["cursors"] = [0] * config.runs
                state["last_improvement"] = state["generated"]
                state["restarts"] += 1
                self.journal.event(
                    "restart", {"generated": state["generated"], "best": state["best"]}
                )
            state["inserted"] = generation
            state["elapsed"] = state.get("elapsed", 0.0) + self._lap()
            self.journal.save_state(state)
        self.on_progress(self.progress())

    # -- pieces -------------------------------------------------------------------------------

    def _tournament(self, population: list[int], rng: random.Random) -> int:
        fitness = self.cache.fitness
        return tournament(population, lambda c: fitness(self._fingerprint(c)), rng,
                          self.config.tournament)  # fmt: skip

    def _resolve(self, candidate: int, fingerprint: str, source: int) -> None:
        entry = self.cache.entries[fingerprint]
        status = "failed" if entry.failed else "cached"
        self.journal.update_candidate(
            candidate, status=status, fitness=entry.fitness, reason=entry.reason, cache_of=source,
            multiplier=entry.multiplier,
        )  # fmt: skip

    def _add(self, program: Program, **fields: Any) -> int:
        ident, fingerprint, finite = add_program(self.journal, program, status="new", **fields)
        self.members[ident] = (program, fingerprint)
        self._finite[ident] = finite
        return ident

    def _out_of_time(self, state: dict, seconds: float | None) -> bool:
        """Past ``seconds`` of searching, once at least one generation of children exists."""
        elapsed = state.get("elapsed", 0.0) + time.monotonic() - self._mark
        return seconds is not None and state["generated"] > 0 and elapsed >= seconds

    def _lap(self) -> float:
        """Seconds since the last call (the search's running time, summed across resumes)."""
        now = time.monotonic()
        lap, self._mark = now - self._mark, now
        return lap

    def _member(self, candidate: int) -> tuple[Program, str]:
        if candidate not in self.members:
            row = self.journal.candidate(candidate)
            self.members[candidate] = (parse(row["source"]), row["fingerprint"])
        return self.members[candidate]

    def _folded(self, candidate: int) -> Program:
        """A member as the population holds it: its program with the best step-size
        multiplier of its behaviour folded in (the cache knows it once it has trained)."""
        program, fingerprint = self._member(candidate)
        entry = self.cache.entries.get(fingerprint)
        return scaled(program, entry.multiplier if entry else 1.0)

    def _fingerprint(self, candidate: int) -> str:
        return self._member(candidate)[1]

    def _rebuild_cache(self) -> None:
        """Replay the journal's stored decisions: claims, hits, re-scorings, then results."""
        rows = self.journal.candidates(SEARCHED)
        for row in rows:
            fingerprint = row["fingerprint"]
            if row["kind"] == "child":
                self.cache.lookups += 1
            if row["cache_of"] is None:
                self.cache.claim(fingerprint, row["id"])
                continue
            entry = self.cache.entries[fingerprint]
            self.cache.hits += 1
            entry.hits += 1
            if row["job"] is not None:
                entry.next_seed += 1
        for row in rows:
            if row["job"] is not None and row["status"] in ("evaluated", "failed"):
                offset = row["eval_seed"] - self.config.eval_seed
                self.cache.record(row["fingerprint"], offset, row["fitness"], row["reason"],
                                  row["multiplier"])  # fmt: skip
            elif row["job"] is None and row["cache_of"] is None and row["status"] == "failed":
                self.cache.record(row["fingerprint"], 0, None, row["reason"])

    def _baseline_fitness(self, name: str) -> float | None:
        rows = self.journal.candidates(
            "kind = 'baseline' AND name = ?", (baseline_name(name, self.config.task),)
        )
        return rows[0]["fitness"] if rows else None

    def progress(self) -> Progress:
        state = self.journal.state() or {}
        counts = dict(
            self.journal.db.execute(
                f"SELECT status, COUNT(*) FROM candidates WHERE {SEARCHED} GROUP BY status"
            ).fetchall()
        )
        trained = self.journal.db.execute(
            f"SELECT COUNT(*) FROM candidates WHERE {SEARCHED} AND job IS NOT NULL AND status "
            "IN ('evaluated', 'failed')"
        ).fetchone()[0]
        best = state.get("best")
        baselines = {name: self._baseline_fitness(name) for name in BASELINES}
        return Progress(
            generated=state.get("generated", 0),
            budget=self.config.budget,
            trained=trained,
            failed=counts.get("failed", 0),
            hit_rate=self.cache.hit_rate,
            elapsed=state.get("elapsed", 0.0) + time.monotonic() - self._mark,
            best_fitness=state.get("best_fitness"),
            best_source=None
            if best is None
            else folded_program(self.journal.candidate(best)).source(),
            baselines=baselines,
        )
