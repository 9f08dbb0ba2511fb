"""Where evaluation jobs run: in this process, in local worker processes, or on Ray.

A job is a batch of candidates that train together (``tasks.train.evaluate``); it names its
programs by source text and fixes its thread count, so the same job gives the same results on
every executor. Executors yield jobs as they finish, in any order; the search commits each one
as it arrives.

Faults never stop a search: a job that raises is retried one candidate at a time (the one that
raises is failed with its error); a worker that dies is replaced and its job retried once, then
failed; a job that runs past its deadline has its worker killed and is failed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing as mp
import os
import platform
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_connections

from optforge._extras import require
from optforge.search.fitness import FitnessConfig

EXECUTORS = ("inprocess", "local", "ray")
RAY = dict(extra="cluster", feature="the Ray executor", package="Ray")  # for _extras.require


@dataclass(frozen=True)
class Job:
    id: int
    task: str
    sources: tuple[str, ...]
    seeds: tuple[int, ...]
    time_limit: float | None = None
    compiled: bool = False
    threads: int | None = None  # torch threads while running (None: leave as is)
    hang_after: float | None = None  # seconds; default: see ``deadline``
    fitness: FitnessConfig | None = None  # None: the task's raw metric, one seed, x1
    device: str | None = None  # torch device of the training (None: the executor's, else CPU)

    @property
    def deadline(self) -> float | None:
        """Wall-clock seconds after which the worker is presumed hung: the evaluator's own
        time limit plus room for start-up (data loading, compiling)."""
        if self.hang_after is not None:
            return self.hang_after
        return None if self.time_limit is None else 2 * self.time_limit + 120


@dataclass(frozen=True)
class Evaluation:
    fitness: float | None
    reason: str | None
    final_loss: float | None = None
    seconds: float | None = None
    multiplier: float = 1.0  # the best step-size multiplier, to fold into the program
    stage: int = 2  # 1: stopped at the fitness cascade's hurdle


def run_job(job: Job) -> list[Evaluation]:
    """Run one job here. Never raises: a candidate whose training raises is failed."""
    import torch

    if reason := device_unavailable(job.device):
        return failed(job, reason)
    threads = torch.get_num_threads()
    if job.threads is not None:
        torch.set_num_threads(job.threads)
    try:
        return _evaluate(job, job.sources, job.seeds)
    except Exception:  # one bad candidate must not sink the batch: retry them one by one
        out = []
        for source, seed in zip(job.sources, job.seeds, strict=True):
            try:
                out += _evaluate(job, [source], [seed])
            except Exception as error:
                out.append(Evaluation(None, f"raised {type(error).__name__}: {error}"))
        return out
    finally:
        torch.set_num_threads(threads)


def _evaluate(job: Job, sources: Sequence[str], seeds: Sequence[int]) -> list[Evaluation]:
    from optforge.search.fitness import FitnessConfig, score
    from optforge.tasks.builtin import parse_optimizer

    config = (job.fitness or FitnessConfig()).on(job.task)
    optimizers = [parse_optimizer(s) for s in sources]
    results = score(config, optimizers, list(seeds), time_limit=job.time_limit,
                    compiled=job.compiled, device=job.device or "cpu")  # fmt: skip
    return [
        Evaluation(
            r.fitness,
            r.reason,
            r.final_loss if math.isfinite(r.final_loss) else None,
            r.seconds,
            r.multiplier,
            r.stage,
        )  # fmt: skip
        for r in results
    ]


def failed(job: Job, reason: str) -> list[Evaluation]:
    return [Evaluation(None, reason) for _ in job.sources]


def resolve_device(name: str | None) -> str:
    """``auto``: CUDA where torch sees a GPU, else CPU; other names pass through."""
    import torch

    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def device_unavailable(device: str | None) -> str | None:
    """Why this process cannot train on ``device`` (None when it can)."""
    import torch

    if device is None or not device.startswith("cuda") or torch.cuda.is_available():
        return None
    return (
        f"--device {device}: this worker ({platform.node()}) has no CUDA device visible to "
        f"torch; use --device cpu or auto, or give workers GPUs"
    )


def _on_device(job: Job, device: str) -> Job:
    return job if job.device is not None else dataclasses.replace(job, device=device)


class InProcessExecutor:
    """Runs jobs one after another in this process (the evaluator's time limit still holds)."""

    workers = 1

    def __init__(self, device: str = "cpu"):
        self.device = resolve_device(device)
        if reason := device_unavailable(self.device):
            raise ValueError(reason)

    def run(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, list[Evaluation]]]:
        for job in jobs:
            yield job, run_job(_on_device(job, self.device))

    def close(self) -> None:
        pass


