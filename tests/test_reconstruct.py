"""Least-squares reconstruction of the kept weights (--reconstruct): masks unchanged, outputs closer to the
dense model's, accuracy measured on samples it was not solved on, and its refusals."""

from __future__ import annotations

import json

import fixtures
import numpy as np
import pytest
import torch
from conftest import shared_path
from typer.testing import CliRunner

import onnxprune
from onnxprune.cli import app
from onnxprune.errors import ConfigError
from onnxprune.measure.sweep import sweep
from onnxprune.options import PruneOptions, ScheduleOptions, TrainOptions
from onnxprune.pruning.reconstruct import calibration_split
from onnxprune.report import plots
from onnxprune.workbench.convert import to_torch
from onnxprune.workbench.data import Dataset, load_data, preprocess_for
from onnxprune.workbench.evaluate import evaluate

runner = CliRunner()


def _images(count: int, size: int, classes: int, seed: int = 0) -> Dataset:
    pixels, labels = fixtures.class_images(count, size=size, classes=classes, seed=seed)
    return Dataset(pixels, labels, [str(i) for i in range(classes)], "synthetic")


def _output_error(model, result, inputs: torch.Tensor) -> float:
    """Relative squared difference of the pruned model's outputs from the dense model's."""
    with torch.no_grad():
        dense = to_torch(model).module.eval()(inputs)
        pruned = result.torch_model.module.eval()(inputs)
    return float(((pruned - dense) ** 2).sum() / (dense**2).sum())


@pytest.mark.parametrize("name, size", [("vgg_bn_torchscript", 16), ("depthwise_net", 8), ("concat_net", 8)])
def test_reconstruction_keeps_the_masks_and_brings_outputs_back(fixture_model, name, size):
    model = onnxprune.load(fixture_model(name))
    data = _images(256, size, model.num_classes, seed=1)
    preprocess = preprocess_for(model)
    plain = onnxprune.prune(model, 0.8, data=data, preprocess=preprocess)
    rebuilt = onnxprune.prune(model, 0.8, data=data, preprocess=preprocess, reconstruct=True)
    for weight, values in plain.weights.items():  # the same zeros, no more, no fewer
        np.testing.assert_array_equal(values == 0, rebuilt.weights[weight] == 0, err_msg=weight)
    report = rebuilt.reconstruction
    assert set(report.errors) == set(plain.torch_model.params) and not report.skipped
    assert all(after <= before for before, after in report.errors.values())
    assert sum(after for _, after in report.errors.values()) < 0.7 * sum(before for before, _ in report.errors.values())
    assert report.samples == 256 and rebuilt.notes[-1].startswith(f"reconstructed {len(report.errors)} layer(s)")
    held_out = torch.from_numpy(preprocess(_images(64, size, model.num_classes, seed=2)))
    assert _output_error(model, rebuilt, held_out) < 0.8 * _output_error(model, plain, held_out)


@pytest.mark.parametrize("name, size", [("vgg_bn_torchscript", 16), ("concat_net", 8), ("depthwise_net", 8)])
def test_structured_reconstruction_keeps_the_channels_and_the_compacted_file_verifies(
    fixture_model, tmp_path, name, size
):
    model = onnxprune.load(fixture_model(name))
    data = _images(256, size, model.num_classes, seed=1)
    preprocess = preprocess_for(model)
    plain = onnxprune.prune(model, 0.5, method="l1-filter", round_to=1)
    rebuilt = onnxprune.prune(model, 0.5, method="l1-filter", round_to=1, data=data, preprocess=preprocess,
                              reconstruct=True)  # fmt: skip
    assert [layer.shape for layer in rebuilt.model.layers] == [layer.shape for layer in plain.model.layers]
    assert rebuilt.reconstruction.errors and not rebuilt.reconstruction.skipped
    assert rebuilt.notes[-1].startswith("reconstructed")
    verification = onnxprune.save(rebuilt, tmp_path / "small.onnx")  # the compacted file against torch
    assert verification.max_abs_diff < 1e-3
    held_out = torch.from_numpy(preprocess(_images(64, size, model.num_classes, seed=2)))
    assert _output_error(model, rebuilt, held_out) < 0.8 * _output_error(model, plain, held_out)


