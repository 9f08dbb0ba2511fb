"""library.muon through ProgramOptimizer against torch.optim.Muon + torch.optim.AdamW, and
against a float64 re-implementation; the hidden-matrix rule; the step count."""

from __future__ import annotations

import io

import pytest
import torch
import torch.optim._muon as torch_muon
from torch import nn

import optforge
from optforge.optim.hidden import hidden_names
from optforge.program import library, parse
from tests.reference import newton_schulz_fp32

LR, RATIO, WD, MOMENTUM = 0.02, 0.1, 0.1, 0.95


def _model(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Embedding(10, 16), nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 24),
        nn.LayerNorm(24), nn.Linear(24, 10),
    ).to(dtype)  # fmt: skip


def _train(model: nn.Module, optimizers, steps: int) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randint(0, 10, (32, 5), generator=gen)
        y = torch.randint(0, 10, (32, 5), generator=gen)
        loss = nn.functional.cross_entropy(model(x).reshape(-1, 10), y.reshape(-1))
        for opt in optimizers:
            opt.zero_grad()
        loss.backward()
        for opt in optimizers:
            opt.step()


def _torch_pair(model: nn.Module) -> list[torch.optim.Optimizer]:
    names = hidden_names(model)
    named = list(model.named_parameters())
    return [
        torch.optim.Muon([p for n, p in named if n in names], lr=LR, weight_decay=WD,
                         momentum=MOMENTUM),
        torch.optim.AdamW([p for n, p in named if n not in names], lr=LR * RATIO,
                          weight_decay=0.0),
    ]  # fmt: skip


def _program_optimizer(model: nn.Module) -> optforge.ProgramOptimizer:
    program = library.muon(momentum=MOMENTUM, weight_decay=WD, adam_lr_ratio=RATIO)
    return optforge.ProgramOptimizer(optforge.hidden_groups(model), program, lr=LR)


def test_muon_program_follows_torch_muon_and_adamw_with_an_fp32_iteration(monkeypatch):
    monkeypatch.setattr(torch_muon, "_zeropower_via_newtonschulz", newton_schulz_fp32)
    ours, theirs = _model(), _model()
    _train(ours, [_program_optimizer(ours)], steps=20)
    _train(theirs, _torch_pair(theirs), steps=20)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=2e-5, msg=name)


def test_muon_program_is_close_to_torch_muon_with_its_bf16_iteration():
    """torch.optim.Muon iterates in bf16 (8 significant bits): one step's update agrees in
    direction, not to fp32 round-off (measured here: cosine 0.976, norm ratio 0.975 on the
    worst matrix; the fp32 iteration test above pins the rest of the formula exactly)."""
    ours, theirs = _model(), _model()
    start = [p.detach().clone() for p in ours.parameters()]
    _train(ours, [_program_optimizer(ours)], steps=1)
    _train(theirs, _torch_pair(theirs), steps=1)
    for p, q, w in zip(ours.parameters(), theirs.parameters(), start, strict=True):
        a, b = (p - w).detach().flatten().double(), (q - w).detach().flatten().double()
        assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.95
        assert (a.norm() - b.norm()).abs() < 0.05 * b.norm()


