"""`optforge bench fidelity` (how well fitness definitions predict larger tasks) and
`optforge bench fidelity-sample` (the program sample it measures on)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from optforge.commands.common import positive_int, print_table

DEFAULT_SAMPLE = "docs/data/fidelity-programs.txt"


def add_fidelity_commands(benches) -> None:
    fid = benches.add_parser(
        "fidelity",
        help="Spearman rho between fitness definitions and larger target tasks",
        description="Score a fixed program sample with each fitness definition and on each "
        "target task (several seeds), and report Spearman rho, top-10 overlap and seconds per "
        "candidate side by side. Definitions: TASK[+TASK][;mult=1/3,1,3][;seeds=N][;norm]"
        "[;hurdle=X]. Results are stored as they land (--store), so a rerun resumes.",
    )
    fid.add_argument("--programs", default=DEFAULT_SAMPLE, help=f"the sample ({DEFAULT_SAMPLE})")
    fid.add_argument("--fitness", action="append", required=True, metavar="DEFINITION",
                     help="a fitness definition (repeat for several; the first is the "
                          "reference row)")  # fmt: skip
    fid.add_argument("--targets", required=True, help="target tasks, comma-separated")
    fid.add_argument("--target-seeds", default="500,501,502", help="seeds of the targets")
    fid.add_argument("--store", default="runs/fidelity.db", help="results database (resumable)")
    fid.add_argument("--batch", type=positive_int, default=48, help="candidates per batch")
    fid.add_argument("--retime", type=int, default=0, metavar="N",
                     help="re-time each definition on N programs spread over the sample, "
                          "one after another (on an otherwise idle machine)")  # fmt: skip
    fid.add_argument("--prior", metavar="JSON",
                     help="an earlier run's PREFIX.json: the programs and definitions it holds "
                          "take its values, only the others train")  # fmt: skip
    fid.add_argument("--prior-check", type=int, default=0, metavar="N",
                     help="re-measure N of the prior's programs and print the largest "
                          "difference from its values")  # fmt: skip
    fid.add_argument("--out", metavar="PREFIX", help="write PREFIX.md, PREFIX.json, PREFIX.png")
    fid.add_argument("--markdown", action="store_true", help="print a Markdown table")
    fid.set_defaults(handler=_fidelity)

    sample = benches.add_parser(
        "fidelity-sample",
        help="build a fidelity program sample from search journals and library optimizers",
    )
    sample.add_argument("journals", nargs="*", metavar="JOURNAL")
    sample.add_argument(
        "--per-journal",
        type=positive_int,
        default=45,
        help="programs per journal, evenly spread over its fitness range",
    )
    sample.add_argument("-o", "--output", default=DEFAULT_SAMPLE)
    sample.add_argument(
        "--keep",
        metavar="SAMPLE",
        help="start from an earlier sample file (its journals may be gone) and add what it "
        "lacks: new known programs, more journals",
    )
    sample.set_defaults(handler=_sample)


def _fidelity(args: argparse.Namespace, console: Console) -> int:
    from optforge._extras import check
    from optforge.bench import fidelity

    if args.out:  # before the measurements, not after them
        check("matplotlib", "plots", "bench fidelity --out (its plot)")
    try:
        samples = fidelity.read_sample(args.programs)
        definitions = [fidelity.parse_definition(d) for d in args.fitness]
        seeds = tuple(int(s) for s in args.target_seeds.split(","))
        prior = fidelity.Prior.load(args.prior) if args.prior else None
    except (OSError, ValueError, KeyError) as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        return 2
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    checked: list[str] = []
    if prior and args.prior_check > 0:  # spread over the prior's programs, measured afresh
        held = [s.name for s in samples if any(n == s.name for _, n in prior.values)]
        checked = held[:: max(1, len(held) // args.prior_check)][: args.prior_check]
        prior = prior.without(set(checked))
    console.print(f"{len(samples)} programs, {len(definitions)} fitness definitions, "
                  f"targets {', '.join(targets)} over seeds {seeds}", highlight=False)  # fmt: skip
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done)

        try:
            rows = fidelity.measure(samples, args.fitness, targets, fidelity.Store(args.store),
                                    target_seeds=seeds, batch=args.batch,
                                    progress=progress, retime=args.retime,
                                    prior=prior)  # fmt: skip
        except (KeyError, ValueError) as e:
            console.print(f"[red]error:[/red] {e.args[0]}", highlight=False)
            return 2
    if checked:
        original = fidelity.Prior.load(args.prior)
        worst = fidelity.agreement(rows, samples, original, checked)
        console.print(f"prior check: {len(checked)} of the prior's programs re-measured; largest "
                      f"difference from its values {worst:.2e}", highlight=False)  # fmt: skip
    columns, body = fidelity.table(rows, targets)
    title = f"fidelity on {len(samples)} programs ({args.programs}), target seeds {seeds}"
    print_table(console, title, columns, body, args.markdown)
    if args.out:
        from optforge.bench.tables import markdown_table

        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(f"{title}\n\n{markdown_table(columns, body)}\n")
        out.with_suffix(".json").write_text(fidelity.to_json(rows, samples))
        fidelity.plot(rows, targets, out.with_suffix(".png"))
        console.print(f"wrote {out.with_suffix('.md')}, .json, .png")
    return 0


def _sample(args: argparse.Namespace, console: Console) -> int:
    from optforge.bench import fidelity, sample

    try:
        keep = fidelity.read_sample(args.keep) if args.keep else []
        samples = sample.build(args.journals, args.per_journal, keep)
    except (OSError, ValueError, LookupError) as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        return 2
    header = (
        "Programs for `optforge bench fidelity`, written by `optforge bench fidelity-sample "
        + " ".join(
            [
                *args.journals,
                f"--per-journal {args.per_journal}",
                *([f"--keep {args.keep}"] if args.keep else []),
            ]
        )
        + "`.\nJournal programs carry their search fitness in their name; library and "
        "hand-written ones their step size."
    )
    if args.keep:  # the kept programs' own provenance
        kept = [line[2:] for line in Path(args.keep).read_text().splitlines()
                if line.startswith("# ")]  # fmt: skip
        header += "\nKept from " + args.keep + ":\n" + "\n".join(kept)
    fidelity.write_sample(args.output, samples, header)
    console.print(f"wrote {len(samples)} programs to {args.output}")
    return 0
