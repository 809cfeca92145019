"""The conversion check at load (issue 30): a wrong onnx2torch converter is named, not blamed on the prune.

The faulty converter is registered by the test (`faulty_relu`): onnx2torch's Relu made a LeakyReLU,
so torch computes something else than onnxruntime from the first Relu on.
"""

from __future__ import annotations

import json

import fixtures
import numpy as np
import onnx
import pytest
import torch
from conftest import ALL_MODELS, REAL_MODEL_NAMES, shared_path
from test_cli_errors import assert_one_line_error, run

import onnxprune
from onnxprune.graph.storage import write_back
from onnxprune.graph.verify import random_batch
from onnxprune.workbench.convert import import_onnx2torch, to_torch
from onnxprune.workbench.fidelity import ConversionMismatch, check_conversion


@pytest.fixture
def faulty_relu(monkeypatch):
    """onnx2torch's Relu converter replaced (for this test) by one that builds a LeakyReLU."""
    import_onnx2torch()
    from onnx2torch.node_converters import registry
    from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

    def leaky(node, graph):
        return OperationConverterResult(torch_module=torch.nn.LeakyReLU(0.5), onnx_mapping=onnx_mapping_from_node(node))

    for key in [key for key in registry._CONVERTER_REGISTRY if key.operation_type == "Relu"]:
        monkeypatch.setitem(registry._CONVERTER_REGISTRY, key, leaky)


@pytest.fixture
def alexnet(fixture_model, tmp_path):
    path = tmp_path / "alexnet.onnx"
    path.write_bytes(fixture_model("matlab_alexnet_opset8").read_bytes())
    return path


def first_relu(path) -> str:
    proto = onnx.load(str(path))
    index, node = next((i, n) for i, n in enumerate(proto.graph.node) if n.op_type == "Relu")
    return node.name or f"Relu_{index}"


def test_a_wrong_converter_is_named_at_load(faulty_relu, alexnet):
    with pytest.raises(ConversionMismatch) as caught:
        to_torch(onnxprune.load(alexnet))
    message = str(caught.value)
    assert f"node '{first_relu(alexnet)}' (Relu, revision 6;" in message, message
    assert "What still works: evaluate, bench and quantize run in onnxruntime" in message
    assert caught.value.check.first.op == "Relu" and not caught.value.check.exact


def test_magnitude_prunes_the_weights_and_verifies_against_onnxruntime(faulty_relu, alexnet, tmp_path):
    before = alexnet.read_bytes()
    output = tmp_path / "pruned.onnx"
    result = run("prune", alexnet, "--sparsity", "0.5", "-o", output)
    assert result.exit_code == 0, result.output
    assert "note: the conversion to torch differs from onnxruntime (node '" in result.stdout
    assert "verified against the input model in onnxruntime" in result.stdout
    written, source = onnxprune.load(output), onnxprune.load(alexnet)
    zeros = sum(int((written.weight_array(layer) == 0).sum()) for layer in written.layers)
    assert zeros / sum(layer.numel for layer in written.layers) == pytest.approx(0.5, abs=1e-3)
    assert alexnet.read_bytes() == before
    # the written file is the input graph with the pruned weights: the same outputs in onnxruntime
    weights = {layer.weight: written.weight_array(layer) for layer in written.layers}
    inputs = random_batch(source.input, 2)
    from onnxprune.graph.proto import session

    expected = session(write_back(source, weights).SerializeToString())
    got = session(output)
    np.testing.assert_allclose(
        got.run(None, {got.get_inputs()[0].name: inputs})[0],
        expected.run(None, {expected.get_inputs()[0].name: inputs})[0],
        rtol=1e-5,
        atol=1e-6,
    )


def test_filter_pruning_degrades_the_same_way(faulty_relu, alexnet, tmp_path):
    result = run("prune", alexnet, "--method", "l1-filter", "--sparsity", "0.3", "-o", tmp_path / "small.onnx")
    assert result.exit_code == 0, result.output
    assert "the conversion to torch differs" in result.stdout
    assert onnxprune.load(tmp_path / "small.onnx").layer_total("numel") < onnxprune.load(alexnet).layer_total("numel")


def test_taylor_refuses_naming_the_node(faulty_relu, alexnet, tmp_path):
    images, labels = fixtures.class_images(10, size=35, classes=5)
    np.savez(tmp_path / "d.npz", x=images, y=labels)
    result = run("prune", alexnet, "--method", "taylor", "--sparsity", "0.3", "--data", tmp_path / "d.npz",
                 "-o", tmp_path / "t.onnx")  # fmt: skip
    assert_one_line_error(result, f"node '{first_relu(alexnet)}' (Relu", "--method taylor needs the torch model")
    assert not (tmp_path / "t.onnx").exists()


