"""What the dashboard shows, as JSON-ready dicts, from a (read-only) journal.

The numbers come from ``search.report`` and ``search.funnel`` — the same statistics,
leaderboard, lineage, baselines and finalists as ``optforge show`` — so the page and the
terminal never disagree. What is only the page's: the plot's points (with failures kept
apart instead of stretching the axis), the time of the last write (is the search still
running?) and a selected program's simplified form and diff against its parent.
"""

from __future__ import annotations

import difflib
import math
import statistics
import time
from typing import Any

from optforge.program import parse, simplify
from optforge.program.analysis import analyze
from optforge.search import report
from optforge.search.journal import Journal, JournalError, folded_program

TOP = 25  # leaderboard rows


def summary(journal: Journal) -> dict[str, Any]:
    """Status, plot, leaderboard, funnel and meta-validation of one journal."""
    config = report.config_of(journal)
    stats = report.statistics_of(journal)
    state = journal.state() or {}
    everything = journal.candidates("1")
    results = journal.results()
    writes = [r["finished"] or r["created"] for r in everything] + [r["finished"] for r in results]
    finalists = report.finalists(journal)
    return {
        "status": {
            "task": config.task,
            "fitness": config.scoring.label,
            "algorithm": config.algorithm,
            "language": config.mutation.language,
            "seed": config.seed,
            "budget": config.budget if config.budget < 10**9 else None,
            "population": config.population,
            "batch": config.batch,
            "workers": config.workers,
            "generated": stats.generated,
            "trained": stats.trained,
            "per_second": stats.generated_per_second,
            "trained_per_second": stats.trained_per_second,
            "hit_rate": stats.hit_rate,
            "redundant_fraction": stats.redundant_fraction,
            "failures": stats.failures,
            "restarts": stats.restarts,
            "elapsed": stats.seconds,
            "best_fitness": state.get("best_fitness"),
            "last_write": max(writes, default=None),
            "idle_after": max(60.0, 2 * config.time_limit),
            "funnel_configured": bool(config.funnel.stages or config.funnel.meta),
            "funnel_started": bool(
                {r["task"] for r in results} & {*config.funnel.stages, *config.funnel.meta}
            ),
            "finalists": len(finalists),
        },
        "plot": plot_data(journal, config.task),
        "leaderboard": [
            {"rank": i, "id": c, "fitness": f, "program": live_line(src)}
            for i, (c, f, src) in enumerate(report.leaderboard(journal, TOP), 1)
        ],
        "funnel": funnel_table(journal),
        "meta": meta_table(journal, config, finalists),
        "finalists": [
            {
                "candidate": f["candidate"],
                "simplified": f["simplified"],
                "below": f["below"],
                "simplified_source": f["simplified_source"],
            }
            for f in finalists
        ],  # fmt: skip
    }


