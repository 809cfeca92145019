"""The HTML report of a run: written by every run with a folder, self-contained, rendered by a real browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
from conftest import REPO
from typer.testing import CliRunner

from onnxprune.cli import app
from onnxprune.errors import ConfigError
from onnxprune.report.html import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    result = CliRunner().invoke(app, ["demo", "--quick", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert str(out / "report.html") in result.stdout.replace("\n", ""), "the demo prints its report's path"
    return out


@pytest.mark.slow
def test_the_demo_report_is_self_contained_and_complete(demo):
    page = (demo / "report.html").read_text()
    assert "http://" not in page and "https://" not in page and "src='data:image/png;base64," in page
    figures = re.findall(r"<figcaption>([^<]+)</figcaption>", page)
    assert {"accuracy_vs_sparsity.png", "layer_sparsity.png", "masks.png", "training.png"} <= set(figures)
    assert "pruned/" in page and "Rounds" in page and "Sparsity per layer" in page
    summary = json.loads((demo / "summary.json").read_text())
    assert f"{100 * summary['dense_top1']:.2f}%" in page, "the headline numbers"


@pytest.mark.slow
def test_the_demo_report_renders_in_chromium_with_every_figure_and_no_console_error(demo):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is not installed; .ci/run installs it")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--virtual-time-budget=5000", "--enable-logging=stderr", "--v=0"]  # fmt: skip
    url = (demo / "report.html").as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    shown = re.search(r'data-figures-shown="(\d+)/(\d+)"', dom.stdout)
    assert shown, dom.stdout[:500] + dom.stderr[-2000:]
    assert int(shown.group(1)) == int(shown.group(2)) > 0, f"figures shown: {shown.group(0)}"
    assert 'class="missing"' not in dom.stdout
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report.png"
    subprocess.run([*flags, "--window-size=1100,1600", f"--screenshot={screenshot}", url],
                   capture_output=True, timeout=120, check=True)  # fmt: skip
    assert screenshot.stat().st_size > 10_000


def test_report_of_a_sweep_folder_and_refusals(fixture_model, tmp_path):
    import numpy as np

    images = np.random.default_rng(0).integers(0, 255, (20, 35, 35, 3)).astype(np.uint8)
    np.savez(tmp_path / "d.npz", x=images, y=np.arange(20) % 5)
    model = str(fixture_model("matlab_alexnet_opset8"))
    arguments = ["sweep", model, "--data", str(tmp_path / "d.npz"), "--sparsities", "0,0.5", "--out-dir"]
    swept = CliRunner().invoke(app, [*arguments, str(tmp_path / "s")])
    assert swept.exit_code == 0, swept.output
    page = (tmp_path / "s" / "report.html").read_text()
    assert "sweep" in page and "accuracy_vs_sparsity.png" in page
    again = CliRunner().invoke(app, ["report", str(tmp_path / "s"), "-o", str(tmp_path / "copy.html"), "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["report"] == str(tmp_path / "copy.html")
    with pytest.raises(ConfigError, match="holds no onnxprune results"):
        write_report(_empty(tmp_path))
    refused = CliRunner().invoke(app, ["report", str(tmp_path / "nowhere")])
    assert refused.exit_code == 2 and "no such folder" in refused.stderr


def _empty(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder
