"""`optforge export --format optax`: programs as optax transformations in standalone JAX modules.

References: ``optax.lion`` itself for Lion; ``ProgramOptimizer`` (torch) for every library
program, mutated programs and a program using every kind of primitive, on the same parameters,
gradients and learning-rate schedule; each primitive's torch form for its JAX form.

Tolerances. Both sides compute in fp32 with different kernels (XLA's exp/log/pow/tanh against
ATen's, other summation orders for the per-tensor reductions, other matmul blocking inside
Newton-Schulz), so they agree to a few ulps per operation, not bit for bit. A trajectory is
compared elementwise with ``atol + rtol * |x|`` plus ``slack * |fp32 - fp64|``, the distance of
torch's own fp32 trajectory from its fp64 one: a random program may divide by a difference of
near-equal numbers or take the sign of a near-zero value, and there fp32 itself is as far from
the exact result as the two fp32 implementations are from each other. Well-conditioned programs
(all of the library) get ``rtol = 1e-5``, ~100 ulps over four steps.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import random
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

jax = pytest.importorskip("jax", reason="the optax export is tested with jax and optax installed")
optax = pytest.importorskip("optax", reason="the optax export is tested with jax and optax")
jnp = pytest.importorskip("jax.numpy")

import optforge  # noqa: E402
from optforge.optim.program_optimizer import NonFiniteUpdateError  # noqa: E402
from optforge.program import layout, layout_jax, library, parse  # noqa: E402
from optforge.program.analysis import analyze  # noqa: E402
from optforge.program.export import UnsupportedPrimitiveError  # noqa: E402
from optforge.program.export_optax import export_optax  # noqa: E402
from optforge.program.generate import MATRIX_OPERATIONS, random_program  # noqa: E402
from optforge.program.primitives import INPUT_NAMES, PRIMITIVES, SEGMENTED  # noqa: E402
from optforge.search.mutation import MutationConfig, mutate  # noqa: E402

SHAPES = {"tall": (5, 3), "wide": (3, 7), "conv": (2, 3, 2), "bias": (4,), "gain": ()}
"""A tall and a wide matrix, a 3-D tensor (matrix view 2 x 6), a vector and a scalar: hidden
by the shape rule are the first three."""
STEPS = 4
RTOL, ATOL, SLACK = 1e-5, 1e-6, 10.0


def schedule(count):
    """A warm-up: the learning rate of update ``count`` (0 at the first), as optax calls it."""
    return 0.01 * jnp.minimum(1.0, (count + 1.0) / 3.0)


# every kind of primitive in one program: per-tensor reductions of tensors and of scalars,
# global_norm of a tensor, of a per-tensor scalar and of a uniform one, clip_by_global_norm,
# the matrix operations and the three inputs
EVERYTHING = parse(
    textwrap.dedent("""\
    def train(w, g, v1, v2, lr):
        v1 = interp(g, v1, 0.9)
        g2 = square(g)
        v2 = interp(g2, v2, 0.99)
        n = norm(v1)
        a = mean(v2)
        c = cosine_sim(g, v1)
        d = dot(v1, hidden)
        k = global_norm(g)
        q = global_norm(n)
        r = global_norm(lr)
        s = norm(lr)
        t = dot(n, aspect)
        h = global_norm(hidden)
        o = orthogonalize(v1)
        o = o * aspect
        rr = row_rms(g)
        rr = rr + eps
        cm = col_mean(v1)
        u = cm / rr
        u = u + o
        x = clip_by_global_norm(u, 3.0)
        b = power(0.9, step)
        b = invert(b)
        f = a + c
        f = f * d
        f = f + k
        f = f * q
        f = f + r
        f = f * s
        f = f + t
        f = f * h
        f = f * 1e-3
        f = f + b
        y = x * f
        y = interp(y, g, hidden)
        z = w * 0.01
        y = y + z
        update = y * lr
        return update, v1, v2
    """)
)


def _mutated(count: int, seed: int = 0) -> list:
    """Programs the search would evaluate: library programs after 1-6 mutations of the matrix
    language, and fresh random programs with matrix operations and inputs."""
    rng = random.Random(seed)
    config = MutationConfig(language="matrix")
    parents = [library.lion(), library.adamw(), library.muon(), library.torch_adamw(),
               library.signum(), library.momentum()]  # fmt: skip
    programs = []
    for i in range(count):
        if i % 3 == 2:
            programs.append(random_program(rng, rng.randint(3, 12), MATRIX_OPERATIONS,
                                           inputs=INPUT_NAMES))  # fmt: skip
            continue
        program = parents[i % len(parents)]
        for _ in range(rng.randint(1, 6)):
            program, _ = mutate(program, rng, config)
        programs.append(program)
    return programs


CASES = {
    **{name: factory() for name, factory in library.PROGRAMS.items()},
    "lion_wd": library.lion(0.9, 0.99, 0.1),
    "everything": EVERYTHING,
    **{f"mutant{i}": p for i, p in enumerate(_mutated(30))},
}


def _load(source: str, name: str, tmp_path):
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _data(seed: int = 0):
    """Initial parameters and one gradient per step, float64 numpy (cast by each side)."""
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    grads = [{k: rng.standard_normal(s) for k, s in SHAPES.items()} for _ in range(STEPS)]
    return params, grads


def _torch_run(program, dtype, params, grads, **options):
    """ProgramOptimizer's trajectory: per step the parameters and states it keeps, or None
    from the step it refuses as non-finite."""
    tensors = {k: torch.nn.Parameter(torch.tensor(v, dtype=dtype)) for k, v in params.items()}
    opt = optforge.ProgramOptimizer(list(tensors.values()), program, lr=1.0, **options)
    out = []
    for step, grad in enumerate(grads):
        for k, p in tensors.items():
            p.grad = torch.tensor(grad[k], dtype=dtype)
        opt.param_groups[0]["lr"] = float(schedule(step))
        try:
            opt.step()
        except NonFiniteUpdateError:
            out.append(None)
            break
        # copies: a float64 tensor's .numpy() would be the live parameter itself
        states = [s for s in ("v1", "v2") if s in opt.state[tensors["tall"]]]
        out.append((_numpy(tensors), {s: _numpy({k: opt.state[p][s] for k, p in tensors.items()})
                                      for s in states}))  # fmt: skip
    return out


def _numpy(tensors: dict) -> dict:
    return {k: t.detach().to(torch.float64, copy=True).numpy() for k, t in tensors.items()}


def _jax_run(module, params, grads, jit=False, **options):
    tx = module.exported_optimizer(schedule, **options)
    params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    state = tx.init(params)
    update = jax.jit(tx.update) if jit else tx.update
    out = []
    for grad in grads:
        updates, state = update({k: jnp.asarray(v, jnp.float32) for k, v in grad.items()},
                                state, params)  # fmt: skip
        params = optax.apply_updates(params, updates)
        kept = {s: getattr(state, s) for s in ("v1", "v2") if getattr(state, s) is not None}
        out.append(({k: np.asarray(v, np.float64) for k, v in params.items()},
                    {s: {k: np.asarray(v, np.float64) for k, v in t.items()}
                     for s, t in kept.items()}))  # fmt: skip
    return out


def _finite(step) -> bool:
    params, states = step
    values = [*params.values(), *(v for s in states.values() for v in s.values())]
    return all(np.isfinite(v).all() for v in values)


def _flat(step) -> np.ndarray:
    params, states = step
    parts = [params[k] for k in SHAPES] + [states[s][k] for s in sorted(states) for k in SHAPES]
    return np.concatenate([np.ravel(p) for p in parts])


@pytest.mark.parametrize("name", list(CASES))
def test_trajectory_matches_program_optimizer(name, tmp_path):
    program = CASES[name]
    module = _load(export_optax(program), f"optax_{name}", tmp_path)
    params, grads = _data()
    # jitted, as users run it, except the mutants: eager JAX compiles each operation once
    # for all of them, where jit compiles each program (~0.5 s)
    ours = _jax_run(module, params, grads, jit=not name.startswith("mutant"))
    fp32 = _torch_run(program, torch.float32, params, grads)
    fp64 = _torch_run(program, torch.float64, params, grads)
    for step, (j, t) in enumerate(zip(ours, fp32, strict=False)):
        if t is None:  # ProgramOptimizer refused a NaN/inf step: ours has one there too
            assert not _finite(j), f"step {step + 1}: torch saw NaN/inf, JAX did not"
            return
        assert set(j[1]) == set(t[1])  # the same states are kept
        if not _finite(t):
            return  # inf in a parameter can only come from overflowing arithmetic: stop here
        exact = fp64[step]
        slack = 0.0 if exact is None or not _finite(exact) else np.abs(_flat(t) - _flat(exact))
        got, want = _flat(j), _flat(t)
        allowed = ATOL + RTOL * np.abs(want) + SLACK * slack
        bad = ~(np.abs(got - want) <= allowed)
        assert not bad.any(), (
            f"step {step + 1}: {bad.sum()} of {bad.size} values differ, worst "
            f"{np.max(np.abs(got - want)[bad]):.3g}\n{program}"
        )


def test_the_cases_cover_every_kind_of_primitive():
    """The trajectories above run reductions, global_norm, the matrix operations and the
    inputs, in live statements."""
    live = set()
    for program in CASES.values():
        analysis = analyze(program)
        for i, s in enumerate(program.statements):
            if i not in analysis.redundant:
                live.add(s.op)
                live.update(a for a in s.args if isinstance(a, str) and a in PRIMITIVES)
    kinds = {"norm", "mean", "dot", "cosine_sim", "global_norm", "clip_by_global_norm",
             "orthogonalize", "row_rms", "col_mean", "hidden", "aspect", "step"}  # fmt: skip
    assert kinds <= live
    assert sum(analyze(p).shaped for n, p in CASES.items() if n.startswith("mutant")) >= 5


def test_exported_lion_is_optax_lion(tmp_path):
    """optax.lion is scale_by_lion, then add_decayed_weights(weight_decay), then -lr: the decay
    is added to the sign before the learning rate scales both, as library.lion's ``d = w * wd``
    does, so the same ``weight_decay`` means the same thing in both (torch's Lion writes it
    ``w *= 1 - lr * wd``: the same again)."""
    module = _load(export_optax(library.lion(0.95, 0.98, 0.1)), "optax_lion", tmp_path)
    params, grads = _data(1)
    for learning_rate in (3e-3, schedule):
        ours_tx = module.exported_optimizer(learning_rate)
        theirs_tx = optax.lion(learning_rate, b1=0.95, b2=0.98, weight_decay=0.1)
        ours = theirs = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
        ours_state, theirs_state = ours_tx.init(ours), theirs_tx.init(theirs)
        for grad in grads + grads:
            g = {k: jnp.asarray(v, jnp.float32) for k, v in grad.items()}
            u, ours_state = jax.jit(ours_tx.update)(g, ours_state, ours)
            v, theirs_state = jax.jit(theirs_tx.update)(g, theirs_state, theirs)
            ours, theirs = optax.apply_updates(ours, u), optax.apply_updates(theirs, v)
            for k in SHAPES:
                np.testing.assert_allclose(u[k], v[k], rtol=1e-6, atol=1e-9)
                np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-6, atol=1e-9)
                # the momentum as torch.lerp rounds it, v - (v - g)(1 - b2), and as optax
                # does, b2 v + (1 - b2) g: a few ulps apart
                np.testing.assert_allclose(ours_state.v1[k], theirs_state[0].mu[k], rtol=1e-5,
                                           atol=1e-8)  # fmt: skip
        assert int(ours_state.count) == 2 * STEPS and ours_state.v2 is None


def _namespace(target: str):
    if target == "torch":
        return {"torch": torch}
    return {"jax": jax, "jnp": jnp, **{n: getattr(layout_jax, n) for n in ("sign", "lerp")}}


def _segments(target: str, hidden=None):
    shapes = list(SHAPES.values())
    if target == "torch":
        return layout.Segments(shapes, hidden=hidden), layout.ScalarSegments
    return layout_jax.Segments(shapes, hidden=hidden), layout_jax.ScalarSegments()


@pytest.mark.parametrize("name", list(PRIMITIVES))
def test_each_primitive_has_a_jax_form_that_computes_its_torch_form(name):
    """Each table entry's ``jax`` text against its ``code`` text, on the same fp32 values (with
    0, +-1, +-inf and NaN among them) over the test layout, per-tensor scalars included."""
    prim = PRIMITIVES[name]
    assert prim.jax is not None
    rng = np.random.default_rng(sum(map(ord, name)))
    total = sum(int(np.prod(s)) for s in SHAPES.values())
    special = [0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 0.5, -0.5, 2.0]
    args = [np.concatenate([special, rng.uniform(-3, 3, total - len(special))]).astype(np.float32)
            for _ in prim.params]  # fmt: skip
    per_tensor = rng.uniform(-2, 2, len(SHAPES)).astype(np.float32)
    results = {}
    for target in ("torch", "jax"):
        seg, scalar_seg = _segments(target)
        as_array = torch.tensor if target == "torch" else jnp.asarray
        scope = {**_namespace(target), "seg": seg,
                 "dtype": torch.float32 if target == "torch" else jnp.float32,
                 "step": as_array(np.float32(3.0))}  # fmt: skip
        values = [as_array(a) for a in args]
        code = prim.code_for(target)
        results[target] = [
            np.asarray(eval(code, scope, dict(zip(prim.params, values, strict=True))))
        ]  # noqa: S307
        if prim.kind in ("reduce", "global", "elementwise") and prim.params:
            # per-tensor scalars, as reductions of scalars see them
            scope["seg"] = scalar_seg
            values = [as_array(per_tensor)] * len(prim.params)
            local = dict(zip(prim.params, values, strict=True))
            results[target].append(np.asarray(eval(code, scope, local)))  # noqa: S307
    for ours, theirs in zip(results["jax"], results["torch"], strict=True):
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, rtol=2e-6, atol=1e-6, equal_nan=True)


def test_inputs_of_one_value_are_one_value_in_both_layouts():
    """``hidden`` when every tensor says the same is a 0-dim value in layout.py, which changes
    what global_norm(hidden) adds up; layout_jax.py does the same."""
    for hidden in ([True] * len(SHAPES), None):
        t = _segments("torch", hidden)[0].input("hidden", torch.float32)
        j = _segments("jax", hidden)[0].input("hidden", jnp.float32)
        assert t.shape == j.shape
        np.testing.assert_array_equal(np.asarray(j), t.numpy())


def test_hidden_and_aspect_options(tmp_path):
    """hidden as one bool, a pytree or a callable; aspect as a pytree: against ProgramOptimizer
    (hidden) and the executor on a layout with those aspects."""
    program = library.muon()
    module = _load(export_optax(program), "optax_muon_options", tmp_path)
    params, grads = _data(2)
    grads = grads[:2]
    shape_rule = {k: len(s) >= 2 for k, s in SHAPES.items()}
    everything = {k: True for k in SHAPES}
    by_default = _jax_run(module, params, grads)
    assert _close(_jax_run(module, params, grads, hidden=shape_rule), by_default)
    assert _close(_jax_run(module, params, grads, hidden=lambda p: shape_rule), by_default)
    hidden = _jax_run(module, params, grads, hidden=True)
    assert _close(_jax_run(module, params, grads, hidden=everything), hidden)
    assert _close(hidden, _torch_run(program, torch.float32, params, grads, hidden=True))
    assert not _close(hidden, by_default)  # the vector and the scalar went to Muon

    aspect = {"tall": 1.5, "wide": 0.5, "conv": 2.0, "bias": 1.0, "gain": 3.0}
    ours = _jax_run(module, params, grads[:1], aspect=aspect)[0][0]
    tensors = [torch.tensor(params[k], dtype=torch.float32) for k in SHAPES]
    seg = layout.Segments(list(SHAPES.values()), aspect=list(aspect.values()))
    update, _, _ = optforge.program.execute.run_foreach(
        program, tensors, [torch.tensor(grads[0][k], dtype=torch.float32) for k in SHAPES],
        [torch.zeros_like(t) for t in tensors], [torch.zeros_like(t) for t in tensors],
        float(schedule(0)), step=1.0, segments=seg,
    )  # fmt: skip
    for (k, t), u in zip(zip(SHAPES, tensors, strict=True), update, strict=True):
        np.testing.assert_allclose(ours[k], (t - u).numpy(), rtol=1e-5, atol=1e-6)


def _close(a, b) -> bool:
    return all(np.allclose(_flat(x), _flat(y), rtol=1e-5, atol=1e-6)
               for x, y in zip(a, b, strict=True))  # fmt: skip


def test_a_program_reading_w_needs_params(tmp_path):
    module = _load(export_optax(library.lion(weight_decay=0.1)), "optax_needs_w", tmp_path)
    tx = module.exported_optimizer(0.1)
    params = {"a": jnp.ones(3)}
    with pytest.raises(ValueError, match="reads the weights w"):
        tx.update(params, tx.init(params))
    tx = _load(export_optax(library.lion()), "optax_no_w", tmp_path).exported_optimizer(0.1)
    updates, _ = tx.update(params, tx.init(params))  # plain Lion never reads w
    np.testing.assert_allclose(updates["a"], -0.1)


def test_unsupported_primitive_is_refused_by_name(monkeypatch, tmp_path, capsys):
    from optforge.cli import main

    monkeypatch.setitem(PRIMITIVES, "cube", dataclasses.replace(PRIMITIVES["cube"], jax=None))
    body = "def train(w, g, v1, v2, lr):\n    c = cube(g)\n    update = c * lr\n"
    program = parse(body + "    return update, v1, v2\n")
    with pytest.raises(UnsupportedPrimitiveError, match=r"no JAX form for the primitive 'cube'"):
        export_optax(program)
    path = tmp_path / "cubic.py"
    path.write_text(program.source())
    assert main(["export", str(path), "--format", "optax", "-o", str(tmp_path / "x.py")]) == 2
    out = capsys.readouterr().out
    assert "'cube'" in out and "statement 1: c = cube(g)" in out
    assert not (tmp_path / "x.py").exists()
    # torch still exports it, and a dead cube is no obstacle to JAX
    assert main(["export", str(path), "-o", str(tmp_path / "t.py")]) == 0
    dead = parse(body.replace("c * lr", "g * lr") + "    return update, v1, v2\n")
    assert "cube" not in export_optax(dead).split("def exported_optimizer")[1]


def test_cli_writes_a_module_that_runs_without_optforge_or_torch(tmp_path, capsys):
    from optforge.cli import main

    path = tmp_path / "x.py"
    assert main(["export", "lion", "--format", "optax", "-o", str(path)]) == 0
    assert "def exported_optimizer(learning_rate" in capsys.readouterr().out
    source = path.read_text()
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            modules.add(node.module.split(".")[0])
    assert modules == {"math", "typing", "jax", "optax"}
    script = textwrap.dedent(f"""\
        import importlib.util, sys
        sys.modules["optforge"] = sys.modules["torch"] = None  # importing either fails
        import jax, jax.numpy as jnp, optax
        spec = importlib.util.spec_from_file_location("x", {str(path)!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        params = {{"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}}
        tx = module.exported_optimizer(optax.linear_schedule(1e-3, 0.0, 10))
        state = tx.init(params)
        grads = {{"w": jnp.full((4, 3), 0.5), "b": -jnp.ones(3)}}
        updates, state = jax.jit(tx.update)(grads, state, params)
        params = optax.apply_updates(params, updates)
        print(float(params["w"][0, 0]), float(params["b"][0]), int(state.count))
        """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    w, b, count = out.stdout.split()
    assert float(w) == pytest.approx(1 - 1e-3, rel=1e-6)  # w -= lr * sign(0.1 * g)
    assert float(b) == pytest.approx(1e-3, rel=1e-6) and count == "1"


def test_bad_names_are_refused():
    for name in ("not valid", "class", "Segments", "jnp"):
        with pytest.raises(ValueError):
            export_optax(library.lion(), name)
    assert "def MyLion(learning_rate" in export_optax(library.lion(), "MyLion")
    assert "class MyLionState(NamedTuple)" in export_optax(library.lion(), "MyLion")


def test_program_names_that_clash_with_the_module_are_renamed(tmp_path):
    program = parse(
        textwrap.dedent("""\
        def train(w, g, v1, v2, lr):
            Segments = orthogonalize(g)
            treedef = Segments * aspect
            leaves = treedef * step
            jnp = leaves + w
            update = jnp * lr
            return update, v1, v2
        """)
    )
    module = _load(export_optax(program), "optax_names", tmp_path)
    params, grads = _data(3)
    ours = _jax_run(module, params, grads[:2])
    assert _close(ours, _torch_run(program, torch.float32, params, grads[:2]))


def test_segmented_kinds_are_the_ones_the_jax_layout_serves():
    """Every ``seg.`` method a JAX form calls exists in layout_jax.Segments."""
    for prim in PRIMITIVES.values():
        methods = set(re.findall(r"seg\.(\w+)", prim.jax or ""))
        assert all(hasattr(layout_jax.Segments, m) for m in methods), prim.name
        assert (prim.kind in SEGMENTED or prim.kind == "input") or not methods
