"""``torch.compile(opt.step, fullgraph=True)`` on every Lion path: no graph break, the fused
kernels appear in the graph as the ``optforge::lion_cpu_`` / ``optforge::lion_triton_`` custom
ops (``optim/kernels/ops.py``), and a compiled step leaves the same bits as an eager one.

The fused paths compile with inductor (the kernel runs as an opaque op, so inductor changes no
arithmetic); foreach and single-tensor compile with aot_eager, because inductor's own lerp
rounds the momentum differently from ATen's by an ulp. The Triton op runs on CPU tensors under
Triton's interpreter (tests/conftest.py)."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch._dynamo import lookup_backend

import optforge
from optforge.optim.kernels import ops, quant
from optforge.optim.kernels import triton as triton_kernel

lion_module = importlib.import_module("optforge.optim.lion")
# (64, 80) holds 5120 elements, enough for 8-bit momentum; the others keep fp32 momentum.
SHAPES = [(64, 80), (80,), (3, 5, 7), ()]
STEPS = 3


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Compiled code is cached per code object; each test compiles its own."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


class Recorder:
    """A torch.compile backend that keeps each graph dynamo hands it, then runs ``backend``."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.graphs: list[torch.fx.GraphModule] = []

    def __call__(self, gm, example_inputs):
        self.graphs.append(gm)
        return lookup_backend(self.backend)(gm, example_inputs)

    def optforge_ops(self) -> set[str]:
        return {
            str(node.target)
            for gm in self.graphs
            for node in gm.graph.nodes
            if node.op == "call_function" and str(node.target).startswith("optforge.")
        }


def _trajectory(options, *, dtype=torch.float32, backend=None, lrs=None, amp=None):
    """Params and state after STEPS steps from a fixed start; compiled when ``backend``."""
    options = {"lr": 1e-2, **options}
    if isinstance(options["lr"], torch.Tensor):
        options["lr"] = options["lr"].clone()  # each run schedules its own
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s).to(dtype)) for s in SHAPES]
    opt = optforge.Lion(params, **options)
    step = torch.compile(opt.step, fullgraph=True, backend=backend) if backend else opt.step
    gen = torch.Generator().manual_seed(1)
    for i in range(STEPS):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(dtype)
        if lrs is not None:  # a scheduler: a new lr every step
            group = opt.param_groups[0]
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lrs[i])
            else:
                group["lr"] = lrs[i]
        if amp is not None:  # what torch.amp.GradScaler hands a fused optimizer
            scale, found_inf = amp[i]
            opt.grad_scale, opt.found_inf = torch.tensor(scale), torch.tensor(found_inf)
            for p in params:
                p.grad.mul_(scale)
        step()
    grads = [p.grad.clone() for p in params]
    state = [t.clone() for s in opt.state.values() for t in s.values()]
    return [p.detach().clone() for p in params] + state + grads


def _assert_same_bits(compiled, eager):
    assert len(compiled) == len(eager)
    for a, b in zip(compiled, eager, strict=True):
        assert a.dtype == b.dtype
        assert torch.equal(a, b), (a - b).abs().max()


# name: (options, param dtype, backend, op expected in the graph)
CPU_PATHS = {
    "fused-fp32": (dict(fused=True), torch.float32, "inductor", "optforge.lion_cpu_.default"),
    "fused-bf16-params": (dict(fused=True), torch.bfloat16, "inductor",
                          "optforge.lion_cpu_.default"),
    "fused-bf16-momentum": (dict(fused=True, momentum_dtype=torch.bfloat16), torch.float32,
                            "inductor", "optforge.lion_cpu_.default"),
    "fused-cautious-maximize-wd": (dict(fused=True, cautious=True, maximize=True, weight_decay=0.5),
                                   torch.float32, "inductor", "optforge.lion_cpu_.default"),
    "default": (dict(), torch.float32, "inductor", "optforge.lion_cpu_.default"),
    "default-tensor-lr": (dict(lr=torch.tensor(1e-2)), torch.float32, "inductor",
                          "optforge.lion_cpu_.default"),
    # 8-bit: each quantized tensor is decoded, stepped by the op and encoded in torch ops
    # (inductor matches too, but compiling the codecs costs ~8 s here).
    "default-int8-momentum": (dict(momentum_dtype=torch.int8), torch.float32, "aot_eager",
                              "optforge.lion_cpu_.default"),
    "foreach": (dict(foreach=True, cautious=True, weight_decay=0.5), torch.float32, "aot_eager",
                None),
    "single-tensor": (dict(foreach=False, fused=False, maximize=True), torch.bfloat16,
                      "aot_eager", None),
}  # fmt: skip


@pytest.mark.parametrize("name", CPU_PATHS)
def test_compiled_step_matches_eager_bit_for_bit(name):
    options, dtype, backend, op = CPU_PATHS[name]
    recorder = Recorder(backend)
    compiled = _trajectory(options, dtype=dtype, backend=recorder)
    _assert_same_bits(compiled, _trajectory(options, dtype=dtype))
    # Two graphs: the first step creates the momentum, later steps reuse it.
    assert len(recorder.graphs) == 2
    assert recorder.optforge_ops() == ({op} if op else set())


@pytest.mark.parametrize(
    "options",
    [dict(fused=True), dict(lr=torch.tensor(1e-2)), dict(foreach=True, lr=torch.tensor(1e-2)),
     dict(fused=False, lr=torch.tensor(1e-2))],
    ids=["fused-float-lr", "default-tensor-lr", "foreach-tensor-lr", "single-tensor-lr"],
)  # fmt: skip
def test_a_scheduled_lr_does_not_recompile(options):
    """The fused op takes the lr as a tensor, so a new float lr is a new input, not a new
    graph; on foreach and single-tensor a float lr is a graph constant (as in torch's own
    optimizers), so those take a tensor lr."""
    lrs = [1e-2, 3e-3, 2e-2]
    recorder = Recorder("aot_eager")
    compiled = _trajectory(options, backend=recorder, lrs=lrs)
    _assert_same_bits(compiled, _trajectory(options, lrs=lrs))
    assert len(recorder.graphs) == 2


