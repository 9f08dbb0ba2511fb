"""`optforge show JOURNAL` and `optforge compare JOURNAL...`: reading what searches found."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.syntax import Syntax

from optforge._extras import MissingExtra
from optforge.commands.common import print_table


def add_compare_command(commands) -> None:
    compare = commands.add_parser(
        "compare", help="searches side by side: seeds, algorithms, meta-validation vs baselines"
    )
    compare.add_argument("journals", nargs="+", metavar="JOURNAL")
    compare.add_argument("--markdown", action="store_true", help="print Markdown tables")
    compare.set_defaults(handler=_compare)


def _compare(args: argparse.Namespace, console: Console) -> int:
    from optforge.search.evolution import BASELINES
    from optforge.search.journal import is_journal
    from optforge.search.report import family, state_bytes, summarize

    missing = [j for j in args.journals if not is_journal(j)]
    if missing:
        console.print(f"[red]error:[/red] not search journals: {', '.join(missing)}",
                      highlight=False)  # fmt: skip
        return 2
    runs = [summarize(j) for j in args.journals]
    tasks = sorted({t for r in runs for t in r.meta} | {t for r in runs for t in r.baselines})
    rows = []
    for r in runs:
        best = "-" if r.best_search is None else f"{r.best_search:.4f}"
        cells = [Path(r.path).name, r.algorithm, str(r.seed), str(r.generated),
                 f"{r.seconds / 60:.1f}", _rate(r.generated, r.seconds),
                 _rate(r.trained, r.seconds), f"{100 * r.hit_rate:.0f}%",
                 f"{100 * r.redundant_fraction:.0f}%", best]  # fmt: skip
        for task in tasks:
            found = r.simplified_meta.get(task) or r.meta.get(task)
            base = r.baselines.get(task, {})
            without_muon = {n: v for n, v in base.items() if n != "muon"}
            cells += [_pm(r.meta.get(task)), _pm(r.simplified_meta.get(task)),
                      _versus(found, base, base), _versus(found, without_muon, base)]  # fmt: skip
        cells.append(", ".join(r.traits) or "-")
        cells += [family(r.program), f"{state_bytes(r.program)}"] if r.program else ["-", "-"]
        rows.append(cells)
    columns = ["journal", "algorithm", "seed", "candidates", "minutes", "generated/s",
               "trained/s", "hits", "redundant", "best search"]  # fmt: skip
    for task in tasks:
        columns += [f"{task}: finalist", "simplified", "vs best baseline", "vs best of AdamW, Lion"]
    columns += ["simplified uses", "family", "state bytes/param"]
    print_table(console, "searches", columns, rows, args.markdown, numeric=False)
    base_rows = []
    for task in tasks:
        for name in BASELINES:
            values = [r.baselines.get(task, {}).get(name) for r in runs]
            values = [v for v in values if v and v[0] is not None]
            if values:
                base_rows.append([task, f"tuned {name}", _pm(values[0])])
    if base_rows:
        print_table(
            console,
            "baselines (meta-validation seeds of the funnel)",
            ["task", "optimizer", "fitness"],
            base_rows,
            args.markdown,
            numeric=False,
        )
    if args.markdown:
        for r in runs:
            if r.program:
                print(f"\n{Path(r.path).name}:\n\n```python\n{r.program}\n```")
    return 0


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:.1f}" if seconds > 0 else "-"


def _pm(value) -> str:
    if not value:
        return "-"
    return "failed" if value[0] is None else f"{value[0]:.4f} ± {value[1]:.4f}"


def _versus(found, baselines: dict, noise_from: dict) -> str:
    """The margin over the best of ``baselines`` (by mean) in units of sigma, the largest seed
    std of the tuned baselines in ``noise_from``, as the discovery's targets count it."""
    scored = {n: v for n, v in baselines.items() if v and v[0] is not None}
    if not found or not scored:
        return "-"
    if found[0] is None:
        return "failed"
    name, (best, _) = max(scored.items(), key=lambda kv: kv[1][0])
    sigma = max(v[1] for v in noise_from.values() if v and v[0] is not None)
    gap = found[0] - best
    if not sigma > 0:
        return f"{gap:+.4f} vs {name}"
    return f"{gap / sigma:+.1f} sigma vs {name}"