def phase(status: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """Running or finished, from the configuration, the finalists and the time since the
    last write; computed per request (it changes with the clock, not with the journal)."""
    now = time.time() if now is None else now
    last = status["last_write"]
    idle = None if last is None else max(0.0, now - last)
    active = idle is not None and idle < status["idle_after"]
    searching = status["budget"] is None or status["generated"] < status["budget"]
    funnel = status["funnel_started"] and not status["finalists"]
    if last is None:  # configured, nothing written yet
        state, label = "running", "starting: no candidate yet"
    elif status["finalists"]:
        state, label = "finished", "finished (search, funnel and meta-validation)"
    elif active and (searching or funnel):
        state = "running"
        label = "running: searching" if searching else "running: funnel and meta-validation"
    elif searching:
        state, label = "stopped", "stopped before its budget (optforge search --resume continues)"
    elif funnel:
        state, label = "stopped", "stopped in the funnel (optforge search --resume continues)"
    else:
        state, label = "finished", "search finished; no funnel run (yet)"
    return {"state": state, "label": label, "idle": idle}


def plot_data(journal: Journal, task: str) -> dict[str, Any]:
    """Children in the order generated: scored points, failures apart, best so far (from the
    warm start, as ``optforge show``'s PNG), baselines and a y-range that a few disastrous
    candidates do not stretch (the page can zoom out to all of them)."""
    rows = journal.candidates("kind = 'child'")
    points = {"x": [], "y": [], "id": [], "cached": []}
    failed = {"x": [], "id": [], "reason": []}
    for i, r in enumerate(rows, 1):
        if r["fitness"] is not None and math.isfinite(r["fitness"]):
            points["x"].append(i)
            points["y"].append(r["fitness"])
            points["id"].append(r["id"])
            points["cached"].append(r["cache_of"] is not None)
        elif r["status"] == "failed":
            failed["x"].append(i)
            failed["id"].append(r["id"])
            failed["reason"].append(r["reason"] or "failed")
    warm = journal.candidates("kind = 'warm_start'")
    start = warm[0]["fitness"] if warm and warm[0]["fitness"] is not None else None
    best, running = [], -math.inf if start is None else start
    for y in points["y"]:
        running = max(running, y)
        best.append(running)
    tuned = {k: v for k, v in report.baselines(journal, task).items() if v is not None}
    return {
        "task": task,
        "points": points,
        "best": best,
        "failed": failed,
        "warm_start": start,
        "baselines": tuned,
        "yrange": _yrange(points["y"], [*tuned.values(), *([start] if start else [])]),
    }


def _yrange(ys: list[float], marks: list[float]) -> list[float] | None:
    """The view that opens: from the lowest of the warm start, the tuned baselines and the
    upper quartile of the candidates, up to the best, but never more than three times the
    marks' span below them. Hurdle-failed or diverging-but-finite candidates (a normalized
    fitness of -18 beside the interesting 0.8..1.2) fall below it and are counted on the
    page; the plot's autoscale shows them all."""
    if not ys:
        return None
    high = max(ys + marks)
    quartile = statistics.quantiles(ys, n=4)[2] if len(ys) > 1 else ys[0]
    if marks:
        focus = max(high - min(marks), 1e-3)
        low = max(min(min(marks), quartile), min(marks) - 3 * focus)
    else:
        low = statistics.quantiles(ys, n=4)[0] if len(ys) > 1 else ys[0] - 0.05
    low = max(low, min(ys))
    pad = 0.05 * max(high - low, 1e-3)
    return [low - pad, high + pad]


def live_line(source: str) -> str:
    """A program's live statements on one line (what the leaderboard lists)."""
    program = parse(source)
    redundant = analyze(program).redundant
    return "; ".join(s.source() for i, s in enumerate(program.statements) if i not in redundant)


class NoSuchCandidate(LookupError):
    """The journal is fine; it has no candidate with that id (a 404, not a broken journal)."""


def candidate(journal: Journal, ident: int) -> dict[str, Any]:
    """One program: source as scored, simplified form, diff against its parent, lineage."""
    rows = journal.candidates("id = ?", (ident,))
    if not rows:
        raise NoSuchCandidate(f"no candidate {ident} in {journal.path}")
    row = rows[0]
    program = _folded(row)
    source = program.source() if program is not None else row["source"]
    simplified = None
    if program is not None and row["structural_hash"] != "builtin":
        simplified = simplify(program).source()
    parent = diff = None
    if row["parent"] is not None:
        parent_row = journal.candidate(row["parent"])
        parent_program = _folded(parent_row)
        before = parent_program.source() if parent_program else parent_row["source"]
        diff = "".join(
            difflib.unified_diff(before.splitlines(True), source.splitlines(True),
                                 f"candidate {parent_row['id']}", f"candidate {ident}")
        )  # fmt: skip
        parent = parent_row["id"]
    return {
        "id": row["id"],
        "kind": row["kind"],
        "name": row["name"],
        "generation": row["generation"],
        "mutation": row["mutation"],
        "status": row["status"],
        "fitness": row["fitness"],
        "multiplier": row["multiplier"],
        "cache_of": row["cache_of"],
        "reason": row["reason"],
        "statements": row["statements"],
        "redundant": row["redundant"],
        "source": source,
        "simplified": simplified,
        "parent": parent,
        "diff": diff,
        "lineage": [
            {"id": c, "mutation": m, "fitness": f} for c, m, f in report.lineage(journal, ident)
        ],
    }


def _folded(row):
    try:
        return folded_program(row)
    except (ValueError, KeyError, JournalError):  # a source this optforge cannot parse
        return None


def funnel_table(journal: Journal) -> list[dict[str, Any]]:
    """One row per funnel stage: the task, how many cleared the bar, which went on."""
    return [
        {"task": d.get("task"), "passed": d.get("passed"), "went_on": d.get("went_on")}
        for _, d in journal.events("stage")
    ]


def meta_table(journal: Journal, config, finalists: list[dict]) -> dict[str, Any]:
    """``optforge show``'s meta-validation table: finalists (and their simplified forms)
    against the tuned baselines, mean ± std over the meta seeds, per task."""
    base = report.baseline_scores(journal, config) if finalists else {}
    rows = []
    for task in config.funnel.meta:
        for i, f in enumerate(finalists, 1):
            rows.append({"task": task, "program": f"finalist {i} (candidate {f['candidate']})",
                         "fitness": _score(f["meta"].get(task)),
                         "simplified": _score(f["simplified_meta"].get(task))})  # fmt: skip
        for name, score in base.get(task, {}).items():
            rows.append({"task": task, "program": f"tuned {name}",
                         "fitness": _score({"mean": score.mean, "std": score.std}),
                         "simplified": None})  # fmt: skip
    return {"seeds": list(config.funnel.meta_seeds), "rows": rows}


def _score(s: dict | None) -> dict | None:
    if not s:
        return None
    std = s.get("std")
    return {"mean": s.get("mean"), "std": None if std is None or math.isnan(std) else std}
