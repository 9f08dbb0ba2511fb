"""Fitness cache keyed by behaviour (``optforge.program.fingerprint``).

Most mutants behave exactly like a program already trained (a change to a redundant
statement, a renaming, an algebraic twin); the paper saw 89% of candidates hit its cache. A
hit reuses the fitness instead of training. Because one training run is one noisy sample,
``rescore_after`` optionally re-trains a program with a fresh seed every N hits and averages
(as AutoML-Zero does), so a lucky program cannot stay on top forever.

Values are kept per seed and averaged in seed order, so the fitness does not depend on the
order in which parallel jobs finish (a resumed search sees exactly the same numbers).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Entry:
    first: int  # the candidate whose training filled the entry
    values: dict[int, float | None] = field(default_factory=dict)  # seed offset -> fitness
    reason: str | None = None  # why a failing training failed
    hits: int = 0
    next_seed: int = 1  # offset of the next re-training's seed (0 is the first training)
    multiplier: float = 1.0  # the first training's best step-size multiplier

    @property
    def failed(self) -> bool:
        """A program that failed once (diverged, non-finite) stays failed."""
        return any(v is None for v in self.values.values())

    @property
    def fitness(self) -> float | None:
        if not self.values or self.failed:
            return None
        return sum(self.values[k] for k in sorted(self.values)) / len(self.values)


class FitnessCache:
    def __init__(self, rescore_after: int | None = None):
        self.rescore_after = rescore_after
        self.entries: dict[str, Entry] = {}
        self.lookups = 0
        self.hits = 0

    def lookup(self, fingerprint: str) -> tuple[Entry | None, int | None]:
        """A new candidate's ``(entry, rescore)``: the entry on a hit (None on a miss), and
        the seed offset to re-train it with when this hit is due for re-scoring."""
        self.lookups += 1
        entry = self.entries.get(fingerprint)
        if entry is None:
            return None, None
        self.hits += 1
        entry.hits += 1
        due = (
            self.rescore_after is not None
            and entry.values
            and not entry.failed
            and entry.hits % self.rescore_after == 0
        )
        if not due:
            return entry, None
        entry.next_seed += 1
        return entry, entry.next_seed - 1

    def claim(self, fingerprint: str, candidate: int) -> Entry:
        """A miss: ``candidate`` will train this behaviour first."""
        return self.entries.setdefault(fingerprint, Entry(first=candidate))

    def record(
        self, fingerprint: str, offset: int, fitness: float | None, reason=None,
        multiplier: float | None = None,
    ) -> None:  # fmt: skip
        entry = self.entries[fingerprint]
        entry.values[offset] = fitness
        if offset == 0 and multiplier is not None:
            entry.multiplier = multiplier
        if fitness is None:
            entry.reason = reason

    def fitness(self, fingerprint: str) -> float | None:
        entry = self.entries.get(fingerprint)
        return None if entry is None else entry.fitness

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0
