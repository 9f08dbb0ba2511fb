"""Optimizer programs: an immutable, hashable value, its canonical text and its JSON form.

The text form is a strict subset of Python, read by a small hand-written tokenizer and parser
(the text is never given to eval/exec/compile or to Python's own parser):

    def train(w, g, v1, v2, lr):
        m = interp(g, v1, 0.9)        # name = prim(arg, ...)
        u = sign(m)
        d = w * 0.1                   # name = a OP b (+ - * /); also name = -a and name = a
        u = u + d                     # one operation per statement
        update = u * lr
        v1 = interp(g, v1, 0.99)
        return update, v1, v2

Arguments are variable names, the named constants ``pi e eps``, the per-tensor inputs
``hidden aspect step`` (primitives.py), or numeric literals.
"""

from __future__ import annotations

import json
import keyword
import math
import re
from dataclasses import dataclass
from typing import Any

from optforge.program.primitives import INFIX, LEAVES, PRIMITIVES

INPUTS = ("w", "g", "v1", "v2", "lr")
STATES = ("v1", "v2")
MAX_TEXT = 100_000
MAX_STATEMENTS = 1_000
MAX_NAME = 64
MAX_LITERAL = 1e12

Arg = str | float


class ProgramError(ValueError):
    """A program text or structure that is not a valid optimizer program."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None):
        self.line, self.column = line, column
        where = f"line {line}, column {column}: " if line is not None else ""
        super().__init__(where + message)


@dataclass(frozen=True)
class Statement:
    """``target = op(*args)``; args are variable/constant names (str) or literals (float)."""

    target: str
    op: str
    args: tuple[Arg, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.args, tuple) or any(_is_number(a) for a in self.args):
            args = tuple(float(a) if _is_number(a) else a for a in self.args)
            object.__setattr__(self, "args", args)
        if self.op == "negative" and len(self.args) == 1 and isinstance(self.args[0], float):
            # `-(literal)` is the literal negated: one spelling, so source() round-trips
            object.__setattr__(self, "op", "identity")
            object.__setattr__(self, "args", (-self.args[0],))
        _check_name(self.target, "target")
        if self.target in LEAVES:
            what = "constant" if LEAVES[self.target].kind == "constant" else "input"
            raise ProgramError(f"cannot assign to the {what} {self.target!r}")
        prim = PRIMITIVES.get(self.op)
        if prim is None or self.op in LEAVES:
            raise ProgramError(f"unknown operation {self.op!r}")
        if len(self.args) != prim.arity:
            raise ProgramError(f"{self.op} takes {prim.arity} arguments, got {len(self.args)}")
        for arg in self.args:
            if isinstance(arg, str):
                _check_name(arg, "argument")
            elif isinstance(arg, float):
                _check_literal(arg)
            else:
                raise ProgramError(f"argument {arg!r} is neither a name nor a float")

    def source(self) -> str:
        a = [_arg_text(x) for x in self.args]
        prim = PRIMITIVES[self.op]
        if self.op == "identity":
            return f"{self.target} = {a[0]}"
        if self.op == "negative":
            return f"{self.target} = -{a[0]}"
        if prim.symbol:
            return f"{self.target} = {a[0]} {prim.symbol} {a[1]}"
        return f"{self.target} = {self.op}({', '.join(a)})"


@dataclass(frozen=True, eq=True)
class Program:
    """A straight-line optimizer program: ``def train(w, g, v1, v2, lr)`` returning
    ``(update, new_v1, new_v2)``; the caller applies ``w <- w - update``."""

    statements: tuple[Statement, ...]
    returns: tuple[str, str, str] = ("update", "v1", "v2")

    def __post_init__(self) -> None:
        if not isinstance(self.statements, tuple):
            object.__setattr__(self, "statements", tuple(self.statements))
        if not isinstance(self.returns, tuple):
            object.__setattr__(self, "returns", tuple(self.returns))
        if len(self.statements) > MAX_STATEMENTS:
            raise ProgramError(f"{len(self.statements)} statements (at most {MAX_STATEMENTS})")
        if len(self.returns) != 3:
            raise ProgramError(f"a program returns (update, v1, v2), got {len(self.returns)}")
        for name in self.returns:
            _check_name(name, "returned name")

    def __len__(self) -> int:
        return len(self.statements)

    def __hash__(self) -> int:
        # programs key every cache (analysis, compilation, fitness): hash once, not per lookup
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash((self.statements, self.returns))
            object.__setattr__(self, "_hash", cached)
        return cached

    def source(self) -> str:
        body = [f"    {s.source()}" for s in self.statements]
        return "\n".join(
            ["def train(w, g, v1, v2, lr):", *body, f"    return {', '.join(self.returns)}"]
        )

    def __str__(self) -> str:
        return self.source()

    def to_json(self) -> dict[str, Any]:
        return {
            "statements": [[s.target, s.op, list(s.args)] for s in self.statements],
            "returns": list(self.returns),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | str) -> Program:
        """Rebuild a program from :meth:`to_json` output (a dict or its JSON text)."""
        try:
            if isinstance(data, str):
                data = json.loads(data)
            statements = tuple(
                Statement(target, op, tuple(float(a) if _is_number(a) else a for a in args))
                for target, op, args in data["statements"]
            )
            return cls(statements, tuple(data["returns"]))
        except ProgramError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise ProgramError(f"not a program in JSON form: {e}") from e


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _arg_text(arg: Arg) -> str:
    return arg if isinstance(arg, str) else repr(float(arg))


def _check_name(name: Any, what: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > MAX_NAME:
        raise ProgramError(f"invalid {what} name {name!r}")
    if keyword.iskeyword(name) or name == "train":
        raise ProgramError(f"{what} name {name!r} is reserved")
    if name in PRIMITIVES and name not in LEAVES:
        raise ProgramError(f"{what} name {name!r} is an operation")


def _check_literal(value: float) -> None:
    if not math.isfinite(value) or abs(value) > MAX_LITERAL:
        raise ProgramError(f"literal {value!r} is not a finite number within ±{MAX_LITERAL:g}")


# ---------------------------------------------------------------------------------------------
# Parsing


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOKEN = re.compile(
    r"(?P<space>[ \t]+)|(?P<comment>#.*)|(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>[=(),:+\-*/])"
)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    line: int
    column: int


def _tokenize(line: str, lineno: int) -> list[_Token]:
    tokens, pos = [], 0
    while pos < len(line):
        m = _TOKEN.match(line, pos)
        if m is None:
            raise ProgramError(f"unexpected character {line[pos]!r}", lineno, pos + 1)
        if m.lastgroup not in ("space", "comment"):
            tokens.append(_Token(m.lastgroup, m.group(), lineno, pos + 1))
        pos = m.end()
    return tokens


class _Line:
    """A cursor over one line's tokens."""

    def __init__(self, tokens: list[_Token], lineno: int, length: int):
        self.tokens, self.pos, self.lineno, self.length = tokens, 0, lineno, length

    def peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def error(self, message: str) -> ProgramError:
        tok = self.peek()
        return ProgramError(message, self.lineno, tok.column if tok else self.length + 1)

    def take(self, kind: str, text: str | None = None) -> _Token:
        tok = self.peek()
        if tok is None or tok.kind != kind or (text is not None and tok.text != text):
            want = repr(text) if text else f"a {kind}"
            got = repr(tok.text) if tok else "end of line"
            raise self.error(f"expected {want}, found {got}")
        self.pos += 1
        return tok

    def at(self, kind: str, text: str | None = None) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == kind and (text is None or tok.text == text)

    def end(self) -> None:
        if self.peek() is not None:
            raise self.error(f"unexpected {self.peek().text!r}")


