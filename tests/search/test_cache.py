"""The fitness cache: hits, re-scoring every N hits, order-free means, sticky failures."""

from __future__ import annotations

from optforge.search.cache import FitnessCache


def test_miss_then_hits():
    cache = FitnessCache()
    assert cache.lookup("a") == (None, None)
    cache.claim("a", 1)
    cache.record("a", 0, 0.5)
    for _ in range(3):
        entry, rescore = cache.lookup("a")
        assert entry.first == 1 and entry.fitness == 0.5 and rescore is None
    assert cache.hits == 3 and cache.lookups == 4 and cache.hit_rate == 0.75


def test_rescore_every_n_hits_with_fresh_seed_offsets():
    cache = FitnessCache(rescore_after=2)
    cache.lookup("a")
    cache.claim("a", 1)
    cache.record("a", 0, 0.5)
    offsets = [cache.lookup("a")[1] for _ in range(6)]
    assert offsets == [None, 1, None, 2, None, 3]
    cache.record("a", 2, 0.8)
    cache.record("a", 1, 0.2)
    assert abs(cache.fitness("a") - 0.5) < 1e-12  # mean of 0.5, 0.2, 0.8


def test_no_rescore_before_the_first_result_or_after_a_failure():
    cache = FitnessCache(rescore_after=1)
    cache.claim("a", 1)
    assert cache.lookup("a")[1] is None  # still training: nothing to re-score yet
    cache.record("a", 0, None, "loss diverged at step 3")
    entry, rescore = cache.lookup("a")
    assert rescore is None and entry.failed and entry.fitness is None
    assert entry.reason == "loss diverged at step 3"


def test_mean_does_not_depend_on_arrival_order():
    values = [0.1, 0.7, 0.2, 0.9, 0.3]
    a, b = FitnessCache(), FitnessCache()
    for cache in (a, b):
        cache.claim("x", 1)
    for i, v in enumerate(values):
        a.record("x", i, v)
    for i, v in reversed(list(enumerate(values))):
        b.record("x", i, v)
    assert a.fitness("x") == b.fitness("x")
