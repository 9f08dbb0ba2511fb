"""The batched evaluator: equal to one-at-a-time, failures contained, deterministic."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch._dynamo.utils import counters

from optforge.program import parse
from optforge.program.layout import Segments
from optforge.tasks import registry
from optforge.tasks.registry import baseline_program, with_step_size
from optforge.tasks.train import _finite_rows, _Updater, evaluate, schedule

MLP_TASK = registry.get("digits-mlp-test")
LM_TASK = registry.get("shakespeare-lm-test")

NAN = parse("def train(w, g, v1, v2, lr):\n    u = log(w)\n    update = u * lr\n"
            "    return update, v1, v2")  # fmt: skip
GLOBAL_TEXT = ("def train(w, g, v1, v2, lr):\n    n = global_norm(g)\n    u = g / n\n"
               "    update = u * lr\n    return update, v1, v2")  # fmt: skip
GLOBAL = with_step_size(parse(GLOBAL_TEXT), 0.1)


# keeps the previous weights in v1 (heavy ball written with w_t - w_{t-1}): a state that is
# an input (``v1 = w``) must hold w before the update, whatever rows the program trains
PREVIOUS = with_step_size(parse(
    "def train(w, g, v1, v2, lr):\n    d = w - v1\n    h = d * 0.5\n    u = g * lr\n"
    "    update = u - h\n    v1 = w\n    return update, v1, v2"), 0.1)  # fmt: skip


def programs():
    return [baseline_program("adamw", 1e-2), baseline_program("lion", 3e-3, 0.1), GLOBAL,
            baseline_program("adamw", 1e-2), baseline_program("momentum", 0.05), PREVIOUS,
            baseline_program("sgd", 0.1), PREVIOUS, PREVIOUS]  # fmt: skip


@pytest.mark.parametrize("task", [MLP_TASK, LM_TASK], ids=lambda t: t.name)
def test_batched_evaluation_equals_one_at_a_time(task):
    progs, seeds = programs(), [0, 0, 1, 2, 3, 4, 5, 6, 7]
    together = evaluate(task, progs, seeds)
    for program, seed, result in zip(progs, seeds, together, strict=True):
        (alone,) = evaluate(task, [program], [seed])
        assert not result.failed
        assert result.fitness == pytest.approx(alone.fitness, abs=1e-6)
        assert result.final_loss == pytest.approx(alone.final_loss, rel=1e-5)


# matrix programs: Muon as users run it, a row-normalized momentum, and NorMuon-like scaling
ROW_NORMALIZED = with_step_size(parse(
    "def train(w, g, v1, v2, lr):\n    v1 = interp(g, v1, 0.9)\n    r = row_rms(v1)\n"
    "    r = r + eps\n    u = v1 / r\n    c = col_mean(u)\n    u = u - c\n"
    "    update = u * lr\n    return update, v1, v2"), 0.01)  # fmt: skip


def matrix_programs():
    from optforge.program import library

    muon = with_step_size(library.muon(weight_decay=0.0, adam_lr_ratio=0.2), 0.02)
    return [muon, ROW_NORMALIZED, baseline_program("adamw", 1e-2), muon,
            with_step_size(library.muon(nesterov=False), 0.01), ROW_NORMALIZED]  # fmt: skip


@pytest.mark.parametrize("task", [MLP_TASK, LM_TASK], ids=lambda t: t.name)
def test_batched_matrix_programs_equal_one_at_a_time(task):
    """Orthogonalization batches every candidate's matrices of one shape together; a row's
    result must still be its own alone."""
    progs, seeds = matrix_programs(), [0, 1, 1, 2, 3, 0]
    together = evaluate(task, progs, seeds)
    for program, seed, result in zip(progs, seeds, together, strict=True):
        (alone,) = evaluate(task, [program], [seed])
        assert not result.failed, result.reason
        assert result.fitness == pytest.approx(alone.fitness, abs=1e-6)
        assert result.final_loss == pytest.approx(alone.final_loss, rel=1e-5)


def test_distinct_programs_share_one_newton_schulz_chain_per_shape(monkeypatch):
    """K candidates with K different programs: each training step orthogonalizes all their
    matrices of one shape in one batched call, not one call per candidate."""
    from optforge.program import layout, library
    from optforge.tasks.train import Batch

    calls = []
    original = layout.newton_schulz
    monkeypatch.setattr(layout, "newton_schulz",
                        lambda x, *a: calls.append(tuple(x.shape)) or original(x, *a))  # fmt: skip
    k = 5
    programs = [with_step_size(library.muon(momentum=0.9 + i / 100), 0.02) for i in range(k)]
    batch = Batch(MLP_TASK, programs, list(range(k)), compiled=False)
    x, y = batch.data(0)
    grad = batch.gradient(batch.loss(x, y), torch.ones(k, dtype=torch.bool))
    batch.update(grad, [True] * k, 1.0)
    matrices = [s.shape for s in MLP_TASK.model().specs if len(s.shape) == 2]
    assert sorted(calls) == sorted((k, *m) for m in matrices)


def test_the_tasks_label_hidden_matrices_and_their_shape_factor():
    model = LM_TASK.model()
    seg = model.layout(2)
    hidden = {s.name for s, h in zip(model.specs, seg.hidden, strict=False) if h}
    assert hidden == {s.name for s in model.specs
                      if s.name.split(".")[-2:-1][0:1] in (["qkv"], ["out"], ["fc1"], ["fc2"])
                      and s.name.endswith(".w")}  # fmt: skip
    assert seg.hidden == seg.hidden[: len(model.specs)] * 2  # every copy labelled alike
    for spec, aspect in zip(model.specs, seg.aspect, strict=False):
        fan_in, fan_out = (spec.shape + (1,))[:2] if len(spec.shape) == 2 else (1, 1)
        assert aspect == pytest.approx(max(1.0, fan_out / fan_in) ** 0.5)  # stored [in, out]


def test_a_state_copied_from_the_weights_holds_them_before_the_update():
    """Reference: the program's outputs are computed from the step's inputs, then applied."""
    w0 = torch.randn(3, 4)
    for rows in ([0, 1], [0, 2], [1]):  # a contiguous run, scattered rows, one row
        theta, grad = w0.clone(), torch.randn(3, 4)
        v1, v2 = torch.randn(3, 4), torch.zeros(3, 4)
        old_v1 = v1.clone()
        layout = lambda copies, device: Segments([4] * copies, device)  # noqa: E731
        _Updater(PREVIOUS, rows, layout, theta, v1, v2).step([True] * 3, grad, torch.tensor(1.0))
        expected = w0 - (grad * 0.1 - (w0 - old_v1) * 0.5)
        assert torch.allclose(theta[rows], expected[rows], atol=1e-6)
        assert torch.equal(v1[rows], w0[rows])


def test_finite_rows_agrees_with_isfinite():
    theta = torch.randn(6, 1000)
    theta[1, 500], theta[2, 3], theta[3, 999] = float("nan"), float("inf"), float("-inf")
    theta[4, 7] = 3e38  # huge but finite
    theta[5, 0], theta[5, 1] = float("inf"), float("-inf")
    assert torch.equal(_finite_rows(theta), torch.isfinite(theta).all(dim=1))
    assert _finite_rows(theta).tolist() == [True, False, False, False, True, False]


def test_same_seed_same_fitness_and_seeds_differ():
    a = evaluate(MLP_TASK, [baseline_program("adamw", 1e-2)] * 3, [7, 7, 8])
    assert a[0].fitness == a[1].fitness
    assert a[0].final_loss != a[2].final_loss


def test_failures_are_scored_with_reasons_and_contained():
    healthy = baseline_program("adamw", 1e-2)
    exploding = baseline_program("sgd", 1e4)
    results = evaluate(MLP_TASK, [NAN, healthy, exploding], [0, 1, 2])
    assert results[0].failed and "not finite" in results[0].reason
    assert results[2].failed and (
        "diverged" in results[2].reason or "not finite" in results[2].reason
    )
    assert results[0].fitness is None and results[2].fitness is None
    (alone,) = evaluate(MLP_TASK, [healthy], [1])
    assert not results[1].failed and results[1].fitness == pytest.approx(alone.fitness, abs=1e-6)


def test_time_limit_stops_an_evaluation():
    slow = dataclasses.replace(MLP_TASK, steps=100_000)
    (result,) = evaluate(slow, [baseline_program("adamw", 1e-2)], [0], time_limit=0.5)
    assert result.failed and "time limit" in result.reason


def test_learning_works_on_the_test_tasks():
    (mlp,) = evaluate(MLP_TASK, [baseline_program("adamw", 1e-2)], [0])
    assert mlp.fitness > 0.8  # 10 classes: chance is 0.1
    (lm,) = evaluate(LM_TASK, [baseline_program("adamw", 1e-2)], [0])
    assert lm.fitness > -3.6  # uniform over the vocabulary would be -ln(84) = -4.43


def test_schedule_warms_up_then_decays_to_zero():
    s = schedule(100, 0.1)
    assert s[9] == 1.0 and s[0] == pytest.approx(0.1)
    assert s[10] == pytest.approx(1.0) and s[-1] < 0.001
    assert all(a >= b for a, b in zip(s[10:], s[11:], strict=False))


def test_mismatched_arguments_are_refused():
    with pytest.raises(ValueError, match="2 programs but 1 seeds"):
        evaluate(MLP_TASK, [NAN, NAN], [0])


def test_compiled_forward_agrees_with_eager():
    """torch.compile'd training gives eager's results up to float rounding; failures too."""
    task = dataclasses.replace(LM_TASK, steps=20)
    progs, seeds = [*programs()[:2], NAN], [0, 1, 2]
    eager = evaluate(task, progs, seeds)
    fast = evaluate(task, progs, seeds, compiled=True)
    for a, b in zip(eager, fast, strict=True):
        assert a.failed == b.failed and a.reason == b.reason
        if not a.failed:
            assert a.final_loss == pytest.approx(b.final_loss, rel=1e-4)
            assert a.fitness == pytest.approx(b.fitness, rel=1e-4)
    # another number of candidates reuses the compiled code: K is left symbolic
    graphs = counters["stats"]["unique_graphs"]
    fewer = evaluate(task, progs[:2], seeds[:2], compiled=True)
    assert counters["stats"]["unique_graphs"] == graphs
    for a, b in zip(fewer, fast, strict=False):
        assert a.fitness == pytest.approx(b.fitness, rel=1e-6)
    # one candidate runs eager rather than compiling a graph of its own
    (one,) = evaluate(task, progs[:1], seeds[:1], compiled=True)
    (one_eager,) = evaluate(task, progs[:1], seeds[:1])
    assert (one.fitness, one.final_loss) == (one_eager.fitness, one_eager.final_loss)
    assert counters["stats"]["unique_graphs"] == graphs
