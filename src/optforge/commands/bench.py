"""`optforge bench ...`: step time, program language, fitness-evaluation throughput."""

from __future__ import annotations

import argparse

from rich.console import Console

from optforge.commands.common import positive_count, positive_int, print_table, read_json
from optforge.commands.fidelity import add_fidelity_commands


def add_bench_commands(commands) -> None:
    bench = commands.add_parser("bench", help="measure optimizers against the anchors")
    benches = bench.add_subparsers(dest="bench", metavar="BENCH", required=True)
    step = benches.add_parser(
        "step",
        help="optimizer step time: Lion paths vs torch AdamW and other Lions",
        description="Time opt.step() of every Lion path, torch AdamW (foreach, fused), timm "
        "and lion-pytorch Lions when installed, and a compiled flat Lion (the limit), "
        "round-robin in one run.",
    )
    step.add_argument("--params", type=positive_count, default=20e6, help="total (20e6)")
    step.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    step.add_argument(
        "--dtype", choices=["float32", "bfloat16"], default="float32", help="params and grads"
    )
    step.add_argument("--iters", type=positive_int, default=10, help="timed steps per round")
    step.add_argument("--rounds", type=positive_int, default=5, help="round-robin rounds")
    step.add_argument("--threads", type=positive_int, help="torch threads (default: torch's)")
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
    prog.add_argument("--programs", type=positive_int, default=10_000, help="random programs")
    prog.add_argument("--seed", type=int, default=0)
    prog.set_defaults(handler=_bench_program)

    ev = benches.add_parser("eval", help="fitness evaluations per second, single and batched")
    ev.add_argument("--tiers", default="A,B,meta", help="comma-separated tiers (A,B,C,meta,test)")
    ev.add_argument("--tasks", help="comma-separated task names (instead of --tiers)")
    ev.add_argument("--k", type=positive_int, default=32, help="candidates per batch")
    ev.add_argument("--no-compile", dest="compiled", action="store_false",
                    help="skip the torch.compile'd batched measurement")  # fmt: skip
    ev.add_argument(
        "--rounds",
        type=positive_int,
        default=3,
        help="round-robin rounds of the three measurements (medians reported)",
    )
    ev.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ev.add_argument(
        "--profile",
        action="store_true",
        help="instead: ms per training step, split into its parts, at K = 1 and K",
    )
    ev.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                    help="where the candidates train")  # fmt: skip
    ev.add_argument(
        "--programs",
        default="adamw",
        help="comma-separated program families to time: adamw (elementwise), muon "
        "(library.muon: orthogonalize on the hidden matrices); with both, the table adds "
        "each task's muon/adamw ratio",
    )
    ev.add_argument(
        "--adapter",
        metavar="TASK",
        help="instead: evaluations/s of an MLP task hand-batched vs through the torch.func "
        "adapter for user tasks (e.g. fmnist-mlp-p)",
    )
    ev.set_defaults(handler=_bench_eval)

    prec = benches.add_parser(
        "precision",
        help="Lion with 8-bit / bf16 momentum and bf16 params (stochastic rounding) vs fp32",
        description="Train real models with optforge.Lion in several storage precisions from "
        "the same seeds; print the final validation metric (mean ± std), the gap to fp32 and "
        "the optimizer-state bytes per parameter.",
    )
    prec.add_argument("--tasks", default="fmnist-mlp,shakespeare-lm",
                      help="comma-separated: fmnist-mlp, shakespeare-lm")  # fmt: skip
    prec.add_argument("--seeds", type=positive_int, default=3, help="seeds 0..N-1 (3)")
    prec.add_argument("--steps", type=positive_int, help="training steps (task default)")
    prec.add_argument("--markdown", action="store_true", help="print a Markdown table")
    prec.add_argument("--out", metavar="PREFIX", help="also write PREFIX.json and PREFIX.png")
    prec.set_defaults(handler=_bench_precision)
    redo = benches.add_parser(
        "rediscover",
        help="can the search reach a family it does not start in? (signum, Lion, Adam, Muon)",
        description="Evolution from the warm start and random search, at the same budget, "
        "scored by how closely a candidate's updates match a target optimizer's on fixed "
        "random gradient streams; a run stops at its first solution (the simplified program "
        "matches the target on held-out streams). Reports per target and algorithm the "
        "solution rate over seeds, the median candidates to a solution and the median best "
        "fitness.",
    )
    redo.add_argument("--targets", default="signum,lion,adam,muon",
                      help="comma-separated (signum,lion,adam,muon)")  # fmt: skip
    redo.add_argument("--algorithms", default="evolution,random",
                      help="comma-separated (evolution,random)")  # fmt: skip
    redo.add_argument("--seeds", type=positive_int, default=10, help="seeds 0..N-1 (10)")
    redo.add_argument("--budget", type=int, default=1000, help="candidates per run (1000)")
    redo.add_argument("--json", metavar="FILE", help="also write the runs as JSON")
    redo.add_argument("--markdown", action="store_true", help="print a Markdown table")
    redo.set_defaults(handler=_bench_rediscover)
    kern = benches.add_parser(
        "kernels",
        help="compile every Triton Lion kernel for real GPUs (no GPU needed): registers, "
        "spills, load/store widths",
        description="Compile each Triton Lion kernel variant the optimizer can launch (dtype "
        "pairs x cautious, AMP, tensor lr, stochastic rounding, 8-bit momentum, aligned or "
        "not) for each target with Triton's bundled ptxas, and report per variant whether it "
        "compiles, its registers per thread, spills (and how many spill instructions sit in a "
        "loop), and its global loads and stores by width (from the PTX). Exits 1 when a "
        "variant does not compile, spills inside a loop, or is aligned but "
        "moves the tensors' data in accesses narrower than 128 bits.",
    )
    kern.add_argument("--target", default="sm_80,sm_90",
                      help="comma-separated: sm_80, sm_90 (both)")  # fmt: skip
    kern.add_argument("--quick", action="store_true",
                      help="plain and all-options variants (a third of the compiles)")  # fmt: skip
    kern.add_argument("--jobs", type=positive_int, help="compiling processes (CPU count)")
    kern.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    kern.add_argument("--markdown", action="store_true", help="print a Markdown table")
    kern.set_defaults(handler=_bench_kernels)
    host = benches.add_parser(
        "host",
        help="host (Python) time of a fused Triton Lion step, with the launches stubbed",
        description="Time optforge.Lion(fused=True).step() on the Triton path over N tensors "
        "with the kernel launches replaced by no-ops: what the host spends per step (lists, "
        "dispatch, the cached address table), with no device work. Needs no GPU.",
    )
    host.add_argument("--tensors", type=positive_int, default=290, help="parameters (290)")
    host.add_argument("--steps", type=positive_int, default=300, help="timed steps (300)")
    host.add_argument("--markdown", action="store_true", help="print a Markdown table")
    host.set_defaults(handler=_bench_host)
    add_fidelity_commands(benches)


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
            dtype=getattr(torch, args.dtype),
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

    print_table(console, bench.header(report), bench.COLUMNS, bench.table_rows(report), markdown)