def test_fine_tuning_and_torch_evaluation_refuse_naming_the_node(faulty_relu, alexnet, tmp_path):
    images, labels = fixtures.class_images(10, size=35, classes=5)
    np.savez(tmp_path / "d.npz", x=images, y=labels)
    tuned = run("prune", alexnet, "--sparsity", "0.5", "--data", tmp_path / "d.npz", "--finetune-epochs", "1",
                "--out-dir", tmp_path / "run")  # fmt: skip
    assert_one_line_error(tuned, "the conversion to torch (onnx2torch) differs from onnxruntime: node '", "(Relu")
    evaluated = run("evaluate", alexnet, "--data", tmp_path / "d.npz", "--engine", "both")
    assert_one_line_error(evaluated, "(Relu")
    assert run("evaluate", alexnet, "--data", tmp_path / "d.npz").exit_code == 0  # onnxruntime alone still works


def test_inspect_check_names_the_first_node_and_exits_1(faulty_relu, alexnet):
    result = run("inspect", alexnet, "--check")
    assert result.exit_code == 1, result.output
    assert "conversion differs: outputs by up to" in result.stdout
    assert "DIFFERS" in result.stdout and "converter of Relu" in result.stdout
    document = json.loads(run("inspect", alexnet, "--check", "--json").stdout)["conversion"]
    assert document["first"]["node"] == first_relu(alexnet) and document["first"]["op"] == "Relu"
    before = [node for node in document["nodes"] if node["node"] != first_relu(alexnet)]
    assert before and before[0]["agrees"], "the nodes before the Relu agree: the report points at one converter"


@pytest.mark.parametrize("model_path", ALL_MODELS, indirect=True)
def test_inspect_check_finds_every_model_exact(model_path):
    """The real models in ../shared and every fixture: the conversion is exact (the zoo's sample: test_zoo)."""
    result = run("inspect", model_path, "--check")
    assert result.exit_code == 0, result.output
    assert "conversion exact: torch equals onnxruntime" in result.stdout


def test_a_rewrite_that_changes_the_output_is_named_apart_from_the_conversion(alexnet, tmp_path, monkeypatch):
    """Conversion exact, written model wrong: the message says so and names the layer whose rewrite differs."""
    import onnxprune.pruning.oneshot as oneshot

    compact = oneshot.compact

    def broken_compact(model, **kwargs):
        proto, report = compact(model, **kwargs)
        last = [node for node in proto.graph.node if node.op_type in ("Gemm", "MatMul", "Conv")][-1]
        bias = next(t for t in proto.graph.initializer if t.name == last.input[2])
        values = onnx.numpy_helper.to_array(bias) + np.arange(bias.dims[0])  # not a shift: a Softmax may follow
        bias.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), bias.name))
        return proto, report

    monkeypatch.setattr(oneshot, "compact", broken_compact)
    result = run("prune", alexnet, "--method", "l1-filter", "--sparsity", "0.3", "-o", tmp_path / "small.onnx")
    assert_one_line_error(
        result, "(the conversion itself is exact: checked at load)", "the first value to depart is at"
    )
    last = [n for n in onnx.load(str(alexnet)).graph.node if n.op_type in ("Gemm", "MatMul", "Conv")][-1]
    assert f"node '{last.name}'" in result.stderr
    assert not (tmp_path / "small.onnx").exists()


def test_nondeterminism_is_told_apart_from_a_wrong_conversion(alexnet):
    model = onnxprune.load(alexnet)

    class Noisy(torch.nn.Module):
        def forward(self, x):
            return torch.rand(x.shape[0], model.num_classes)

    check = check_conversion(model, Noisy())
    assert not check.exact and check.nondeterministic == "torch" and check.usable
    assert "nondeterministic" in check.summary()


def test_the_check_runs_once_per_model(alexnet, monkeypatch):
    import onnxprune.workbench.fidelity as fidelity

    calls = []
    original = fidelity.check_conversion
    monkeypatch.setattr(fidelity, "check_conversion", lambda *a, **k: calls.append(1) or original(*a, **k))
    model = onnxprune.load(alexnet)
    to_torch(model)
    to_torch(model)
    assert len(calls) == 1 and model.conversion_check.exact


def test_real_models_are_listed():
    assert REAL_MODEL_NAMES and shared_path(f"models/{REAL_MODEL_NAMES[0]}").exists()


def test_a_model_onnxruntime_cannot_run_is_not_checked_and_says_why(alexnet, monkeypatch):
    import onnxprune.workbench.fidelity as fidelity

    def refuses(*args, **kwargs):
        raise RuntimeError("NOT_IMPLEMENTED : Could not find an implementation for SomeOp")

    monkeypatch.setattr(fidelity, "_onnxruntime_outputs", refuses)
    model = onnxprune.load(alexnet)
    to_torch(model)  # nothing to compare with: the conversion is used, the written file is still verified
    check = model.conversion_check
    assert check.usable and "onnxruntime cannot run the input model" in check.summary()
    result = run("inspect", alexnet, "--check")
    assert result.exit_code == 1 and "conversion not checked" in result.stdout
