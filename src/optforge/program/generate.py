"""Random valid programs: test inputs, collision measurements, and the search's raw material."""

from __future__ import annotations

import random

from optforge.program.analysis import analyze
from optforge.program.primitives import CONSTANTS, PRIMITIVES
from optforge.program.program import INPUTS, Arg, Program, Statement

OPERATIONS = tuple(n for n, p in PRIMITIVES.items() if p.kind != "constant" and n != "identity")


def random_arg(rng: random.Random, defined: list[str], literal_p: float = 0.2) -> Arg:
    """A defined name, a named constant, or a literal drawn from N(0, 1)."""
    r = rng.random()
    if r < literal_p:
        return round(rng.gauss(0.0, 1.0), 4)
    if r < literal_p + 0.03:
        return rng.choice(sorted(CONSTANTS))
    return rng.choice(defined)


def random_statement(
    rng: random.Random, defined: list[str], target: str, operations=OPERATIONS
) -> Statement:
    op = rng.choice(operations)
    args = tuple(random_arg(rng, defined) for _ in range(PRIMITIVES[op].arity))
    return Statement(target, op, args)


def random_program(
    rng: random.Random, length: int, operations=OPERATIONS, max_tries: int = 1000
) -> Program:
    """A valid program of ``length`` statements (redrawn until ``analyze`` accepts it).

    Targets are fresh temporaries or the outputs ``update``, ``v1``, ``v2``; the last
    statement writes ``update``."""
    for _ in range(max_tries):
        defined = list(INPUTS)
        statements = []
        for i in range(length):
            last = i == length - 1
            target = "update" if last else rng.choice(["update", "v1", "v2", f"t{i}", f"t{i}"])
            statements.append(random_statement(rng, defined, target, operations))
            if target not in defined:
                defined.append(target)
        program = Program(tuple(statements))
        if analyze(program).valid:
            return program
    raise RuntimeError(f"no valid program of length {length} in {max_tries} draws")
