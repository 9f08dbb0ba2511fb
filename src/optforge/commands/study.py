"""`optforge study`: optimizers as users run them, swept over lr and weight decay on
``nn.Module`` tasks, with seeds; a table and plots of what wins, by how much, how fast."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from optforge.commands.common import positive_int, print_table


def add_study_command(commands) -> None:
    study = commands.add_parser(
        "study",
        help="sweep optimizers (Lion, AdamW, SGD, Adafactor, programs) on nn.Module tasks",
        description="Train each optimizer over log-spaced lr x weight-decay grids and seeds, "
        "store every run as it finishes (--resume repeats none), then write a table (best "
        "setting, final metric mean ± std, steps to tuned AdamW's final metric) and plots.",
    )
    study.add_argument("--task", required=True,
                       help="fmnist-vit, shakespeare-lm, kjv-lm, digits-mlp")  # fmt: skip
    study.add_argument(
        "--optimizers",
        default="lion,adamw",
        help="comma-separated: lion, lion-0.95-0.98, signum-0.9, signum-0.99, adamw, adam, "
        "sgd, adafactor, lion-from-adamw, muon, a program file or library program, JOURNAL or "
        "JOURNAL:ID. muon (Muon on hidden matrices, AdamW elsewhere) and lion-from-adamw need "
        "adamw in the same study: they run after it, at its tuned lr and wd (an error "
        "otherwise); muon's grid is Muon's own lr and wd",
    )
    study.add_argument("--seeds", type=positive_int, default=3)
    study.add_argument("--tune-seeds", type=positive_int,
                       help="seeds per grid point; the remaining seeds run at each "
                            "optimizer's best point only (default: all of them)")  # fmt: skip
    study.add_argument("--extend", type=int, default=2, metavar="N",
                       help="rounds that extend a grid past an edge where the best point sits "
                            "(default 2; 0: the grid as given)")  # fmt: skip
    study.add_argument("--good-within", type=float,
                       help="the sensitivity table counts grid points within this of the best "
                            "(default: 0.01 accuracy, 0.03 nats)")  # fmt: skip
    study.add_argument("--lr", help="grid for all (1e-4:1e-2:5 = 5 log-spaced, or a,b,c), or "
                       "NAME=GRID;NAME=GRID (default: per optimizer)")  # fmt: skip
    study.add_argument("--wd", help="weight-decay grid, same forms as --lr")
    study.add_argument("--batch-size", help="comma-separated batch sizes (default: the task's)")
    study.add_argument("--model-size", help="comma-separated: small, base (default: small)")
    study.add_argument("--steps", type=positive_int, help="training steps (default: the task's)")
    study.add_argument("--wd-on", choices=("matrices", "all"), default="matrices",
                       help="which parameters weight decay applies to")  # fmt: skip
    study.add_argument("--out", default="runs/study", help="folder for the store, table, plots")
    study.add_argument("--resume", action="store_true",
                       help="keep the runs already in OUT/study.db (without it, OUT must not "
                            "hold a study yet)")  # fmt: skip
    study.add_argument("--markdown", action="store_true", help="print a Markdown table")
    study.set_defaults(handler=_study)


def _study(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from optforge._extras import check
    from optforge.bench import study, study_report
    from optforge.bench.study_tasks import TASKS

    check("matplotlib", "search", "optforge study (its plots)")  # before the runs
    out = Path(args.out)
    store_path = out / "study.db"
    if store_path.exists() and not args.resume:
        console.print(f"[red]error:[/red] {store_path} holds a study; add --resume to continue "
                      f"it or choose another --out", highlight=False)  # fmt: skip
        return 2
    try:
        batches = [_batch(b) for b in _names(args.batch_size) or []] or None
        plan = study.plan(
            args.task,
            [n.strip() for n in args.optimizers.split(",") if n.strip()],
            seeds=args.seeds,
            sizes=_names(args.model_size),
            batches=batches,
            steps=args.steps,
            lr=args.lr,
            wd=args.wd,
            tune_seeds=args.tune_seeds,
            extend=args.extend,
        )
    except ValueError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        return 2
    store = study.Store(store_path)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn()]  # fmt: skip
    with Progress(*columns, console=console) as bar:
        job = bar.add_task("study", total=None)

        def progress(done: int, total: int, what: str) -> None:
            bar.update(job, completed=done, total=total, description=what)

        trained = study.run(plan, store, args.wd_on, progress)
    rows = [r for r in store.rows() if r["task"] == plan.task]
    columns, table = study_report.table(rows)
    metric = TASKS[plan.task]().metric
    tuned = "" if plan.tuning == plan.seeds else f", grid tuned on seeds 0-{plan.tuning - 1}"
    title = (f"{plan.task}: {metric}, {plan.steps} steps, seeds 0-{plan.seeds - 1}{tuned} "
             f"({trained} runs trained now, {len(rows)} stored)")  # fmt: skip
    print_table(console, title, columns, table, args.markdown, numeric=False)
    within = args.good_within or (0.01 if "accuracy" in metric else 0.03)
    sections = [(title, columns, table),
                ("Hyper-parameter transfer: tuned Lion (and Muon) against tuned AdamW",
                 *study_report.transfer(rows)),
                (f"Sensitivity: grid points within {within:g} of each optimizer's best",
                 *study_report.robustness(rows, within))]  # fmt: skip
    for heading, cols, body in sections[1:]:
        if body:
            print_table(console, heading, cols, body, args.markdown, numeric=False)
    (out / "study.md").write_text(
        "\n".join(
            f"{heading}\n\n{_markdown(cols, body)}\n" for heading, cols, body in sections if body
        )
    )
    for path in study_report.plots(rows, out, metric):
        console.print(f"wrote {path}", highlight=False)
    return 0


def _names(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _batch(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"batch size {text!r} must be an integer >= 1")
    return int(text)


def _markdown(columns, rows) -> str:
    from optforge.bench.tables import markdown_table

    return markdown_table(columns, rows)