def test_amp_grad_scale_and_found_inf_compile_on_the_fused_kernel():
    """GradScaler's tensors are read inside the op: an overflowed step writes nothing, the
    others unscale the grads in place, as in eager."""
    amp = [(1024.0, 0.0), (1024.0, 1.0), (512.0, 0.0)]
    recorder = Recorder("aot_eager")
    compiled = _trajectory(dict(fused=True), backend=recorder, amp=amp)
    _assert_same_bits(compiled, _trajectory(dict(fused=True), amp=amp))
    assert recorder.optforge_ops() == {"optforge.lion_cpu_.default"}


def _samples(p_dtype=torch.float32, m_dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    shapes = [(5, 7), (300,)]
    return [[torch.randn(s, generator=gen).to(dtype) for s in shapes]
            for dtype in (p_dtype, p_dtype, m_dtype)]  # fmt: skip


def test_opcheck_lion_cpu():
    for extra in [
        (0.01, None, 0.9, 0.99, 0.1, False, True, None, None),
        (0.0, torch.tensor(0.01), 0.9, 0.99, 0.1, True, False, torch.tensor(4.0),
         torch.tensor(0.0)),
    ]:  # fmt: skip
        torch.library.opcheck(ops.lion_cpu_, (*_samples(), *extra))


def _fake_trace(params, grads, exp_avgs, **options):
    def step(params, grads, exp_avgs):
        lion_module.lion(params, grads, exp_avgs, lr=1e-2, beta1=0.9, beta2=0.99,
                         weight_decay=0.1, **options)  # fmt: skip

    gm = torch.fx.experimental.proxy_tensor.make_fx(step, tracing_mode="fake")(
        params, grads, exp_avgs
    )
    return {str(n.target) for n in gm.graph.nodes if str(n.target).startswith("optforge.")}


def test_fake_tensor_trace_holds_the_cpu_op():
    assert _fake_trace(*_samples(), fused=True) == {"optforge.lion_cpu_.default"}


# ---------------------------------------------------------------------------------------------
# The Triton op, under Triton's interpreter on CPU tensors


@pytest.fixture
def triton_on_cpu(monkeypatch):
    pytest.importorskip("triton")
    if not triton_kernel.interpreted():
        pytest.skip("needs Triton's interpreter (TRITON_INTERPRET=1, set by tests/conftest.py)")
    monkeypatch.setattr(triton_kernel, "STEP_CPU_TENSORS", True)


TRITON_PATHS = {
    "fp32": (dict(fused=True), torch.float32),
    "cautious-maximize-wd": (dict(fused=True, cautious=True, maximize=True, weight_decay=0.5),
                             torch.float32),
    "tensor-lr": (dict(fused=True, lr=torch.tensor(1e-2)), torch.float32),
    "bf16-momentum": (dict(fused=True, momentum_dtype=torch.bfloat16), torch.float32),
    "int8-momentum": (dict(fused=True, momentum_dtype=torch.int8), torch.float32),
    "bf16-stochastic-rounding": (dict(fused=True, stochastic_rounding=True), torch.bfloat16),
}  # fmt: skip


@pytest.mark.parametrize("name", TRITON_PATHS)
def test_compiled_triton_step_matches_eager(name, triton_on_cpu):
    """aot_eager keeps the seed draw an eager ``torch.randint`` on torch's CPU generator, so
    even stochastic rounding repeats eager's bits (inductor would draw its own randoms)."""
    options, dtype = TRITON_PATHS[name]
    recorder = Recorder("aot_eager")
    torch.manual_seed(5)
    compiled = _trajectory(options, dtype=dtype, backend=recorder)
    torch.manual_seed(5)
    _assert_same_bits(compiled, _trajectory(options, dtype=dtype))
    assert recorder.optforge_ops() == {"optforge.lion_triton_.default"}


def test_fake_tensor_trace_holds_the_triton_op(triton_on_cpu):
    assert _fake_trace(*_samples(), fused=True) == {"optforge.lion_triton_.default"}
    codes, absmaxes = zip(*(quant.zeros(p) for p in _samples()[0]), strict=True)
    params, grads, _ = _samples()
    seen = torch.fx.experimental.proxy_tensor.make_fx(
        lambda p, g, m, a: lion_module._lion(p, g, m, lr=1e-2, beta1=0.9, beta2=0.99,
                                             weight_decay=0.0, maximize=False, cautious=False,
                                             foreach=None, fused=True, absmaxes=a),
        tracing_mode="fake",
    )(params, grads, list(codes), list(absmaxes))  # fmt: skip
    assert "optforge.lion_triton_.default" in {str(n.target) for n in seen.graph.nodes}


def test_opcheck_lion_triton(triton_on_cpu):
    params, grads, _ = _samples()
    codes, absmaxes = zip(*(quant.zeros(p) for p in params), strict=True)
    for args in [
        (*_samples(), [], 0.01, None, 0.9, 0.99, 0.1, False, True, None, None, None),
        (*_samples(torch.bfloat16), [], 0.0, torch.tensor(0.01), 0.9, 0.99, 0.1, True, False,
         torch.tensor(4.0), torch.tensor(0.0), torch.tensor(123)),
        (params, grads, list(codes), list(absmaxes), 0.01, None, 0.9, 0.99, 0.0, False, False,
         None, None, None),
    ]:  # fmt: skip
        torch.library.opcheck(ops.lion_triton_, args)
