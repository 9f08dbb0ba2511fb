"""The search journal: one SQLite file (WAL) that holds everything needed to resume.

Tables:
- ``meta``: the configuration (JSON), the format version and the fingerprint version (the
  cache is keyed by fingerprints: a journal is only resumed by code computing the same ones);
- ``candidates``: every program the search made or scored (warm start, children, baselines,
  simplified finalists) with its parent, mutation, hashes, evaluation job, status and fitness;
- ``results``: one row per (candidate, task, seed) training run, for the search task and every
  funnel and meta-validation task;
- ``state``: the search's position (generation, RNG state, populations), written in the same
  transaction as the candidates it describes;
- ``events``: restarts and funnel decisions, for the report.

Every change is one transaction, so a ``kill -9`` at any moment leaves the journal at a
consistent point: a job's results are either all in or all out, and the state always matches
the candidates.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optforge.program.analysis import analyze
from optforge.program.fingerprint import COMPATIBLE, behaviour
from optforge.program.fingerprint import VERSION as FINGERPRINTS
from optforge.program.program import Program

VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS candidates (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,           -- warm_start | child | baseline | simplified
    name TEXT,                    -- baselines: adamw, lion
    generation INTEGER NOT NULL,
    run INTEGER NOT NULL DEFAULT 0,
    parent INTEGER,
    mutation TEXT,
    source TEXT NOT NULL,
    structural_hash TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    statements INTEGER NOT NULL,
    redundant INTEGER NOT NULL,
    status TEXT NOT NULL,         -- pending | evaluated | cached | failed
    cache_of INTEGER,             -- the candidate whose training a cache hit reuses
    eval_seed INTEGER,            -- the seed it trains with (NULL: not trained)
    job INTEGER,                  -- the evaluation job it trains in
    fitness REAL,
    reason TEXT,
    created REAL NOT NULL,
    finished REAL,
    multiplier REAL               -- the best step-size multiplier, folded into its program
);
CREATE INDEX IF NOT EXISTS candidates_job ON candidates (job);
CREATE INDEX IF NOT EXISTS candidates_generation ON candidates (generation);
CREATE TABLE IF NOT EXISTS results (
    candidate INTEGER NOT NULL,
    task TEXT NOT NULL,
    seed INTEGER NOT NULL,
    fitness REAL,
    failed INTEGER NOT NULL,
    reason TEXT,
    final_loss REAL,
    seconds REAL,
    finished REAL NOT NULL,
    PRIMARY KEY (candidate, task, seed)
);
CREATE TABLE IF NOT EXISTS state (id INTEGER PRIMARY KEY CHECK (id = 1), value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, time REAL NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL
);
"""

SEARCHED = "kind IN ('warm_start', 'child')"  # the candidates the search itself made

COLUMNS = (
    "kind",
    "name",
    "generation",
    "run",
    "parent",
    "mutation",
    "source",
    "structural_hash",
    "fingerprint",
    "statements",
    "redundant",
    "status",
    "cache_of",
    "eval_seed",
    "job",
    "fitness",
    "reason",
    "multiplier",
)


class JournalError(ValueError):
    """A file that is not an optforge journal, or a journal that does not match the request."""


@dataclass(frozen=True)
class Outcome:
    """One training run's result, as the journal stores it."""

    candidate: int
    task: str
    seed: int
    fitness: float | None
    reason: str | None
    final_loss: float | None = None
    seconds: float | None = None


