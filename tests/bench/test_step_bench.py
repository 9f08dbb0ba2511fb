"""The step benchmark measures every implementation and reports consistent figures.

No timing is asserted (timings belong to the benchmark command); what is checked is that every
row is measured and the derived columns follow from the measured times."""

from __future__ import annotations

import json
import math

import pytest

from optforge.bench import step as bench
from optforge.cli import main


@pytest.fixture(scope="module")
def report():
    return bench.run(params=2e5, iters=2, rounds=2, compiled_limit=False, first_step=True)


def test_every_candidate_is_measured(report):
    names = [r.name for r in report.rows]
    for name in ["optforge Lion fused", "optforge Lion foreach", "optforge Lion single",
                 "torch AdamW fused", "torch AdamW foreach"]:  # fmt: skip
        assert name in names
    for row in report.rows:
        assert row.error is None, f"{row.name}: {row.error}"
        assert len(row.times_ms) == 4 and all(t > 0 for t in row.times_ms)


def test_derived_columns_follow_from_times(report):
    ref = report.row(bench.REFERENCE)
    assert report.params == sum(math.prod(s) for s in bench.model_shapes(2e5))
    for row in report.rows:
        assert report.ratio(row, bench.REFERENCE) == pytest.approx(row.ms / ref.ms)
        assert report.gbps(row) == pytest.approx(row.bytes_per_param * report.params / row.ms / 1e6)
    assert report.first_step_s is not None and report.first_step_s < 60


def test_shapes_are_transformer_like():
    shapes = bench.model_shapes(20e6)
    total = sum(math.prod(s) for s in shapes)
    assert 20e6 <= total < 21e6 and 150 <= len(shapes) <= 200
    assert {len(s) for s in shapes} == {1, 2}


def test_cli_writes_json_and_markdown(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "step", "--params", "1e5", "--iters", "2", "--rounds", "1", "--no-limit",
            "--no-first-step", "--markdown", "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "| optforge Lion fused |" in text and "| torch AdamW fused |" in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len({line.count("|") for line in table}) == 1, "header and rows differ in columns"
    data = json.loads(out.read_text())
    rows = {r["name"]: r for r in data["rows"]}
    assert rows["torch AdamW fused"]["vs_adamw_fused"] == pytest.approx(1.0)
    assert data["params"] > 1e5


def test_saved_results_can_be_shown_and_summarized(tmp_path, capsys, report):
    files = []
    for i in range(2):
        files.append(str(tmp_path / f"run{i}.json"))
        bench.write_json(report, files[-1])
    assert main(["bench", "show", files[0], "--markdown"]) == 0
    shown = capsys.readouterr().out
    assert bench.markdown(report) in shown
    assert main(["bench", "summary", *files, "--markdown"]) == 0
    summary = capsys.readouterr().out
    lion = next(line for line in summary.splitlines() if line.startswith("| optforge Lion fused"))
    ratio = report.ratio(report.row("optforge Lion fused"), bench.REFERENCE)
    assert f"| 2 | {report.row('optforge Lion fused').ms:.2f} | {ratio:.2f}-{ratio:.2f}x |" in lion
