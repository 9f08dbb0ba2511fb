"""The dashboard's HTTP server: the standard library's ``ThreadingHTTPServer``, a fixed table
of routes and nothing else.

Safe by construction rather than by checks on paths: the journals are the ones named on the
command line, addressed by their index (``/api/journal/0``); static files are a fixed map from
URL to a file in the package. No part of a request is ever joined to a path, so no request
can open another file. Only GET/HEAD are served; bound to a loopback address, requests whose
``Host`` is not a loopback name are refused (a web page elsewhere cannot read the journals by
DNS rebinding).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from optforge.dashboard import data
from optforge.dashboard.journals import JournalUnavailable, Watched

STATIC = resources.files("optforge.dashboard") / "static"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8"}  # fmt: skip
JOURNAL = re.compile(r"/api/journal/(\d{1,6})")
CANDIDATE = re.compile(r"/api/journal/(\d{1,6})/candidate/(\d{1,12})")
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
SECURITY = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'",
}


def plotly_js() -> Path:
    """The ``plotly.min.js`` the plotly package ships (the pinned ``dashboard`` extra)."""
    from optforge._extras import EXTRAS, require

    extra = "dashboard" if "dashboard" in EXTRAS else None  # the extra, once it is declared
    plotly = require("plotly", extra, "optforge dashboard (its plots)",
                     install=None if extra else "pip install 'optforge[dashboard]'")  # fmt: skip
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(f"the plotly package has no {path}: reinstall plotly")
    return path


class Dashboard:
    """The journals, and the server that shows them at :attr:`url`."""

    def __init__(self, paths: list[str], host: str = "127.0.0.1", port: int = 8265,
                 log: Callable[[str], None] = print):  # fmt: skip
        self.journals = [Watched(i, p, log) for i, p in enumerate(paths)]
        self.files = {
            "/": STATIC / "index.html",
            "/static/app.js": STATIC / "app.js",
            "/static/app.css": STATIC / "app.css",
            "/static/plotly.min.js": plotly_js(),
        }
        self.log = log
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.httpd.daemon_threads = True
        self.host, self.port = host, self.httpd.server_address[1]
        self.loopback = host in LOOPBACK

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def check(self) -> None:
        """Read each journal once, so problems reach the terminal at start."""
        for watched in self.journals:
            with contextlib.suppress(JournalUnavailable):  # Watched logged it
                watched.read("summary", data.summary)

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def start(self) -> threading.Thread:
        """Serve in a background thread (tests, notebooks); :meth:`stop` ends it."""
        thread = threading.Thread(target=self.serve_forever, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        for watched in self.journals:
            watched.close()

    # -- the API --------------------------------------------------------------------------------

    def route(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        """``(status, JSON body)`` for an API path; 404 for anything not in the table."""
        if path == "/api/journals":
            return 200, [self._head(w) for w in self.journals]
        if m := CANDIDATE.fullmatch(path):
            watched = self._journal(int(m[1]))
            if watched is None:
                return 404, {"error": f"no journal {m[1]}: the dashboard serves {self._range()}"}
            ident = int(m[2])
            try:
                _, detail = watched.read(("candidate", ident),
                                         lambda j: data.candidate(j, ident))  # fmt: skip
            except JournalUnavailable as e:
                return 503, {**self._head(watched), "error": str(e)}
            except data.NoSuchCandidate as e:
                return 404, {"error": str(e)}
            return 200, detail
        if m := JOURNAL.fullmatch(path):
            watched = self._journal(int(m[1]))
            if watched is None:
                return 404, {"error": f"no journal {m[1]}: the dashboard serves {self._range()}"}
            try:
                version, summary = watched.read("summary", data.summary)
            except JournalUnavailable as e:
                return 200, {**self._head(watched), "ok": False, "error": str(e)}
            body = {**self._head(watched), "ok": True, "version": version,
                    "phase": data.phase(summary["status"])}  # fmt: skip
            if query.get("v") != [str(version)]:  # the page's copy is out of date
                body.update(summary)
            return 200, body
        return 404, {"error": f"no such page: {path}"}

    def _journal(self, index: int) -> Watched | None:
        return self.journals[index] if index < len(self.journals) else None

    def _range(self) -> str:
        return f"journals 0..{len(self.journals) - 1} (those named on its command line)"

    @staticmethod
    def _head(watched: Watched) -> dict[str, Any]:
        return {"index": watched.index, "name": watched.name, "path": watched.path}


def _handler(dashboard: Dashboard) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "optforge-dashboard"
        sys_version = ""

        def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
            self._serve(body=False)

        def do_GET(self) -> None:  # noqa: N802
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            if dashboard.loopback and not self._loopback_host():
                return self._send(403, b"refused: not a loopback Host\n", "text/plain", body)
            url = urlsplit(self.path)
            if url.path in dashboard.files:
                file = dashboard.files[url.path]
                kind = TYPES[Path(str(file)).suffix]
                return self._send(200, file.read_bytes(), kind, body, cache=True)
            if url.path.startswith("/api/"):
                status, payload = dashboard.route(url.path, parse_qs(url.query))
                text = json.dumps(_finite(payload), separators=(",", ":"))
                return self._send(status, text.encode(), "application/json", body)
            return self._send(404, b"not found\n", "text/plain", body)

        def _loopback_host(self) -> bool:
            host = self.headers.get("Host", "")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            return name in LOOPBACK

        def _send(self, status: int, content: bytes, kind: str, body: bool,
                  cache: bool = False) -> None:  # fmt: skip
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(content)))
            self.send_header("Cache-Control", "max-age=300" if cache else "no-store")
            for key, value in SECURITY.items():
                self.send_header(key, value)
            self.end_headers()
            if body:
                self.wfile.write(content)

        def log_message(self, format: str, *args) -> None:  # noqa: A002
            if args and str(args[1] if len(args) > 1 else "").startswith("5"):
                dashboard.log(f"{self.address_string()} {format % args}")

    return Handler


def _finite(value: Any) -> Any:
    """NaN and infinities as null: JSON has no spelling for them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


__all__ = ["Dashboard", "plotly_js"]
