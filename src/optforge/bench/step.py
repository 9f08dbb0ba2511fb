"""Step-time benchmark: optforge's Lion paths against torch's AdamW and other Lions, in one run.

The optimizer step is memory-bound: Lion must move 20 bytes per fp32 parameter (read p, g, m;
write p, m) and AdamW 28. So besides milliseconds we print the effective bandwidth and compare
it with a measured copy bandwidth and with a ``torch.compile``d Lion over one flat tensor of the
same size (the practical limit). All candidates run round-robin in the same process, so machine
noise hits them alike; only ratios measured in one run are meaningful.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import torch

import optforge
from optforge.bench.tables import markdown_table
from optforge.optim import lion

LION_BYTES, ADAMW_BYTES = 20, 28  # per fp32 parameter: 5 and 7 tensor elements moved
REFERENCE = "torch AdamW fused"
FUSED_BF16_MOMENTUM = "optforge Lion fused, bf16 momentum"
LIMIT = "compiled flat Lion (limit)"
FLAT_FUSED = "optforge Lion fused, flat tensor"


@dataclass
class Row:
    name: str
    bytes_per_param: int
    times_ms: list[float] = field(default_factory=list)
    first_call_s: float | None = None  # includes state allocation, and compilation if any
    error: str | None = None

    @property
    def ms(self) -> float:
        return statistics.median(self.times_ms) if self.times_ms else float("nan")

    def spread(self) -> tuple[float, float]:
        """10th and 90th percentile of the step times."""
        if len(self.times_ms) < 2:
            return self.ms, self.ms
        q = statistics.quantiles(self.times_ms, n=10)
        return q[0], q[-1]


@dataclass
class Report:
    device: str
    params: int
    tensors: int
    threads: int
    copy_gbps: float
    rows: list[Row]
    first_step_s: float | None
    date: str
    machine: str
    torch_version: str
    dtype: str = "float32"

    @classmethod
    def from_json(cls, data: dict) -> Report:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        row_fields = Row.__dataclass_fields__
        fields["rows"] = [
            Row(**{k: v for k, v in r.items() if k in row_fields}) for r in data["rows"]
        ]
        return cls(**fields)

    def row(self, name: str) -> Row | None:
        return next((r for r in self.rows if r.name == name and r.times_ms), None)

    def to_json(self) -> dict:
        out = asdict(self)
        for r, d in zip(self.rows, out["rows"], strict=True):
            d.update(ms=r.ms, p10_ms=r.spread()[0], p90_ms=r.spread()[1], gbps=self.gbps(r))
            d["vs_adamw_fused"] = self.ratio(r, REFERENCE)
            d["vs_limit"] = self.ratio(r, LIMIT)
        return out

    def gbps(self, r: Row) -> float:
        return r.bytes_per_param * self.params / (r.ms / 1e3) / 1e9

    def ratio(self, r: Row, to: str) -> float | None:
        ref = self.row(to)
        return r.ms / ref.ms if ref and r.times_ms else None


def model_shapes(total: float) -> list[tuple[int, ...]]:
    """Transformer-like tensor shapes (MLP, attention, norms, biases) adding up to >= total."""
    d = 1024 if total >= 50e6 else 256
    block = [(d, 4 * d), (4 * d, d), (d, 3 * d), (d, d), (d,), (d,), (4 * d,)]
    shapes, n = [], 0
    while n < total:
        for shape in block:
            shapes.append(shape)
            n += torch.Size(shape).numel()
    return shapes


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _time_ms(fn: Callable[[], object], device: str, iters: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        _sync(device)
        out.append((time.perf_counter() - t) * 1e3)
    return out


def _timm_lion():
    """timm's Lion class without importing timm (whose __init__ needs torchvision)."""
    spec = importlib.util.find_spec("timm")
    if spec is None or spec.origin is None:
        return None
    pkg = types.ModuleType("_timm_optim")
    pkg.__path__ = [os.path.join(os.path.dirname(spec.origin), "optim")]
    sys.modules["_timm_optim"] = pkg
    return importlib.import_module("_timm_optim.lion").Lion


