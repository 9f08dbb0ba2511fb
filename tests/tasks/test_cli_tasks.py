from __future__ import annotations

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
    assert main(["bench", "eval", "--tiers", "test", "--k", "4", "--no-compile"]) == 0
    out = capsys.readouterr().out
    assert "digits-mlp-test" in out and "shakespeare-lm-test" in out and "x" in out


def test_seconds_per_evaluation_is_measured_or_estimated():
    from optforge.bench.evaluation import seconds_per_evaluation
    from optforge.tasks import registry

    seconds, estimated = seconds_per_evaluation(registry.get("digits-mlp-test"), probe_steps=20)
    assert seconds > 0 and estimated  # 60 steps > 2 * 20: timed short, extended
    seconds, estimated = seconds_per_evaluation(registry.get("shakespeare-lm-test"), 20)
    assert seconds > 0 and not estimated
