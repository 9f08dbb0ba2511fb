"""optforge's fused Lion kernels as PyTorch custom ops, so ``torch.compile`` can trace a step.

Dynamo cannot trace the kernels' launchers: the C kernel is called through ``ctypes`` with an
``array.array`` of raw addresses, the Triton launcher builds device tables from ``data_ptr()``.
Each is therefore registered with ``torch.library.custom_op`` as an opaque op that mutates its
arguments in place (as ATen's ``_fused_adamw_``), with a fake implementation that does nothing
(no outputs to describe), so the traced graph holds one ``optforge.lion_cpu_`` or
``optforge.lion_triton_`` call per dtype group and the launcher runs, unchanged, at run time.

Why not ``torch.library.triton_op`` / ``wrap_triton`` for the Triton kernel: those trace the
launcher with fake tensors, and ours reads ``data_ptr()`` (address tables, cached by address),
which a fake tensor does not have. The Triton op is registered for every device type, so under
Triton's interpreter (``TRITON_INTERPRET=1``) it also steps CPU tensors, which is how CI tests it.

Everything a step reads on the host (a tensor lr, ``found_inf``, the stochastic-rounding seed)
is passed as a tensor and read inside the op, so the graph around it has no data-dependent
Python. The lr is two arguments: a float, or a one-element tensor that overrides it (a schema has
no "float or Tensor" type).

In plain eager mode :func:`lion_cpu` and :func:`lion_triton` call the implementations directly:
going through the dispatcher costs ~0.45 ms per step for 182 tensors (mostly bumping each
mutated tensor's version counter in Python), as much as 5% of the C kernel's step. Under
``torch.compile``, ``make_fx`` or any dispatch mode (fake tensors, functionalization, a flop
counter) they call the op, so tracers see it.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

from optforge.optim.kernels import cpu as cpu_kernel
from optforge.optim.kernels import triton as triton_kernel

__all__ = ["lion_cpu", "lion_cpu_", "lion_triton", "lion_triton_"]


def _traced() -> bool:
    """Whether a tracer (dynamo, make_fx, a fake or functional tensor mode) is watching."""
    return torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None


def _split_lr(lr: float | Tensor, *, host_tensor: bool) -> tuple[float, Tensor | None]:
    """The op's two lr arguments. A float argument of an op is a constant of the graph, so
    each new lr recompiles a compiled step; with ``host_tensor`` a traced float lr goes in as
    an fp64 CPU tensor instead (exact), an input of the graph. (``ones * lr``, not
    ``torch.tensor(lr)``: the compiler keeps the product's ``lr`` an input.) The Triton op
    keeps the float: a CPU op in its graph would keep inductor from CUDA-graphing it."""
    if isinstance(lr, Tensor):
        return 0.0, lr
    if host_tensor and _traced():
        return 0.0, torch.ones((), dtype=torch.float64) * lr
    return lr, None


# ---------------------------------------------------------------------------------------------
# The C kernel (kernels/cpu.py)


def _lion_cpu(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    lr: float,
    lr_tensor: Tensor | None,
    beta1: float,
    beta2: float,
    weight_decay: float,
    maximize: bool,
    cautious: bool,
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
) -> None:
    """One fused Lion step over dense CPU tensors of one (param, momentum) dtype pair.

    AMP as torch's fused AdamW: nothing is written when ``found_inf`` is nonzero, otherwise
    ``grads`` are divided by ``grad_scale`` in place (so ``grads`` is mutated)."""
    if found_inf is not None and float(found_inf) != 0:
        return
    if grad_scale is not None:
        torch._foreach_div_(grads, grad_scale.to(grads[0].device))
    lr = lr if lr_tensor is None else float(lr_tensor)
    cpu_kernel.lion_step(params, grads, exp_avgs, lr=lr, beta1=beta1, beta2=beta2,
                         decay=1.0 - lr * weight_decay, maximize=maximize,
                         cautious=cautious)  # fmt: skip


lion_cpu_ = torch.library.custom_op(
    "optforge::lion_cpu_",
    _lion_cpu,
    mutates_args=("params", "grads", "exp_avgs"),
    device_types="cpu",
)


@lion_cpu_.register_fake
def _(params, grads, exp_avgs, lr, lr_tensor, beta1, beta2, weight_decay, maximize, cautious,
      grad_scale, found_inf) -> None:  # fmt: skip
    return None


def lion_cpu(params, grads, exp_avgs, *, lr, beta1, beta2, weight_decay, maximize, cautious,
             grad_scale=None, found_inf=None) -> None:  # fmt: skip
    """Call :func:`lion_cpu_`; ``lr`` is a float or a one-element tensor."""
    lr, lr_tensor = _split_lr(lr, host_tensor=True)
    step = lion_cpu_ if _traced() else _lion_cpu
    step(params, grads, exp_avgs, lr, lr_tensor, beta1, beta2, weight_decay, maximize, cautious,
         grad_scale, found_inf)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The multi-tensor Triton kernel (kernels/triton.py)


def _lion_triton(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    absmaxes: list[Tensor],
    lr: float,
    lr_tensor: Tensor | None,
    beta1: float,
    beta2: float,
    weight_decay: float,
    maximize: bool,
    cautious: bool,
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
    seed: Tensor | None,
) -> None:
    """One launch set of the Triton kernel over contiguous same-device tensors with one
    (param, momentum) dtype pair. ``absmaxes`` (empty: float momentum): the momenta are 8-bit
    codes with these block maxima. ``seed``: a one-element integer tensor; bf16 params are then
    rounded stochastically. A tensor lr, ``grad_scale`` and ``found_inf`` on another device
    than the params are brought over here (a host lr is read as a float: no device sync)."""
    device = params[0].device
    lr_value: float | Tensor = lr if lr_tensor is None else lr_tensor
    if isinstance(lr_value, Tensor) and lr_value.device != device:
        lr_value = float(lr_value)
    amp = {
        name: value.to(device, non_blocking=True)
        for name, value in (("grad_scale", grad_scale), ("found_inf", found_inf))
        if value is not None
    }
    triton_kernel.lion_step(params, grads, exp_avgs, lr=lr_value, beta1=beta1, beta2=beta2,
                            weight_decay=weight_decay, maximize=maximize, cautious=cautious,
                            stochastic_seed=None if seed is None else int(seed),
                            absmaxes=absmaxes or None, **amp)  # fmt: skip


# No device_types: the same op steps CUDA tensors and, under the interpreter, CPU tensors.
lion_triton_ = torch.library.custom_op(
    "optforge::lion_triton_", _lion_triton, mutates_args=("params", "exp_avgs", "absmaxes")
)


@lion_triton_.register_fake
def _(params, grads, exp_avgs, absmaxes, lr, lr_tensor, beta1, beta2, weight_decay, maximize,
      cautious, grad_scale, found_inf, seed) -> None:  # fmt: skip
    return None


def lion_triton(params, grads, exp_avgs, *, lr, beta1, beta2, weight_decay, maximize, cautious,
                grad_scale=None, found_inf=None, seed=None, absmaxes=None) -> None:  # fmt: skip
    """Call :func:`lion_triton_`; ``lr`` is a float or a one-element tensor."""
    lr, lr_tensor = _split_lr(lr, host_tensor=False)
    step = lion_triton_ if _traced() else _lion_triton
    step(params, grads, exp_avgs, absmaxes or [], lr, lr_tensor, beta1, beta2, weight_decay,
         maximize, cautious, grad_scale, found_inf, seed)  # fmt: skip
