"""state_dict round trips: a resumed run continues exactly as the uninterrupted one."""

from __future__ import annotations

import copy
import io

import pytest
import torch

import optforge
from tests.optim.test_lion_reference import PATHS

X = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
Y = torch.randint(0, 4, (64,), generator=torch.Generator().manual_seed(1))


def make_model(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    return model.to(dtype)


def train(model, opt, steps, start=0):
    for i in range(start, start + steps):
        idx = torch.randperm(64, generator=torch.Generator().manual_seed(i))[:16]
        x = X[idx].to(next(model.parameters()).dtype)
        loss = torch.nn.functional.cross_entropy(model(x), Y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def save(model, opt):
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    return torch.load(buf)


def params(model):
    return [p.detach().clone() for p in model.parameters()]


OPTIONS = {
    "plain": dict(lr=3e-3, weight_decay=0.1),
    "bf16_momentum_cautious": dict(lr=3e-3, momentum_dtype=torch.bfloat16, cautious=True),
    "maximize": dict(lr=3e-3, maximize=True, betas=(0.95, 0.98)),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("options", OPTIONS)
def test_resume_is_bit_exact_on_the_same_path(path, options):
    kw = {**OPTIONS[options], **PATHS[path]}
    model = make_model()
    opt = optforge.Lion(model.parameters(), **kw)
    train(model, opt, 10)
    ckpt = save(model, opt)
    train(model, opt, 10, start=10)

    resumed = make_model(seed=123)  # different init: everything must come from the checkpoint
    resumed_opt = optforge.Lion(resumed.parameters(), **kw)
    resumed.load_state_dict(ckpt["model"])
    resumed_opt.load_state_dict(ckpt["opt"])
    for p in resumed.parameters():
        want = kw.get("momentum_dtype") or p.dtype
        assert resumed_opt.state[p]["exp_avg"].dtype == want
    train(resumed, resumed_opt, 10, start=10)
    for a, b in zip(params(model), params(resumed), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(("src", "dst"), [("foreach", "fused"), ("fused", "single")])
def test_checkpoint_moves_between_paths(src, dst):
    model = make_model()
    opt = optforge.Lion(model.parameters(), lr=3e-3, weight_decay=0.1, **PATHS[src])
    train(model, opt, 10)
    ckpt = save(model, opt)
    train(model, opt, 10, start=10)

    other = make_model(seed=5)
    other.load_state_dict(ckpt["model"])
    other_opt = optforge.Lion(other.parameters(), lr=3e-3, weight_decay=0.1, **PATHS[dst])
    other_opt.load_state_dict(ckpt["opt"])
    # foreach/fused describe this run, not the checkpoint: they are kept as constructed.
    assert other_opt.param_groups[0]["fused"] == PATHS[dst].get("fused")
    train(other, other_opt, 10, start=10)
    for a, b in zip(params(model), params(other), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_checkpoint_loads_into_a_float64_model():
    model = make_model()
    opt = optforge.Lion(model.parameters(), lr=3e-3, weight_decay=0.1)
    train(model, opt, 10)
    ckpt = save(model, opt)
    train(model, opt, 10, start=10)

    wide = make_model(seed=9, dtype=torch.float64)
    wide.load_state_dict(ckpt["model"])
    wide_opt = optforge.Lion(wide.parameters(), lr=3e-3, weight_decay=0.1)
    wide_opt.load_state_dict(ckpt["opt"])
    assert all(s["exp_avg"].dtype == torch.float64 for s in wide_opt.state.values())
    train(wide, wide_opt, 10, start=10)
    for a, b in zip(params(model), params(wide), strict=True):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-6)


OLD_GROUP_KEYS = ["maximize", "foreach", "fused", "cautious", "momentum_dtype"]


def test_old_checkpoint_without_new_options_gets_defaults():
    model = make_model()
    opt = optforge.Lion(model.parameters(), lr=3e-3)
    train(model, opt, 3)
    sd = opt.state_dict()
    for group in sd["param_groups"]:
        for key in OLD_GROUP_KEYS:
            del group[key]
    fresh = optforge.Lion(model.parameters(), lr=3e-3)
    fresh.load_state_dict(sd)
    group = fresh.param_groups[0]
    assert [group[k] for k in OLD_GROUP_KEYS] == [False, None, None, False, None]
    train(model, fresh, 2, start=3)


def test_setstate_fills_defaults_for_pickled_optimizers():
    model = make_model()
    opt = optforge.Lion(model.parameters(), lr=3e-3)
    state = opt.__getstate__()
    state = copy.deepcopy({"defaults": state["defaults"], "state": {}, "param_groups": [
        {k: v for k, v in g.items() if k not in OLD_GROUP_KEYS} for g in state["param_groups"]
    ]})  # fmt: skip
    revived = optforge.Lion.__new__(optforge.Lion)
    revived.__setstate__(state)
    assert revived.param_groups[0]["cautious"] is False
    assert revived.param_groups[0]["momentum_dtype"] is None
