"""`optforge export` of shaped programs: matrix operations and the inputs hidden, aspect, step.

The exported module carries layout.py's own code; these tests train a small model with it and
with optforge's executor side by side, and check per-group ``hidden`` against torch's AdamW.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import optforge
from optforge.program import execute, layout, library, parse
from optforge.program.analysis import analyze
from optforge.program.export import export, layout_source

SHAPED = parse(
    textwrap.dedent("""\
    def train(w, g, v1, v2, lr):
        v1 = interp(g, v1, 0.9)
        r = row_rms(v1)
        r = r + eps
        u = v1 / r
        c = col_mean(g)
        c = c * 0.5
        u = u + c
        k = power(0.9, step)
        k = invert(k)
        a = aspect * hidden
        f = a + k
        u = u * f
        q = dot(u, aspect)
        q = q * 1e-3
        u = u + q
        update = u * lr
        return update, v1, v2
    """)
)


def _load(source: str, name: str, tmp_path):
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Net(nn.Module):
    """Linear layers with biases, a conv weight (3-D), and a 1-D scale."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 3)
        self.hidden1 = nn.Linear(24, 16)
        self.hidden2 = nn.Linear(16, 16)
        self.scale = nn.Parameter(torch.ones(16))
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = torch.tanh(self.conv(x)).flatten(1)
        h = torch.tanh(self.hidden1(h))
        h = torch.tanh(self.hidden2(h)) * self.scale
        return self.head(h)


def _models(n: int) -> list[_Net]:
    torch.manual_seed(0)
    first = _Net()
    models = [first]
    for _ in range(n - 1):
        models.append(_Net())
        models[-1].load_state_dict(first.state_dict())
    return models


def _train(models, optimizers, steps: int) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(8, 2, 8, generator=gen)
        y = torch.randn(8, 3, generator=gen)
        for model, opt in zip(models, optimizers, strict=True):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()


class _ByHand:
    """The executor driven by hand: ``execute.run_foreach`` over each group's tensors with
    the group's ``hidden`` and the step count (1 at the first step)."""

    def __init__(self, groups, program, lr):
        self.groups = [{"hidden": None, **g, "params": list(g["params"])} for g in groups]
        self.program, self.lr, self.t = program, lr, 0
        self.reads = analyze(program).reads
        self.state = {}

    def zero_grad(self):
        for group in self.groups:
            for p in group["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self):
        self.t += 1
        for group in self.groups:
            ps = group["params"]
            states = {
                s: [self.state.setdefault((id(p), s), torch.zeros_like(p)) for p in ps]
                if s in self.reads
                else None
                for s in ("v1", "v2")
            }
            hidden = None if group["hidden"] is None else [group["hidden"]] * len(ps)
            update, v1, v2 = execute.run_foreach(
                self.program, ps, [p.grad for p in ps], states["v1"], states["v2"], self.lr,
                hidden=hidden, step=torch.full((len(ps),), float(self.t)),
            )  # fmt: skip
            for p, u in zip(ps, update, strict=True):
                p.sub_(u)
            for s, new in (("v1", v1), ("v2", v2)):
                if s in self.reads:
                    for old, value in zip(states[s], new, strict=True):
                        old.copy_(value)


def _assert_same(a: nn.Module, b: nn.Module) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, msg=lambda m, name=name: f"{name}: {m}")


def _groups(model: _Net) -> list[dict]:
    """``optforge.hidden_groups``: the conv and hidden Linear weights hidden, the rest not."""
    groups = optforge.hidden_groups(model)
    weights = {id(model.conv.weight), id(model.hidden1.weight), id(model.hidden2.weight)}
    assert [g["hidden"] for g in groups] == [True, False]
    assert {id(p) for p in groups[0]["params"]} == weights
    return groups


@pytest.mark.parametrize("which", ["muon", "shaped"])
def test_exported_optimizer_trains_as_the_executor(which, tmp_path):
    program = library.muon() if which == "muon" else SHAPED
    module = _load(export(program, "Exported"), f"exported_{which}", tmp_path)
    models = _models(3)
    ours = module.Exported(_groups(models[0]), lr=0.02)
    hand = _ByHand(_groups(models[1]), program, lr=0.02)
    theirs = optforge.ProgramOptimizer(_groups(models[2]), program, lr=0.02)
    optimizers = [ours, hand, theirs]
    _train(models, optimizers, steps=6)
    _assert_same(models[0], models[1])  # the executor by hand: equal to fp32 round-off
    for p, q in zip(models[0].parameters(), models[2].parameters(), strict=True):
        assert torch.equal(p, q)  # ProgramOptimizer runs the same torch calls: bit for bit
    assert all(float(s["step"]) == 6 for s in ours.state.values())
    start = _models(1)[0].parameters()
    moved = [not torch.equal(p, q) for p, q in zip(models[0].parameters(), start, strict=True)]
    assert all(moved)


