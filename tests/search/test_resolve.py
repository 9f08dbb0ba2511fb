"""One home for what a program's name means (``search/resolve.py``): files, library names,
journals and ``JOURNAL:ID``, and one error for a name that names nothing."""

from __future__ import annotations

import json

import pytest

from optforge.cli import main
from optforge.program import library
from optforge.search import report
from optforge.search.journal import Journal
from optforge.search.resolve import ProgramNotFound, resolve_program


@pytest.fixture(scope="module")
def journal(tmp_path_factory):
    path = tmp_path_factory.mktemp("resolve") / "run.db"
    code = main(["search", "--task", "digits-mlp-test", "--budget", "8", "--batch", "8",
                 "--population", "8", "--tournament", "2", "--no-funnel",
                 "--journal", str(path)])  # fmt: skip
    assert code == 0
    return path


def test_files_and_library_names(tmp_path):
    lion = library.lion()
    text, as_json = tmp_path / "lion.py", tmp_path / "lion.json"
    text.write_text(lion.source())
    as_json.write_text(json.dumps(lion.to_json()))
    for spec in (str(text), str(as_json), "lion"):
        assert resolve_program(spec).source() == lion.source()


def test_a_journal_and_one_of_its_candidates(journal):
    j = Journal(journal)
    try:
        best = report.leaderboard(j, 1)[0][2]
    finally:
        j.close()
    assert resolve_program(str(journal)).source().strip() == best.strip()
    warm_start = resolve_program(f"{journal}:1")  # candidate 1 is the warm start (AdamW)
    assert "v1" in warm_start.source()
    with pytest.raises(ProgramNotFound, match="999"):
        resolve_program(f"{journal}:999")


def test_a_name_that_names_nothing_gets_one_message(tmp_path):
    with pytest.raises(ProgramNotFound) as info:
        resolve_program("no-such-optimizer")
    message = str(info.value)
    assert "'no-such-optimizer' names no program" in message
    assert "JOURNAL:ID" in message and "library: sgd" in message
    broken = tmp_path / "broken.py"
    broken.write_text("def train(w, g, v1, v2, lr):\n    update = (g\n")
    with pytest.raises(ProgramNotFound, match="broken.py"):
        resolve_program(str(broken))
