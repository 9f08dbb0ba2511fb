"""Lion (EvoLved Sign Momentum; Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms").

    c = beta1 * m + (1 - beta1) * g
    p = p - lr * (sign(c) + weight_decay * p)
    m = beta2 * m + (1 - beta2) * g

Weight decay is the paper's: decoupled from the gradient and multiplied by the learning rate, so a
step shrinks ``p`` by the factor ``1 - lr * weight_decay`` (torch's AdamW uses the same form).

As in torch's adamw.py, the class holds configuration and state, and one functional entry
:func:`lion` does the math, dispatching to a single-tensor, a foreach (multi-tensor) or a fused
implementation. The fused ones read and write each element once: a C kernel for CPU tensors
(``kernels/cpu.py``) and a multi-tensor Triton kernel for CUDA tensors (``kernels/triton.py``),
which also reads the lr, ``grad_scale`` and ``found_inf`` on the device (AMP, CUDA graphs).
Every path computes in fp32 (fp64 for fp64 params) and rounds low-precision storage (bf16/fp16
params or momentum) once per step, so the paths agree.

Both kernels are PyTorch custom ops (``optforge::lion_cpu_``, ``optforge::lion_triton_``,
``kernels/ops.py``), and dispatch reads nothing a compiler cannot trace (kernel availability is
a per-process constant), so ``torch.compile(opt.step, fullgraph=True)`` traces every path.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from optforge.optim._shared import check_lr, closure_loss, is_number
from optforge.optim.kernels import cpu as cpu_kernel
from optforge.optim.kernels import ops, quant
from optforge.optim.kernels import triton as triton_kernel

__all__ = ["Lion", "lion"]

# Options added after the first release are filled in for older checkpoints by __setstate__.
_OPTION_DEFAULTS: dict[str, Any] = {
    "maximize": False,
    "foreach": None,
    "fused": None,
    "cautious": False,
    "momentum_dtype": None,
    "capturable": False,
    "stochastic_rounding": False,
}
# Options a checkpoint does not override: where and how this run steps and stores its state.
_RUN_OPTIONS = ("foreach", "fused", "capturable", "momentum_dtype")
# The paper's examples (ViT, diffusion, language models) all divide AdamW's lr by 10 and
# multiply its weight decay by 10; its advice is a factor of 3-10.
ADAMW_RATIO = 10.0
_CAUTIOUS_MIN_MEAN = 1e-3  # floor on the fraction kept by the cautious mask (as in timm)


class Lion(Optimizer):
    """Lion as a ``torch.optim.Optimizer``: half of AdamW's state, sign updates, decoupled decay.

    Args:
        params: parameters or parameter groups (each group may override every option below).
        lr: step size, a float or a one-element tensor. Lion wants an lr 3-10x smaller than
            AdamW's (see :meth:`from_adamw`).
        betas: ``(beta1, beta2)``: beta1 interpolates the update direction, beta2 the momentum.
            The paper suggests ``(0.95, 0.98)`` for stability in language models.
        weight_decay: the paper's lambda; each step multiplies params by ``1 - lr * weight_decay``.
        maximize: ascend instead of descend.
        foreach: use the multi-tensor implementation (``None``: fastest available for the device).
        fused: use a fused kernel: C on CPU, Triton on CUDA (``None``: the C kernel on CPU; on
            CUDA foreach, until the Triton kernel is measured faster on a GPU). Fused steps
            take ``torch.amp.GradScaler``'s ``grad_scale``/``found_inf`` directly, as torch's
            fused AdamW does.
        cautious: apply the update only where its sign agrees with the gradient's, rescaled by
            the kept fraction to keep the mean update size (Cautious Optimizers, Liang et al. 2024).
        momentum_dtype: dtype of the momentum state (e.g. ``torch.bfloat16`` for fp32 params to
            halve optimizer memory); ``None`` keeps the param dtype. ``torch.int8``: 8-bit
            blockwise-quantized momentum, ~1 byte per parameter (``kernels/quant.py``; tensors
            under 4096 elements keep fp32 momentum).
        capturable: keep the step free of host synchronisation so a CUDA graph can capture it
            (a tensor lr is read on the device). Needs CUDA params and ``fused=True``.
        stochastic_rounding: round bf16 params stochastically (unbiased), so that updates below
            bf16's resolution are not lost when training bf16 params without an fp32 master copy.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float | Tensor = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        cautious: bool = False,
        momentum_dtype: torch.dtype | None = None,
        capturable: bool = False,
        stochastic_rounding: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            weight_decay=weight_decay,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
            cautious=cautious,
            momentum_dtype=momentum_dtype,
            capturable=capturable,
            stochastic_rounding=stochastic_rounding,
        )
        _check_options(defaults)
        super().__init__(params, defaults)
        if fused:  # GradScaler then hands the step grad_scale / found_inf instead of unscaling
            self._step_supports_amp_scaling = True

    @classmethod
    def from_adamw(
        cls,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float | Tensor = 1e-3,
        weight_decay: float = 1e-2,
        *,
        ratio: float = ADAMW_RATIO,
        wd_ratio: float | None = None,
        **kwargs: Any,
    ) -> Lion:
        """A Lion configured from AdamW hyper-parameters by the paper's advice.

        Lion's update has the magnitude of a sign, larger than AdamW's, so the paper divides the
        learning rate by ``ratio`` (3-10; its experiments use 10) and multiplies the weight decay
        by the same factor, which keeps the per-step decay ``lr * weight_decay`` unchanged.
        ``wd_ratio`` overrides the weight-decay factor. Apply the same lr scaling to the whole
        schedule (warm-up, peak, final): schedulers scale ``lr`` so they do this by themselves.
        """
        for name, value in (("ratio", ratio), ("wd_ratio", wd_ratio)):
            if value is not None and not (is_number(value) and 0 < value < math.inf):
                raise ValueError(f"Invalid {name}: {value!r} (must be a finite number > 0)")
        factor = ratio if wd_ratio is None else wd_ratio
        return cls(params, lr=lr / ratio, weight_decay=weight_decay * factor, **kwargs)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _check_options({**self.defaults, **param_group})
        super().add_param_group(param_group)
        try:
            _check_params(self.param_groups[-1], len(self.param_groups) - 1)
        except (TypeError, ValueError):
            self.param_groups.pop()
            raise

    def _momentum(self, p: Tensor, group: dict[str, Any]) -> Tensor:
        state = self.state[p]
        if (m := state.get("exp_avg")) is not None:
            return m
        # Created lazily, so only params that get gradients cost memory.
        if _quantizes(p, group):
            state["exp_avg"], state["exp_avg_absmax"] = quant.zeros(p)
        else:
            state["exp_avg"] = torch.zeros_like(
                p, dtype=_float_momentum_dtype(p, group), memory_format=torch.preserve_format
            )
        return state["exp_avg"]

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in _OPTION_DEFAULTS.items():
                group.setdefault(key, value)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load hyper-parameters and state as torch does, with two differences: the momentum
        is taken as saved and converted to this optimizer's ``momentum_dtype`` (torch would
        first cast it to the param dtype, rounding an fp32 momentum of bf16 params through
        bf16), and the options in ``_RUN_OPTIONS`` stay as this optimizer was built: they
        describe how this run executes and stores its state, not the training state (a foreach
        checkpoint resumes on the fused path, an fp32 momentum into 8-bit and back)."""
        kept = [{k: g[k] for k in _RUN_OPTIONS} for g in self.param_groups]
        saved = _saved_momenta(state_dict, self.param_groups)
        super().load_state_dict(state_dict)
        for group, options in zip(self.param_groups, kept, strict=True):
            group.update(options)
            for p in group["params"]:
                state = self.state.get(p)
                if state and p in saved:
                    state.update({k: v.to(p.device, copy=True) for k, v in saved[p].items()})
                    _convert_momentum(state, p, group)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = closure_loss(closure)
        for index, group in enumerate(self.param_groups):
            params = [p for p in group["params"] if p.grad is not None]
            grads = _each("grad", params)
            if any(_each("is_sparse", grads)):
                raise TypeError(
                    f"Lion does not support sparse gradients (group {index} has a parameter "
                    f"with a sparse grad); use dense gradients"
                )
            exp_avgs = [self._momentum(p, group) for p in params]
            beta1, beta2 = group["betas"]
            step = functools.partial(
                _lion,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                weight_decay=group["weight_decay"],
                maximize=group["maximize"],
                cautious=group["cautious"],
                foreach=group["foreach"],
                fused=group["fused"],
                capturable=group["capturable"],
                stochastic_rounding=group["stochastic_rounding"],
                grad_scale=getattr(self, "grad_scale", None),
                found_inf=getattr(self, "found_inf", None),
            )
            quantized = []
            if group["momentum_dtype"] == torch.int8:  # else no state has 8-bit momentum
                quantized = [i for i, p in enumerate(params) if "exp_avg_absmax" in self.state[p]]
            if not quantized:  # the usual case: one call for the whole group
                step(params, grads, exp_avgs)
                continue
            kept = set(quantized)
            plain = [i for i in range(len(params)) if i not in kept]
            if plain:
                step(*([ts[i] for i in plain] for ts in (params, grads, exp_avgs)))
            if _triton_quantized(params, group):  # decoded and encoded in the kernel
                states = [self.state[params[i]] for i in quantized]
                step([params[i] for i in quantized], [grads[i] for i in quantized],
                     [s["exp_avg"] for s in states],
                     absmaxes=[s["exp_avg_absmax"] for s in states])  # fmt: skip
                continue
            for i in quantized:  # one tensor at a time: the fp32 copy is one tensor's worth
                state = self.state[params[i]]
                m = quant.dequantize(state["exp_avg"], state["exp_avg_absmax"])
                step([params[i]], [grads[i]], [m])
                quant.quantize_(m, state["exp_avg"], state["exp_avg_absmax"])
        return loss


def lion(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    *,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    weight_decay: float,
    maximize: bool = False,
    cautious: bool = False,
    foreach: bool | None = None,
    fused: bool | None = None,
    capturable: bool = False,
    stochastic_rounding: bool = False,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
) -> None:
    """Functional Lion: update ``params`` and ``exp_avgs`` in place (see :class:`Lion`).

    ``grad_scale`` / ``found_inf`` (AMP): grads are divided by ``grad_scale`` and nothing is
    updated when ``found_inf`` is nonzero."""
    options = dict(lr=lr, betas=(beta1, beta2), weight_decay=weight_decay, maximize=maximize,
                   cautious=cautious, foreach=foreach, fused=fused, momentum_dtype=None,
                   capturable=capturable, stochastic_rounding=stochastic_rounding)  # fmt: skip
    _check_options(options)
    if not (len(params) == len(grads) == len(exp_avgs)):
        raise ValueError(
            f"params, grads and exp_avgs must have equal lengths, got "
            f"{len(params)}, {len(grads)}, {len(exp_avgs)}"
        )
    # The class relies on autograd's guarantee that a grad matches its param; here we check,
    # because the fused kernel trusts the shapes.
    for p, g, m in zip(params, grads, exp_avgs, strict=True):
        if g.dtype != p.dtype or g.shape != p.shape or m.shape != p.shape:
            raise TypeError(
                f"gradient {g.dtype}{list(g.shape)} and momentum {m.dtype}{list(m.shape)} must "
                f"match their parameter's dtype and shape, {p.dtype}{list(p.shape)}"
            )
    if params and capturable and (reason := _capturable_unsupported(params, fused)):
        raise ValueError(reason)
    _lion(params, grads, exp_avgs, lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay,
          maximize=maximize, cautious=cautious, foreach=foreach, fused=fused,
          capturable=capturable, stochastic_rounding=stochastic_rounding,
          grad_scale=grad_scale, found_inf=found_inf)  # fmt: skip


def _lion(params, grads, exp_avgs, *, lr, beta1, beta2, weight_decay, maximize, cautious,
          foreach, fused, capturable=False, stochastic_rounding=False, grad_scale=None,
          found_inf=None, absmaxes=None) -> None:  # fmt: skip
    """``absmaxes``: the momenta are 8-bit codes with these block maxima (Triton path only)."""
    if not params:
        return
    if absmaxes is not None:
        _triton_lion(params, grads, exp_avgs, lr=lr, beta1=beta1, beta2=beta2,
                     weight_decay=weight_decay, maximize=maximize, cautious=cautious,
                     grad_scale=grad_scale, found_inf=found_inf, absmaxes=absmaxes,
                     stochastic=stochastic_rounding
                     and any(p.dtype == torch.bfloat16 for p in params))  # fmt: skip
        return
    if _is_dtensor(params[0]):
        if not cautious:  # elementwise: each rank steps its own shard, as one process would
            params, grads, exp_avgs = (_local(ts) for ts in (params, grads, exp_avgs))
        elif fused:
            raise ValueError(
                "cautious=True with sharded (DTensor) params needs the mean over the whole "
                "tensor, which the fused kernels do not compute; use fused=False"
            )
        fused = False  # DTensor ops on the single-tensor or foreach path reduce across ranks
    if any(map(Tensor.is_complex, params)):
        params, grads, exp_avgs = (_as_real(ts) for ts in (params, grads, exp_avgs))
    stochastic = stochastic_rounding and any(p.dtype == torch.bfloat16 for p in params)
    impl = _choose_impl(params, exp_avgs, foreach=foreach, fused=fused, stochastic=stochastic)
    if impl is _triton_lion or impl is _fused_lion:  # AMP and a tensor lr handled inside
        impl(params, grads, exp_avgs, lr=lr, beta1=beta1, beta2=beta2,
             weight_decay=weight_decay, maximize=maximize, cautious=cautious,
             grad_scale=grad_scale, found_inf=found_inf, stochastic=stochastic)  # fmt: skip
        return
    # Host paths: an overflowed AMP step is skipped and grads are unscaled here (reading
    # found_inf synchronises, as GradScaler's own unscale-and-check path does).
    if found_inf is not None and float(found_inf) != 0:
        return
    if grad_scale is not None:
        torch._foreach_div_(grads, grad_scale.to(grads[0].device))
    lr = float(lr)  # a tensor lr is read once per step; these kernels take a plain scalar
    if stochastic:
        impl = functools.partial(impl, stochastic=True)
    impl(
        params,
        grads,
        exp_avgs,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        decay=1.0 - lr * weight_decay,
        maximize=maximize,
        cautious=cautious,
    )


# ---------------------------------------------------------------------------------------------
# Dispatch


def fused_supported(params: list[Tensor], exp_avgs: list[Tensor]) -> str | None:
    """Why no fused kernel can take these tensors, or None when one can."""
    kinds = set(zip(_each("device", params), _each("dtype", params), _each("dtype", exp_avgs),
                    strict=True))  # fmt: skip
    for device, p_dtype, m_dtype in kinds:
        kernel = _fused_kernel(device)
        if kernel is None:
            return (
                f"fused=True supports CPU tensors (C kernel) and CUDA tensors (Triton kernel, "
                f"needs the triton package), got a parameter on {device}"
            )
        if (p_dtype, m_dtype) not in kernel.SUPPORTED:
            allowed = ", ".join(sorted(f"{a}/{b}" for a, b in kernel.SUPPORTED))
            return (
                f"fused=True on {device.type} does not support parameter dtype {p_dtype} with "
                f"momentum dtype {m_dtype} (supported param/momentum: {allowed})"
            )
    return None


def _fused_kernel(device: torch.device):
    """The fused kernel module for tensors on ``device``, or None."""
    if device.type == "cuda" or _triton_runs_on(device):
        return triton_kernel if _triton_runs_on(device) else None
    return cpu_kernel if device.type == "cpu" else None


# Whether a kernel is usable is fixed for a process (Triton's import and the C build are cached),
# so a compiled step takes these as constants instead of tracing the import or the build. (Tests
# that flip ``triton_kernel.STEP_CPU_TENSORS`` reset torch._dynamo between compiled runs.)
@torch.compiler.assume_constant_result
def _triton_runs_on(device: torch.device) -> bool:
    return triton_kernel.runs_on(device)


@torch.compiler.assume_constant_result
def _cpu_kernel_available() -> bool:
    return cpu_kernel.available()


def _choose_impl(
    params: list[Tensor],
    exp_avgs: list[Tensor],
    *,
    foreach: bool | None,
    fused: bool | None,
    stochastic: bool = False,
) -> Callable[..., None]:
    device = params[0].device
    if fused:
        if reason := fused_supported(params, exp_avgs):
            raise ValueError(reason)
        return _triton_lion if _fused_kernel(device) is triton_kernel else _fused_lion
    if foreach:
        return _multi_tensor_lion
    # Defaults by measurement (`optforge bench step`): on CPU the fused kernel is fastest and
    # the single-tensor loop beats foreach (no temporaries lists); on accelerators foreach wins
    # until the Triton kernel is measured on a GPU. The C kernel rounds to nearest only.
    if (
        fused is None
        and device.type == "cpu"
        and not stochastic
        and fused_supported(params, exp_avgs) is None
        and _cpu_kernel_available()
    ):
        return _fused_lion
    if foreach is None and device.type != "cpu":
        return _multi_tensor_lion
    return _single_tensor_lion


def _capturable_unsupported(params: list[Tensor], fused: bool | None) -> str | None:
    device = params[0].device
    if _fused_kernel(device) is not triton_kernel or not fused:
        return (
            f"capturable=True needs fused=True and CUDA params (the Triton kernel reads lr and "
            f"found_inf on the device); got fused={fused} and params on {device}"
        )
    return None


def _is_dtensor(t: Tensor) -> bool:
    return type(t).__name__ == "DTensor" and hasattr(t, "to_local")


def _local(tensors: list[Tensor]) -> list[Tensor]:
    """The shards a DTensor's rank owns (views of the same storage, updated in place)."""
    return [t.to_local() if _is_dtensor(t) else t for t in tensors]


