"""What a user's name for a program means: a program file (text or JSON), a library name, a
search journal (its first simplified finalist, else its best program) or ``JOURNAL:ID``.

Export, eval, study, the dashboard and ``--warm-start`` all take such a name; it resolves
here, below the commands and the benchmarks that need it, with one error for a name that
resolves to nothing.
"""

from __future__ import annotations

from pathlib import Path

from optforge.program import Program, ProgramError, library, parse


class ProgramNotFound(LookupError):
    """The name is no file, library program or journal; or the journal/file cannot give a
    program. The message says which, and what names are allowed."""


def resolve_program(spec: str) -> Program:
    """The program ``spec`` names (see the module docstring); ``ProgramNotFound`` if none."""
    path = Path(spec)
    try:
        from_journal = _from_journal(spec)
        if from_journal is not None:
            return from_journal
        if path.is_file():
            text = path.read_text()
            return Program.from_json(text) if path.suffix == ".json" else parse(text)
    except ProgramError as e:
        raise ProgramNotFound(f"{spec}: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ProgramNotFound(f"cannot read {spec}: {e}") from None
    if spec in library.PROGRAMS:
        return library.PROGRAMS[spec]()
    raise ProgramNotFound(
        f"{spec!r} names no program: it is no file, no search journal (JOURNAL or "
        f"JOURNAL:ID), and no library program (library: {', '.join(library.PROGRAMS)})"
    )


def _from_journal(spec: str) -> Program | None:
    """``JOURNAL`` (its first simplified finalist, else its best program) or ``JOURNAL:ID``;
    None when ``spec`` is not a journal."""
    from optforge.search import report
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
                raise ProgramNotFound(str(e)) from None
        finalists = report.finalists(journal)
        if finalists:
            return parse(finalists[0]["simplified_source"])
        board = report.leaderboard(journal, 1)
        if not board:
            raise ProgramNotFound(f"{path} has no evaluated candidate yet")
        return parse(board[0][2])
    finally:
        journal.close()