def parse(text: str) -> Program:
    """Parse program text; every rejection is a :class:`ProgramError` with line and column."""
    if not isinstance(text, str):
        raise ProgramError(f"program text must be a str, got {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise ProgramError(f"program text of {len(text)} characters (at most {MAX_TEXT})")
    lines = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        tokens = _tokenize(raw, lineno)
        if tokens:
            indent = len(raw) - len(raw.lstrip(" \t"))
            lines.append((_Line(tokens, lineno, len(raw)), indent, raw[:indent]))
    if not lines:
        raise ProgramError("empty program: expected 'def train(w, g, v1, v2, lr):'", 1, 1)
    header, indent, _ = lines[0]
    if indent:
        raise ProgramError("the 'def' line must not be indented", header.lineno, 1)
    _parse_header(header)
    statements, returns, body_indent = [], None, None
    for line, indent, prefix in lines[1:]:
        if returns is not None:
            raise line.error("nothing may follow the return statement")
        if body_indent is None:
            if indent == 0:
                raise line.error("the body must be indented")
            body_indent = prefix
        elif prefix != body_indent:
            raise ProgramError("inconsistent indentation", line.lineno, 1)
        if line.at("name", "return"):
            returns = _parse_return(line)
        else:
            statements.append(_parse_statement(line))
            if len(statements) > MAX_STATEMENTS:
                raise line.error(f"more than {MAX_STATEMENTS} statements")
    if returns is None:
        last = lines[-1][0]
        raise ProgramError("missing 'return update, v1, v2'", last.lineno, last.length + 1)
    return Program(tuple(statements), returns)


def _parse_header(line: _Line) -> None:
    line.take("name", "def")
    line.take("name", "train")
    line.take("op", "(")
    for i, name in enumerate(INPUTS):
        if i:
            line.take("op", ",")
        line.take("name", name)
    line.take("op", ")")
    line.take("op", ":")
    line.end()


def _parse_return(line: _Line) -> tuple[str, str, str]:
    line.take("name", "return")
    names = [_name(line)]
    for _ in range(2):
        line.take("op", ",")
        names.append(_name(line))
    line.end()
    return tuple(names)


def _name(line: _Line) -> str:
    tok = line.take("name")
    _wrap(line, tok, _check_name, tok.text, "variable")
    return tok.text


def _wrap(line: _Line, tok: _Token, fn, *args):
    """Re-raise a ProgramError from a structural check with this token's position."""
    try:
        return fn(*args)
    except ProgramError as e:
        raise ProgramError(str(e), line.lineno, tok.column) from None


def _parse_statement(line: _Line) -> Statement:
    target_tok = line.peek()
    target = _name(line)
    line.take("op", "=")
    first = line.peek()
    if line.at("name") and first.text in PRIMITIVES and first.text not in LEAVES:
        op_tok = line.take("name")
        line.take("op", "(")
        args = []
        while not line.at("op", ")"):
            if args:
                line.take("op", ",")
            args.append(_atom(line))
        line.take("op", ")")
        op = op_tok.text
    elif line.at("name") and _next_is(line, "("):
        raise line.error(f"unknown operation {first.text!r}")
    elif line.at("op", "-") and not _next_is_number(line):
        line.take("op", "-")
        op, args = "negative", [_atom(line)]
    else:
        args = [_atom(line)]
        if line.peek() is None:
            op = "identity"
        else:
            symbol = line.take("op")
            if symbol.text not in INFIX:
                raise ProgramError(f"unexpected {symbol.text!r}", line.lineno, symbol.column)
            op = INFIX[symbol.text]
            args.append(_atom(line))
    line.end()
    return _wrap(line, target_tok, Statement, target, op, tuple(args))


def _next_is_number(line: _Line) -> bool:
    nxt = line.tokens[line.pos + 1] if line.pos + 1 < len(line.tokens) else None
    return nxt is not None and nxt.kind == "number"


def _next_is(line: _Line, text: str) -> bool:
    nxt = line.tokens[line.pos + 1] if line.pos + 1 < len(line.tokens) else None
    return nxt is not None and nxt.text == text


def _atom(line: _Line) -> Arg:
    tok = line.peek()
    if tok is None:
        raise line.error("expected a name or a number, found end of line")
    if tok.kind == "name":
        if tok.text in PRIMITIVES and tok.text not in LEAVES:
            raise line.error(f"{tok.text!r} is an operation: call it in its own statement")
        return _name(line)
    sign = 1.0
    if line.at("op", "-"):
        line.take("op", "-")
        sign = -1.0
    num = line.take("number")
    if len(num.text) > 40:
        raise ProgramError(f"literal {num.text[:20]}... is too long", line.lineno, num.column)
    value = sign * float(num.text)
    _wrap(line, num, _check_literal, value)
    return value