def _as_real(tensors: list[Tensor]) -> list[Tensor]:
    return [torch.view_as_real(t) if t.is_complex() else t for t in tensors]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _caution_(update: Tensor, grad: Tensor) -> None:
    """Zero the update where it disagrees in sign with the gradient; rescale what is kept."""
    mask = (update * grad > 0).to(update.dtype)
    mask.div_(mask.mean().clamp(min=_CAUTIOUS_MIN_MEAN))  # out of place: DTensor needs it
    update.mul_(mask)


# ---------------------------------------------------------------------------------------------
# Implementations: all take real tensors, a float lr and decay = 1 - lr * weight_decay.


def _store_(dst: Tensor, src: Tensor, stochastic: bool) -> None:
    """Write the fp32 result into (possibly low-precision) storage."""
    if stochastic and dst.dtype == torch.bfloat16:
        src = _stochastic_bf16(src)
    dst.copy_(src)


def _stochastic_bf16(x: Tensor) -> Tensor:
    """Round fp32 ``x`` to bf16 up or down with probabilities proportional to the distance
    (unbiased): 16 random low bits are added to the fp32 pattern, which is then truncated."""
    bits = x.view(torch.int32)
    noisy = bits + torch.randint_like(bits, 0, 1 << 16)
    rounded = noisy.bitwise_and_(-(1 << 16)).view(torch.float32)
    return torch.where(torch.isnan(x), x, rounded).to(torch.bfloat16)


