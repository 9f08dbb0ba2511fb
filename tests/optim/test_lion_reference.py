"""Every Lion path against the float64 reference of the paper's algorithm (tests/reference.py).

Error bound for fp32: each step rounds p twice (p * (1 - lr*wd), then + (-lr) * u) and the decay
factor itself once, each with relative error <= 2^-24, so after n steps the relative error is at
most 3 * n * 2^-24 (3.6e-6 for n = 20), well under 1e-5. The update sign can only differ from
the reference where |c| is within rounding of 0; the fixed seeds below have no such element.
"""

from __future__ import annotations

import pytest
import torch

import optforge
from tests import reference

STEPS = 20
FP32_BOUND = 3 * STEPS * 2.0**-24
PATHS = {
    "single": dict(foreach=False, fused=False),
    "foreach": dict(foreach=True),
    "fused": dict(fused=True),
}
SHAPES = [(37, 19), (64,), (), (3, 5, 7), (1031,)]


def make_params(dtype=torch.float32, seed=0, shapes=SHAPES):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen).to(dtype)) for s in shapes]


def train(params, opt, *, steps=STEPS, seed=1, scheduler=None):
    """Feed fresh random grads; record each step's (lr, betas, wd) per group as the optimizer
    saw them, so the reference can replay a schedule exactly."""
    gen = torch.Generator().manual_seed(seed)
    grads, configs = [], []
    for _ in range(steps):
        step_grads = []
        for p in params:
            g = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            p.grad = g.to(p.dtype)
            step_grads.append(p.grad.clone())
        grads.append(step_grads)
        configs.append(
            {
                id(p): reference.StepConfig(
                    float(g["lr"]), *g.get("betas", (0.0, 0.0)), g.get("weight_decay", 0.0)
                )
                for g in opt.param_groups
                for p in g["params"]
            }
        )
        opt.step()
        if scheduler is not None:
            scheduler.step()
    return grads, configs


def replay(p0, index, param, grads, configs, **kw):
    return reference.run(
        p0[index], [g[index] for g in grads], [c[id(param)] for c in configs], **kw
    )


def assert_close_fp32(actual, expected, scale, bound=FP32_BOUND):
    """Relative error <= bound, relative to the largest magnitude the value had along its path:
    |expected| + scale, where scale is STEPS * lr for params (how far p may have moved) and
    max |g| for the momentum (an average of past gradients)."""
    err = (actual.double() - expected).abs()
    allowed = bound * (expected.abs() + scale)
    worst = (err / allowed).max().item() if err.numel() else 0.0
    assert worst <= 1.0, f"relative error exceeds the fp32 bound {bound:.2e} by {worst:.2f}x"


def momentum_scale(grads, index):
    return max(g[index].abs().max().item() for g in grads)


