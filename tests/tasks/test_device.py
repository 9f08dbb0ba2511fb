"""Fitness on a torch device: the same code runs on CPU here through the device paths (the
failure bookkeeping read in chunks), and on a GPU where one is present."""

from __future__ import annotations

import pytest
import torch

from optforge.program import parse
from optforge.search.executors import InProcessExecutor, Job, LocalExecutor, run_job
from optforge.tasks import registry
from optforge.tasks.registry import baseline_program
from optforge.tasks.train import evaluate
from tests.search.test_executors import NAN

MLP_TASK = registry.get("digits-mlp-test")
LM_TASK = registry.get("shakespeare-lm-test")


def _programs():
    return [baseline_program("adamw", 1e-2), NAN_PROGRAM, baseline_program("sgd", 1e4),
            baseline_program("lion", 3e-3, 0.1)]  # fmt: skip


NAN_PROGRAM = parse(NAN)


@pytest.mark.parametrize("task", [MLP_TASK, LM_TASK], ids=lambda t: t.name)
def test_reading_failures_in_chunks_changes_no_result(task):
    """Rows are independent: when the host learns of a failure changes nothing, not even the
    step and cause reported."""
    every_step = evaluate(task, _programs(), [0, 1, 2, 3], sync_every=1)
    chunked = evaluate(task, _programs(), [0, 1, 2, 3], sync_every=7, device="cpu")
    for a, b in zip(every_step, chunked, strict=True):
        assert (a.fitness, a.failed, a.reason) == (b.fitness, b.failed, b.reason)
    assert every_step[1].failed and "not finite at step 0" in every_step[1].reason
    assert every_step[2].failed and not every_step[0].failed


def test_a_cuda_job_without_a_gpu_fails_with_the_flag_named():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    job = Job(1, "digits-mlp-test", (baseline_program("adamw", 1e-2).source(),), (0,),
              device="cuda")  # fmt: skip
    (evaluation,) = run_job(job)
    assert evaluation.fitness is None and "--device cuda" in evaluation.reason
    for make in (InProcessExecutor, lambda d: LocalExecutor(2, d)):
        with pytest.raises(ValueError, match="--device cuda: this worker .* has no CUDA"):
            make("cuda")


def test_auto_is_the_cpu_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert InProcessExecutor("auto").device == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("task", [MLP_TASK, LM_TASK], ids=lambda t: t.name)
def test_cpu_and_gpu_fitness_agree(task):
    programs = [baseline_program("adamw", 10 ** (-2 - i / 8)) for i in range(16)]
    cpu = evaluate(task, programs, list(range(16)))
    gpu = evaluate(task, programs, list(range(16)), device="cuda")
    again = evaluate(task, programs, list(range(16)), device="cuda")
    assert [r.fitness for r in gpu] == [r.fitness for r in again]  # same device: bit for bit
    for a, b in zip(cpu, gpu, strict=True):
        assert a.failed == b.failed
        if not a.failed:
            assert abs(a.fitness - b.fitness) <= 0.02  # float order differs; measured in docs
