"""`optforge dashboard JOURNAL...`: watch searches in a browser while they run."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.markup import escape

from optforge.commands.common import positive_int


def add_dashboard_command(commands) -> None:
    dashboard = commands.add_parser(
        "dashboard",
        help="a live local web page over search journals (read-only; polls every 2 s)",
        description="Serve a web page that shows each JOURNAL (status, fitness over time, "
        "leaderboard, any program's source, simplified form, diff and lineage, the funnel and "
        "meta-validation) and follows it while a search writes it. Read-only: it never writes "
        "to a journal and never holds a lock the search would wait on.",
    )
    dashboard.add_argument("journals", nargs="+", metavar="JOURNAL", help="search journals (.db)")
    dashboard.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 shows "
        "the journals to the whole network, without authentication)",
    )
    dashboard.add_argument(
        "--port", type=_port, default=8265, help="the port (default 8265; 0: any free port)"
    )
    dashboard.set_defaults(handler=_dashboard)


def _port(text: str) -> int:
    value = positive_int(text) if text != "0" else 0
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0..65535)")
    return value


def _dashboard(args: argparse.Namespace, console: Console) -> int:
    from optforge.dashboard.server import Dashboard

    def log(message: str) -> None:
        console.print(escape(message), highlight=False, soft_wrap=True)

    try:
        dashboard = Dashboard(args.journals, args.host, args.port, log=log)
    except OSError as e:  # the port is taken, or the address is not this machine's
        console.print(f"[red]error:[/red] cannot listen on {args.host}:{args.port}: "
                      f"{escape(str(e))} (another port: --port)", highlight=False)  # fmt: skip
        return 2
    dashboard.check()
    console.print(f"optforge dashboard on {dashboard.url} watching {len(args.journals)} "
                  f"journal(s); Ctrl-C stops it", highlight=False)  # fmt: skip
    try:
        dashboard.serve_forever()
    except KeyboardInterrupt:
        console.print("stopped", highlight=False)
    finally:
        dashboard.stop()
    return 0


__all__ = ["add_dashboard_command"]