CONFIGS = {
    "plain": dict(lr=1e-2),
    "weight_decay": dict(lr=1e-2, weight_decay=0.5),
    "maximize": dict(lr=1e-2, weight_decay=0.1, maximize=True),
    "cautious": dict(lr=1e-2, cautious=True),
    "cautious_maximize_wd": dict(lr=3e-3, weight_decay=1.0, cautious=True, maximize=True),
    "stability_betas": dict(lr=1e-2, betas=(0.95, 0.98)),
    "small_betas": dict(lr=1e-2, betas=(0.3, 0.6)),  # lerp weights >= 0.5: the other branch
    "tensor_lr": dict(lr=torch.tensor(1e-2), weight_decay=0.2),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("config", CONFIGS)
def test_matches_float64_reference(path, config):
    options = CONFIGS[config]
    params = make_params()
    p0 = [p.detach().clone() for p in params]
    opt = optforge.Lion(params, **options, **PATHS[path])
    grads, configs = train(params, opt)
    for i, p in enumerate(params):
        p_ref, m_ref = replay(
            p0,
            i,
            p,
            grads,
            configs,
            maximize=options.get("maximize", False),
            cautious=options.get("cautious", False),
        )
        assert_close_fp32(p.detach(), p_ref, STEPS * float(options["lr"]))
        assert_close_fp32(opt.state[p]["exp_avg"], m_ref, momentum_scale(grads, i))


@pytest.mark.parametrize("path", PATHS)
def test_bf16_momentum_matches_reference_with_bf16_state(path):
    params = make_params()
    p0 = [p.detach().clone() for p in params]
    opt = optforge.Lion(
        params, lr=1e-2, weight_decay=0.1, momentum_dtype=torch.bfloat16, **PATHS[path]
    )
    grads, configs = train(params, opt)
    for i, p in enumerate(params):
        m = opt.state[p]["exp_avg"]
        assert m.dtype == torch.bfloat16
        p_ref, m_ref = replay(p0, i, p, grads, configs, m_dtype=torch.bfloat16)
        assert_close_fp32(p.detach(), p_ref, STEPS * 1e-2)
        # fp32 arithmetic then one rounding to bf16 may land one bf16 ulp (2^-8) from rounding
        # the exact value: allow that, nothing more.
        torch.testing.assert_close(m.double(), m_ref, rtol=2.0**-8, atol=1e-30)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_other_param_dtypes_match_reference(path, dtype):
    params = make_params(dtype)
    p0 = [p.detach().clone() for p in params]
    opt = optforge.Lion(params, lr=1e-2, weight_decay=0.1, **PATHS[path])
    grads, configs = train(params, opt)
    for i, p in enumerate(params):
        store = None if dtype == torch.float64 else dtype
        p_ref, _ = replay(p0, i, p, grads, configs, p_dtype=store, m_dtype=store)
        # fp64: the fp32 argument with 2^-53. bf16/fp16: computing in fp32 and rounding once may
        # round one ulp away from the exact value; later steps then round a different value, so
        # the gap random-walks: allow 8 ulps (measured worst: 4 for bf16, 0.5 for fp16).
        eps = torch.finfo(dtype).eps
        bound = 3 * STEPS * 2.0**-53 if dtype == torch.float64 else 8 * eps
        assert_close_fp32(p.detach(), p_ref, STEPS * 1e-2, bound=bound)


@pytest.mark.parametrize("path", PATHS)
def test_param_groups_keep_their_own_hyper_parameters(path):
    params = make_params()
    groups = [
        {"params": params[:2]},
        {"params": params[2:4], "lr": 3e-3, "betas": (0.95, 0.98), "cautious": True},
        {"params": params[4:], "weight_decay": 2.0, "maximize": True},
    ]
    p0 = [p.detach().clone() for p in params]
    opt = optforge.Lion(groups, lr=1e-2, weight_decay=0.1, **PATHS[path])
    grads, configs = train(params, opt)
    for i, p in enumerate(params):
        group = next(g for g in opt.param_groups if any(q is p for q in g["params"]))
        p_ref, _ = replay(
            p0, i, p, grads, configs, maximize=group["maximize"], cautious=group["cautious"]
        )
        assert_close_fp32(p.detach(), p_ref, STEPS * group["lr"])


SCHEDULERS = {
    "StepLR": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
    "MultiStepLR": lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [4, 9], gamma=0.3),
    "ExponentialLR": lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9),
    "CosineAnnealingLR": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=STEPS),
    "CosineAnnealingWarmRestarts": lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        o, T_0=5
    ),
    "LambdaLR": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1 / (1 + s)),
    "MultiplicativeLR": lambda o: torch.optim.lr_scheduler.MultiplicativeLR(o, lambda s: 0.95),
    "LinearLR": lambda o: torch.optim.lr_scheduler.LinearLR(o, 0.1, 1.0, total_iters=5),
    "ConstantLR": lambda o: torch.optim.lr_scheduler.ConstantLR(o, 0.5, total_iters=5),
    "PolynomialLR": lambda o: torch.optim.lr_scheduler.PolynomialLR(o, STEPS, power=2.0),
    "OneCycleLR": lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o,
        max_lr=2e-2,
        total_steps=STEPS,  # also cycles beta1 through the group's betas
    ),
    "CyclicLR": lambda o: torch.optim.lr_scheduler.CyclicLR(
        o,
        1e-3,
        1e-2,
        step_size_up=4,  # cycles beta1 as well
    ),
    "SequentialLR": lambda o: torch.optim.lr_scheduler.SequentialLR(
        o,
        [
            torch.optim.lr_scheduler.LinearLR(o, 0.1, 1.0, total_iters=5),
            torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=15),
        ],
        milestones=[5],
    ),
    "ChainedScheduler": lambda o: torch.optim.lr_scheduler.ChainedScheduler(
        [
            torch.optim.lr_scheduler.ConstantLR(o, 0.5, total_iters=4),
            torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9),
        ]
    ),
}


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_lr_scheduler_drives_the_step(name):
    params = make_params()
    p0 = [p.detach().clone() for p in params]
    opt = optforge.Lion(params, lr=1e-2, weight_decay=0.1)
    scheduler = SCHEDULERS[name](opt)
    grads, configs = train(params, opt, scheduler=scheduler)
    lrs = {round(c[id(params[0])].lr, 12) for c in configs}
    assert len(lrs) > 1, "the scheduler never changed lr: the test would prove nothing"
    for i, p in enumerate(params):
        p_ref, _ = replay(p0, i, p, grads, configs)
        assert_close_fp32(p.detach(), p_ref, STEPS * 2e-2)


