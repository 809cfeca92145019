"""Sweeps, the trade-off, sensitivity ratios, results files and every figure."""

from __future__ import annotations

import dataclasses
import json

import fixtures
import numpy as np
import pytest
import scipy.io
from conftest import shared_path
from PIL import Image
from typer.testing import CliRunner

import onnxprune
from onnxprune import results
from onnxprune.cli import app
from onnxprune.cli.common import percent
from onnxprune.errors import ConfigError, DataError
from onnxprune.measure.sweep import parse_levels, ratios_for_target, sensitivity, sweep, trade_off, write_ratios
from onnxprune.report import plots
from onnxprune.workbench.data import Dataset, preprocess_for
from onnxprune.workbench.evaluate import evaluate


@pytest.fixture(scope="module")
def images():
    pixels, labels = fixtures.class_images(200, size=16, classes=10, seed=2)
    return Dataset(pixels, labels, [str(i) for i in range(10)], "synthetic")


@pytest.fixture(scope="module")
def vgg(fixture_model):
    return onnxprune.load(fixture_model("vgg_bn_torchscript"))


@pytest.fixture(scope="module")
def swept(vgg, images):
    return sweep(
        vgg, images, preprocess_for(vgg), parse_levels("0:0.2:0.8"), ["magnitude", "l1-filter"], ["layer", "global"]
    )


def test_parse_levels():
    assert parse_levels("0:0.1:0.3,0.35,0.4:0.02:0.44") == [0.0, 0.1, 0.2, 0.3, 0.35, 0.4, 0.42, 0.44]
    assert len(parse_levels("0.80:0.002:0.98")) == 91


@pytest.mark.parametrize(
    "text, message",
    [("", "no sparsity levels"), ("0.5,0.3", "must increase"), ("0.5:0.1:0.2", "no sparsity levels"),
     ("0.9:0.05:1.0", "outside \\[0, 1\\)"), ("0.2,abc", "not a number")],
)  # fmt: skip
def test_bad_grids(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_levels(text)


@pytest.mark.parametrize("method, scope", [("magnitude", "layer"), ("magnitude", "global"), ("l1-filter", "layer")])
def test_a_sweep_point_equals_prune_then_evaluate(vgg, images, swept, method, scope):
    row = next(r for r in swept.rows if r.method == method and r.scope == scope and r.sparsity == 0.6)
    result = onnxprune.prune(vgg, 0.6, method=method, scope=scope)
    model = result.model
    direct = evaluate(model, images, preprocess_for(vgg), engine="onnxruntime")
    assert direct.top1 == row.accuracy
    assert direct.loss == pytest.approx(row.loss, rel=1e-4)


def test_sweep_baseline_and_rows(swept):
    assert swept.baseline_accuracy == swept.rows[0].accuracy  # level 0 is the dense model
    assert len(swept.rows) == 2 * 2 * 5
    assert swept.methods() == ["magnitude (layer)", "magnitude (global)", "l1-filter (layer)", "l1-filter (global)"]


def test_trade_off_respects_the_budget(swept):
    for budget in (0.0, 0.02, 0.1):
        choice = trade_off(swept, budget, method="magnitude", scope="global")
        assert choice["accuracy"] >= swept.baseline_accuracy - budget - 1e-12
        higher = [
            r for r in swept.rows if r.method == "magnitude" and r.scope == "global" and r.sparsity > choice["sparsity"]
        ]
        assert all(r.accuracy < swept.baseline_accuracy - budget for r in higher)


def test_sensitivity_ratios_load_in_prune_and_reach_the_target(vgg, images, tmp_path):
    table = sensitivity(vgg, images, preprocess_for(vgg), parse_levels("0:0.2:0.8,0.9,0.95"))
    assert {r.scope for r in table.rows} == {layer.name for layer in vgg.layers}
    ratios = ratios_for_target(table, vgg, 0.7, max_drop=0.5)
    path = tmp_path / "ratios.yaml"
    write_ratios(ratios, path)
    result = onnxprune.prune(vgg, 0.5, config=path)
    assert result.prunable_sparsity == pytest.approx(0.7, abs=0.002)


def test_results_files_in_the_documented_types(swept, tmp_path):
    paths = results.write(swept, tmp_path)
    content = scipy.io.loadmat(paths["mat"])
    assert content["sparsity"].shape == (20, 1) and content["sparsity"].dtype == np.float64
    assert content["accuracy"].dtype == np.float64 and content["loss"].shape == (20, 1)
    assert content["layer_names"].dtype == object and content["layer_names"].shape == (5, 1)
    assert str(content["layer_names"][0, 0][0]) == swept.layer_names[0]
    assert content["method"].shape == (20, 1) and content["layer_sparsity"].shape == (20, 5)
    assert float(content["baseline_accuracy"][0, 0]) == swept.baseline_accuracy
    assert results.read(tmp_path).rows == swept.rows
    assert paths["csv"].read_text().splitlines()[0].startswith("method,scope,sparsity,accuracy,loss,num_nonzero")


def test_results_from_another_run_are_refused(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"rounds": [], "model": "x"}))
    with pytest.raises(DataError, match="schema unknown.*rerun"):
        results.read(tmp_path)
    with pytest.raises(DataError, match="no results file"):
        results.read(tmp_path / "nothing")


