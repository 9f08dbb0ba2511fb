"""Program-language benchmark: analysis and fingerprint cost, fingerprint collisions,
redundancy of random programs, and what simplification removes.

Collisions need a referee: two programs with the same fingerprint are called equivalent when a
second, independent behaviour hash (other inputs, more steps) also agrees. A collision is a
program whose fingerprint matches an earlier program's while the referee says they differ.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from optforge.program.analysis import analyze
from optforge.program.fingerprint import SEED, STEPS, behaviour, behaviour_hash, fingerprint
from optforge.program.generate import random_program
from optforge.program.simplify import simplify

REFEREE_SEED, REFEREE_STEPS = 7, 5


@dataclass
class ProgramBench:
    programs: int
    seed: int
    analyze_us_20: float  # per 20-statement program
    fingerprint_ms: float
    distinct_fingerprints: int
    distinct_referee: int
    collisions: int
    finite_collisions: int  # among programs whose fingerprint updates are all finite
    finite_programs: int
    redundant_fraction: float
    statements_before: float
    statements_after: float
    simplify_preserved: int

    @property
    def collision_rate(self) -> float:
        return self.collisions / self.programs


def _per_call(fn: Callable[[], object], n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def run(programs: int = 10_000, seed: int = 0, progress=None) -> ProgramBench:
    progress = progress or (lambda done, total: None)
    rng = random.Random(seed)
    twenty = [random_program(rng, 20) for _ in range(200)]
    analyze_s = statistics.median(_per_call(lambda p=p: analyze.__wrapped__(p), 20) for p in twenty)
    sample = [random_program(rng, rng.randint(3, 20)) for _ in range(programs)]
    first_by_fp: dict[str, str] = {}
    referees: set[str] = set()
    collisions, finite_collisions, redundant, before, after, preserved = 0, 0, [], [], [], 0
    t = time.perf_counter()
    results = [behaviour(p, SEED, STEPS) for p in sample]
    fingerprint_s = (time.perf_counter() - t) / programs
    for i, (p, (fp, finite)) in enumerate(zip(sample, results, strict=True)):
        ref = behaviour_hash(p, REFEREE_SEED, REFEREE_STEPS)
        referees.add(ref)
        if first_by_fp.setdefault(fp, ref) != ref:
            collisions += 1
            finite_collisions += finite
        redundant.append(analyze(p).redundant_fraction)
        simple = simplify(p)
        before.append(len(p))
        after.append(len(simple))
        preserved += fingerprint(simple) == fp
        progress(i + 1, programs)
    return ProgramBench(
        programs=programs,
        seed=seed,
        analyze_us_20=analyze_s * 1e6,
        fingerprint_ms=fingerprint_s * 1e3,
        distinct_fingerprints=len(first_by_fp),
        distinct_referee=len(referees),
        collisions=collisions,
        finite_collisions=finite_collisions,
        finite_programs=sum(finite for _, finite in results),
        redundant_fraction=statistics.fmean(redundant),
        statements_before=statistics.fmean(before),
        statements_after=statistics.fmean(after),
        simplify_preserved=preserved,
    )


def lines(b: ProgramBench) -> list[str]:
    return [
        f"random programs: {b.programs} (seed {b.seed}, 3-20 statements)",
        f"analyze: {b.analyze_us_20:.0f} us per 20-statement program (uncached)",
        f"fingerprint: {b.fingerprint_ms:.2f} ms per program (uncached)",
        f"distinct fingerprints: {b.distinct_fingerprints}; distinct by the referee hash: "
        f"{b.distinct_referee}",
        f"collisions (same fingerprint, referee differs): {b.collisions} "
        f"({100 * b.collision_rate:.3f}%); among the {b.finite_programs} programs with finite "
        f"updates: {b.finite_collisions} "
        f"({100 * b.finite_collisions / max(b.finite_programs, 1):.3f}%)",
        f"redundant statements: {100 * b.redundant_fraction:.1f}% on average",
        f"simplify: {b.statements_before:.1f} -> {b.statements_after:.1f} statements on average; "
        f"fingerprint preserved for {b.simplify_preserved}/{b.programs}",
    ]
