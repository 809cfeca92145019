"""The docs show output as the commands print it (issue 29: cli.md's inspect example had another model's layers)."""

from __future__ import annotations

import re

from conftest import REPO, SHARED, shared_path
from typer.testing import CliRunner

from onnxprune.cli import app


def _example(doc: str, command: str) -> list[str]:
    """The lines a doc shows under `$ <command>`, up to the end of its code block."""
    text = (REPO / doc).read_text()
    block = re.search(re.escape(f"$ {command}") + r"\n(.*?)```", text, re.S)
    assert block, f"{doc} has no example of `{command}`"
    return [line for line in block.group(1).splitlines() if line.strip() and line.strip() != "..."]


def test_the_inspect_example_of_cli_md_is_what_inspect_prints():
    model = shared_path("models/matlab/cora_mnist_point.onnx")
    shown = _example("docs/cli.md", "onnxprune inspect ../shared/models/matlab/cora_mnist_point.onnx")
    result = CliRunner().invoke(app, ["inspect", str(model)])
    assert result.exit_code == 0, result.output
    printed = result.stdout.replace(str(model), str(model.relative_to(SHARED.parent).as_posix()))
    printed_lines = [line.rstrip() for line in printed.splitlines()]
    for line in shown[1:]:  # the first names the file as the doc's reader would type it
        assert line.rstrip() in printed_lines, line
    assert any("784x250" in line for line in shown)
