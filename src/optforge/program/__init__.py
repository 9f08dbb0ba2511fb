"""The optimizer program language: parse, run, analyse, fingerprint, simplify."""

from optforge.program.program import Program, ProgramError, Statement, parse  # noqa: I001
from optforge.program.analysis import Analysis, analyze
from optforge.program.fingerprint import fingerprint
from optforge.program.simplify import simplify
from optforge.program import library

__all__ = [
    "Analysis", "Program", "ProgramError", "Statement", "analyze", "fingerprint", "library",
    "parse", "simplify",
]  # fmt: skip
