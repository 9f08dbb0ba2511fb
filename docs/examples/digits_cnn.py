"""A user's own fitness task: a small CNN on scikit-learn's 8x8 digits.

Search optimizers that train it well (from the repository root, so that this file imports):

    PYTHONPATH=docs/examples optforge search --task digits_cnn:task --budget 200 --no-funnel
    PYTHONPATH=docs/examples optforge eval lion --task digits_cnn:task
    PYTHONPATH=docs/examples optforge tune --task digits_cnn:task --optimizers adamw,lion

optforge trains many candidates of this model at once (torch.func.vmap over the module), each
from its own seed: the module built under torch.manual_seed(seed) and its own batch order.
"""

import torch
from sklearn.datasets import load_digits
from torch import nn

from optforge.tasks.user import UserTask


class SmallCNN(nn.Module):
    def __init__(self, channels: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, 2 * channels, 3, padding=1)
        self.head = nn.Linear(2 * channels * 2 * 2, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x.unsqueeze(-3))), 2)  # 8x8 -> 4x4
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)  # 4x4 -> 2x2
        return self.head(x.flatten(-3))


def task(steps: int = 300, channels: int = 8) -> UserTask:
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, val = order[:1400], order[1400:]
    return UserTask(
        name="digits-cnn",
        model=lambda: SmallCNN(channels),
        train=(x[train], y[train]),
        val=(x[val], y[val]),
        loss=nn.functional.cross_entropy,
        steps=steps,
        batch=32,
    )


def tiny() -> UserTask:
    """The same at test size."""
    return task(steps=20, channels=2)
