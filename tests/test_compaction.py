"""Exact compaction on the graphs users bring: every removal keeps the masked model's outputs.

Each test zeroes filters (weights only, as another tool leaves them, or filters and biases), compacts,
and checks the three things a compacted model owes: onnx.checker passes, onnxruntime's outputs equal
the masked model's (relative difference <= 1e-5), and there are fewer parameters.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import onnxprune
from onnxprune.model import from_proto
from onnxprune.storage import write_back
from onnxprune.structure import compact
from onnxprune.verify import random_batch, session

RTOL = 1e-5


def zero_filters(model, fraction: float = 0.3, seed: int = 0, layers=None) -> dict[str, np.ndarray]:
    """`fraction` of the filters of every Conv (or of `layers`) zeroed, weights only."""
    rng = np.random.default_rng(seed)
    values = {}
    for layer in model.layers:
        if layer.op_type != "Conv" or (layers is not None and layer.name not in layers):
            continue
        weight = model.weight_array(layer).copy()
        count = int(round(fraction * weight.shape[0]))
        if count:
            weight[rng.choice(weight.shape[0], count, replace=False)] = 0
            values[layer.weight] = weight
    return values


def run(proto: onnx.ModelProto, batch: np.ndarray) -> list[np.ndarray]:
    runner = session(proto.SerializeToString())
    return runner.run(None, {runner.get_inputs()[0].name: batch})


def relative(want: list[np.ndarray], got: list[np.ndarray]) -> float:
    worst = 0.0
    for a, b in zip(want, got, strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        worst = max(worst, float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a))), 1e-12)))
    return worst


def compact_and_check(masked_proto: onnx.ModelProto, seeds=(3, 4)):
    """Compact; assert checker, equal outputs and fewer parameters; return (compacted, report)."""
    masked = from_proto(masked_proto)
    compacted, report = compact(masked)
    onnx.checker.check_model(compacted)
    for seed in seeds:
        batch = random_batch(masked.input, batch=2, seed=seed)
        assert relative(run(masked_proto, batch), run(compacted, batch)) <= RTOL
    assert not report.inexact, report.inexact
    assert from_proto(compacted).layer_total("numel") < masked.layer_total("numel")
    return compacted, report


def build(nodes, inits, inputs, outputs, opset=13) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="onnx.helper")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def tensor(name, shape, rng, scale=0.5, offset=0.0):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale + offset).astype(np.float32), name)


def image(name="x", channels=3, side=8):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", channels, side, side])


def logits(name="y", classes=4):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", classes])


def head(source, channels, rng, inits, classes=4):
    """GlobalAveragePool -> Flatten -> Gemm: the classifier every fixture ends with."""
    inits += [tensor("fc_W", (classes, channels), rng), tensor("fc_B", (classes,), rng, 0.1)]
    return [
        helper.make_node("GlobalAveragePool", [source], ["pooled"], name="gap"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_W", "fc_B"], ["y"], name="fc", transB=1),
    ]


# --- the created bias (issue 13: VGG13 reference) ----------------------------------------------


def test_vgg13_reference_with_zeroed_filters_compacts_exactly():
    """30% of every conv's filters zeroed, biases and BatchNorm untouched (another tool's output).

    Before: "Conv ... bias must be a 1D tensor of size output_channels": a bias created to fold
    the constant of removed inputs was not cut with the layer's own removed outputs.
    """
    model = onnxprune.load("models/vgg13_bn_w025_cifar10.onnx")
    masked = write_back(model, zero_filters(model, 0.3))
    compacted, report = compact_and_check(masked)
    weights = {t.name: numpy_helper.to_array(t) for t in compacted.graph.initializer}
    for node in compacted.graph.node:
        if node.op_type == "Conv" and len(node.input) > 2 and node.input[2]:
            assert weights[node.input[2]].shape == (weights[node.input[1]].shape[0],), node.name
    assert sum(report.removed.values()) > 0
    # a removed channel's BatchNorm shift survives ReLU and meets the next conv's zero padding: kept
    assert any("padding" in why for why in report.skipped.values())


def test_created_bias_loses_the_layers_own_removed_outputs():
    """A 1x1 conv without bias receives a fold (a bias is created) and loses outputs itself."""
    rng = np.random.default_rng(0)
    inits = [tensor("a_W", (6, 3, 3, 3), rng), tensor("a_B", (6,), rng, 0.1, 1.0), tensor("b_W", (5, 6, 1, 1), rng)]
    inits += [tensor("c_W", (4, 5, 1, 1), rng), tensor("c_B", (4,), rng, 0.1)]
    nodes = [
        helper.make_node("Conv", ["x", "a_W", "a_B"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
        helper.make_node("Conv", ["ra", "b_W"], ["b"], name="conv_b"),
        helper.make_node("Tanh", ["b"], ["tb"], name="tanh_b"),
        helper.make_node("Conv", ["tb", "c_W", "c_B"], ["c"], name="conv_c"),
        *head("c", 4, rng, inits),
    ]
    model = from_proto(build(nodes, inits, [image()], [logits()]))
    weights = {name: model.weight_array(model.layer(name)).copy() for name in ("conv_a", "conv_b")}
    weights["conv_a"][[1, 4]] = 0  # bias ~1 survives ReLU: a constant into conv_b, folded into a new bias
    weights["conv_b"][[0, 3]] = 0  # conv_b's own outputs go too, tanh(0) = 0
    masked = write_back(model, {"a_W": weights["conv_a"], "b_W": weights["conv_b"]})
    compacted, report = compact_and_check(masked)
    assert report.removed["conv_a"] == 2 and report.removed["conv_b"] == 2
    assert "conv_b" in report.folded
    conv_b = next(n for n in compacted.graph.node if n.name == "conv_b")
    bias = next(numpy_helper.to_array(t) for t in compacted.graph.initializer if t.name == conv_b.input[2])
    assert bias.shape == (3,)


# --- exactness guard ---------------------------------------------------------------------------


def two_convs(between, second_pads=(0, 0, 0, 0), seed=1):
    """conv_a (1x1, bias) -> ReLU -> `between` nodes (from 'ra' to 'mid') -> conv_b -> head."""
    rng = np.random.default_rng(seed)
    bias = rng.standard_normal(6).astype(np.float32) * 0.1
    bias[1], bias[4] = 1.0, -1.0  # once zeroed: channel 1 carries relu(1) = 1, channel 4 carries 0
    inits = [tensor("a_W", (6, 3, 1, 1), rng), numpy_helper.from_array(bias, "a_B")]
    inits += [tensor("b_W", (5, 6, 3, 3), rng), tensor("b_B", (5,), rng, 0.1)]
    nodes = [
        helper.make_node("Conv", ["x", "a_W", "a_B"], ["a"], name="conv_a"),
        helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
        *between,
        helper.make_node("Conv", ["mid", "b_W", "b_B"], ["b"], name="conv_b", pads=list(second_pads)),
        *head("b", 5, rng, inits),
    ]
    model = from_proto(build(nodes, inits, [image()], [logits()]))
    weight = model.weight_array(model.layer("conv_a")).copy()
    weight[[1, 4]] = 0
    return write_back(model, {"a_W": weight})


def test_constant_times_an_input_dependent_gate_is_not_removed():
    """A removed channel's constant multiplied by a gate computed from the input is no constant."""
    gate = [
        helper.make_node("ReduceMean", ["x"], ["m"], name="mean", axes=[1, 2, 3], keepdims=1),
        helper.make_node("Sigmoid", ["m"], ["g"], name="gate"),
        helper.make_node("Mul", ["ra", "g"], ["mid"], name="gated"),
    ]
    compacted, report = compact_and_check(two_convs(gate))
    assert report.removed["conv_a"] == 1, "channel 4 carries 0 * gate = 0: removed"
    assert "'conv_b'" in report.skipped["conv_a[1]"] and "varies" in report.skipped["conv_a[1]"]


