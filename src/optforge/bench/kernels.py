"""`optforge bench kernels`: the Triton Lion kernels compiled for real GPUs, with no GPU.

Triton compiles for any NVIDIA target with its bundled ``ptxas``, so every kernel variant the
optimizer can launch is compiled here for each target (sm_80, sm_90) and read back: does it
compile, how many registers per thread, does it spill (local memory; where: a spill inside a
loop costs every block, one before and after the loop costs nothing), and how wide are its
global loads and stores. The widths come from the PTX, each access classified by where its
address comes from (a def-use walk over the PTX): through the address table (the tensors'
data: p, g, m), through the block-maxima table (8-bit momentum), or straight from a kernel
argument (the lr, grad scale, found_inf, the tables themselves). A memory-bound kernel should
move the tensors' data with 128-bit accesses; the aligned variants must, and the test that
runs this report in ``make test`` fails when one does not.

Compiling needs a real ``@triton.jit`` kernel, which Triton's interpreter (tests set
``TRITON_INTERPRET=1``) replaces, so the compiles run in fresh worker processes with the
interpreter off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from optforge.optim.kernels import triton as triton_kernel
from optforge.optim.kernels.triton import Options

TARGETS = {"sm_80": 80, "sm_90": 90}
_F32, _BF16, _F16, _I8 = torch.float32, torch.bfloat16, torch.float16, torch.int8
_SHORT = {_F32: "fp32", _BF16: "bf16", _F16: "fp16", _I8: "int8"}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One compiled kernel: which kernel, the (param, momentum) dtypes, the options that
    change its code, and whether it is the aligned (128-bit) variant."""

    kernel: str  # "step" or "count_agreement" (cautious Lion's first pass)
    p_dtype: torch.dtype
    m_dtype: torch.dtype
    options: Options
    aligned: bool

    @property
    def name(self) -> str:
        o = self.options
        flags = [name for name, on in (("cautious", o.cautious), ("amp", o.amp),
                 ("lr-tensor", o.lr_tensor), ("stochastic", o.stochastic),
                 ("maximize", o.maximize)) if on]  # fmt: skip
        kernel = "" if self.kernel == "step" else " (count)"
        return (f"{_SHORT[self.p_dtype]}/{_SHORT[self.m_dtype]} "
                f"{'aligned' if self.aligned else 'unaligned'} "
                f"{'+'.join(flags) or 'plain'}{kernel}")  # fmt: skip

    def compile_inputs(self) -> tuple[dict, dict]:
        """The Triton signature and compile-time constants, as the launch builds them."""
        step = self.kernel == "step"
        arguments = triton_kernel.STEP_ARGUMENTS if step else triton_kernel.COUNT_ARGUMENTS
        vec = triton_kernel.vector_width(self.p_dtype, self.m_dtype)
        build = self.options.step_constants if step else self.options.count_constants
        constants = build(self.aligned, vec)
        signature = triton_kernel.signature(arguments, self.p_dtype, self.m_dtype)
        signature.update(dict.fromkeys(constants, "constexpr"))
        return signature, constants


def variants(quick: bool = False) -> list[Variant]:
    """Every kernel the optimizer can launch, as far as its code differs: each supported
    dtype pair (8-bit momentum included), aligned and not, plain and with each option that
    changes the code (cautious adds its counting kernel), and all options at once.
    ``quick`` (for tests): per dtype pair the aligned plain kernel and the all-options
    kernels, aligned and not: every code path, a third of the compiles."""
    pairs = sorted(triton_kernel.SUPPORTED | triton_kernel.SUPPORTED_QUANTIZED, key=str)
    out = []
    for p_dtype, m_dtype in pairs:
        quantized, bf16 = m_dtype == _I8, p_dtype == _BF16
        base = dict(quantized=quantized)
        everything = Options(**base, maximize=True, cautious=True, lr_tensor=True, amp=True,
                             skip=True, stochastic=bf16, beta1=0.3, beta2=0.6)  # fmt: skip
        option_sets = [Options(**base), everything]
        if not quick:
            option_sets[1:1] = [
                Options(**base, cautious=True),
                Options(**base, amp=True, skip=True),
                Options(**base, lr_tensor=True),
                *([Options(**base, stochastic=True)] if bf16 else []),
            ]
        for aligned in (True, False):
            for options in option_sets if aligned or not quick else [everything]:
                out.append(Variant("step", p_dtype, m_dtype, options, aligned))
                if options.cautious:
                    out.append(Variant("count_agreement", p_dtype, m_dtype, options, aligned))
    return out


