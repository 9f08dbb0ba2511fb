"""Helpers every command uses: argument types, tables, JSON files, program specs."""

from __future__ import annotations

import argparse
import math

from rich.console import Console
from rich.table import Table

from optforge.bench.tables import markdown_table


def positive_count(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (e.g. 20e6)") from None
    if not (1 <= value < math.inf):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 1")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (0 < value < math.inf):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive finite number")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


def print_table(console, title, columns, rows, markdown: bool, numeric: bool = True) -> None:
    """Markdown text (for docs) or a rich table; numeric tables right-align all but column 0."""
    if markdown:
        print(f"{title}\n\n{markdown_table(columns, rows)}")
        return
    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        right = numeric and i > 0
        table.add_column(col, justify="right" if right else "left", no_wrap=numeric)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def read_json(path: str, console: Console) -> dict | None:
    import json

    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        console.print(f"[red]cannot read {path}: {e}[/red]")
        return None


def load_program(spec: str, console: Console):
    """The program ``spec`` names (``search/resolve.py``: a file, a library name, a journal
    or ``JOURNAL:ID``); None after its error has been printed."""
    from optforge.search.resolve import ProgramNotFound, resolve_program

    try:
        return resolve_program(spec)
    except ProgramNotFound as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        return None
