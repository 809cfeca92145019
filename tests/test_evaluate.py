"""Evaluation reproduces the accuracies listed for the real models, in onnxruntime and in torch."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_path
from typer.testing import CliRunner

import onnxprune
from onnxprune.cli import app
from onnxprune.workbench.data import load_data, preprocess_for
from onnxprune.workbench.evaluate import evaluate

CIFAR = {"mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)}
# ../shared/models/README.md: file, data, preprocessing, listed top-1
LISTED = [
    ("matlab/nln_logsig_200_100_50.onnx", "mnist", {}, 0.9601),
    ("matlab/cora_mnist_point.onnx", "mnist", {"flatten_order": "column"}, 0.9817),
    ("pytorch/convnet_maxpool_mnist.onnx", "mnist", {}, 0.9792),
    ("pytorch/resnet_2b_cifar10.onnx", "cifar", CIFAR, 0.6725),
    ("pytorch/oval21_cifar_base.onnx", "cifar", CIFAR, 0.584),
]


@pytest.fixture(scope="module")
def datasets():
    cache = {}

    def get(name):
        if name not in cache:
            if name == "mnist":
                cache[name] = load_data(shared_path("data/mnist"))
            else:  # "first 2000" of the test set: the archive's own order
                full = load_data(shared_path("data/cifar10/test.zip"))
                cache[name] = full.subset(np.arange(2000))
        return cache[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("name, data, options, listed", LISTED, ids=[row[0] for row in LISTED])
def test_listed_accuracy_reproduced_in_both_engines(name, data, options, listed, datasets):
    model = onnxprune.load(shared_path(f"models/{name}"))
    preprocess = preprocess_for(model, **options)
    dataset = datasets(data)
    ort = evaluate(model, dataset, preprocess, engine="onnxruntime")
    torch_result = evaluate(model, dataset, preprocess, engine="torch")
    assert ort.top1 == pytest.approx(listed, abs=0.005)
    assert abs(ort.top1 - torch_result.top1) <= 1 / len(dataset)  # a single borderline sample at most
    assert ort.loss == pytest.approx(torch_result.loss, rel=1e-3)
    assert ort.top5 >= ort.top1


def test_fixed_batch_model_is_evaluated_in_batches(datasets):
    """nln_logsig has a fixed batch of 1; the working copy makes it symbolic, so one call serves 512."""
    model = onnxprune.load(shared_path("models/matlab/nln_logsig_200_100_50.onnx"))
    assert model.input.shape[0] == 1
    subset = datasets("mnist").subset(np.arange(1000))
    result = evaluate(model, subset, preprocess_for(model), batch_size=512)
    assert result.samples == 1000 and result.top1 > 0.9


def test_evaluate_cli_both_engines():
    args = ["evaluate", str(shared_path("models/pytorch/convnet_maxpool_mnist.onnx")), "--data"]
    args += [str(shared_path("data/mnist")), "--engine", "both", "--limit", "500", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    import json

    ort, torch_result = json.loads(result.stdout)
    assert ort["engine"] == "onnxruntime" and torch_result["engine"] == "torch"
    assert ort["top1"] == torch_result["top1"] and ort["samples"] == 500


@pytest.mark.parametrize(
    "model, data, flat",
    [("models/matlab/cora_mnist_point.onnx", "data/mnist", True),  # needs --flatten column
     ("models/pytorch/resnet_2b_cifar10.onnx", "data/cifar10/test.zip", False)],  # needs --mean/--std
)  # fmt: skip
def test_wrong_preprocessing_gets_a_note_near_chance(model, data, flat):
    result = CliRunner().invoke(app, ["evaluate", str(shared_path(model)), "--data", str(shared_path(data)),
                                      "--limit", "300"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "is near chance (10.0% for 10 classes)" in result.stdout and "--mean/--std" in result.stdout
    assert ("--flatten" in result.stdout) == flat, "issue 29, 12: --flatten is suggested for flat inputs only"


def test_a_normalised_model_fed_0_255_pixels_gets_a_note_from_its_loss():
    """Issue 29, 4: top-1 well above chance, loss ~50-180: confidently wrong, the inputs are off by a scale."""
    model, data = shared_path("models/pytorch/resnet_2b_cifar10.onnx"), shared_path("data/cifar10/test.zip")
    mean_std = ["--mean", "0.4914,0.4822,0.4465", "--std", "0.2470,0.2435,0.2616"]
    base = ["evaluate", str(model), "--data", str(data), "--limit", "500"]
    wrong = CliRunner().invoke(app, [*base, "--pixel-range", "0-255", *mean_std])
    assert wrong.exit_code == 0, wrong.output
    note = next(line for line in wrong.stdout.splitlines() if line.startswith("note: loss"))
    assert "times a uniform guess's (2.30 for 10 classes)" in note and "--pixel-range" in note, note
    assert "near chance" not in wrong.stdout  # top-1 ~35%: the chance note stays silent, the loss speaks
    right = CliRunner().invoke(app, [*base, *mean_std])
    assert right.exit_code == 0 and "note:" not in right.stdout, right.stdout


def test_the_loss_note_needs_a_loss_far_above_a_guess():
    from onnxprune.workbench.evaluate import input_scale_note

    assert input_scale_note(0.37, 161.98, 10) is not None
    assert input_scale_note(0.42, 5.0, 10) is None  # a pruned model's loss, 2x a guess's: not an input problem
    assert input_scale_note(0.05, 161.98, 10) is None  # near chance: chance_note speaks instead
    assert "--flatten" not in input_scale_note(0.37, 161.98, 10, flat=False)


def test_a_model_whose_output_is_not_class_scores_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from onnxprune.errors import ConfigError
    from onnxprune.workbench.data import Dataset

    weight = helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 3, 3], [0.1] * 9)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "denoiser",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 28, 28])], [weight],
    )  # fmt: skip
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "d.onnx"))
    model = onnxprune.load(tmp_path / "d.onnx")
    dataset = Dataset(np.zeros((4, 28, 28, 1), np.uint8), np.arange(4) % 2, ["a", "b"], "tiny")
    with pytest.raises(ConfigError, match="is 1x1x28x28, not one score per class"):
        evaluate(model, dataset, preprocess_for(model))
