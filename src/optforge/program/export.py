"""Export a program as a standalone, readable PyTorch optimizer module (depends only on torch).

The module mirrors ``ProgramOptimizer``: each step concatenates a group's parameters, runs the
program's statements once over all of them and splits the results. Nothing is written twice:
each statement is the primitive's own ``code`` from primitives.py, and the segment layout the
code runs on (per-tensor reductions, matrix views, Newton-Schulz, row and column statistics,
the inputs ``hidden`` and ``aspect``) is the source text of layout.py itself, copied into the
module, so the export and the executor cannot drift apart.

``statements`` renders a program's live statements for either export target from the
primitive table (``code`` for torch, ``jax`` for JAX): ``export_optax.py`` writes its optax
transformation from the same function, so the two targets cannot drift apart either.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import keyword
import re

from optforge.program import layout
from optforge.program.analysis import Analysis, analyze
from optforge.program.primitives import (
    CONSTANT_VALUES,
    INPUT_NAMES,
    PRIMITIVES,
    SEGMENTED,
    Target,
)
from optforge.program.program import STATES, Program, ProgramError

# names the generated step uses itself; program variables with these names get a suffix
_LOCALS = {"seg", "scalar_seg", "const", "flat", "self", "params", "group", "p", "dtype",
           "loss", "closure", "device", "split", "delta", "value", "steps", "step",
           "hidden"}  # fmt: skip


def layout_source() -> tuple[str, str]:
    """layout.py as ``(imports, code)``: its import statements and everything after them (the
    module docstring left out). Raises when layout.py has started to import anything but
    standard modules and torch, which an exported module could not carry."""
    text = inspect.getsource(layout)
    tree = ast.parse(text)
    body = tree.body[1:] if ast.get_docstring(tree) is not None else tree.body
    imports = []
    while body and isinstance(body[0], ast.Import | ast.ImportFrom):
        imports.append(body.pop(0))
    for node in imports:
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [
            a.name for a in node.names]  # fmt: skip
        if any(n.split(".")[0] == "optforge" for n in names):
            raise RuntimeError("layout.py imports optforge; an exported module cannot carry it")
    if any(isinstance(n, ast.Import | ast.ImportFrom) for n in body):
        raise RuntimeError("layout.py imports below its code; keep its imports at the top")
    lines = text.splitlines()
    first, last = imports[0].lineno - 1, imports[-1].end_lineno
    return "\n".join(lines[first:last]), "\n".join(lines[last:]).strip("\n")


class UnsupportedPrimitiveError(ProgramError):
    """The program calls a primitive that has no form in the export target."""


def module_names(source: str) -> set[str]:
    """Names a generated module's helper ``source`` defines or imports at its top level: a
    program variable shadowing one inside the generated step would make it a local there."""
    tree = ast.parse(source)
    names = {"torch", "math"}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def export(program: Program, class_name: str = "ExportedOptimizer") -> str:
    """Python source of a module defining ``class_name``, a torch optimizer running
    ``program`` (``w <- w - update``; ``lr`` is the group's learning rate; a param group may
    set ``hidden`` as ``ProgramOptimizer`` does)."""
    check_identifier(class_name, "class name")
    analysis = checked_analysis(program, "torch")
    names = NameMap(program, _LOCALS | module_names(inspect.getsource(layout)) | {class_name})
    used = used_names(program, analysis)
    body = [f"{names('lr')} = const(float(group['lr']))"] if "lr" in used else []
    if "step" in used:
        body.append("step = torch.stack(steps).to(dtype)  # one count per tensor")
    for name in ("w", "g", "v1", "v2"):
        if name in used and (name in ("w", "g") or name in analysis.reads):
            source = "params" if name == "w" else (
                "[p.grad for p in params]" if name == "g" else
                f"[self._state(p, {name!r}) for p in params]")  # fmt: skip
            body.append(f"{names(name)} = flat({source})")
    body.extend(statements(program, analysis, names, "torch"))
    update, new_v1, new_v2 = (names(n) for n in program.returns)
    body.append(f"for p, delta in zip(params, split({update})):")
    body.append("    p.sub_(delta.view_as(p).to(p.dtype))")
    for state, new in zip(STATES, (new_v1, new_v2), strict=True):
        if state in analysis.reads:
            body.append(f"for p, value in zip(params, split({new})):")
            body.append(f"    self.state[p][{state!r}].copy_(value.view_as(p))")
    if any("scalar_seg" in line for line in body):  # reductions of scalars
        body.insert(0, "scalar_seg = ScalarSegments()")
    step = "\n".join("            " + line for line in body)
    program_text = "\n".join("    " + line for line in program.source().splitlines())
    imports, helpers = layout_source()
    return _TEMPLATE.format(
        class_name=class_name, program=program_text, imports=imports, helpers=helpers, step=step
    )


def check_identifier(name: str, what: str) -> None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or keyword.iskeyword(name):
        raise ValueError(f"{what} {name!r} is not a Python identifier")


def checked_analysis(program: Program, target: Target) -> Analysis:
    """The program's analysis, after checking that it is valid and that every live statement's
    primitive has a form in ``target`` (one error naming all those that have none)."""
    analysis = analyze(program)
    if not analysis.valid:
        raise ProgramError("cannot export an invalid program: " + "; ".join(analysis.errors))
    missing: dict[str, list[str]] = {}
    for i, s in enumerate(program.statements):
        if i in analysis.redundant:
            continue  # never written into the module
        leaves = [a for a in s.args if isinstance(a, str) and a in PRIMITIVES]
        for name in (s.op, *leaves):
            if PRIMITIVES[name].code_for(target) is None:
                missing.setdefault(name, []).append(f"statement {i + 1}: {s.source()}")
    if missing:
        label = {"torch": "torch", "jax": "JAX"}[target]
        which = "; ".join(f"{name!r} ({', '.join(where)})" for name, where in missing.items())
        raise UnsupportedPrimitiveError(
            f"cannot export to {label}: no {label} form for the primitive"
            f"{'s' if len(missing) > 1 else ''} {which}"
        )
    return analysis


def used_names(program: Program, analysis: Analysis) -> set[str]:
    """Names the live statements read, plus the outputs that matter."""
    live = [s for i, s in enumerate(program.statements) if i not in analysis.redundant]
    used = {a for s in live for a in s.args if isinstance(a, str)} | {program.returns[0]}
    used |= {new for state, new in zip(STATES, program.returns[1:], strict=True)
             if state in analysis.reads}  # fmt: skip
    return used


def statements(program: Program, analysis: Analysis, names: NameMap, target: Target) -> list[str]:
    """The live statements as Python assignments, each its primitive's code for ``target``
    over the segment layout ``seg`` (``scalar_seg`` for reductions of scalars), literals as
    ``const(value)``. Both export targets write their step from this."""
    # scalars holding one value per tensor (need seg.expand): the inputs, reductions of
    # tensors and arithmetic on either
    per_tensor: set[str] = set(INPUT_NAMES)
    body = []
    for i, (s, arg_types) in enumerate(zip(program.statements, analysis.arg_types, strict=True)):
        if i in analysis.redundant:
            continue  # never reaches an output
        expression = _expression(s, arg_types, names, per_tensor, target)
        body.append(f"{names(s.target)} = {expression}")
        if _is_per_tensor(s, arg_types, per_tensor):
            per_tensor.add(s.target)
        else:
            per_tensor.discard(s.target)
    return body


class NameMap:
    """Program names as Python names in the generated step: a name the step or the module
    uses itself (``reserved``), or a builtin, gets a suffix (one no program variable has)."""

    def __init__(self, program: Program, reserved: set[str]):
        self.reserved = set(reserved) | set(dir(builtins))
        self.taken = {s.target for s in program.statements}
        self.renamed: dict[str, str] = {}

    def __call__(self, name: str) -> str:
        if name not in self.reserved:
            return name
        if name not in self.renamed:
            new = f"{name}_"
            while new in self.reserved or new in self.taken:
                new += "_"
            self.renamed[name] = new
            self.taken.add(new)
        return self.renamed[name]


def _is_per_tensor(statement, arg_types, per_tensor: set[str]) -> bool:
    """Per-tensor scalars come from reductions of tensors, and from arithmetic on them or on
    the per-tensor inputs."""
    op = statement.op
    if "tensor" in arg_types:
        return PRIMITIVES[op].kind == "reduce" and op != "global_norm"
    return any(a in per_tensor for a in statement.args if isinstance(a, str))


def _argument(a, names: NameMap, target: Target) -> str:
    if isinstance(a, float) or a in CONSTANT_VALUES:
        return f"const({_value(a)!r})"
    if a in INPUT_NAMES:
        return PRIMITIVES[a].code_for(target)  # seg.input('hidden', dtype), ..., step
    return names(a)


def _expression(statement, arg_types, names: NameMap, per_tensor: set[str], target) -> str:
    prim = PRIMITIVES[statement.op]
    tensor_args = "tensor" in arg_types
    args = []
    for a, t in zip(statement.args, arg_types, strict=True):
        text = _argument(a, names, target)
        if t == "scalar" and tensor_args and prim.kind in SEGMENTED:
            text = f"seg.full({text})"
        elif t == "scalar" and tensor_args and a in per_tensor:
            text = f"seg.expand({text})"
        args.append(text)
    mapping = dict(zip(prim.params, args, strict=True))
    mapping["seg"] = "seg" if tensor_args else "scalar_seg"
    pattern = r"\b(" + "|".join(map(re.escape, mapping)) + r")\b"
    return re.sub(pattern, lambda m: mapping[m.group(1)], prim.code_for(target))


def _value(arg) -> float:
    return arg if isinstance(arg, float) else CONSTANT_VALUES[arg]


_TEMPLATE = '''"""{class_name}: an optimizer program exported by optforge.