def _single_tensor_lion(
    params, grads, exp_avgs, *, lr, beta1, beta2, decay, maximize, cautious, stochastic=False
) -> None:
    for p, g, m in zip(params, grads, exp_avgs, strict=True):
        dtype = _compute_dtype(p.dtype)
        p_c, g_c, m_c = p.to(dtype), g.to(dtype), m.to(dtype)  # no copy when already `dtype`
        if maximize:
            g_c = -g_c
        update = torch.lerp(m_c, g_c, 1 - beta1).sign_()
        if cautious:
            _caution_(update, g_c)
        if decay != 1.0:
            p_c.mul_(decay)
        p_c.add_(update, alpha=-lr)
        m_c.lerp_(g_c, 1 - beta2)
        if p_c is not p:
            _store_(p, p_c, stochastic)
        if m_c is not m:
            m.copy_(m_c)


def _multi_tensor_lion(
    params, grads, exp_avgs, *, lr, beta1, beta2, decay, maximize, cautious, stochastic=False
) -> None:
    keys = list(zip(_each("device", params), _each("dtype", params), _each("dtype", exp_avgs),
                    strict=True))  # fmt: skip
    for p_s, g_s, m_s in _split_by(keys, params, grads, exp_avgs):
        dtype = _compute_dtype(p_s[0].dtype)
        p_c = [p.to(dtype) for p in p_s]
        g_c = [g.to(dtype) for g in g_s]
        m_c = [m.to(dtype) for m in m_s]
        if maximize:
            g_c = torch._foreach_neg(g_c)
        updates = torch._foreach_lerp(m_c, g_c, 1 - beta1)
        torch._foreach_sign_(updates)
        if cautious:
            for update, g in zip(updates, g_c, strict=True):
                _caution_(update, g)
        if decay != 1.0:
            torch._foreach_mul_(p_c, decay)
        torch._foreach_add_(p_c, updates, alpha=-lr)
        torch._foreach_lerp_(m_c, g_c, 1 - beta2)
        if p_c[0] is not p_s[0]:
            if stochastic and p_s[0].dtype == torch.bfloat16:
                p_c = [_stochastic_bf16(p) for p in p_c]
            torch._foreach_copy_(p_s, p_c)
        if m_c[0] is not m_s[0]:
            torch._foreach_copy_(m_s, m_c)