class _PoolExecutor:
    """Scheduling shared by the local and Ray executors: one job per idle worker, deadlines,
    replacement of dead or hung workers, one retry after a death."""

    def __init__(self, workers: int, device: str = "cpu"):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.device = device
        self._idle: list = []

    # backend: start a worker, hand it a job, collect finished ones, kill one
    def _start(self):
        raise NotImplementedError

    def _submit(self, worker, job: Job):
        raise NotImplementedError

    def _collect(self, busy: dict, timeout: float) -> list[tuple[object, object]]:
        """[(worker, list[Evaluation] | Exception)] for jobs finished within ``timeout``."""
        raise NotImplementedError

    def _kill(self, worker) -> None:
        raise NotImplementedError

    def _can_start(self) -> bool:
        """Whether a new worker would find room (a cluster that lost a node may have none: the
        queue then waits for a live worker instead of for a worker that cannot start)."""
        return True

    def run(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, list[Evaluation]]]:
        queue = [(job, 0) for job in jobs]  # (job, deaths so far)
        busy: dict = {}  # worker -> (job, deaths, handle, started)
        while queue or busy:
            while queue and len(busy) < self.workers:
                if not self._idle and busy and not self._can_start():
                    break
                job, deaths = queue.pop(0)
                worker = self._idle.pop() if self._idle else self._start()
                handle = self._submit(worker, _on_device(job, self.device))
                busy[worker] = (job, deaths, handle, time.monotonic())
            for worker, outcome in self._collect(busy, timeout=1.0):
                job, deaths, _, _ = busy.pop(worker)
                if isinstance(outcome, Exception):
                    self._kill(worker)
                    if deaths == 0:
                        queue.insert(0, (job, 1))
                    else:
                        yield job, failed(job, f"worker died twice: {outcome}")
                else:
                    self._idle.append(worker)
                    yield job, outcome
            now = time.monotonic()
            for worker, (job, _, _, started) in list(busy.items()):
                if job.deadline is not None and now - started > job.deadline:
                    busy.pop(worker)
                    self._kill(worker)
                    yield job, failed(job, f"hung: no result after {job.deadline:g}s")

    def close(self) -> None:
        for worker in self._idle:
            self._kill(worker)
        self._idle = []


def _worker_main(connection) -> None:
    while True:
        job = connection.recv()
        if job is None:
            return
        connection.send(run_job(job))


class LocalExecutor(_PoolExecutor):
    """Worker processes on this machine (spawned, so each has its own torch state)."""

    def __init__(self, workers: int = 2, device: str = "cpu"):
        device = resolve_device(device)
        if reason := device_unavailable(device):
            raise ValueError(reason)
        super().__init__(workers, device)
        self._context = mp.get_context("spawn")

    def _start(self):
        parent, child = self._context.Pipe()
        process = self._context.Process(target=_worker_main, args=(child,), daemon=True)
        process.start()
        child.close()
        return (process, parent)

    def _submit(self, worker, job: Job):
        worker[1].send(job)
        return None

    def _collect(self, busy: dict, timeout: float):
        connections = {worker[1]: worker for worker in busy}
        sentinels = {worker[0].sentinel: worker for worker in busy}
        ready = wait_connections([*connections, *sentinels], timeout=timeout)
        out, seen = [], set()
        for item in ready:
            worker = connections.get(item) or sentinels[item]
            if id(worker) in seen:
                continue
            seen.add(id(worker))
            try:
                if worker[1].poll():
                    out.append((worker, worker[1].recv()))
                    continue
            except (EOFError, OSError):
                pass
            if not worker[0].is_alive():
                out.append((worker, RuntimeError(f"exit code {worker[0].exitcode}")))
        return out

    def _kill(self, worker) -> None:
        process, connection = worker
        if process.is_alive():
            with contextlib.suppress(OSError):
                connection.send(None)
            process.join(timeout=0.5)
        if process.is_alive():
            process.kill()
            process.join()
        connection.close()


class _RayWorker:
    """The Ray actor: runs jobs in its own process, keeping data and compiled code warm."""

    def run(self, job: Job) -> list[Evaluation]:
        return run_job(job)

    def pid(self) -> int:
        return os.getpid()


