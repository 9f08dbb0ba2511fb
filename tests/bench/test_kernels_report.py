"""`optforge bench kernels`: every Triton Lion kernel compiles for sm_80 and sm_90 with no
GPU, without a spill in its loops, and its aligned variants move the tensors' data with
128-bit accesses only (read from the PTX). Also: the PTX and SASS readers on hand-written
listings, and the host's split of tensors into aligned and unaligned chunks."""

from __future__ import annotations

import json

import pytest
import torch

from optforge.bench import host, kernels
from optforge.cli import main
from optforge.optim.kernels import triton as triton_kernel

PTX = """
.visible .entry step(
\t.param .u64 step_param_0, .param .u64 step_param_1, .param .u64 step_param_2
)
{
\tld.param.b64 \t%rd1, [step_param_0];
\tld.param.b64 \t%rd2, [step_param_1];
\tld.param.b64 \t%rd9, [step_param_2];
\tld.global.b64 { %rd3 }, [ %rd2 + 0 ];          // t, from the chunk list
\tmad.lo.s64 \t%rd4, %rd3, 8, %rd1;
\tld.global.b64 { %rd5 }, [ %rd4 + 0 ];          // a tensor's address, from the table
$L__BB0_1:
\tadd.s64 \t%rd6, %rd5, %rd8;
\t@%p1 ld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd6 + 0 ];
\tst.global.b16 [ %rd6 + 0 ], %rs1;
\tmov.b64 \t%rd8, %rd7;                            // loop back-edge: defined after its use
\tadd.s64 \t%rd7, %rd8, 16;
\tld.global.b32 { %r5 }, [ %rd9 + 0 ];           // a scalar argument (the lr)
\tbra.uni \t$L__BB0_1;
\tret;
}
"""


def test_the_ptx_reader_classifies_accesses_by_where_their_address_comes_from():
    counts = kernels.classify_accesses(PTX, ["table", "chunks", "lr_ptr"])
    assert counts == {
        ("argument", "ld", 64): 2,  # the chunk entry and the table entry
        ("data", "ld", 128): 1,
        ("data", "st", 16): 1,
        ("argument", "ld", 32): 1,
    }


def test_tables_split_each_tensor_at_its_last_whole_vector():
    vec, base = 4, 1 << 20  # fp32; addresses: aligned unless offset by 4 bytes
    numels = [10, 0, 3, triton_kernel.CHUNK + 5, 9]
    p = [base, base, base, base, base + 4]
    g, m = [base] * 5, [base] * 5
    table = triton_kernel._Table(p + g + m, numels, torch.device("cpu"), vec, vec)
    chunks = {aligned: chunks.view(-1, 3).tolist() for chunks, _, aligned in table.launches}
    assert chunks[True] == [
        [0, 0, 8],
        [3, 0, triton_kernel.CHUNK],
        [3, triton_kernel.CHUNK, triton_kernel.CHUNK + 4],
    ]
    assert chunks[False] == [
        [0, 8, 10],
        [2, 0, 3],
        [3, triton_kernel.CHUNK + 4, triton_kernel.CHUNK + 5],
        [4, 0, 9],  # its param is not on a 16-byte boundary
    ]
    assert table.numels.tolist() == numels


@pytest.fixture(scope="module")
def rows():
    pytest.importorskip("triton")
    return kernels.report(["sm_80", "sm_90"], kernels.variants(quick=True), jobs=2)


SASS = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*02d0*/                   STL.64 [R1], R14 ;
        /*03d0*/                   LDG.E.128 R4, [R2.64] ;
        /*03e0*/                   LDL.LU R8, [R1+0x8] ;
        /*0400*/                   STL [R1+0x8], R8 ;
        /*1380*/              @!P1 BRA 0x3d0 ;
        /*13a0*/                   LDL.LU.64 R12, [R1] ;
        /*13b0*/               @P0 BRA 0x1400 ;
        /*13c0*/                   EXIT ;
"""


def test_spills_count_only_inside_loops():
    """A value parked across the loop (one store before, one load after) is free; the load
    and store between the backward branch's target and the branch are not."""
    assert kernels.count_loop_spills(SASS) == 2
    assert kernels.count_loop_spills(SASS.replace("@!P1 BRA 0x3d0", "@!P1 BRA 0x1400")) == 0


