"""Regularized evolution: tournaments, ageing, the cache, restarts, and a search that works."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from optforge.program import parse
from optforge.search.config import FunnelConfig, SearchConfig
from optforge.search.evolution import Search, open_journal
from optforge.search.executors import InProcessExecutor
from optforge.search.journal import JournalError
from optforge.search.mutation import MutationConfig
from optforge.search.population import replace_oldest, tournament

TASK = "digits-mlp-test"
# SGD with a step size 10^4 too small: a deliberately bad warm start
BAD = (
    "def train(w, g, v1, v2, lr):\n    lr = lr * 0.0001\n    update = g * lr\n"
    "    return update, v1, v2"
)


def small(**kw) -> SearchConfig:
    base = dict(task=TASK, budget=48, batch=16, population=16, tournament=4, seed=0)
    return SearchConfig(**{**base, **kw})


def search(path, config) -> tuple:
    journal, config = open_journal(path, config, resume=False)
    progress = Search(journal, config, InProcessExecutor()).run()
    return journal, progress


def test_tournament_picks_the_fittest_of_the_sample_and_failed_rank_last():
    population = list(range(10))
    fitness = {i: float(i) for i in population} | {9: None}
    rng = random.Random(0)
    assert tournament(population, fitness.get, rng, 10) == 8  # whole population: the best
    wins = Counter(tournament(population, fitness.get, rng, 1) for _ in range(5000))
    assert set(wins) == set(population) and min(wins.values()) > 380  # size 1: uniform
    # size 2: member i wins when it and a worse one are drawn: P = 2 * rank / (n * (n - 1))
    wins = Counter(tournament(population, fitness.get, rng, 2) for _ in range(20000))
    ranks = {9: 0, **{i: i + 1 for i in range(9)}}
    for member, rank in ranks.items():
        assert wins[member] / 20000 == pytest.approx(2 * rank / 90, abs=0.012)


def test_the_oldest_member_dies():
    population, cursor = [0, 1, 2, 3], 0
    for child in (10, 11, 12, 13, 14):
        cursor = replace_oldest(population, cursor, child)
    assert population == [14, 11, 12, 13] and cursor == 1


def test_search_improves_on_a_bad_warm_start(tmp_path):
    journal, progress = search(tmp_path / "s.db", small(budget=64, warm_start=BAD))
    warm = journal.candidates("kind = 'warm_start'")[0]["fitness"]
    assert warm < 0.35  # the bad start barely learns
    assert progress.best_fitness > warm + 0.3
    assert progress.generated == 64
    state = journal.state()
    assert state["populations"][0].count(1) == 0  # the warm start copies aged out
    assert len(state["populations"][0]) == 16


def test_cache_hits_are_never_trained(tmp_path):
    journal, progress = search(tmp_path / "s.db", small())
    rows = journal.candidates("kind = 'child'")
    trained = [r for r in rows if r["job"] is not None]
    hits = [r for r in rows if r["cache_of"] is not None]
    assert hits, "a 48-candidate search from AdamW always revisits behaviours"
    results = {r["candidate"] for r in journal.results(TASK)}
    for row in hits:
        assert row["id"] not in results  # reused, not trained
        source = journal.candidate(row["cache_of"])
        assert source["fingerprint"] == row["fingerprint"]
        assert row["fitness"] == source["fitness"] or row["status"] == "failed"
    # every behaviour is trained once: trained fingerprints are distinct
    assert len({r["fingerprint"] for r in trained}) == len(trained)
    assert progress.hit_rate == pytest.approx(len(hits) / len(rows))


def test_rescoring_trains_a_cached_program_with_a_new_seed(tmp_path):
    # the elementwise language's trajectory revisits trained behaviours within the budget
    elementwise = MutationConfig(language="elementwise")
    journal, _ = search(tmp_path / "s.db", small(rescore_after=1, budget=48, mutation=elementwise))
    rescored = journal.candidates("kind = 'child' AND cache_of IS NOT NULL AND job IS NOT NULL")
    assert rescored
    for row in rescored:
        assert row["eval_seed"] > 0 and row["id"] in {r["candidate"] for r in journal.results(TASK)}


def test_runs_and_restarts(tmp_path):
    journal, _ = search(tmp_path / "s.db", small(runs=2, restart_after=1, budget=64))
    state = journal.state()
    assert len(state["populations"]) == 2
    assert {r["run"] for r in journal.candidates("kind = 'child'")} == {0, 1}
    restarts = journal.events("restart")
    assert restarts and state["restarts"] == len(restarts)
    # each restart starts every population from the best program found so far
    for _, event in restarts:
        best = journal.candidate(event["best"])
        earlier = journal.candidates("id <= ? AND kind IN ('warm_start', 'child') AND fitness "
                                     "IS NOT NULL", (event["best"],))  # fmt: skip
        assert best["fitness"] == max(r["fitness"] for r in earlier)
    last = journal.candidates("kind = 'child'")[-1]["generation"]
    children = {r["id"] for r in journal.candidates("generation = ?", (last,))}
    survivors = {c for population in state["populations"] for c in population} - children
    if restarts[-1][1]["generated"] == state["generated"]:  # the last generation restarted
        assert survivors <= {restarts[-1][1]["best"]}


def test_same_seed_same_search(tmp_path):
    def trajectory(name):
        journal, _ = search(tmp_path / name, small(budget=32))
        return [(r["source"], r["fitness"], r["status"]) for r in journal.candidates()]

    assert trajectory("a.db") == trajectory("b.db")


@pytest.mark.parametrize("algorithm", ["random", "constants"])
def test_paper_baselines_run_on_the_same_machinery(tmp_path, algorithm):
    journal, progress = search(tmp_path / "s.db", small(algorithm=algorithm, budget=32))
    rows = journal.candidates("kind = 'child'")
    assert len(rows) == 32 and progress.trained > 0
    if algorithm == "random":
        assert all(r["parent"] is None and r["mutation"] == "random" for r in rows)
    else:
        warm_ops = [
            s.op for s in parse(journal.candidates("kind = 'warm_start'")[0]["source"]).statements
        ]
        for row in rows:
            assert [s.op for s in parse(row["source"]).statements] == warm_ops
            assert row["mutation"].startswith("constant")


def test_journal_refuses_a_second_search_and_resumes_only_a_search(tmp_path):
    path = tmp_path / "s.db"
    search(path, small(budget=16))
    with pytest.raises(JournalError, match="--resume"):
        open_journal(path, small(), resume=False)
    with pytest.raises(JournalError, match="no search to resume"):
        open_journal(tmp_path / "empty.db", None, resume=True)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"task": "nope"}, "unknown task"), ({"algorithm": "annealing"}, "algorithm"),
     ({"tournament": 20, "population": 10}, "tournament"), ({"budget": 0}, "budget"),
     ({"restart_after": 0}, "restart_after"), ({"warm_start": "def f(:"}, "line 1"),
     ({"funnel": FunnelConfig(stages=("nope",))}, "unknown task")],
)  # fmt: skip
def test_bad_configuration_names_the_value(kwargs, message):
    with pytest.raises((ValueError, KeyError), match=message):
        small(**kwargs)


def test_config_round_trips_through_json():
    config = small(runs=3, rescore_after=5, funnel=FunnelConfig(stages=("digits-mlp-test-b",)))
    assert SearchConfig.from_json(config.to_json()) == config


def test_a_child_is_stored_with_its_best_multiplier_folded_in(tmp_path):
    """Every trained candidate records the multiplier its fitness came from; its folded
    program, re-scored at x1 on the same seed, gives that fitness exactly."""
    from optforge.search.fitness import FitnessConfig, score
    from optforge.search.journal import folded_program
    from optforge.tasks.registry import baseline_program

    fitness = FitnessConfig(multipliers=(0.25, 1.0, 4.0))
    small_step = baseline_program("sgd", 0.02).source()  # ~15x too small a step for this task
    journal, _ = search(tmp_path / "j.db", small(fitness=fitness, warm_start=small_step,
                                                 budget=32))  # fmt: skip
    rows = journal.candidates("job IS NOT NULL AND status = 'evaluated' AND kind != 'baseline'")
    assert rows and all(r["multiplier"] in (0.25, 1.0, 4.0) for r in rows)
    warm = journal.candidates("kind = 'warm_start'")[0]
    assert warm["multiplier"] == 4.0  # too small a step wants the largest multiplier
    for row in [warm, *[r for r in rows if r["multiplier"] != 1.0][:2]]:
        program = folded_program(row)
        (again,) = score(FitnessConfig((TASK,)), [program], [row["eval_seed"]])
        assert again.fitness == row["fitness"]
    # children descend from the folded warm start: its x4 is in their programs
    child = journal.candidates("kind = 'child' AND parent = ?", (warm["id"],))[0]
    assert "4.0" in child["source"]
