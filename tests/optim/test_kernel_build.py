"""The fused CPU kernel is built once, cached on disk, and a missing compiler is explained."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = """
import torch, optforge
from optforge.optim.kernels import cpu
w = torch.nn.Parameter(torch.ones(3)); w.grad = torch.ones(3)
opt = optforge.Lion([w], lr=0.5{kw}); opt.step()
print(w.tolist())
"""


def _run(env, kw=""):
    return subprocess.run(
        [sys.executable, "-c", SCRIPT.format(kw=kw)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )


def test_kernel_is_built_once_and_reused(tmp_path):
    env = {"OPTFORGE_CACHE_DIR": str(tmp_path)}
    first = _run(env, ", fused=True")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "[0.5, 0.5, 0.5]"
    (lib,) = list(tmp_path.glob("lion_cpu-*.so"))
    built = lib.stat().st_mtime_ns
    second = _run(env, ", fused=True")
    assert second.returncode == 0, second.stderr
    assert lib.stat().st_mtime_ns == built, "a warm cache must not rebuild the kernel"


def test_missing_compiler_is_a_clear_error_for_fused_true(tmp_path):
    env = {"OPTFORGE_CACHE_DIR": str(tmp_path), "OPTFORGE_CC": "/nonexistent/cc"}
    proc = _run(env, ", fused=True")
    assert proc.returncode != 0
    assert "KernelBuildError" in proc.stderr
    assert "building optforge's fused CPU Lion failed" in proc.stderr


@pytest.mark.parametrize("kw", ["", ", fused=None"])
def test_default_falls_back_without_a_compiler(tmp_path, kw):
    env = {"OPTFORGE_CACHE_DIR": str(tmp_path), "OPTFORGE_CC": "/nonexistent/cc"}
    proc = _run(env, kw)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[0.5, 0.5, 0.5]"
