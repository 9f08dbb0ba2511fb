"""Funnel selection, meta-validation and ablation, with every fitness fixed by a table so the
decisions can be checked exactly (the training itself is tested elsewhere)."""

from __future__ import annotations

import pytest

from optforge.program import library, parse
from optforge.program.analysis import analyze
from optforge.program.fingerprint import fingerprint
from optforge.search.config import FunnelConfig, SearchConfig
from optforge.search.executors import Evaluation
from optforge.search.funnel import run_funnel
from optforge.search.journal import Journal, baseline_name
from optforge.tasks import registry

SEARCH, STAGE, META = "digits-mlp-test", "digits-mlp-test-b", "mnist5k-mlp-test"
# Lion with a live but useless extra statement, a momentum method, plain SGD
LION_PLUS = (
    library.lion(0.9, 0.99)
    .source()
    .replace("    update = u * lr", "    u = u * 1.5\n    update = u * lr")
)
MOMENTUM = library.momentum(0.9).source()
SGD = library.sgd().source()


class TableExecutor:
    """Fitness by rule: programs using sign() are best, interp() next, the rest poor; tuned
    AdamW gets ``adamw[task]``, the other tuned baselines ``others[task][name]`` (else 0.5).
    Records every job it runs."""

    workers = 1

    def __init__(self, adamw: dict[str, float], others: dict[str, dict[str, float]] | None = None):
        self.adamw, self.jobs = adamw, []
        self.baselines = {t: {"adamw": a, **(others or {}).get(t, {})} for t, a in adamw.items()}
        self.baselines.update({t: v for t, v in (others or {}).items() if t not in adamw})

    def fitness(self, task: str, source: str) -> float:
        tuned = dict(registry.get(task).baselines)
        for name in tuned:
            if source == registry.get(task).baseline(name).source():
                return self.baselines.get(task, {}).get(name, 0.5)
        if "sign(" in source:
            return {SEARCH: 0.95, STAGE: 0.97, META: 0.9}[task]
        if "interp(" in source:
            return {SEARCH: 0.93, STAGE: 0.85, META: 0.8}[task]
        return 0.5

    def run(self, jobs):
        for job in jobs:
            self.jobs.append(job)
            yield job, [Evaluation(self.fitness(job.task, s), None) for s in job.sources]

    def close(self):
        pass


def journal_with(
    tmp_path, fitness: dict[str, float], adamw: float, others: dict[str, float] | None = None
) -> tuple[Journal, SearchConfig]:
    config = SearchConfig(
        task=SEARCH, funnel=FunnelConfig(stages=(STAGE,), meta=(META,), promote=8)
    )
    journal = Journal(tmp_path / "j.db")
    with journal.transaction():
        journal.set_meta("config", config.to_json())
        add = lambda source, **kw: journal.add_candidate(  # noqa: E731
            source=source, structural_hash=analyze(parse(source)).structural_hash,
            fingerprint=fingerprint(parse(source)), statements=len(parse(source)), redundant=0,
            **kw)  # fmt: skip
        adamw_source = registry.get(SEARCH).baseline("adamw").source()
        add(adamw_source, kind="baseline", generation=0, name=baseline_name("adamw", SEARCH),
            status="evaluated", fitness=adamw, job=1)  # fmt: skip
        for i, (name, f) in enumerate((others or {}).items()):
            source = registry.get(SEARCH).baseline(name).source()
            add(source, kind="baseline", generation=0, name=baseline_name(name, SEARCH),
                status="evaluated", fitness=f, job=100 + i)  # fmt: skip
        for i, (source, f) in enumerate(fitness.items()):
            add(source, kind="child", generation=1, status="evaluated", fitness=f, job=2 + i,
                eval_seed=0)  # fmt: skip
    return journal, config


def test_promotion_stages_meta_validation_and_ablation(tmp_path):
    journal, config = journal_with(tmp_path, {LION_PLUS: 0.95, MOMENTUM: 0.93, SGD: 0.5}, 0.92)
    executor = TableExecutor({SEARCH: 0.92, STAGE: 0.9, META: 0.85})
    (finalist,) = run_funnel(journal, executor, config, log=lambda m: None)

    stage_jobs = [j for j in executor.jobs if j.task == STAGE]
    promoted = {s for j in stage_jobs for s in j.sources} - {
        registry.get(STAGE).baseline(name).source() for name in registry.get(STAGE).strongest
    }
    assert promoted == {LION_PLUS, MOMENTUM}  # SGD (0.5) is below tuned AdamW (0.92)
    assert finalist.source == LION_PLUS and not finalist.below  # momentum fails the stage
    assert finalist.stages[STAGE].mean == pytest.approx(0.97)
    # ablation removed statements without losing fitness: still sign-based, shorter
    simplified = parse(finalist.simplified_source)
    assert "sign(" in finalist.simplified_source and len(simplified) < len(parse(LION_PLUS))
    assert "1.5" in LION_PLUS and "1.5" not in finalist.simplified_source
    assert journal.events("ablation")  # removals simplify() alone would not make
    assert finalist.meta[META].mean == pytest.approx(0.9)
    assert finalist.simplified_meta[META].mean == pytest.approx(0.9)
    assert len(finalist.meta[META].values) == 3  # >= 3 meta-validation seeds
    names = {r["name"] for r in journal.candidates("kind = 'baseline'")}
    assert {baseline_name("adamw", META), baseline_name("lion", META)} <= names

    # resuming the funnel trains nothing again and decides the same
    again = TableExecutor(executor.adamw)
    (repeat,) = run_funnel(journal, again, config, log=lambda m: None)
    assert again.jobs == [] and repeat.simplified_source == finalist.simplified_source


