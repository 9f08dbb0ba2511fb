"""The dashboard's server and data, over HTTP, without a browser: what it serves, what it
refuses, and that it only ever reads the journals."""

from __future__ import annotations

import hashlib
import http.client
import json
import sys
import time

import pytest

from optforge.dashboard.server import Dashboard
from optforge.search import report
from optforge.search.journal import Journal

from .conftest import start_search, stop


@pytest.fixture
def serve():
    """``serve(paths) -> dashboard`` started on a free port; stopped after the test."""
    started, logged = [], []

    def start(paths):
        dashboard = Dashboard([str(p) for p in paths], port=0, log=logged.append)
        dashboard.start()
        started.append(dashboard)
        dashboard.logged = logged
        return dashboard

    yield start
    for dashboard in started:
        dashboard.stop()


def get(dashboard, path: str, host: str | None = None) -> tuple[int, object]:
    connection = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=30)
    connection.putrequest("GET", path, skip_host=host is not None)
    if host is not None:
        connection.putheader("Host", host)
    connection.endheaders()
    response = connection.getresponse()
    body = response.read()
    connection.close()
    kind = response.getheader("Content-Type", "")
    return response.status, json.loads(body) if "json" in kind else body


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_journal_as_show_reports_it(serve, searched):
    dashboard = serve([searched])
    status, body = get(dashboard, "/api/journal/0")
    assert status == 200 and body["ok"], body
    journal = Journal(searched)
    try:
        stats = report.statistics_of(journal)
        board = report.leaderboard(journal, 5)
    finally:
        journal.close()
    assert body["status"]["generated"] == stats.generated == 24
    assert body["status"]["trained"] == stats.trained
    assert body["status"]["task"] == "digits-mlp-test"
    assert [r["id"] for r in body["leaderboard"][:5]] == [c for c, _, _ in board]
    assert body["phase"]["state"] == "finished"  # its budget is spent, no funnel asked for
    plot = body["plot"]
    assert len(plot["points"]["x"]) + len(plot["failed"]["x"]) <= 24
    assert set(plot["baselines"]) >= {"adamw", "lion"}  # tuned baselines on the search task

    # unchanged since the page's copy: only the phase comes back
    status, again = get(dashboard, f"/api/journal/0?v={body['version']}")
    assert status == 200 and "status" not in again and again["phase"]["state"] == "finished"


def test_a_program_with_its_lineage_diff_and_simplified_form(serve, searched):
    dashboard = serve([searched])
    _, body = get(dashboard, "/api/journal/0")
    best = body["leaderboard"][0]["id"]
    status, c = get(dashboard, f"/api/journal/0/candidate/{best}")
    assert status == 200
    assert c["source"].startswith("def train(") and c["simplified"].startswith("def train(")
    steps = c["lineage"]
    assert steps[0]["mutation"] is None and steps[-1]["id"] == best  # warm start -> it
    assert all(s["mutation"] for s in steps[1:])
    if c["parent"] is not None:
        assert c["diff"].startswith(f"--- candidate {c['parent']}")
    assert get(dashboard, "/api/journal/0/candidate/999999")[0] == 404
    assert get(dashboard, "/api/journal/0")[1]["ok"]  # a missing candidate breaks nothing


@pytest.mark.parametrize(
    "path",
    ["/api/journal/1", "/api/journal/99/candidate/1", "/api/journal/-1", "/api/journal/0/../1",
     "/../../../etc/passwd", "/static/../../../../etc/passwd", "/static/app.py",
     "/api/journal?path=/etc/passwd", "/api/file/etc/passwd", "/etc/passwd",
     "/static/%2e%2e/%2e%2e/server.py"],
)  # fmt: skip
def test_paths_outside_the_named_journals_are_refused(serve, searched, path):
    dashboard = serve([searched])
    status, body = get(dashboard, path)
    assert status == 404
    assert b"root:" not in (body if isinstance(body, bytes) else json.dumps(body).encode())