def _bench_show(args: argparse.Namespace, console: Console) -> int:
    from optforge.bench import step as bench

    data = read_json(args.file, console)
    if data is None:
        return 2
    _print_report(bench.Report.from_json(data), args.markdown, console)
    return 0


def _bench_summary(args: argparse.Namespace, console: Console) -> int:
    from optforge.bench import step as bench

    runs = [read_json(path, console) for path in args.files]
    if any(run is None for run in runs):
        return 2
    rows = bench.summarize(runs)
    print_table(console, f"{len(runs)} runs", bench.SUMMARY_COLUMNS, rows, args.markdown)
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


def _bench_eval(args: argparse.Namespace, console: Console) -> int:
    from optforge.bench.evaluation import measure
    from optforge.search.executors import device_unavailable, resolve_device
    from optforge.tasks.registry import TASKS

    device = resolve_device(args.device)
    if reason := device_unavailable(device):
        console.print(f"[red]error:[/red] {reason}", highlight=False)
        return 2
    tiers = {t.strip() for t in args.tiers.split(",")}
    if args.adapter:
        return _adapter_eval(args, console)
    if args.profile:
        return _profile_eval(args, tiers, console)
    from optforge.bench.evaluation import FAMILIES
    from optforge.tasks import registry

    names = [t.strip() for t in (args.tasks or "").split(",") if t.strip()]
    for name in names:
        registry.get(name)  # a clear error naming the known tasks
    families = [f.strip() for f in args.programs.split(",") if f.strip()]
    if not families or any(f not in FAMILIES for f in families):
        raise ValueError(f"--programs {args.programs!r}: use a comma list of {FAMILIES}")
    rows = []
    with console.status("measuring") as status:
        for task in TASKS.values():
            if task.name not in names if names else task.tier not in tiers:
                continue
            batched = {}
            for family in families:
                status.update(f"measuring {task.name} ({family})")
                m = measure(task, k=args.k, rounds=args.rounds, compiled=args.compiled,
                            device=device, family=family)  # fmt: skip
                low, high = m.speedup_range
                batched[family] = m.batched_evals_per_s
                ratio = (f"{m.batched_evals_per_s / batched['adamw']:.2f}"
                         if family != "adamw" and "adamw" in batched else "-")  # fmt: skip
                rows.append([m.task, m.tier, family, f"{m.params:,}", f"{m.single_s:.2f}",
                             f"{m.single_evals_per_s:.2f}", f"{m.batched_evals_per_s:.2f}",
                             _maybe(m.compiled_evals_per_s, ".2f"), _maybe(m.compile_s, ".0f"),
                             f"{m.speedup:.1f}x", f"{low:.1f}-{high:.1f}x", ratio])  # fmt: skip
    columns = ["task", "tier", "programs", "params", "s/eval single", "evals/s single",
               f"evals/s batched (K={args.k})", "evals/s batched compiled", "compile s",
               "best batched/single", "per round", "batched vs adamw"]  # fmt: skip
    title = f"fitness evaluation throughput (medians of {args.rounds} rounds)"
    print_table(console, title, columns, rows, markdown=args.markdown)
    return 0


