"""ProgramOptimizer: any program as a torch optimizer."""

from __future__ import annotations

import io

import pytest
import torch

import optforge
from optforge.optim import NonFiniteUpdateError
from optforge.program import ProgramError, library, parse
from tests.optim.test_lion_reference import assert_close_fp32, make_params, train

STEPS = 20


def test_lion_program_reproduces_optforge_lion():
    a, b = make_params(), make_params()
    opt_a = optforge.ProgramOptimizer(a, library.lion(0.9, 0.99, 0.3), lr=1e-2)
    opt_b = optforge.Lion(b, lr=1e-2, betas=(0.9, 0.99), weight_decay=0.3)
    train(a, opt_a, steps=STEPS)
    train(b, opt_b, steps=STEPS)
    for p, q in zip(a, b, strict=True):
        # same algorithm, operations in another order: within the fp32 rounding bound
        assert_close_fp32(p.detach(), q.detach().double(), STEPS * 1e-2)


def test_adamw_program_reproduces_a_float64_reference():
    params = make_params(torch.float64)
    w0 = [p.detach().clone() for p in params]
    opt = optforge.ProgramOptimizer(params, library.adamw(0.9, 0.99, 0.1, 1e-8), lr=1e-2)
    grads, _ = train(params, opt, steps=STEPS)
    for i, p in enumerate(params):
        w, m, v = w0[i].clone(), torch.zeros_like(w0[i]), torch.zeros_like(w0[i])
        for step in grads:
            g = step[i].double()
            m, v = 0.9 * m + 0.1 * g, 0.99 * v + 0.01 * g * g
            w = w - 1e-2 * (m / (v.sqrt() + 1e-8) + 0.1 * w)
        torch.testing.assert_close(p.detach(), w, rtol=1e-12, atol=1e-14)


def test_states_are_allocated_only_when_read():
    params = make_params(shapes=[(3,)])
    for program, states in [(library.sgd(), set()), (library.lion(), {"v1"}),
                            (library.adamw(), {"v1", "v2"})]:  # fmt: skip
        opt = optforge.ProgramOptimizer(params, program, lr=1e-3)
        params[0].grad = torch.ones(3)
        opt.step()
        assert set(opt.state[params[0]]) == states | {"step"}  # the count, as torch.optim


def test_nonfinite_updates_raise_or_skip_without_touching_anything():
    log_w = parse("def train(w, g, v1, v2, lr):\n    u = log(w)\n    v1 = interp(g, v1, 0.9)\n"
                  "    update = u + v1\n    return update, v1, v2")  # fmt: skip
    (w,) = make_params(shapes=[(8,)])
    w0 = w.detach().clone()
    opt = optforge.ProgramOptimizer([w], log_w, lr=1.0)
    w.grad = torch.ones(8)
    with pytest.raises(NonFiniteUpdateError, match="parameters and state are unchanged"):
        opt.step()
    assert torch.equal(w.detach(), w0) and torch.equal(opt.state[w]["v1"], torch.zeros(8))
    skip = optforge.ProgramOptimizer([w], log_w, lr=1.0, nonfinite="skip")
    skip.step()
    assert skip.skipped_steps == 1 and torch.equal(w.detach(), w0)


def test_state_dict_round_trip_is_exact_and_carries_the_program():
    a = make_params()
    opt = optforge.ProgramOptimizer(a, library.adamw(eps=1e-8), lr=1e-2)
    train(a, opt, steps=5)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    resumed = optforge.ProgramOptimizer(b, library.sgd(), lr=1.0)
    buf.seek(0)
    resumed.load_state_dict(torch.load(buf))
    assert resumed.program() == library.adamw(eps=1e-8)
    train(a, opt, steps=5, seed=9)
    train(b, resumed, steps=5, seed=9)
    for p, q in zip(a, b, strict=True):
        assert torch.equal(p, q)


def test_schedulers_drive_the_programs_lr():
    (w,) = make_params(shapes=[(4,)])
    opt = optforge.ProgramOptimizer([w], library.sgd(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    moves = []
    for _ in range(3):
        before = w.detach().clone()
        w.grad = torch.ones(4)
        opt.step()
        sched.step()
        moves.append((before - w.detach())[0].item())
    assert moves == [1.0, 0.5, 0.25]


def test_bad_construction_is_refused():
    params = make_params(shapes=[(2,)])
    with pytest.raises(ProgramError, match="is a scalar"):
        optforge.ProgramOptimizer(params, "def train(w, g, v1, v2, lr):\n    u = lr * 2.0\n"
                                          "    return u, v1, v2")  # fmt: skip
    with pytest.raises(ProgramError, match="unknown operation"):
        optforge.ProgramOptimizer(params, "def train(w, g, v1, v2, lr):\n    u = f(g)\n"
                                          "    return u, v1, v2")  # fmt: skip
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        optforge.ProgramOptimizer(params, library.sgd(), lr=-1)
    with pytest.raises(ValueError, match="Invalid nonfinite: 'ignore'"):
        optforge.ProgramOptimizer(params, library.sgd(), nonfinite="ignore")
    with pytest.raises(TypeError, match="floating-point"):
        optforge.ProgramOptimizer([torch.zeros(2, dtype=torch.int64)], library.sgd())
    with pytest.raises(TypeError, match="must be a Program or its source text"):
        optforge.ProgramOptimizer(params, 42)
