"""Independent float64 re-implementation of Lion, written from the paper's formulas.

    c = beta1 * m + (1 - beta1) * g
    p = p - lr * (sign(c) + wd * p)
    m = beta2 * m + (1 - beta2) * g

with the options: maximize (g -> -g), cautious (Liang et al. 2024: keep the update where
sign(update) == sign(g), divide by the kept fraction, floored at 1e-3) and low-precision
storage (round p and/or m to their storage dtype after every step).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class StepConfig:
    lr: float
    beta1: float
    beta2: float
    weight_decay: float


def lion_step(p, m, g, cfg: StepConfig, *, maximize=False, cautious=False):
    """One step on float64 tensors; returns the new (p, m)."""
    g = -g if maximize else g
    c = cfg.beta1 * m + (1 - cfg.beta1) * g
    u = torch.sign(c)
    if cautious:
        keep = (u * g > 0).double()
        u = u * keep / max(keep.mean().item(), 1e-3)
    p = p - cfg.lr * (u + cfg.weight_decay * p)
    m = cfg.beta2 * m + (1 - cfg.beta2) * g
    return p, m


def run(p0, grads, configs, *, maximize=False, cautious=False, p_dtype=None, m_dtype=None):
    """Replay a trajectory: grads[i] and configs[i] are step i's gradient and hyper-parameters.

    p_dtype / m_dtype: storage dtypes to round to after each step (None: keep float64)."""
    p = p0.to(torch.float64)
    m = torch.zeros_like(p)
    for g, cfg in zip(grads, configs, strict=True):
        p, m = lion_step(p, m, g.to(torch.float64), cfg, maximize=maximize, cautious=cautious)
        if p_dtype is not None:
            p = p.to(p_dtype).to(torch.float64)
        if m_dtype is not None:
            m = m.to(m_dtype).to(torch.float64)
    return p, m


def newton_schulz_fp32(grad, coefficients, steps, eps):
    """torch.optim.Muon's own iteration (same calls) in fp32 instead of bf16: patched into
    ``torch.optim._muon._zeropower_via_newtonschulz`` so torch's Muon is an fp32 reference."""
    a, b, c = coefficients
    x = grad.float().T if grad.size(0) > grad.size(1) else grad.float()
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if grad.size(0) > grad.size(1) else x