def _reference_float64(model: nn.Module, grads: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """Muon + AdamW written out in float64 from their definitions."""
    names = hidden_names(model)
    out = []
    for i, (name, p) in enumerate(model.named_parameters()):
        w, m, v = p.detach().clone(), torch.zeros_like(p), torch.zeros_like(p)
        for t, step in enumerate(grads, start=1):
            g = step[i]
            if name in names:
                m = MOMENTUM * m + (1 - MOMENTUM) * g
                x = (1 - MOMENTUM) * g + MOMENTUM * m
                tall = x.shape[0] > x.shape[1]
                x = x.T if tall else x
                x = x / x.norm()
                for _ in range(5):
                    gram = x @ x.T
                    x = 3.4445 * x + (-4.7750 * gram + 2.0315 * gram @ gram) @ x
                x = x.T if tall else x
                scale = max(1.0, p.shape[0] / p.shape[1]) ** 0.5
                w = w * (1 - LR * WD) - LR * scale * x
            else:
                m = 0.9 * m + 0.1 * g
                v = 0.999 * v + 0.001 * g * g
                m_hat, v_hat = m / (1 - 0.9**t), v / (1 - 0.999**t)
                w = w - LR * RATIO * m_hat / (v_hat.sqrt() + 1e-8)
        out.append(w)
    return out


def test_muon_program_equals_a_float64_reimplementation():
    model = _model(torch.float64)
    start = _model(torch.float64)
    opt = _program_optimizer(model)
    grads = []
    gen = torch.Generator().manual_seed(1)
    for _ in range(10):
        x = torch.randint(0, 10, (32, 5), generator=gen)
        y = torch.randint(0, 10, (32, 5), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x).reshape(-1, 10), y.reshape(-1)).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        opt.step()
    # replay the same gradients on the float64 reference from the same start
    expected = _reference_float64(start, grads)
    for p, w in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.detach(), w, rtol=1e-10, atol=1e-12)


class _WithPositions(nn.Module):
    def __init__(self):
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(5, 8))  # a free 2-D parameter: not a layer
        self.fc = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)


def test_hidden_rule_leaves_out_embeddings_the_head_and_vectors():
    assert hidden_names(_WithPositions()) == {"fc.weight"}
    model = nn.Sequential(
        nn.Embedding(10, 8), nn.Conv1d(8, 6, 3), nn.Flatten(), nn.Linear(6, 12),
        nn.LayerNorm(12), nn.Linear(12, 10),
    )  # fmt: skip
    assert hidden_names(model) == {"1.weight", "3.weight"}  # conv (6, 8*3) and the hidden Linear
    tied = nn.Sequential(nn.Embedding(10, 10), nn.Linear(10, 10), nn.Linear(10, 10))
    tied[2].weight = tied[0].weight  # a head tied to the embedding
    assert hidden_names(tied) == {"1.weight"}
    groups = optforge.hidden_groups(model, lr=0.1)
    assert [g["hidden"] for g in groups] == [True, False] and groups[0]["lr"] == 0.1


def test_group_hidden_option_decides_what_hidden_reads():
    program = parse(
        "def train(w, g, v1, v2, lr):\n    u = g * hidden\n    update = u * lr\n"
        "    return update, v1, v2"
    )
    m = torch.nn.Parameter(torch.ones(4, 3))
    b = torch.nn.Parameter(torch.ones(4))
    opt = optforge.ProgramOptimizer([{"params": [m]}, {"params": [b], "hidden": True}],
                                    program, lr=1.0)  # fmt: skip
    m.grad, b.grad = torch.ones(4, 3), torch.ones(4)
    opt.step()
    assert torch.equal(m.detach(), torch.zeros(4, 3))  # by shape: a matrix is hidden
    assert torch.equal(b.detach(), torch.zeros(4))  # told so
    with pytest.raises(ValueError, match="hidden"):
        optforge.ProgramOptimizer([m], program, hidden="yes")


def test_step_count_survives_a_checkpoint():
    program = parse(
        "def train(w, g, v1, v2, lr):\n    u = g * step\n    update = u * lr\n"
        "    return update, v1, v2"
    )
    p = torch.nn.Parameter(torch.zeros(3))
    opt = optforge.ProgramOptimizer([p], program, lr=1.0)
    for _ in range(3):
        p.grad = torch.ones(3)
        opt.step()
    assert torch.equal(p.detach(), -torch.full((3,), 1.0 + 2.0 + 3.0))
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    q = torch.nn.Parameter(p.detach().clone())
    restored = optforge.ProgramOptimizer([q], program, lr=1.0)
    buffer.seek(0)
    restored.load_state_dict(torch.load(buffer))
    q.grad = torch.ones(3)
    restored.step()
    assert torch.equal(q.detach(), -torch.full((3,), 10.0))
