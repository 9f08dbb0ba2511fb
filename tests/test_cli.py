from __future__ import annotations

import subprocess
import sys

import pytest

from optforge.cli import main


def test_help_lists_commands():
    proc = subprocess.run(
        [sys.executable, "-m", "optforge.cli", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    assert "bench" in proc.stdout


def test_python_dash_m_optforge_and_version():
    import optforge

    proc = subprocess.run(
        [sys.executable, "-m", "optforge", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"optforge {optforge.__version__}"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "step", "--params", "lots"], "'lots' is not a number"),
        (["bench", "step", "--params", "0"], "'0' must be a finite number >= 1"),
        (["bench", "step", "--iters", "0"], "'0' must be >= 1"),
        (["bench", "step", "--device", "tpu"], "invalid choice: 'tpu'"),
        (["bench", "step", "--dtype", "int4"], "invalid choice: 'int4'"),
    ],
)
def test_bad_arguments_are_named(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