def assert_png(path, size=(800, 500)):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        assert image.size == size


def test_every_figure(vgg, images, swept, tmp_path):
    assert_png(plots.accuracy_vs_sparsity([swept], tmp_path / "a.png"))
    points = [{"sparsity": r.sparsity, "accuracy": r.accuracy, "label": r.method} for r in swept.rows]
    assert_png(plots.pareto(points, tmp_path / "p.png"))
    pruned = onnxprune.prune(vgg, 0.6).model
    assert_png(plots.mask(pruned, tmp_path / "m.png"))
    assert_png(plots.mask(pruned, tmp_path / "m1.png", layer=pruned.layers[0].name))
    assert_png(plots.layer_sparsity(pruned, tmp_path / "l.png"))
    small = onnxprune.prune(vgg, 0.4, method="l1-filter").model
    assert_png(plots.filters_per_layer(vgg, small, tmp_path / "f.png"))
    assert_png(plots.batchnorm_scales([vgg, small], tmp_path / "g.png", ["dense", "pruned"]))
    assert_png(plots.sensitivity(sensitivity(vgg, images, preprocess_for(vgg), [0.0, 0.5]), tmp_path / "s.png"))
    epochs = [
        {"train_loss": 1.0, "train_top1": 0.5, "val_top1": 0.6},
        {"train_loss": 0.8, "train_top1": 0.6, "val_top1": 0.7},
    ]
    run = {"rounds": [{"round": 1, "sparsity": 0.5, "top1": 0.8, "train_history": epochs}]}
    assert_png(plots.training(run, tmp_path / "t.png"), size=(900, 600))  # four panels
    taylor = [
        {"round": 1, "loss": 1.0, "val_top1": 0.5, "filters": 30},
        {"round": 2, "loss": 0.9, "val_top1": 0.6, "filters": 28},
    ]
    assert_png(plots.taylor_rounds(taylor, tmp_path / "tr.png"))


def test_pareto_frontier():
    points = [
        {"sparsity": s, "accuracy": a, "label": "x"}
        for s, a in [(0.1, 0.9), (0.5, 0.85), (0.5, 0.7), (0.9, 0.4), (0.3, 0.8)]
    ]
    frontier = plots.pareto_frontier(points)
    assert [(p["sparsity"], p["accuracy"]) for p in frontier] == [(0.1, 0.9), (0.5, 0.85), (0.9, 0.4)]


def test_mask_of_unknown_layer_lists_layers(vgg, tmp_path):
    with pytest.raises(ConfigError, match="no prunable layer called 'conv9'; the layers are: "):
        plots.mask(vgg, tmp_path / "m.png", layer="conv9")


def test_gamma_without_batchnorm(fixture_model, tmp_path):
    with pytest.raises(ConfigError, match="has no BatchNormalization"):
        plots.batchnorm_scales([onnxprune.load(fixture_model("matmul_mlp"))], tmp_path / "g.png")


