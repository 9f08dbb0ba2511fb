"""`optforge show / simplify / export / primitives`: the program language."""

from __future__ import annotations

import argparse

from rich.console import Console

from optforge.commands.common import load_program, print_table


def add_program_commands(commands) -> None:
    spec_help = (
        "a program file (text or .json), a library name (lion, adamw, ...), or a search "
        "journal: JOURNAL (its first finalist) or JOURNAL:ID (a candidate)"
    )
    show = commands.add_parser(
        "show", help="a program with its analysis, or a search journal's report and plot"
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


def _primitives(args: argparse.Namespace, console: Console) -> int:
    from optforge.program.primitives import PRIMITIVES

    columns = ["name", "written", "arity", "shape rule", "torch", "domain"]
    rows = []
    for p in PRIMITIVES.values():
        if p.kind in ("constant", "input"):  # bare names, no call
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
    print_table(console, f"{len(rows)} primitives", columns, rows, args.markdown, numeric=False)
    if not args.markdown:
        console.print(
            "shape rules: elementwise broadcasts; reduce gives one scalar per tensor "
            "(global_norm: one for all); global is computed from all tensors together; matrix "
            "acts per tensor on its matrix view (2-D as is, >=3-D as (shape[0], rest), 1-D as "
            "a 1 x n row), tensors only; constant and input are bare names, inputs giving one "
            "value per tensor (docs/program-language.md)",
            highlight=False,
        )
    return 0


def _show(args: argparse.Namespace, console: Console) -> int:
    from rich.text import Text

    from optforge.program.analysis import analyze
    from optforge.program.fingerprint import fingerprint
    from optforge.search.journal import is_journal

    if is_journal(args.program):
        from optforge.commands.report import show_journal

        return show_journal(args.program, console)
    program = load_program(args.program, console)
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

    program = load_program(args.program, console)
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

    program = load_program(args.program, console)
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
