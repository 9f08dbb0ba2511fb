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
    """A Program from a file (program text, or JSON) or a library name; None after an error
    has been printed."""
    from pathlib import Path

    from optforge.program import Program, ProgramError, library, parse

    path = Path(spec)
    try:
        journal_program = _from_journal(spec)
        if journal_program is not None:
            return journal_program
        if path.is_file():
            text = path.read_text()
            return Program.from_json(text) if path.suffix == ".json" else parse(text)
        if spec in library.PROGRAMS:
            return library.PROGRAMS[spec]()
    except ProgramError as e:
        console.print(f"[red]error:[/red] {spec}: {e}", highlight=False)
        return None
    except LookupError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        return None
    except (OSError, UnicodeDecodeError) as e:
        console.print(f"[red]error:[/red] cannot read {spec}: {e}", highlight=False)
        return None
    names = ", ".join(library.PROGRAMS)
    console.print(f"[red]error:[/red] no file {spec!r}, and no library program of that name "
                  f"(library: {names})", highlight=False)  # fmt: skip
    return None


def _from_journal(spec: str):
    """``JOURNAL`` (its first simplified finalist, else its best program) or ``JOURNAL:ID``."""
    from pathlib import Path

    from optforge.program import parse
    from optforge.search.journal import Journal, JournalError, folded_program, is_journal

    path, _, ident = spec.rpartition(":") if ":" in spec else (spec, "", "")
    if not (ident.isdigit() and is_journal(path)):
        path, ident = spec, ""
    if not is_journal(path):
        return None
    journal = Journal(Path(path))
    try:
        if ident:
            try:
                return folded_program(journal.candidate(int(ident)))
            except JournalError as e:
                raise LookupError(str(e)) from None
        from optforge.search import report

        finalists = report.finalists(journal)
        if finalists:
            return parse(finalists[0]["simplified_source"])
        board = report.leaderboard(journal, 1)
        if not board:
            raise LookupError(f"{path} has no evaluated candidate yet")
        return parse(board[0][2])
    finally:
        journal.close()