class RayExecutor(_PoolExecutor):
    """Ray actors: on this machine (``address=None`` starts a local Ray) or on a cluster.

    Each actor asks Ray for ``cpus`` CPUs and ``gpus`` GPUs (fractions let several actors share
    one GPU); Ray places it on a node that has them and keeps it, with its loaded data and
    compiled code, for the whole search. ``device`` is what actors train on: ``auto`` means
    CUDA when ``gpus`` > 0."""

    def __init__(self, workers: int = 2, address: str | None = None, device: str = "cpu",
                 cpus: float = 1.0, gpus: float = 0.0):  # fmt: skip
        if cpus <= 0 or gpus < 0:
            raise ValueError(f"--cpus-per-worker must be > 0 and --gpus-per-worker >= 0, got "
                             f"{cpus} and {gpus}")  # fmt: skip
        device = ("cuda" if gpus > 0 else "cpu") if device == "auto" else device
        if device.startswith("cuda") and gpus == 0:
            raise ValueError("--device cuda with the Ray executor needs --gpus-per-worker > 0 "
                             "(Ray hides GPUs from actors that did not ask for one)")  # fmt: skip
        ray = require("ray", **RAY)  # before any worker starts
        super().__init__(workers, device)
        self._ray = ray
        if not ray.is_initialized():
            kwargs = {"address": address} if address else {"num_cpus": math.ceil(workers * cpus)}
            ray.init(
                **kwargs, include_dashboard=False, log_to_driver=False, configure_logging=False
            )
        have = ray.cluster_resources()
        if gpus > 0 and have.get("GPU", 0) < gpus:
            raise ValueError(
                f"--gpus-per-worker {gpus:g}: the Ray cluster has {have.get('GPU', 0):g} GPUs "
                f"and {have.get('CPU', 0):g} CPUs; start its nodes with GPUs, or use "
                f"--gpus-per-worker 0 --device cpu"
            )
        self._cpus, self._gpus = cpus, gpus
        self._actor = ray.remote(num_cpus=cpus, num_gpus=gpus, max_restarts=0)(_RayWorker)

    def _start(self):
        return self._actor.remote()

    def _submit(self, worker, job: Job):
        return worker.run.remote(job)

    def _collect(self, busy: dict, timeout: float):
        refs = {handle: worker for worker, (_, _, handle, _) in busy.items()}
        ready, _ = self._ray.wait(list(refs), num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            try:
                out.append((refs[ref], self._ray.get(ref)))
            except self._ray.exceptions.RayError as error:
                out.append((refs[ref], RuntimeError(str(error).splitlines()[0])))
        return out

    def _kill(self, worker) -> None:
        with contextlib.suppress(Exception):  # an actor on a dead node is already gone
            self._ray.kill(worker, no_restart=True)

    def _can_start(self) -> bool:
        free = self._ray.available_resources()
        return free.get("CPU", 0) >= self._cpus and free.get("GPU", 0) >= self._gpus


def make_executor(name: str, workers: int = 1, address: str | None = None, device: str = "cpu",
                  cpus: float = 1.0, gpus: float = 0.0):  # fmt: skip
    if name == "inprocess":
        return InProcessExecutor(device)
    if name == "local":
        return LocalExecutor(workers, device)
    if name == "ray":
        return RayExecutor(workers, address, device, cpus, gpus)
    raise ValueError(f"executor must be one of {EXECUTORS}, got {name!r}")


def threads_per_worker(workers: int) -> int:
    """Share the cores this process may use among the workers: ``OMP_NUM_THREADS`` when the
    user set it (so two jobs can split a machine), else the CPUs it is allowed to run on."""
    cores = _usable_cores()
    return max(1, cores // workers)


def _usable_cores() -> int:
    limit = os.environ.get("OMP_NUM_THREADS", "").strip()
    if limit.isdigit() and int(limit) > 0:
        return int(limit)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def chunk(items: Sequence, parts: int) -> list[list]:
    """Split into ``parts`` nearly equal consecutive runs (no empty ones)."""
    size = max(1, math.ceil(len(items) / max(1, parts)))
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


__all__ = [
    "EXECUTORS",
    "Evaluation",
    "InProcessExecutor",
    "Job",
    "LocalExecutor",
    "RayExecutor",
    "chunk",
    "make_executor",
    "run_job",
    "threads_per_worker",
]
