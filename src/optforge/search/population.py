"""Population mechanics: tournament selection, ageing, and RNG state that survives a restart.

Kept apart from the search loop so each rule is a small pure function with its own test.
"""

from __future__ import annotations

import random


def tournament(population: list[int], fitness, rng: random.Random, size: int) -> int:
    """The fittest of ``size`` distinct slots drawn at random; failed members rank last, and
    ties go to the first drawn."""
    slots = rng.sample(range(len(population)), size)
    return max((population[s] for s in slots), key=lambda c: rank(fitness(c)))


def replace_oldest(population: list[int], cursor: int, child: int) -> int:
    """The child takes the oldest member's slot; returns where the next child goes."""
    population[cursor] = child
    return (cursor + 1) % len(population)


def rank(fitness: float | None) -> float:
    """Sort key: failed (None) below every fitness."""
    return float("-inf") if fitness is None else fitness


def rng_from_state(state: list) -> random.Random:
    rng = random.Random()
    version, internal, gauss = state
    rng.setstate((version, tuple(internal), gauss))
    return rng


def rng_state(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]
