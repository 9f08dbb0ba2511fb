"""`optforge bench precision`: the variants train, and the state bytes match a closed form."""

from __future__ import annotations

import math

import pytest
import torch

from optforge.bench import precision
from optforge.tasks.data import DatasetMissing


@pytest.fixture(scope="module")
def task():
    try:
        return precision.fmnist_mlp(steps=3, batch=16)
    except DatasetMissing as e:
        pytest.skip(str(e))


def _expected_bytes(model, variant):
    total = 0
    for p in model.parameters():
        if variant.momentum_dtype == torch.int8 and p.numel() >= 4096:
            total += p.numel() + 4 * math.ceil(p.numel() / 256)
        elif variant.momentum_dtype == torch.int8:
            total += 4 * p.numel()
        else:
            dtype = variant.momentum_dtype or variant.param_dtype
            total += p.numel() * torch.empty(0, dtype=dtype).element_size()
    return total / sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("variant", precision.VARIANTS, ids=lambda v: v.name)
def test_state_bytes_match_the_closed_form(task, variant):
    value, nbytes = precision.train(task, variant, seed=0)
    assert 0.0 <= value <= 1.0
    assert nbytes == pytest.approx(_expected_bytes(task.build(), variant))


def test_table_reports_the_gap_to_fp32():
    fp32, int8 = precision.VARIANTS[0].name, precision.VARIANTS[2].name
    results = [precision.Result(fp32, "t", "acc", [0.8, 0.82], 4.0),
               precision.Result(int8, "t", "acc", [0.79, 0.81], 1.02)]  # fmt: skip
    rows = precision.table_rows(results)
    assert rows[0][2:4] == ["0.8100 ± 0.0141", "+0.0000"]
    assert rows[1][3] == "-0.0100"
