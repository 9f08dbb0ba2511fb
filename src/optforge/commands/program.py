"""`optforge show / simplify / export / primitives`: the program language."""

from __future__ import annotations

import argparse

from rich.console import Console

from optforge.commands.common import load_program, print_table

EXPORT_NAMES = {"torch": "ExportedOptimizer", "optax": "exported_optimizer"}
"""Export formats and the default name of what each defines."""


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
        "export",
        help="write a program as a standalone module: a torch optimizer, or an optax "
        "transformation for JAX",
    )
    export.add_argument("program", metavar="PROGRAM", help=spec_help)
    export.add_argument("-o", "--output", metavar="FILE", required=True, help="module path")
    export.add_argument(
        "--format",
        choices=EXPORT_NAMES,
        default="torch",
        help="torch: a torch.optim.Optimizer class (needs torch only); optax: a factory "
        "returning an optax.GradientTransformation (needs jax and optax only)",
    )
    export.add_argument(
        "--name",
        help="the optimizer class name (torch, default ExportedOptimizer) or factory name "
        "(optax, default exported_optimizer)",
    )
    export.set_defaults(handler=_export)

    prims = commands.add_parser("primitives", help="the primitive table of the program language")
    prims.add_argument("--markdown", action="store_true", help="print a Markdown table")
    prims.set_defaults(handler=_primitives)


def _primitives(args: argparse.Namespace, console: Console) -> int:
    from optforge.program.primitives import PRIMITIVES

    columns = ["name", "written", "arity", "shape rule", "torch", "jax", "domain"]
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
        code = [written, p.code, p.jax]
        if args.markdown:  # names as written, torch and jax code as code
            code = [f"`{c}`" if c is not None else c for c in code]
        written, torch_code, jax_code = code
        jax_code = jax_code or "none (optforge export --format optax refuses it)"
        rows.append([p.name, written, str(p.arity), p.kind, torch_code, jax_code, p.domain])
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
    from optforge.program.export_optax import export_optax

    program = load_program(args.program, console)
    if program is None:
        return 2
    name = args.name or EXPORT_NAMES[args.format]
    try:  # an unsupported primitive is a ProgramError naming it
        source = export(program, name) if args.format == "torch" else export_optax(program, name)
    except (ProgramError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        return 2
    with open(args.output, "w") as f:
        f.write(source)
    defined = (
        f"class {name}(torch.optim.Optimizer)"
        if args.format == "torch"
        else f"def {name}(learning_rate, ...) -> optax.GradientTransformation"
    )
    console.print(f"wrote {args.output}: {defined}", highlight=False)
    return 0
