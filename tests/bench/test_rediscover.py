"""`optforge bench rediscover`: the fitness is a scale-free match to the target, a search
finds a target one mutation away, both algorithms give well-formed rows, bad input is named."""

from __future__ import annotations

import json
import math

import pytest

from optforge.bench import rediscover as rd
from optforge.cli import main
from optforge.program import analyze, fingerprint, library, parse
from optforge.program.program import Program, Statement


def _text(*body: str) -> Program:
    return rd._program(*body)


def _scaled(program: Program, factor: float) -> Program:
    """The program with its update multiplied by a constant at the end."""
    extra = Statement("update", "mul", ("update", factor))
    return Program((*program.statements, extra), program.returns)


@pytest.mark.parametrize("name", list(rd.TARGETS))
def test_fitness_is_one_for_the_target_and_its_positive_multiples(name):
    target = rd.TARGETS[name].program
    score = rd.Scorer(target, seed=0)
    assert score(target) == pytest.approx(1.0, abs=1e-12)
    assert score(_scaled(target, 37.5)) == pytest.approx(1.0, abs=1e-12)
    assert score(_scaled(target, -2.0)) == 0.0  # the opposite direction is the worst
    assert rd.error(_scaled(target, 0.02), target) < 1e-6


def test_fitness_is_lower_for_another_family_and_fails_on_nan():
    signum, lion = rd.TARGETS["signum"].program, rd.TARGETS["lion"].program
    score = rd.Scorer(signum, seed=0)
    assert score(lion) < 0.9
    assert rd.error(lion, signum) > 100 * rd.TOLERANCE  # the nearest family is no solution
    # the warm start lies in between: not the target, closer than random noise
    assert 0.5 < score(library.paper_warm_start()) < 0.99
    broken = _text("v1 = interp(g, v1, 0.9)", "n = log(g)", "update = v1 * n")  # log(g < 0)
    assert score(broken) is None


def test_tolerance_separates_weight_decay_within_one_percent_from_five():
    """The stated tolerance: decay 0.0101 passes, 0.0105 fails, a rewrite passes."""
    signum = rd.TARGETS["signum"].program

    def variant(wd: str, sign: str = "update = sign(v1)") -> Program:
        return _text("v1 = interp(g, v1, 0.9)", sign, f"d = w * {wd}", "update = update + d",
                     "update = update * lr")  # fmt: skip

    assert rd.error(variant("0.0101"), signum) < rd.TOLERANCE
    assert rd.error(variant("0.0105"), signum) > rd.TOLERANCE
    rewrite = _text("v1 = interp(g, v1, 0.9)", "a = abs(v1)", "update = v1 / a",
                    "d = w * 0.01", "update = update + d", "update = update * lr")  # fmt: skip
    assert rd.error(rewrite, signum) < 1e-9


def _one_edit(a: Program, b: Program) -> bool:
    """b is a with one statement inserted or deleted, or one argument of one changed."""
    x, y = a.statements, b.statements
    if abs(len(x) - len(y)) == 1:
        short, long = (x, y) if len(x) < len(y) else (y, x)
        return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))
    if len(x) != len(y):
        return False
    diffs = [(s, t) for s, t in zip(x, y, strict=True) if s != t]
    if len(diffs) != 1:
        return False
    s, t = diffs[0]
    return (s.target, s.op) == (t.target, t.op) and sum(
        p != q for p, q in zip(s.args, t.args, strict=True)
    ) == 1


WARM = [
    "g2 = square(g)", "v1 = interp(g, v1, 0.9)", "v2 = interp(g2, v2, 0.999)", "s = sqrt(v2)",
    "update = v1 / s", "d = w * 0.01", "update = update + d", "lr = lr * 0.001",
    "update = update * lr",
]  # fmt: skip


def _insert(body: list[str], i: int, line: str) -> list[str]:
    return [*body[:i], line, *body[i:]]


def _paths() -> dict[str, list[list[str]]]:
    """For each target, the programs along a path of single mutations from the warm start,
    each changing the behaviour (``mutate`` redraws a child whose live structure is its
    parent's, so a new name must be read in the step that defines it)."""
    signum = _insert(WARM, 5, "update = sign(v1)")
    lion_1 = [s.replace("interp(g, v1, 0.9)", "interp(g, v2, 0.9)") for s in signum]
    lion = [s.replace("interp(g2, v2", "interp(g, v2") for s in lion_1]
    muon_1 = _insert(WARM, 5, "update = interp(update, s, hidden)")
    muon_2 = _insert(muon_1, 5, "s = orthogonalize(v1)")
    muon = _insert(muon_2, 6, "s = s * aspect")
    adam = [WARM]
    for i, line in [(5, "update = update * s"), (5, "s = power(0.999, step)"),
                    (6, "s = invert(s)"), (7, "s = sqrt(s)"), (9, "update = update / s"),
                    (9, "s = power(0.9, step)"), (10, "s = invert(s)")]:  # fmt: skip
        adam.append(_insert(adam[-1], i, line))
    return {"signum": [WARM, signum], "lion": [WARM, signum, lion_1, lion],
            "muon": [WARM, muon_1, muon_2, muon], "adam": adam}  # fmt: skip


