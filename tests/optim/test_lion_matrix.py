"""The behaviours torch's own test/test_optim.py checks for every optimizer, on every Lion
path: single-tensor loop, foreach, the fused C kernel and the fused Triton kernel (under
Triton's interpreter on CPU, tests/conftest.py)."""

from __future__ import annotations

import copy
import importlib

import pytest
import torch

import optforge
from optforge.optim.kernels import triton as triton_kernel

lion_module = importlib.import_module("optforge.optim.lion")
PATHS = {
    "single": dict(foreach=False, fused=False),
    "foreach": dict(foreach=True),
    "fused-c": dict(fused=True),
    "fused-triton": dict(fused=True),
}


@pytest.fixture(params=list(PATHS))
def path(request, monkeypatch):
    if request.param == "fused-triton":
        if not (triton_kernel.interpreted() and triton_kernel.available()):
            pytest.skip("Triton's interpreter is not available")
        monkeypatch.setattr(triton_kernel, "STEP_CPU_TENSORS", True)
    return PATHS[request.param]


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 2))


def _step(model, opt, seed):
    gen = torch.Generator().manual_seed(seed)
    opt.zero_grad()
    model(torch.randn(9, 5, generator=gen)).square().mean().backward()
    opt.step()


def test_matches_the_loop_with_dropped_grads_frozen_layer_and_empty_param(path):
    """torch's foreach/fused-vs-forloop check: grads set to None mid-run, a frozen layer, a
    zero-size param; all must match the single-tensor loop."""
    results = []
    for kw in (path, PATHS["single"]):
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(s)) for s in ((4, 3), (0,), (6,), (2, 2))]
        opt = optforge.Lion(params, lr=0.05, weight_decay=0.2, **kw)
        for step in range(5):
            for i, p in enumerate(params):
                frozen, dropped = i == 3, (i == 2 and step in (1, 2))
                p.grad = None if frozen or dropped else torch.randn_like(p)
            opt.step()
        results.append([p.detach().clone() for p in params])
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(results[0][3], params[3].detach())  # the frozen param never moved


def test_step_without_any_grad_is_a_no_op(path):
    model = _model()
    before = copy.deepcopy(model.state_dict())
    opt = optforge.Lion(model.parameters(), lr=0.1, weight_decay=1.0, **path)
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not opt.state  # no state for params that never had a grad


def test_param_groups_keep_their_lr_and_weight_decay(path):
    model = _model()
    head, body = list(model[2].parameters()), list(model[0].parameters())
    opt = optforge.Lion([{"params": body}, {"params": head, "lr": 0.0, "weight_decay": 0.0}],
                        lr=0.1, weight_decay=0.5, **path)  # fmt: skip
    frozen = [p.detach().clone() for p in head]
    moved = [p.detach().clone() for p in body]
    _step(model, opt, 0)
    assert all(torch.equal(a, b) for a, b in zip(frozen, head, strict=True))
    assert all(not torch.equal(a, b) for a, b in zip(moved, body, strict=True))


def test_state_dict_is_deterministic_and_loads_with_weights_only(path, tmp_path):
    dicts = []
    for _ in range(2):
        model = _model()
        opt = optforge.Lion(model.parameters(), lr=0.01, momentum_dtype=torch.bfloat16, **path)
        for seed in range(3):
            _step(model, opt, seed)
        torch.save(opt.state_dict(), tmp_path / "opt.pt")
        dicts.append(torch.load(tmp_path / "opt.pt", weights_only=True))
    a, b = dicts
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for key in a["state"]:
        assert torch.equal(a["state"][key]["exp_avg"], b["state"][key]["exp_avg"])


def test_deepcopy_continues_like_the_original(path):
    model = _model()
    opt = optforge.Lion(model.parameters(), lr=0.01, weight_decay=0.1, **path)
    _step(model, opt, 0)
    model_copy = copy.deepcopy(model)
    opt_copy = optforge.Lion(model_copy.parameters(), lr=0.01, weight_decay=0.1, **path)
    opt_copy.load_state_dict(copy.deepcopy(opt.state_dict()))
    for seed in (1, 2):
        _step(model, opt, seed)
        _step(model_copy, opt_copy, seed)
    for a, b in zip(model.parameters(), model_copy.parameters(), strict=True):
        assert torch.equal(a, b)


def test_printing_shows_the_hyper_parameters(path):
    text = repr(optforge.Lion(_model().parameters(), lr=3e-4, weight_decay=0.7, **path))
    assert text.startswith("Lion (")
    for field in ("lr: 0.0003", "betas: (0.9, 0.99)", "weight_decay: 0.7", "cautious: False"):
        assert field in text


def test_step_and_state_dict_hooks_run(path):
    model = _model()
    opt = optforge.Lion(model.parameters(), lr=0.01, **path)
    seen = []
    opt.register_step_pre_hook(lambda o, args, kwargs: seen.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: seen.append("post"))
    opt.register_state_dict_pre_hook(lambda o: seen.append("sd-pre"))
    opt.register_state_dict_post_hook(lambda o, sd: sd.update(extra=1) or sd)
    opt.register_load_state_dict_pre_hook(lambda o, sd: seen.append("load-pre"))
    opt.register_load_state_dict_post_hook(lambda o: seen.append("load-post"))
    _step(model, opt, 0)
    sd = opt.state_dict()
    assert sd["extra"] == 1
    del sd["extra"]
    opt.load_state_dict(sd)
    assert seen == ["pre", "post", "sd-pre", "load-pre", "load-post"]


def test_found_inf_skips_the_step_on_every_path(path):
    params = [torch.nn.Parameter(torch.randn(10)), torch.nn.Parameter(torch.randn(3, 3))]
    momenta = [torch.randn_like(p) for p in params]
    before = [t.detach().clone() for t in (*params, *momenta)]
    lion_module.lion(params, [torch.randn_like(p) for p in params], momenta, lr=0.1, beta1=0.9,
                     beta2=0.99, weight_decay=0.1, found_inf=torch.tensor(1.0),
                     grad_scale=torch.tensor(4.0), **path)  # fmt: skip
    assert all(torch.equal(a, b) for a, b in zip(before, (*params, *momenta), strict=True))


def test_mixed_dtypes_in_one_group(path):
    """One group with fp32, bf16 and fp16 params: each steps in its own dtype as it would
    alone (the fused kernels split the group by dtype)."""
    dtypes = (torch.float32, torch.bfloat16, torch.float16)
    torch.manual_seed(0)
    together = [torch.nn.Parameter(torch.randn(40).to(d)) for d in dtypes]
    alone = [torch.nn.Parameter(p.detach().clone()) for p in together]
    opt = optforge.Lion(together, lr=0.01, weight_decay=0.1, **path)
    opts = [optforge.Lion([p], lr=0.01, weight_decay=0.1, **path) for p in alone]
    for _ in range(3):
        for p, q in zip(together, alone, strict=True):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        opt.step()
        for o in opts:
            o.step()
    for p, q in zip(together, alone, strict=True):
        assert p.dtype == q.dtype and torch.equal(p, q)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="peak device memory needs a GPU")
def test_foreach_peak_memory_is_bounded():
    """torch's check: a foreach step allocates temporaries of at most a few times the params."""
    params = [torch.nn.Parameter(torch.randn(1024, 1024, device="cuda")) for _ in range(8)]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = optforge.Lion(params, lr=1e-3, foreach=True)
    opt.step()  # state allocated
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated()
    opt.step()
    torch.cuda.synchronize()
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    assert torch.cuda.max_memory_allocated() - start <= 2 * param_bytes