def candidates(
    params: list[torch.nn.Parameter], compiled: bool = False
) -> dict[str, tuple[Callable, int]]:
    """Name -> (factory of a step function, bytes per param). Other libraries only when
    installed; ``compiled`` adds ``torch.compile(opt.step)`` of timm's Lion and torch's AdamW
    (PyTorch's documented recipe: what a user gets by compiling a step themselves). The fused
    Lion is the C kernel on CPU and the Triton kernel on CUDA."""
    e = params[0].element_size()
    lion_b, adamw_b = 5 * e, 7 * e  # read p, g, m (and v); write p, m (and v)
    lion_kw = dict(lr=1e-4, weight_decay=0.1)
    out: dict[str, tuple[Callable, int]] = {}
    out["optforge Lion fused"] = (lambda: optforge.Lion(params, fused=True, **lion_kw), lion_b)
    if e == 4:
        out[FUSED_BF16_MOMENTUM] = (
            lambda: optforge.Lion(params, fused=True, momentum_dtype=torch.bfloat16, **lion_kw),
            3 * e + 2 * 2,
        )
    out["optforge Lion foreach"] = (
        lambda: optforge.Lion(params, foreach=True, **lion_kw),
        lion_b,
    )
    out["optforge Lion single"] = (
        lambda: optforge.Lion(params, foreach=False, fused=False, **lion_kw),
        lion_b,
    )
    out[REFERENCE] = (lambda: torch.optim.AdamW(params, lr=1e-3, fused=True), adamw_b)
    out["torch AdamW foreach"] = (
        lambda: torch.optim.AdamW(params, lr=1e-3, foreach=True),
        adamw_b,
    )
    if timm_lion := _timm_lion():
        out["timm Lion foreach"] = (lambda: timm_lion(params, foreach=True, **lion_kw), lion_b)
        out["timm Lion single"] = (lambda: timm_lion(params, foreach=False, **lion_kw), lion_b)
    if importlib.util.find_spec("lion_pytorch"):
        from lion_pytorch import Lion as LucidLion
        from lion_pytorch.foreach import Lion as LucidLionForeach

        out["lion-pytorch"] = (lambda: LucidLion(params, **lion_kw), lion_b)
        out["lion-pytorch foreach"] = (lambda: LucidLionForeach(params, **lion_kw), lion_b)
    if compiled:
        out[COMPILED_ADAMW] = (
            lambda: torch.optim.AdamW(params, lr=1e-3, foreach=True),
            adamw_b,
        )
        if timm_lion:
            out[COMPILED_TIMM] = (
                lambda: timm_lion(params, foreach=True, **lion_kw),
                lion_b,
            )
    return {name: (_stepper(make, name in _COMPILED), n) for name, (make, n) in out.items()}


COMPILED_ADAMW = "torch AdamW foreach, compiled step"
COMPILED_TIMM = "timm Lion foreach, compiled step"
_COMPILED = {COMPILED_ADAMW, COMPILED_TIMM}


def _stepper(make_optimizer: Callable, compiled: bool) -> Callable[[], Callable[[], object]]:
    def make():
        step = make_optimizer().step
        return torch.compile(step) if compiled else step

    return make


def _flat_lions(n: int, device: str, dtype=torch.float32) -> dict[str, Callable[[], None]]:
    """The limit: a torch.compile'd Lion over one flat tensor of n elements, and optforge's
    fused Lion on the very same buffers, which separates the kernel's own speed from what
    182 separately allocated tensors cost."""
    p, g, m = (torch.randn(n, device=device, dtype=dtype) for _ in range(3))

    @torch.compile
    def step(p, g, m):
        u = torch.sign(m * 0.9 + g * 0.1)
        p.copy_(p * (1 - 1e-5) - 1e-4 * u)
        m.copy_(m * 0.99 + g * 0.01)

    def fused():
        lion([p], [g], [m], lr=1e-4, beta1=0.9, beta2=0.99, weight_decay=0.1)

    return {LIMIT: lambda: step(p, g, m), FLAT_FUSED: fused}


def copy_bandwidth_gbps(n: int, device: str, iters: int) -> float:
    src = torch.empty(n, device=device)
    dst = torch.empty_like(src)
    ms = statistics.median(_time_ms(lambda: dst.copy_(src), device, iters, warmup=2))
    return 2 * 4 * n / (ms / 1e3) / 1e9


_FIRST_STEP_SCRIPT = """
import json, sys, time, torch, optforge
shapes = json.loads(sys.argv[1])
params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
for p in params:
    p.grad = torch.randn_like(p)
opt = optforge.Lion(params, lr=1e-4, weight_decay=0.1)
t = time.perf_counter(); opt.step(); first = time.perf_counter() - t
t = time.perf_counter(); opt.step(); second = time.perf_counter() - t
print(first - second)
"""


