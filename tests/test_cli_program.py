"""optforge show / simplify / export on program files and library names."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

import optforge
from optforge.cli import main
from optforge.program import library, parse
from optforge.program.simplify import simplify
from tests.program.test_simplify import MESSY


@pytest.fixture
def messy_file(tmp_path):
    path = tmp_path / "messy.py"
    path.write_text(MESSY.source())
    return path


def test_show_marks_redundant_lines_and_prints_hashes(messy_file, capsys):
    assert main(["show", str(messy_file)]) == 0
    out = capsys.readouterr().out
    assert out.count("# redundant") == 4  # junk, t, the dead state v2, junk2
    assert "21 statements, 4 redundant" in out
    assert "structural hash" in out and "fingerprint" in out


def test_show_reports_an_invalid_program(tmp_path, capsys):
    path = tmp_path / "bad.py"
    path.write_text(
        "def train(w, g, v1, v2, lr):\n    update = lr * 2.0\n    return update, v1, v2\n"
    )
    assert main(["show", str(path)]) == 1
    assert "is a scalar" in capsys.readouterr().out


def test_simplify_writes_the_canonical_program(messy_file, tmp_path, capsys):
    out = tmp_path / "simple.py"
    assert main(["simplify", str(messy_file), "-o", str(out)]) == 0
    assert parse(out.read_text()) == simplify(library.lion(0.9, 0.99, 0.3))
    assert "21 -> 6 statements; fingerprint unchanged" in capsys.readouterr().err


def test_library_names_and_json_files_are_accepted(tmp_path, capsys):
    assert main(["simplify", "adamw"]) == 0
    assert "interp(g, v1, 0.9)" in capsys.readouterr().out
    path = tmp_path / "lion.json"
    path.write_text(json.dumps(library.lion().to_json()))
    assert main(["show", str(path)]) == 0


def test_unknown_program_and_parse_errors_are_explained(tmp_path, capsys):
    assert main(["show", "no-such-thing"]) == 2
    assert "no library program (library: sgd, momentum" in capsys.readouterr().out
    path = tmp_path / "typo.py"
    path.write_text(
        "def train(w, g, v1, v2, lr):\n    update = sgn(g)\n    return update, v1, v2\n"
    )
    assert main(["show", str(path)]) == 2
    assert "line 2, column 14: unknown operation 'sgn'" in capsys.readouterr().out


@pytest.mark.parametrize("spec", ["lion", "adamw", "messy"])
def test_exported_module_reproduces_program_optimizer(spec, messy_file, tmp_path):
    module_path = tmp_path / f"exported_{spec}.py"
    source = str(messy_file) if spec == "messy" else spec
    assert main(["export", source, "-o", str(module_path), "--name", "MyOptimizer"]) == 0
    text = module_path.read_text()
    assert "optforge" not in text.split('"""', 2)[2]  # the code depends only on torch
    module_spec = importlib.util.spec_from_file_location(f"exported_{spec}", module_path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    program = MESSY if spec == "messy" else library.PROGRAMS[spec]()

    gen = torch.Generator().manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in [(6, 3), (4,), ()]]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    ours = optforge.ProgramOptimizer(a, program, lr=1e-2)
    theirs = module.MyOptimizer(b, lr=1e-2)
    for _ in range(10):
        for p, q in zip(a, b, strict=True):
            g = torch.randn(p.shape, generator=gen)
            p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
    for p, q in zip(a, b, strict=True):
        assert torch.equal(p, q)


def test_export_refuses_a_bad_class_name(tmp_path, capsys):
    assert main(["export", "lion", "-o", str(tmp_path / "x.py"), "--name", "not valid"]) == 2
    assert "is not a Python identifier" in capsys.readouterr().out


def test_bench_program_runs(capsys):
    assert main(["bench", "program", "--programs", "50"]) == 0
    out = capsys.readouterr().out
    assert "collisions" in out and "fingerprint preserved for 50/50" in out