def _fused_lion(params, grads, exp_avgs, *, stochastic, grad_scale, found_inf, **hyper) -> None:
    """The C kernel, through the ``optforge::lion_cpu_`` op (``kernels/ops.py``), which also
    skips an overflowed AMP step and unscales the grads in place."""
    if stochastic:
        raise ValueError(
            "the fused CPU kernel rounds to nearest; stochastic_rounding=True needs fused=None "
            "or False on CPU"
        )
    write_back: list[tuple[Tensor, Tensor]] = []
    if not _all_contiguous(itertools.chain(params, grads, exp_avgs)):
        params, grads, exp_avgs, write_back = _dense_triples(
            params, grads, exp_avgs, with_grads=grad_scale is not None
        )
    for p_s, g_s, m_s in _split_by(_dtype_pairs(params, exp_avgs), params, grads, exp_avgs):
        ops.lion_cpu(p_s, g_s, m_s, grad_scale=grad_scale, found_inf=found_inf, **hyper)
    for dst, src in write_back:
        dst.copy_(src)


def _triton_quantized(params: list[Tensor], group: dict[str, Any]) -> bool:
    """Whether the group's 8-bit momenta go to the Triton kernel, which decodes and encodes
    them itself (the other paths decode one tensor at a time in torch)."""
    device = params[0].device
    return (
        bool(group["fused"])
        and not _is_dtensor(params[0])
        and (_fused_kernel(device) is triton_kernel)
    )


