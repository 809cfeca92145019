"""Compaction: channels physically removed, output equal to the masked model, counts as computed."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import ALL_FIXTURES, REAL_MODEL_NAMES
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

import onnxprune
from onnxprune.cli import app
from onnxprune.errors import ConfigError
from onnxprune.graph.channels import analyse, compact
from onnxprune.graph.inspection import describe
from onnxprune.graph.model import from_proto
from onnxprune.graph.proto import session
from onnxprune.graph.storage import write_back
from onnxprune.graph.verify import random_batch
from onnxprune.pruning import channels
from onnxprune.pruning.methods import ScoreContext, get_method
from onnxprune.workbench.convert import to_torch

CHANNEL_MODELS = [f"real:{name}" for name in REAL_MODEL_NAMES] + [f"fixture:{name}" for name in ALL_FIXTURES]


def masked_model(model, fraction=0.4):
    """The model with `fraction` of every group's filters zeroed (l1-filter), as structured pruning leaves it."""
    converted = to_torch(model)
    plan = channels.plan(
        model, get_method("l1-filter"), converted, fraction, "layer", {}, fraction, 0.99, ScoreContext(converted)
    )
    channels.apply(converted, model, plan, keep_masks=False)
    return from_proto(write_back(model, converted.initializer_values(model))), plan


def outputs(proto, batch):
    run = session(proto.SerializeToString())
    return run.run(None, {run.get_inputs()[0].name: batch})[0]


@pytest.mark.parametrize("model_path", CHANNEL_MODELS, indirect=True)
def test_compaction_equals_the_masked_model(model_path):
    model = onnxprune.load(model_path)
    masked, plan = masked_model(model)
    assert plan.removed, "every conformance model has removable channels"
    compacted, report = compact(masked)
    onnx.checker.check_model(compacted)
    # MATLAB's raw 0-255 pixels where the graph subtracts a mean image: LRN's window then matters
    scale = 255.0 if model.is_matlab else 1.0
    batch = random_batch(model.input, batch=2, seed=3) * scale
    expected, actual = outputs(masked.proto, batch), outputs(compacted, batch)
    relative = float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-12))
    assert not report.inexact
    assert relative <= 1e-5, relative

    # parameters and MACs reduced as computed from the new shapes
    small = from_proto(compacted)
    before = {layer.name: layer for layer in model.layers}
    assert sum(report.removed.values()) == len({r for r in plan.removed}) or sum(report.removed.values()) >= len(
        plan.removed
    )
    for layer in small.layers:
        old = before[layer.name]
        assert layer.shape[layer.out_axis] == old.shape[old.out_axis] - report.removed[layer.name]
        if layer.op_type == "Conv" and old.macs:
            ratio = layer.numel / old.numel
            assert layer.macs == pytest.approx(old.macs * ratio, rel=1e-9)
    totals = describe(small)["totals"]
    assert totals["prunable_params"] == sum(int(np.prod(layer.shape)) for layer in small.layers)
    assert totals["prunable_params"] < describe(model)["totals"]["prunable_params"]
    # the graph keeps its names and op vocabulary; nodes added around an LRN are reported
    names = {n.name for n in model.proto.graph.node}
    original = [(n.name, n.op_type) for n in compacted.graph.node if n.name in names]
    assert original == [(n.name, n.op_type) for n in model.proto.graph.node]
    added = [n for n in compacted.graph.node if n.name not in names]
    assert bool(added) == bool(report.rewritten)
    assert all(any(n.name.startswith(rewritten) for rewritten in report.rewritten) for n in added)


def test_residual_channels_are_removed_together(fixture_model):
    model = onnxprune.load(onnxprune.graph.model.Path("../shared/models/pytorch/resnet_2b_cifar10.onnx"))
    structure = analyse(model)
    # layer1.0.conv2 and its shortcut feed the same Add: their channels are one unit each
    np.testing.assert_array_equal(structure.layer_units("Conv_4"), structure.layer_units("Conv_5"))


def test_grouped_convolution_loses_channels_evenly(fixture_model):
    model = onnxprune.load(fixture_model("matlab_alexnet_opset8"))
    masked, _ = masked_model(model, 0.5)
    compacted, _ = compact(masked)
    weights = {t.name: numpy_helper.to_array(t) for t in compacted.graph.initializer}
    groups = {
        n.name: next(a.i for a in n.attribute if a.name == "group") for n in compacted.graph.node if n.op_type == "Conv"
    }
    assert groups["conv2"] == 2 and weights["conv2_W"].shape[0] % 2 == 0
    assert weights["conv2_W"].shape[1] * 2 == weights["conv1_W"].shape[0]  # input channels split evenly


