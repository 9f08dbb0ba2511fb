"""Export a program as a standalone JAX module: a factory returning an ``optax``
``GradientTransformation`` (the module imports jax and optax, never optforge).

Nothing is written twice: each statement is its primitive's ``jax`` form from the primitive
table, rendered by the same code as the torch export (``export.statements``: which scalars are
spread over tensors, which reductions see scalars), and the layout those forms run on is
``layout_jax.py``, copied into the module with layout.py's Newton-Schulz coefficients and
matrix-view rule filled in. A primitive with no JAX form fails the export, naming it.

The transformation runs the program as ``ProgramOptimizer`` runs one param group: all leaves
concatenated, ``lr`` the learning rate (a float or an optax schedule of the step count, as
optax's aliases take it), ``step`` one count for all leaves, ``hidden`` by the same shape
rule unless given, and its updates ``-update`` so that ``optax.apply_updates`` takes
``w - update``.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from optforge.program import layout
from optforge.program.export import (
    NameMap,
    check_identifier,
    checked_analysis,
    module_names,
    statements,
    used_names,
)
from optforge.program.program import STATES, Program

HELPERS = Path(__file__).with_name("layout_jax.py")
_IMPORTS = {"math", "jax", "jax.numpy"}  # what layout_jax.py may import besides layout.py
# names the generated factory uses itself; program variables with these names get a suffix
_LOCALS = {"learning_rate", "hidden", "aspect", "init_fn", "update_fn", "updates", "state",
           "params", "leaves", "leaf", "treedef", "tree", "dtype", "seg", "scalar_seg", "count",
           "const", "flat", "split", "step", "new_state", "NamedTuple", "optax", "jnp", "jax",
           "math"}  # fmt: skip


def helpers_source() -> str:
    """layout_jax.py's code (no docstring, no imports), its ``from optforge.program.layout
    import ...`` replaced by what it names: constants as their values, functions as their
    source. Raises when layout_jax.py imports anything an exported module could not carry."""
    text = HELPERS.read_text()
    tree = ast.parse(text)
    body = tree.body[1:] if ast.get_docstring(tree) is not None else tree.body
    imports = []
    while body and isinstance(body[0], ast.Import | ast.ImportFrom):
        imports.append(body.pop(0))
    borrowed: list[str] = []
    for node in imports:
        if isinstance(node, ast.ImportFrom) and node.module == layout.__name__:
            borrowed += [a.name for a in node.names]
            continue
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [
            a.name for a in node.names]  # fmt: skip
        if any(name not in _IMPORTS for name in names):
            raise RuntimeError(f"layout_jax.py imports {names}; an exported module carries "
                               f"only {sorted(_IMPORTS)} and layout.py's names")  # fmt: skip
    if any(isinstance(n, ast.Import | ast.ImportFrom) for n in body):
        raise RuntimeError("layout_jax.py imports below its code; keep its imports at the top")
    values = [getattr(layout, name) for name in borrowed]
    constants = [f"{n} = {v!r}" for n, v in zip(borrowed, values, strict=True) if not callable(v)]
    functions = [inspect.getsource(v).strip("\n") for v in values if callable(v)]
    code = "\n".join(text.splitlines()[imports[-1].end_lineno :]).strip("\n")
    return "\n\n\n".join(["\n".join(constants), *functions, code])


def state_class_name(name: str) -> str:
    """The state class of factory ``name``: ``exported_optimizer`` -> ``ExportedOptimizerState``."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_")) + "State"


def export_optax(program: Program, name: str = "exported_optimizer") -> str:
    """Python source of a module defining ``name(learning_rate, *, hidden=None, aspect=None)``,
    which returns an ``optax.GradientTransformation`` running ``program``. Raises
    ``UnsupportedPrimitiveError`` (a ``ProgramError``) naming any live primitive that has no
    JAX form, ``ProgramError`` for an invalid program, ``ValueError`` for a bad name."""
    check_identifier(name, "factory name")
    state_name = state_class_name(name)
    helpers = helpers_source()
    defined = module_names(helpers) | _LOCALS
    for what, value in (("factory name", name), ("its state class", state_name)):
        if value in defined:
            raise ValueError(f"{what} {value!r} is a name the exported module uses itself")
    analysis = checked_analysis(program, "jax")
    names = NameMap(program, defined | {name, state_name})
    used = used_names(program, analysis)
    body = []
    if "w" in used:
        message = f"{name} reads the weights w: call update(updates, state, params)"
        body += ["if params is None:", f"    raise ValueError({message!r})"]
    if "lr" in used:
        body.append(f"{names('lr')} = const(learning_rate(state.count) if "
                    "callable(learning_rate) else learning_rate)")  # fmt: skip
    if "step" in used:
        body.append("step = jnp.full((seg.count,), count, dtype)  # one count per tensor")
    sources = {"w": "params", "g": "updates", "v1": "state.v1", "v2": "state.v2"}
    for var, source in sources.items():
        if var in used and (var in ("w", "g") or var in analysis.reads):
            body.append(f"{names(var)} = flat({source})")
    body += statements(program, analysis, names, "jax")
    update, *new_states = (names(n) for n in program.returns)
    new = {s: f"split({v}, state.{s})" if s in analysis.reads else "None"
           for s, v in zip(STATES, new_states, strict=True)}  # fmt: skip
    body += [f"new_state = {state_name}(", "    count=count,",
             *(f"    {s}={value}," for s, value in new.items()), ")",
             f"return split(-{update}, updates), new_state"]  # fmt: skip
    if any("scalar_seg" in line for line in body):  # reductions of scalars
        body.insert(0, "scalar_seg = ScalarSegments()")
    program_text = "\n".join("    " + line for line in program.source().splitlines())
    return _TEMPLATE.format(
        name=name,
        state_name=state_name,
        program=program_text,
        helpers=helpers,
        reads_v1="v1" in analysis.reads,
        reads_v2="v2" in analysis.reads,
        step="\n".join("        " + line for line in body),
    )