def test_sweep_and_plot_cli(fixture_model, tmp_path):
    pixels, labels = fixtures.class_images(60, size=16, classes=10)
    np.savez(tmp_path / "d.npz", x=pixels, y=labels)
    model = str(fixture_model("vgg_bn_torchscript"))
    args = ["sweep", model, "--data", str(tmp_path / "d.npz"), "--from", "0", "--to", "0.6", "--step", "0.3"]
    result = CliRunner().invoke(app, args + ["--scope", "layer,global", "--out-dir", str(tmp_path / "sw")])
    assert result.exit_code == 0, result.output
    assert "highest sparsity within 1.0%" in result.stdout  # the curves' table
    summary = json.loads((tmp_path / "sw" / "results.json").read_text())["extra"]["trade_off"]
    assert [(c["method"], c["scope"], c["units"]) for c in summary["curves"]] == [
        ("magnitude", "layer", "weights"), ("magnitude", "global", "weights")]  # fmt: skip
    for curve in summary["curves"]:  # the summary quotes each curve by name, with its knee
        knee = (
            f"{curve['knee_sparsity']:.1%} ({curve['knee_accuracy']:.1%})"
            if curve["knee_sparsity"] is not None
            else "-"
        )
        rows = [x for x in result.stdout.splitlines() if f"magnitude ({curve['scope']})" in x and "% of weights" in x]
        assert any(f"{curve['sparsity']:.1%} of weights" in row and knee in row for row in rows), result.stdout
    assert "no trade-off is chosen: the dense model's top-1" in " ".join(result.stdout.split())  # a random model
    assert "sparsity (% of weights)" in result.stdout
    assert_png(tmp_path / "sw" / "accuracy_vs_sparsity.png")
    assert json.loads((tmp_path / "sw" / "results.json").read_text())["extra"]["trade_off"]["max_drop"] == 0.01
    for kind, sources in (
        ("accuracy", [tmp_path / "sw"]),
        ("pareto", [tmp_path / "sw" / "results.json"]),
        ("mask", [model]),
    ):
        out = tmp_path / f"{kind}.png"
        plotted = CliRunner().invoke(app, ["plot", kind, *map(str, sources), "-o", str(out)])
        assert plotted.exit_code == 0, plotted.output
        assert_png(out)
    bad = CliRunner().invoke(app, ["sweep", model, "--data", str(tmp_path / "d.npz"), "--sparsities", "0.5,0.2"])
    assert bad.exit_code == 2 and "must increase" in bad.stderr and bad.stderr.count("\n") == 1
    layer = CliRunner().invoke(app, ["plot", "mask", model, "--layer", "nope", "-o", str(tmp_path / "x.png")])
    assert layer.exit_code == 2 and "the layers are:" in layer.stderr