def test_constant_of_removed_channel_is_folded_into_bias(fixture_model):
    """Zero filters that keep their bias carry that bias downstream: folded into the next layer."""
    model = onnxprune.load(fixture_model("matmul_mlp"))
    weights = {t.name: numpy_helper.to_array(t).copy() for t in model.proto.graph.initializer}
    weights["fc_1_MatMul_W"][:, :10] = 0  # ten neurons with weights zero but biases intact
    masked = from_proto(write_back(model, {"fc_1_MatMul_W": weights["fc_1_MatMul_W"]}))
    compacted, report = compact(masked)
    assert report.removed["fc_1_MatMul"] == 10 and report.folded == ["fc_2_MatMul"]
    batch = random_batch(model.input, 4)
    np.testing.assert_allclose(outputs(compacted, batch), outputs(masked.proto, batch), rtol=1e-5, atol=1e-6)


def test_sigmoid_constant_is_folded(shared_model_nln=None):
    from conftest import shared_path

    model = onnxprune.load(shared_path("models/matlab/nln_logsig_200_100_50.onnx"))
    masked, _ = masked_model(model)
    compacted, report = compact(masked)
    assert report.folded, "sigmoid(0) = 0.5 of every removed neuron goes into the next layer's bias"
    batch = random_batch(model.input, 1)
    np.testing.assert_allclose(outputs(compacted, batch), outputs(masked.proto, batch), rtol=1e-5, atol=1e-7)


def test_reshape_target_is_patched(fixture_model):
    model = onnxprune.load(fixture_model("tf2onnx_nhwc"))
    masked, _ = masked_model(model, 0.5)
    compacted, _ = compact(masked)
    shape = next(numpy_helper.to_array(t) for t in compacted.graph.initializer if t.name == "flatten/shape")
    assert list(shape) == [-1, 4]


def test_compact_cli(fixture_model, tmp_path):
    model = onnxprune.load(fixture_model("concat_net"))
    masked, _ = masked_model(model)
    source = tmp_path / "masked.onnx"
    onnx.save_model(masked.proto, str(source))
    output = tmp_path / "small.onnx"
    result = CliRunner().invoke(app, ["compact", str(source), "-o", str(output)])
    assert result.exit_code == 0, result.output
    assert "parameters" in result.stdout and output.exists()
    assert output.stat().st_size < source.stat().st_size


def test_structured_prune_cli(fixture_model, tmp_path):
    output = tmp_path / "small.onnx"
    args = [
        "prune",
        str(fixture_model("vgg_bn_dynamo")),
        "--method",
        "l2-filter",
        "--sparsity",
        "0.4",
        "-o",
        str(output),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "MACs -" in result.stdout
    small = onnxprune.load(output)
    assert small.layers[0].shape[0] < 8


# --- bad input ---------------------------------------------------------------------------------


def test_structured_method_without_removable_channels(tmp_path):
    weight = numpy_helper.from_array(np.ones((3, 4), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W"], ["y"], name="only", transB=1)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [weight],
    )
    path = tmp_path / "single.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    result = CliRunner().invoke(app, ["prune", str(path), "--method", "l1-filter", "-o", str(tmp_path / "o.onnx")])
    assert result.exit_code == 2 and "no filter or neuron can be removed" in result.stderr
    assert result.stderr.count("\n") == 1


def test_ratio_removing_every_channel(fixture_model, tmp_path):
    config = tmp_path / "r.yaml"
    config.write_text("conv_b: 0.9\n")  # conv_b has 4 filters: round(3.6) = 4
    model = onnxprune.load(fixture_model("concat_net"))
    with pytest.raises(ConfigError, match="would remove every channel of 'conv_b'"):
        onnxprune.prune(model, 0.3, method="l1-filter", config=config)


def test_unresolved_dependency_names_the_node_and_mask_only_falls_back(tmp_path):
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "c_W"),
        numpy_helper.from_array(rng.standard_normal((4, 2, 1, 1)).astype(np.float32), "d_W"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "c_W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("DepthToSpace", ["c"], ["s"], name="to_space", blocksize=2, mode="CRD"),
            helper.make_node("Conv", ["s", "d_W"], ["y"], name="head"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        inits,
    )
    model = from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    with pytest.raises(ConfigError, match=r"node 'to_space' \(DepthToSpace\).*--mask-only"):
        onnxprune.prune(model, 0.5, method="l1-filter")
    result = onnxprune.prune(model, 0.5, method="l1-filter", mask_only=True)
    assert result.compaction.skipped, "the channels were zeroed, not removed"
    zeros = result.weights["c_W"].reshape(8, -1)
    assert int((~zeros.any(axis=1)).sum()) == 4


def test_channel_counts_rounded_for_fast_kernels():
    from onnxprune.pruning.channels import _rounded

    assert _rounded(count=26, original=64, remaining=64, round_to=16) == 32  # 38 left -> 32, the nearest
    assert 512 - _rounded(205, 512, 512, 16) == 304
    assert _rounded(count=3, original=8, remaining=8, round_to=16) == 3  # small layers: exact
