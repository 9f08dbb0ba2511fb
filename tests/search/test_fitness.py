"""The fitness definitions: step-size envelope with folding, normalized multi-task fitness,
the cascade's hurdle, several seeds; each against a hand computation from ``evaluate``."""

from __future__ import annotations

import pytest

from optforge.program import library, parse
from optforge.search.fitness import (
    REFERENCE_SEEDS,
    SEED_STRIDE,
    FitnessConfig,
    parse_definition,
    references,
    scaled,
    score,
)
from optforge.tasks import registry
from optforge.tasks.registry import baseline_program
from optforge.tasks.train import evaluate

TASK = "digits-mlp-test"
OTHER = "shakespeare-lm-test"  # other units: -loss in nats
SMALL_SGD = baseline_program("sgd", 0.02)  # far too small a step: x3 beats x1
ADAMW = baseline_program("adamw", 1e-2)


def test_scaled_appends_then_absorbs_a_multiplier():
    once = scaled(SMALL_SGD, 3.0)
    assert len(once) == len(SMALL_SGD) + 1
    assert once.statements[-1].op == "mul" and once.statements[-1].args == ("update", 3.0)
    twice = scaled(once, 3.0)  # the trailing literal absorbs the next factor
    assert len(twice) == len(once) and twice.statements[-1].args == ("update", 9.0)
    assert scaled(SMALL_SGD, 1.0) is SMALL_SGD
    assert parse(twice.source()) == twice


def test_multiplier_folding_is_exact():
    """A program scored best at x3 is stored with its constant x3, and re-scoring the folded
    program at x1 gives the same fitness, bit for bit."""
    config = FitnessConfig((TASK,), multipliers=(1 / 3, 1.0, 3.0))
    (result,) = score(config, [SMALL_SGD], [0])
    assert result.multiplier == 3.0
    by_hand = [evaluate(registry.get(TASK), [scaled(SMALL_SGD, m)], [0])[0].fitness
               for m in config.multipliers]  # fmt: skip
    assert result.fitness == max(by_hand) == by_hand[2]
    folded = scaled(SMALL_SGD, result.multiplier)
    (again,) = score(FitnessConfig((TASK,)), [folded], [0])
    assert again.fitness == result.fitness and again.multiplier == 1.0


def test_batch_does_not_change_a_candidates_fitness():
    config = FitnessConfig((TASK,), multipliers=(0.5, 1.0, 2.0), seeds=2)
    alone = score(config, [ADAMW], [4])[0]
    together = score(config, [SMALL_SGD, ADAMW, library.paper_warm_start()], [1, 4, 2])[1]
    assert alone.fitness == pytest.approx(together.fitness, abs=1e-6)
    assert alone.multiplier == together.multiplier


def _mean(values):
    return sum(values) / len(values)


def test_references_are_the_tuned_baselines_means_over_the_reference_seeds():
    task = registry.get(TASK)
    seeds = list(REFERENCE_SEEDS)
    sgd = evaluate(task, [task.baseline("sgd")] * 3, seeds)
    adamw = evaluate(task, [task.baseline("adamw")] * 3, seeds)
    expected = (_mean([r.fitness for r in sgd]), _mean([r.fitness for r in adamw]))
    assert references(TASK) == pytest.approx(expected, abs=1e-7)


def test_normalized_multi_task_fitness_matches_a_hand_computation():
    config = FitnessConfig((TASK, OTHER), seeds=2, normalize=True)
    (result,) = score(config, [ADAMW], [5])
    per_task = []
    for name in (TASK, OTHER):
        task = registry.get(name)
        raw = [r.fitness for r in evaluate(task, [ADAMW, ADAMW], [5, 5 + SEED_STRIDE])]
        low, high = references(name)
        per_task.append(_mean([(f - low) / (high - low) for f in raw]))
    assert result.fitness == pytest.approx(_mean(per_task), abs=1e-5)


def test_the_cascade_stops_candidates_below_the_hurdle_after_stage_one():
    config = FitnessConfig((TASK, OTHER), multipliers=(1.0, 3.0), normalize=True, hurdle=0.0)
    bad = baseline_program("sgd", 1e-4)  # learns nothing in 60 steps
    low, high = score(config, [bad, ADAMW], [0, 0])
    assert low.stage == 1 and high.stage == 2
    # a stopped candidate keeps its stage-1 score: the first task, first seed, best multiplier
    sgd, adamw = references(TASK)
    rows = evaluate(registry.get(TASK), [scaled(bad, 1.0), scaled(bad, 3.0)], [0, 0])
    stage1 = max((r.fitness - sgd) / (adamw - sgd) for r in rows)
    assert low.fitness == pytest.approx(stage1, abs=1e-6) and low.fitness < 0.0
    without = FitnessConfig((TASK, OTHER), multipliers=(1.0, 3.0), normalize=True)
    assert high.fitness == pytest.approx(score(without, [ADAMW], [0])[0].fitness, abs=1e-6)


def test_bad_configurations_are_clear_errors():
    with pytest.raises(ValueError, match="must be normalized"):
        FitnessConfig((TASK, OTHER))
    with pytest.raises(ValueError, match="multipliers must be positive"):
        FitnessConfig((TASK,), multipliers=(0.0, 1.0))
    with pytest.raises(ValueError, match="seeds must be at least 1"):
        FitnessConfig((TASK,), seeds=0)
    with pytest.raises(KeyError, match="unknown task"):
        FitnessConfig(("no-such-task",))
    with pytest.raises(ValueError, match="unknown fitness option 'mul'"):
        parse_definition(f"{TASK};mul=1,3")
    with pytest.raises(ValueError, match="bad value 'x' for fitness option 'mult'"):
        parse_definition(f"{TASK};mult=x")


def test_definitions_parse():
    config = parse_definition(f"{TASK}+{OTHER};mult=1/3,1,3;seeds=2;norm;hurdle=0.25")
    assert config == FitnessConfig((TASK, OTHER), (1 / 3, 1.0, 3.0), 2, True, 0.25)
    assert parse_definition(TASK) == FitnessConfig((TASK,))
