"""Journals written before the matrix language: they resume in the language they started
in, with the fingerprints they hold; a journal whose fingerprints this code cannot compute
is refused with both versions named."""

from __future__ import annotations

import json
import random
import sqlite3

import pytest

from optforge.program import library
from optforge.program.analysis import analyze
from optforge.program.fingerprint import fingerprint
from optforge.search.config import SearchConfig
from optforge.search.evolution import open_journal
from optforge.search.journal import Journal, JournalError
from optforge.search.mutation import MutationConfig, mutate

CONFIG = SearchConfig(task="digits-mlp-test", budget=8, batch=4, population=4, tournament=2)


def _rewrite_meta(path, key, value=None):
    db = sqlite3.connect(path)
    if value is None:
        db.execute("DELETE FROM meta WHERE key = ?", (key,))
    else:
        db.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
    db.commit()
    db.close()


def test_a_journal_from_before_the_matrix_language_resumes_elementwise(tmp_path):
    path = tmp_path / "old.db"
    journal, config = open_journal(path, CONFIG, resume=False)
    assert config.mutation.language == "matrix"  # new searches: the matrix language
    stored = json.loads(journal.get_meta("config"))
    journal.close()
    del stored["mutation"]["language"]  # as the journals written before it
    _rewrite_meta(path, "config", json.dumps(stored, sort_keys=True))
    _rewrite_meta(path, "fingerprint")
    journal, config = open_journal(path, None, resume=True)
    assert config.mutation.language == "elementwise"
    assert journal.get_meta("fingerprint") == "1"  # it holds version 1's fingerprints...
    journal.close()  # ...which version 2 computes alike, so it opened


def test_a_journal_with_unknown_fingerprints_is_refused(tmp_path):
    path = tmp_path / "future.db"
    Journal(path).close()
    _rewrite_meta(path, "fingerprint", "9")
    with pytest.raises(JournalError, match=r"version 9.*computes version 2"):
        Journal(path)


def test_the_elementwise_language_never_writes_matrix_operations():
    rng = random.Random(0)
    program = library.paper_warm_start()
    elementwise = MutationConfig(language="elementwise")
    for _ in range(300):
        program, _ = mutate(program, rng, elementwise)
        assert not analyze(program).shaped
        assert fingerprint(program)  # the version-1 domain


def test_unknown_language_is_a_clear_error():
    with pytest.raises(ValueError, match="language must be one of"):
        MutationConfig(language="tensor")
