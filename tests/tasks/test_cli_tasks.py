from __future__ import annotations

import pytest

from optforge.cli import main


def test_tasks_lists_every_tier(capsys):
    assert main(["tasks", "--markdown"]) == 0
    out = capsys.readouterr().out
    for name in ["fmnist-vit-a", "shakespeare-lm-a", "fmnist-vit-b", "fmnist-vit-c",
                 "kjv-lm-meta", "mnist5k-vit-meta", "digits-mlp-test"]:  # fmt: skip
        assert f"| {name} |" in out


def test_eval_reports_mean_and_std(capsys):
    assert main(["eval", "baseline:adamw", "--task", "digits-mlp-test", "--seeds", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("seed ") == 3
    assert "digits-mlp-test validation accuracy: 0.9" in out and "±" in out


def test_eval_of_a_diverging_program_fails_cleanly(capsys):
    # lion as written steps by the schedule multiplier itself: far too large for this task
    assert main(["eval", "lion", "--task", "digits-mlp-test", "--seeds", "2"]) == 1
    assert "failed: loss diverged" in capsys.readouterr().out


def test_unknown_task_or_baseline_is_explained(capsys):
    assert main(["eval", "lion", "--task", "nope"]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().out
    assert main(["eval", "baseline:adagrad", "--task", "digits-mlp-test"]) == 2
    assert "has no tuned baseline 'adagrad'" in capsys.readouterr().out


def test_tune_prints_grid_and_held_out_table(capsys):
    assert main(["tune", "--task", "digits-mlp-test", "--optimizers", "sgd,adamw",
                 "--seeds", "2", "--markdown"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "| adamw | 0.01 | 0 |" in out and "best" in out
    assert "re-measured on fresh seeds 1000-1001" in out
    assert main(["tune", "--task", "digits-mlp-test", "--optimizers", "adagrad"]) == 2


def test_bench_eval_measures_single_and_batched(capsys):
    assert main(["bench", "eval", "--tasks", "digits-mlp-test,shakespeare-lm-test", "--k", "4",
                 "--no-compile", "--rounds", "2", "--programs", "adamw,muon",
                 "--markdown"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "medians of 2 rounds" in out
    rows = {(cells[1].strip(), cells[3].strip()): cells
            for cells in (line.split("|") for line in out.splitlines()
                          if line.startswith("| ") and "-test" in line)}  # fmt: skip
    assert set(rows) == {(t, f) for t in ("digits-mlp-test", "shakespeare-lm-test")
                         for f in ("adamw", "muon")}  # fmt: skip
    for (task, family), cells in rows.items():
        single, batched, best = float(cells[6]), float(cells[7]), float(cells[10].strip()[:-1])
        # the ratio of the columns, each rounded for print (3% covers a small single rate)
        assert best == pytest.approx(batched / single, rel=0.03, abs=0.06)
        low, high = (float(v) for v in cells[11].strip()[:-1].split("-"))
        assert low <= high
        if family == "muon":  # its batched rate over AdamW's, as the two columns say
            adamw = float(rows[(task, "adamw")][7])
            assert float(cells[12]) == pytest.approx(batched / adamw, rel=0.05, abs=0.01)


def test_bench_eval_profile_splits_a_step_into_parts(capsys):
    args = ["bench", "eval", "--tiers", "test", "--k", "4", "--no-compile", "--profile",
            "--markdown"]  # fmt: skip
    assert main(args) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| digits-mlp-test |")]  # fmt: skip
    assert [r[1].strip() for r in rows] == ["1 adamw", "4 adamw"]
    for row in rows:
        data, fwd, bwd, updates, matmuls, step, per = (float(c) for c in row[3:10])
        assert min(data, fwd, bwd, updates, matmuls) >= 0 and matmuls > 0
        assert step == pytest.approx(data + fwd + bwd + updates, abs=0.02)
        k = int(row[1].split()[0])
        assert per == pytest.approx(step / k, abs=0.006)  # step shows 2 decimals


def test_throughput_reports_medians_and_per_round_spread():
    from optforge.bench.evaluation import Throughput

    m = Throughput("t", "A", 10, 4, single=(1.0, 3.0, 2.0), batched=(0.5, 0.5, 0.4),
                   compiled=(0.25, 1.0, 0.5), compile_s=5.0)  # fmt: skip
    assert m.single_s == 2.0 and m.batched_evals_per_s == 2.0 and m.compiled_evals_per_s == 2.0
    assert m.speedup == pytest.approx(4.0)  # best median batched (2/s) over median single (0.5/s)
    # per round: best of eager and compiled in that round against that round's single
    assert m.speedup_range == pytest.approx((4.0, 6.0))  # 1/0.25, 3/0.5, 2/0.4
    eager_only = Throughput("t", "A", 10, 4, (1.0,), (0.5,), (), None)
    assert eager_only.compiled_evals_per_s is None and eager_only.speedup_range == (2.0, 2.0)


def test_seconds_per_evaluation_is_measured_or_estimated():
    from optforge.bench.evaluation import seconds_per_evaluation
    from optforge.tasks import registry

    seconds, estimated = seconds_per_evaluation(registry.get("digits-mlp-test"), probe_steps=20)
    assert seconds > 0 and estimated  # 60 steps > 2 * 20: timed short, extended
    seconds, estimated = seconds_per_evaluation(registry.get("shakespeare-lm-test"), 20)
    assert seconds > 0 and not estimated
