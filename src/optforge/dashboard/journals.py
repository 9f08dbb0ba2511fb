"""The journals a dashboard watches: opened read-only, re-read only when they change.

A search writes its journal while the page polls it, so every read here is built to never
get in the search's way:

- the connection is opened with SQLite's ``mode=ro`` (it cannot write, so it can never take
  the write lock) and ``query_only``;
- each snapshot is one short read transaction: in WAL mode a reader never blocks the writer,
  and one transaction makes the tables agree with each other (no candidate without its
  parent row);
- ``PRAGMA data_version`` changes only when another connection commits, so a snapshot is
  recomputed once per change of the journal, not once per poll of every open page.

A journal that is missing, empty, not SQLite, not an optforge journal or corrupt is an
``error`` string for the page and one line in the terminal; it is retried on the next poll
(a search started after the dashboard appears by itself).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from optforge.search.journal import VERSION, Journal, JournalError


class ReadOnlyJournal(Journal):
    """A :class:`Journal` that reads only: no schema, no migrations, no meta written.
    The report functions take it like any journal."""

    def __init__(self, path: str | Path):  # noqa: D107 (no super().__init__: it writes)
        self.path = Path(path)
        if not self.path.exists():
            raise JournalError(f"{self.path}: no such file (yet: a search may not have started)")
        if not self.path.is_file():
            raise JournalError(f"{self.path} is not a file")
        with open(self.path, "rb") as f:
            head = f.read(16)
        if head == b"":
            raise JournalError(f"{self.path} is empty (a search may be starting)")
        if head != b"SQLite format 3\x00":
            raise JournalError(f"{self.path} is not an optforge journal (not an SQLite file)")
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        self.db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=5.0,
                                  check_same_thread=False)  # fmt: skip
        self.db.row_factory = sqlite3.Row
        try:
            self.db.execute("PRAGMA query_only = 1")
            self._check()
        except BaseException:
            self.db.close()
            raise

    def _check(self) -> None:
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master")}
        if not {"meta", "candidates", "results"} <= tables:
            raise JournalError(f"{self.path} is an SQLite file but not an optforge journal")
        version = self.get_meta("version")
        if version is not None and int(version) != VERSION:
            raise JournalError(
                f"{self.path} has journal format {version}; this optforge reads format {VERSION}"
            )
        if self.get_meta("config") is None:
            raise JournalError(f"{self.path} has no search configuration yet (starting?)")

    def data_version(self) -> int:
        """Changes whenever another connection commits to the file."""
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    def snapshot(self):
        """A read transaction around a block of reads (see the module docstring)."""
        return _Snapshot(self.db)


class _Snapshot:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN")

    def __exit__(self, *exc) -> None:
        self.db.execute("COMMIT")


def describe(error: BaseException, path: str) -> str:
    """One line for the page and the terminal."""
    if isinstance(error, JournalError):
        return str(error)  # it names the file
    if isinstance(error, sqlite3.DatabaseError):
        return f"{path} cannot be read as an optforge journal: {error} (corrupt, or not one)"
    return f"{path} cannot be read: {type(error).__name__}: {error}"


class Watched:
    """One journal named on the command line: its read-only connection, its last snapshot
    and the error that stopped it, if any. Thread-safe: requests come from many threads."""

    def __init__(self, index: int, path: str, log: Callable[[str], None] = print):
        self.index, self.path, self.log = index, path, log
        self.name = Path(path).name
        self.lock = threading.Lock()
        self.journal: ReadOnlyJournal | None = None
        self.error: str | None = None
        self.seen: int | None = None  # data_version of the cached snapshot
        self.version = 0  # bumps with each new snapshot; the page sends it back
        self.cache: dict[Any, Any] = {}

    def read(self, key: Any, build: Callable[[ReadOnlyJournal], Any]) -> tuple[int, Any]:
        """``(version, build(journal))``, ``build``'s result cached until the journal
        changes; raises ``JournalUnavailable`` with the message when it cannot be read."""
        with self.lock:
            try:
                journal = self._open()
                seen = journal.data_version()
                if seen != self.seen:
                    self.seen, self.version, self.cache = seen, self.version + 1, {}
                if key not in self.cache:
                    with journal.snapshot():
                        self.cache[key] = build(journal)
                self._set_error(None)
                return self.version, self.cache[key]
            except (JournalError, sqlite3.Error, ValueError, KeyError) as e:
                self._close()
                self._set_error(describe(e, self.path))
                raise JournalUnavailable(self.error) from None

    def _open(self) -> ReadOnlyJournal:
        if self.journal is None:
            self.journal = ReadOnlyJournal(self.path)
            self.seen = None
        return self.journal

    def _close(self) -> None:
        if self.journal is not None:
            with contextlib.suppress(sqlite3.Error):
                self.journal.close()
        self.journal, self.seen, self.cache = None, None, {}

    def _set_error(self, error: str | None) -> None:
        if error != self.error:  # the terminal hears of each change once, not each poll
            stamp = time.strftime("%H:%M:%S")
            self.log(f"{stamp} journal {self.index} {self.name}: "
                     + (error if error else "readable"))  # fmt: skip
        self.error = error

    def close(self) -> None:
        with self.lock:
            self._close()


class JournalUnavailable(Exception):
    """The journal cannot be read now; ``str(e)`` says why."""
