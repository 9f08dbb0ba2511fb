"""The tuning grid's choice and its edge flags, on synthetic fitness surfaces (the training
itself is tested elsewhere): which setting wins, how far the step-size grid grows past an
edge, and what Muon's settings carry."""

from __future__ import annotations

import math

import pytest

from optforge.program.library import muon
from optforge.program.program import parse
from optforge.tasks import registry, sweep
from optforge.tasks.sweep import Grid, tune
from optforge.tasks.train import Result


def surface(fitness):
    """Patch the sweep so a 'program' is its setting and its fitness is ``fitness(setting,
    seed)`` (None: the run failed)."""

    def evaluate_many(task, candidates, batch=32, progress=None, device="cpu"):
        out = []
        for setting, seed in candidates:
            f = fitness(setting, seed)
            out.append(Result(f, f is None, None if f is not None else "diverged", 0.0, 0.0))
        return out

    return evaluate_many


@pytest.fixture
def synthetic(monkeypatch):
    def install(fitness):
        monkeypatch.setattr(sweep, "baseline_program", lambda name, *setting: setting)
        monkeypatch.setattr(sweep, "evaluate_many", surface(fitness))

    return install


TASK = registry.get("digits-mlp-test")


def peak_at(eta_star, wd_star=0.1):
    """A smooth log-quadratic surface with its optimum at (eta_star, wd_star), plus a small
    seed term."""
    return lambda s, seed: (-(math.log10(s[0] / eta_star)) ** 2
                            - 0.01 * (s[1] - wd_star) ** 2 + 1e-4 * seed)  # fmt: skip


def test_inside_optimum_is_chosen_and_not_flagged(synthetic):
    synthetic(peak_at(0.01))
    grids = {"adamw": Grid((1e-3, 3e-3, 1e-2, 3e-2, 0.1), (0.0, 0.1))}
    (t,) = tune(TASK, ["adamw"], seeds=2, grids=grids, extend=2)
    assert t.best == (1e-2, 0.1) and not t.on_edge
    assert len(t.grid) == 10  # an inside optimum grows nothing
    assert t.held_out.values == pytest.approx([peak_at(0.01)((1e-2, 0.1), 1000 + s)
                                               for s in range(2)])  # fmt: skip


def test_edge_optimum_grows_the_grid_until_it_is_inside(synthetic):
    # optimum at 1.0, two half-decades past the top of the grid: both extensions are needed,
    # the second one from an extended value
    synthetic(peak_at(1.0))
    grids = {"adamw": Grid((1e-3, 1e-2, 0.1), (0.0, 0.1))}
    (t,) = tune(TASK, ["adamw"], seeds=1, grids=grids, extend=3)
    etas = sorted({s[0] for s in t.grid})
    assert t.best[0] == pytest.approx(1.0) and not t.on_edge
    assert etas[-1] == pytest.approx(10**0.5) and len(etas) == 6
    assert {s[1] for s in t.grid if s[0] == etas[-1]} == {0.0, 0.1}  # every decay


def test_an_optimum_past_the_extension_budget_is_flagged(synthetic):
    synthetic(peak_at(1e-5))
    grids = {"lion": Grid((1e-3, 1e-2), (0.0,))}
    (t,) = tune(TASK, ["lion"], seeds=1, grids=grids, extend=1)
    assert t.best[0] == pytest.approx(10**-3.5) and t.on_edge


def test_failed_settings_never_win_and_all_failed_has_no_best(synthetic):
    synthetic(lambda s, seed: None if s[0] > 0.005 or (s[0] == 3e-3 and seed == 1) else s[0])
    grids = {"adamw": Grid((1e-3, 3e-3, 1e-2), (0.0,))}
    (t,) = tune(TASK, ["adamw"], seeds=2, grids=grids)
    assert t.best == (1e-3, 0.0)  # 3e-3 is higher but one seed failed
    synthetic(lambda s, seed: None)
    (t,) = tune(TASK, ["adamw"], seeds=2, grids=grids)
    assert t.best is None and t.held_out is None


def test_muon_settings_carry_the_tasks_tuned_adamw(synthetic):
    synthetic(peak_at(0.1, 0.0))
    grids = {"muon": Grid((0.01, 0.1, 1.0), (0.0, 0.1))}
    (t,) = tune(TASK, ["muon"], seeds=1, grids=grids)
    adam = TASK.adam_part()
    assert adam[:2] == dict(TASK.baselines)[TASK.adamw][:2]
    assert all(s[2:] == adam for s in t.grid)
    assert t.best == (0.1, 0.0, *adam)


def test_muon_baseline_is_library_muon_with_the_adamw_part_at_its_own_step():
    program = registry.baseline_program("muon", 0.02, 0.1, 0.003, 0.01, 0.9, 0.95)
    expected = muon(weight_decay=0.1, adam_lr_ratio=0.003 / 0.02, adam_betas=(0.9, 0.95),
                    adam_weight_decay=0.01)  # fmt: skip
    assert program.statements[0].args == ("lr", 0.02)
    assert program.statements[1:] == parse(expected.source()).statements
    with pytest.raises(ValueError, match="eta=0"):
        registry.baseline_program("muon", 0.0, 0.1, 0.003, 0.0)


def test_muon_needs_a_tuned_adamw():
    bare = registry.Task("bare", "test", "digits", "mlp", (("inputs", 64), ("hidden", 8)), 1, 1, 1)
    with pytest.raises(KeyError, match="no tuned AdamW"):
        bare.adam_part()
