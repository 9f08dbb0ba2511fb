"""How far searches got into the matrix language: per journal, the children whose live
statements use a matrix operation or a per-tensor input (shaped), those that keep a live
``orthogonalize``, and the best search fitness of the latter.

    python scripts/matrix_use.py docs/data/discovery/*.db
"""

from __future__ import annotations

import sys
from pathlib import Path

from optforge.program import parse
from optforge.program.analysis import analyze
from optforge.search.journal import Journal


def main(paths: list[str]) -> None:
    print("| journal | children | shaped | live orthogonalize | best of those |")
    print("|---|---|---|---|---|")
    for path in paths:
        journal = Journal(path)
        shaped = orth = 0
        best = None
        rows = journal.candidates("kind = 'child'")
        for row in rows:
            program = parse(row["source"])
            analysis = analyze(program)
            shaped += analysis.shaped
            live = [s for i, s in enumerate(program.statements) if i not in analysis.redundant]
            if any(s.op == "orthogonalize" for s in live):
                orth += 1
                if row["fitness"] is not None and (best is None or row["fitness"] > best):
                    best = row["fitness"]
        journal.close()
        shown = "-" if best is None else f"{best:.3f}"
        print(f"| {Path(path).name} | {len(rows)} | {shaped} | {orth} | {shown} |")


if __name__ == "__main__":
    main(sys.argv[1:])
