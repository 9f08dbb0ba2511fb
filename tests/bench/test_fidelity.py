"""Fidelity: Spearman rho against scipy, top-10 overlap, and a measurement on a tiny task
where the fitness is the target itself (rho exactly 1), resumed without re-training."""

from __future__ import annotations

import math
import random

import pytest
from scipy.stats import spearmanr

from optforge.bench import fidelity
from optforge.bench.fidelity import Sample, Store, measure, spearman, top_overlap
from optforge.program import library
from optforge.tasks.registry import baseline_program, with_step_size

TASK = "digits-mlp-test"


def test_spearman_matches_scipy_with_ties():
    rng = random.Random(0)
    a = [rng.choice([0.1, 0.2, 0.3, 0.5]) for _ in range(40)]
    b = [x + rng.gauss(0, 0.2) for x in a]
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)


def test_spearman_of_a_copy_is_one_and_of_noise_near_zero():
    rng = random.Random(1)
    target = [rng.random() for _ in range(400)]
    assert spearman(target, target) == pytest.approx(1.0)
    assert spearman(target, [-t for t in target]) == pytest.approx(-1.0)
    noise = [rng.random() for _ in target]
    assert abs(spearman(noise, target)) < 0.15  # 3 sigma of rho under independence at n=400


def test_failures_rank_last_together():
    assert spearman([None, 1.0, 2.0], [0.0, 1.0, 2.0]) == pytest.approx(1.0)
    assert math.isnan(spearman([1.0, 1.0], [0.0, 1.0]))


def test_top_overlap():
    a = [9, 8, 7, 1, 2, 3]
    b = [1, 2, 3, 9, 8, 7]
    assert top_overlap(a, b, 3) == 0.0
    assert top_overlap(a, a, 3) == 1.0
    assert top_overlap(a, [9, 1, 7, 8, 2, 3], 3) == pytest.approx(2 / 3)


def samples() -> list[Sample]:
    return [
        Sample("sgd", baseline_program("sgd", 0.3)),
        Sample("sgd small", baseline_program("sgd", 0.01)),
        Sample("adamw", baseline_program("adamw", 1e-2)),
        Sample("torch adamw", baseline_program("torch_adamw", 3e-3)),
        Sample("lion", baseline_program("lion", 3e-3)),
        Sample("signum", with_step_size(library.signum(0.9), 1e-3)),
        Sample("warm start", library.paper_warm_start()),
    ]


def test_a_fitness_that_is_the_target_itself_has_rho_one_and_resumes(tmp_path, monkeypatch):
    definitions = [TASK, f"{TASK};mult=1/3,1,3"]
    store = Store(tmp_path / "fidelity.db")
    rows = measure(samples(), definitions, [TASK], store, target_seeds=(0,), batch=4)
    # the target at seed 0 is the fitness (seed 0); with multipliers, the target is taken at
    # the folded multiplier, so it is again exactly the fitness
    for row in rows:
        assert row.rho[TASK] == pytest.approx(1.0)
        assert row.top10[TASK] == 1.0
        assert row.fitness == row.targets[TASK]
    assert rows[1].fitness[1] > rows[0].fitness[1]  # too small a step: x3 rescues it

    def boom(*args, **kwargs):
        raise AssertionError("a stored result was trained again")

    monkeypatch.setattr(fidelity, "evaluate", boom)
    monkeypatch.setattr(fidelity, "score", boom)
    again = measure(samples(), definitions, [TASK], Store(tmp_path / "fidelity.db"),
                    target_seeds=(0,), batch=4)  # fmt: skip
    assert [r.fitness for r in again] == [r.fitness for r in rows]


def test_sample_files_round_trip(tmp_path):
    path = tmp_path / "sample.txt"
    fidelity.write_sample(path, samples(), header="a header\nof two lines")
    back = fidelity.read_sample(path)
    assert [(s.name, s.optimizer) for s in back] == [(s.name, s.optimizer) for s in samples()]


def test_a_duplicate_or_empty_entry_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.txt"
    fidelity.write_sample(path, samples()[:1] * 2)
    with pytest.raises(ValueError, match="appears twice"):
        fidelity.read_sample(path)
    path.write_text("## nothing here\n\n## sgd\n" + baseline_program("sgd", 1.0).source())
    with pytest.raises(ValueError, match="has no program"):
        fidelity.read_sample(path)


def test_the_muon_family_in_the_sample_is_valid_distinct_and_kept(tmp_path):
    from optforge.bench import sample
    from optforge.program.analysis import analyze
    from optforge.program.fingerprint import behaviour
    from optforge.search.report import family

    rows = sample.muon_family()
    for name, program in rows:
        assert analyze(program).valid, name
        assert behaviour(program)[1], name  # finite on the fingerprint inputs
    behaviours = {behaviour(p)[0] for _, p in rows}
    assert len(behaviours) == len(rows)  # nine different updates, not renamings
    families = {family(p.source()) for _, p in rows}
    assert families == {"orthogonalized", "hybrid"}
    # an earlier sample is kept in order, and only what it lacks is added
    old = samples()
    built = sample.build([], 1, keep=old)
    assert built[: len(old)] == old
    assert {s.name for s in built} >= {name for name, _ in rows}
    assert len({s.key for s in built}) == len(built)


def test_a_prior_run_spares_its_programs_and_gives_the_same_rows(tmp_path, monkeypatch):
    definitions = [TASK, f"{TASK};mult=1/3,1,3"]
    old, new = samples()[:5], samples()
    first = measure(old, definitions, [TASK, "mnist5k-mlp-test"], Store(tmp_path / "a.db"),
                    target_seeds=(0, 1), batch=8)  # fmt: skip
    (tmp_path / "prior.json").write_text(fidelity.to_json(first, old))
    prior = fidelity.Prior.load(tmp_path / "prior.json")
    full = measure(new, definitions, [TASK, "mnist5k-mlp-test"], Store(tmp_path / "b.db"),
                   target_seeds=(0, 1), batch=8)  # fmt: skip

    trained = []

    def recording(real):
        def run(what, programs, seeds):
            trained.extend(programs)
            return real(what, programs, seeds)

        return run

    monkeypatch.setattr(fidelity, "score", recording(fidelity.score))
    monkeypatch.setattr(fidelity, "evaluate", recording(fidelity.evaluate))
    grown = measure(new, definitions, [TASK, "mnist5k-mlp-test"], Store(tmp_path / "c.db"),
                    target_seeds=(0, 1), batch=8, prior=prior)  # fmt: skip
    # only the two programs the prior lacks were trained (at x1 and at folded multipliers)
    sources = {p.source() for p in trained}
    assert not sources & {s.optimizer.source() for s in old}
    assert [(g.fitness, g.targets, g.rho) for g in grown] == [(f.fitness, f.targets, f.rho)
                                                              for f in full]  # fmt: skip
    assert fidelity.agreement(grown, new, prior, [s.name for s in old]) == 0.0
    # a prior that disagrees is caught
    shifted = fidelity.Prior({k: (v[0] + 0.5, v[1]) for k, v in prior.values.items()},
                             prior.seconds)  # fmt: skip
    assert fidelity.agreement(grown, new, shifted, ["sgd"]) == pytest.approx(0.5)