def test_every_variant_compiles_for_sm80_and_sm90_without_spills_in_loops(rows):
    assert len(rows) == 2 * len(kernels.variants(quick=True))
    assert kernels.problems(rows) == []
    for r in rows:
        assert r.compiled and r.registers is not None and r.loop_spills == 0
        assert r.widths("data", "ld"), f"{r.variant}: no data loads found in its PTX"


def test_aligned_variants_use_128_bit_accesses_and_unaligned_ones_do_not(rows):
    for r in rows:
        loads, stores = r.widths("data", "ld"), r.widths("data", "st")
        if r.aligned:
            assert set(loads) == {128}, r.variant
            assert set(stores) <= {128}, r.variant  # count_agreement stores no data
        else:  # what the alignment promise buys: without it every access is scalar
            assert max(loads) < 128, r.variant
        if "(count)" not in r.variant:
            assert stores, r.variant


def test_the_command_prints_the_table_and_fails_on_a_problem(rows, capsys, tmp_path,
                                                             monkeypatch):  # fmt: skip
    out = tmp_path / "kernels.json"
    argv = ["bench", "kernels", "--quick", "--target", "sm_90", "--markdown", "--json", str(out)]
    monkeypatch.setattr(kernels, "report", lambda targets, chosen, jobs, progress:
                        [r for r in rows if r.target in targets])  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "| fp32/fp32 aligned plain | sm_90 | yes |" in text
    summary = next(line for line in text.splitlines() if line.startswith("| sm_90 | "))
    quick = len(kernels.variants(quick=True))
    assert summary.startswith(f"| sm_90 | {quick} of {quick} |")
    aligned = summary.split("|")[6]  # only 128-bit accesses in the aligned variants
    assert "×128b" in aligned and "×8b" not in aligned and "×32b" not in aligned
    assert len(json.loads(out.read_text())) == len(kernels.variants(quick=True))
    spilled = [kernels.Row(**{**r.__dict__, "spill_bytes": 64, "loop_spills": 2})
               for r in rows[:1]]  # fmt: skip
    monkeypatch.setattr(kernels, "report", lambda *a, **k: spilled)
    assert main(argv) == 1
    assert "2 spill loads/stores inside a loop" in capsys.readouterr().out
    assert main(["bench", "kernels", "--target", "sm_70"]) == 2


def test_the_host_benchmark_stubs_the_launches_and_restores_them(capsys):
    launcher, runs_on = triton_kernel._kernels, triton_kernel.runs_on
    result = host.host_step_time(n_tensors=12, steps=20, cautious=True)
    assert 0 < result["p10_us"] <= result["median_us"] <= result["p90_us"]
    assert 0 < result["table_us"] < result["median_us"]
    assert triton_kernel._kernels is launcher and triton_kernel.runs_on is runs_on
    assert triton_kernel._tables == []  # its tables were dropped
    assert main(["bench", "host", "--tensors", "8", "--steps", "10", "--markdown"]) == 0
    assert "| cautious |" in capsys.readouterr().out


def test_launches_compile_as_the_report_does(monkeypatch):
    """The report compiles with the launch's options (no fp contraction), so what it proves
    about the PTX holds for what runs; one launch per chunk list, aligned and not."""
    calls = []

    class Recording:
        def __getitem__(self, grid):
            return lambda *args, **kwargs: calls.append((grid, kwargs))

    monkeypatch.setattr(triton_kernel, "_kernels", lambda: type("K", (), {
        "step": Recording(), "count_agreement": Recording()}))  # fmt: skip
    triton_kernel.clear_cache()
    params = [torch.randn(100), torch.randn(1)]  # 100 = 25 vectors; 1: unaligned remainder
    grads, momenta = [torch.randn_like(p) for p in params], [torch.zeros_like(p) for p in params]
    triton_kernel.lion_step(params, grads, momenta, lr=0.1, beta1=0.9, beta2=0.99,
                            weight_decay=0.0, maximize=False, cautious=True)  # fmt: skip
    triton_kernel.clear_cache()
    assert len(calls) == 4  # count and step, each over the aligned and the unaligned chunks
    assert [kwargs["ALIGNED"] for _, kwargs in calls] == [True, False, True, False]
    for _, kwargs in calls:
        assert kwargs["enable_fp_fusion"] is False and kwargs["num_warps"] == 4
