"""The optimizer program language: parse, run, analyse, fingerprint, simplify."""

from optforge.program import library
from optforge.program.program import Program, ProgramError, Statement, parse

__all__ = ["Program", "ProgramError", "Statement", "library", "parse"]