A standalone PyTorch optimizer; it depends only on torch. Each step applies
w <- w - update, where update is computed by:

{program}

``lr`` is the parameter group's learning rate (learning-rate schedulers scale it). Each
step runs once over all tensors of a group, concatenated; reductions, matrix operations and
the inputs below still act per tensor, on its matrix view: a 2-D tensor as it is, one of 3 or
more dimensions as (shape[0], rest), a 1-D tensor as a 1 x n row.

- ``hidden``: a parameter group may set it, True or False for all its tensors (1 or 0 in the
  program: hidden weight matrices are 1), or None (the default) to decide per tensor: a
  matrix view with at least 2 rows and 2 columns is hidden.
- ``aspect``: sqrt(max(1, rows / cols)) of the tensor's matrix view.
- ``step``: the tensor's step count, 1 at the first step, kept in ``state[p]["step"]`` as
  torch.optim keeps it.

The code above the optimizer class (Segments, newton_schulz, ...) is copied verbatim from
optforge's program/layout.py, the code optforge itself runs.
"""

{imports}

{helpers}


class {class_name}(torch.optim.Optimizer):
    def __init__(self, params, lr=1.0, hidden=None):
        if not 0.0 <= float(lr) < float("inf"):
            raise ValueError(f"Invalid learning rate: {{lr!r}} (must be a finite number >= 0)")
        super().__init__(params, dict(lr=lr, hidden=hidden))

    def add_param_group(self, param_group):
        hidden = param_group.get("hidden", self.defaults["hidden"])
        if hidden not in (None, True, False):
            raise ValueError(f"Invalid hidden: {{hidden!r}} (must be True, False or None)")
        super().add_param_group(param_group)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("hidden", None)

    def _state(self, p, name):
        state = self.state[p]
        if name not in state:
            state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state[name]

    def _step(self, p):
        state = self.state[p]
        if "step" not in state:
            state["step"] = torch.tensor(0.0, dtype=torch.float32, device=p.device)
        return state["step"]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            device = params[0].device
            dtype = torch.float64 if params[0].dtype == torch.float64 else torch.float32
            hidden = None if group["hidden"] is None else [group["hidden"]] * len(params)
            seg = Segments([tuple(p.shape) for p in params], device, hidden=hidden)
            steps = [self._step(p) for p in params]
            torch._foreach_add_(steps, 1.0)

            def flat(tensors):
                return torch.cat([t.reshape(-1) for t in tensors]).to(dtype)

            def const(value):
                return torch.tensor(value, dtype=dtype, device=device)

            def split(values):
                return values.expand(seg.total_length).split(seg.lengths)

{step}
        return loss
'''
