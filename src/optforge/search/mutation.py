"""Mutations: the only way the search moves (PAPER.md, "Mutations").

The language (``MutationConfig.language``) says what an inserted statement may call and read:
the paper's elementwise language, or that plus the matrix operations and per-tensor inputs.
One of three, with equal weights by default: insert a random statement, delete a statement,
modify one argument of a statement. A modified argument becomes another variable, a named
constant or a new literal drawn from N(0, 1); an existing literal is instead multiplied by 2^a,
a ~ N(0, 1), half of the time. Insertion is off once the program is ``max_length`` long.
Redundant statements are allowed: they are the stepping stones of later mutations.

A mutant is redrawn until ``analyze`` accepts it and its structural hash differs from its
parent's, so no evaluation is spent on an invalid program or on a renaming of the parent.
Every random choice comes from the ``random.Random`` passed in: same seed, same mutants.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from optforge.program import generate
from optforge.program.analysis import analyze
from optforge.program.generate import random_arg, random_statement
from optforge.program.program import INPUTS, Program, Statement

KINDS = ("insert", "delete", "modify")


@dataclass(frozen=True)
class MutationConfig:
    """How children differ from parents; ``constants_only`` is the paper's baseline that
    only perturbs AdamW's constants."""

    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # insert, delete, modify
    max_length: int = 20
    constants_only: bool = False
    max_tries: int = 1000
    language: str = "matrix"  # generate.LANGUAGES; journals from before it: "elementwise"

    def __post_init__(self) -> None:
        generate.check_language(self.language)
        if len(self.weights) != 3 or any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise ValueError(
                f"mutation weights must be three non-negative numbers (insert, delete, modify) "
                f"with a positive sum, got {self.weights!r}"
            )
        if self.max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {self.max_length}")


class MutationError(RuntimeError):
    """No valid, changed mutant was found (e.g. constants-only on a program without literals)."""


def mutate(
    program: Program, rng: random.Random, config: MutationConfig = MutationConfig()
) -> tuple[Program, str]:
    """A valid child whose structure differs from ``program``'s, and what was done to it."""
    parent_hash = analyze(program).structural_hash
    for _ in range(config.max_tries):
        if config.constants_only:
            child, how = _perturb_constant(program, rng)
        else:
            child, how = _mutate_once(program, rng, config)
        if child is None:
            continue
        analysis = analyze(child)
        if analysis.valid and analysis.structural_hash != parent_hash:
            return child, how
    raise MutationError(f"no valid changed mutant in {config.max_tries} draws of\n{program}")


def _mutate_once(program, rng, config) -> tuple[Program | None, str]:
    weights = list(config.weights)
    if len(program) >= config.max_length:
        weights[0] = 0.0
    if len(program) <= 1:
        weights[1] = 0.0
    kind = rng.choices(KINDS, weights=weights)[0]
    if kind == "insert":
        return _insert(program, rng, config.language)
    if kind == "delete":
        i = rng.randrange(len(program))
        statements = program.statements[:i] + program.statements[i + 1 :]
        return _with(program, statements), f"delete {i}: {program.statements[i].source()}"
    return _modify(program, rng, config.language)


def _insert(program: Program, rng: random.Random, language: str) -> tuple[Program, str]:
    i = rng.randint(0, len(program))
    defined = _defined_before(program, i)
    target = rng.choice([*_targets(program), "update", "v1", "v2", _fresh(program)])
    statement = random_statement(
        rng, defined, target, generate.operations(language), generate.inputs(language)
    )
    statements = program.statements[:i] + (statement,) + program.statements[i:]
    return _with(program, statements), f"insert {i}: {statement.source()}"


def _modify(program: Program, rng: random.Random, language: str) -> tuple[Program | None, str]:
    i = rng.randrange(len(program))
    old = program.statements[i]
    if not old.args:
        return None, ""
    j = rng.randrange(len(old.args))
    arg = old.args[j]
    if isinstance(arg, float) and rng.random() < 0.5:
        new_arg = _scaled(arg, rng)
    else:
        new_arg = random_arg(rng, _defined_before(program, i), inputs=generate.inputs(language))
    if new_arg == arg:
        return None, ""
    new = Statement(old.target, old.op, old.args[:j] + (new_arg,) + old.args[j + 1 :])
    statements = program.statements[:i] + (new,) + program.statements[i + 1 :]
    return _with(program, statements), f"modify {i}: {old.source()} -> {new.source()}"


def _perturb_constant(program: Program, rng: random.Random) -> tuple[Program | None, str]:
    """Multiply one literal by 2^a, a ~ N(0, 1); nothing else changes."""
    spots = [
        (i, j)
        for i, s in enumerate(program.statements)
        for j, a in enumerate(s.args)
        if isinstance(a, float)
    ]
    if not spots:
        raise MutationError(
            f"constants-only mutation needs a literal; the program has none:\n{program}"
        )
    i, j = rng.choice(spots)
    old = program.statements[i]
    args = old.args[:j] + (_scaled(old.args[j], rng),) + old.args[j + 1 :]
    new = Statement(old.target, old.op, args)
    statements = program.statements[:i] + (new,) + program.statements[i + 1 :]
    return _with(program, statements), f"constant {i}: {old.source()} -> {new.source()}"


def _scaled(value: float, rng: random.Random) -> float:
    """value * 2^a, kept to 4 significant digits so programs stay readable."""
    return float(f"{value * 2.0 ** rng.gauss(0.0, 1.0):.4g}")


def _defined_before(program: Program, i: int) -> list[str]:
    """Names a statement at position ``i`` may read: inputs and earlier targets."""
    names = list(INPUTS)
    for s in program.statements[:i]:
        if s.target not in names:
            names.append(s.target)
    return names


def _targets(program: Program) -> list[str]:
    return sorted({s.target for s in program.statements})


def _fresh(program: Program) -> str:
    used = {s.target for s in program.statements} | set(INPUTS)
    return next(f"t{n}" for n in range(len(used) + 1) if f"t{n}" not in used)


def _with(program: Program, statements: tuple[Statement, ...]) -> Program:
    return Program(tuple(statements), program.returns)


__all__ = ["KINDS", "MutationConfig", "MutationError", "mutate"]