def test_reconstructed_file_has_the_sparsity_and_matches_torch(fixture_model, tmp_path):
    model = onnxprune.load(fixture_model("vgg_bn_torchscript"))
    data = _images(128, 16, 10)
    result = onnxprune.prune(model, 0.7, scope="global", data=data, preprocess=preprocess_for(model), reconstruct=True)
    verification = onnxprune.save(result, tmp_path / "out.onnx")
    assert verification.max_abs_diff < 1e-4  # onnxruntime runs the written file as torch computed it
    written = onnxprune.load(tmp_path / "out.onnx")
    assert 1 - written.layer_nonzero() / written.layer_total("numel") == pytest.approx(0.7, abs=0.002)


def test_matmul_layers_are_solved_and_the_file_verifies(fixture_model, tmp_path):
    """MatMul by a constant weight (MATLAB's cora style, onnx2torch's bound weights) is solved as Linear."""
    model = onnxprune.load(fixture_model("matmul_mlp"))
    pixels = np.random.default_rng(0).normal(size=(128, 20)).astype(np.float32)
    data = Dataset(pixels, np.arange(128) % 4, ["a", "b", "c", "d"], "vectors", value_range="any")
    plain = onnxprune.prune(model, 0.6, data=data, preprocess=preprocess_for(model))
    result = onnxprune.prune(model, 0.6, data=data, preprocess=preprocess_for(model), reconstruct=True)
    assert set(result.reconstruction.errors) == {layer.name for layer in model.layers}
    assert all(after < before for before, after in result.reconstruction.errors.values())
    for weight, values in plain.weights.items():
        np.testing.assert_array_equal(values == 0, result.weights[weight] == 0, err_msg=weight)
    assert onnxprune.save(result, tmp_path / "mlp.onnx").max_abs_diff < 1e-4


def test_a_model_already_masked_and_trained_is_reconstructed(fixture_model):
    """IMP's later rounds and sparsity training hand prune a masked model whose weights autograd computed."""
    from onnxprune.workbench.train import refresh_pruned

    model = onnxprune.load(fixture_model("vgg_bn_torchscript"))
    data = _images(64, 16, 10)
    first = onnxprune.prune(model, 0.5)
    refresh_pruned(first.torch_model.module)  # as fine-tuning leaves it: weight = weight_orig * mask, with grad
    second = onnxprune.prune(model, 0.8, torch_model=first.torch_model, data=data, preprocess=preprocess_for(model),
                             reconstruct=True)  # fmt: skip
    assert second.reconstruction.errors and second.prunable_sparsity == pytest.approx(0.8, abs=0.01)


def test_a_layer_too_costly_to_solve_is_left_and_named(fixture_model, monkeypatch):
    from onnxprune.pruning import reconstruct as module

    monkeypatch.setattr(module, "MAX_SOLVE_COST", 1e3)
    model = onnxprune.load(fixture_model("depthwise_net"))
    result = onnxprune.prune(model, 0.5, data=_images(32, 8, 4), preprocess=preprocess_for(model), reconstruct=True)
    assert "multiply-adds to solve (the limit is 1e+03)" in next(iter(result.reconstruction.skipped.values()))
    assert "left as they were" in result.notes[-1]


def test_a_layer_too_wide_to_solve_is_left_and_named():
    """FLIR's classifier has 15,200 inputs per output: over the limit, left as pruning left it, in the note."""
    from onnxprune.graph.verify import random_batch
    from onnxprune.pruning.reconstruct import reconstruct, reference_copy

    model = onnxprune.load(shared_path("models/matlab/flir_defect_r2020.onnx"))
    result = onnxprune.prune(model, 0.7, scope="lamp")
    inputs = torch.from_numpy(np.concatenate([random_batch(model.input, 8, seed=s) for s in range(2)]))
    report = reconstruct(result.torch_model, reference_copy(to_torch(model)), inputs)
    assert len(report.skipped) == 1 and "15200 inputs per output is too wide" in next(iter(report.skipped.values()))
    assert len(report.errors) == len(model.layers) - 1
    assert "1 left as they were" in report.note()


def _mlp_and_mnist():
    model = onnxprune.load(shared_path("models/matlab/nln_logsig_200_100_50.onnx"))
    mnist = load_data(shared_path("data/mnist"))  # MNIST's test file is not grouped by class
    return model, preprocess_for(model), mnist.subset(np.arange(2000)), mnist.subset(np.arange(8000, 10000))


