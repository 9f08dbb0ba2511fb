"""The ``optforge`` command line: argparse for parsing, rich for what people read.

Each group of commands lives in ``optforge.commands``; this module wires them together.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.markup import escape

from optforge import __version__
from optforge._extras import MissingExtra
from optforge.commands.bench import add_bench_commands
from optforge.commands.dashboard import add_dashboard_command
from optforge.commands.program import add_program_commands
from optforge.commands.report import add_compare_command
from optforge.commands.search import add_search_commands
from optforge.commands.study import add_study_command
from optforge.commands.tasks import add_task_commands
from optforge.tasks.data import DatasetMissing


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optforge",
        description="Discover optimizers by evolutionary program search; benchmark Lion.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_bench_commands(commands)
    add_search_commands(commands)
    add_compare_command(commands)
    add_program_commands(commands)
    add_task_commands(commands)
    add_study_command(commands)
    add_dashboard_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Piped output (CI logs, files) gets a fixed width so tables are not squeezed to 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    try:
        return args.handler(args, console)
    except BrokenPipeError:  # `optforge ... | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return 0
    except (MissingExtra, DatasetMissing) as e:  # what to install, as one line
        console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
