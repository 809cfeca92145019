"""The ways a user starts onnxprune: the console script, `python -m onnxprune`, `--version`."""

from __future__ import annotations

import subprocess
import sys

from test_cli_errors import run

import onnxprune


def test_version_flag_prints_the_package_version():
    result = run("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"onnxprune {onnxprune.__version__}"


def test_python_dash_m_runs_the_cli(fixture_model):
    completed = subprocess.run(
        [sys.executable, "-m", "onnxprune", "inspect", str(fixture_model("matmul_mlp")), "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert '"layers"' in completed.stdout
    version = subprocess.run([sys.executable, "-m", "onnxprune", "--version"], capture_output=True, text=True)
    assert version.stdout.strip() == f"onnxprune {onnxprune.__version__}"
