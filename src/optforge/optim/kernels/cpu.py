"""The fused CPU Lion kernel: compiled from C at first use, cached, called through ctypes.

Why C + ctypes and not a torch C++ extension or torch.compile: the kernel needs no torch headers,
so it compiles quickly, once, loads in milliseconds, and is never recompiled when the
learning rate changes (a compiled step specialises on Python floats; measured in docs/lion.md).
It is linked against OpenMP by soname, so inside a torch process it shares torch's own libgomp
thread pool.

The shared object is cached under ``$OPTFORGE_CACHE_DIR`` (default
``$XDG_CACHE_HOME/optforge/kernels`` or ``~/.cache/optforge/kernels``), keyed by a hash of the
source, the compiler, its flags and this CPU's feature flags, so a cache shared between machines
never hands one CPU code built for another. ``$OPTFORGE_CC`` picks the compiler (default ``cc``).
"""

from __future__ import annotations

import array
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

import torch

_FLAGS = ["-O3", "-fopenmp", "-ffp-contract=off", "-shared", "-fPIC"]
_NATIVE = ["-march=native"]

# (param dtype, momentum dtype) -> C function name.
_STORAGE = {
    torch.float32: "f32",
    torch.bfloat16: "bf16",
    torch.float16: "f16",
    torch.float64: "f64",
}
_F32, _BF16, _F16, _F64 = torch.float32, torch.bfloat16, torch.float16, torch.float64
SUPPORTED = {
    (_F32, _F32), (_F32, _BF16), (_F32, _F16),
    (_BF16, _BF16), (_BF16, _F32),
    (_F16, _F16), (_F16, _F32),
    (_F64, _F64),
}  # fmt: skip


class KernelBuildError(RuntimeError):
    """The C compiler is missing or failed; the message carries its output."""


def cache_dir() -> Path:
    if env := os.environ.get("OPTFORGE_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "optforge" / "kernels"


def _cpu_identity() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return platform.processor()


def _compiler() -> str:
    cc = os.environ.get("OPTFORGE_CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise KernelBuildError(
            "no C compiler found for optforge's fused CPU Lion: install gcc "
            "(e.g. `apt-get install -y gcc`) or set OPTFORGE_CC; or pass foreach=True"
        )
    return cc


def _compile(cc: str, src: Path, out: Path) -> None:
    """Build src into out atomically, trying -march=native first, then portable flags."""
    out.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for extra in (_NATIVE, []):
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
        cmd = [cc, *_FLAGS, *extra, str(src), "-o", tmp, "-lm"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        except OSError as e:  # the compiler itself cannot be run
            os.unlink(tmp)
            raise KernelBuildError(
                f"building optforge's fused CPU Lion failed: cannot run {cc!r} ({e}); install "
                "gcc (e.g. `apt-get install -y gcc`) or set OPTFORGE_CC; or pass foreach=True"
            ) from e
        if proc.returncode == 0:
            os.replace(tmp, out)  # atomic: concurrent builders never see a half-written file
            return
        os.unlink(tmp)
        errors.append(f"$ {' '.join(cmd)}\n{proc.stderr.strip()}")
    raise KernelBuildError("building optforge's fused CPU Lion failed:\n" + "\n".join(errors))


@functools.cache
def library() -> ctypes.CDLL:
    """The compiled kernel library, built on first call and cached on disk across processes."""
    src = resources.files(__package__) / "lion_cpu.c"
    cc = _compiler()
    text = src.read_bytes()
    key = hashlib.sha256(
        b"\0".join(
            [text, cc.encode(), " ".join(_FLAGS + _NATIVE).encode(), _cpu_identity().encode()]
        )
    ).hexdigest()[:16]
    name = f"lion_cpu-{key}.so"
    # An unwritable cache (read-only home, sandbox) falls back to a per-user temp folder.
    fallback = Path(tempfile.gettempdir()) / f"optforge-kernels-{os.getuid()}"
    for folder in (cache_dir(), fallback):
        path = folder / name
        if path.exists():
            break
        try:
            with resources.as_file(src) as src_path:
                _compile(cc, Path(src_path), path)
            break
        except PermissionError as e:
            error = e
    else:
        raise KernelBuildError(f"no writable folder for optforge's kernel cache: {error}")
    lib = ctypes.CDLL(str(path))
    args = [ctypes.c_int64, ctypes.c_void_p, *[ctypes.c_double] * 4, *[ctypes.c_int] * 3]
    for p_dtype, m_dtype in SUPPORTED:
        fn = getattr(lib, f"lion_{_STORAGE[p_dtype]}_{_STORAGE[m_dtype]}")
        fn.argtypes = args
        fn.restype = ctypes.c_int
    return lib


def available() -> bool:
    """True when the kernel can be built and loaded here (never raises)."""
    try:
        library()
    except (KernelBuildError, OSError):
        return False
    return True


def lion_step(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    decay: float,
    maximize: bool,
    cautious: bool,
) -> None:
    """One fused Lion step over tensors of one (param dtype, momentum dtype) pair.

    All tensors must be dense CPU tensors, and each triple must share one memory layout: the
    kernel walks raw storage. ``decay`` is ``1 - lr * weight_decay``.
    """
    fn = getattr(library(), f"lion_{_STORAGE[params[0].dtype]}_{_STORAGE[exp_avgs[0].dtype]}")
    table = array.array(
        "q",
        [
            *map(torch.Tensor.data_ptr, params),
            *map(torch.Tensor.data_ptr, grads),
            *map(torch.Tensor.data_ptr, exp_avgs),
            *map(torch.Tensor.numel, params),
        ],
    )
    rc = fn(
        len(params),
        table.buffer_info()[0],
        lr,
        1.0 - beta1,
        1.0 - beta2,
        decay,
        int(maximize),
        int(cautious),
        torch.get_num_threads(),
    )
    if rc != 0:
        raise MemoryError("optforge fused CPU Lion could not allocate its chunk table")