class Journal:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.exists() and not _is_sqlite(self.path):
            raise JournalError(f"{self.path} exists and is not an optforge journal (SQLite)")
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(candidates)")}
        if "multiplier" not in columns:  # a journal written before step-size multipliers
            self.db.execute("ALTER TABLE candidates ADD COLUMN multiplier REAL")
        version = self.get_meta("version")
        if version is None:
            self.set_meta("version", str(VERSION))
        elif int(version) != VERSION:
            raise JournalError(
                f"{self.path} has journal format {version}; this optforge reads format {VERSION}"
            )
        self._check_fingerprints()

    def _check_fingerprints(self) -> None:
        """Journals before fingerprint versions hold version 1's; a version this code cannot
        reproduce is refused, never mixed into one cache."""
        stored = self.get_meta("fingerprint")
        if stored is None:
            written_before = self.get_meta("config") is not None  # by an optforge before them
            stored = "1" if written_before else str(FINGERPRINTS)
            self.set_meta("fingerprint", stored)
        if COMPATIBLE.get(int(stored)) != FINGERPRINTS:
            raise JournalError(
                f"{self.path} holds fingerprints of version {stored}; this optforge computes "
                f"version {FINGERPRINTS}, so its fitness cache cannot be reused: resume "
                f"it with the optforge that wrote it, or start a new journal"
            )

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All or nothing: the block's writes land together or not at all."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- meta, state, events ------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def state(self) -> dict[str, Any] | None:
        row = self.db.execute("SELECT value FROM state WHERE id = 1").fetchone()
        return None if row is None else json.loads(row[0])

    def save_state(self, state: dict[str, Any]) -> None:
        self.db.execute("INSERT OR REPLACE INTO state VALUES (1, ?)", (json.dumps(state),))

    def event(self, kind: str, detail: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO events (time, kind, detail) VALUES (?, ?, ?)",
            (time.time(), kind, json.dumps(detail)),
        )

    def events(self, kind: str | None = None) -> list[tuple[str, dict]]:
        rows = self.db.execute("SELECT kind, detail FROM events ORDER BY id").fetchall()
        return [(k, json.loads(d)) for k, d in rows if kind is None or k == kind]

    # -- candidates ---------------------------------------------------------------------------

    def add_candidate(self, **fields: Any) -> int:
        unknown = set(fields) - set(COLUMNS)
        if unknown:
            raise TypeError(f"unknown candidate fields {sorted(unknown)}")
        names = [*fields, "created"]
        cursor = self.db.execute(
            f"INSERT INTO candidates ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
            (*fields.values(), time.time()),
        )
        return int(cursor.lastrowid)

    def update_candidate(self, candidate: int, **fields: Any) -> None:
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.db.execute(
            f"UPDATE candidates SET {sets}, finished = ? WHERE id = ?",
            (*fields.values(), time.time(), candidate),
        )

    def candidate(self, candidate: int) -> sqlite3.Row:
        row = self.db.execute("SELECT * FROM candidates WHERE id = ?", (candidate,)).fetchone()
        if row is None:
            raise JournalError(f"no candidate {candidate} in {self.path}")
        return row

    def candidates(self, where: str = "1", params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        return self.db.execute(
            f"SELECT * FROM candidates WHERE {where} ORDER BY id", tuple(params)
        ).fetchall()

    def next_job(self) -> int:
        row = self.db.execute("SELECT MAX(job) FROM candidates").fetchone()
        return (row[0] or 0) + 1

    # -- results ------------------------------------------------------------------------------

    def add_results(self, outcomes: Iterable[Outcome]) -> None:
        now = time.time()
        self.db.executemany(
            "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    o.candidate,
                    o.task,
                    o.seed,
                    o.fitness,
                    int(o.fitness is None),
                    o.reason,
                    o.final_loss,
                    o.seconds,
                    now,
                )
                for o in outcomes
            ],
        )

    def results(self, task: str | None = None) -> list[sqlite3.Row]:
        if task is None:
            return self.db.execute("SELECT * FROM results ORDER BY rowid").fetchall()
        return self.db.execute(
            "SELECT * FROM results WHERE task = ? ORDER BY rowid", (task,)
        ).fetchall()

    def scores(self, candidate: int, task: str) -> dict[int, float | None]:
        """seed -> fitness (None: failed) of one candidate on one task."""
        rows = self.db.execute(
            "SELECT seed, fitness FROM results WHERE candidate = ? AND task = ?", (candidate, task)
        ).fetchall()
        return {seed: fitness for seed, fitness in rows}


def folded_program(row: sqlite3.Row) -> Program:
    """A candidate's program with its best step-size multiplier folded in: what it was
    scored as, and what the funnel, ``show`` and ``export`` work with."""
    from optforge.search.fitness import scaled
    from optforge.tasks.builtin import parse_optimizer

    return scaled(parse_optimizer(row["source"]), row["multiplier"] or 1.0)


def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(16)
    return head == b"SQLite format 3\x00" or head == b""


def is_journal(path: str | Path) -> bool:
    path = Path(path)
    return path.is_file() and _is_sqlite(path) and path.stat().st_size > 0


def add_program(journal: Journal, program: Program, **fields: Any) -> tuple[int, str, bool]:
    """Journal a program with its hashes: ``(candidate, fingerprint, finite)``. A built-in
    baseline (``torch_adamw``) has no statements to analyse; its text is its identity."""
    from optforge.tasks.builtin import Builtin

    if isinstance(program, Builtin):
        ident = journal.add_candidate(source=program.source(), structural_hash="builtin",
                                      fingerprint=f"builtin:{program.source()}", statements=0,
                                      redundant=0, **fields)  # fmt: skip
        return ident, f"builtin:{program.source()}", True
    analysis = analyze(program)
    fingerprint, finite = behaviour(program)
    ident = journal.add_candidate(
        source=program.source(), structural_hash=analysis.structural_hash,
        fingerprint=fingerprint, statements=len(program), redundant=len(analysis.redundant),
        **fields,
    )  # fmt: skip
    return ident, fingerprint, finite


def baseline_name(name: str, task: str) -> str:
    """Baselines are journal candidates named ``optimizer:task`` (tuned per task)."""
    return f"{name}:{task}"