def _profile_eval(args: argparse.Namespace, tiers: set[str], console: Console) -> int:
    from optforge.bench.evaluation import profile_steps
    from optforge.tasks.registry import TASKS

    names = {t.strip() for t in (args.tasks or "").split(",") if t.strip()}
    families = [f.strip() for f in args.programs.split(",") if f.strip()]
    rows = []
    with console.status("profiling") as status:
        for task in TASKS.values():
            if task.name not in names if names else task.tier not in tiers:
                continue
            for k, family in ((k, f) for k in (1, args.k) for f in families):
                compiled = args.compiled and k > 1  # one at a time runs eager
                status.update(f"profiling {task.name} at K = {k} ({family})")
                p = profile_steps(task, k=k, compiled=compiled, family=family)
                total = p["data"] + p["forward"] + p["backward"] + p["updates"]
                rows.append([task.name, f"{k} {family}", "compiled" if compiled else "eager",
                             *(f"{p[n]:.2f}" for n in ("data", "forward", "backward", "updates")),
                             f"{p['matmuls']:.2f}", f"{total:.2f}", f"{total / k:.3f}",
                             f"{p['matmuls'] / k:.3f}"])  # fmt: skip
    columns = ["task", "K, programs", "forward/backward", "data", "forward", "backward", "updates",
               "of which matmuls", "step", "step per candidate",
               "matmuls per candidate"]  # fmt: skip
    title = "ms per training step (medians; matmuls: profiler self time, forward + backward)"
    print_table(console, title, columns, rows, markdown=args.markdown)
    return 0


def _maybe(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _bench_precision(args: argparse.Namespace, console: Console) -> int:
    import dataclasses
    import json

    from optforge._extras import check
    from optforge.bench import precision

    if args.out:  # before the training, not after it
        check("matplotlib", "plots", "bench precision --out (its plot)")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in precision.TASKS]
    if unknown or not tasks:
        console.print(f"[red]--tasks: unknown {', '.join(unknown) or '(none)'}; "
                      f"choose from {', '.join(precision.TASKS)}[/red]")  # fmt: skip
        return 2
    seeds = list(range(args.seeds))
    with console.status("training") as status:
        results = precision.run(
            tasks, seeds, progress=lambda t: status.update(f"training: {t}"), steps=args.steps
        )
    title = f"Lion storage precision, seeds {seeds[0]}-{seeds[-1]}"
    print_table(console, title, precision.COLUMNS, precision.table_rows(results), args.markdown)
    if args.out:
        with open(f"{args.out}.json", "w") as f:
            json.dump([dataclasses.asdict(r) for r in results], f, indent=2)
        precision.plot(results, f"{args.out}.png")
        console.print(f"wrote {args.out}.json, {args.out}.png")
    return 0


def _adapter_eval(args: argparse.Namespace, console: Console) -> int:
    import statistics

    from optforge.bench.evaluation import adapter_comparison
    from optforge.tasks import registry

    try:
        task = registry.get(args.adapter)
        with console.status(f"measuring {task.name}"):
            runs = adapter_comparison(task, k=args.k, rounds=args.rounds)
    except (KeyError, ValueError) as e:
        console.print(f"[red]--adapter: {e.args[0]}[/red]")
        return 2
    base = statistics.median(runs["hand-batched"])
    rows = [[name, f"{statistics.median(v):.2f}", f"{min(v):.2f}-{max(v):.2f}",
             f"{statistics.median(v) / base:.2f}x"] for name, v in runs.items()]  # fmt: skip
    title = f"{task.name}, K = {args.k}, {args.rounds} rounds (median, min-max)"
    print_table(console, title, ["model", "evals/s", "range", "vs hand-batched"], rows,
                args.markdown)  # fmt: skip
    return 0


