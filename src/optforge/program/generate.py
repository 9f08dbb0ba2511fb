"""Random valid programs: test inputs, collision measurements, and the search's raw material."""

from __future__ import annotations

import random

from optforge.program.analysis import analyze
from optforge.program.primitives import CONSTANTS, INPUT_NAMES, PRIMITIVES
from optforge.program.program import INPUTS, Arg, Program, Statement

LANGUAGES = ("elementwise", "matrix")
"""``elementwise``: the paper's language (elementwise maths, per-tensor and global
reductions); ``matrix``: that plus the matrix operations and the per-tensor inputs."""

_NOT_ELEMENTWISE = ("constant", "input", "matrix")
OPERATIONS = tuple(n for n, p in PRIMITIVES.items()
                   if p.kind not in _NOT_ELEMENTWISE and n != "identity")  # fmt: skip
MATRIX_OPERATIONS = OPERATIONS + tuple(n for n, p in PRIMITIVES.items() if p.kind == "matrix")
INPUT_P = 0.06  # how often an argument is a per-tensor input, in the matrix language


def operations(language: str) -> tuple[str, ...]:
    """The operations a random statement draws from in ``language``."""
    check_language(language)
    return MATRIX_OPERATIONS if language == "matrix" else OPERATIONS


def inputs(language: str) -> tuple[str, ...]:
    """The per-tensor inputs a random argument may be in ``language``."""
    check_language(language)
    return INPUT_NAMES if language == "matrix" else ()


def check_language(language: str) -> None:
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")


def random_arg(
    rng: random.Random, defined: list[str], literal_p: float = 0.2, inputs: tuple = ()
) -> Arg:
    """A defined name, a named constant, a per-tensor input (when ``inputs`` are given) or a
    literal drawn from N(0, 1). Without inputs it draws exactly as the paper's language did,
    so searches journaled before the matrix language resume on the same random stream."""
    r = rng.random()
    if r < literal_p:
        return round(rng.gauss(0.0, 1.0), 4)
    if r < literal_p + 0.03:
        return rng.choice(sorted(CONSTANTS))
    if inputs and r < literal_p + 0.03 + INPUT_P:
        return rng.choice(inputs)
    return rng.choice(defined)


def random_statement(
    rng: random.Random, defined: list[str], target: str, operations=OPERATIONS, inputs=()
) -> Statement:
    op = rng.choice(operations)
    args = tuple(random_arg(rng, defined, inputs=inputs) for _ in range(PRIMITIVES[op].arity))
    return Statement(target, op, args)


def random_program(
    rng: random.Random, length: int, operations=OPERATIONS, max_tries: int = 1000, inputs=()
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
            statements.append(random_statement(rng, defined, target, operations, inputs))
            if target not in defined:
                defined.append(target)
        program = Program(tuple(statements))
        if analyze(program).valid:
            return program
    raise RuntimeError(f"no valid program of length {length} in {max_tries} draws")