_TEMPLATE = '''"""{name}: an optimizer program exported by optforge, as an optax transformation.

A standalone module: it depends only on jax and optax. ``{name}(learning_rate)`` returns
an ``optax.GradientTransformation``; ``optax.apply_updates(params, updates)`` then applies
w <- w - update, where update is computed by:

{program}

``lr`` is ``learning_rate``: a float, or a schedule (a function of the step count, 0 at the
first update), as optax's own optimizers take it. The state holds that count and the
program's ``v1``, ``v2`` (zeros at the start; None for a state the program does not read).
``update(updates, state, params)`` needs ``params`` when the program reads the weights ``w``.

Each update runs once over all leaves, concatenated (as optforge's ProgramOptimizer runs one
param group); reductions, matrix operations and the inputs below act per leaf, on its
matrix view: a 2-D leaf as it is, one of 3 or more dimensions as (shape[0], rest), a 1-D
leaf or a scalar as a 1 x n row; ``global_norm`` spans all leaves. Arithmetic is in float32
(float64 for float64 leaves); updates and states are cast to each leaf's dtype.

- ``hidden``: True or False for all leaves (1 or 0 in the program: hidden weight matrices
  are 1), a pytree of bools like the params, or a callable of the params returning one.
  None (the default) decides per leaf: a matrix view with at least 2 rows and 2 columns is
  hidden. That shape rule cannot tell an embedding or the output head from a hidden layer.
- ``aspect``: by default sqrt(max(1, rows / cols)) of the leaf's matrix view, which is
  sqrt(max(1, fan_out / fan_in)) for torch's [out, in] weights; flax's Dense kernels are
  [in, out], so pass ``aspect`` there (a number, a pytree or a callable, as ``hidden``).
- ``step``: the step count, 1 at the first update.

NaN or inf in an update is not caught: wrap the transformation in ``optax.apply_if_finite``
to skip such steps.

The code above the factory (Segments, newton_schulz, ...) is optforge's program/layout_jax.py,
the JAX twin of the layout optforge itself runs.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

{helpers}


class {state_name}(NamedTuple):
    """The update count and the program's states (None for a state it does not read)."""

    count: jax.Array
    v1: optax.Params | None
    v2: optax.Params | None


def {name}(learning_rate, *, hidden=None, aspect=None) -> optax.GradientTransformation:
    """The exported program as an optax transformation: see the module docstring."""

    def init_fn(params):
        def zeros(read):
            return jax.tree_util.tree_map(jnp.zeros_like, params) if read else None

        return {state_name}(
            count=jnp.zeros([], jnp.int32), v1=zeros({reads_v1}), v2=zeros({reads_v2})
        )

    def update_fn(updates, state, params=None):
        leaves, treedef = jax.tree_util.tree_flatten(updates)
        if not leaves:
            return updates, state
        for leaf in leaves:
            if not jnp.issubdtype(leaf.dtype, jnp.floating):
                raise TypeError(f"{name}: a leaf of dtype {{leaf.dtype}} (not floating)")
        dtype = jnp.float64 if leaves[0].dtype == jnp.float64 else jnp.float32
        tree = updates if params is None else params
        seg = Segments(
            [leaf.shape for leaf in leaves],
            hidden=per_leaf(hidden, treedef, tree, "hidden"),
            aspect=per_leaf(aspect, treedef, tree, "aspect"),
        )
        count = jnp.where(state.count < jnp.iinfo(jnp.int32).max, state.count + 1, state.count)

        def const(value):
            return jnp.asarray(value, dtype)

        def flat(tree):
            return jnp.concatenate(
                [jnp.ravel(x).astype(dtype) for x in treedef.flatten_up_to(tree)]
            )

        def split(values, like):
            values = jnp.broadcast_to(values, (seg.total_length,))
            pieces = zip(seg.pieces(values), treedef.flatten_up_to(like), strict=True)
            return treedef.unflatten([p.reshape(x.shape).astype(x.dtype) for p, x in pieces])

{step}

    return optax.GradientTransformation(init_fn, update_fn)
'''
