"""The built-in data, the shipped reference models, and the demo end to end (reduced)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, shared_path
from typer.testing import CliRunner

import onnxprune
from onnxprune.cli import app
from onnxprune.demo import spectrograms
from onnxprune.workbench.data import load_data, preprocess_for
from onnxprune.workbench.evaluate import evaluate

MODELS = REPO / "models"


def test_generator_is_deterministic(tmp_path):
    first = spectrograms.generate(tmp_path / "a", train_per_class=3, test_per_class=2, seed=7)
    second = spectrograms.generate(tmp_path / "b", train_per_class=3, test_per_class=2, seed=7)
    other = spectrograms.generate(tmp_path / "c", train_per_class=3, test_per_class=2, seed=8)
    assert spectrograms.fingerprint(first) == spectrograms.fingerprint(second)
    assert spectrograms.fingerprint(first) != spectrograms.fingerprint(other)
    dataset = load_data(first / "train")
    assert dataset.classes == sorted(spectrograms.CLASSES) and dataset.images.shape == (18, 64, 64, 1)
    assert (first / ".complete").read_text() == spectrograms.fingerprint(first)  # cached: not generated twice


def test_alexnet_reference_model_reaches_its_recorded_accuracy():
    path = MODELS / "alexnet_spectro.onnx"
    card = json.loads(path.with_suffix(".json").read_text())
    model = onnxprune.load(path)
    assert model.is_matlab and model.opset == 8 and model.input.shape == (1, 1, 64, 64)
    assert [n.op_type for n in model.proto.graph.node][:2] == ["Sub", "Conv"]
    assert {"LRN", "Dropout", "Gemm", "Softmax"} <= {n.op_type for n in model.proto.graph.node}
    assert any(layer.groups == 2 for layer in model.layers)
    root = spectrograms.generate()  # the data set it was trained on (cached)
    test = load_data(root / "test")
    result = evaluate(model, test, preprocess_for(model))
    assert result.top1 == pytest.approx(card["test_top1"], abs=0.005)
    assert result.top1 >= 0.90


@pytest.mark.slow
def test_vgg13_reference_model_on_a_cifar_sample():
    path = MODELS / "vgg13_bn_w025_cifar10.onnx"
    card = json.loads(path.with_suffix(".json").read_text())
    model = onnxprune.load(path)
    assert {"BatchNormalization", "Conv", "Gemm"} <= {n.op_type for n in model.proto.graph.node}
    test = load_data(shared_path("data/cifar10/test.zip"))
    sample = test.subset(np.random.default_rng(0).permutation(len(test))[:2000])
    preprocess = preprocess_for(model, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
    result = evaluate(model, sample, preprocess)
    assert result.top1 == pytest.approx(card["test_top1"], abs=0.03)  # a 2,000-image sample of the 10,000
    assert card["test_top1"] >= 0.85


def test_reference_models_verify_after_pruning(tmp_path):
    for name in ("alexnet_spectro.onnx", "vgg13_bn_w025_cifar10.onnx"):
        model = onnxprune.load(MODELS / name)
        report = onnxprune.save(onnxprune.prune(model, 0.5, scope="global"), tmp_path / name)
        assert report.max_abs_diff < 1e-3


def test_demo_end_to_end_reduced(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--quick", "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("accuracy_vs_sparsity.png", "layer_sparsity.png", "masks.png", "training.png", "summary.json",
                 "comparison.json", "sweep/results.json", "sweep/results.csv", "sweep/results.mat"):  # fmt: skip
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pruned_sparsity"] > 0 and Path(summary["pruned_model"]).exists()
    assert summary["comparison"]["pruned, sparse storage"]["bytes"] <= summary["comparison"]["dense"]["bytes"]
    assert "Next: run the same on your own model" in result.stdout
    again = CliRunner().invoke(app, ["demo", "--quick", "--out-dir", str(out)])
    assert again.exit_code == 2 and "is not empty" in again.stderr


def test_an_interrupted_demo_lists_what_it_wrote(tmp_path, monkeypatch):
    """Issue 29, 5: Ctrl-C said 'no output was written' beside the sweep's figure and results."""
    import onnxprune.demo.run as demo_run

    def interrupted_fine_tuning(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_run, "run", interrupted_fine_tuning)  # after the sweep, as the user pressed it
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--quick", "--out-dir", str(out)])
    assert result.exit_code == 130, result.output
    line = result.stderr.strip()
    assert line.startswith(f"error: interrupted; {out} holds what finished (") and "no output" not in line
    assert "accuracy_vs_sparsity.png" in line and "sweep/results.json" in line
    assert "delete it or give another --out-dir" in line
    assert (out / "accuracy_vs_sparsity.png").exists() and (out / "sweep" / "results.json").exists()