def _triton_lion(params, grads, exp_avgs, *, grad_scale, found_inf, stochastic, absmaxes=None,
                 **hyper) -> None:  # fmt: skip
    """The Triton kernel, through the ``optforge::lion_triton_`` op (``kernels/ops.py``)."""
    write_back: list[tuple[Tensor, Tensor]] = []
    if not _all_contiguous(itertools.chain(params, grads, exp_avgs)):
        params, grads, exp_avgs, write_back = _dense_triples(params, grads, exp_avgs)
    lists = (params, grads, exp_avgs) if absmaxes is None else (params, grads, exp_avgs, absmaxes)
    for p_s, g_s, m_s, *a_s in _split_by(_dtype_pairs(params, exp_avgs), *lists):
        seed = None
        if stochastic and p_s[0].dtype == torch.bfloat16:
            # torch's CPU generator: no device sync; the op reads it (no graph break)
            seed = torch.randint(2**31 - 1, ())
        ops.lion_triton(p_s, g_s, m_s, grad_scale=grad_scale, found_inf=found_inf, seed=seed,
                        absmaxes=a_s[0] if a_s else None, **hyper)  # fmt: skip
    for dst, src in write_back:
        dst.copy_(src)


def _dense_triples(params, grads, exp_avgs, with_grads=False):
    """The kernel walks raw storage, so each (p, g, m) must share one dense layout; any other
    triple is stepped on contiguous copies, returned with the (original, copy) pairs to write
    back afterwards (the grads' too when ``with_grads``: the kernel unscales them in place)."""
    out: tuple[list, list, list] = ([], [], [])
    write_back = []
    for p, g, m in zip(params, grads, exp_avgs, strict=True):
        if not _same_dense_layout(p, g, m):
            p_c, g_c, m_c = p.contiguous(), g.contiguous(), m.contiguous()
            written = ((p, p_c), (g, g_c), (m, m_c)) if with_grads else ((p, p_c), (m, m_c))
            write_back += [(t, c) for t, c in written if c is not t]
            p, g, m = p_c, g_c, m_c
        for lst, t in zip(out, (p, g, m), strict=True):
            lst.append(t)
    return (*out, write_back)


