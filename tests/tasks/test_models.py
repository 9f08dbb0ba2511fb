"""The K-copy models: shapes, learning, and batched copies equal to separate ones."""

from __future__ import annotations

import pytest
import torch

from optforge.tasks.models import MLP, CharLM, ViT


def cases():
    gen = torch.Generator().manual_seed(0)
    vit = ViT(image=28, patch=7, dim=16, depth=2, heads=2)
    return {
        "vit": (vit, vit.prepare(torch.rand(15, 28, 28, generator=gen)).reshape(3, 5, 16, 49),
                torch.randint(0, 10, (3, 5), generator=gen)),
        "mlp": (MLP(inputs=64, hidden=16), torch.rand(3, 5, 8, 8, generator=gen),
                torch.randint(0, 10, (3, 5), generator=gen)),
        "lm": (CharLM(vocab=20, context=12, dim=16, depth=1, heads=2),
               torch.randint(0, 20, (3, 5, 12), generator=gen),
               torch.randint(0, 20, (3, 5, 12), generator=gen)),
    }  # fmt: skip


def test_vit_patches_match_unfold():
    """prepare() cuts images into row-major patches, as F.unfold does (an independent cut)."""
    x = torch.rand(4, 28, 28)
    reference = torch.nn.functional.unfold(x[:, None], kernel_size=7, stride=7).transpose(1, 2)
    assert torch.equal(ViT(image=28, patch=7, dim=16, depth=1, heads=2).prepare(x), reference)


@pytest.mark.parametrize("name", ["vit", "mlp", "lm"])
def test_shapes_and_flat_layout(name):
    model, x, y = cases()[name]
    theta = model.init([0, 1, 2])
    assert theta.shape == (3, model.num_params)
    logits = model.forward(model.views(theta), x)
    assert logits.shape == (*y.shape, 20 if name == "lm" else 10)
    assert not torch.equal(theta[0], theta[1])  # each candidate has its own seeded init
    assert torch.equal(model.init([1])[0], theta[1])  # and it depends on its seed only


@pytest.mark.parametrize("name", ["vit", "mlp", "lm"])
def test_batched_forward_equals_separate_copies(name):
    model, x, _ = cases()[name]
    theta = model.init([0, 1, 2])
    together = model.forward(model.views(theta), x)
    for k in range(3):
        alone = model.forward(model.views(theta[k : k + 1]), x[k : k + 1])
        torch.testing.assert_close(together[k], alone[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["vit", "mlp", "lm"])
def test_a_few_steps_reduce_the_loss(name):
    model, x, y = cases()[name]
    theta = model.init([0, 1, 2]).requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=3e-3)

    def loss():
        logits = model.forward(model.views(theta), x)
        return torch.nn.functional.cross_entropy(logits.flatten(0, -2), y.flatten())

    first = loss().item()
    for _ in range(30):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < 0.7 * first


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="image 28 must divide by patch 5"):
        ViT(image=28, patch=5, dim=16, depth=1, heads=2)
    with pytest.raises(ValueError, match="dim 10 must divide by heads 3"):
        CharLM(vocab=5, context=4, dim=10, depth=1, heads=3)
