from __future__ import annotations

import pytest

from optforge.program import library
from optforge.tasks import registry
from optforge.tasks.registry import TASKS, baseline_program, with_step_size


def test_tiers_cover_the_search_funnel():
    tiers = {t.tier for t in TASKS.values()}
    assert {"A", "B", "C", "meta", "test"} <= tiers
    for tier in ("A", "B", "C"):
        assert {t.language for t in TASKS.values() if t.tier == tier} == {True, False}


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_builds_its_model(name):
    task = TASKS[name]
    assert task.model().num_params > 1000
    x, y = task.batches([0, 1])(0)
    assert x.shape[:2] == (2, task.batch) and y.shape[:2] == (2, task.batch)


def test_with_step_size_scales_the_schedule_input():
    p = with_step_size(library.lion(), 3e-4)
    assert p.source().splitlines()[1] == "    lr = lr * 0.0003"
    assert baseline_program("lion", 3e-4, 1.0) == with_step_size(library.lion(0.9, 0.99, 1.0), 3e-4)


def test_unknown_task_and_baseline_are_explained():
    with pytest.raises(KeyError, match="unknown task 'nope' \\(tasks: fmnist-vit-a"):
        registry.get("nope")
    with pytest.raises(KeyError, match="has no tuned baseline 'adagrad'"):
        registry.get("fmnist-vit-a").baseline("adagrad")
