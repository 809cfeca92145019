"""Exact compaction on the graphs users bring: every removal keeps the masked model's outputs.

Each test zeroes filters (weights only, as another tool leaves them, or filters and biases), compacts,
and checks the three things a compacted model owes: onnx.checker passes, onnxruntime's outputs equal
the masked model's (relative difference <= 1e-5), and there are fewer parameters.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxprune
from onnxprune.graph.channels import analyse, compact
from onnxprune.graph.model import from_proto
from onnxprune.graph.proto import session
from onnxprune.graph.storage import write_back
from onnxprune.graph.verify import random_batch

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


# --- channel shuffle, Split, Slice (ShuffleNetV2) -------------------------------------------------


def constant_split(node_name, source, outputs, sizes, opset, inits):
    """A Split along channels as the exporters write it: sizes as an input (13+) or num_outputs (18+)."""
    if opset >= 18 and len(set(sizes)) == 1:
        return helper.make_node("Split", [source], outputs, name=node_name, axis=1, num_outputs=len(sizes))
    inits.append(numpy_helper.from_array(np.array(sizes, np.int64), f"{node_name}_sizes"))
    return helper.make_node("Split", [source, f"{node_name}_sizes"], outputs, name=node_name, axis=1)


def shuffle(tag, source, output, channels, inits, shared):
    """ShuffleNetV2's channel_shuffle with 2 groups: shape constants shared between shuffles, as dynamo does."""
    if "shape5" not in shared:
        inits.append(numpy_helper.from_array(np.array([-1, 2, channels // 2, 8, 8], np.int64), "shape5"))
        inits.append(numpy_helper.from_array(np.array([-1, channels, 8, 8], np.int64), "shape4"))
        shared.add("shape5")
    return [
        helper.make_node("Reshape", [source, "shape5"], [f"{tag}_grid"], name=f"{tag}_view"),
        helper.make_node("Transpose", [f"{tag}_grid"], [f"{tag}_t"], name=f"{tag}_transpose", perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", [f"{tag}_t", "shape4"], [output], name=f"{tag}_merge"),
    ]


def shufflenet_blocks(opset: int, seed: int = 3) -> onnx.ModelProto:
    """Stem, then two ShuffleNetV2 stride-1 blocks (split, branch, concat, shuffle), then a 1x1 conv and the head."""
    rng = np.random.default_rng(seed)
    inits, shared = [tensor("stem_W", (8, 3, 3, 3), rng), tensor("stem_B", (8,), rng, 0.3, 0.2)], set()
    nodes = [
        helper.make_node("Conv", ["x", "stem_W", "stem_B"], ["stem"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["stem"], ["s0"], name="stem_relu"),
    ]
    for block in (1, 2):
        source, tag = f"s{block - 1}", f"b{block}"
        inits += [tensor(f"{tag}_W", (4, 4, 1, 1), rng), tensor(f"{tag}_B", (4,), rng, 0.3, 0.2)]
        nodes += [
            constant_split(f"{tag}_split", source, [f"{tag}_x1", f"{tag}_x2"], [4, 4], opset, inits),
            helper.make_node("Conv", [f"{tag}_x2", f"{tag}_W", f"{tag}_B"], [f"{tag}_c"], name=f"{tag}_conv"),
            helper.make_node("Relu", [f"{tag}_c"], [f"{tag}_r"], name=f"{tag}_relu"),
            helper.make_node("Concat", [f"{tag}_x1", f"{tag}_r"], [f"{tag}_cat"], name=f"{tag}_concat", axis=1),
            *shuffle(tag, f"{tag}_cat", f"s{block}", 8, inits, shared),
        ]
    inits += [tensor("last_W", (6, 8, 1, 1), rng), tensor("last_B", (6,), rng, 0.1)]
    nodes += [helper.make_node("Conv", ["s2", "last_W", "last_B"], ["last"], name="last"), *head("last", 6, rng, inits)]
    return build(nodes, inits, [image()], [logits()], opset=opset)


@pytest.mark.parametrize("opset", [13, 18])
def test_channel_shuffle_and_split_compact_exactly(opset):
    model = from_proto(shufflenet_blocks(opset))
    structure = analyse(model)
    assert not any(unit.blocked_by for unit in structure.units().values() if unit.members[0][0] != "fc")
    weights = {name: model.weight_array(model.layer(name)).copy() for name in ("stem", "b1_conv", "b2_conv")}
    weights["stem"][[1, 6]] = 0  # one channel of each half: x1 and x2 of block 1
    weights["b1_conv"][[2]] = 0  # block 1's branch: with stem[1] one removal in each group of the shuffle
    weights["b2_conv"][[0, 3]] = 0  # block 2's first group (stem[1] shuffled into it) loses one: so can this
    masked = write_back(model, {model.layer(name).weight: weight for name, weight in weights.items()})
    compacted, report = compact_and_check(masked)
    assert report.removed == {"stem": 2, "b1_conv": 1, "b2_conv": 1, "last": 0, "fc": 0}
    assert "equal removals" in report.skipped["b2_conv[3]"], "block 2's groups would lose 1 and 2"
    # the groups kept different channels: a Gather puts them back in the original order
    assert [n.op_type for n in compacted.graph.node].count("Gather") == len(report.rewritten) >= 1
    inits = {t.name: numpy_helper.to_array(t) for t in compacted.graph.initializer}
    views = {n.name: inits[n.input[1]].tolist() for n in compacted.graph.node if n.op_type == "Reshape"}
    assert views["b1_view"] == [-1, 2, 3, 8, 8] and views["b1_merge"] == [-1, 6, 8, 8]
    assert views["b2_view"] == [-1, 2, 3, 8, 8] and views["b2_merge"] == [-1, 6, 8, 8]


def test_split_sizes_follow_unequal_removal():
    """Split pieces lose different numbers: sizes are patched (num_outputs of opset 18 becomes sizes)."""
    model = from_proto(shufflenet_blocks(18))
    weight = model.weight_array(model.layer("stem")).copy()
    weight[[5, 6]] = 0  # both in x2 of block 1: its Split gives 4 and 2
    compacted, report = compact_and_check(write_back(model, {"stem_W": weight}))
    assert report.removed["stem"] == 2
    split = next(n for n in compacted.graph.node if n.name == "b1_split")
    assert not [a for a in split.attribute if a.name == "num_outputs"]
    sizes = next(numpy_helper.to_array(t) for t in compacted.graph.initializer if t.name == split.input[1])
    assert sizes.tolist() == [4, 2]


def slices(dynamic: bool, seed: int = 4) -> onnx.ModelProto:
    """conv -> two Slices along channels ([0:4] and [4:8]) -> two 1x1 convs -> Add -> head.

    `dynamic` computes the bounds from Shape at run time, as TorchScript writes torch.chunk.
    """
    rng = np.random.default_rng(seed)
    inits = [tensor("a_W", (8, 3, 3, 3), rng), tensor("a_B", (8,), rng, 0.3, 0.2)]
    inits += [tensor("p_W", (5, 4, 1, 1), rng), tensor("q_W", (5, 4, 1, 1), rng), tensor("pq_B", (5,), rng, 0.1)]
    inits += [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("axes", [1]), ("zero", [0]))]
    nodes = [
        helper.make_node("Conv", ["x", "a_W", "a_B"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
    ]
    if dynamic:
        inits += [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("one", 1), ("two", [2]))]
        nodes += [
            helper.make_node("Shape", ["r"], ["shape"], name="shape"),
            helper.make_node("Gather", ["shape", "one"], ["channels"], name="channels", axis=0),
            helper.make_node("Unsqueeze", ["channels", "zero"], ["c1"], name="unsqueeze"),
            helper.make_node("Div", ["c1", "two"], ["half"], name="half"),
            helper.make_node("Mul", ["half", "two"], ["full"], name="full"),
        ]
        bounds = (("zero", "half"), ("half", "full"))
    else:
        inits += [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("four", [4]), ("end", [2**62]))]
        bounds = (("zero", "four"), ("four", "end"))
    for name, (start, end) in zip(("p", "q"), bounds, strict=True):
        nodes.append(helper.make_node("Slice", ["r", start, end, "axes"], [f"{name}_in"], name=f"slice_{name}"))
    nodes += [
        helper.make_node("Conv", ["p_in", "p_W", "pq_B"], ["p"], name="conv_p"),
        helper.make_node("Conv", ["q_in", "q_W"], ["q"], name="conv_q"),
        helper.make_node("Add", ["p", "q"], ["pq"], name="add"),
        *head("pq", 5, rng, inits),
    ]
    return build(nodes, inits, [image()], [logits()])


def test_slices_along_channels_are_patched():
    model = from_proto(slices(dynamic=False))
    weight = model.weight_array(model.layer("conv_a")).copy()
    weight[[0, 2, 5]] = 0
    compacted, report = compact_and_check(write_back(model, {"a_W": weight}))
    assert report.removed["conv_a"] == 3
    inits = {t.name: numpy_helper.to_array(t).tolist() for t in compacted.graph.initializer}
    bounds = {n.name: (inits[n.input[1]], inits[n.input[2]]) for n in compacted.graph.node if n.op_type == "Slice"}
    assert bounds["slice_p"] == ([0], [2]) and bounds["slice_q"][0] == [2]


def test_slices_computed_at_run_time_need_equal_pieces():
    """Bounds computed from Shape follow the compacted size: exact only if both halves lose alike."""
    model = from_proto(slices(dynamic=True))
    weight = model.weight_array(model.layer("conv_a")).copy()
    weight[[0, 2, 5]] = 0  # two in the first half, one in the second: one of the first half stays
    compacted, report = compact_and_check(write_back(model, {"a_W": weight}))
    assert report.removed["conv_a"] == 2
    assert [n.op_type for n in compacted.graph.node] == [n.op_type for n in model.proto.graph.node]


# --- squeeze-and-excitation (MobileNetV3, EfficientNet, RegNetY) --------------------------------


def se_block(reduce_mean: bool, seed: int = 5) -> onnx.ModelProto:
    """conv -> ReLU -> SE gate (pool, fc1, ReLU, fc2, HardSigmoid) -> Mul -> 1x1 conv -> head.

    `reduce_mean` pools as torch's dynamo exporter does (ReduceMean, axes as an input, opset 18);
    otherwise GlobalAveragePool as TorchScript does.
    """
    rng = np.random.default_rng(seed)
    inits = [tensor("a_W", (8, 3, 3, 3), rng), tensor("a_B", (8,), rng, 0.3, 0.3)]
    inits += [tensor("fc1_W", (4, 8, 1, 1), rng), tensor("fc1_B", (4,), rng, 0.3, 0.2)]
    inits += [tensor("fc2_W", (8, 4, 1, 1), rng), tensor("fc2_B", (8,), rng, 0.3)]
    inits += [tensor("p_W", (6, 8, 1, 1), rng), tensor("p_B", (6,), rng, 0.1)]
    if reduce_mean:
        inits.append(numpy_helper.from_array(np.array([-1, -2], np.int64), "spatial"))
        pool = helper.make_node("ReduceMean", ["r", "spatial"], ["s"], name="squeeze", keepdims=1)
    else:
        pool = helper.make_node("GlobalAveragePool", ["r"], ["s"], name="squeeze")
    nodes = [
        helper.make_node("Conv", ["x", "a_W", "a_B"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        pool,
        helper.make_node("Conv", ["s", "fc1_W", "fc1_B"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["hr"], name="fc1_relu"),
        helper.make_node("Conv", ["hr", "fc2_W", "fc2_B"], ["e"], name="fc2"),
        helper.make_node("HardSigmoid", ["e"], ["gate"], name="gate", alpha=1 / 6),
        helper.make_node("Mul", ["gate", "r"], ["m"], name="excite"),
        helper.make_node("Conv", ["m", "p_W", "p_B"], ["p"], name="project"),
        *head("p", 6, rng, inits),
    ]
    return build(nodes, inits, [image()], [logits()], opset=18 if reduce_mean else 13)


@pytest.mark.parametrize("reduce_mean", [False, True])
def test_squeeze_excitation_gate_shrinks_with_its_channels(reduce_mean):
    model = from_proto(se_block(reduce_mean))
    structure = analyse(model)
    # channel c of the block and output c of the gate's last conv are one unit
    np.testing.assert_array_equal(structure.layer_units("conv_a"), structure.layer_units("fc2"))
    weights = {name: model.weight_array(model.layer(name)).copy() for name in ("conv_a", "fc1", "fc2")}
    weights["conv_a"][[1, 3, 6]] = 0
    weights["fc2"][[1, 6]] = 0  # channels 1 and 6 go with their gate; 3's gate still varies with the input
    weights["fc1"][[2]] = 0  # the gate's hidden layer shrinks on its own
    masked = write_back(model, {model.layer(name).weight: weight for name, weight in weights.items()})
    compacted, report = compact_and_check(masked)
    assert report.removed == {"conv_a": 2, "fc1": 1, "fc2": 2, "project": 0, "fc": 0}
    shapes = {t.name: tuple(t.dims) for t in compacted.graph.initializer}
    assert shapes["fc2_W"] == (6, 3, 1, 1) and shapes["fc1_W"] == (3, 6, 1, 1) and shapes["p_W"] == (6, 6, 1, 1)


# --- DenseNet: concatenations of growing width into BatchNormalization ----------------------------


def batchnorm(name, source, output, channels, rng, inits):
    inits += [
        numpy_helper.from_array((rng.random(channels) + 0.5).astype(np.float32), f"{name}_scale"),
        numpy_helper.from_array((rng.standard_normal(channels) * 0.3).astype(np.float32), f"{name}_shift"),
        numpy_helper.from_array((rng.standard_normal(channels) * 0.1).astype(np.float32), f"{name}_mean"),
        numpy_helper.from_array((rng.random(channels) + 0.5).astype(np.float32), f"{name}_var"),
    ]
    inputs = [source] + [f"{name}_{p}" for p in ("scale", "shift", "mean", "var")]
    return helper.make_node("BatchNormalization", inputs, [output], name=name)


def dense_block(seed: int = 6) -> onnx.ModelProto:
    """torchvision's DenseNet shape, small: each layer BN -> ReLU -> 1x1 conv (no bias) -> BN -> ReLU -> 3x3 conv
    (no bias) and its output concatenated to everything before it."""
    rng = np.random.default_rng(seed)
    inits = [tensor("stem_W", (6, 3, 3, 3), rng)]
    nodes = [helper.make_node("Conv", ["x", "stem_W"], ["f0"], name="stem", pads=[1, 1, 1, 1])]
    features, width = ["f0"], 6
    for layer in (1, 2, 3):
        tag = f"l{layer}"
        source = features[0]
        if len(features) > 1:
            source = f"{tag}_in"
            nodes.append(helper.make_node("Concat", features, [source], name=f"{tag}_concat", axis=1))
        inits += [tensor(f"{tag}_bottleneck_W", (4, width, 1, 1), rng), tensor(f"{tag}_conv_W", (3, 4, 3, 3), rng)]
        nodes += [
            batchnorm(f"{tag}_norm1", source, f"{tag}_n1", width, rng, inits),
            helper.make_node("Relu", [f"{tag}_n1"], [f"{tag}_r1"], name=f"{tag}_relu1"),
            helper.make_node("Conv", [f"{tag}_r1", f"{tag}_bottleneck_W"], [f"{tag}_b"], name=f"{tag}_bottleneck"),
            batchnorm(f"{tag}_norm2", f"{tag}_b", f"{tag}_n2", 4, rng, inits),
            helper.make_node("Relu", [f"{tag}_n2"], [f"{tag}_r2"], name=f"{tag}_relu2"),
            helper.make_node(
                "Conv", [f"{tag}_r2", f"{tag}_conv_W"], [f"y{layer}"], name=f"{tag}_conv", pads=[1, 1, 1, 1]
            ),
        ]
        features.append(f"y{layer}")
        width += 3
    nodes += [
        helper.make_node("Concat", features, ["all"], name="final_concat", axis=1),
        batchnorm("norm5", "all", "n5", width, rng, inits),
        helper.make_node("Relu", ["n5"], ["features"], name="relu5"),
        *head("features", width, rng, inits),
    ]
    return build(nodes, inits, [image()], [logits()])


def test_dense_block_compacts_exactly():
    """Removed features reach every later BatchNorm: each is cut, each constant folded (into a created bias)."""
    model = from_proto(dense_block())
    masked = write_back(model, zero_filters(model, 0.34, seed=1))
    compacted, report = compact_and_check(masked)
    assert sum(report.removed[f"l{i}_conv"] for i in (1, 2, 3)) > 0 and report.folded
    sizes = {t.name: t.dims[0] for t in compacted.graph.initializer if t.name.endswith("_scale")}
    assert sizes["norm5_scale"] == 15 - sum(report.removed[name] for name in ("stem", "l1_conv", "l2_conv", "l3_conv"))


# --- the zoo: the same patterns as the exporters write them ---------------------------------------


@pytest.fixture(scope="module")
def zoo_export(tmp_path_factory):
    import zoo

    folder = tmp_path_factory.mktemp("zoo")
    return lambda name, exporter: zoo.export(name, exporter, folder)


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("name", ["shufflenet_v2_x0_5", "mobilenet_v3_small", "densenet121"])
def test_zoo_structures_are_followed_and_compact_exactly(name, exporter, zoo_export):
    """Shuffles and chunks, SE gates, dense concatenations: every channel followed, compaction exact."""
    model = onnxprune.load(zoo_export(name, exporter))
    blocked = {unit.blocked_by for unit in analyse(model).units().values() if unit.blocked_by}
    assert blocked == {"it reaches the graph output 'logits'"}
    compacted, report = compact_and_check(write_back(model, zero_filters(model, 0.3)), seeds=(3,))
    if name == "shufflenet_v2_x0_5" and exporter == "dynamo":
        assert report.rewritten and all("shuffle" in why for why in report.rewritten.values())


# --- LRN: the normalisation window stays where it was -------------------------------------------


def test_alexnet_spectro_compacts_exactly_across_its_lrns():
    """MATLAB-style AlexNet (models/alexnet_spectro.onnx): removed channels around LRN no longer shift its window.

    Before, the compacted model differed by up to 7.9e-4 (relative) on raw 0-255 spectrograms.
    """
    model = onnxprune.load("models/alexnet_spectro.onnx")
    masked = write_back(model, zero_filters(model, 0.3))
    compacted, report = compact_and_check(masked)
    assert set(report.rewritten) == {"norm1", "norm2"} and not report.inexact
    pixels = [random_batch(model.input, 1, seed=seed) * 255 for seed in range(3)]  # the range it was trained on
    assert max(relative(run(masked, x), run(compacted, x)) for x in pixels) <= RTOL
    assert [n.op_type for n in compacted.graph.node].count("LRN") == 2


def test_lrn_keeps_the_nonzero_constant_of_a_removed_channel():
    """A removed channel carrying a nonzero constant into an LRN: its square still counts in its neighbours' window."""
    rng = np.random.default_rng(7)
    inits = [tensor("a_W", (8, 3, 3, 3), rng), tensor("a_B", (8,), rng, 0.2, 1.0)]
    inits += [tensor("d_W", (8, 1, 3, 3), rng), tensor("d_B", (8,), rng, 0.2)]
    inits += [tensor("p_W", (6, 8, 1, 1), rng), tensor("p_B", (6,), rng, 0.1)]
    nodes = [
        helper.make_node("Conv", ["x", "a_W", "a_B"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("LRN", ["a"], ["n"], name="norm", size=5, alpha=2.0, beta=0.75, bias=1.0),
        helper.make_node("Conv", ["n", "d_W", "d_B"], ["d"], name="depthwise", pads=[1, 1, 1, 1], group=8),
        helper.make_node("Conv", ["d", "p_W", "p_B"], ["p"], name="project"),
        *head("p", 6, rng, inits),
    ]
    model = from_proto(build(nodes, inits, [image()], [logits()]))
    a, d = model.weight_array(model.layer("conv_a")).copy(), model.weight_array(model.layer("depthwise")).copy()
    a[[2, 5]], d[[2, 5]] = 0, 0  # channel c leaves conv_a as its bias (about 1), its depthwise filter reads nothing
    compacted, report = compact_and_check(write_back(model, {"a_W": a, "d_W": d}))
    assert report.removed["conv_a"] == 2 and set(report.rewritten) == {"norm"}
    assert "Add" in [n.op_type for n in compacted.graph.node]


@pytest.mark.parametrize("source", ["alexnet_spectro", "shufflenet_blocks"])
def test_a_compacted_model_is_followed_and_compacts_again(source):
    """What compaction adds (Pad + Gather around an LRN, a shuffle's Gather) is followed by the next round."""
    if source == "alexnet_spectro":
        model = onnxprune.load("models/alexnet_spectro.onnx")
    else:
        model = from_proto(shufflenet_blocks(13))
    first, report = compact(from_proto(write_back(model, zero_filters(model, 0.3, seed=2))))
    assert report.rewritten
    once = from_proto(first)
    unresolved = [unit.blocked_by for unit in analyse(once).units().values() if unit.unresolved]
    assert not unresolved, unresolved
    compact_and_check(write_back(once, zero_filters(once, 0.3, seed=3)))
