"""Running programs: one flat tensor, or a list of tensors in one pass (foreach style)."""

from __future__ import annotations

import pytest
import torch

from optforge.program import ProgramError, library, parse
from optforge.program.execute import Segments, run, run_foreach

NORMED = parse("""def train(w, g, v1, v2, lr):
    n = norm(g)
    u = g / n
    total = global_norm(g)
    k = total * 0.01
    u = u + k
    update = u * lr
    v1 = interp(g, v1, 0.9)
    return update, v1, v2""")


def tensors(seed, shapes=((3, 4), (5,), ())):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]


@pytest.mark.parametrize("program", [library.adamw(eps=1e-8, weight_decay=0.1), library.lion()])
def test_foreach_equals_running_each_tensor(program):
    ws, gs, v1s, v2s = tensors(0), tensors(1), tensors(2), [t.abs() for t in tensors(3)]
    out = run_foreach(program, ws, gs, v1s, v2s, 0.1)
    for i in range(len(ws)):
        single = run(program, ws[i], gs[i], v1s[i], v2s[i], 0.1)
        for many, one in zip(out, single, strict=True):
            if one is None:  # a state the program never reads: no value to keep
                assert many is None
                continue
            torch.testing.assert_close(many[i], one, rtol=1e-14, atol=1e-15)
            assert many[i].shape == ws[i].shape


def test_reductions_stay_per_tensor_and_global_norm_spans_all():
    ws, gs, v1s = tensors(0), tensors(1), tensors(2)
    update, v1, v2 = run_foreach(NORMED, ws, gs, v1s, None, 0.5)
    total = torch.sqrt(sum((g * g).sum() for g in gs))
    for u, g in zip(update, gs, strict=True):
        torch.testing.assert_close(u, 0.5 * (g / g.norm() + 0.01 * total), rtol=1e-13, atol=0)
    assert v2 is None  # never read, never written: no state to keep


def test_segments_reduce_within_each_tensor():
    seg = Segments([2, 3])
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    assert seg.sum(x).tolist() == [3.0, 12.0]
    assert seg.expand(torch.tensor([10.0, 20.0])).tolist() == [10.0, 10.0, 20.0, 20.0, 20.0]


def test_fp32_inputs_compute_in_fp32_and_keep_shapes():
    w = torch.randn(4, 3)
    update, v1, _ = run(library.lion(), w, torch.randn(4, 3), torch.zeros(4, 3), None, 1e-3)
    assert update.dtype == torch.float32 and update.shape == (4, 3) and v1.shape == (4, 3)


def test_missing_state_or_invalid_program_is_an_error():
    with pytest.raises(ProgramError, match="reads \\['v1'\\]"):
        run(library.lion(), torch.zeros(3), torch.zeros(3), None, None, 0.1)
    bad = parse("def train(w, g, v1, v2, lr):\n    u = lr * 2.0\n    return u, v1, v2")
    with pytest.raises(ProgramError, match="is a scalar"):
        run(bad, torch.zeros(3), torch.zeros(3), None, None, 0.1)