def test_nonzero_constant_meeting_zero_padding_is_not_removed():
    compacted, report = compact_and_check(two_convs([helper.make_node("Identity", ["ra"], ["mid"])], (1, 1, 1, 1)))
    assert report.removed["conv_a"] == 1, "channel 4 carries 0: the padding adds nothing, removed"
    assert "padding" in report.skipped["conv_a[1]"] and "'conv_b'" in report.skipped["conv_a[1]"]
    assert not report.folded


def test_constant_without_padding_is_folded():
    compacted, report = compact_and_check(two_convs([helper.make_node("Identity", ["ra"], ["mid"])]))
    assert report.removed["conv_a"] == 2 and report.folded == ["conv_b"]


# --- grouped convolutions whose input channels are not followed ---------------------------------


def test_grouped_convolution_on_untracked_input_loses_channels_evenly():
    """A grouped conv reading the graph input: its groups must still lose outputs equally."""
    rng = np.random.default_rng(2)
    inits = [tensor("g_W", (8, 2, 3, 3), rng), tensor("g_B", (8,), rng, 0.1, -1.0)]
    inits += [tensor("d_W", (4, 1, 3, 3), rng), tensor("d_B", (4,), rng, 0.1, -1.0)]
    inits += [tensor("p_W", (6, 12, 1, 1), rng), tensor("p_B", (6,), rng, 0.1)]
    nodes = [
        helper.make_node("Conv", ["x", "g_W", "g_B"], ["g"], name="grouped", pads=[1, 1, 1, 1], group=2),
        helper.make_node("Conv", ["x", "d_W", "d_B"], ["d"], name="depthwise", pads=[1, 1, 1, 1], group=4),
        helper.make_node("Concat", ["g", "d"], ["gd"], name="concat", axis=1),
        helper.make_node("Relu", ["gd"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "p_W", "p_B"], ["p"], name="pointwise"),
        *head("p", 6, rng, inits),
    ]
    model = from_proto(build(nodes, inits, [image(channels=4)], [logits()]))
    grouped, depthwise = model.weight_array(model.layer("grouped")).copy(), model.weight_array(model.layer("depthwise"))
    grouped[[0, 1, 2, 5]] = 0  # three filters of group 0, one of group 1
    depthwise = depthwise.copy()
    depthwise[[1]] = 0  # tied one to one to an input channel that stays: cannot go
    compacted, report = compact_and_check(write_back(model, {"g_W": grouped, "d_W": depthwise}))
    assert report.removed["grouped"] == 2 and report.removed["depthwise"] == 0
    assert "equal removals" in report.skipped["grouped[2]"] and "tied" in report.skipped["depthwise[1]"]
    node = next(n for n in compacted.graph.node if n.name == "grouped")
    assert next(a.i for a in node.attribute if a.name == "group") == 2