def show_journal(path: str, console: Console, top: int = 10, plot_path: str | None = None) -> int:
    from optforge.search import report
    from optforge.search.journal import Journal

    journal = Journal(path)
    try:
        config = report.config_of(journal)
        stats = report.statistics_of(journal)
        console.print(
            f"[bold]{path}[/bold]: {config.algorithm} on {config.task}, seed "
            f"{config.seed}, budget {config.budget}",
            highlight=False,
        )
        console.print(
            f"{stats.generated} generated ({stats.generated_per_second:.2f}/s), {stats.trained} "
            f"trained ({stats.trained_per_second:.2f}/s), cache hit rate "
            f"{100 * stats.hit_rate:.1f}%, redundant statements "
            f"{100 * stats.redundant_fraction:.1f}%, restarts {stats.restarts}",
            highlight=False,
        )
        if stats.failures:
            console.print(
                "failures: " + ", ".join(f"{k} x{v}" for k, v in stats.failures.items()),
                highlight=False,
            )
        base = report.baselines(journal, config.task)
        console.print(
            "tuned baselines on the search task: "
            + ", ".join(f"{k} {v:.4f}" for k, v in base.items() if v is not None),
            highlight=False,
        )
        board = report.leaderboard(journal, top)
        rows = [
            [str(i), str(c), f"{f:.4f}", _one_line(src)] for i, (c, f, src) in enumerate(board, 1)
        ]
        print_table(
            console,
            "leaderboard (distinct behaviours)",
            ["#", "candidate", "fitness", "program (live statements)"],
            rows,
            markdown=False,
            numeric=False,
        )
        if board:
            best = board[0][0]
            console.print(f"[bold]lineage of candidate {best}[/bold]")
            for ident, mutation, fitness in report.lineage(journal, best):
                shown = "-" if fitness is None else f"{fitness:.4f}"
                console.print(
                    f"  {ident:>6}  {shown:>8}  {mutation or 'warm start'}", highlight=False
                )
            console.print(Syntax(board[0][2], "python", theme="ansi_dark"))
        try:
            png = report.plot(journal, plot_path or Path(path).with_suffix(".png"))
            console.print(f"plot: {png}", highlight=False)
        except MissingExtra as e:  # the report above stands without it
            console.print(f"plot: not written; {escape(str(e))}", highlight=False)
        finalists = report.finalists(journal)
        for i, f in enumerate(finalists, 1):
            console.print(
                Panel(
                    Syntax(f["simplified_source"], "python", theme="ansi_dark"),
                    title=f"finalist {i} (candidate {f['candidate']}, simplified "
                    f"{f['simplified']})",
                    title_align="left",
                )
            )
        if finalists:
            _meta_table(console, config, finalists, report.baseline_scores(journal, config))
    finally:
        journal.close()
    return 0


def _meta_table(console, config, finalists, base) -> None:
    def fmt(s) -> str:
        return "failed" if s["mean"] is None else f"{s['mean']:.4f} ± {s['std']:.4f}"

    rows = []
    for task in config.funnel.meta:
        for i, f in enumerate(finalists, 1):
            rows.append(
                [task, f"finalist {i}", fmt(f["meta"][task]), fmt(f["simplified_meta"][task])]
            )
        for name, score in base.get(task, {}).items():
            rows.append([task, f"tuned {name}", str(score), ""])
    print_table(
        console,
        f"meta-validation over seeds {list(config.funnel.meta_seeds)}",
        ["task", "program", "fitness (mean ± std)", "simplified"],
        rows,
        markdown=False,
    )


def _one_line(source: str) -> str:
    from optforge.program import parse
    from optforge.program.analysis import analyze

    program = parse(source)
    redundant = analyze(program).redundant
    body = [s.source() for i, s in enumerate(program.statements) if i not in redundant]
    return "; ".join(body)


__all__ = ["add_compare_command", "show_journal"]
