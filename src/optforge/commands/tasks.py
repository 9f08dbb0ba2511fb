"""`optforge tasks / eval / tune`: fitness tasks and their baselines."""

from __future__ import annotations

import argparse

from rich.console import Console

from optforge.commands.common import load_program, positive_int, print_table

DEVICE_HELP = "where the candidates train (auto: CUDA when a GPU is visible)"


def add_task_commands(commands) -> None:
    tasks = commands.add_parser("tasks", help="the fitness tasks: tiers, sizes, steps, metric")
    tasks.add_argument("--markdown", action="store_true", help="print a Markdown table")
    tasks.add_argument(
        "--measure", action="store_true", help="also time one evaluation of each task (~1 min)"
    )
    tasks.set_defaults(handler=_tasks)

    ev = commands.add_parser("eval", help="train a program on a task and report its fitness")
    ev.add_argument("program", metavar="PROGRAM",
                    help="a program file or library name, or baseline:NAME for the task's tuned "
                         "sgd/momentum/adamw/lion")  # fmt: skip
    ev.add_argument("--task", required=True, help="a task name (see `optforge tasks`)")
    ev.add_argument("--seeds", type=positive_int, default=3)
    ev.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu", help=DEVICE_HELP)
    ev.set_defaults(handler=_eval)

    tune = commands.add_parser("tune", help="grid-search the library baselines on a task")
    tune.add_argument("--task", required=True)
    tune.add_argument("--optimizers", default="sgd,momentum,adamw,lion")
    tune.add_argument("--seeds", type=positive_int, default=3)
    tune.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu", help=DEVICE_HELP)
    tune.add_argument("--markdown", action="store_true", help="print Markdown tables")
    tune.add_argument(
        "--wide",
        action="store_true",
        help="wide half-decade grids with two beta pairs for AdamW/Lion (meta-validation tasks)",
    )
    tune.add_argument(
        "--held-out-seeds",
        type=positive_int,
        help="fresh seeds the best setting is re-measured on (default: --seeds)",
    )
    tune.add_argument(
        "--extend",
        type=int,
        default=2,
        help="grow the step-size grid past an end that holds the best, up to N times (default 2)",
    )
    tune.set_defaults(handler=_tune)


def _device(name: str, console: Console) -> str | None:
    from optforge.search.executors import device_unavailable, resolve_device

    device = resolve_device(name)
    if reason := device_unavailable(device):
        console.print(f"[red]error:[/red] {reason}", highlight=False)
        return None
    return device


def _task(name: str, console: Console):
    from optforge.tasks import registry

    try:
        return registry.get(name)
    except KeyError as e:
        console.print(f"[red]error:[/red] {e.args[0]}", highlight=False)
        return None


def _tasks(args: argparse.Namespace, console: Console) -> int:
    from optforge.bench.evaluation import seconds_per_evaluation
    from optforge.tasks.registry import TASKS

    columns = ["task", "tier", "data", "model", "params", "steps", "batch", "metric", "baselines"]
    if args.measure:
        columns.append("s/eval")
    rows = []
    for t in TASKS.values():
        model = t.model()
        config = ", ".join(f"{k}={v}" for k, v in t.config)
        tuned = ", ".join(n for n, _ in t.baselines) or "-"
        rows.append([t.name, t.tier, t.dataset, f"{t.architecture}({config})",
                     f"{model.num_params:,}", str(t.steps), str(t.batch), t.metric,
                     tuned])  # fmt: skip
        if args.measure:
            seconds, estimated = seconds_per_evaluation(t)
            rows[-1].append(f"{seconds:.1f}" + (" (est.)" if estimated else ""))
    print_table(console, f"{len(rows)} tasks", columns, rows, args.markdown, numeric=False)
    return 0


def _eval(args: argparse.Namespace, console: Console) -> int:
    from optforge.tasks.sweep import Summary, evaluate_many

    task, device = _task(args.task, console), _device(args.device, console)
    if task is None or device is None:
        return 2
    if args.program.startswith("baseline:"):
        try:
            program = task.baseline(args.program.split(":", 1)[1])
        except KeyError as e:
            console.print(f"[red]error:[/red] {e.args[0]}", highlight=False)
            return 2
    else:
        program = load_program(args.program, console)
        if program is None:
            return 2
    results = evaluate_many(task, [(program, s) for s in range(args.seeds)], device=device)
    for seed, r in enumerate(results):
        value = f"{r.fitness:.4f}" if not r.failed else f"failed: {r.reason}"
        console.print(f"seed {seed}: {value}  (final train loss {r.final_loss:.3f})",
                      highlight=False)  # fmt: skip
    summary = Summary.of(results)
    console.print(f"{task.name} {task.metric}: {summary.text(4)} over {args.seeds} seeds",
                  highlight=False)  # fmt: skip
    return 0 if summary.mean is not None else 1


BETAS = "betas (muon: its AdamW part)"


def _tune(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import Progress

    from optforge.tasks.sweep import GRIDS, HELD_OUT_SEED, WIDE_GRIDS, tune

    task, device = _task(args.task, console), _device(args.device, console)
    if task is None or device is None:
        return 2
    grids = WIDE_GRIDS if args.wide else GRIDS
    names = [n.strip() for n in args.optimizers.split(",") if n.strip()]
    unknown = [n for n in names if n not in grids]
    if unknown:
        console.print(f"[red]error:[/red] unknown optimizers {unknown} (known: {', '.join(grids)})")
        return 2
    with Progress(console=console, transient=True) as bar:
        job = bar.add_task(f"tuning on {task.name}", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(job, completed=done, total=total)

        tuned = tune(task, names, args.seeds, progress=progress, grids=grids,
                     held_out_seeds=args.held_out_seeds, extend=args.extend,
                     device=device)  # fmt: skip
    rows = []
    for t in tuned:
        for config, summary in t.grid.items():
            mark = "best" if config == t.best else ""
            rows.append([t.optimizer, *_setting(config), summary.text(), mark])
    print_table(
        console,
        f"{task.name}: {task.metric}, seeds 0-{args.seeds - 1}",
        ["optimizer", "step size", "weight decay", BETAS, "fitness", ""],
        rows,
        args.markdown,
    )
    n = args.held_out_seeds or args.seeds
    held = [[t.optimizer, *(_setting(t.best) if t.best else ["-"] * 3),
             t.held_out.text(4) if t.held_out else "all failed",
             "yes" if t.on_edge else ""] for t in tuned]  # fmt: skip
    if args.markdown:
        print()
    print_table(
        console,
        f"best, re-measured on fresh seeds {HELD_OUT_SEED}-{HELD_OUT_SEED + n - 1}",
        ["optimizer", "step size", "weight decay", BETAS, "fitness", "on grid edge"],
        held,
        args.markdown,
    )
    return 0


def _setting(config: tuple[float, ...]) -> list[str]:
    eta, wd, *betas = config
    return [f"{eta:.3g}", f"{wd:g}", ", ".join(f"{b:g}" for b in betas) or "default"]
