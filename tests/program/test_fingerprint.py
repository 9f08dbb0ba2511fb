"""Fingerprints: equal for equivalent programs, different otherwise."""

from __future__ import annotations

import random

import pytest

from optforge.bench import program as program_bench
from optforge.program import ProgramError, library, parse
from optforge.program.fingerprint import behaviour, fingerprint
from optforge.program.generate import random_program

SIGN_BY_HAND = parse("""def train(w, g, v1, v2, lr):
    m = interp(g, v1, 0.9)
    mm = m * m
    r = sqrt(mm)
    u = m / r
    update = u * lr
    v1 = interp(g, v1, 0.99)
    return update, v1, v2""")

EQUIVALENT = [
    (SIGN_BY_HAND, library.lion(0.9, 0.99)),
    (parse("def train(w, g, v1, v2, lr):\n    a = abs(g)\n    u = g / a\n    update = u * lr\n"
           "    return update, v1, v2"),
     parse("def train(w, g, v1, v2, lr):\n    u = sign(g)\n    update = lr * u\n"
           "    return update, v1, v2")),
    (parse("def train(w, g, v1, v2, lr):\n    x = g * 2.0\n    update = x * lr\n"
           "    junk = exp(w)\n    return update, v1, v2"),
     parse("def train(w, g, v1, v2, lr):\n    x = g + g\n    update = lr * x\n"
           "    return update, v1, v2")),
]  # fmt: skip


@pytest.mark.parametrize(("a", "b"), EQUIVALENT)
def test_equivalent_programs_share_a_fingerprint(a, b):
    assert a != b
    assert fingerprint(a) == fingerprint(b)


def test_different_programs_differ():
    names = ["sgd", "momentum", "signum", "adamw", "lion", "rmsprop", "adabelief", "powersign",
             "addsign", "warm_start"]  # fmt: skip
    prints = {fingerprint(library.PROGRAMS[n]()) for n in names}
    assert len(prints) == len(names)
    assert fingerprint(library.lion(0.9, 0.99)) != fingerprint(library.lion(0.9, 0.98))
    assert fingerprint(library.lion(0.9, 0.99, 0.1)) != fingerprint(library.lion(0.9, 0.99, 0.2))


def test_nonfinite_programs_are_marked():
    nan = parse("def train(w, g, v1, v2, lr):\n    update = arcsin(v2)\n    u = v2 + 5.0\n"
                "    update = log(w)\n    return update, v1, v2")  # fmt: skip
    assert behaviour(nan)[1] is False
    assert behaviour(library.lion())[1] is True


def test_invalid_programs_cannot_be_fingerprinted():
    with pytest.raises(ProgramError, match="invalid program"):
        fingerprint(parse("def train(w, g, v1, v2, lr):\n    u = lr * 2.0\n    return u, v1, v2"))


def test_collision_rate_on_random_programs_is_small():
    """The benchmark's referee check on a small sample (the full 10,000: docs)."""
    result = program_bench.run(programs=300, seed=1)
    assert result.collision_rate <= 0.01
    assert result.simplify_preserved == 300
    assert result.analyze_us_20 > 0 and result.fingerprint_ms > 0


def test_fingerprint_is_deterministic_across_calls():
    p = random_program(random.Random(5), 12)
    assert fingerprint.__wrapped__(p) == fingerprint.__wrapped__(p)
