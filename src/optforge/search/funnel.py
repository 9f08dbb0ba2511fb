"""Funnel selection, meta-validation and simplification of the search's best programs.

After the search (PAPER.md, "funnel selection", "Simplification"):

1. promote the distinct behaviours whose search fitness is at least the best of the search
   task's tuned AdamW, Lion and Muon (``Task.strongest``, those tuned) plus ``margin`` (at most
   ``promote`` of them, best first);
2. re-score them on each funnel stage (tier B, then C) over ``stage_seeds``; those at least
   the best of the stage's tuned baselines plus ``margin`` go on;
3. the best ``finalists`` are scored on the meta-validation tasks, which the search never
   trained on, over ``meta_seeds``;
4. each finalist is simplified: ``optforge.program.simplify``, then ablation (drop the
   statement whose removal hurts the search-task fitness least, while it stays within one
   seed std of the best version so far, and repeat), then ``simplify`` again; the result is
   re-validated on the meta-validation tasks, and if it fails there or falls below the
   finalist by more than the seed noise, the finalist is only ``simplify``-ed (which keeps
   its behaviour).

When no candidate clears a threshold the best one goes on anyway, flagged ``below``, so the
user always sees the best program and how far it is from the baselines. Every training run is
journaled per job; a resumed funnel skips the jobs it has and makes the same decisions.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field

from optforge.program import simplify
from optforge.program.analysis import analyze
from optforge.program.fingerprint import behaviour
from optforge.program.program import Program, Statement
from optforge.search.config import SearchConfig
from optforge.search.evolution import BASELINES
from optforge.search.executors import Job, chunk, threads_per_worker
from optforge.search.journal import (
    SEARCHED,
    Journal,
    Outcome,
    add_program,
    baseline_name,
    folded_program,
)
from optforge.search.population import rank
from optforge.tasks import registry
from optforge.tasks.sweep import Summary as Score


@dataclass
class Finalist:
    candidate: int
    source: str
    simplified: int
    simplified_source: str
    below: bool  # went on without clearing a threshold
    stages: dict[str, Score] = field(default_factory=dict)
    meta: dict[str, Score] = field(default_factory=dict)
    simplified_meta: dict[str, Score] = field(default_factory=dict)


class Scorer:
    """Trains (candidate, seed) pairs on a task through the executor, a job at a time, and
    journals each job; pairs the journal already holds are never trained again."""

    def __init__(self, journal: Journal, executor, config: SearchConfig):
        self.journal, self.executor, self.config = journal, executor, config
        self.threads = threads_per_worker(config.workers)

    def score(self, candidates: list[int], task: str, seeds: tuple[int, ...]) -> dict[int, Score]:
        pairs = [(c, s) for c in candidates for s in seeds]
        parts = chunk(pairs, max(self.config.workers, math.ceil(len(pairs) / self.config.batch)))
        done = {(r["candidate"], r["seed"]) for r in self.journal.results(task)}
        jobs = {}
        for i, part in enumerate(parts):
            if not all(p in done for p in part):
                sources = tuple(folded_program(self.journal.candidate(c)).source() for c, _ in part)
                jobs[i] = (
                    part,
                    Job(
                        i,
                        task,
                        sources,
                        tuple(s for _, s in part),
                        self.config.time_limit,
                        self.config.compiled,
                        self.threads,
                    ),
                )
        for job, evaluations in self.executor.run([job for _, job in jobs.values()]):
            part = jobs[job.id][0]
            with self.journal.transaction():
                self.journal.add_results(
                    Outcome(c, task, s, ev.fitness, ev.reason, ev.final_loss, ev.seconds)
                    for (c, s), ev in zip(part, evaluations, strict=True)
                )
        return {
            c: Score.of_values(list(self.journal.scores(c, task).get(s) for s in seeds))
            for c in candidates
        }


def run_funnel(journal: Journal, executor, config: SearchConfig, log=print) -> list[Finalist]:
    funnel, scorer = config.funnel, Scorer(journal, executor, config)
    promoted, below = _promote(journal, config)
    log(
        f"funnel: {len(promoted)} promoted from {config.task}"
        + (" (none beat the best tuned baseline: the best goes on)" if below else "")
    )
    survivors = promoted
    stage_scores: dict[int, dict[str, Score]] = {c: {} for c in promoted}
    for task in funnel.stages:
        scores = scorer.score(survivors, task, funnel.stage_seeds)
        threshold = _strongest(journal, scorer, task, funnel.stage_seeds)
        for c in survivors:
            stage_scores[c][task] = scores[c]
        passing = [c for c in survivors if _at_least(scores[c].mean, threshold.mean, funnel.margin)]
        ranked = sorted(survivors, key=lambda c: rank(scores[c].mean), reverse=True)
        below = below or not passing
        survivors = sorted(passing, key=lambda c: rank(scores[c].mean), reverse=True) or ranked[:1]
        journal.event("stage", {"task": task, "passed": passing, "went_on": survivors})
        log(
            f"funnel: {len(passing)} of {len(scores)} beat the best tuned baseline "
            f"({threshold}) on {task}"
        )
    finalists = []
    for c in survivors[: funnel.finalists]:
        source = folded_program(journal.candidate(c)).source()
        finalist = Finalist(c, source, 0, "", below, stage_scores[c])
        for task in funnel.meta:
            finalist.meta[task] = scorer.score([c], task, funnel.meta_seeds)[c]
        for ablate in (True, False):  # an ablated version that fails re-validation is dropped
            simplified = _simplify(journal, scorer, config, c, ablate)
            finalist.simplified = simplified
            finalist.simplified_source = journal.candidate(simplified)["source"]
            finalist.simplified_meta = {
                task: scorer.score([simplified], task, funnel.meta_seeds)[simplified]
                for task in funnel.meta
            }
            if _holds_up(finalist.meta, finalist.simplified_meta):
                break
            journal.event("ablation rejected", {"finalist": c, "simplified": simplified})
        finalists.append(finalist)
    for task in funnel.meta:
        for name in BASELINES:
            if name in dict(registry.get(task).baselines):
                _baseline(journal, scorer, task, name, funnel.meta_seeds)
    with journal.transaction():
        journal.set_meta("finalists", json.dumps([_as_dict(f) for f in finalists]))
    return finalists


def _as_dict(finalist: Finalist) -> dict:
    def scores(table: dict[str, Score]) -> dict:
        return {t: {"mean": s.mean, "std": s.std, "values": list(s.values)}
                for t, s in table.items()}  # fmt: skip

    return {
        "candidate": finalist.candidate, "source": finalist.source,
        "simplified": finalist.simplified, "simplified_source": finalist.simplified_source,
        "below": finalist.below, "stages": scores(finalist.stages),
        "meta": scores(finalist.meta), "simplified_meta": scores(finalist.simplified_meta),
    }  # fmt: skip


def baseline_scores(journal: Journal, config: SearchConfig) -> dict[str, dict[str, Score]]:
    """task -> optimizer -> the baseline's stored meta-validation score (for reports)."""
    out: dict[str, dict[str, Score]] = {}
    for task in config.funnel.meta:
        for name in BASELINES:
            rows = journal.candidates(
                "kind = 'baseline' AND name = ?", (baseline_name(name, task),)
            )
            if rows:
                scores = journal.scores(rows[0]["id"], task)
                values = [scores.get(s) for s in config.funnel.meta_seeds if s in scores]
                out.setdefault(task, {})[name] = Score.of_values(values)
    return out


