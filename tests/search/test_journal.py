"""The journal: a refusal for foreign files, all-or-nothing transactions, stored state."""

from __future__ import annotations

import pytest

from optforge.search.journal import Journal, JournalError, Outcome, is_journal


def test_refuses_files_that_are_not_journals(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(JournalError, match="not an optforge journal"):
        Journal(path)
    assert not is_journal(path)


def test_refuses_another_format_version(tmp_path):
    journal = Journal(tmp_path / "j.db")
    journal.set_meta("version", "99")
    journal.close()
    with pytest.raises(JournalError, match="format 99"):
        Journal(tmp_path / "j.db")


def candidate(journal, **kw):
    fields = dict(kind="child", generation=1, source="s", structural_hash="h", fingerprint="f",
                  statements=1, redundant=0, status="pending")  # fmt: skip
    return journal.add_candidate(**{**fields, **kw})


def test_a_failed_transaction_leaves_nothing(tmp_path):
    journal = Journal(tmp_path / "j.db")
    with pytest.raises(RuntimeError), journal.transaction():
        candidate(journal)
        journal.save_state({"generation": 1})
        raise RuntimeError("killed mid-way")
    assert journal.candidates() == [] and journal.state() is None
    with journal.transaction():
        ident = candidate(journal)
        journal.add_results([Outcome(ident, "t", 0, 0.5, None), Outcome(ident, "t", 1, None, "x")])
        journal.save_state({"generation": 1})
    reopened = Journal(tmp_path / "j.db")
    assert reopened.scores(ident, "t") == {0: 0.5, 1: None}
    assert reopened.state() == {"generation": 1}
    assert is_journal(tmp_path / "j.db")
