"""The ``optforge`` command line: argparse for parsing, rich for what people read."""

from __future__ import annotations

import argparse
import math
import sys

from rich.console import Console
from rich.table import Table

from optforge.bench.tables import markdown_table


def _positive_count(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (e.g. 20e6)") from None
    if not (1 <= value < math.inf):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 1")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optforge",
        description="Discover optimizers by evolutionary program search; benchmark Lion.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    bench = commands.add_parser("bench", help="measure optimizers against the anchors")
    benches = bench.add_subparsers(dest="bench", metavar="BENCH", required=True)
    step = benches.add_parser(
        "step",
        help="optimizer step time: Lion paths vs torch AdamW and other Lions",
        description="Time opt.step() of every Lion path, torch AdamW (foreach, fused), timm "
        "and lion-pytorch Lions when installed, and a compiled flat Lion (the limit), "
        "round-robin in one run.",
    )
    step.add_argument("--params", type=_positive_count, default=20e6, help="total (20e6)")
    step.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    step.add_argument("--iters", type=_positive_int, default=10, help="timed steps per round")
    step.add_argument("--rounds", type=_positive_int, default=5, help="round-robin rounds")
    step.add_argument("--threads", type=_positive_int, help="torch threads (default: torch's)")
    step.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    step.add_argument("--markdown", action="store_true", help="print a Markdown table")
    step.add_argument(
        "--no-limit", action="store_true", help="skip the torch.compile'd flat Lion (~20 s)"
    )
    step.add_argument(
        "--compiled",
        action="store_true",
        help="add torch.compile(opt.step) of timm Lion and torch AdamW (~1 min to compile)",
    )
    step.add_argument(
        "--no-first-step", action="store_true", help="skip the fresh-process first-step timing"
    )
    step.set_defaults(handler=_bench_step)

    show = benches.add_parser("show", help="print the table of a saved `bench step --json` file")
    show.add_argument("file", metavar="FILE")
    show.add_argument("--markdown", action="store_true", help="print a Markdown table")
    show.set_defaults(handler=_bench_show)

    summary = benches.add_parser(
        "summary",
        help="ratios across several `bench step --json` results (min-max over runs)",
    )
    summary.add_argument("files", nargs="+", metavar="FILE", help="JSON files of bench step")
    summary.add_argument("--markdown", action="store_true", help="print a Markdown table")
    summary.set_defaults(handler=_bench_summary)

    prog = benches.add_parser(
        "program",
        help="program language: analyze/fingerprint cost, fingerprint collisions, simplify",
    )
    prog.add_argument("--programs", type=_positive_int, default=10_000, help="random programs")
    prog.add_argument("--seed", type=int, default=0)
    prog.set_defaults(handler=_bench_program)

    ev = benches.add_parser("eval", help="fitness evaluations per second, single and batched")
    ev.add_argument("--tiers", default="A,B,meta", help="comma-separated tiers (A,B,C,meta,test)")
    ev.add_argument("--k", type=_positive_int, default=32, help="candidates per batch")
    ev.set_defaults(handler=_bench_eval)

    _add_program_commands(commands)
    _add_task_commands(commands)
    return parser


def _add_task_commands(commands) -> None:
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
    ev.add_argument("--seeds", type=_positive_int, default=3)
    ev.set_defaults(handler=_eval)

    tune = commands.add_parser("tune", help="grid-search the library baselines on a task")
    tune.add_argument("--task", required=True)
    tune.add_argument("--optimizers", default="sgd,momentum,adamw,lion")
    tune.add_argument("--seeds", type=_positive_int, default=3)
    tune.add_argument("--markdown", action="store_true", help="print Markdown tables")
    tune.set_defaults(handler=_tune)


def _add_program_commands(commands) -> None:
    spec_help = "a program file (text or .json) or a library name (lion, adamw, ...)"
    show = commands.add_parser(
        "show", help="a program's source with its analysis: redundant lines, hashes, types"
    )
    show.add_argument("program", metavar="PROGRAM", help=spec_help)
    show.set_defaults(handler=_show)

    simplify = commands.add_parser(
        "simplify", help="print the automatically simplified, canonical form of a program"
    )
    simplify.add_argument("program", metavar="PROGRAM", help=spec_help)
    simplify.add_argument("-o", "--output", metavar="FILE", help="write it to FILE")
    simplify.set_defaults(handler=_simplify)

    export = commands.add_parser(
        "export", help="write a program as a standalone torch optimizer module"
    )
    export.add_argument("program", metavar="PROGRAM", help=spec_help)
    export.add_argument("-o", "--output", metavar="FILE", required=True, help="module path")
    export.add_argument("--name", default="ExportedOptimizer", help="the optimizer class name")
    export.set_defaults(handler=_export)

    prims = commands.add_parser("primitives", help="the primitive table of the program language")
    prims.add_argument("--markdown", action="store_true", help="print a Markdown table")
    prims.set_defaults(handler=_primitives)


def _bench_step(args: argparse.Namespace, console: Console) -> int:
    import torch

    from optforge.bench import step as bench

    if args.device == "cuda" and not torch.cuda.is_available():
        console.print("[red]--device cuda: no CUDA device is available to torch here[/red]")
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    with console.status("benchmarking") as status:
        report = bench.run(
            params=args.params,
            device=args.device,
            iters=args.iters,
            rounds=args.rounds,
            compiled_limit=not args.no_limit,
            compiled_steps=args.compiled,
            first_step=not args.no_first_step,
            progress=lambda text: status.update(f"benchmarking: {text}"),
        )
    _print_report(report, args.markdown, console)
    if args.json:
        bench.write_json(report, args.json)
        console.print(f"wrote {args.json}")
    return 0


def _print_report(report, markdown: bool, console: Console) -> None:
    from optforge.bench import step as bench

    _print_table(console, bench.header(report), bench.COLUMNS, bench.table_rows(report), markdown)


def _read_json(path: str, console: Console) -> dict | None:
    import json

    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        console.print(f"[red]cannot read {path}: {e}[/red]")
        return None


def _bench_show(args: argparse.Namespace, console: Console) -> int:
    from optforge.bench import step as bench

    data = _read_json(args.file, console)
    if data is None:
        return 2
    _print_report(bench.Report.from_json(data), args.markdown, console)
    return 0


def _bench_summary(args: argparse.Namespace, console: Console) -> int:
    from optforge.bench import step as bench

    runs = [_read_json(path, console) for path in args.files]
    if any(run is None for run in runs):
        return 2
    rows = bench.summarize(runs)
    _print_table(console, f"{len(runs)} runs", bench.SUMMARY_COLUMNS, rows, args.markdown)
    return 0


def _bench_program(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import Progress

    from optforge.bench import program as bench

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("fingerprinting and simplifying", total=args.programs)
        result = bench.run(
            args.programs, args.seed, progress=lambda done, total: bar.update(task, completed=done)
        )
    for line in bench.lines(result):
        console.print(line, highlight=False)
    return 0


def _primitives(args: argparse.Namespace, console: Console) -> int:
    from optforge.program.primitives import PRIMITIVES

    columns = ["name", "written", "arity", "shape rule", "torch", "domain"]
    rows = []
    for p in PRIMITIVES.values():
        if p.kind == "constant":
            written = p.name
        elif p.symbol:
            written = f"-{p.params[0]}" if p.arity == 1 else f"x {p.symbol} y"
        elif p.name == "identity":
            written = "x"
        else:
            written = f"{p.name}({', '.join(p.params)})"
        rows.append([p.name, written, str(p.arity), p.kind, p.code, p.domain])
    if args.markdown:  # names as written and torch code as code
        rows = [[f"`{c}`" if i in (1, 4) else c for i, c in enumerate(row)] for row in rows]
    _print_table(console, f"{len(rows)} primitives", columns, rows, args.markdown, numeric=False)
    return 0


def _print_table(console, title, columns, rows, markdown: bool, numeric: bool = True) -> None:
    """Markdown text (for docs) or a rich table; numeric tables right-align all but column 0."""
    if markdown:
        print(f"{title}\n\n{markdown_table(columns, rows)}")
        return
    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        right = numeric and i > 0
        table.add_column(col, justify="right" if right else "left", no_wrap=numeric)
    for row in rows:
        table.add_row(*row)
    console.print(table)


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
    _print_table(console, f"{len(rows)} tasks", columns, rows, args.markdown, numeric=False)
    return 0


def _eval(args: argparse.Namespace, console: Console) -> int:
    from optforge.tasks.sweep import Summary, evaluate_many

    task = _task(args.task, console)
    if task is None:
        return 2
    if args.program.startswith("baseline:"):
        try:
            program = task.baseline(args.program.split(":", 1)[1])
        except KeyError as e:
            console.print(f"[red]error:[/red] {e.args[0]}", highlight=False)
            return 2
    else:
        program = _load_program(args.program, console)
        if program is None:
            return 2
    results = evaluate_many(task, [(program, s) for s in range(args.seeds)])
    for seed, r in enumerate(results):
        value = f"{r.fitness:.4f}" if not r.failed else f"failed: {r.reason}"
        console.print(f"seed {seed}: {value}  (final train loss {r.final_loss:.3f})",
                      highlight=False)  # fmt: skip
    summary = Summary.of(results)
    console.print(f"{task.name} {task.metric}: {summary.text(4)} over {args.seeds} seeds",
                  highlight=False)  # fmt: skip
    return 0 if summary.mean is not None else 1


def _tune(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import Progress

    from optforge.tasks.sweep import GRIDS, tune

    task = _task(args.task, console)
    if task is None:
        return 2
    names = [n.strip() for n in args.optimizers.split(",") if n.strip()]
    unknown = [n for n in names if n not in GRIDS]
    if unknown:
        console.print(f"[red]error:[/red] unknown optimizers {unknown} (known: {', '.join(GRIDS)})")
        return 2
    with Progress(console=console, transient=True) as bar:
        job = bar.add_task(f"tuning on {task.name}", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(job, completed=done, total=total)

        tuned = tune(task, names, args.seeds, progress=progress)
    rows = []
    for t in tuned:
        for (eta, wd), summary in t.grid.items():
            mark = "best" if (eta, wd) == t.best else ""
            rows.append([t.optimizer, f"{eta:g}", f"{wd:g}", summary.text(), mark])
    _print_table(
        console,
        f"{task.name}: {task.metric}, seeds 0-{args.seeds - 1}",
        ["optimizer", "step size", "weight decay", "fitness", ""],
        rows,
        args.markdown,
    )
    held = [[t.optimizer, f"{t.best[0]:g}" if t.best else "-", f"{t.best[1]:g}" if t.best else "-",
             t.held_out.text() if t.held_out else "all failed"] for t in tuned]  # fmt: skip
    if args.markdown:
        print()
    _print_table(
        console,
        f"best, re-measured on fresh seeds {1000}-{1000 + args.seeds - 1}",
        ["optimizer", "step size", "weight decay", "fitness"],
        held,
        args.markdown,
    )
    return 0


def _bench_eval(args: argparse.Namespace, console: Console) -> int:
    from optforge.bench.evaluation import measure
    from optforge.tasks.registry import TASKS

    tiers = {t.strip() for t in args.tiers.split(",")}
    rows = []
    with console.status("measuring") as status:
        for task in TASKS.values():
            if task.tier in tiers:
                status.update(f"measuring {task.name}")
                m = measure(task, k=args.k)
                rows.append([m.task, m.tier, f"{m.params:,}", f"{m.single_s:.2f}",
                             f"{m.single_evals_per_s:.2f}", f"{m.batched_evals_per_s:.2f}",
                             f"{m.speedup:.1f}x"])  # fmt: skip
    columns = ["task", "tier", "params", "s/eval single", "evals/s single",
               f"evals/s batched (K={args.k})", "batched/single"]  # fmt: skip
    _print_table(console, "fitness evaluation throughput", columns, rows, markdown=False)
    return 0


def _load_program(spec: str, console: Console):
    """A Program from a file (program text, or JSON) or a library name; None after an error
    has been printed."""
    from pathlib import Path

    from optforge.program import Program, ProgramError, library, parse

    path = Path(spec)
    try:
        if path.is_file():
            text = path.read_text()
            return Program.from_json(text) if path.suffix == ".json" else parse(text)
        if spec in library.PROGRAMS:
            return library.PROGRAMS[spec]()
    except ProgramError as e:
        console.print(f"[red]error:[/red] {spec}: {e}", highlight=False)
        return None
    except (OSError, UnicodeDecodeError) as e:
        console.print(f"[red]error:[/red] cannot read {spec}: {e}", highlight=False)
        return None
    names = ", ".join(library.PROGRAMS)
    console.print(f"[red]error:[/red] no file {spec!r}, and no library program of that name "
                  f"(library: {names})", highlight=False)  # fmt: skip
    return None


def _show(args: argparse.Namespace, console: Console) -> int:
    from rich.text import Text

    from optforge.program.analysis import analyze
    from optforge.program.fingerprint import fingerprint

    program = _load_program(args.program, console)
    if program is None:
        return 2
    analysis = analyze(program)
    lines = program.source().splitlines()
    text = Text(lines[0] + "\n")
    for i, line in enumerate(lines[1:-1]):
        kind = analysis.types[i] if i < len(analysis.types) else ""
        if i in analysis.redundant:
            text.append(f"{line:<44}", style="dim strike")
            text.append("  # redundant\n", style="yellow")
        else:
            text.append(f"{line:<44}", style="bold")
            text.append(f"  # {kind}\n", style="cyan")
    text.append(lines[-1])
    console.print(text)
    if not analysis.valid:
        for error in analysis.errors:
            console.print(f"[red]invalid:[/red] {error}", highlight=False)
        return 1
    n = len(program)
    states = ", ".join(sorted(analysis.reads)) or "none"
    console.print(
        f"{n} statements, {len(analysis.redundant)} redundant "
        f"({100 * analysis.redundant_fraction:.0f}%); states read: {states}\n"
        f"structural hash {analysis.structural_hash}\nfingerprint     {fingerprint(program)}",
        highlight=False,
    )
    return 0


def _simplify(args: argparse.Namespace, console: Console) -> int:
    from optforge.program.analysis import analyze
    from optforge.program.fingerprint import fingerprint
    from optforge.program.simplify import simplify

    program = _load_program(args.program, console)
    if program is None:
        return 2
    analysis = analyze(program)
    if not analysis.valid:
        console.print("[red]invalid program:[/red] " + "; ".join(analysis.errors))
        return 1
    simple = simplify(program)
    same = fingerprint(simple) == fingerprint(program)
    source = simple.source() + "\n"
    if args.output:
        with open(args.output, "w") as f:
            f.write(source)
    else:
        print(source, end="", flush=True)
    Console(stderr=True).print(
        f"{len(program)} -> {len(simple)} statements; fingerprint "
        f"{'unchanged' if same else 'CHANGED'}" + (f"; wrote {args.output}" if args.output else ""),
        highlight=False,
    )
    return 0 if same else 1


def _export(args: argparse.Namespace, console: Console) -> int:
    from optforge.program import ProgramError
    from optforge.program.export import export

    program = _load_program(args.program, console)
    if program is None:
        return 2
    try:
        source = export(program, args.name)
    except (ProgramError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        return 2
    with open(args.output, "w") as f:
        f.write(source)
    console.print(f"wrote {args.output}: class {args.name}(torch.optim.Optimizer)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Piped output (CI logs, files) gets a fixed width so tables are not squeezed to 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    try:
        return args.handler(args, console)
    except BrokenPipeError:  # `optforge ... | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