def _promote(journal: Journal, config: SearchConfig) -> tuple[list[int], bool]:
    """Distinct behaviours (the first candidate of each) by search fitness, best first."""
    ranked = sorted((f, c) for c, f in behaviour_fitness(journal).items() if f is not None)
    ranked.sort(key=lambda x: (-x[0], x[1]))
    threshold = _best_of(
        row["fitness"]
        for name in registry.get(config.task).strongest
        for row in journal.candidates(
            "kind = 'baseline' AND name = ?", (baseline_name(name, config.task),)
        )
    )
    passing = [c for f, c in ranked if _at_least(f, threshold, config.funnel.margin)]
    if passing:
        return passing[: config.funnel.promote], False
    return [c for _, c in ranked[:1]], True


def behaviour_fitness(journal: Journal) -> dict[int, float | None]:
    """First candidate of each behaviour -> mean over its trainings on the search task (None
    when one failed), as the search's cache saw it."""
    first: dict[str, int] = {}
    values: dict[str, list[float | None]] = {}
    for row in journal.candidates(SEARCHED):
        if row["cache_of"] is None:
            first.setdefault(row["fingerprint"], row["id"])
        if row["job"] is not None and row["status"] in ("evaluated", "failed"):
            values.setdefault(row["fingerprint"], []).append(row["fitness"])
    return {
        first[fp]: None if any(v is None for v in vs) else statistics.fmean(vs)
        for fp, vs in values.items()
        if fp in first
    }


