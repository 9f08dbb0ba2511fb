"""Mutations: valid, changed, seeded, and within the configured limits."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from optforge.program import library, parse
from optforge.program.analysis import analyze
from optforge.search.mutation import MutationConfig, MutationError, mutate

WARM = library.paper_warm_start()


DEFAULT = MutationConfig()


def chain(seed: int, n: int, config=DEFAULT):
    rng, program, out = random.Random(seed), WARM, []
    for _ in range(n):
        program, how = mutate(program, rng, config)
        out.append((program, how))
    return out


def test_every_mutant_is_valid_and_structurally_new():
    rng = random.Random(0)
    for _ in range(300):
        parent = rng.choice([WARM, library.lion(), library.momentum()])
        child, how = mutate(parent, rng)
        analysis = analyze(child)
        assert analysis.valid, how
        assert analysis.structural_hash != analyze(parent).structural_hash, how


def test_same_seed_same_trajectory_and_seeds_differ():
    assert chain(3, 50) == chain(3, 50)
    assert [p for p, _ in chain(3, 50)] != [p for p, _ in chain(4, 50)]


def test_all_three_kinds_occur_with_equal_default_weights():
    kinds = Counter(how.split()[0] for _, how in chain(1, 600))
    assert set(kinds) == {"insert", "delete", "modify"}
    assert all(n > 100 for n in kinds.values()), kinds


def test_no_insertion_at_max_length():
    config = MutationConfig(max_length=len(WARM))
    rng = random.Random(2)
    for _ in range(200):
        child, how = mutate(WARM, rng, config)
        assert len(child) <= len(WARM) and not how.startswith("insert"), how


def test_weights_select_the_kind():
    only_delete = MutationConfig(weights=(0.0, 1.0, 0.0))
    rng = random.Random(5)
    for _ in range(50):
        child, how = mutate(WARM, rng, only_delete)
        assert how.startswith("delete") and len(child) == len(WARM) - 1


def literals(program):
    return [a for s in program.statements for a in s.args if isinstance(a, float)]


def test_constants_only_perturbs_one_literal_by_a_power_of_two():
    rng = random.Random(7)
    config = MutationConfig(constants_only=True)
    ratios = []
    for _ in range(200):
        child, how = mutate(WARM, rng, config)
        assert [(s.target, s.op) for s in child.statements] == [
            (s.target, s.op) for s in WARM.statements
        ]
        changed = [(a, b) for a, b in zip(literals(WARM), literals(child), strict=True) if a != b]
        assert len(changed) == 1, how
        a, b = changed[0]
        ratios.append(b / a)
    # 2^a with a ~ N(0, 1): the log2 ratios have mean ~0 and std ~1 (4-digit rounding aside)
    import statistics

    logs = [__import__("math").log2(r) for r in ratios]
    assert abs(statistics.fmean(logs)) < 0.25 and 0.75 < statistics.stdev(logs) < 1.25


def test_constants_only_needs_a_literal():
    program = parse("def train(w, g, v1, v2, lr):\n    update = g * lr\n    return update, v1, v2")
    with pytest.raises(MutationError, match="needs a literal"):
        mutate(program, random.Random(0), MutationConfig(constants_only=True))


@pytest.mark.parametrize(
    "kwargs, message",
    [({"weights": (1.0, -1.0, 1.0)}, "non-negative"), ({"weights": (0.0, 0.0, 0.0)}, "positive"),
     ({"max_length": 0}, "max_length")],
)  # fmt: skip
def test_bad_configuration_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MutationConfig(**kwargs)