def _each(name: str, tensors: Iterable[Tensor]) -> list:
    """``[t.<name> for t in tensors]``. The host side of a fused step over a few hundred
    tensors is made of such passes, so in eager mode they run at C speed (``attrgetter``,
    ~3x cheaper than a comprehension); dynamo cannot trace ``attrgetter``, so under
    ``torch.compile`` (where host time is spent once, at tracing) they are comprehensions."""
    if torch.compiler.is_compiling():
        return [getattr(t, name) for t in tensors]
    return list(map(operator.attrgetter(name), tensors))


def _all_contiguous(tensors: Iterable[Tensor]) -> bool:
    if torch.compiler.is_compiling():
        return all(t.is_contiguous() for t in tensors)
    return all(map(torch._C.TensorBase.is_contiguous, tensors))


def _dtype_pairs(params: list[Tensor], exp_avgs: list[Tensor]) -> list[tuple]:
    return list(zip(_each("dtype", params), _each("dtype", exp_avgs), strict=True))


def _split_by(keys: list, *lists: list) -> list[tuple[list, ...]]:
    """Split ``lists`` element by element into lists sharing ``keys[i]``; one split (the usual
    case) is free."""
    if len(set(keys)) == 1:
        return [lists]
    groups: dict[Any, tuple[list, ...]] = {}
    for k, *items in zip(keys, *lists, strict=True):
        for lst, t in zip(groups.setdefault(k, tuple([] for _ in lists)), items, strict=True):
            lst.append(t)
    return list(groups.values())