@dataclasses.dataclass
class Row:
    variant: str
    target: str
    aligned: bool
    compiled: bool
    error: str = ""
    registers: int | None = None
    spill_bytes: int | None = None  # stack frame per thread (what ptxas spilled)
    loop_spills: int | None = None  # local-memory instructions inside a loop (from the SASS)
    accesses: dict[str, int] = dataclasses.field(default_factory=dict)  # "data ld 128" -> n

    def widths(self, kind: str, op: str) -> dict[int, int]:
        """Instructions by bit width for one kind of access (data, absmax, argument)."""
        out: Counter[int] = Counter()
        for key, n in self.accesses.items():
            k, o, bits = key.split()
            if k == kind and o == op:
                out[int(bits)] += n
        return dict(sorted(out.items()))

    def narrow_data_accesses(self) -> int:
        """Loads and stores of the tensors' data narrower than 128 bits."""
        return sum(n for op in ("ld", "st") for bits, n in self.widths("data", op).items()
                   if bits < 128)  # fmt: skip


def report(targets: Iterable[str], chosen: list[Variant], jobs: int = 1,
           progress: Callable[[Row], None] | None = None) -> list[Row]:  # fmt: skip
    """Compile each variant for each target in ``jobs`` fresh processes, in order."""
    tasks = [(v, t) for t in targets for v in chosen]
    for _, target in tasks:
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r} (choose from {', '.join(TARGETS)})")
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    rows = []
    with _interpreter_off(), ProcessPoolExecutor(jobs, mp_context=context) as pool:
        for row in pool.map(_compile_one, tasks):
            rows.append(row)
            if progress:
                progress(row)
    return rows


@contextlib.contextmanager
def _interpreter_off():
    """Workers inherit the environment when they start: with the interpreter switched on,
    Triton's own library would be imported interpreted there and could not compile."""
    saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "0"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = saved


def _compile_one(task: tuple[Variant, str]) -> Row:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from optforge.optim.kernels import _triton_lion

    variant, target = task
    signature, constants = variant.compile_inputs()
    row = Row(variant.name, target, variant.aligned, compiled=False)
    kernel = getattr(_triton_lion, variant.kernel)
    try:
        source = ASTSource(kernel, signature, constants)
        gpu = GPUTarget("cuda", TARGETS[target], 32)
        compiled = triton.compile(source, target=gpu, options=triton_kernel.COMPILE_OPTIONS)
    except Exception as e:  # noqa: BLE001 (any compiler failure is this row's result)
        first_line = next(iter(str(e).strip().splitlines()), "")
        row.error = f"{type(e).__name__}: {first_line[:200]}".rstrip(": ")
        return row
    row.compiled = True
    row.registers, row.spill_bytes = resource_usage(compiled.asm["cubin"])
    row.loop_spills = spills_in_loops(compiled.asm["cubin"])
    arguments = [name for name, kind in signature.items() if kind != "constexpr"]
    counts = classify_accesses(compiled.asm["ptx"], arguments)
    row.accesses = {" ".join(map(str, key)): n for key, n in sorted(counts.items())}
    return row


def _cuobjdump(cubin: bytes, flag: str) -> str | None:
    """The bundled ``cuobjdump``'s output for ``cubin``, or None where it is missing."""
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not tool.exists():
        return None
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([str(tool), flag, f.name], capture_output=True, text=True).stdout