def _bench_rediscover(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from optforge.bench import rediscover

    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    algorithms = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    checks = (("--targets", targets, rediscover.TARGETS), ("--algorithms", algorithms,
              rediscover.ALGORITHMS))  # fmt: skip
    for flag, values, allowed in checks:
        unknown = [v for v in values if v not in allowed]
        if unknown or not values:
            console.print(f"[red]{flag}: unknown {', '.join(unknown) or '(none given)'}; "
                          f"choose from {', '.join(allowed)}[/red]", highlight=False)  # fmt: skip
            return 2
    if args.budget < 1:
        console.print(f"[red]--budget: {args.budget} is not a budget; give at least 1 candidate"
                      "[/red]", highlight=False)  # fmt: skip
        return 2
    seeds = list(range(args.seeds))
    total = len(targets) * len(algorithms) * len(seeds)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("runs", total=total)

        def progress(label: str, n: int, best: float) -> None:
            bar.update(task, description=f"{label}: {n}/{args.budget} candidates, best {best:.4f}")

        finished: list = []

        def done(row) -> None:  # --json is rewritten after every run: a long run keeps its rows
            bar.advance(task)
            finished.append(row)
            if args.json:
                _write_rows(args.json, rediscover.to_json(finished))

        rows = rediscover.run(targets, algorithms, seeds, args.budget, progress, done)
    title = (f"rediscovery from the warm start, budget {args.budget}, seeds 0-{seeds[-1]}, "
             f"tolerance {rediscover.TOLERANCE:g}")  # fmt: skip
    print_table(console, title, rediscover.COLUMNS, rediscover.table_rows(rows), args.markdown)
    if args.json:
        _write_rows(args.json, rediscover.to_json(rows))
        console.print(f"wrote {args.json}")
    return 0


def _write_rows(path: str, data: list) -> None:
    import json

    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def _bench_kernels(args: argparse.Namespace, console: Console) -> int:
    import dataclasses
    import json
    import os

    from rich.progress import Progress

    from optforge.bench import kernels

    targets = [t.strip() for t in args.target.split(",") if t.strip()]
    unknown = [t for t in targets if t not in kernels.TARGETS]
    if unknown or not targets:
        console.print(f"[red]--target {args.target!r}: choose from "
                      f"{', '.join(kernels.TARGETS)} (comma-separated)[/red]")  # fmt: skip
        return 2
    from optforge._extras import require

    require("triton", None, "bench kernels", package="Triton",
            install="pip install 'triton>=3.2' (torch's CUDA builds bring it)")  # fmt: skip
    chosen = kernels.variants(quick=args.quick)
    jobs = args.jobs or os.cpu_count() or 1
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"compiling {len(chosen)} variants x {len(targets)} targets",
                                 total=len(chosen) * len(targets))  # fmt: skip
        rows = kernels.report(targets, chosen, jobs, lambda _: progress.advance(task))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dataclasses.asdict(r) for r in rows], f, indent=1)
    options = ", ".join(f"{k}={v}" for k, v in kernels.triton_kernel.COMPILE_OPTIONS.items())
    title = (f"Triton Lion kernels compiled for {', '.join(targets)} "
             f"(BLOCK {kernels.triton_kernel.BLOCK}, {options})")  # fmt: skip
    print_table(console, title, kernels.COLUMNS, kernels.table_rows(rows), args.markdown,
                numeric=False)  # fmt: skip
    print_table(console, "Summary per target", kernels.SUMMARY_COLUMNS,
                kernels.summary_rows(rows), args.markdown, numeric=False)  # fmt: skip
    problems = kernels.problems(rows)
    for line in problems:
        console.print(f"[red]{line}[/red]")
    if not problems:
        console.print(f"all {len(rows)} compiles clean: no spill in a loop, aligned variants move "
                      f"the tensors' data in 128-bit accesses only")  # fmt: skip
    return 1 if problems else 0


def _bench_host(args: argparse.Namespace, console: Console) -> int:
    from optforge.bench import host

    rows = []
    for cautious in (False, True):
        r = host.host_step_time(args.tensors, args.steps, cautious=cautious)
        rows.append(["cautious" if cautious else "plain", f"{r['median_us']:.0f}",
                     f"{r['p10_us']:.0f}-{r['p90_us']:.0f}",
                     f"{r['median_us'] / args.tensors:.2f}", f"{r['table_us']:.0f}"])  # fmt: skip
    title = (f"Host time of Lion(fused=True).step() on the Triton path, {args.tensors} "
             f"tensors, launches stubbed ({args.steps} steps)")  # fmt: skip
    columns = ["step", "median (us)", "p10-p90 (us)", "us per tensor", "table lookup (us)"]
    print_table(console, title, columns, rows, args.markdown)
    return 0
