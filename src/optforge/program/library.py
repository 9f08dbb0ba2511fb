"""Known optimizers written as programs; factories take their hyper-parameters.

Each program reads ``lr`` as the learning rate of its parameter group (``ProgramOptimizer``
passes the group's ``lr``; a schedule scales it) and returns ``update`` for ``w <- w - update``.
``interp(x, y, a) = (1 - a) * x + a * y``, so ``interp(g, v1, beta)`` is an EMA with decay beta.
"""

from __future__ import annotations

from optforge.program.program import Program, parse


def from_body(*body: str) -> Program:
    """A program from its body's statements, one per string (the ``def`` line is added)."""
    return parse("\n".join(["def train(w, g, v1, v2, lr):", *(f"    {s}" for s in body)]))


def _decay(weight_decay: float, into: str = "u") -> list[str]:
    """Decoupled weight decay added to the direction before it is scaled by lr."""
    if not weight_decay:
        return []
    return [f"d = w * {float(weight_decay)!r}", f"{into} = {into} + d"]


def sgd(weight_decay: float = 0.0) -> Program:
    """Plain SGD: update = lr * (g + wd * w)."""
    return from_body("u = g", *_decay(weight_decay), "update = u * lr", "return update, v1, v2")


def momentum(beta: float = 0.9, weight_decay: float = 0.0) -> Program:
    """Heavy-ball momentum as torch.optim.SGD: v1 = beta * v1 + g; update = lr * v1."""
    return from_body(
        f"m = v1 * {float(beta)!r}",
        "v1 = m + g",
        "u = v1",
        *_decay(weight_decay),
        "update = u * lr",
        "return update, v1, v2",
    )


def signum(beta: float = 0.9, weight_decay: float = 0.0) -> Program:
    """Signum (Bernstein et al., 2018): the sign of an EMA of gradients."""
    return from_body(
        f"v1 = interp(g, v1, {float(beta)!r})",
        "u = sign(v1)",
        *_decay(weight_decay),
        "update = u * lr",
        "return update, v1, v2",
    )


def adamw(
    beta1: float = 0.9, beta2: float = 0.999, weight_decay: float = 0.0, eps: float | None = None
) -> Program:
    """The paper's AdamW: no bias correction; ``eps=None`` leaves epsilon out (its warm start)."""
    denominator = ["s = sqrt(v2)"]
    if eps is not None:
        denominator.append(f"s = s + {float(eps)!r}")
    return from_body(
        "g2 = square(g)",
        f"v1 = interp(g, v1, {float(beta1)!r})",
        f"v2 = interp(g2, v2, {float(beta2)!r})",
        *denominator,
        "u = v1 / s",
        *_decay(weight_decay),
        "update = u * lr",
        "return update, v1, v2",
    )


def lion(beta1: float = 0.9, beta2: float = 0.99, weight_decay: float = 0.0) -> Program:
    """Lion, the paper's discovery: sign of an interpolated momentum, decoupled decay."""
    return from_body(
        f"c = interp(g, v1, {float(beta1)!r})",
        "u = sign(c)",
        *_decay(weight_decay),
        "update = u * lr",
        f"v1 = interp(g, v1, {float(beta2)!r})",
        "return update, v1, v2",
    )


def rmsprop(beta: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0) -> Program:
    """RMSProp: g / (sqrt(EMA of g^2) + eps)."""
    return from_body(
        "g2 = square(g)",
        f"v2 = interp(g2, v2, {float(beta)!r})",
        "s = sqrt(v2)",
        f"s = s + {float(eps)!r}",
        "u = g / s",
        *_decay(weight_decay),
        "update = u * lr",
        "return update, v1, v2",
    )


def adabelief(
    beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0
) -> Program:
    """AdaBelief-style (Zhuang et al., 2020), no bias correction: the second moment tracks
    (g - m)^2, the belief in the momentum, instead of g^2."""
    return from_body(
        f"v1 = interp(g, v1, {float(beta1)!r})",
        "r = g - v1",
        "r2 = square(r)",
        f"v2 = interp(r2, v2, {float(beta2)!r})",
        "s = sqrt(v2)",
        f"s = s + {float(eps)!r}",
        "u = v1 / s",
        *_decay(weight_decay),
        "update = u * lr",
        "return update, v1, v2",
    )


def powersign(beta: float = 0.9, weight_decay: float = 0.0) -> Program:
    """PowerSign (Bello et al., 2017): g * e^(sign(g) * sign(m))."""
    return from_body(
        f"v1 = interp(g, v1, {float(beta)!r})",
        "a = sign(g)",
        "b = sign(v1)",
        "ab = a * b",
        "f = exp(ab)",
        "u = g * f",
        *_decay(weight_decay),
        "update = u * lr",
        "return update, v1, v2",
    )


