"""A search's whole configuration: one frozen value, checked on creation, stored in the journal.

Defaults are sized for a 2-core machine: the paper's population of 1000 with tournaments of 2
needs ~10^5 candidates before selection bites; with budgets of 10^3-10^4 a population of 100
and tournaments of 5 keep the same ageing mechanism with stronger selection (AutoML-Zero's
sizes).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from optforge.program import library
from optforge.search.fitness import FitnessConfig, parse_definition
from optforge.search.mutation import MutationConfig
from optforge.tasks import registry

ALGORITHMS = ("evolution", "random", "constants")


@dataclass(frozen=True)
class FunnelConfig:
    """Which tasks re-score the best candidates after the search, and how many go on.

    ``stages`` are the funnel tiers after the search task (e.g. tier B, then C); a candidate
    goes on when its fitness is at least the stage's tuned AdamW plus ``margin`` (if none does,
    the best one goes on, flagged). ``meta`` tasks, never trained on by the search, choose and
    validate the finalists."""

    stages: tuple[str, ...] = ()
    meta: tuple[str, ...] = ()
    promote: int = 8  # at most this many candidates enter the first stage
    finalists: int = 3
    margin: float = 0.0
    stage_seeds: tuple[int, ...] = (100, 101)
    meta_seeds: tuple[int, ...] = (200, 201, 202)
    ablation_seeds: tuple[int, ...] = (300, 301, 302)


@dataclass(frozen=True)
class SearchConfig:
    task: str = "fmnist-vit-a"
    budget: int = 1000  # candidates generated, cache hits included
    seed: int = 0
    algorithm: str = "evolution"
    population: int = 100
    tournament: int = 5
    batch: int = 32  # candidates proposed per generation; misses train together
    workers: int = 1  # evaluation jobs per generation (parallel workers)
    warm_start: str = field(default_factory=lambda: library.paper_warm_start().source())
    runs: int = 1  # independent populations from the warm start (restarts for exploration)
    restart_after: int | None = None  # candidates without improvement before a restart
    eval_seed: int = 0  # every candidate trains with this seed (common random numbers)
    rescore_after: int | None = None  # re-train a cached program with a new seed every N hits
    time_limit: float | None = 120.0  # seconds per evaluation batch
    compiled: bool = False
    mutation: MutationConfig = MutationConfig()
    funnel: FunnelConfig = FunnelConfig()
    fitness: FitnessConfig = FitnessConfig()  # tasks () = the search task alone

    def __post_init__(self) -> None:
        registry.get(self.task)  # a KeyError naming the known tasks
        if self.fitness == FitnessConfig() and self.task in registry.FITNESS:
            object.__setattr__(self, "fitness", parse_definition(registry.FITNESS[self.task]))
        for name in (*self.funnel.stages, *self.funnel.meta):
            registry.get(name)
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        if (self.algorithm == "constants") != self.mutation.constants_only:
            only = self.algorithm == "constants"  # the algorithm decides; one source of truth
            object.__setattr__(
                self, "mutation", dataclasses.replace(self.mutation, constants_only=only)
            )
        for name in ("budget", "population", "batch", "runs", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 1 <= self.tournament <= self.population:
            raise ValueError(
                f"tournament must be in [1, population={self.population}], got {self.tournament}"
            )
        for name in ("restart_after", "rescore_after"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 or None, got {value}")
        if self.time_limit is not None and self.time_limit <= 0:
            raise ValueError(f"time_limit must be positive or None, got {self.time_limit}")
        from optforge.program import parse

        parse(self.warm_start)  # a ProgramError with line and column

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SearchConfig:
        data: dict[str, Any] = json.loads(text)
        mutation = data.pop("mutation")
        mutation.setdefault("language", "elementwise")  # journals from before the matrix language
        mutation["weights"] = tuple(mutation["weights"])
        funnel = {k: tuple(v) if isinstance(v, list) else v for k, v in data.pop("funnel").items()}
        fitness = FitnessConfig(**data.pop("fitness", {}))  # journals before it: the default
        return cls(**data, mutation=MutationConfig(**mutation), funnel=FunnelConfig(**funnel),
                   fitness=fitness)  # fmt: skip

    @property
    def scoring(self) -> FitnessConfig:
        """The fitness configuration with its tasks filled in."""
        return self.fitness.on(self.task)


def default_warm_start(tasks) -> str:
    """The paper's AdamW warm start; with an epsilon when a task has parameters whose
    gradient can be exactly zero (the eps-free version fails there at its first step)."""
    sparse = any(registry.get(t).sparse_gradients for t in tasks)
    return library.paper_warm_start(eps=1e-8 if sparse else None).source()


def default_funnel(task: str) -> FunnelConfig:
    """The registry's funnel for a search task: its tier B (C is opt-in: ~100x the cost)."""
    stages, meta = registry.FUNNELS.get(task, ((), ()))
    return FunnelConfig(stages=tuple(s for s in stages if registry.get(s).tier != "C"), meta=meta)
