"""A search killed with SIGKILL at any moment resumes from its journal: nothing finished is
lost or repeated, and it ends exactly where the uninterrupted search ends."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from optforge.program import library
from optforge.search.config import SearchConfig
from optforge.search.evolution import Search, open_journal
from optforge.search.executors import InProcessExecutor
from optforge.search.fitness import FitnessConfig
from optforge.tasks.registry import with_step_size

# workers=2: two jobs per generation, so a kill can land between them
CONFIG = SearchConfig(task="digits-mlp-test", budget=64, batch=16, population=16, tournament=4,
                      seed=3, workers=2)  # fmt: skip
SCRIPT = """
import sys
from dataclasses import replace

import pytest

from optforge.search.config import SearchConfig
from optforge.search.fitness import FitnessConfig
from optforge.search.evolution import Search, open_journal
from optforge.search.executors import InProcessExecutor
resume = sys.argv[2] == "resume"
config = None if resume else SearchConfig.from_json(sys.argv[3])
journal, config = open_journal(sys.argv[1], config, resume)
Search(journal, config, InProcessExecutor()).run()
"""
ROW = (
    "id, kind, generation, run, parent, mutation, source, status, cache_of, eval_seed, job, "
    "fitness, multiplier"
)


def snapshot(path):
    db = sqlite3.connect(path)
    rows = db.execute(f"SELECT {ROW} FROM candidates ORDER BY id").fetchall()
    results = db.execute("SELECT candidate, seed, fitness, finished FROM results").fetchall()
    (state,) = db.execute("SELECT value FROM state").fetchone() or ("{}",)
    db.close()
    import json

    state = json.loads(state)
    state.pop("elapsed", None)  # wall time differs, nothing else may
    return rows, results, state


def wait_then_kill(process, path, ready, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.1)
            hit = ready(db)
            db.close()
        except sqlite3.Error:
            hit = False
        if hit:
            process.kill()  # SIGKILL: no clean-up of any kind
            process.wait()
            return True
        time.sleep(0.02)
    process.kill()
    process.wait()
    return False


def mid_generation(db) -> bool:
    """A generation with one job committed and another still pending."""
    return bool(db.execute(
        "SELECT 1 FROM candidates a JOIN candidates b ON a.generation = b.generation "
        "WHERE a.generation > 0 AND a.status = 'evaluated' AND a.job IS NOT NULL "
        "AND b.status = 'pending' AND b.job IS NOT NULL AND a.job != b.job LIMIT 1"
    ).fetchone())  # fmt: skip


# every fitness option at once: two tasks normalized, multipliers, two seeds, the cascade
FITNESS = FitnessConfig(("digits-mlp-test", "shakespeare-lm-test"), multipliers=(0.5, 1.0, 2.0),
                        seeds=2, normalize=True, hurdle=0.2)  # fmt: skip


# every candidate a matrix program: Muon on the hidden matrices, AdamW on the rest
MUON = replace(CONFIG, budget=48,
               warm_start=with_step_size(library.muon(), 0.02).source())  # fmt: skip


@pytest.mark.parametrize("config", [CONFIG, replace(CONFIG, fitness=FITNESS, budget=48), MUON],
                         ids=["default fitness", "every fitness option",
                              "matrix language from Muon"])  # fmt: skip
def test_kill_9_mid_generation_then_resume_matches_uninterrupted(tmp_path, config):
    CONFIG = config
    reference = tmp_path / "reference.db"
    journal, config = open_journal(reference, CONFIG, resume=False)
    Search(journal, config, InProcessExecutor()).run()
    journal.close()

    path = tmp_path / "killed.db"
    first = subprocess.Popen([sys.executable, "-c", SCRIPT, str(path), "new", CONFIG.to_json()])
    assert wait_then_kill(first, path, mid_generation), "never caught the search mid-generation"
    rows_before, results_before, _ = snapshot(path)
    assert any(r[7] == "pending" for r in rows_before)  # it really was interrupted

    # a second kill at an arbitrary moment of the resumed run
    start = time.monotonic()
    second = subprocess.Popen([sys.executable, "-c", SCRIPT, str(path), "resume"])
    wait_then_kill(second, path, lambda db: time.monotonic() - start > 4.0)

    journal, config = open_journal(path, None, resume=True)
    Search(journal, config, InProcessExecutor()).run()
    journal.close()

    rows, results, state = snapshot(path)
    ref_rows, ref_results, ref_state = snapshot(reference)
    assert rows == ref_rows and state == ref_state
    assert sorted(r[:3] for r in results) == sorted(r[:3] for r in ref_results)
    # finished before the kill = kept as they were, never trained again
    finished = {(c, s): t for c, s, _, t in results}
    for candidate, seed, _, stamp in results_before:
        assert finished[(candidate, seed)] == stamp
