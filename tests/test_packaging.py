"""The tool as users install it: a wheel, installed outside the source tree, runs the demo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import REPO


@pytest.mark.slow
def test_a_wheel_installed_outside_the_source_tree_runs_the_demo(tmp_path):
    wheels = tmp_path / "dist"
    source = tmp_path / "source"  # a copy: building writes build/ and egg-info beside the sources
    ignored = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", "test-artifacts",
                                     ".hypothesis", "onnxprune-demo")  # fmt: skip
    shutil.copytree(REPO, source, ignore=ignored)
    # offline: setuptools from this environment builds them (python -m build --no-isolation)
    command = [sys.executable, "-m", "build", "--no-isolation", "--wheel", "--sdist", "--outdir", str(wheels)]
    command.append(str(source))
    built = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    wheel = next(wheels.glob("onnxprune-*.whl"))
    assert next(wheels.glob("onnxprune-*.tar.gz")).stat().st_size > 2_000_000, "the sdist carries the demo model"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    # the dependencies come from this environment (no download), onnxprune only from the wheel
    site = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import onnxprune, matlab_bridge; print(onnxprune.__file__)"],
        capture_output=True, text=True, cwd=outside, env=environment, check=True,
    ).stdout  # fmt: skip
    assert where.startswith(str(venv)), f"onnxprune imported from {where}, not from the wheel"
    version = subprocess.run([str(venv / "bin" / "onnxprune"), "--version"], capture_output=True, text=True,
                             cwd=outside, env=environment)  # fmt: skip
    assert version.returncode == 0 and version.stdout.startswith("onnxprune "), version.stderr
    demo = subprocess.run(
        [str(venv / "bin" / "onnxprune"), "demo", "--quick", "-o", str(outside / "demo")],
        capture_output=True, text=True, cwd=outside, env=environment, timeout=900,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert (outside / "demo" / "summary.json").exists()
