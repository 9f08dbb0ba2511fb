"""Bad input is refused at construction (or the first step, for grads) with a message that
names the value and what is allowed."""

from __future__ import annotations

import math

import pytest
import torch

import optforge


def w():
    return torch.nn.Parameter(torch.zeros(3))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(lr=-1e-3), ValueError, r"Invalid learning rate: -0\.001 \(must be a finite number"),
        (dict(lr=math.nan), ValueError, r"Invalid learning rate: nan"),
        (dict(lr=math.inf), ValueError, r"Invalid learning rate: inf"),
        (dict(lr="0.1"), TypeError, r"Invalid learning rate: '0\.1' \(must be a float or"),
        (dict(lr=torch.tensor([1e-3, 1e-3])), ValueError, r"must hold one floating-point value"),
        (dict(lr=torch.tensor(-1.0)), ValueError, r"Invalid learning rate: -1\.0"),
        (dict(betas=(1.0, 0.99)), ValueError, r"Invalid beta1: 1\.0 \(must be a number in \[0, 1"),
        (dict(betas=(0.9, -0.1)), ValueError, r"Invalid beta2: -0\.1"),
        (dict(betas=(0.9, math.nan)), ValueError, r"Invalid beta2: nan"),
        (dict(betas=(0.9,)), ValueError, r"Invalid betas: \(0\.9,\) \(must be a pair"),
        (dict(weight_decay=-0.1), ValueError, r"Invalid weight_decay: -0\.1 \(must be a finite"),
        (dict(weight_decay=math.nan), ValueError, r"Invalid weight_decay: nan"),
        (dict(foreach=True, fused=True), ValueError, r"foreach=True and fused=True are exclusive"),
        (dict(maximize="yes"), TypeError, r"Invalid maximize: 'yes' \(must be True or False\)"),
        (dict(fused=1), TypeError, r"Invalid fused: 1 \(must be None, True or False\)"),
        (dict(momentum_dtype=torch.int32), TypeError, r"Invalid momentum_dtype: torch\.int32"),
        (dict(momentum_dtype="bfloat16"), TypeError, r"Invalid momentum_dtype: 'bfloat16'"),
    ],
)  # fmt: skip
def test_bad_options_are_refused_at_construction(kwargs, error, message):
    with pytest.raises(error, match=message):
        optforge.Lion([w()], **kwargs)


def test_integer_params_are_refused_at_construction():
    with pytest.raises(TypeError, match=r"floating-point or complex tensors.*torch\.int64"):
        optforge.Lion([torch.zeros(3, dtype=torch.int64)])


def test_complex_params_with_momentum_dtype_are_refused():
    z = torch.nn.Parameter(torch.zeros(3, dtype=torch.complex64))
    with pytest.raises(ValueError, match="momentum_dtype=torch.bfloat16 cannot be used"):
        optforge.Lion([z], momentum_dtype=torch.bfloat16)


def test_fused_with_an_unsupported_dtype_pair_is_refused_at_construction():
    p = torch.nn.Parameter(torch.zeros(3, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match=r"does not support parameter dtype torch\.bfloat16 with "
                       r"momentum dtype torch\.float16 \(supported"):  # fmt: skip
        optforge.Lion([p], fused=True, momentum_dtype=torch.float16)


def test_unsupported_dtype_pair_falls_back_by_default():
    p = torch.nn.Parameter(torch.zeros(3, dtype=torch.bfloat16))
    p.grad = torch.ones_like(p)
    optforge.Lion([p], lr=0.5, momentum_dtype=torch.float16).step()
    assert p.tolist() == [-0.5, -0.5, -0.5]


def test_sparse_gradients_are_refused_at_the_first_step():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = optforge.Lion(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(TypeError, match="does not support sparse gradients"):
        opt.step()


def test_a_bad_added_group_is_refused_and_not_kept():
    opt = optforge.Lion([w()])
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        opt.add_param_group({"params": [w()], "lr": -1.0})
    with pytest.raises(TypeError, match="floating-point or complex"):
        opt.add_param_group({"params": [torch.zeros(2, dtype=torch.int32)]})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("kw", [dict(ratio=0.0), dict(ratio=-3), dict(wd_ratio=math.inf)])
def test_from_adamw_refuses_bad_ratios(kw):
    with pytest.raises(ValueError, match=r"Invalid (wd_)?ratio"):
        optforge.Lion.from_adamw([w()], **kw)


def test_functional_lion_checks_hyper_parameters():
    with pytest.raises(ValueError, match="Invalid beta1: 1.5"):
        optforge.optim.lion(
            [torch.zeros(2)], [torch.zeros(2)], [torch.zeros(2)], lr=0.1, beta1=1.5, beta2=0.9,
            weight_decay=0.0,
        )  # fmt: skip