def test_another_host_name_is_refused_on_loopback(serve, searched):
    """A page elsewhere that rebinds its DNS name to 127.0.0.1 cannot read the journals."""
    dashboard = serve([searched])
    assert get(dashboard, "/api/journal/0", host="attacker.example:80")[0] == 403
    assert get(dashboard, "/api/journal/0", host=f"localhost:{dashboard.port}")[0] == 200


def test_the_page_and_its_scripts_come_from_the_package(serve, searched):
    dashboard = serve([searched])
    status, page = get(dashboard, "/")
    assert status == 200 and b"optforge dashboard" in page
    assert b"http" not in page.split(b"<body>")[0]  # no script or style from elsewhere
    status, plotly = get(dashboard, "/static/plotly.min.js")
    assert status == 200 and len(plotly) > 1_000_000


def test_broken_journals_are_explained_and_the_others_keep_working(serve, searched, broken):
    paths = [searched, broken["text"], broken["other"], broken["missing"]]
    dashboard = serve(paths)
    dashboard.check()
    bodies = [get(dashboard, f"/api/journal/{i}")[1] for i in range(len(paths))]
    assert bodies[0]["ok"]
    assert "not an SQLite file" in bodies[1]["error"]
    assert "not an optforge journal" in bodies[2]["error"]
    assert "no such file" in bodies[3]["error"]
    assert not any(b["ok"] for b in bodies[1:])
    assert len(dashboard.logged) == 3 and all("journal" in line for line in dashboard.logged)
    get(dashboard, "/api/journal/1")  # asked again: the terminal is not told twice
    assert len(dashboard.logged) == 3


def test_a_journal_that_appears_later_is_picked_up(serve, searched, tmp_path):
    late = tmp_path / "late.db"
    dashboard = serve([late])
    assert "no such file" in get(dashboard, "/api/journal/0")[1]["error"]
    late.write_bytes(searched.read_bytes())
    assert get(dashboard, "/api/journal/0")[1]["ok"]


def test_reading_never_writes_and_never_blocks_the_writer(serve, searched, tmp_path):
    before = digest(searched)
    dashboard = serve([searched])
    for _ in range(3):
        _, body = get(dashboard, "/api/journal/0")
        get(dashboard, f"/api/journal/0/candidate/{body['leaderboard'][0]['id']}")
    assert digest(searched) == before

    copy = tmp_path / "copy.db"
    copy.write_bytes(searched.read_bytes())
    dashboard = serve([copy])
    version = get(dashboard, "/api/journal/0")[1]["version"]
    writer = Journal(copy)  # the search's side, while the dashboard holds its connection
    try:
        writer.db.execute("PRAGMA busy_timeout = 0")  # fail at once rather than wait
        with writer.transaction():
            writer.event("test", {"by": "writer"})
    finally:
        writer.close()
    _, body = get(dashboard, "/api/journal/0")
    assert body["version"] == version + 1  # the change is seen


def test_a_running_search_is_followed(serve, tmp_path):
    journal = tmp_path / "live.db"
    search = start_search(journal)
    try:
        dashboard = serve([journal])
        seen = []
        deadline = time.time() + 60
        while time.time() < deadline and len(set(seen)) < 3:
            _, body = get(dashboard, "/api/journal/0")
            if body["ok"] and "status" in body:
                seen.append(body["status"]["generated"])
                assert body["phase"]["state"] == "running", (body["phase"], body["status"])
            time.sleep(0.3)
        assert len(set(seen)) >= 3 and seen == sorted(seen), seen
    finally:
        stop(search)
    assert search.returncode is not None


def test_without_plotly_the_command_says_what_to_install(searched, monkeypatch, capsys):
    from optforge.cli import main

    monkeypatch.setitem(sys.modules, "plotly", None)  # as if not installed
    assert main(["dashboard", str(searched), "--port", "0"]) == 2
    out = capsys.readouterr().out
    assert "optforge dashboard" in out and "plotly" in out and "optforge[dashboard]" in out


def test_a_port_out_of_range_is_refused(searched):
    from optforge.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["dashboard", str(searched), "--port", "70000"])
    assert exited.value.code == 2