def test_matlab_mlp_keeps_its_accuracy_at_90_percent_without_fine_tuning():
    """MATLAB's sigmoid MLP at 90% (LAMP): 61% as pruned, 94% reconstructed on 512 other images (measured)."""
    model, preprocess, train, test = _mlp_and_mnist()
    plain = onnxprune.prune(model, 0.9, scope="lamp")
    rebuilt = onnxprune.prune(model, 0.9, scope="lamp", data=train, preprocess=preprocess, reconstruct=True)
    top1 = {
        name: evaluate(model, test, preprocess, engine="torch", torch_module=result.torch_model.module).top1
        for name, result in (("plain", plain), ("rebuilt", rebuilt))
    }
    assert top1["rebuilt"] > 0.9 and top1["rebuilt"] > top1["plain"] + 0.15, top1


def test_sweep_reconstructs_every_level_on_samples_kept_apart():
    model, preprocess, train, test = _mlp_and_mnist()
    calibration, rest = calibration_split(test)
    assert len(calibration) == 512 and len(rest) == 1488
    assert not set(map(bytes, calibration.images)) & set(map(bytes, rest.images[:200]))
    levels = [0.0, 0.8, 0.9]
    plain = sweep(model, rest, preprocess, levels, ["magnitude"], ["lamp"], engine="torch")
    rebuilt = sweep(model, rest, preprocess, levels, ["magnitude"], ["lamp"], engine="torch", calibration=calibration)
    assert rebuilt.extra["reconstructed_on"] == 512
    assert rebuilt.rows[0].accuracy == plain.rows[0].accuracy  # level 0 is the dense model either way
    assert rebuilt.rows[2].accuracy > plain.rows[2].accuracy + 0.15
    assert [r.num_nonzero for r in rebuilt.rows] == [r.num_nonzero for r in plain.rows]


def test_reconstructed_curves_are_named_and_the_dense_line_drawn_once(tmp_path, monkeypatch):
    model, preprocess, _, test = _mlp_and_mnist()
    calibration, rest = calibration_split(test.subset(np.arange(1200)))
    tables = [sweep(model, rest, preprocess, [0.0, 0.9], ["magnitude"], ["lamp"], engine="torch", calibration=c)
              for c in (None, calibration)]  # fmt: skip
    figures = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: figures.append(figure) or path)
    plots.accuracy_vs_sparsity(tables, tmp_path / "curves.png")
    labels = figures[0].legends[0].get_texts() if figures[0].legends else figures[0].axes[0].get_legend().get_texts()
    labels = [text.get_text() for text in labels]
    assert labels.count("magnitude (lamp)") + labels.count("magnitude (lamp), reconstructed") == 2, labels
    assert sum(label.startswith("dense") for label in labels) == 1, labels
    assert plots.layout_problems(figures[0]) == []


def test_calibration_split_refuses_too_little_data():
    with pytest.raises(Exception, match="cannot give both calibration and evaluation"):
        calibration_split(_images(1, 8, 2))


@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda: ScheduleOptions(
                PruneOptions(0.5, reconstruct=True), train=TrainOptions(epochs=1), iterations=2, rewind=True
            ),
            "--rewind resets the surviving weights that --reconstruct solves",
        ),
        (
            lambda: ScheduleOptions(
                PruneOptions(0.5, reconstruct=True), train=TrainOptions(epochs=1), schedule="gradual"
            ),
            "--schedule gradual prunes while training",
        ),  # fmt: skip
    ],
)
def test_options_refuse_what_reconstruction_cannot_do(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_prune_library_call_without_data_is_refused(fixture_model):
    model = onnxprune.load(fixture_model("depthwise_net"))
    with pytest.raises(ConfigError, match="give --data"):
        onnxprune.prune(model, 0.5, reconstruct=True)


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "--reconstruct solves each layer on data: give --data"),
    ],
)
def test_prune_cli_refusals(fixture_model, tmp_path, extra, message):
    folder = fixtures.image_folder(tmp_path / "images", size=(16, 16))
    args = [str(fixture_model("vgg_bn_torchscript")), "--sparsity", "0.5", "--reconstruct"]
    args += [str(folder) if a == "DATA" else a for a in extra] + ["-o", str(tmp_path / "out.onnx")]
    outcome = runner.invoke(app, ["prune", *args])
    assert outcome.exit_code != 0 and message in outcome.output
    assert "Traceback" not in outcome.output and not (tmp_path / "out.onnx").exists()


