"""User tasks: an nn.Module batched by torch.func, checked against the hand-batched model, with
the registry tasks' guarantees (a candidate's fitness does not depend on its batch; same seed,
same fitness), end to end through the CLI, and with clear errors."""

from __future__ import annotations

import pytest
import torch

from optforge.cli import main
from optforge.tasks import registry, train
from optforge.tasks.models import MLP
from optforge.tasks.registry import baseline_program
from optforge.tasks.user import UserTask, as_task
from tests.tasks import user_fixture

TINY = "tests.tasks.user_fixture:tiny"


def test_module_model_matches_the_hand_batched_model():
    """Same theta, same data: the vmap'd module and models.MLP give the same outputs and the
    same gradients for every candidate."""
    task = registry.get(TINY)
    ours, hand = task.model(), MLP(inputs=64, hidden=32)
    assert [s.shape for s in ours.specs] == [s.shape for s in hand.specs]
    theta = hand.init([0, 1, 2]).requires_grad_(True)
    x, y = task.batches([0, 1, 2])(0)
    out_ours = ours.forward(ours.views(theta), x)
    out_hand = hand.forward(hand.views(theta), x)
    torch.testing.assert_close(out_ours, out_hand, rtol=1e-5, atol=1e-6)
    (g_ours,) = torch.autograd.grad(task.loss(out_ours, y).sum(), theta)
    (g_hand,) = torch.autograd.grad(registry.cross_entropy(out_hand, y).sum(), theta)
    torch.testing.assert_close(g_ours, g_hand, rtol=1e-4, atol=1e-6)


def test_init_is_the_modules_own_under_each_seed():
    task = registry.get(TINY)
    theta = task.model().init([5, 6])
    torch.manual_seed(5)
    module = user_fixture.HandShapedMLP()
    expected = torch.cat([p.detach().reshape(-1) for p in module.parameters()])
    assert torch.equal(theta[0], expected)
    assert not torch.equal(theta[0], theta[1])


def test_fitness_does_not_depend_on_the_batch_and_repeats():
    task = registry.get(TINY)
    programs = [baseline_program("adamw", 0.01), baseline_program("lion", 0.003),
                baseline_program("sgd", 0.3)]  # fmt: skip
    together = train.evaluate(task, programs, [0, 1, 2])
    alone = [train.evaluate(task, [p], [s])[0] for p, s in zip(programs, [0, 1, 2], strict=True)]
    again = train.evaluate(task, programs, [0, 1, 2])
    assert [r.fitness for r in together] == [r.fitness for r in alone]
    assert [r.fitness for r in together] == [r.fitness for r in again]
    assert max(r.fitness for r in together) > 0.3  # it learns (chance: 0.1)


def test_python_api_registers_a_task():
    spec = user_fixture.tiny()
    name = registry.register(as_task(spec, "my-digits"))
    assert registry.get(name).model().num_params == 64 * 32 + 32 + 32 * 10 + 10
    with pytest.raises(ValueError, match="taken by a built-in task"):
        registry.register(as_task(spec, "fmnist-vit-a"))


def test_cli_eval_and_search_run_a_user_task(tmp_path, capsys):
    assert main(["eval", "baseline:lion", "--task", TINY, "--seeds", "2"]) == 0
    journal = tmp_path / "user.db"
    assert main(["search", "--task", TINY, "--budget", "12", "--no-funnel", "--seed", "0",
                 "--journal", str(journal)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "12 candidates" in out
    assert main(["search", "--resume", str(journal), "--budget", "16", "--no-funnel"]) == 0


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("no_such_module_xyz:task", "cannot import 'no_such_module_xyz'"),
        ("tests.tasks.user_fixture:missing", "has no callable 'missing'"),
        ("tests.tasks.user_fixture:not_a_task", "returned int, not a UserTask"),
        ("nonsense", "unknown task 'nonsense'"),
    ],
)
def test_bad_references_are_named(reference, message):
    with pytest.raises(KeyError, match=message):
        registry.get(reference)


def test_random_layers_and_batchnorm_are_refused_clearly():
    dropout = registry.get("tests.tasks.user_fixture:with_dropout")
    with pytest.raises(RuntimeError, match="draws random numbers while training"):
        train.evaluate(dropout, [baseline_program("sgd", 0.1)], [0])
    batchnorm = registry.get("tests.tasks.user_fixture:with_batchnorm")
    with pytest.raises(ValueError, match="tracks running statistics"):
        batchnorm.model()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [(dict(steps=0), "steps must be an int >= 1"), (dict(warmup=1.5), "warmup must be in"),
     (dict(metric="f1"), "metric 'f1' is not known"),
     (dict(val=(torch.zeros(3, 64),)), "val must be \\(inputs, targets\\)")],
)  # fmt: skip
def test_bad_user_task_fields_are_named(kwargs, message):
    spec = user_fixture.tiny()
    fields = dict(name="t", model=spec.model, train=spec.train, val=spec.val) | kwargs
    with pytest.raises((ValueError, TypeError), match=message):
        UserTask(**fields)


def test_a_user_models_tensors_are_labelled_by_the_hidden_rule():
    """Hidden: Linear/Conv weights but the head; aspect from torch's [out, in] layout."""
    from optforge.tasks.user import ModuleModel

    def factory():
        return torch.nn.Sequential(
            torch.nn.Conv1d(2, 4, 3), torch.nn.Flatten(), torch.nn.Linear(8, 24),
            torch.nn.GELU(), torch.nn.Linear(24, 3),
        )  # fmt: skip

    model = ModuleModel(factory)
    seg = model.layout(copies=2)
    labelled = dict(zip(model.names, seg.hidden, strict=False))
    assert labelled == {"0.weight": 1.0, "0.bias": 0.0, "2.weight": 1.0, "2.bias": 0.0,
                        "4.weight": 0.0, "4.bias": 0.0}  # fmt: skip
    aspect = dict(zip(model.names, seg.aspect, strict=False))
    assert aspect["2.weight"] == pytest.approx(3.0**0.5)  # [24, 8]: fan_out / fan_in = 3
    assert aspect["0.weight"] == 1.0  # [4, 2*3]: fewer outputs than inputs
    assert seg.hidden[6:] == seg.hidden[:6]  # the second copy labelled alike
