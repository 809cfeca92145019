"""The HTML report of a run: written by every run with a folder, self-contained, rendered by a real browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
from conftest import REPO, shared_path
from typer.testing import CliRunner

from onnxprune import results
from onnxprune.cli import app
from onnxprune.errors import ConfigError
from onnxprune.report.html import CHOICE_FOLDER, LONG_TABLE, write_report

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
    flags = _rendered_completely(demo / "report.html")
    url = (demo / "report.html").as_uri()
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


def _rendered_completely(page) -> list[str]:
    """Render `page` in headless Chromium: every figure shown, no console error; returns the flags used."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is not installed; .ci/run installs it")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--virtual-time-budget=5000", "--enable-logging=stderr", "--v=0"]  # fmt: skip
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    shown = re.search(r'data-figures-shown="(\d+)/(\d+)"', dom.stdout)
    assert shown, dom.stdout[:500] + dom.stderr[-2000:]
    assert int(shown.group(1)) == int(shown.group(2)) > 0, f"figures shown: {shown.group(0)}"
    assert 'class="missing"' not in dom.stdout
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console
    return flags


@pytest.fixture(scope="module")
def max_drop_run(tmp_path_factory):
    """Issue 29 (8): a `prune --max-drop` run that fine-tunes at a learning rate that makes it keep the pruned model."""
    mlp = shared_path("models/matlab/nln_logsig_200_100_50.onnx")  # trained: a baseline far from chance
    out = tmp_path_factory.mktemp("max_drop")
    args = ["prune", str(mlp), "--max-drop", "0.05", "--data", str(shared_path("data/mnist")), "--limit", "600",
            "--sparsities", "0:0.2:0.8", "--finetune-epochs", "1", "--lr", "5", "--out-dir", str(out / "run"),
            "-o", str(out / "p.onnx"), "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out / "run", json.loads(result.stdout)


def test_a_max_drop_report_shows_the_sweep_that_chose_and_the_rounds_that_kept_the_pruned_model(max_drop_run):
    folder, summary = max_drop_run
    chosen, page = summary["chosen"], (folder / "report.html").read_text()
    sweep = results.read(folder / CHOICE_FOLDER)  # the sweep is saved with the run, in the common schema
    assert sweep.kind == "sweep" and sweep.extra["trade_off"]["sparsity"] == chosen["sparsity"]
    assert len(sweep.rows) == 10 and sweep.extra["samples"] == chosen["samples"] == 600, "5 levels x 2 scopes"
    story = page.index("How --max-drop chose the sparsity")
    assert story < page.index("<h3>Rounds</h3>"), "the choice comes before the rounds it started"
    figure = page.index(f"<figcaption>{CHOICE_FOLDER}/accuracy_vs_sparsity.png</figcaption>")
    assert story < figure < page.index("Every level measured"), "the sweep's curve before its table"
    assert "<div>budget<b>5.0 points below dense</b></div>" in page and "<div>images of --data<b>600</b></div>" in page
    assert f"<div>dense top-1 on them<b>{100 * chosen['baseline']:.2f}%</b></div>" in page
    row = re.search(r"<tr class='chosen'>(.*?)</tr>", page).group(1)  # the chosen level, highlighted
    assert f">{100 * chosen['sparsity']:.2f}%<" in row and f">{100 * chosen['accuracy']:.2f}%<" in row
    assert ">lamp<" in row and ">chosen<" in row
    assert f"with --scope {chosen['other']['scope']} the same sweep" in page.lower()

    val = summary["val_samples"]
    assert val == 120 and f"<div>validation images<b>{val}</b></div>" in page
    (kept,) = summary["rounds"]
    assert kept["kept"] == "pruned", "a learning rate of 5 ends fine-tuning below the pruned model"
    margin = f"{100 * kept['keep_margin']:.2f} points"
    assert f"Round 1: fine-tuning ended at top-1 {100 * kept['train_history'][-1]['val_top1']:.2f}%" in page
    assert f"the margin of {margin}: the pruned model was kept" in page
    assert f"sampling noise of the {val} validation images" in page

    cards = dict(re.findall(r"<div>([^<]+)<b>([^<]+)</b></div>", page))  # unstructured: zeros, no removals
    assert cards["sparsity (of prunable weights)"] == f"{100 * kept['sparsity']:.1f}%"
    assert cards["zero weights"].endswith("of 182,300"), cards  # 784x200 + 200x100 + 100x50 + 50x10
    assert "parameters removed" not in page and "MACs removed" not in page and "params removed" not in page


def test_the_max_drop_report_renders_in_chromium(max_drop_run):
    _rendered_completely(max_drop_run[0] / "report.html")


def _schedule_folder(folder, kind: str, mask_only: bool, removed: float) -> None:
    """A one-round run folder as the schedule writes it (run.json, results.json), no model files."""
    folder.mkdir()
    rounds = [{"round": 1, "target_sparsity": 0.5, "sparsity": 0.5, "sparsity_all": 0.3, "top1": 0.9, "loss": 0.3,
               "seconds": 1.0, "checkpoint": "round_1.onnx", "params_removed": removed, "macs_removed": removed / 2,
               "num_nonzero": 500, "layer_sparsity": {"fc1": 0.5}}]  # fmt: skip
    units = "channels" if kind == "filter" else "weights"
    row = results.ResultRow(0.5, 0.9, 0.3, 500, "x", "layer", [0.5])
    extra = {"rounds": rounds, "val_samples": 50}
    table = results.ResultTable("schedule", "m.onnx", ["fc1"], 0.95, units, [row], extra)
    results.write(table, folder)
    options = {"prune": {"method": "x", "mask_only": mask_only}}
    (folder / "run.json").write_text(json.dumps({"model": "m.onnx", "kind": kind, "options": options}))


@pytest.mark.parametrize(
    ("kind", "mask_only", "removed", "cards", "absent"),
    [
        ("unstructured", False, 0.0, {"sparsity (of prunable weights)": "50.0%", "zero weights": "500 of 1,000"},
         ["parameters removed", "MACs removed", "channels"]),
        ("filter", False, 0.4, {"channels removed": "50.0%", "parameters removed": "40.0%", "MACs removed": "20.0%"},
         ["zero weights", "prunable weights"]),
        ("filter", True, 0.0, {"channels zeroed": "50.0%", "zero parameters": "30.0%"},
         ["parameters removed", "MACs removed"]),
        ("hybrid", False, 0.4, {"sparsity (of weights, removed or zero)": "50.0%", "parameters removed": "40.0%"},
         ["zero weights"]),
    ],
)  # fmt: skip
def test_the_headline_cards_are_those_of_the_runs_kind(tmp_path, kind, mask_only, removed, cards, absent):
    """Issue 29 (8): an unstructured run showed `parameters removed 0.0% / MACs removed 0.0%` beside `sparsity 80%`."""
    _schedule_folder(tmp_path / "run", kind, mask_only, removed)
    page = write_report(tmp_path / "run").read_text()
    shown = dict(re.findall(r"<div>([^<]+)<b>([^<]+)</b></div>", page))
    assert cards.items() <= shown.items(), shown
    assert not [word for word in absent if word in page], "cards or columns that do not apply to the run"


def test_a_long_sweep_puts_its_figure_before_its_folded_table(tmp_path):
    """Issue 29 (8): an 80-row table came before the sweep's only figure."""
    from onnxprune.report import plots

    levels = [index / 100 for index in range(40)]
    rows = [results.ResultRow(level, 0.9 - level / 2, 0.3, 1000, "magnitude", scope)
            for scope in ("layer", "global") for level in levels]  # fmt: skip
    table = results.ResultTable("sweep", "m.onnx", [], 0.9, "weights", rows, {"samples": 100})
    from onnxprune.measure.sweep import trade_off

    table.extra["trade_off"] = trade_off(table, 0.05)
    results.write(table, tmp_path / "s")
    plots.accuracy_vs_sparsity([table], tmp_path / "s" / "accuracy_vs_sparsity.png")
    page = write_report(tmp_path / "s").read_text()
    assert len(rows) == 80 > LONG_TABLE
    figure, levels_table = page.index("<figure>"), page.index("<table class='sortable'>")
    assert page.index("<div class='headline'>") < figure < page.index("<details><summary><b>Every level") < levels_table
    assert "(80 rows: click to show)" in page and "<h2>Figures</h2>" not in page, "the figure is in its section"
    chosen = re.search(r"<tr class='chosen'>(.*?)</tr>", page).group(1)
    assert ">10.00%<" in chosen, "the highest level within 5 points of 90%: 10% (top-1 85%)"
    _rendered_completely(tmp_path / "s" / "report.html")