def test_default_hidden_is_the_shape_rule(tmp_path):
    """hidden=None (the default) decides per tensor: matrix views with 2+ rows and columns."""
    module = _load(export(library.muon(), "Exported"), "exported_default", tmp_path)
    models = _models(2)
    ours = module.Exported(models[0].parameters(), lr=0.02)
    hand = _ByHand([{"params": models[1].parameters()}], library.muon(), lr=0.02)
    _train(models, [ours, hand], steps=4)
    _assert_same(*models)


def test_hidden_false_is_adamw_and_hidden_true_is_muon_for_every_tensor(tmp_path):
    module = _load(export(library.muon(), "Exported"), "exported_flags", tmp_path)
    models = _models(3)
    # all hidden=False: library.muon() is AdamW at lr * adam_lr_ratio, weight decay 0
    ours = module.Exported(models[0].parameters(), lr=0.02, hidden=False)
    adamw = torch.optim.AdamW(models[1].parameters(), lr=0.002, betas=(0.9, 0.999), eps=1e-8,
                              weight_decay=0.0)  # fmt: skip
    _train(models[:2], [ours, adamw], steps=5)
    _assert_same(models[0], models[1])

    # one step, hidden=True on every tensor vs the shape rule: the weight matrices (hidden
    # either way) move alike, the biases and the 1-D scale get Muon's x / |x| instead of AdamW
    models = _models(3)
    everything = module.Exported(models[0].parameters(), lr=0.02, hidden=True)
    by_shape = module.Exported(models[1].parameters(), lr=0.02)
    hand = _ByHand([{"params": models[2].parameters(), "hidden": True}], library.muon(), 0.02)
    _train(models, [everything, by_shape, hand], steps=1)
    _assert_same(models[0], models[2])
    for (name, p), q in zip(models[0].named_parameters(), models[1].parameters(), strict=True):
        if p.dim() >= 2:
            torch.testing.assert_close(p, q)
        else:
            assert not torch.allclose(p, q), name
    # hidden=True on a 1-D tensor: its orthogonalized momentum is x / |x| (a unit vector,
    # aspect 1), so the first step moves it by lr * (x / |x| + 0.1 * w): norm lr once the
    # weight decay is taken out
    start = dict(_models(1)[0].named_parameters())
    for name, p in models[0].named_parameters():
        if p.dim() == 1:
            moved = start[name].detach() - p.detach()
            decay = 0.02 * 0.1 * start[name].detach()
            assert abs(float((moved - decay).norm()) - 0.02) < 1e-6, name


def test_invalid_hidden_is_refused(tmp_path):
    module = _load(export(library.muon(), "Exported"), "exported_bad", tmp_path)
    with pytest.raises(ValueError, match="Invalid hidden"):
        module.Exported([nn.Parameter(torch.zeros(2, 2))], hidden="yes")


def test_exported_source_is_layout_py_and_imports_torch_only(tmp_path):
    source = export(library.muon(), "Exported")
    imports, code = layout_source()
    assert code in source and "def newton_schulz" in code and "class Segments" in code
    assert ast.get_docstring(ast.parse(inspect.getsource(layout))) not in source
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            modules.add(node.module.split(".")[0])
    assert modules == {"math", "torch"}

    # it runs where optforge cannot be imported at all
    path = tmp_path / "standalone.py"
    path.write_text(source)
    script = textwrap.dedent(f"""\
        import importlib.util, sys
        sys.modules["optforge"] = None  # any optforge import fails
        import torch
        spec = importlib.util.spec_from_file_location("standalone", {str(path)!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        ps = [torch.nn.Parameter(torch.randn(s)) for s in [(5, 3), (4, 2, 3), (3,)]]
        opt = module.Exported(ps, lr=0.1)
        for p in ps:
            p.grad = torch.randn(p.shape)
        opt.step()
        print("ok", all(torch.isfinite(p).all() for p in ps))
        """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok True"


def test_program_names_that_clash_with_the_module_are_renamed(tmp_path):
    program = parse(
        textwrap.dedent("""\
        def train(w, g, v1, v2, lr):
            Segments = orthogonalize(g)
            zip = Segments * aspect
            seg = zip * step
            seg_ = seg + w
            update = seg_ * lr
            return update, v1, v2
        """)
    )
    module = _load(export(program, "Exported"), "exported_names", tmp_path)
    models = _models(2)
    ours = module.Exported(models[0].parameters(), lr=0.01)
    hand = _ByHand([{"params": models[1].parameters()}], program, lr=0.01)
    _train(models, [ours, hand], steps=2)
    _assert_same(*models)


def test_primitives_lists_inputs_as_bare_names_and_matrix_operations(capsys):
    from optforge.cli import main

    assert main(["primitives", "--markdown"]) == 0
    out = capsys.readouterr().out
    for name in ("hidden", "aspect", "step"):
        assert f"| {name} | `{name}` | 0 | input |" in out
    assert "| orthogonalize | `orthogonalize(x)` | 1 | matrix | `seg.orthogonalize(x)` |" in out
    assert "| row_rms | `row_rms(x)` | 1 | matrix |" in out