def resource_usage(cubin: bytes) -> tuple[int | None, int | None]:
    """(registers per thread, stack and local-memory bytes per thread: what ptxas spilled)."""
    out = _cuobjdump(cubin, "-res-usage")
    match = out and re.search(r"REG:(\d+) STACK:(\d+) .*?LOCAL:(\d+)", out)
    if not match:
        return None, None
    registers, stack, local = map(int, match.groups())
    return registers, stack + local


_SASS = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][\w.]*)\s*([^;]*);")


def spills_in_loops(cubin: bytes) -> int | None:
    """Local-memory loads and stores (``LDL``/``STL``: spills) inside a loop of the machine
    code: between a backward branch's target and the branch. ptxas may park a value that the
    loop does not use across it (one store before, one load after); that costs a program
    nothing, a spill in the loop costs every block."""
    out = _cuobjdump(cubin, "-sass")
    return None if out is None else count_loop_spills(out)


def count_loop_spills(sass: str) -> int:
    instructions = [(int(a, 16), op, args) for a, op, args in _SASS.findall(sass)]
    loops = [(int(m.group(1), 16), address) for address, op, args in instructions
             if op.startswith("BRA") and (m := re.match(r"\s*0x([0-9a-f]+)", args))
             and int(m.group(1), 16) <= address]  # fmt: skip
    return sum(1 for address, op, _ in instructions if op.startswith(("LDL", "STL"))
               and any(lo <= address <= hi for lo, hi in loops))  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Reading the PTX: where does each global access's address come from?

_REGISTER = re.compile(r"%[a-z]+[0-9]+")
_PARAM = re.compile(r"_param_(\d+)")
_WIDTH = re.compile(r"\.(?:v(\d+)\.)?[bsuf](\d+)$")


def classify_accesses(ptx: str, arguments: list[str]) -> Counter:
    """Count global loads, stores and atomics as (kind, op, bits) where kind is ``data`` (an
    address computed from a pointer read out of the ``table`` argument: the tensors' p, g, m),
    ``absmax`` (from the ``absmaxes`` table) or ``argument`` (everything else: scalars behind
    pointer arguments and the tables themselves), and bits is the access width (a 128-bit
    ``ld.global.v4.b32`` is one access of 128)."""
    defs, accesses = _parse(ptx, arguments)
    roots = _roots(defs)
    counts: Counter = Counter()
    for op, opcode, address in accesses:
        tags = roots.get(address, frozenset())
        kind = ("data" if ("via", "table") in tags
                else "absmax" if ("via", "absmaxes") in tags else "argument")  # fmt: skip
        counts[(kind, op, _bits(opcode))] += 1
    return counts


def _bits(opcode: str) -> int:
    match = _WIDTH.search(opcode)
    if not match:
        raise ValueError(f"cannot read the width of PTX instruction {opcode!r}")
    lanes, size = match.groups()
    return int(lanes or 1) * int(size)


def _parse(ptx: str, arguments: list[str]):
    """Definitions (destination, source registers, how) and global accesses (op, opcode,
    address register) of a PTX listing."""
    defs = []  # (dst, srcs, how): how is ("param", name), "load" or "compute"
    accesses = []
    for raw in ptx.splitlines():
        line = re.sub(r"//.*", "", raw).strip().rstrip(";")
        line = re.sub(r"^@!?%\w+\s+", "", line)
        if not line or line.startswith((".", "{", "}", "$")) or " " not in line:
            continue
        opcode, operands = line.split(None, 1)
        if opcode.startswith("ld.param"):
            dst = _REGISTER.findall(operands)[0]
            index = int(_PARAM.search(operands).group(1))
            defs.append((dst, [], ("param", arguments[index])))
            continue
        if opcode.startswith(("ld.global", "st.global", "atom.global", "red.global")):
            address = _REGISTER.findall(operands[operands.index("[") :])[0]
            op = opcode.split(".")[0]
            accesses.append(({"atom": "atom", "red": "atom"}.get(op, op), opcode, address))
            if op in ("ld", "atom"):
                for dst in _REGISTER.findall(operands[: operands.index("[")]):
                    defs.append((dst, [address], "load"))
            continue
        registers = _REGISTER.findall(operands)
        if registers:
            defs.append((registers[0], registers[1:], "compute"))
    return defs, accesses


