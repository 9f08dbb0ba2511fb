"""Export a program as a standalone, readable PyTorch optimizer module (depends only on torch).

The module mirrors ``ProgramOptimizer``: each step concatenates a group's parameters, runs the
program's statements once over all of them (each statement is the primitive's own ``code``
from primitives.py, so the export and the executor cannot drift apart), and splits the results.
"""

from __future__ import annotations

import re

from optforge.program.analysis import analyze
from optforge.program.primitives import CONSTANT_VALUES, PRIMITIVES
from optforge.program.program import STATES, Program, ProgramError

# names the generated step uses itself; program variables with these names get a suffix
_RESERVED = {"torch", "seg", "scalar_seg", "const", "flat", "self", "params", "group", "p",
             "dtype", "loss", "closure", "device", "split", "delta", "value"}  # fmt: skip

_HELPERS = '''
class _Segments:
    """How the concatenated parameters split into tensors, for per-tensor reductions."""

    def __init__(self, lengths, device):
        self.lengths = list(lengths)
        self.total_length = sum(self.lengths)
        self._lengths = torch.tensor(self.lengths, device=device)

    def sum(self, x):
        if len(self.lengths) == 1:
            return x.sum().reshape(1)
        return torch.segment_reduce(x, "sum", lengths=self._lengths)

    def mean(self, x):
        return self.sum(x) / self._lengths.to(x.dtype)

    def total(self, x):
        return x.sum()

    def expand(self, x):
        """One value per tensor, spread over the concatenated layout."""
        if x.dim() == 0 or x.numel() == 1:
            return x.reshape(())
        return torch.repeat_interleave(x, self._lengths, output_size=self.total_length)

    def full(self, x):
        """A scalar as a full-length tensor, for reductions mixing scalars and tensors."""
        return self.expand(x).expand(self.total_length)


class _ScalarSegments:
    """Reductions of scalars: a scalar is one value, so its sum is itself."""

    @staticmethod
    def sum(x):
        return x

    mean = sum

    @staticmethod
    def total(x):
        return x.sum()
'''


def export(program: Program, class_name: str = "ExportedOptimizer") -> str:
    """Python source of a module defining ``class_name``, a torch optimizer running
    ``program`` (``w <- w - update``; ``lr`` is the group's learning rate)."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", class_name):
        raise ValueError(f"class name {class_name!r} is not a Python identifier")
    analysis = analyze(program)
    if not analysis.valid:
        raise ProgramError("cannot export an invalid program: " + "; ".join(analysis.errors))
    names = _NameMap()
    body = [f"{names('lr')} = const(float(group['lr']))"]
    for name in ("w", "g", "v1", "v2"):
        if name in ("w", "g") or name in analysis.reads:
            source = "params" if name == "w" else (
                "[p.grad for p in params]" if name == "g" else
                f"[self._state(p, {name!r}) for p in params]")  # fmt: skip
            body.append(f"{names(name)} = flat({source})")
    per_tensor: set[str] = set()  # scalars holding one value per tensor (need seg.expand)
    for i, (s, arg_types) in enumerate(zip(program.statements, analysis.arg_types, strict=True)):
        if i in analysis.redundant:
            continue  # never reaches an output
        body.append(f"{names(s.target)} = {_expression(s, arg_types, names, per_tensor)}")
        if _is_per_tensor(s, arg_types, per_tensor):
            per_tensor.add(s.target)
        else:
            per_tensor.discard(s.target)
    update, new_v1, new_v2 = (names(n) for n in program.returns)
    body.append(f"for p, delta in zip(params, split({update})):")
    body.append("    p.sub_(delta.view_as(p).to(p.dtype))")
    for state, new in zip(STATES, (new_v1, new_v2), strict=True):
        if state in analysis.reads:
            body.append(f"for p, value in zip(params, split({new})):")
            body.append(f"    self.state[p][{state!r}].copy_(value.view_as(p))")
    step = "\n".join("            " + line for line in body)
    program_text = "\n".join("    " + line for line in program.source().splitlines())
    return _TEMPLATE.format(
        class_name=class_name, program=program_text, helpers=_HELPERS.strip("\n"), step=step
    )


class _NameMap:
    """Program names as Python names in the generated step (reserved words get a suffix)."""

    def __call__(self, name: str) -> str:
        return f"{name}_" if name in _RESERVED else name


def _is_per_tensor(statement, arg_types, per_tensor: set[str]) -> bool:
    """Per-tensor scalars come from reductions of tensors, and from arithmetic on them."""
    op = statement.op
    if "tensor" in arg_types:
        return PRIMITIVES[op].kind == "reduce" and op != "global_norm"
    return any(a in per_tensor for a in statement.args if isinstance(a, str))


def _expression(statement, arg_types, names: _NameMap, per_tensor: set[str]) -> str:
    prim = PRIMITIVES[statement.op]
    tensor_args = "tensor" in arg_types
    args = []
    for a, t in zip(statement.args, arg_types, strict=True):
        text = f"const({_value(a)!r})" if isinstance(a, float) or a in CONSTANT_VALUES else names(a)
        if t == "scalar" and tensor_args and prim.kind in ("reduce", "global"):
            text = f"seg.full({text})"
        elif t == "scalar" and tensor_args and a in per_tensor:
            text = f"seg.expand({text})"
        args.append(text)
    mapping = dict(zip(prim.params, args, strict=True))
    seg = "seg" if tensor_args else "scalar_seg"
    mapping["seg"] = seg
    pattern = r"\b(" + "|".join(map(re.escape, mapping)) + r")\b"
    return re.sub(pattern, lambda m: mapping[m.group(1)], prim.code)


def _value(arg) -> float:
    return arg if isinstance(arg, float) else CONSTANT_VALUES[arg]


_TEMPLATE = '''"""{class_name}: an optimizer program exported by optforge.

A standalone PyTorch optimizer; it depends only on torch. Each step applies
w <- w - update, where update is computed by:

{program}

``lr`` is the parameter group's learning rate (learning-rate schedulers scale it).
"""

import torch

{helpers}


class {class_name}(torch.optim.Optimizer):
    def __init__(self, params, lr=1.0):
        if not 0.0 <= float(lr) < float("inf"):
            raise ValueError(f"Invalid learning rate: {{lr!r}} (must be a finite number >= 0)")
        super().__init__(params, dict(lr=lr))

    def _state(self, p, name):
        state = self.state[p]
        if name not in state:
            state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state[name]

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
            seg = _Segments([p.numel() for p in params], device)
            scalar_seg = _ScalarSegments()

            def flat(tensors):
                return torch.cat([t.reshape(-1) for t in tensors]).to(dtype)

            def const(value):
                return torch.tensor(value, dtype=dtype, device=device)

            def split(values):
                return values.expand(seg.total_length).split(seg.lengths)

{step}
        return loss
'''