def test_sensitivity_cli_writes_a_ratio_file_prune_reads(fixture_model, tmp_path):
    pixels, labels = fixtures.class_images(60, size=16, classes=10)
    np.savez(tmp_path / "d.npz", x=pixels, y=labels)
    model = str(fixture_model("vgg_bn_torchscript"))
    args = ["sensitivity", model, "--data", str(tmp_path / "d.npz"), "--sparsities", "0:0.3:0.9", "--target", "0.5"]
    result = CliRunner().invoke(app, args + ["--max-drop", "0.5", "--out-dir", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    pruned = CliRunner().invoke(
        app, ["prune", model, "--config", str(tmp_path / "s" / "ratios.yaml"), "-o", str(tmp_path / "p.onnx"), "--json"]
    )
    assert pruned.exit_code == 0, pruned.output
    assert json.loads(pruned.stdout)["prunable_sparsity"] == pytest.approx(0.5, abs=0.005)


def test_prune_max_drop_chooses_the_sparsity(tmp_path):
    mlp = shared_path("models/matlab/nln_logsig_200_100_50.onnx")  # a trained model: a baseline far from chance
    args = ["prune", str(mlp), "--max-drop", "0.05", "--data", str(shared_path("data/mnist")), "--limit", "600"]
    result = CliRunner().invoke(app, args + ["--sparsities", "0:0.2:0.8", "-o", str(tmp_path / "p.onnx")])
    assert result.exit_code == 0, result.output
    assert "trade-off (magnitude, scope lamp): " in result.stdout, "the note names the curve it chose on"
    chosen = float(result.stdout.split("scope lamp): ")[1].split("%")[0]) / 100
    other = json.loads((tmp_path / "p_run.json").read_text()) if (tmp_path / "p_run.json").exists() else None
    assert other is None and "with --scope layer the same sweep reaches " in " ".join(result.stdout.split())
    assert chosen > 0 and (tmp_path / "p.onnx").exists()
    written = onnxprune.load(tmp_path / "p.onnx")
    zeros = sum(int((written.weight_array(layer) == 0).sum()) for layer in written.layers)
    assert zeros / sum(layer.numel for layer in written.layers) == pytest.approx(chosen, abs=0.01)


def test_trade_off_judges_each_curve_on_its_own():
    """Issue 19: one knee over four curves meant nothing; each curve has its own, and its units."""
    from onnxprune.results import ResultRow, ResultTable

    curves = {
        ("magnitude", "global"): [0.90, 0.90, 0.89, 0.85, 0.30],
        ("l1-filter", "layer"): [0.90, 0.88, 0.8, 0.4, 0.1],
    }
    table = ResultTable("sweep", "m.onnx", [], 0.90)
    for (method, scope), accuracies in curves.items():
        table.rows += [
            ResultRow(s, a, None, 0, method, scope) for s, a in zip((0, 0.2, 0.4, 0.6, 0.8), accuracies, strict=True)
        ]
    choice = trade_off(table, 0.01)
    by_name = {(c["method"], c["scope"]): c for c in choice["curves"]}
    assert by_name["magnitude", "global"] | {"curves": None} == {
        "method": "magnitude", "scope": "global", "units": "weights", "sparsity": 0.4, "accuracy": 0.89,
        "knee_sparsity": 0.6, "knee_accuracy": 0.85, "curves": None}  # fmt: skip
    assert by_name["l1-filter", "layer"]["units"] == "channels" and by_name["l1-filter", "layer"]["sparsity"] == 0
    assert by_name["l1-filter", "layer"]["knee_sparsity"] == 0.4
    assert (choice["method"], choice["sparsity"], choice["knee_sparsity"]) == ("magnitude", 0.4, 0.6)
    falling = ResultTable("sweep", "m.onnx", [], 0.90)
    points = zip((0, 0.3, 0.6, 0.9), (0.9, 0.4, 0.2, 0.1), strict=True)
    falling.rows = [ResultRow(s, a, None, 0, "l1-filter", "layer") for s, a in points]
    assert trade_off(falling, 0.01)["curves"][0]["knee_sparsity"] is None, "falls from the start: no knee"
    channels_only = trade_off(table, 0.01, method="l1-filter")
    assert channels_only["method"] is None and channels_only["sparsity"] == 0.0, "nothing within the budget"
    assert channels_only["curves"][0]["knee_sparsity"] == 0.4
    table.rows = [ResultRow(s, a, None, 0, "l1-filter", "layer") for s, a in ((0, 0.9), (0.6, 0.9))] + [
        ResultRow(s, a, None, 0, "magnitude", "layer") for s, a in ((0, 0.9), (0.3, 0.9))]  # fmt: skip
    mixed = trade_off(table, 0.01)
    assert (mixed["method"], mixed["sparsity"]) == ("magnitude", 0.3), "60% of channels is not more than 30% of weights"


def test_no_stray_blank_lines_when_output_is_not_a_terminal(fixture_model, tmp_path):
    """Issue 19: a transient progress bar left a blank line in logs, before the tables."""
    import subprocess
    import sys

    pixels, labels = fixtures.class_images(40, size=16, classes=10)
    np.savez(tmp_path / "d.npz", x=pixels, y=labels)
    model = str(fixture_model("vgg_bn_torchscript"))
    for args in (["sweep", model, "--sparsities", "0,0.5", "-o", str(tmp_path / "sw")],
                 ["prune", model, "--sparsity", "0.5", "--finetune-epochs", "1", "--batch-size", "8",
                  "--out-dir", str(tmp_path / "run"), "-o", str(tmp_path / "p.onnx")]):  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "onnxprune", *args, "--data", str(tmp_path / "d.npz")],
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, done.stderr
        for stream in (done.stdout, done.stderr):
            assert "" not in stream.splitlines(), (args[0], stream)


def _sweep_args(model, data, out, *extra):
    return ["sweep", model, "--data", str(data), "-o", str(out), "--json", *extra]


def test_a_sweep_records_an_unreachable_level_and_measures_the_others(fixture_model, tmp_path):
    """Issue 27: a global level above the layer cap stopped the sweep with nothing written."""
    pixels, labels = fixtures.class_images(40, size=16, classes=10)
    np.savez(tmp_path / "d.npz", x=pixels, y=labels)
    model = str(fixture_model("vgg_bn_torchscript"))
    args = _sweep_args(model, tmp_path / "d.npz", tmp_path / "sw", "--sparsities", "0.5,0.995,0.997",
                       "--scope", "layer,global")  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    table = results.read(tmp_path / "sw")
    assert {(r.scope, r.sparsity) for r in table.rows} == {("layer", 0.5), ("layer", 0.995), ("layer", 0.997),
                                                           ("global", 0.5)}  # fmt: skip
    unreachable = [(u["scope"], u["sparsity"]) for u in table.extra["unreachable"]]
    assert unreachable == [("global", 0.995), ("global", 0.997)]
    assert any("global) at 0.995: not reached" in note for note in json.loads(result.stdout)["notes"])


def test_an_interrupted_sweep_resumed_equals_an_uninterrupted_one(fixture_model, tmp_path, monkeypatch):
    """Issue 27: levels are written as they finish; Ctrl-C keeps them; --resume measures only the rest."""
    from onnxprune.measure.sweep import Sweeper

    pixels, labels = fixtures.class_images(40, size=16, classes=10)
    np.savez(tmp_path / "d.npz", x=pixels, y=labels)
    model = str(fixture_model("vgg_bn_torchscript"))
    levels = ["--sparsities", "0,0.3,0.6,0.9", "--scope", "layer,global"]
    whole = CliRunner().invoke(app, _sweep_args(model, tmp_path / "d.npz", tmp_path / "whole", *levels))
    assert whole.exit_code == 0, whole.output

    measured = []
    original = Sweeper.level

    def interrupted_after_three(self, *args, **kwargs):
        if len(measured) == 3:
            raise KeyboardInterrupt
        measured.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Sweeper, "level", interrupted_after_three)
    cut = CliRunner().invoke(app, _sweep_args(model, tmp_path / "d.npz", tmp_path / "cut", *levels))
    assert cut.exit_code == 130 and "3 of 8 levels written" in cut.output and "--resume" in cut.output
    assert len(results.read(tmp_path / "cut").rows) == 3

    measured.clear()
    monkeypatch.setattr(Sweeper, "level", lambda self, *a, **k: measured.append(a) or original(self, *a, **k))
    resumed = CliRunner().invoke(app, _sweep_args(model, tmp_path / "d.npz", tmp_path / "cut", *levels, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert len(measured) == 5, "only the levels the interrupted run had not measured"
    expected, got = results.read(tmp_path / "whole"), results.read(tmp_path / "cut")
    # each run times torch against onnxruntime and sweeps in the faster (engine "auto"): two runs may
    # differ in the engine, whose losses agree to float rounding; everything else is equal
    assert [{**dataclasses.asdict(r), "loss": None} for r in got.rows] == [
        {**dataclasses.asdict(r), "loss": None} for r in expected.rows
    ]
    assert [r.loss for r in got.rows] == pytest.approx([r.loss for r in expected.rows], rel=1e-6)
    other_data = CliRunner().invoke(
        app, _sweep_args(model, tmp_path / "d.npz", tmp_path / "cut", *levels, "--resume", "--limit", "20")
    )
    assert other_data.exit_code == 2 and "--resume: the sweep in" in other_data.output and "limit" in other_data.output


def test_max_drop_refuses_a_baseline_near_chance(tmp_path):
    """Issue 27: resnet_2b without --mean/--std scores ~20%; --max-drop chose 85% "within 1%" of it."""
    model = shared_path("models/pytorch/resnet_2b_cifar10.onnx")
    args = ["prune", str(model), "--max-drop", "0.01", "--data", str(shared_path("data/cifar10/test.zip")),
            "--limit", "300", "-o", str(tmp_path / "p.onnx")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "--max-drop chooses by accuracy, but the dense model's top-1" in result.stderr
    assert "near chance" in result.stderr and "--mean/--std" in result.stderr
    assert not (tmp_path / "p.onnx").exists()


def test_a_sweep_near_chance_keeps_its_curves_and_chooses_nothing(fixture_model, tmp_path):
    pixels, labels = fixtures.class_images(40, size=16, classes=10)
    np.savez(tmp_path / "d.npz", x=pixels, y=labels)
    args = _sweep_args(str(fixture_model("vgg_bn_torchscript")), tmp_path / "d.npz", tmp_path / "sw", "--sparsities",
                       "0,0.5")  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    choice = json.loads(result.stdout)["trade_off"]
    assert choice["near_chance"].startswith("no trade-off is chosen: the dense model's top-1")
    assert len(results.read(tmp_path / "sw").rows) == 2
    shown = CliRunner().invoke(app, [a for a in args if a != "--json"])  # the table as printed
    assert "no trade-off is chosen" in " ".join(shown.stdout.split())


def test_a_sweep_of_a_trained_model_states_its_trade_off(tmp_path):
    mlp = shared_path("models/matlab/nln_logsig_200_100_50.onnx")
    args = ["sweep", str(mlp), "--data", str(shared_path("data/mnist")), "--limit", "600", "--sparsities",
            "0,0.3,0.6,0.9", "--max-drop", "0.3", "-o", str(tmp_path / "sw")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = results.read(tmp_path / "sw").extra["trade_off"]
    assert "near_chance" not in summary
    assert results.read(tmp_path / "sw").extra["samples"] == 600  # issue 27: what every top-1 is measured on
    assert "on 600 samples;" in " ".join(result.stdout.split())
    assert f"knee of that curve {percent(summary['knee_sparsity'])}" in " ".join(result.stdout.split())


def test_with_data_and_no_fine_tuning_the_scope_is_measured(tmp_path):
    """Issue 27: on cora_mnist_point at 80% the default (LAMP) kept 87.55%, global 97.10%."""
    model = shared_path("models/matlab/cora_mnist_point.onnx")
    data = ["--data", str(shared_path("data/mnist")), "--limit", "600", "--flatten", "column"]
    args = ["prune", str(model), "--sparsity", "0.8", *data, "-o", str(tmp_path / "p.onnx"), "--out-dir",
            str(tmp_path / "run"), "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    note = next(n for n in summary["notes"] if "measured best at 80%" in n)
    measured = {
        part.split()[0]: float(part.split()[1].rstrip("%")) for part in note.split("(")[1].split(";")[0].split(", ")
    }
    assert set(measured) == {"lamp", "global", "layer"}
    assert summary["scope"] == max(measured, key=measured.get) == "global"
    given = CliRunner().invoke(app, [*args[:-5], "--scope", "global", "-o", str(tmp_path / "g.onnx"), "--out-dir",
                                     str(tmp_path / "g"), "--json"])  # fmt: skip
    assert not any("measured best" in n for n in json.loads(given.stdout)["notes"]), "a given scope is not measured"
    chosen, explicit = onnxprune.load(tmp_path / "p.onnx"), onnxprune.load(tmp_path / "g.onnx")
    for layer in chosen.layers:
        np.testing.assert_array_equal(chosen.weight_array(layer), explicit.weight_array(layer))


def test_with_fine_tuning_the_scope_is_measured_before_it_on_the_validation_split(tmp_path):
    """Issue 27: the reference rule (global when fine-tuning normalised inputs) missed by 1.5 points on resnet_2b."""
    model = shared_path("models/matlab/cora_mnist_point.onnx")
    data = ["--data", str(shared_path("data/mnist")), "--limit", "600", "--flatten", "column"]
    common = ["prune", str(model), "--sparsity", "0.8", *data, "--finetune-epochs", "1", "--json"]
    result = CliRunner().invoke(app, [*common, "-o", str(tmp_path / "p.onnx"), "--out-dir", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    note = next(n for n in summary["notes"] if n.startswith("scope "))
    assert "on 120 samples of the validation split, before fine-tuning" in note, "the split the round table shows"
    measured = {
        part.split()[0]: float(part.split()[1].rstrip("%")) for part in note.split("(")[1].split(";")[0].split(", ")
    }
    assert set(measured) == {"lamp", "global", "layer"}
    assert summary["scope"] == note.split()[1].rstrip(":")
    assert measured[summary["scope"]] == max(measured.values()) or "kept" in note

    rounds = CliRunner().invoke(app, [*common, "--iterations", "2", "-o", str(tmp_path / "i.onnx"), "--out-dir",
                                      str(tmp_path / "i")])  # fmt: skip
    assert rounds.exit_code == 0, rounds.output
    notes = json.loads(rounds.stdout)["notes"]
    assert not any("before fine-tuning" in n for n in notes), "the scope of every round is not ranked at the target"
    assert any("the default measured on reference models for fine-tuning" in n for n in notes)


def test_sensitivity_checks_the_combined_allocation_on_held_out_samples(tmp_path):
    """Issue 27: per-layer budgets of one point added up to 65.90% on cora_mnist_point (global: 97.10%)."""
    from onnxprune.cli.common import evaluation_data
    from onnxprune.cli.measure import HELD_OUT_FRACTION
    from onnxprune.workbench.data import split

    model = shared_path("models/matlab/cora_mnist_point.onnx")
    data = ["--data", str(shared_path("data/mnist")), "--limit", "1500", "--flatten", "column"]
    args = ["sensitivity", str(model), *data, "--target", "0.8", "--max-drop", "0.02", "-o", str(tmp_path / "r.yaml"),
            "--out-dir", str(tmp_path / "s"), "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    combined = json.loads(result.stdout)["combined"]
    by_mix = {candidate["mix"]: candidate["top1"] for candidate in combined["candidates"]}
    assert combined["within_budget"] and combined["baseline"] - combined["top1"] <= 0.02
    assert combined["top1"] >= by_mix[0.0], "never below global magnitude's allocation at the target"
    assert combined["top1"] > by_mix[1.0] + 0.05, "the per-layer allocation alone collapses; the check corrects it"
    assert f"combined top-1 {combined['top1']:.2%}" in (tmp_path / "r.yaml").read_text()

    pruned = CliRunner().invoke(app, ["prune", str(model), "--config", str(tmp_path / "r.yaml"), "--scope", "layer",
                                      "-o", str(tmp_path / "p.onnx")])  # fmt: skip
    assert pruned.exit_code == 0, pruned.output
    written = onnxprune.load(tmp_path / "p.onnx")
    assert 1 - written.layer_nonzero() / written.layer_total("numel") == pytest.approx(0.8, abs=1e-3)
    preprocess, dataset = evaluation_data(written, shared_path("data/mnist"), 1500, None, None, None, "column")
    _, held_out = split(dataset, HELD_OUT_FRACTION, seed=0)
    top1 = evaluate(written, held_out, preprocess).top1
    assert top1 == pytest.approx(combined["top1"], abs=1.5 / len(held_out)), "the YAML keeps what was measured"


def test_levels_that_round_to_the_same_channels_are_explained():
    """Issue 29, 10: l1-filter at 10% and 15% gave identical rows without a word."""
    from onnxprune.measure.sweep import repeated_levels
    from onnxprune.results import ResultRow, ResultTable

    rows = [ResultRow(level, 0.9, 0.3, kept, "l1-filter", "layer") for level, kept in
            ((0.0, 1000), (0.1, 900), (0.15, 900), (0.2, 800))]  # fmt: skip
    rows += [ResultRow(level, 0.9, 0.3, kept, "magnitude", "layer") for level, kept in ((0.1, 900), (0.15, 850))]
    notes = repeated_levels(ResultTable("sweep", "m.onnx", [], 0.9, rows=rows))
    assert notes == [
        "l1-filter (layer) at 10%, 15%: the same model, 900 weights kept: each layer's count rounds to whole "
        "channels (and to --round-to blocks)"
    ]