def test_prune_cli_reconstructs_and_says_so(tmp_path):
    mlp = shared_path("models/matlab/nln_logsig_200_100_50.onnx")
    args = ["prune", str(mlp), "--sparsity", "0.9", "--data", str(shared_path("data/mnist")), "--limit", "1500",
            "--reconstruct", "-o", str(tmp_path / "mlp.onnx"), "--out-dir", str(tmp_path / "run")]  # fmt: skip
    outcome = runner.invoke(app, args)
    assert outcome.exit_code == 0, outcome.output
    assert "note: round 1: reconstructed 4 layer(s) on 512 samples" in outcome.output
    assert "--reconstruct would solve" not in outcome.output
    written = onnxprune.load(tmp_path / "mlp.onnx")
    assert 1 - written.layer_nonzero() / written.layer_total("numel") == pytest.approx(0.9, abs=0.002)


def test_sweep_cli_holds_calibration_images_out(tmp_path):
    mlp = shared_path("models/matlab/nln_logsig_200_100_50.onnx")
    args = ["sweep", str(mlp), "--data", str(shared_path("data/mnist")), "--limit", "1200", "--sparsities",
            "0,0.9", "--scope", "lamp", "--reconstruct", "-o", str(tmp_path / "sweep")]  # fmt: skip
    outcome = runner.invoke(app, args)
    assert outcome.exit_code == 0, outcome.output
    assert "--reconstruct: 512 of the images (stratified) solve the layers; top-1 is measured on the other 688" in (
        outcome.output.replace("\n", " ")
    )
    table = json.loads((tmp_path / "sweep" / "results.json").read_text())
    assert table["extra"]["reconstructed_on"] == 512


def test_max_drop_sweeps_with_reconstruction(tmp_path):
    mlp = shared_path("models/matlab/nln_logsig_200_100_50.onnx")
    args = ["prune", str(mlp), "--max-drop", "0.02", "--sparsities", "0.5,0.8,0.9", "--data",
            str(shared_path("data/mnist")), "--limit", "1500", "--reconstruct", "-o", str(tmp_path / "m.onnx"),
            "--out-dir", str(tmp_path / "run")]  # fmt: skip
    outcome = runner.invoke(app, args)
    assert outcome.exit_code == 0, outcome.output
    assert "reconstructed 4 layer(s)" in outcome.output and (tmp_path / "m.onnx").exists()


def test_with_data_and_nothing_trained_reconstruction_is_measured_and_chosen(tmp_path):
    """Issue 27: whether to reconstruct is measured on the model, not only suggested; the user decides over it."""
    mlp = shared_path("models/matlab/nln_logsig_200_100_50.onnx")
    base = ["prune", str(mlp), "--sparsity", "0.8", "--data", str(shared_path("data/mnist")), "--limit", "1500"]
    chosen = runner.invoke(app, [*base, "-o", str(tmp_path / "a.onnx"), "--out-dir", str(tmp_path / "a")])
    assert chosen.exit_code == 0, chosen.output
    text = " ".join(chosen.output.split())
    assert "note: reconstruction measured at 80% (scope lamp) on 988 samples:" in text
    assert ": reconstructing;" in text and "note: round 1: reconstructed 4 layer(s)" in text
    assert "--reconstruct would solve" not in text, "measured, not suggested"
    declined = runner.invoke(app, [*base, "--no-reconstruct", "-o", str(tmp_path / "b.onnx"), "--out-dir",
                                   str(tmp_path / "b")])  # fmt: skip
    assert declined.exit_code == 0 and "reconstruct" not in declined.output.replace("--no-reconstruct", "")
    tuned = runner.invoke(app, [*base, "--finetune-epochs", "1", "--no-reconstruct", "-o", str(tmp_path / "c.onnx")])
    assert tuned.exit_code == 2 and "--no-reconstruct has no effect here" in tuned.stderr