def test_reduce_lr_on_plateau_lowers_lr_and_step_follows():
    params = make_params()
    opt = optforge.Lion(params, lr=1e-2)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=1, factor=0.5)
    for p in params:
        p.grad = torch.ones_like(p)
    for _ in range(4):
        opt.step()
        scheduler.step(1.0)  # a flat loss
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-3)


@pytest.mark.parametrize("path", PATHS)
def test_complex_params_step_as_real_views(path):
    gen = torch.Generator().manual_seed(0)
    z = torch.nn.Parameter(torch.randn(33, 2, generator=gen, dtype=torch.complex64))
    z0 = torch.view_as_real(z.detach()).clone()
    opt = optforge.Lion([z], lr=1e-2, weight_decay=0.1, **PATHS[path])
    grads, configs = [], []
    for _ in range(STEPS):
        g = torch.randn(33, 2, generator=gen, dtype=torch.complex64)
        z.grad = g
        grads.append(torch.view_as_real(g).clone())
        configs.append(reference.StepConfig(1e-2, 0.9, 0.99, 0.1))
        opt.step()
    assert opt.state[z]["exp_avg"].dtype == torch.complex64
    p_ref, m_ref = reference.run(z0, grads, configs)
    assert_close_fp32(torch.view_as_real(z.detach()), p_ref, STEPS * 1e-2)
    m = torch.view_as_real(opt.state[z]["exp_avg"])
    assert_close_fp32(m, m_ref, momentum_scale([[g] for g in grads], 0))


@pytest.mark.parametrize("path", PATHS)
def test_non_contiguous_params_and_grads(path):
    gen = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.randn(40, 24, generator=gen).t())  # transposed view
    channels_last = torch.randn(2, 3, 5, 5, generator=gen).to(memory_format=torch.channels_last)
    c = torch.nn.Parameter(channels_last)
    params = [w, c]
    p0 = [p.detach().clone() for p in params]
    opt = optforge.Lion(params, lr=1e-2, weight_decay=0.1, **PATHS[path])
    grads, configs = train(params, opt)
    assert not w.is_contiguous() and c.is_contiguous(memory_format=torch.channels_last)
    for i, p in enumerate(params):
        p_ref, _ = replay(p0, i, p, grads, configs)
        assert_close_fp32(p.detach(), p_ref, STEPS * 1e-2)


def test_params_without_grad_are_left_alone():
    a, b = make_params(shapes=[(5,), (6,)])
    b0 = b.detach().clone()
    opt = optforge.Lion([a, b], lr=1e-2, weight_decay=1.0)
    a.grad = torch.ones_like(a)
    opt.step()
    assert torch.equal(b.detach(), b0)
    assert b not in opt.state


def test_closure_is_called_with_grad_enabled_and_its_loss_returned():
    (w,) = make_params(shapes=[(3,)])
    opt = optforge.Lion([w], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss is not None and loss.item() > 0
