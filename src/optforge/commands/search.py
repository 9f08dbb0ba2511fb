"""`optforge search` (discover optimizers) and `optforge show JOURNAL` (what a search found)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.syntax import Syntax

from optforge.commands.common import positive_float, positive_int, print_table

# The budget of a search bounded by --minutes alone: the clock stops it (its journal then
# records the candidates generated as its budget).
UNTIL_TIME = 10**9


def add_search_commands(commands) -> None:
    search = commands.add_parser(
        "search", help="discover optimizers: regularized evolution from AdamW, then the funnel"
    )
    search.add_argument("--task", default="fmnist-vit-a", help="the task candidates train on")
    search.add_argument(
        "--budget",
        type=positive_int,
        help="candidates to generate, cache hits included (default 1000, or no limit with "
        "--minutes; with --resume, a new budget that extends the search)",
    )
    search.add_argument("--seed", type=int, default=0)
    search.add_argument(
        "--journal",
        metavar="FILE",
        help="the SQLite journal (default runs/TASK-ALGORITHM-seedS.db)",
    )
    search.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="JOURNAL",
        help="continue the search in JOURNAL (or --journal) where it stopped",
    )
    search.add_argument(
        "--executor",
        choices=("inprocess", "local", "ray"),
        help="where evaluations run (default: inprocess for 1 worker, else local)",
    )
    search.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="evaluation jobs in parallel (processes or Ray actors)",
    )
    search.add_argument("--address", help="a Ray cluster address (default: start a local Ray)")
    search.add_argument(
        "--device",
        choices=("cpu", "cuda", "auto"),
        default="cpu",
        help="where candidates train (auto: CUDA when a GPU is visible; with Ray: when "
        "--gpus-per-worker > 0)",
    )
    search.add_argument(
        "--cpus-per-worker", type=positive_float, default=1.0, help="CPUs each Ray actor asks for"
    )
    search.add_argument(
        "--gpus-per-worker",
        type=float,
        default=0.0,
        help="GPUs each Ray actor asks for (fractions share a GPU, e.g. 0.25: 4 actors on one)",
    )
    search.add_argument(
        "--algorithm",
        choices=("evolution", "random", "constants"),
        default="evolution",
        help="evolution, or the paper's baselines: random search, AdamW's constants only",
    )
    search.add_argument("--population", type=positive_int, default=100)
    search.add_argument("--tournament", type=positive_int, default=5)
    search.add_argument(
        "--batch",
        type=positive_int,
        default=32,
        help="children per generation; their trainings run as one batch",
    )
    search.add_argument(
        "--runs", type=positive_int, default=1, help="independent populations from the warm start"
    )
    search.add_argument(
        "--restart-after",
        type=positive_int,
        help="restart from the best program after N candidates without progress",
    )
    search.add_argument(
        "--rescore-after",
        type=positive_int,
        help="re-train a cached program with a new seed every N cache hits",
    )
    search.add_argument(
        "--warm-start",
        metavar="PROGRAM",
        help="initial program: a file or library name (default: the paper's AdamW)",
    )
    search.add_argument(
        "--max-length",
        type=positive_int,
        default=20,
        help="no insertions beyond this many statements",
    )
    search.add_argument(
        "--language",
        choices=("elementwise", "matrix"),
        default="matrix",
        help="what mutations may write: the paper's elementwise language, or that plus "
        "matrix operations (orthogonalize, row/column statistics) and per-tensor inputs "
        "(hidden, aspect, step) (default: matrix)",
    )
    search.add_argument(
        "--time-limit",
        type=float,
        default=120.0,
        help="seconds per evaluation batch before its candidates fail",
    )
    search.add_argument(
        "--stages",
        help="funnel stages after the search, comma-separated "
        "(default: the task's tier B; add tier C explicitly)",
    )
    search.add_argument(
        "--meta", help="meta-validation tasks, comma-separated (default: the task's)"
    )
    search.add_argument(
        "--compile",
        dest="compiled",
        action="store_true",
        help="train candidates through a torch.compile'd forward/backward, compiled once per "
        "worker: 1.4x faster on the LM proxy over 1,500 candidates, not worth it on the ViT "
        "proxy for short searches (docs/search.md)",
    )
    search.add_argument(
        "--fitness",
        metavar="DEFINITION",
        help="the fitness: TASK[+TASK][;mult=1/3,1,3][;seeds=N][;norm][;hurdle=X][;batch=N] "
        "(default: "
        "the task's registered fitness, else its raw metric at x1, one seed; docs/search.md)",
    )
    search.add_argument("--finalists", type=positive_int, default=3)
    search.add_argument(
        "--meta-seeds",
        type=positive_int,
        default=3,
        help="seeds each finalist and baseline is meta-validated on (200, 201, ...)",
    )
    search.add_argument(
        "--minutes",
        type=positive_float,
        help="stop generating after this many minutes of searching (the budget becomes the "
        "candidates generated by then), then run the funnel",
    )
    search.add_argument(
        "--no-funnel", dest="funnel", action="store_false", help="stop after the search"
    )
    search.add_argument("--plot", metavar="PNG", help="fitness plot (default: next to the journal)")
    search.set_defaults(handler=_search, default_of=search.get_default)


def _search(args: argparse.Namespace, console: Console) -> int:
    from optforge.program import ProgramError
    from optforge.search.evolution import Search, open_journal
    from optforge.search.executors import make_executor
    from optforge.search.funnel import run_funnel
    from optforge.search.journal import JournalError
    from optforge.search.report import plot, shaped_use

    path = _journal_path(args)
    try:
        config = None if args.resume else _config(args, console)
        if config is not None:
            _preflight(args, config)  # before the journal exists: a rerun starts afresh
        journal, config = open_journal(path, config, resume=bool(args.resume))
        if args.resume:
            _check_unchanged(args, config, console)
            _preflight(args, config, journal)
        if args.resume and args.budget is not None and args.budget != config.budget:
            config = _with_budget(journal, config, args.budget)
    except (ValueError, KeyError, JournalError, ProgramError) as e:
        message = e.args[0] if isinstance(e, KeyError) else str(e)
        console.print(f"[red]error:[/red] {message}", highlight=False)
        return 2
    name = args.executor or ("inprocess" if config.workers == 1 else "local")
    try:
        executor = make_executor(name, config.workers, args.address, args.device,
                                 args.cpus_per_worker, args.gpus_per_worker)  # fmt: skip
    except ValueError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        return 2
    console.print(
        f"searching {config.task} with {config.algorithm} in the {config.mutation.language} "
        f"language (seed {config.seed}, budget {config.budget}, {config.workers} x {name}); "
        f"journal {path}",
        highlight=False,
    )
    try:
        seconds = None if args.minutes is None else 60 * args.minutes
        progress = _run_live(Search, journal, config, executor, console, seconds)
        if progress.generated < config.budget:  # stopped by --minutes: that is its budget
            config = _with_budget(journal, config, progress.generated)
        console.print()
        console.print(
            f"{progress.generated} candidates in {progress.elapsed:.0f} s "
            f"({progress.per_second:.1f}/s), {progress.trained} trained, cache hit "
            f"rate {100 * progress.hit_rate:.0f}%",
            highlight=False,
        )
        if config.mutation.language == "matrix":
            children, shaped, best = shaped_use(journal)
            console.print(
                f"matrix language: {shaped} of {children} children use a matrix operation or "
                f"a per-tensor input" + ("" if best is None else f" (best fitness {best:.4f})"),
                highlight=False,
            )
        png = plot(journal, args.plot or Path(path).with_suffix(".png"))
        console.print(f"plot: {png}", highlight=False)
        if args.funnel and (config.funnel.stages or config.funnel.meta):
            finalists = run_funnel(
                journal, executor, config, log=lambda m: console.print(m, highlight=False)
            )
            _print_finalists(console, journal, config, finalists)
    finally:
        executor.close()
        journal.close()
    return 0


def _preflight(args, config, journal=None) -> None:
    """What the search will need later, checked before it starts: Ray for ``--executor
    ray``, matplotlib for the fitness plot, and the data of every task it trains on (missing,
    each would fail every candidate in the workers, or the run at its end).
    ``MissingExtra`` / ``DatasetMissing`` end the command with one line (``cli.main``)."""
    from optforge._extras import check
    from optforge.search.executors import RAY
    from optforge.tasks.registry import check_data

    try:
        if args.executor == "ray":
            check("ray", **RAY)
        check("matplotlib", "search", "optforge search (its fitness plot)")
        check_data(config.scoring.tasks)
        if args.funnel:
            check_data((*config.funnel.stages, *config.funnel.meta), "the funnel's task",
                       "; --no-funnel skips the funnel")  # fmt: skip
    except BaseException:
        if journal is not None:
            journal.close()
        raise


def _journal_path(args) -> str:
    if isinstance(args.resume, str):
        return args.resume
    if args.journal:
        return args.journal
    Path("runs").mkdir(exist_ok=True)
    return f"runs/{args.task}-{args.algorithm}-seed{args.seed}.db"


def _config(args, console):
    from optforge.commands.common import load_program
    from optforge.search.config import (
        FunnelConfig,
        SearchConfig,
        default_funnel,
        default_warm_start,
    )
    from optforge.search.fitness import parse_definition
    from optforge.search.mutation import MutationConfig

    funnel = default_funnel(args.task)
    stages = funnel.stages if args.stages is None else _names(args.stages)
    meta = funnel.meta if args.meta is None else _names(args.meta)
    warm = {}
    if args.warm_start:
        program = load_program(args.warm_start, console)
        if program is None:
            raise ValueError(f"cannot use --warm-start {args.warm_start!r}")
        warm = {"warm_start": program.source()}
    fitness = {"fitness": parse_definition(args.fitness)} if args.fitness else {}
    config = SearchConfig(
        task=args.task, budget=args.budget or (UNTIL_TIME if args.minutes else 1000),
        seed=args.seed, algorithm=args.algorithm,
        population=args.population, tournament=args.tournament, batch=args.batch,
        workers=args.workers, runs=args.runs, restart_after=args.restart_after,
        rescore_after=args.rescore_after, time_limit=args.time_limit, compiled=args.compiled,
        mutation=MutationConfig(max_length=args.max_length, language=args.language,
                                constants_only=args.algorithm == "constants"),
        funnel=FunnelConfig(stages=stages, meta=meta, finalists=args.finalists,
                            meta_seeds=tuple(range(200, 200 + args.meta_seeds))), **warm,
        **fitness,
    )  # fmt: skip
    if warm:
        return config
    return dataclasses.replace(config, warm_start=default_warm_start(config.scoring.tasks))


# the flags that make up a search's configuration, and where the configuration keeps each
CONFIGURED = {
    "task": lambda c: c.task, "seed": lambda c: c.seed, "algorithm": lambda c: c.algorithm,
    "population": lambda c: c.population, "tournament": lambda c: c.tournament,
    "batch": lambda c: c.batch, "workers": lambda c: c.workers, "runs": lambda c: c.runs,
    "restart_after": lambda c: c.restart_after, "rescore_after": lambda c: c.rescore_after,
    "warm_start": lambda c: c.warm_start, "max_length": lambda c: c.mutation.max_length,
    "language": lambda c: c.mutation.language,
    "time_limit": lambda c: c.time_limit, "stages": lambda c: c.funnel.stages,
    "meta": lambda c: c.funnel.meta, "compiled": lambda c: c.compiled,
    "finalists": lambda c: c.funnel.finalists, "fitness": lambda c: c.fitness,
    "meta_seeds": lambda c: c.funnel.meta_seeds,
}  # fmt: skip


def _check_unchanged(args, config, console) -> None:
    """A resumed search keeps the configuration it started with (its trajectory depends on
    it); a flag given with another value is an error, not silently ignored."""
    given = [d for d in CONFIGURED if getattr(args, d) != args.default_of(d)]
    if not given:
        return
    asked = _config(args, console)
    flag = {"compiled": "compile"}
    changed = [f"--{flag.get(d, d).replace('_', '-')} {new!r} (journal: {old!r})" for d in given
               if (new := CONFIGURED[d](asked)) != (old := CONFIGURED[d](config))]  # fmt: skip
    if changed:
        raise ValueError(
            "a resumed search keeps the configuration it started with; only --budget can "
            f"change. Differs: {'; '.join(changed)}. Start a new journal to change these."
        )


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def _with_budget(journal, config, budget: int):
    """Resuming with a larger budget extends the search; the trajectory so far is unchanged."""
    import dataclasses

    config = dataclasses.replace(config, budget=budget)
    with journal.transaction():
        journal.set_meta("config", config.to_json())
    return config


def _run_live(search_cls, journal, config, executor, console, seconds=None):
    bar = Progress(
        TextColumn("candidates"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=console,
    )
    task = bar.add_task("search", total=None if config.budget == UNTIL_TIME else config.budget,
                        rate="")  # fmt: skip
    best = Panel("waiting for the warm start", title="best program")

    def show(p) -> None:
        nonlocal best
        base = ", ".join(f"{k} {v:.4f}" for k, v in p.baselines.items() if v is not None)
        fitness = "-" if p.best_fitness is None else f"{p.best_fitness:.4f}"
        bar.update(
            task,
            completed=p.generated,
            rate=f"{p.per_second:.1f}/s, hit {100 * p.hit_rate:.0f}%, trained "
            f"{p.trained}, failed {p.failed}",
        )
        if p.best_source:
            best = Panel(
                Syntax(p.best_source, "python", theme="ansi_dark"),
                title=f"best {fitness} (tuned {base})",
                title_align="left",
            )
        live.update(Group(bar, best))

    with Live(Group(bar, best), console=console, refresh_per_second=4, transient=False) as live:
        search = search_cls(journal, config, executor, on_progress=show)
        progress = search.run(seconds)
        show(progress)
    return progress


def _print_finalists(console, journal, config, finalists) -> None:
    from optforge.search.funnel import baseline_scores

    base = baseline_scores(journal, config)
    for i, f in enumerate(finalists, 1):
        flag = " (below the best tuned baseline)" if f.below else ""
        console.print(
            Panel(
                Syntax(f.simplified_source, "python", theme="ansi_dark"),
                title=f"finalist {i}: candidate {f.candidate}, simplified as {f.simplified}{flag}",
                title_align="left",
            )
        )
    rows = []
    for task in config.funnel.meta:
        for i, f in enumerate(finalists, 1):
            rows.append([task, f"finalist {i}", str(f.meta[task]), str(f.simplified_meta[task])])
        for name, score in base.get(task, {}).items():
            rows.append([task, f"tuned {name}", str(score), ""])
    columns = ["meta-validation task", "program", "fitness (mean ± std)", "simplified"]
    print_table(
        console,
        f"meta-validation over seeds {list(config.funnel.meta_seeds)}",
        columns,
        rows,
        markdown=False,
    )


__all__ = ["add_search_commands"]
