"""--help as users read it: flags shown as flags."""

from __future__ import annotations

import subprocess
import sys


def test_flags_are_shown_without_a_type_in_help():
    shown = subprocess.run([sys.executable, "-m", "onnxprune", "prune", "--help"], capture_output=True, text=True,
                           env={"COLUMNS": "120", "TERM": "dumb", "PATH": ""})  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    flags = [line for line in shown.stdout.splitlines() if "--skip-first" in line or "--resume" in line]
    assert len(flags) == 2 and not any("<bool>" in line for line in flags), flags
    assert "<float>" in shown.stdout, "valued options keep their type"
