"""Every figure the tool draws, rendered from real runs on the real models, checked for what makes a
figure hard to read (issue 19): text cut off, a legend over the data or another panel, overlapping
panels, repeated legend entries, empty panels; and what each figure must say."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, shared_path
from typer.testing import CliRunner

from onnxprune.cli import app
from onnxprune.report import plots

MNIST = "data/mnist/t10k-images-idx3-ubyte.gz"
MLP = "models/matlab/nln_logsig_200_100_50.onnx"


@pytest.fixture
def drawn(monkeypatch):
    """Figures drawn while the test runs: {file name: (layout problems, the figure's texts, its bars)}."""
    seen = {}
    save = plots._save

    def checked(figure, path):
        texts = [t.get_text() for t in plots._texts(figure)]
        seen[path.name if hasattr(path, "name") else str(path)] = (plots.layout_problems(figure), texts,
                                                                   drawn_bars(figure))  # fmt: skip
        return save(figure, path)

    monkeypatch.setattr(plots, "_save", checked)
    return seen


def cli(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def assert_readable(drawn, name):
    problems, texts, _ = drawn[name]
    assert problems == [], (name, problems)
    return texts


def drawn_bars(figure):
    """Each bar panel's bars as drawn: {panel title: [(value, drawn length in pixels)]}, and whether
    every value label written at a bar's end stays inside its panel and clear of the other labels."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    bars = {}
    for axis in figure.axes:
        for container in axis.containers:
            horizontal = getattr(container, "orientation", "vertical") == "horizontal"
            for patch, value in zip(container.patches, container.datavalues, strict=True):
                box = patch.get_window_extent(renderer)
                bars.setdefault(axis.get_title(), []).append((float(value), box.width if horizontal else box.height))
        labels = [text.get_window_extent(renderer) for text in axis.texts if text.get_text()]
        inside = all(axis.bbox.x0 <= box.x0 and box.x1 <= axis.bbox.x1 for box in labels)
        apart = not any(one.overlaps(other) for i, one in enumerate(labels) for other in labels[i + 1 :])
        bars.setdefault("labels inside their panel and apart", []).append(inside and apart)
    return bars


def test_sweep_pareto_and_two_model_figures(drawn, tmp_path):
    mlp, mnist = shared_path(MLP), shared_path(MNIST)
    cora = shared_path("models/matlab/cora_mnist_point.onnx")
    data = ["--data", mnist, "--limit", "300"]
    cli("sweep", mlp, *data, "--method", "magnitude,neuron", "--scope", "layer,global", "--sparsities", "0,0.5,0.9",
        "-o", tmp_path / "mlp")  # fmt: skip
    texts = assert_readable(drawn, "accuracy_vs_sparsity.png")
    assert (
        "sparsity\n(% of prunable weights removed)" in texts and "sparsity\n(% of prunable channels removed)" in texts
    )
    assert texts.count("dense") == 1, "one legend entry for the dense line, not one per panel or curve"
    cli("sweep", cora, *data, "--flatten", "column", "--sparsities", "0,0.5,0.9", "-o", tmp_path / "cora")
    cli("plot", "accuracy", tmp_path / "mlp", tmp_path / "cora", "-o", tmp_path / "both.png")
    texts = assert_readable(drawn, "both.png")
    title = next(t for t in texts if t.startswith("Accuracy vs sparsity")).replace("\n", " ")
    assert "nln_logsig_200_100_50.onnx" in title and "cora_mnist_point.onnx" in title, title
    assert {"dense nln_logsig_200_100_50", "dense cora_mnist_point"} <= set(texts)
    cli("plot", "pareto", tmp_path / "mlp" / "results.json", tmp_path / "cora" / "results.json",
        "-o", tmp_path / "pareto.png")  # fmt: skip
    texts = assert_readable(drawn, "pareto.png")
    assert any(t.endswith("[channels]") for t in texts) and any(t.startswith("best mean(") for t in texts)


def test_training_layers_masks_and_sensitivity_figures(drawn, tmp_path):
    mlp, mnist = shared_path(MLP), shared_path(MNIST)
    cli("prune", mlp, "--sparsity", "0.8", "--iterations", "3", "--finetune-epochs", "1", "--data", mnist,
        "--limit", "600", "--out-dir", tmp_path / "imp", "-o", tmp_path / "imp.onnx")  # fmt: skip
    cli("plot", "training", tmp_path / "imp", "-o", tmp_path / "training.png")
    texts = assert_readable(drawn, "training.png")
    assert {"after pruning", "after fine-tuning", "epoch (dotted: a new round)", "round"} <= set(texts)
    assert "sparsity after each round (% of prunable weights)" in texts, "sparsity and top-1 on separate axes"
    cli("prune", mlp, "--sparsity", "0.5", "--finetune-epochs", "2", "--data", mnist, "--limit", "400",
        "--out-dir", tmp_path / "omp", "-o", tmp_path / "omp.onnx")  # fmt: skip
    cli("plot", "training", tmp_path / "omp", "-o", tmp_path / "one_round.png")
    assert_readable(drawn, "one_round.png")  # one round: its panels tick at round 1, not 0.95 ... 1.05
    cli("plot", "layers", tmp_path / "imp.onnx", "-o", tmp_path / "layers.png")
    texts = assert_readable(drawn, "layers.png")
    assert "per block (weighted by size)" not in texts, "an MLP has no blocks: no second, identical panel"
    cli("plot", "mask", tmp_path / "imp.onnx", "-o", tmp_path / "mask.png")
    assert_readable(drawn, "mask.png")
    cli("sensitivity", mlp, "--data", mnist, "--limit", "300", "--sparsities", "0,0.5,0.9", "--target", "0.5",
        "--out-dir", tmp_path / "sens", "-o", tmp_path / "ratios.yaml")  # fmt: skip
    assert_readable(drawn, "sensitivity.png")
    vgg = REPO / "models" / "vgg13_bn_w025_cifar10.onnx"
    cli("prune", vgg, "--method", "l1-filter", "--sparsity", "0.4", "-o", tmp_path / "vgg_filters.onnx")
    cli("plot", "gamma", vgg, tmp_path / "vgg_filters.onnx", "-o", tmp_path / "gamma.png")
    assert_readable(drawn, "gamma.png")


def test_structured_taylor_and_bench_figures(drawn, tmp_path):
    convnet, mnist = shared_path("models/pytorch/convnet_maxpool_mnist.onnx"), shared_path(MNIST)
    cli("prune", convnet, "--method", "l1-filter", "--sparsity", "0.4", "-o", tmp_path / "filters.onnx")
    cli("plot", "filters", convnet, tmp_path / "filters.onnx", "-o", tmp_path / "filters.png")
    assert_readable(drawn, "filters.png")
    cli("plot", "layers", REPO / "models" / "vgg13_bn_w025_cifar10.onnx", "-o", tmp_path / "vgg_layers.png")
    assert_readable(drawn, "vgg_layers.png")
    cli("prune", convnet, "--method", "taylor", "--sparsity", "0.3", "--data", mnist, "--limit", "300",
        "--out-dir", tmp_path / "taylor", "-o", tmp_path / "taylor.onnx")  # fmt: skip
    cli("plot", "taylor", tmp_path / "taylor", "-o", tmp_path / "taylor.png")
    assert_readable(drawn, "taylor.png")
    vgg = REPO / "models" / "vgg13_bn_w025_cifar10.onnx"  # a batch dimension, beside two models of batch 1 only
    cli("bench", vgg, convnet, tmp_path / "filters.onnx", "--runs", "3", "--out-dir", tmp_path / "bench")
    texts = assert_readable(drawn, "bench.png")
    assert {"batch 1", "batch 32 *"} <= set(texts)
    caption = next(text for text in texts if text.startswith("* batch 32 of ")).replace("\n", " ")
    assert caption == ("* batch 32 of graphs that fix batch 1 (convnet_maxpool_mnist.onnx, filters.onnx): timed on a "
                       "copy with a symbolic batch"), caption  # fmt: skip
    rows = json.loads((tmp_path / "bench" / "bench.json").read_text())
    # fixed-batch exports are timed batched on a symbolic-batch copy (issue 29): every bar is drawn
    assert all(set(row["latency_ms"]) == {"1", "32"} for row in rows)
    assert [row["batched_on_copy"] for row in rows] == [False, True, True]
    assert not any("no bar" in text for text in texts)
    assert_bars_visible(drawn, "bench.png")


def assert_bars_visible(drawn, name, pixels=3.0):
    _, _, bars = drawn[name]
    assert all(bars.pop("labels inside their panel and apart")), "a bar's value label leaves its panel or overlaps"
    small = {title: found for title, found in bars.items() if any(length < pixels for _, length in found)}
    assert not small, f"bars drawn under {pixels} pixels long: {small}"


def test_bench_figure_keeps_sub_millisecond_bars_visible_beside_a_72_ms_one(drawn, tmp_path):
    """Issue 29: batch-1 bars of 0.02 ms beside a 72 ms batch-32 bar on one linear axis drew nothing."""
    from onnxprune.measure.bench import ModelBench

    def result(name, batch_1, batch_32, size, on_copy=False):
        latency = {"1": {"median": batch_1}} | ({"32": {"median": batch_32}} if batch_32 else {})
        return ModelBench(name, name, size, size // 3, size // 2, 1, 1, 1, 0.0, latency_ms=latency,
                          batched_on_copy=on_copy)  # fmt: skip

    results = [result("vgg13_bn_w025_cifar10.onnx", 0.184, 4.58, 2_380_000),
               result("vgg13_bn_w025_cifar10_int8_dynamic.onnx", 1.22, 72.4, 610_000, on_copy=True),
               result("hard_coded_batch.onnx", 0.0230, None, 20_000)]  # fmt: skip
    plots.bench_figure(results, tmp_path / "bench.png")
    texts = assert_readable(drawn, "bench.png")
    assert "median latency (ms, log scale)" in texts and "0.0230" in texts and "72.4" in texts
    caption = next(text for text in texts if text.startswith("* batch 32")).replace("\n", " ")
    assert caption == ("* batch 32 of graphs that fix batch 1 (vgg13_bn_w025_cifar10_int8_dynamic.onnx): timed on a "
                       "copy with a symbolic batch no bar at batch 32: hard_coded_batch.onnx (a batch hard-coded in "
                       "the graph)"), caption  # fmt: skip
    assert "batch 32 *" in texts
    assert_bars_visible(drawn, "bench.png")

    similar = [result("a.onnx", 0.0230, 0.410, 5_760), result("b.onnx", 0.0182, 0.402, 5_750)]
    plots.bench_figure(similar, tmp_path / "similar.png")
    texts = assert_readable(drawn, "similar.png")
    assert {"median latency (µs)", "23.0", "18.2", "410", "kB (10^3 bytes)"} <= set(texts), texts
    (first, _), (second, _) = drawn["similar.png"][2]["batch 1"]
    assert (first, second) == (23.0, 18.2), "values under 1 ms on a linear axis from 0, in µs"
    assert_bars_visible(drawn, "similar.png")


def test_training_without_validation_says_so_instead_of_an_empty_panel(tmp_path, drawn):
    epochs = [{"train_loss": 1.0, "train_top1": 0.5}, {"train_loss": 0.8, "train_top1": 0.6}]
    plots.training({"units": "channels", "rounds": [{"round": 1, "sparsity": 0.4, "top1": None,
                                                     "train_history": epochs}]}, tmp_path / "t.png")  # fmt: skip
    texts = assert_readable(drawn, "t.png")
    assert {"no validation data: no top-1", "sparsity after each round (% of prunable channels)"} <= set(texts)


def test_the_checker_finds_what_it_looks_for(tmp_path):
    """A legend over the data, text off the canvas, a repeated entry, an empty panel and an epoch axis
    ticked between whole numbers are each reported."""
    figure, (axis, empty) = plots._figure(1, 2)
    axis.plot(range(10), range(10), label="a")
    axis.plot(range(10), range(10), label="a")
    axis.legend(loc="center")
    axis.set_title("x" * 300)
    problems = plots.layout_problems(figure)
    assert any("covers its data" in p for p in problems), problems
    assert any("cut off by the figure's edge" in p for p in problems), problems
    assert any("repeats ['a']" in p for p in problems), problems
    assert any("is empty" in p for p in problems), problems
    epochs, axis = plots._figure()
    axis.plot([1], [0.5])
    axis.set_xlabel("epoch")
    assert any("ticks between whole numbers" in p for p in plots.layout_problems(epochs))


def test_save_checked_refuses_a_figure_with_a_layout_problem_and_writes_nothing(tmp_path):
    """What the benchmark scripts save their own figures with."""
    figure, axis = plots._figure()
    axis.plot(range(10), range(10), label="data")
    axis.legend(loc="center", fontsize=40)  # a legend over the data
    with pytest.raises(ValueError, match="figure layout"):
        plots.save_checked(figure, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
    figure, axis = plots._figure()
    axis.plot(range(10), range(10))
    assert plots.save_checked(figure, tmp_path / "good.png").exists()
