"""The program sample of ``optforge bench fidelity``: what a search really produces, across its
whole fitness range, plus the optimizers people know and variants that test a fitness's traps
(a good algorithm at the wrong scale, a program that ignores the schedule)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from optforge.bench.fidelity import Sample
from optforge.program import library
from optforge.program.program import Program, Statement
from optforge.search.fitness import scaled
from optforge.search.funnel import behaviour_fitness
from optforge.search.journal import Journal, folded_program, is_journal
from optforge.tasks.builtin import Builtin
from optforge.tasks.registry import baseline_program, with_step_size


def build(journals: Sequence[str], per_journal: int,
          keep: Sequence[Sample] = ()) -> list[Sample]:  # fmt: skip
    """``keep`` (an earlier sample, whose journals may be gone), then ``per_journal`` programs
    of each journal, then the known programs; the first of identical programs stays."""
    samples: list[Sample] = list(keep)
    for path in journals:
        samples += from_journal(path, per_journal)
    samples += known()
    seen, out = set(), []
    for s in samples:  # the first of identical programs stays
        if s.key not in seen:
            seen.add(s.key)
            out.append(s)
    return out


def from_journal(path: str, count: int) -> list[Sample]:
    """``count`` distinct behaviours spread evenly over the journal's fitness values (failed
    ones left out: every fitness ranks them last alike)."""
    if not is_journal(path):
        raise ValueError(f"{path} is not a search journal")
    journal = Journal(path)
    try:
        scored = sorted((f, c) for c, f in behaviour_fitness(journal).items() if f is not None)
        if not scored:
            raise LookupError(f"{path} has no evaluated candidate")
        picks = _spread([f for f, _ in scored], count)
        name = Path(path).stem
        return [
            Sample(f"journal:{name}:{scored[i][1]} (search fitness {scored[i][0]:.4f})",
                   folded_program(journal.candidate(scored[i][1])))
            for i in picks
        ]  # fmt: skip
    finally:
        journal.close()


def _spread(values: list[float], count: int) -> list[int]:
    """Indices of sorted ``values`` nearest to ``count`` evenly spaced levels between their
    minimum and maximum (a search's many near-chance programs would crowd a by-rank pick),
    topped up by rank when several levels share a nearest value."""
    if len(values) <= count:
        return list(range(len(values)))
    low, high = values[0], values[-1]
    chosen: set[int] = set()
    for i in range(count):
        level = low + (high - low) * i / max(1, count - 1)
        free = [j for j in range(len(values)) if j not in chosen]
        chosen.add(min(free, key=lambda j: (abs(values[j] - level), j)))
    return sorted(chosen)


def _constant_step(program: Program, eta: float) -> Program:
    """``program`` ignoring the schedule: ``lr`` is replaced by the constant ``eta``."""
    constant = (Statement("lr", "mul", ("lr", 0.0)), Statement("lr", "add", ("lr", float(eta))))
    return Program((*constant, *program.statements), program.returns)


def known() -> list[Sample]:
    """Library optimizers at sensible step sizes for the small tasks, and hand variants."""
    rows: list[tuple[str, Program | Builtin]] = [
        ("library:sgd eta 1", baseline_program("sgd", 1.0)),
        ("library:momentum eta 0.1", baseline_program("momentum", 0.1)),
        ("library:adamw (paper form, eps) eta 3e-3", baseline_program("adamw", 3e-3)),
        ("library:adamw (paper form, eps) eta 1e-2", baseline_program("adamw", 1e-2)),
        ("builtin:torch AdamW eta 3e-3", baseline_program("torch_adamw", 3e-3)),
        ("builtin:torch AdamW eta 1e-2 betas 0.9,0.95", baseline_program("torch_adamw", 1e-2, 0.0,
                                                                        0.9, 0.95)),
        ("library:lion eta 1e-3", baseline_program("lion", 1e-3)),
        ("library:lion eta 3e-3 wd 1", baseline_program("lion", 3e-3, 1.0)),
        ("library:lion eta 1e-2", baseline_program("lion", 1e-2)),
        ("library:lion betas 0.95,0.98 eta 3e-3", baseline_program("lion", 3e-3, 0.0, 0.95, 0.98)),
        ("library:signum eta 3e-3", with_step_size(library.signum(0.9), 3e-3)),
        ("library:signum beta 0.99 eta 3e-3", with_step_size(library.signum(0.99), 3e-3)),
        ("library:rmsprop eta 3e-3", with_step_size(library.rmsprop(0.99), 3e-3)),
        ("library:adabelief eta 3e-3", with_step_size(library.adabelief(), 3e-3)),
        ("library:powersign eta 0.03", with_step_size(library.powersign(), 0.03)),
        ("library:addsign eta 0.03", with_step_size(library.addsign(), 0.03)),
        ("library:paper warm start", library.paper_warm_start()),
        ("hand:lion 10x too large (eta 0.1)", baseline_program("lion", 0.1)),
        ("hand:lion 10x too small (eta 1e-4)", baseline_program("lion", 1e-4)),
        ("hand:adamw 3x too small (eta 1e-3)", baseline_program("adamw", 1e-3)),
        ("hand:lion ignoring the schedule (constant 3e-3)",
         _constant_step(library.lion(0.9, 0.99), 3e-3)),
        ("hand:adamw ignoring the schedule (constant 3e-3)",
         _constant_step(library.adamw(0.9, 0.999, eps=1e-8), 3e-3)),
        ("hand:warm start x10", scaled(library.paper_warm_start(), 10.0)),
        *muon_family(),
    ]  # fmt: skip
    return [Sample(name, program) for name, program in rows]


def muon_family() -> list[tuple[str, Program]]:
    """The matrix language's known programs: Muon as users run it at two settings and its
    traps (x10, x1/10, no schedule), Muon without its AdamW part, orthogonalized Adam, and
    two hybrids (Muon with Lion off the hidden matrices; Muon's direction plus a sign)."""
    momentum = ["v1 = interp(g, v1, 0.95)", "n = interp(g, v1, 0.95)"]
    orthogonal = [*momentum, "o = orthogonalize(n)", "o = o * aspect"]
    everywhere = library.from_body(*orthogonal, "update = o * lr", "return update, v1, v2")
    adam = library.from_body(
        "v1 = interp(g, v1, 0.9)", "g2 = square(g)", "v2 = interp(g2, v2, 0.999)",
        "s = sqrt(v2)", "s = s + 1e-08", "a = v1 / s", "o = orthogonalize(a)", "o = o * aspect",
        "update = o * lr", "return update, v1, v2",
    )  # fmt: skip
    with_lion = library.from_body(
        *orthogonal, "c = interp(g, v1, 0.9)", "c = sign(c)", "c = c * 0.1",
        "u = interp(c, o, hidden)", "update = u * lr", "return update, v1, v2",
    )  # fmt: skip
    plus_sign = library.from_body(
        *orthogonal, "c = sign(n)", "c = c * 0.05", "u = o + c", "update = u * lr",
        "return update, v1, v2",
    )  # fmt: skip
    muon = library.muon(weight_decay=0.0, adam_lr_ratio=0.316)
    return [
        ("library:muon as users run it (eta 0.1, AdamW 0.0316)",
         baseline_program("muon", 0.1, 0.0, 0.0316, 0.0)),
        ("library:muon as users run it (eta 0.03 wd 0.1, AdamW 0.01 betas 0.9,0.95)",
         baseline_program("muon", 0.03, 0.1, 0.01, 0.0, 0.9, 0.95)),
        ("hand:muon 10x too large (eta 1)", with_step_size(muon, 1.0)),
        ("hand:muon 10x too small (eta 0.01)", with_step_size(muon, 0.01)),
        ("hand:muon ignoring the schedule (constant 0.03)", _constant_step(muon, 0.03)),
        ("hand:muon without the AdamW part (eta 0.03)", with_step_size(everywhere, 0.03)),
        ("hand:orthogonalized adam (eta 0.03)", with_step_size(adam, 0.03)),
        ("hand:muon with lion off the hidden matrices (eta 0.03)",
         with_step_size(with_lion, 0.03)),
        ("hand:muon plus 0.05 x sign (eta 0.03)", with_step_size(plus_sign, 0.03)),
    ]  # fmt: skip
