"""User tasks for the tests, importable as ``tests.tasks.user_fixture:FACTORY``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from optforge.tasks.user import UserTask


class HandShapedMLP(nn.Module):
    """The registry's MLP (models.MLP) as a user would write it, parameters in the same order
    and layout, so the two can be compared on the same theta."""

    def __init__(self, inputs=64, hidden=32, classes=10):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(inputs, hidden) / math.sqrt(inputs))
        self.b1 = nn.Parameter(torch.zeros(hidden))
        self.w2 = nn.Parameter(torch.randn(hidden, classes) / math.sqrt(hidden))
        self.b2 = nn.Parameter(torch.zeros(classes))

    def forward(self, x):
        return F.gelu(x.flatten(-1) @ self.w1 + self.b1) @ self.w2 + self.b2


def _digits():
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


def tiny() -> UserTask:
    train, val = _digits()
    return UserTask("digits-mlp-user", HandShapedMLP, train, val, steps=25, batch=16,
                    baselines={"adamw": (0.01, 0.0), "lion": (0.003, 0.0)})  # fmt: skip


def with_dropout() -> UserTask:
    train, val = _digits()
    model = lambda: nn.Sequential(nn.Linear(64, 8), nn.Dropout(0.5), nn.Linear(8, 10))  # noqa: E731
    return UserTask("dropout", model, train, val, steps=3)


def with_batchnorm() -> UserTask:
    train, val = _digits()
    model = lambda: nn.Sequential(nn.Linear(64, 8), nn.BatchNorm1d(8), nn.Linear(8, 10))  # noqa: E731
    return UserTask("batchnorm", model, train, val, steps=3)


def not_a_task():
    return 42
