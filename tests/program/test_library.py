"""Library programs against float64 re-implementations of the optimizers they name."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optforge.program import library
from optforge.program.execute import run

STEPS, N, LR = 10, 64, 0.01


def reference_adamw(w, gs, b1, b2, wd, eps):
    m, v, out = np.zeros_like(w), np.zeros_like(w), []
    for g in gs:
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        out.append(LR * (m / (np.sqrt(v) + (eps or 0.0)) + wd * w))
        w = w - out[-1]
    return out


def reference_lion(w, gs, b1, b2, wd):
    m, out = np.zeros_like(w), []
    for g in gs:
        out.append(LR * (np.sign(b1 * m + (1 - b1) * g) + wd * w))
        m = b2 * m + (1 - b2) * g
        w = w - out[-1]
    return out


def reference_momentum(w, gs, beta, wd):
    buf, out = np.zeros_like(w), []
    for g in gs:
        buf = beta * buf + g
        out.append(LR * (buf + wd * w))
        w = w - out[-1]
    return out


def reference_ema_of(transform):
    """Updates that are a function of g and an EMA m of g (Signum, PowerSign, AddSign)."""

    def reference(w, gs, beta, wd):
        m, out = np.zeros_like(w), []
        for g in gs:
            m = beta * m + (1 - beta) * g
            out.append(LR * (transform(g, m) + wd * w))
            w = w - out[-1]
        return out

    return reference


def reference_rmsprop(w, gs, beta, eps, wd):
    v, out = np.zeros_like(w), []
    for g in gs:
        v = beta * v + (1 - beta) * g * g
        out.append(LR * (g / (np.sqrt(v) + eps) + wd * w))
        w = w - out[-1]
    return out


def reference_adabelief(w, gs, b1, b2, eps, wd):
    m, s, out = np.zeros_like(w), np.zeros_like(w), []
    for g in gs:
        m = b1 * m + (1 - b1) * g
        s = b2 * s + (1 - b2) * (g - m) ** 2
        out.append(LR * (m / (np.sqrt(s) + eps) + wd * w))
        w = w - out[-1]
    return out


def powersign_direction(g, m):
    return g * np.exp(np.sign(g) * np.sign(m))


def addsign_direction(g, m):
    return g * (1 + np.sign(g) * np.sign(m))


CASES = {
    "sgd": (library.sgd(0.1), lambda w, gs: reference_momentum(w, gs, 0.0, 0.1)),
    "momentum": (library.momentum(0.8, 0.1), lambda w, gs: reference_momentum(w, gs, 0.8, 0.1)),
    "adamw": (library.adamw(0.9, 0.99, 0.1),
              lambda w, gs: reference_adamw(w, gs, 0.9, 0.99, 0.1, None)),
    "adamw_eps": (library.adamw(0.9, 0.99, 0.0, 1e-8),
                  lambda w, gs: reference_adamw(w, gs, 0.9, 0.99, 0.0, 1e-8)),
    "lion": (library.lion(0.9, 0.99, 0.3), lambda w, gs: reference_lion(w, gs, 0.9, 0.99, 0.3)),
    "signum": (library.signum(0.9, 0.1),
               lambda w, gs: reference_ema_of(lambda g, m: np.sign(m))(w, gs, 0.9, 0.1)),
    "powersign": (library.powersign(0.9),
                  lambda w, gs: reference_ema_of(powersign_direction)(w, gs, 0.9, 0.0)),
    "addsign": (library.addsign(0.9, 1.0),
                lambda w, gs: reference_ema_of(addsign_direction)(w, gs, 0.9, 0.0)),
    "rmsprop": (library.rmsprop(0.99, 1e-8, 0.1),
                lambda w, gs: reference_rmsprop(w, gs, 0.99, 1e-8, 0.1)),
    "adabelief": (library.adabelief(0.9, 0.99, 1e-8),
                  lambda w, gs: reference_adabelief(w, gs, 0.9, 0.99, 1e-8, 0.0)),
}  # fmt: skip


@pytest.mark.parametrize("name", CASES)
def test_library_program_matches_float64_reference(name):
    program, reference = CASES[name]
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal(N)
    gs = [rng.standard_normal(N) for _ in range(STEPS)]
    expected = reference(w0, gs)
    w = torch.from_numpy(w0.copy())
    v1 = torch.zeros(N, dtype=torch.float64)
    v2 = torch.zeros(N, dtype=torch.float64)
    for g, want in zip(gs, expected, strict=True):
        update, v1, v2 = run(program, w, torch.from_numpy(g), v1, v2, LR)
        np.testing.assert_allclose(update.numpy(), want, rtol=1e-10, atol=1e-14)
        w = w - update


def test_paper_warm_start_is_adamw_with_its_own_lr_scale():
    rng = np.random.default_rng(2)
    w0 = rng.standard_normal(N)
    gs = [rng.standard_normal(N) for _ in range(STEPS)]
    m, v, w = np.zeros(N), np.zeros(N), torch.from_numpy(w0.copy())
    v1 = v2 = torch.zeros(N, dtype=torch.float64)
    w_ref = w0.copy()
    for g in gs:
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        want = 0.001 * (m / np.sqrt(v) + 0.01 * w_ref)
        update, v1, v2 = run(library.paper_warm_start(), w, torch.from_numpy(g), v1, v2, 1.0)
        np.testing.assert_allclose(update.numpy(), want, rtol=1e-10)
        w, w_ref = w - update, w_ref - want