@pytest.mark.parametrize("name", list(rd.TARGETS))
def test_each_target_is_its_stated_number_of_mutations_from_the_warm_start(name):
    path = [_text(*body) for body in _paths()[name]]
    assert path[0] == library.paper_warm_start()
    steps = list(zip(path, path[1:], strict=False))
    assert all(_one_edit(a, b) for a, b in steps)
    assert all(analyze(a).structural_hash != analyze(b).structural_hash for a, b in steps)
    assert all(fingerprint(a) != fingerprint(b) for a, b in steps)
    assert len(path) - 1 == rd.TARGETS[name].distance
    assert rd.error(path[-1], rd.TARGETS[name].program) < 1e-6
    assert all(rd.error(p, rd.TARGETS[name].program) > rd.TOLERANCE for p in path[:-1])


def test_evolution_finds_a_target_one_deletion_away():
    """Start = the signum target with one statement too many; the search must delete it."""
    target = rd.TARGETS["signum"].program
    body = [s.source() for s in target.statements]
    start = _text(*body[:2], "update = square(update)", *body[2:])
    assert rd.error(start, target) > rd.TOLERANCE
    row = rd.rediscover("signum", "evolution", seed=0, budget=300, start=start)
    assert row.solved and 1 <= row.candidates < 300
    assert rd.error(parse(row.best_program), target) < rd.TOLERANCE
    assert row.best_fitness > 1 - rd.TOLERANCE**2


@pytest.mark.parametrize("algorithm", rd.ALGORITHMS)
def test_both_algorithms_return_well_formed_rows(algorithm):
    seen = []
    row = rd.rediscover("lion", algorithm, seed=1, budget=60,
                        progress=lambda n, best: seen.append(n))  # fmt: skip
    assert (row.target, row.algorithm, row.seed, row.budget) == ("lion", algorithm, 1, 60)
    assert row.solved is False and row.candidates == 60
    assert 0.0 <= row.best_fitness <= 1.0 and row.best_error > rd.TOLERANCE
    assert 1 <= row.evaluated <= 61  # the cache: at most one score per candidate
    assert seen == [50]
    best = parse(row.best_program)  # the simplified best scores its recorded fitness
    assert rd.Scorer(rd.TARGETS["lion"].program, 1)(best) == pytest.approx(row.best_fitness)
    if algorithm == "evolution":  # it starts at the warm start and keeps its best
        warm = rd.Scorer(rd.TARGETS["lion"].program, 1)(library.paper_warm_start())
        assert row.best_fitness >= warm
    rows = rd.from_json(json.loads(json.dumps(rd.to_json([row, row]))))
    assert rows == [row, row]
    table = rd.table_rows(rows)
    assert len(table) == 1 and len(table[0]) == len(rd.COLUMNS)
    assert table[0][3] == "0/2" and table[0][4] == "-"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_name": "adamw"}, "unknown target 'adamw'; choose from signum, lion"),
        ({"algorithm": "annealing"}, "unknown algorithm 'annealing'; choose from evolution"),
        ({"budget": 0}, "budget must be at least 1, got 0"),
    ],
)
def test_bad_input_names_the_value_and_the_choices(kwargs, message):
    args = {"target_name": "signum", "algorithm": "evolution", "seed": 0, "budget": 5, **kwargs}
    with pytest.raises(ValueError, match=message):
        rd.rediscover(**args)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--targets", "signum,adamw"], "--targets: unknown adamw; choose from signum, lion"),
        (["--algorithms", "hill"], "--algorithms: unknown hill; choose from evolution, random"),
        (["--budget", "0"], "--budget: 0 is not a budget"),
    ],
)
def test_cli_bad_input_is_named(argv, message, capsys):
    assert main(["bench", "rediscover", *argv]) == 2
    assert message in " ".join(capsys.readouterr().out.split())


def test_cli_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "rows.json"
    argv = ["bench", "rediscover", "--targets", "signum", "--algorithms", "random",
            "--seeds", "2", "--budget", "5", "--markdown", "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "| signum | 1 | random | 0/2 |" in text
    rows = json.loads(out.read_text())
    assert [(r["target"], r["seed"], r["candidates"]) for r in rows] == [
        ("signum", 0, 5),
        ("signum", 1, 5),
    ]
    assert all(math.isfinite(r["best_fitness"]) for r in rows)
