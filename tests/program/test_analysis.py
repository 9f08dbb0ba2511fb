"""Abstract execution: types, invalid programs, redundancy across steps, structural hashes."""

from __future__ import annotations

from optforge.program import library, parse
from optforge.program.analysis import analyze


def program(*lines: str, returns="update, v1, v2"):
    return parse("def train(w, g, v1, v2, lr):\n" + "".join(f"    {x}\n" for x in lines)
                 + f"    return {returns}\n")  # fmt: skip


def test_types_flow_through_statements():
    a = analyze(program("n = norm(g)", "s = n * lr", "u = g * s", "k = global_norm(u)",
                        "update = u + k"))  # fmt: skip
    assert a.valid and a.types == ("scalar", "scalar", "tensor", "scalar", "tensor")


def test_shape_errors_and_undefined_names_are_found():
    scalar_update = analyze(program("update = lr * 0.5"))
    assert not scalar_update.valid
    assert "returned update 'update' is a scalar" in scalar_update.errors[0]
    scalar_state = analyze(program("update = g * lr", "v1 = dot(g, w)"))
    assert "returned v1 'v1' is a scalar" in scalar_state.errors[0]
    undefined = analyze(program("update = g * m"))
    assert "'m' is not defined" in undefined.errors[0]
    missing = analyze(program("u = g * lr"))
    assert "returned update 'update' is not defined" in missing.errors[0]


def test_dead_code_is_redundant():
    a = analyze(program("x = cos(g)", "y = x + w", "update = g * lr", "z = y * 2.0"))
    assert a.redundant == {0, 1, 3}
    assert a.redundant_fraction == 0.75


def test_state_written_but_never_read_is_dead_with_all_it_needs():
    # v2 is updated every step but nothing that reaches update ever reads it
    a = analyze(program("g2 = square(g)", "v2 = interp(g2, v2, 0.999)", "update = g * lr"))
    assert a.redundant == {0, 1}
    assert a.reads == frozenset() and a.live_outputs == (True, False, False)


def test_state_read_next_step_keeps_its_writer_alive():
    a = analyze(library.adamw())
    assert a.redundant == frozenset() and a.reads == {"v1", "v2"}


def test_state_feeding_only_itself_is_dead():
    a = analyze(program("v1 = interp(g, v1, 0.9)", "update = g * lr"))
    assert a.redundant == {0}


def test_state_needed_through_another_state():
    # update reads v2; v2 is computed from v1; so v1 is live too
    a = analyze(program("update = v2 * lr", "v2 = interp(v1, v2, 0.5)", "v1 = interp(g, v1, 0.9)"))
    assert a.redundant == frozenset() and a.reads == {"v1", "v2"}


def test_overwritten_value_is_redundant():
    a = analyze(program("update = g * lr", "update = w * lr"))
    assert a.redundant == {0}


def test_structural_hash_ignores_names_order_dead_code_and_commutation():
    base = analyze(library.lion(0.9, 0.99, 0.1)).structural_hash
    renamed = program("c2 = interp(g, v1, 0.9)", "s = sign(c2)", "dd = w * 0.1", "q = s + dd",
                      "update = q * lr", "v1 = interp(g, v1, 0.99)")  # fmt: skip
    reordered = program("dd = w * 0.1", "c2 = interp(g, v1, 0.9)", "s = sign(c2)",
                        "q = dd + s", "update = lr * q", "v1 = interp(g, v1, 0.99)",
                        "junk = cos(w)")  # fmt: skip
    assert analyze(renamed).structural_hash == base == analyze(reordered).structural_hash
    different = analyze(library.lion(0.9, 0.98, 0.1)).structural_hash
    assert different != base