def addsign(beta: float = 0.9, alpha: float = 1.0, weight_decay: float = 0.0) -> Program:
    """AddSign (Bello et al., 2017): g * (alpha + sign(g) * sign(m))."""
    return from_body(
        f"v1 = interp(g, v1, {float(beta)!r})",
        "a = sign(g)",
        "b = sign(v1)",
        "ab = a * b",
        f"f = ab + {float(alpha)!r}",
        "u = g * f",
        *_decay(weight_decay),
        "update = u * lr",
        "return update, v1, v2",
    )


def _torch_adamw_body(
    beta1: float, beta2: float, eps: float, weight_decay: float, into: str = "u"
) -> list[str]:
    """torch.optim.AdamW's direction from the moments ``v1``, ``v2`` (already updated):
    bias-corrected by the step count, epsilon outside the square root, decoupled decay."""
    return [
        f"c1 = power({float(beta1)!r}, step)",
        "c1 = invert(c1)",
        "m = v1 / c1",
        f"c2 = power({float(beta2)!r}, step)",
        "c2 = invert(c2)",
        "s = v2 / c2",
        "s = sqrt(s)",
        f"s = s + {float(eps)!r}",
        f"{into} = m / s",
        *_decay(weight_decay, into),
    ]


def torch_adamw(
    beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0
) -> Program:
    """AdamW as ``torch.optim.AdamW`` runs it: bias correction (from the ``step`` input) and
    epsilon, which the paper's form leaves out."""
    return from_body(
        "g2 = square(g)",
        f"v1 = interp(g, v1, {float(beta1)!r})",
        f"v2 = interp(g2, v2, {float(beta2)!r})",
        *_torch_adamw_body(beta1, beta2, eps, weight_decay),
        "update = u * lr",
        "return update, v1, v2",
    )


def muon(
    momentum: float = 0.95,
    nesterov: bool = True,
    weight_decay: float = 0.1,
    adam_lr_ratio: float = 0.1,
    adam_betas: tuple[float, float] = (0.9, 0.999),
    adam_eps: float = 1e-8,
    adam_weight_decay: float = 0.0,
) -> Program:
    """Muon as users run it, in one program with two state slots. On hidden matrices
    (``hidden`` = 1) it is ``torch.optim.Muon(lr=lr, momentum, nesterov, weight_decay)``:
    momentum (an EMA, as torch keeps it), Nesterov's look-ahead, ``orthogonalize``, times the
    shape factor ``aspect``. On every other tensor it is ``torch.optim.AdamW(lr=lr *
    adam_lr_ratio, adam_betas, adam_eps, adam_weight_decay)``. ``v1`` is the momentum of both
    (its decay is ``momentum`` or ``adam_betas[0]`` per tensor), ``v2`` AdamW's second moment.
    Newton-Schulz runs in the compute dtype (fp32), where torch's Muon iterates in bf16."""
    beta1, beta2 = adam_betas
    look_ahead = [f"n = interp(g, v1, {float(momentum)!r})"] if nesterov else ["n = v1"]
    return from_body(
        f"b = interp({float(beta1)!r}, {float(momentum)!r}, hidden)",
        "v1 = interp(g, v1, b)",
        "g2 = square(g)",
        f"v2 = interp(g2, v2, {float(beta2)!r})",
        *_torch_adamw_body(beta1, beta2, adam_eps, adam_weight_decay, into="a"),
        f"a = a * {float(adam_lr_ratio)!r}",
        *look_ahead,
        "o = orthogonalize(n)",
        "o = o * aspect",
        *_decay(weight_decay, "o"),
        "u = interp(a, o, hidden)",
        "update = u * lr",
        "return update, v1, v2",
    )


def paper_warm_start(eps: float | None = None) -> Program:
    """The paper's search starting point: AdamW without epsilon or bias correction, with
    weight decay 0.01 and its own lr scale 0.001. ``eps`` adds an epsilon: without it, a
    parameter whose gradient is exactly 0 (an embedding row no batch uses, an always-blank
    pixel) divides 0 by 0 at the first step."""
    return from_body(
        "g2 = square(g)",
        "v1 = interp(g, v1, 0.9)",
        "v2 = interp(g2, v2, 0.999)",
        "s = sqrt(v2)",
        *([f"s = s + {float(eps)!r}"] if eps is not None else []),
        "update = v1 / s",
        "d = w * 0.01",
        "update = update + d",
        "lr = lr * 0.001",
        "update = update * lr",
        "return update, v1, v2",
    )


PROGRAMS = {
    "sgd": sgd,
    "momentum": momentum,
    "signum": signum,
    "adamw": adamw,
    "lion": lion,
    "rmsprop": rmsprop,
    "adabelief": adabelief,
    "powersign": powersign,
    "addsign": addsign,
    "warm_start": paper_warm_start,
    "torch_adamw": torch_adamw,
    "muon": muon,
}