def _same_dense_layout(p: Tensor, g: Tensor, m: Tensor) -> bool:
    if p.is_contiguous() and g.is_contiguous() and m.is_contiguous():
        return True
    return p.stride() == g.stride() == m.stride() and _is_dense(p)


def _is_dense(t: Tensor) -> bool:
    """True when t's elements fill one gap-free block of memory, in any dimension order."""
    expected = 1
    for size, stride in sorted(
        ((size, stride) for size, stride in zip(t.shape, t.stride(), strict=True) if size != 1),
        key=lambda x: x[1],
    ):
        if stride != expected:
            return False
        expected *= size
    return True


# ---------------------------------------------------------------------------------------------
# Validation: a user mistake names the value and the accepted range, at construction.


def _check_options(group: dict[str, Any]) -> None:
    check_lr(group["lr"])

    betas = group["betas"]
    if not (isinstance(betas, tuple | list) and len(betas) == 2):
        raise ValueError(f"Invalid betas: {betas!r} (must be a pair (beta1, beta2))")
    for i, beta in enumerate(betas, start=1):
        if not (is_number(beta) and 0.0 <= beta < 1.0):
            raise ValueError(f"Invalid beta{i}: {beta!r} (must be a number in [0, 1))")

    wd = group["weight_decay"]
    if not (is_number(wd) and 0.0 <= wd < math.inf):
        raise ValueError(f"Invalid weight_decay: {wd!r} (must be a finite number >= 0)")

    for name in ("maximize", "cautious", "capturable", "stochastic_rounding"):
        if not isinstance(group[name], bool):
            raise TypeError(f"Invalid {name}: {group[name]!r} (must be True or False)")
    for name in ("foreach", "fused"):
        if group[name] is not None and not isinstance(group[name], bool):
            raise TypeError(f"Invalid {name}: {group[name]!r} (must be None, True or False)")
    if group["foreach"] and group["fused"]:
        raise ValueError("foreach=True and fused=True are exclusive; choose one implementation")
    if group["capturable"] and group["stochastic_rounding"]:
        raise ValueError(
            "capturable=True and stochastic_rounding=True cannot be combined yet: a captured "
            "graph would replay one rounding seed every step"
        )

    dtype = group["momentum_dtype"]
    if dtype is not None and not (
        isinstance(dtype, torch.dtype) and (dtype.is_floating_point or dtype == torch.int8)
    ):
        raise TypeError(
            f"Invalid momentum_dtype: {dtype!r} (must be None, a floating torch.dtype such as "
            f"torch.bfloat16, or torch.int8 for 8-bit blockwise-quantized momentum)"
        )


