"""Batches that fit the device: halved after an out-of-memory error, the fitted size kept,
the same fitness as one big batch; the GPU memory cap read from the environment."""

from __future__ import annotations

import pytest
import torch

from optforge.program import library
from optforge.search import fitness
from optforge.search.fitness import FitnessConfig, score
from optforge.tasks import memory
from optforge.tasks.registry import baseline_program
from optforge.tasks.train import evaluate


@pytest.fixture(autouse=True)
def _fresh():
    memory.forget()
    yield
    memory.forget()


def _fits_five(calls):
    def run(part):
        calls.append(len(part))
        if len(part) > 5:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return [x * 10 for x in part]

    return run


def test_a_batch_that_does_not_fit_is_halved_and_the_size_remembered():
    calls: list[int] = []
    rows = list(range(23))
    assert memory.in_fitting_batches(rows, _fits_five(calls), ("t", "cuda:0")) == [
        x * 10 for x in rows
    ]
    assert calls == [23, 11, 5, 5, 5, 5, 3]
    calls.clear()
    assert memory.in_fitting_batches(rows[:12], _fits_five(calls), ("t", "cuda:0"))[-1] == 110
    assert calls == [5, 5, 2]  # starts at the size that fitted
    calls.clear()
    memory.in_fitting_batches(rows[:12], _fits_five(calls), ("t", "cpu"), limit=4)
    assert calls == [4, 4, 4]  # another key; the user's limit


def test_a_single_row_that_does_not_fit_is_an_error():
    def run(part):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    with pytest.raises(torch.OutOfMemoryError):
        memory.in_fitting_batches([1, 2, 3], run, ("t", "cuda:0"))


def test_fitness_after_out_of_memory_retries_equals_one_big_batch(monkeypatch):
    """The real trainer under an injected memory limit of 2 rows per batch."""
    config = FitnessConfig(("digits-mlp-test",), multipliers=(0.5, 1.0, 2.0))
    programs = [baseline_program("adamw", 1e-2), library.paper_warm_start(),
                baseline_program("sgd", 0.1)]  # fmt: skip
    together = score(config, programs, [3, 1, 2])
    sizes = []

    def limited(task, optimizers, seeds, **kwargs):
        sizes.append(len(optimizers))
        if len(optimizers) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return evaluate(task, optimizers, seeds, **kwargs)

    monkeypatch.setattr(fitness, "evaluate", limited)
    apart = score(config, programs, [3, 1, 2])
    assert sizes[:3] == [9, 4, 2] and max(sizes[3:]) == 2
    for a, b in zip(together, apart, strict=True):
        assert (a.fitness, a.multiplier) == pytest.approx((b.fitness, b.multiplier), abs=1e-6)


def test_the_memory_fraction_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(memory.FRACTION_ENV, raising=False)
    assert memory.memory_fraction() == memory.DEFAULT_FRACTION
    monkeypatch.setenv(memory.FRACTION_ENV, "0.5")
    assert memory.memory_fraction() == 0.5
    for bad in ("1.5", "0", "lots"):
        monkeypatch.setenv(memory.FRACTION_ENV, bad)
        with pytest.raises(ValueError, match=f"{memory.FRACTION_ENV}='{bad}'.*in \\(0, 1\\]"):
            memory.memory_fraction()
    memory.cap("cpu")  # nothing to cap on a CPU, even with a bad value