def _strongest(journal, scorer: Scorer, task: str, seeds) -> Score:
    """The best (by mean) of the task's tuned AdamW, Lion and Muon over ``seeds``: the bar a
    program must clear. A baseline that failed does not set it."""
    names = registry.get(task).strongest
    scores = [_baseline(journal, scorer, task, name, seeds) for name in names]
    ok = [s for s in scores if s.mean is not None]
    return max(ok, key=lambda s: s.mean) if ok else Score(None, float("nan"), ())


def _best_of(values) -> float | None:
    """The largest of the values that are not None (None when there are none)."""
    return max((v for v in values if v is not None), default=None)


def _baseline(journal, scorer: Scorer, task: str, name: str, seeds) -> Score:
    """The tuned baseline ``name`` on ``task``, scored (once) over ``seeds``."""
    label = baseline_name(name, task)
    rows = journal.candidates("kind = 'baseline' AND name = ?", (label,))
    if rows:
        ident = rows[0]["id"]
    else:
        with journal.transaction():
            ident = _add(journal, registry.get(task).baseline(name), kind="baseline", name=label)
    return scorer.score([ident], task, seeds)[ident]


def _holds_up(original: dict[str, Score], simplified: dict[str, Score]) -> bool:
    """The simplified program validates as well as the original, within seed noise."""
    for task, before in original.items():
        after = simplified[task]
        if before.mean is None:
            continue
        noise = max(before.std, 0.0 if after.mean is None else after.std, 1e-3)
        if after.mean is None or after.mean < before.mean - noise:
            return False
    return True


def _simplify(
    journal: Journal, scorer: Scorer, config: SearchConfig, candidate: int, ablate: bool = True
) -> int:
    """Simplify, ablate within noise (unless ``ablate`` is False), simplify again; returns
    the simplified candidate."""
    seeds = config.funnel.ablation_seeds
    program = simplify(folded_program(journal.candidate(candidate)))
    reference = scorer.score([candidate], config.task, seeds)[candidate]
    if ablate and reference.mean is not None:
        noise = max(reference.std, 1e-3)
        floor = reference.mean - noise
        while len(program) > 1:
            variants = _deletions(program)
            if not variants:
                break
            with journal.transaction():
                ids = [
                    _find_or_add(journal, v, kind="ablation", parent=candidate) for v in variants
                ]
            scores = scorer.score(ids, config.task, seeds)
            best = max(range(len(ids)), key=lambda i: (rank(scores[ids[i]].mean), -i))
            if not _at_least(scores[ids[best]].mean, floor, 0.0):
                break
            program = simplify(variants[best])
            # the bar only rises: a removal that helped sets a new reference, so a chain of
            # small losses cannot walk far below the best version seen
            floor = max(floor, scores[ids[best]].mean - noise)
            journal.event(
                "ablation",
                {"finalist": candidate, "dropped_to": ids[best], "fitness": scores[ids[best]].mean},
            )
    with journal.transaction():
        return _find_or_add(journal, program, kind="simplified", parent=candidate)


def _deletions(program: Program) -> list[Program]:
    """Programs with one operation fewer: a statement deleted, or bypassed (``t = op(a, b)``
    becomes ``t = a`` or ``t = b``, so what read ``t`` reads an input of the operation; in
    simplified programs, where every value has its own name, deleting alone rarely leaves a
    valid program). Only valid ones that behave differently from each other are kept."""
    out, seen = [], set()
    for i, statement in enumerate(program.statements):
        replacements: list[tuple[Statement, ...]] = [()]
        for arg in dict.fromkeys(a for a in statement.args if isinstance(a, str)):
            if statement.op != "identity" or arg != statement.args[0]:
                replacements.append((Statement(statement.target, "identity", (arg,)),))
        for replacement in replacements:
            statements = program.statements[:i] + replacement + program.statements[i + 1 :]
            variant = Program(statements, program.returns)
            if not analyze(variant).valid:
                continue
            key, finite = behaviour(variant)
            if finite and key not in seen and key != behaviour(program)[0]:
                seen.add(key)
                out.append(variant)
    return out


def _find_or_add(journal: Journal, program: Program, kind: str, parent: int) -> int:
    rows = journal.candidates(
        "kind = ? AND parent = ? AND source = ?", (kind, parent, program.source())
    )
    return rows[0]["id"] if rows else _add(journal, program, kind=kind, parent=parent)


def _add(journal: Journal, program: Program, **fields) -> int:
    return add_program(journal, program, status="funnel", generation=-1, **fields)[0]


def _at_least(value: float | None, threshold: float | None, margin: float) -> bool:
    if value is None:
        return False
    return threshold is None or value >= threshold + margin
