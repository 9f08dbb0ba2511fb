"""`optforge search` and `optforge show JOURNAL` as a user runs them."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from optforge.cli import main

TINY = ["--task", "digits-mlp-test", "--budget", "32", "--batch", "16", "--population", "16",
        "--tournament", "4"]  # fmt: skip


def optforge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "optforge.cli", *args], capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def test_search_funnel_show_export_and_resume(tmp_path):
    journal = tmp_path / "run.db"
    out = optforge("search", *TINY, "--journal", str(journal), "--finalists", "1")
    assert out.returncode == 0, out.stderr
    assert "32 candidates" in out.stdout and "cache hit rate" in out.stdout
    assert "finalist 1" in out.stdout and "tuned adamw" in out.stdout
    assert "mnist5k-mlp-test" in out.stdout  # meta-validation on data the search never saw
    assert "tuned muon" in out.stdout  # the third baseline, beside AdamW and Lion
    assert re.search(r"matrix language: \d+ of 32 children use a matrix operation", out.stdout)
    assert journal.with_suffix(".png").stat().st_size > 10_000

    shown = optforge("show", str(journal))
    assert shown.returncode == 0, shown.stderr
    for text in ("leaderboard", "lineage of candidate", "cache hit rate", "redundant statements",
                 "meta-validation", "plot:"):  # fmt: skip
        assert text in shown.stdout

    module = tmp_path / "found.py"
    assert optforge("export", str(journal), "-o", str(module)).returncode == 0
    assert "class ExportedOptimizer" in module.read_text()
    assert optforge("show", f"{journal}:1").returncode == 0  # one candidate: the warm start

    compared = optforge("compare", str(journal), "--markdown")
    assert compared.returncode == 0, compared.stderr
    assert "| run.db | evolution | 0 | 32 |" in compared.stdout and "tuned lion" in compared.stdout
    assert "sigma vs" in compared.stdout and "tuned muon" in compared.stdout
    assert optforge("compare", str(module)).returncode == 2  # not a journal

    again = optforge("search", "--resume", str(journal), "--no-funnel")
    assert again.returncode == 0 and "32 candidates" in again.stdout  # nothing left to do
    more = optforge("search", "--resume", str(journal), "--budget", "48", "--no-funnel")
    assert more.returncode == 0 and "48 candidates" in more.stdout  # a larger budget extends


@pytest.mark.parametrize(
    "args, message",
    [(["--task", "nope"], "unknown task"), (["--tournament", "500"], "tournament"),
     (["--warm-start", "no-such-optimizer"], "no file"), (["--stages", "nope"], "unknown task")],
)  # fmt: skip
def test_bad_search_arguments_name_the_value(tmp_path, capsys, args, message):
    code = main(["search", "--journal", str(tmp_path / "x.db"), *args])
    assert code == 2 and message in capsys.readouterr().out


def test_an_existing_journal_is_not_overwritten(tmp_path, capsys):
    journal = tmp_path / "run.db"
    assert main(["search", *TINY, "--budget", "16", "--journal", str(journal), "--no-funnel"]) == 0
    capsys.readouterr()
    assert main(["search", *TINY, "--journal", str(journal)]) == 2
    assert "--resume" in capsys.readouterr().out


def test_resuming_with_another_configuration_is_an_error(tmp_path, capsys):
    journal = tmp_path / "run.db"
    assert main(["search", *TINY, "--budget", "16", "--journal", str(journal), "--no-funnel"]) == 0
    capsys.readouterr()
    changed = ["search", "--resume", str(journal), "--population", "50", "--compile"]
    assert main(changed) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "--population 50 (journal: 16)" in out and "--compile True (journal: False)" in out
    # the same values again are fine, and --budget still extends the search
    assert main(["search", "--resume", str(journal), *TINY, "--no-funnel"]) == 0
    assert "32 candidates" in capsys.readouterr().out


def test_traits_name_what_a_program_uses():
    from optforge.program import library
    from optforge.search.report import traits

    assert traits(library.lion(0.9, 0.99, 0.1).source()) == ("sign", "EMA state", "reads w")
    assert traits(library.adamw(0.9, 0.999).source()) == ("EMA state", "second moment")
    assert traits(library.sgd().source()) == ()
    # reading a state that is never written back is no EMA; no lr means no schedule
    frozen = ("def train(w, g, v1, v2, lr):\n    a = interp(g, v2, 0.9)\n"
              "    update = a * 0.01\n    return update, v1, v2")  # fmt: skip
    assert traits(frozen) == ("ignores lr",)


def test_family_and_state_bytes_of_the_library():
    from optforge.program import library
    from optforge.search.report import family, state_bytes

    hybrid = library.from_body("v1 = interp(g, v1, 0.9)", "o = orthogonalize(v1)",
                               "s = sign(v1)", "u = o + s", "update = u * lr",
                               "return update, v1, v2")  # fmt: skip
    cases = {  # program: (family, fp32 state bytes per parameter)
        library.sgd(): ("momentum/SGD", 0),
        library.momentum(0.9): ("momentum/SGD", 4),
        library.lion(0.9, 0.99): ("sign", 4),
        library.adamw(0.9, 0.999): ("Adam-like", 8),
        library.muon(): ("orthogonalized", 8),  # AdamW only off the hidden matrices
        hybrid: ("hybrid", 4),
    }
    for program, expected in cases.items():
        assert (family(program.source()), state_bytes(program.source())) == expected
    # a state that is only written, never read, is not kept
    assert state_bytes("def train(w, g, v1, v2, lr):\n    v1 = g\n    update = g * lr\n"
                       "    return update, v1, v2") == 0  # fmt: skip


@pytest.mark.parametrize("budget", [["--budget", "100000"], []], ids=["budget", "no-budget"])
def test_minutes_stops_the_search_and_sets_its_budget(tmp_path, budget):
    """--minutes ends the search after the generation running at that time; the journal's
    budget becomes what was generated, so a plain --resume does not run on. Without
    --budget the clock alone bounds it (not the default 1,000 candidates)."""
    import json
    import sqlite3

    path = tmp_path / "timed.db"
    code = main(["search", "--task", "digits-mlp-test", *budget, "--batch", "8",
                 "--population", "8", "--tournament", "2", "--minutes", "0.05",
                 "--no-funnel", "--journal", str(path)])  # fmt: skip
    assert code == 0
    db = sqlite3.connect(path)
    budget = json.loads(db.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0])
    generated = db.execute("SELECT COUNT(*) FROM candidates WHERE kind = 'child'").fetchone()[0]
    db.close()
    assert 0 < generated < 100000 and budget["budget"] == generated
