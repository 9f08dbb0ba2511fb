"""The trainer's built-in AdamW is torch.optim.AdamW: same trajectory under a schedule."""

from __future__ import annotations

import pytest
import torch

from optforge.program import ProgramError
from optforge.tasks.builtin import Builtin, BuiltinUpdater, parse_optimizer
from optforge.tasks.registry import baseline_program, get
from optforge.tasks.train import evaluate, schedule


@pytest.mark.parametrize("betas,wd", [((0.9, 0.999), 0.0), ((0.9, 0.95), 0.1)])
def test_builtin_adamw_follows_torch_adamw(betas, wd):
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(3, 50, generator=gen)
    v1, v2 = torch.zeros_like(theta), torch.zeros_like(theta)
    rows = [0, 2]
    opt = Builtin("torch_adamw", 3e-2, *betas, 1e-8, wd)
    updater = BuiltinUpdater(opt, rows, theta, v1, v2)
    reference = [theta[r].clone().requires_grad_(True) for r in rows]
    torch_opt = torch.optim.AdamW(reference, lr=3e-2, betas=betas, eps=1e-8, weight_decay=wd)
    lrs = schedule(20, 0.1)
    for lr in lrs:
        grad = torch.randn(3, 50, generator=gen)
        updater.step([True, True, True], grad, torch.tensor(lr))
        for group in torch_opt.param_groups:
            group["lr"] = 3e-2 * lr
        for p, r in zip(reference, rows, strict=True):
            p.grad = grad[r].clone()
        torch_opt.step()
    for p, r in zip(reference, rows, strict=True):
        torch.testing.assert_close(theta[r], p.detach(), rtol=1e-5, atol=1e-6)


def test_text_form_round_trips_and_bad_values_are_named():
    opt = baseline_program("torch_adamw", 3e-3, 0.1, 0.9, 0.95)
    assert parse_optimizer(opt.source()) == opt
    assert opt.scaled(3.0).eta == pytest.approx(9e-3)
    with pytest.raises(ValueError, match="beta2 must be in"):
        Builtin("torch_adamw", 1e-3, 0.9, 1.0)
    with pytest.raises(ValueError, match="unknown built-in"):
        Builtin("adam_but_better")
    with pytest.raises(ProgramError):
        parse_optimizer("def train(w, g, v1, v2, lr):\n    return")


def test_builtin_trains_beside_programs_without_changing_their_results():
    task = get("digits-mlp-test")
    program, builtin = baseline_program("adamw", 1e-2), baseline_program("torch_adamw", 1e-2)
    alone = evaluate(task, [program], [3])[0].fitness
    mixed = evaluate(task, [builtin, program, builtin], [1, 3, 2])
    assert mixed[1].fitness == pytest.approx(alone, abs=1e-6)
    assert evaluate(task, [builtin], [2])[0].fitness == pytest.approx(mixed[2].fitness, abs=1e-6)
    assert mixed[0].fitness > 0.8  # it learns