def test_when_nothing_beats_adamw_the_best_goes_on_flagged(tmp_path):
    journal, config = journal_with(tmp_path, {MOMENTUM: 0.93, SGD: 0.5}, 0.99)
    executor = TableExecutor({SEARCH: 0.99, STAGE: 0.9, META: 0.85})
    (finalist,) = run_funnel(journal, executor, config, log=lambda m: None)
    assert finalist.source == MOMENTUM and finalist.below


def test_the_bar_is_the_best_of_adamw_lion_and_muon(tmp_path):
    # search task: tuned AdamW 0.90, Lion 0.91, Muon 0.94; momentum (0.93) sits between AdamW
    # and Muon and is not promoted, Lion+ (0.95) is
    journal, config = journal_with(tmp_path, {LION_PLUS: 0.95, MOMENTUM: 0.93}, 0.90,
                                   others={"lion": 0.91, "muon": 0.94})  # fmt: skip
    # the stage: Lion+ scores 0.97, above AdamW (0.9) and Lion (0.92) but below Muon (0.98)
    executor = TableExecutor({SEARCH: 0.90, STAGE: 0.9, META: 0.85},
                             others={STAGE: {"lion": 0.92, "muon": 0.98}})  # fmt: skip
    (finalist,) = run_funnel(journal, executor, config, log=lambda m: None)
    staged = {s for j in executor.jobs if j.task == STAGE for s in j.sources}
    assert LION_PLUS in staged and MOMENTUM not in staged
    assert registry.get(STAGE).baseline("muon").source() in staged  # the stage's bar
    assert finalist.source == LION_PLUS and finalist.below  # went on only as the best
    assert journal.events("stage")[0][1]["passed"] == []

    # with Muon weaker on the stage, Lion+ clears the best of the three
    (tmp_path / "again").mkdir()
    journal, config = journal_with(tmp_path / "again", {LION_PLUS: 0.95}, 0.90,
                                   others={"lion": 0.91, "muon": 0.94})  # fmt: skip
    executor = TableExecutor({SEARCH: 0.90, STAGE: 0.9, META: 0.85},
                             others={STAGE: {"lion": 0.92, "muon": 0.96}})  # fmt: skip
    (finalist,) = run_funnel(journal, executor, config, log=lambda m: None)
    assert not finalist.below
    names = {r["name"] for r in journal.candidates("kind = 'baseline'")}
    assert baseline_name("muon", META) in names  # meta-validation scores Muon beside the others


def test_margin_raises_the_bar(tmp_path):
    journal, config = journal_with(tmp_path, {LION_PLUS: 0.95, MOMENTUM: 0.93}, 0.92)
    import dataclasses

    config = dataclasses.replace(config, funnel=dataclasses.replace(config.funnel, margin=0.02))
    executor = TableExecutor({SEARCH: 0.92, STAGE: 0.9, META: 0.85})
    run_funnel(journal, executor, config, log=lambda m: None)
    staged = {s for j in executor.jobs if j.task == STAGE for s in j.sources}
    assert LION_PLUS in staged and MOMENTUM not in staged  # 0.93 < 0.92 + 0.02


class RisingExecutor(TableExecutor):
    """Dropping the useless ``* 1.5`` helps a lot (0.99); losing ``sign`` or ``lr`` then costs
    0.03: still above the first reference's floor (0.95 - noise), not within the new one's."""

    def fitness(self, task: str, source: str) -> float:
        body = source.split("\n", 1)[-1]  # without the `def train(..., lr)` line
        if task == SEARCH and "sign(" in body and "lr" in body:
            return 0.95 if "1.5" in body else 0.99
        if task == SEARCH:
            return 0.96
        return super().fitness(task, source)


def test_ablation_measures_losses_against_the_best_version_so_far(tmp_path):
    journal, config = journal_with(tmp_path, {LION_PLUS: 0.95}, 0.92)
    executor = RisingExecutor({SEARCH: 0.92, STAGE: 0.9, META: 0.85})
    (finalist,) = run_funnel(journal, executor, config, log=lambda m: None)
    assert "1.5" not in finalist.simplified_source
    # 0.96 < 0.99 - noise: sign and the step size stay
    assert (
        "sign(" in finalist.simplified_source
        and "lr" in finalist.simplified_source.split("\n", 1)[1]
    )


class FragileExecutor(TableExecutor):
    """Programs that lost their momentum (no interp) fail on the meta-validation task."""

    def run(self, jobs):
        for job, evaluations in super().run(jobs):
            if job.task == META:
                evaluations = [
                    e if "interp(" in s else Evaluation(None, "loss diverged at step 3")
                    for s, e in zip(job.sources, evaluations, strict=True)
                ]
            yield job, evaluations


def test_an_ablated_program_that_fails_revalidation_is_not_kept(tmp_path):
    journal, config = journal_with(tmp_path, {LION_PLUS: 0.95}, 0.92)
    executor = FragileExecutor({SEARCH: 0.92, STAGE: 0.9, META: 0.85})
    (finalist,) = run_funnel(journal, executor, config, log=lambda m: None)
    assert journal.events("ablation rejected")
    assert "1.5" in finalist.simplified_source  # only simplify()-ed: same behaviour
    assert finalist.simplified_meta[META].mean == pytest.approx(0.9)