def _check_params(group: dict[str, Any], index: int) -> None:
    for p in group["params"]:
        if not (p.is_floating_point() or p.is_complex()):
            raise TypeError(
                f"Lion optimizes floating-point or complex tensors; group {index} has a "
                f"parameter of dtype {p.dtype} and shape {tuple(p.shape)}"
            )
        if p.is_complex() and group["momentum_dtype"] is not None:
            raise ValueError(
                f"momentum_dtype={group['momentum_dtype']} cannot be used with complex "
                f"parameters (group {index}); leave it None for complex params"
            )
    if group["fused"]:
        momenta = [torch.empty(0, dtype=_float_momentum_dtype(p, group)) for p in group["params"]]
        real = _as_real([torch.empty(0, dtype=p.dtype, device=p.device) for p in group["params"]])
        if reason := fused_supported(real, _as_real(momenta)):
            raise ValueError(f"group {index}: {reason}")
        devices = {p.device for p in group["params"]}
        if any(_fused_kernel(d) is cpu_kernel for d in devices):
            if group["stochastic_rounding"]:
                raise ValueError(
                    f"group {index}: the fused CPU kernel rounds to nearest; "
                    f"stochastic_rounding=True needs fused=None or False on CPU"
                )
            cpu_kernel.library()  # a missing compiler is reported now, not at the first step
    capture_problem = group["capturable"] and group["params"]
    if capture_problem and (reason := _capturable_unsupported(group["params"], group["fused"])):
        raise ValueError(f"group {index}: {reason}")


# ---------------------------------------------------------------------------------------------
# Momentum storage: a float dtype, or 8-bit codes with per-block maxima (``kernels/quant.py``)


def _quantizes(p: Tensor, group: dict[str, Any]) -> bool:
    return group["momentum_dtype"] == torch.int8 and quant.wants_quantized(p)


def _float_momentum_dtype(p: Tensor, group: dict[str, Any]) -> torch.dtype:
    dtype = group["momentum_dtype"]
    if dtype == torch.int8:  # a tensor too small to quantize
        return torch.float32
    return dtype or p.dtype


def _convert_momentum(state: dict[str, Any], p: Tensor, group: dict[str, Any]) -> None:
    """Bring a loaded momentum to this optimizer's storage, quantizing or dequantizing."""
    if "exp_avg_absmax" in state and not _quantizes(p, group):
        m = quant.dequantize(state["exp_avg"], state.pop("exp_avg_absmax"))
        state["exp_avg"] = m.to(_float_momentum_dtype(p, group))
    elif "exp_avg_absmax" not in state and _quantizes(p, group):
        m = state["exp_avg"].to(torch.float32)
        state["exp_avg"], state["exp_avg_absmax"] = quant.zeros(p)
        quant.quantize_(m, state["exp_avg"], state["exp_avg_absmax"])
    elif "exp_avg_absmax" not in state:
        state["exp_avg"] = state["exp_avg"].to(_float_momentum_dtype(p, group))
    else:
        state["exp_avg"] = state["exp_avg"].to(torch.int8)


def _saved_momenta(state_dict: dict[str, Any], groups: list[dict[str, Any]]) -> dict:
    """param -> its saved momentum tensors, mapped the way torch's load_state_dict maps saved
    ids to params (in group order)."""
    saved_ids = itertools.chain.from_iterable(g["params"] for g in state_dict["param_groups"])
    params = itertools.chain.from_iterable(g["params"] for g in groups)
    out = {}
    for saved_id, p in zip(saved_ids, params, strict=False):  # torch checks the lengths
        entry = state_dict["state"].get(saved_id, {})
        kept = {k: entry[k] for k in ("exp_avg", "exp_avg_absmax") if k in entry}
        if kept:
            out[p] = kept
    return out
