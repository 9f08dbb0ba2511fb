"""The text form: a strict subset of Python, parsed without executing anything."""

from __future__ import annotations

import builtins
import contextlib
import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optforge.program import Program, ProgramError, Statement, library, parse
from optforge.program.generate import random_program

HEADER = "def train(w, g, v1, v2, lr):\n"


def body(*lines: str) -> str:
    return HEADER + "".join(f"    {line}\n" for line in lines)


@pytest.mark.parametrize("name", library.PROGRAMS)
def test_library_programs_round_trip(name):
    program = library.PROGRAMS[name]()
    assert parse(program.source()) == program
    assert Program.from_json(program.to_json()) == program
    assert Program.from_json(json.dumps(program.to_json())) == program
    assert hash(parse(program.source())) == hash(program)


def test_every_statement_form_parses():
    program = parse(body(
        "a = interp(g, v1, 0.9)", "b = a + w", "c = b - -0.5", "d = c * lr", "e2 = d / 2",
        "f = -e2", "h = f", "k = 1e-3", "m = pi * eps", "update = sign(d)", "return update, v1, v2",
    ))  # fmt: skip
    ops = [s.op for s in program.statements]
    assert ops == ["interp", "add", "sub", "mul", "div", "negative", "identity", "identity",
                   "mul", "sign"]  # fmt: skip
    assert program.statements[2].args == ("b", -0.5)
    assert program.statements[4].args == ("d", 2.0)
    assert len(program) == 10


def test_comments_blank_lines_and_tabs_are_allowed():
    text = (
        "# an optimizer\n"
        + HEADER
        + "\n\t# body\n\tupdate = g * lr  # sgd\n\treturn update, v1, v2\n"
    )
    assert parse(text).statements == (Statement("update", "mul", ("g", "lr")),)


@pytest.mark.parametrize(
    ("text", "message", "line", "column"),
    [
        ("", "empty program", 1, 1),
        ("def train(w, g, v1, v2):\n    return g, v1, v2", "expected ','", 1, 23),
        ("def f(w, g, v1, v2, lr):\n    return g, v1, v2", "expected 'train'", 1, 5),
        (body("x = foo(g)", "return x, v1, v2"), "unknown operation 'foo'", 2, 9),
        (body("x = g.real", "return x, v1, v2"), "unexpected character '.'", 2, 10),
        (body("import os", "return g, v1, v2"), "'import' is reserved", 2, 5),
        (body("x = 'a'", "return x, v1, v2"), "unexpected character", 2, 9),
        (body("x = clip(g, c=1.0)", "return x, v1, v2"), "expected ','", 2, 18),
        (body("x = 1e400", "return x, v1, v2"), "not a finite number", 2, 9),
        (body("x = 5e12 * g", "return x, v1, v2"), "not a finite number", 2, 9),
        (body("x = g + w + w", "return x, v1, v2"), "unexpected '\\+'", 2, 15),
        (body("x = sign(g, w)", "return x, v1, v2"), "sign takes 1 arguments, got 2", 2, 5),
        (body("x = lambda", "return x, v1, v2"), "reserved", 2, 9),
        (body("for = g", "return g, v1, v2"), "reserved", 2, 5),
        (body("pi = g", "return g, v1, v2"), "cannot assign to the constant 'pi'", 2, 5),
        (body("sign = g", "return g, v1, v2"), "is an operation", 2, 5),
        (body("x = g * sign", "return x, v1, v2"), "is an operation", 2, 13),
        (body("x = g"), "missing 'return update, v1, v2'", 2, 10),
        (body("return g, v1"), "expected ','", 2, 17),
        (body("return g, v1, v2", "x = g"), "nothing may follow", 3, 5),
        (HEADER + "x = g\n", "must be indented", 2, 1),
        (HEADER + "    x = g\n  return x, v1, v2\n", "inconsistent indentation", 3, 1),
        ("  " + HEADER, "must not be indented", 1, 1),
    ],
)
def test_rejections_name_line_and_column(text, message, line, column):
    with pytest.raises(ProgramError, match=message) as exc:
        parse(text)
    assert (exc.value.line, exc.value.column) == (line, column), str(exc.value)


def test_limits_on_size():
    with pytest.raises(ProgramError, match="at most"):
        parse("#" * 200_000)
    lines = [f"x{i} = g * 1.0" for i in range(1001)]
    with pytest.raises(ProgramError, match="more than 1000 statements"):
        parse(body(*lines, "return g, v1, v2"))
    with pytest.raises(ProgramError, match="invalid variable name"):
        parse(body("x" * 65 + " = g", "return g, v1, v2"))


def test_parse_never_evaluates():
    """Parsing must not reach eval, exec or compile (Python's own parser included)."""
    saved = {name: getattr(builtins, name) for name in ("eval", "exec", "compile")}

    def forbidden(*args, **kwargs):
        raise AssertionError("parse executed or compiled its input")

    hostile = body("x = __import__('os').system('touch /tmp/pwned')", "return x, v1, v2")
    try:
        for name in saved:
            setattr(builtins, name, forbidden)
        assert parse(library.adamw().source()) == library.adamw()
        with pytest.raises(ProgramError):
            parse(hostile)
    finally:
        for name, fn in saved.items():
            setattr(builtins, name, fn)


def test_direct_construction_is_checked():
    with pytest.raises(ProgramError, match="unknown operation 'frobnicate'"):
        Statement("x", "frobnicate", ("g",))
    with pytest.raises(ProgramError, match="not a finite number"):
        Statement("x", "mul", ("g", float("nan")))
    with pytest.raises(ProgramError, match="neither a name nor a float"):
        Statement("x", "mul", ("g", None))
    with pytest.raises(ProgramError, match="returns \\(update, v1, v2\\)"):
        Program((), ("update", "v1"))
    assert Statement("x", "mul", ("g", 2)).args == ("g", 2.0)  # ints become floats
    assert Statement("x", "negative", (2.0,)) == Statement("x", "identity", (-2.0,))


@pytest.mark.parametrize("data", [
    "not json", '{"statements": 3}', '{"statements": [["x", "sign"]], "returns": ["x","v1","v2"]}',
    {"statements": [["x", "sign", ["g"]]], "returns": ["x", "v1"]},
])  # fmt: skip
def test_from_json_rejects_malformed_input(data):
    with pytest.raises(ProgramError):
        Program.from_json(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), length=st.integers(1, 25))
def test_random_valid_programs_round_trip(seed, length):
    program = random_program(random.Random(seed), length)
    assert parse(program.source()) == program
    assert Program.from_json(program.to_json()) == program


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_garbage_gives_program_error_only(text):
    with contextlib.suppress(ProgramError):
        parse(text)


_ALPHABET = st.sampled_from(
    list("abcdefgw12v lrx=()+-*/,.:#\n\t'\"_e[]{}!@$%^&;")
    + ["def ", "train", "return ", "sign(", "interp(", "1e999", "import ", "lambda ", "__"]
)


@settings(max_examples=500, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    edits=st.lists(st.tuples(st.integers(0, 10_000), _ALPHABET), max_size=5),
)
def test_mutilated_programs_give_program_error_only(seed, edits):
    text = random_program(random.Random(seed), 6).source()
    for position, snippet in edits:
        position %= len(text) + 1
        text = text[:position] + snippet + text[position:]
    try:
        program = parse(text)
    except ProgramError:
        return
    assert parse(program.source()) == program
