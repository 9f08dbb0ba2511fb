"""A real two-node Ray cluster on this machine: a head and a second node started with
``ray start`` on the loopback address (two raylets, as on two machines). A search on it gives
the same journal as in-process, and killing the second node's raylet mid-search loses no
finished evaluation: the search finishes on the remaining node with the same results."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
BIN = Path(sys.executable).parent
SEARCH = ["--task", "digits-mlp-test", "--seed", "0", "--batch", "8", "--population", "16",
          "--tournament", "4", "--workers", "2", "--no-funnel", "--time-limit", "60"]  # fmt: skip
# Ray notices a dead node after health_check_period x failure_threshold: 1.5 s, not ~30 s.
RAY_ENV = {"RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "3",
           "RAY_health_check_initial_delay_ms": "500", "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0"}  # fmt: skip


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(*args, env):
    return subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True,
                          timeout=180)  # fmt: skip


@pytest.fixture
def cluster():
    env = {**os.environ, **RAY_ENV}
    head, node_manager = _port(), _port()
    started = _ray("start", "--head", f"--port={head}", "--node-ip-address=127.0.0.1",
                   "--num-cpus=1", "--include-dashboard=false", env=env)  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        joined = _ray("start", f"--address=127.0.0.1:{head}", "--node-ip-address=127.0.0.1",
                      "--num-cpus=1", f"--node-manager-port={node_manager}", env=env)  # fmt: skip
        assert joined.returncode == 0, joined.stderr
        yield f"127.0.0.1:{head}", node_manager, env
    finally:
        _ray("stop", "--force", env=env)


def _search(journal: Path, budget: int, env, *extra) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "optforge"), "search", *SEARCH, "--budget", str(budget), "--journal",
         str(journal), *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _results(journal: Path) -> list[tuple]:
    with sqlite3.connect(journal) as db:
        return db.execute(
            "SELECT id, source, status, fitness, multiplier FROM candidates "
            "WHERE kind IN ('warm_start', 'child') ORDER BY id"
        ).fetchall()


def _finished(journal: Path) -> int:
    try:
        with sqlite3.connect(journal, timeout=1) as db:
            return db.execute(
                "SELECT COUNT(*) FROM candidates WHERE status IN ('evaluated', 'failed')"
            ).fetchone()[0]
    except sqlite3.Error:
        return 0


def _raylet_of(node_manager_port: int) -> int:
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            cmdline[0].endswith(b"raylet")
            and f"--node_manager_port={node_manager_port}".encode() in cmdline
        ):
            return pid
    raise AssertionError(f"no raylet with node manager port {node_manager_port}")


def test_search_on_two_nodes_equals_in_process_and_survives_losing_one(cluster, tmp_path):
    address, node_manager, env = cluster
    reference = tmp_path / "inprocess.db"
    local = _search(reference, 64, env, "--executor", "inprocess")
    out, _ = local.communicate(timeout=600)
    assert local.returncode == 0, out
    assert len(_results(reference)) == 64 + 1  # the warm start and 64 children

    on_cluster = tmp_path / "cluster.db"
    run = _search(on_cluster, 32, env, "--executor", "ray", "--address", address)
    out, _ = run.communicate(timeout=600)
    assert run.returncode == 0, out
    assert len(_results(on_cluster)) == 32 + 1
    assert _results(on_cluster) == _results(reference)[: len(_results(on_cluster))]

    # Resume to 64 candidates, and kill the second node's raylet once more have finished.
    run = _search(on_cluster, 64, env, "--executor", "ray", "--address", address,
                  "--resume", str(on_cluster))  # fmt: skip
    before = _finished(on_cluster)
    deadline = time.monotonic() + 300
    while _finished(on_cluster) < before + 8 and run.poll() is None:
        assert time.monotonic() < deadline, "the search made no progress"
        time.sleep(0.2)
    assert run.poll() is None, "the search ended before the node could be killed"
    killed_at = _finished(on_cluster)
    os.kill(_raylet_of(node_manager), signal.SIGKILL)
    out, _ = run.communicate(timeout=600)
    assert run.returncode == 0, out
    assert killed_at < len(_results(reference))  # the node died with work left to do
    assert _results(on_cluster) == _results(reference)