def first_step_overhead_s(shapes: list[tuple[int, ...]]) -> float:
    """Extra time of the first default-Lion step in a fresh process (kernel cache warm)."""
    proc = subprocess.run(
        [sys.executable, "-c", _FIRST_STEP_SCRIPT, json.dumps(shapes)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(proc.stdout.strip().splitlines()[-1])


def run(
    params: float = 20e6,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    iters: int = 10,
    rounds: int = 5,
    compiled_limit: bool = True,
    compiled_steps: bool = False,
    first_step: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Measure every candidate ``rounds`` times, round-robin, ``iters`` steps each time."""
    progress = progress or (lambda _: None)
    torch.manual_seed(0)
    shapes = model_shapes(params)
    tensors = [torch.nn.Parameter(torch.randn(s, device=device, dtype=dtype)) for s in shapes]
    for p in tensors:
        p.grad = torch.randn_like(p)
    n = sum(p.numel() for p in tensors)
    progress("copy bandwidth")
    copy_gbps = copy_bandwidth_gbps(n, device, iters)

    rows, steps = [], []
    for name, (make, nbytes) in candidates(tensors, compiled_steps).items():
        rows.append(Row(name, nbytes))
        try:
            step = make()
        except Exception as e:  # a broken third-party optimizer must not stop the benchmark
            rows[-1].error, step = f"{type(e).__name__}: {e}", None
        steps.append(step)
    if compiled_limit:
        for name, step in _flat_lions(n, device, dtype).items():
            rows.append(Row(name, 5 * tensors[0].element_size()))
            steps.append(step)

    for r in range(rounds):
        for row, step in zip(rows, steps, strict=True):
            if step is None:
                continue
            progress(f"round {r + 1}/{rounds}: {row.name}")
            try:
                if r == 0:
                    row.first_call_s = _time_ms(step, device, 1, warmup=0)[0] / 1e3
                row.times_ms += _time_ms(step, device, iters, warmup=2 if r == 0 else 1)
            except Exception as e:
                row.error = f"{type(e).__name__}: {e}"
    overhead = None
    if first_step and device == "cpu":
        progress("first step in a fresh process")
        overhead = first_step_overhead_s(shapes)
    return Report(
        device=device,
        params=n,
        tensors=len(tensors),
        threads=torch.get_num_threads(),
        copy_gbps=copy_gbps,
        rows=rows,
        first_step_s=overhead,
        date=datetime.now(UTC).strftime("%Y-%m-%d"),
        machine=f"{platform.machine()} {_cpu_name()}, {os.cpu_count()} cores",
        torch_version=torch.__version__,
        dtype=str(dtype).removeprefix("torch."),
    )


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            line = next((ln for ln in f if ln.startswith("model name")), "")
        return line.split(":", 1)[1].strip()
    except (OSError, IndexError):
        return platform.processor()


def write_json(report: Report, path: str) -> None:
    with open(path, "w") as f:
        json.dump(report.to_json(), f, indent=2)


COLUMNS = [
    "implementation",
    "ms/step",
    "p10-p90 ms",
    "GB/s",
    "% copy BW",
    "vs AdamW fused",
    "vs limit",
    "1st call s",
]


def table_rows(report: Report) -> list[list[str]]:
    """The table as strings, one list per implementation, in COLUMNS order."""
    out = []
    for r in report.rows:
        if not r.times_ms:
            out.append([r.name, "failed", r.error or "", "", "", "", "", ""])
            continue
        lo, hi = r.spread()
        gbps = report.gbps(r)
        ratios = [report.ratio(r, REFERENCE), report.ratio(r, LIMIT)]
        out.append(
            [
                r.name,
                f"{r.ms:.2f}",
                f"{lo:.2f}-{hi:.2f}",
                f"{gbps:.1f}",
                f"{100 * gbps / report.copy_gbps:.0f}",
                *(f"{x:.2f}x" if x is not None else "-" for x in ratios),
                f"{r.first_call_s:.3f}" if r.first_call_s is not None else "-",
            ]
        )
    return out


def header(report: Report) -> str:
    first = (
        f"; first-step overhead of the default Lion in a fresh process: {report.first_step_s:.3f} s"
        if report.first_step_s is not None
        else ""
    )
    return (
        f"{report.date}, {report.machine}, torch {report.torch_version}, "
        f"{report.threads} threads, device {report.device}: {report.params / 1e6:.1f}M "
        f"{report.dtype} params "
        f"in {report.tensors} tensors; copy bandwidth {report.copy_gbps:.1f} GB/s{first}"
    )


def markdown(report: Report) -> str:
    return header(report) + "\n\n" + markdown_table(COLUMNS, table_rows(report))


def summarize(runs: list[dict]) -> list[list[str]]:
    """Across several ``--json`` results: per implementation, the median step time and the
    range (min-max over runs) of its ratios to fused AdamW and to the compiled limit."""
    names = list(dict.fromkeys(r["name"] for run in runs for r in run["rows"]))
    out = []
    for name in names:
        rows = [r for run in runs for r in run["rows"] if r["name"] == name and r["times_ms"]]
        if not rows:
            continue
        cells = [name, str(len(rows)), f"{statistics.median(r['ms'] for r in rows):.2f}"]
        for key in ("vs_adamw_fused", "vs_limit"):
            values = [r[key] for r in rows if r.get(key) is not None]
            cells.append(f"{min(values):.2f}-{max(values):.2f}x" if values else "-")
        out.append(cells)
    return out


SUMMARY_COLUMNS = ["implementation", "runs", "median ms/step", "vs AdamW fused", "vs limit"]
