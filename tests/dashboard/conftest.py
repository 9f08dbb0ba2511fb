"""Journals for the dashboard's tests: a real search's, and files that are not journals."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from optforge.cli import main

# A search that writes a candidate every few milliseconds on the tiny digits task.
TINY = ["--task", "digits-mlp-test", "--batch", "8", "--population", "8", "--tournament", "2",
        "--no-funnel"]  # fmt: skip


@pytest.fixture(scope="session")
def searched(tmp_path_factory) -> Path:
    """A finished 24-candidate search (made once; tests must not write to it)."""
    path = tmp_path_factory.mktemp("dashboard") / "run.db"
    assert main(["search", *TINY, "--budget", "24", "--journal", str(path)]) == 0
    return path


@pytest.fixture
def broken(tmp_path) -> dict[str, Path]:
    """Not journals: text, an SQLite file of something else, a truncated journal, a path
    that does not exist."""
    text = tmp_path / "text.db"
    text.write_text("these are not the tables you are looking for\n")
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    db.close()
    return {"text": text, "other": other, "missing": tmp_path / "missing.db"}


def start_search(journal: Path, budget: int = 100_000) -> subprocess.Popen:
    """``optforge search`` in the background, one thread (other jobs share the machine)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "optforge.cli", "search", *TINY, "--budget", str(budget),
         "--journal", str(journal)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
