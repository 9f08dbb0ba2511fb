"""Executors: in-process, local processes and a real local Ray give the same results; faults
(a raising candidate, a dying worker, a hung job) are contained."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

import pytest

from optforge.search.config import SearchConfig
from optforge.search.evolution import Search, open_journal
from optforge.search.executors import (
    InProcessExecutor,
    Job,
    LocalExecutor,
    RayExecutor,
    make_executor,
)
from optforge.tasks.registry import baseline_program

TASK = "digits-mlp-test"
NAN = "def train(w, g, v1, v2, lr):\n    u = log(w)\n    update = u * lr\n    return update, v1, v2"


def jobs() -> list[Job]:
    good = [baseline_program("adamw", 1e-2).source(), baseline_program("lion", 3e-3, 0.1).source()]
    return [Job(1, TASK, (good[0], NAN, good[1]), (0, 1, 2), time_limit=60, threads=1),
            Job(2, TASK, (good[1],), (5,), time_limit=60, threads=1)]  # fmt: skip


def collect(executor) -> dict:
    """job -> [(fitness, reason, final loss)]: everything but the wall time."""
    try:
        return {job.id: [(e.fitness, e.reason, e.final_loss) for e in evaluations]
                for job, evaluations in executor.run(jobs())}  # fmt: skip
    finally:
        executor.close()


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_local_and_ray_executors_equal_in_process(ray_session):
    expected = collect(InProcessExecutor())
    assert expected[1][1][0] is None and "not finite" in expected[1][1][1]
    assert expected[1][0][0] > 0.5 and expected[2][0][0] > 0.5
    assert collect(LocalExecutor(2)) == expected
    assert collect(RayExecutor(2)) == expected


def test_a_search_on_ray_equals_the_same_search_in_process(ray_session, tmp_path):
    config = SearchConfig(task=TASK, budget=32, batch=16, population=16, tournament=4, workers=2)

    def run(name, executor):
        journal, _ = open_journal(tmp_path / name, config, resume=False)
        Search(journal, config, executor).run()
        rows = [(r["source"], r["fitness"], r["status"], r["job"]) for r in journal.candidates()]
        executor.close()
        return rows

    assert run("ray.db", make_executor("ray", 2)) == run("here.db", make_executor("inprocess"))


def test_a_raising_candidate_fails_alone():
    job = Job(1, "no-such-task", (NAN, NAN), (0, 1))
    ((_, evaluations),) = InProcessExecutor().run([job])
    assert all(e.fitness is None and "raised KeyError" in e.reason for e in evaluations)


def kill_new_workers(stop: threading.Event, limit: int) -> None:
    """Kill each worker process once it exists, ``limit`` times."""
    killed: set[int] = set()
    while not stop.is_set() and len(killed) < limit:
        for child in multiprocessing.active_children():
            if child.pid not in killed:
                time.sleep(0.3)
                child.kill()
                killed.add(child.pid)
        time.sleep(0.05)


def run_with_killer(limit: int):
    stop = threading.Event()
    killer = threading.Thread(target=kill_new_workers, args=(stop, limit), daemon=True)
    killer.start()
    executor = LocalExecutor(1)
    try:
        return list(executor.run(jobs()[1:]))
    finally:
        stop.set()
        killer.join()
        executor.close()


def test_a_dead_worker_is_replaced_and_its_job_retried_once():
    ((job, evaluations),) = run_with_killer(limit=1)
    assert [(e.fitness, e.reason, e.final_loss) for e in evaluations] == collect(
        InProcessExecutor()
    )[2]


def test_a_worker_that_dies_twice_fails_its_job_only():
    ((job, evaluations),) = run_with_killer(limit=2)
    assert evaluations[0].fitness is None and "worker died twice" in evaluations[0].reason


def test_a_hung_job_is_failed_and_the_rest_go_on():
    hung = Job(1, TASK, (NAN,), (0,), hang_after=0.5)  # a new worker alone needs > 0.5 s
    executor = LocalExecutor(1)
    try:
        out = {job.id: ev for job, ev in executor.run([hung, jobs()[1]])}
    finally:
        executor.close()
    assert "hung" in out[1][0].reason
    assert out[2][0].fitness is not None


def test_unknown_executor_is_refused():
    with pytest.raises(ValueError, match="executor must be one of"):
        make_executor("slurm")


def test_ray_workers_asking_for_gpus_that_do_not_exist_get_the_flag_named(ray_session):
    with pytest.raises(ValueError, match="--gpus-per-worker 0.5: the Ray cluster has 0 GPUs"):
        RayExecutor(2, gpus=0.5)
    with pytest.raises(ValueError, match="--device cuda with the Ray executor needs"):
        RayExecutor(2, device="cuda")


def test_workers_share_the_cores_the_user_allows(monkeypatch):
    from optforge.search.executors import threads_per_worker

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads_per_worker(1) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    assert (threads_per_worker(1), threads_per_worker(2), threads_per_worker(16)) == (8, 4, 1)
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads_per_worker(1) == len(os.sched_getaffinity(0))