def _roots(defs) -> dict[str, frozenset]:
    """Per register: the pointer arguments it is computed from (("param", name)) and the
    arguments whose memory it was loaded through (("via", name)). Iterated to a fixed point,
    because a loop's back-edge copies define registers after their first use."""
    roots: dict[str, frozenset] = {}
    changed = True
    while changed:
        changed = False
        for dst, srcs, how in defs:
            if isinstance(how, tuple):
                new = frozenset([how])
            elif how == "load":
                new = frozenset(("via", name) for kind, name in roots.get(srcs[0], ())
                                if kind == "param")  # fmt: skip
            else:
                new = frozenset().union(*(roots.get(s, frozenset()) for s in srcs))
            merged = roots.get(dst, frozenset()) | new
            if merged != roots.get(dst):
                roots[dst] = merged
                changed = True
    return roots


# ---------------------------------------------------------------------------------------------
# The table


COLUMNS = ["variant", "target", "compiles", "registers", "spills (B; in loops)", "data loads",
           "data stores", "block maxima", "other loads"]  # fmt: skip


def _widths_text(widths: dict[int, int]) -> str:
    return ", ".join(f"{n}×{bits}b" for bits, n in widths.items()) or "-"


def table_rows(rows: list[Row]) -> list[list[str]]:
    out = []
    for r in rows:
        if not r.compiled:
            out.append([r.variant, r.target, f"no: {r.error}", *["-"] * 6])
            continue
        maxima = {**{f"ld {k}": v for k, v in r.widths("absmax", "ld").items()},
                  **{f"st {k}": v for k, v in r.widths("absmax", "st").items()}}  # fmt: skip
        out.append([
            r.variant, r.target, "yes",
            "-" if r.registers is None else str(r.registers),
            "-" if r.spill_bytes is None else f"{r.spill_bytes}; {r.loop_spills}",
            _widths_text(r.widths("data", "ld")), _widths_text(r.widths("data", "st")),
            ", ".join(f"{n}×{k}b" for k, n in maxima.items()) or "-",
            _widths_text(r.widths("argument", "ld")),
        ])  # fmt: skip
    return out


SUMMARY_COLUMNS = ["target", "compile", "registers", "with a stack frame", "spills in loops",
                   "aligned: data loads / stores", "unaligned: data loads / stores"]  # fmt: skip


def summary_rows(rows: list[Row]) -> list[list[str]]:
    """Per target: how many variants compile, the register range, how many park a value on
    the stack, spill instructions inside loops, and the data accesses of the aligned and the
    unaligned variants, by width."""
    out = []
    for target in dict.fromkeys(r.target for r in rows):
        mine = [r for r in rows if r.target == target]
        built = [r for r in mine if r.compiled]
        registers = [r.registers for r in built if r.registers is not None]
        accesses = []
        for aligned in (True, False):
            ops = [sum((Counter(r.widths("data", op)) for r in built if r.aligned == aligned),
                       Counter()) for op in ("ld", "st")]  # fmt: skip
            accesses.append(" / ".join(_widths_text(dict(sorted(c.items()))) for c in ops))
        out.append([
            target, f"{len(built)} of {len(mine)}",
            f"{min(registers)}-{max(registers)}" if registers else "-",
            str(sum(1 for r in built if r.spill_bytes)),
            str(sum(r.loop_spills or 0 for r in built)), *accesses,
        ])  # fmt: skip
    return out


def problems(rows: list[Row]) -> list[str]:
    """What must not happen: a variant that does not compile, spills inside a loop, or
    (aligned) moves the tensors' data with accesses narrower than 128 bits."""
    out = []
    for r in rows:
        where = f"{r.variant} on {r.target}"
        if not r.compiled:
            out.append(f"{where}: does not compile ({r.error})")
        elif r.loop_spills:
            out.append(f"{where}: {r.loop_spills} spill loads/stores inside a loop")
        elif r.aligned and r.narrow_data_accesses():
            out.append(f"{where}: {r.narrow_data_accesses()} data accesses under 128 bits")
    return out
