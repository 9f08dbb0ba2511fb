"""Lion under torch.amp.GradScaler: the fused paths take grad_scale / found_inf from the scaler
(as torch's fused AdamW does) and the other paths are unscaled by it; every path must then
match an unscaled run that skips the overflowed steps (lion-pytorch #35: inf under AMP)."""

from __future__ import annotations

import pytest
import torch

import optforge
from optforge.optim.kernels import triton as triton_kernel

PATHS = {
    "single": dict(fused=False, foreach=False),
    "foreach": dict(foreach=True),
    "fused-c": dict(fused=True),
    "fused-triton": dict(fused=True),
}
OVERFLOW_STEP = 2


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def _batches(n=5):
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(32, 8, generator=gen), torch.randint(0, 3, (32,), generator=gen))
            for _ in range(n)]  # fmt: skip


def _train(model, opt, scaler=None):
    scales = []
    for step, (x, y) in enumerate(_batches()):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        if step == OVERFLOW_STEP:
            loss = loss * float("inf")  # every grad becomes inf or nan
        if scaler is None:
            loss.backward()
            if step != OVERFLOW_STEP:
                opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            scales.append(scaler.get_scale())
    return scales


@pytest.mark.parametrize("path", PATHS)
def test_grad_scaler_skips_overflow_and_unscales(path, monkeypatch):
    if path == "fused-triton":
        if not triton_kernel.interpreted() or not triton_kernel.available():
            pytest.skip("Triton's interpreter is not available")
        monkeypatch.setattr(triton_kernel, "STEP_CPU_TENSORS", True)
    scaled, plain = _model(), _model()
    opt = optforge.Lion(scaled.parameters(), lr=1e-2, weight_decay=0.1, **PATHS[path])
    ref = optforge.Lion(plain.parameters(), lr=1e-2, weight_decay=0.1, fused=False)
    assert getattr(opt, "_step_supports_amp_scaling", False) == ("fused" in path)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)
    scales = _train(scaled, opt, scaler)
    _train(plain, ref)
    assert scales[OVERFLOW_STEP] == scales[OVERFLOW_STEP - 1] / 2  # the scaler saw the inf
    for a, b in zip(scaled.parameters(), plain.parameters(), strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # powers of 2 unscale exactly
