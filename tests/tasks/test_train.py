"""The batched evaluator: equal to one-at-a-time, failures contained, deterministic."""

from __future__ import annotations

import dataclasses

import pytest

from optforge.program import parse
from optforge.tasks import registry
from optforge.tasks.registry import baseline_program, with_step_size
from optforge.tasks.train import evaluate, schedule

MLP_TASK = registry.get("digits-mlp-test")
LM_TASK = registry.get("shakespeare-lm-test")

NAN = parse("def train(w, g, v1, v2, lr):\n    u = log(w)\n    update = u * lr\n"
            "    return update, v1, v2")  # fmt: skip
GLOBAL_TEXT = ("def train(w, g, v1, v2, lr):\n    n = global_norm(g)\n    u = g / n\n"
               "    update = u * lr\n    return update, v1, v2")  # fmt: skip
GLOBAL = with_step_size(parse(GLOBAL_TEXT), 0.1)


def programs():
    return [baseline_program("adamw", 1e-2), baseline_program("lion", 3e-3, 0.1), GLOBAL,
            baseline_program("adamw", 1e-2), baseline_program("momentum", 0.05)]  # fmt: skip


@pytest.mark.parametrize("task", [MLP_TASK, LM_TASK], ids=lambda t: t.name)
def test_batched_evaluation_equals_one_at_a_time(task):
    progs, seeds = programs(), [0, 0, 1, 2, 3]
    together = evaluate(task, progs, seeds)
    for program, seed, result in zip(progs, seeds, together, strict=True):
        (alone,) = evaluate(task, [program], [seed])
        assert not result.failed
        assert result.fitness == pytest.approx(alone.fitness, abs=1e-6)
        assert result.final_loss == pytest.approx(alone.final_loss, rel=1e-5)


def test_same_seed_same_fitness_and_seeds_differ():
    a = evaluate(MLP_TASK, [baseline_program("adamw", 1e-2)] * 3, [7, 7, 8])
    assert a[0].fitness == a[1].fitness
    assert a[0].final_loss != a[2].final_loss


def test_failures_are_scored_with_reasons_and_contained():
    healthy = baseline_program("adamw", 1e-2)
    exploding = baseline_program("sgd", 1e4)
    results = evaluate(MLP_TASK, [NAN, healthy, exploding], [0, 1, 2])
    assert results[0].failed and "not finite" in results[0].reason
    assert results[2].failed and (
        "diverged" in results[2].reason or "not finite" in results[2].reason
    )
    assert results[0].fitness is None and results[2].fitness is None
    (alone,) = evaluate(MLP_TASK, [healthy], [1])
    assert not results[1].failed and results[1].fitness == pytest.approx(alone.fitness, abs=1e-6)


def test_time_limit_stops_an_evaluation():
    slow = dataclasses.replace(MLP_TASK, steps=100_000)
    (result,) = evaluate(slow, [baseline_program("adamw", 1e-2)], [0], time_limit=0.5)
    assert result.failed and "time limit" in result.reason


def test_learning_works_on_the_test_tasks():
    (mlp,) = evaluate(MLP_TASK, [baseline_program("adamw", 1e-2)], [0])
    assert mlp.fitness > 0.8  # 10 classes: chance is 0.1
    (lm,) = evaluate(LM_TASK, [baseline_program("adamw", 1e-2)], [0])
    assert lm.fitness > -3.6  # uniform over the vocabulary would be -ln(84) = -4.43


def test_schedule_warms_up_then_decays_to_zero():
    s = schedule(100, 0.1)
    assert s[9] == 1.0 and s[0] == pytest.approx(0.1)
    assert s[10] == pytest.approx(1.0) and s[-1] < 0.001
    assert all(a >= b for a, b in zip(s[10:], s[11:], strict=False))


def test_mismatched_arguments_are_refused():
    with pytest.raises(ValueError, match="2 programs but 1 seeds"):
        evaluate(MLP_TASK, [NAN, NAN], [0])


def test_compiled_forward_agrees_with_eager():
    """torch.compile'd training gives eager's results up to float rounding; failures too."""
    task = dataclasses.replace(LM_TASK, steps=20)
    progs, seeds = [*programs()[:2], NAN], [0, 1, 2]
    eager = evaluate(task, progs, seeds)
    fast = evaluate(task, progs, seeds, compiled=True)
    for a, b in zip(eager, fast, strict=True):
        assert a.failed == b.failed and a.reason == b.reason
        if not a.failed:
            assert a.final_loss == pytest.approx(b.final_loss, rel=1e-4)
            assert a.fitness == pytest.approx(b.fitness, rel=1e-4)
