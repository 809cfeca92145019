"""The channel analysis as op handlers: the registry, the generic rule, and groups kept whole.

Graphs are built with onnx.helper; every compaction is checked against onnxruntime (the compacted
model's output equals the masked model's) and every prune counts what it removed.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxprune
from onnxprune.graph.channels import analyse, compact
from onnxprune.graph.channels.handlers import OPS, Handler, handler_for, register, unregister
from onnxprune.graph.channels.handlers.generic import Generic
from onnxprune.graph.model import from_proto
from onnxprune.graph.proto import session
from onnxprune.graph.storage import write_back
from onnxprune.graph.verify import random_batch
from onnxprune.pruning.channels import kept_whole, target_count


def weight(name, shape, rng, low=None, high=None):
    values = rng.uniform(low, high, shape) if low is not None else rng.standard_normal(shape) * 0.3
    return numpy_helper.from_array(values.astype(np.float32), name)


def conv_net(middle: list[onnx.NodeProto], extra_inits=(), seed=0, opset=13, domains=()) -> onnx.ModelProto:
    """conv a (8) -> `middle` (reads 'a', writes 'm') -> conv b (8) -> conv c (6) -> mean -> linear head."""
    rng = np.random.default_rng(seed)
    inits = [
        weight("a_W", (8, 3, 3, 3), rng), weight("a_B", (8,), rng, 0.1, 0.5),
        weight("b_W", (8, 8, 3, 3), rng), weight("b_B", (8,), rng, 0.1, 0.5),
        weight("c_W", (6, 8, 1, 1), rng), weight("c_B", (6,), rng, 0.1, 0.5),
        weight("h_W", (4, 6), rng), weight("h_B", (4,), rng),
        numpy_helper.from_array(np.array([2, 3], np.int64), "axes"), *extra_inits,
    ]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "a_W", "a_B"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        *middle,
        helper.make_node("Conv", ["m", "b_W", "b_B"], ["b0"], name="conv_b", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["b0"], ["b"], name="relu_b"),
        helper.make_node("Conv", ["b", "c_W", "c_B"], ["c"], name="conv_c"),
        helper.make_node("ReduceMean", ["c"], ["pooled"], name="pool", axes=[2, 3], keepdims=0),
        helper.make_node("Gemm", ["pooled", "h_W", "h_B"], ["y"], name="head", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], inits,
    )  # fmt: skip
    imports = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in domains)]
    return helper.make_model(graph, opset_imports=imports)


def blocked_by(model) -> set[str]:
    return {unit.blocked_by for unit in analyse(model).units().values() if unit.blocked_by}


def compacts_exactly(model, fraction=0.4, smaller=True):
    """Zero `fraction` of every Conv's filters (weights and biases), compact, compare in onnxruntime."""
    rng = np.random.default_rng(1)
    values = {}
    for layer in model.layers:
        if layer.op_type == "Conv":
            rows = rng.choice(layer.shape[0], int(round(fraction * layer.shape[0])), replace=False)
            weight_value, bias = model.weight_array(layer).copy(), numpy_helper.to_array(model.initializer(layer.bias))
            weight_value[rows], bias = 0, bias.copy()
            bias[rows] = 0
            values[layer.weight], values[layer.bias] = weight_value, bias
    masked = from_proto(write_back(model, values))
    compacted, report = compact(masked)
    onnx.checker.check_model(compacted)
    batch = random_batch(model.input, 2, seed=4)
    outputs = [session(p.SerializeToString()).run(None, {"x": batch})[0] for p in (masked.proto, compacted)]
    assert np.allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-6)
    assert (from_proto(compacted).layer_total("numel") < model.layer_total("numel")) == smaller
    return report


# --- the registry -------------------------------------------------------------------------------


def test_every_op_family_has_one_handler_and_a_second_registration_is_refused():
    assert type(handler_for("Conv")).__name__ == "LayerHandler"
    assert type(handler_for("Relu")).__name__ == "PassThrough"
    assert isinstance(handler_for("NoSuchOp"), Generic)

    class Twice(Handler):
        ops = ("Relu",)

    with pytest.raises(ValueError, match="op Relu already has the handler PassThrough"):
        register(Twice)
    assert type(OPS["Relu"]).__name__ == "PassThrough"


@pytest.fixture
def doubling_handler():
    """A handler for a custom op 'Double' (x * 2, in a domain onnxruntime cannot run), removed afterwards."""

    @register
    class Double(Handler):
        ops = ("Double",)

        def trace(self, ctx, node, inputs, where):
            if inputs[0] is None:
                return False
            ctx.structure.tracked[node.output[0]] = inputs[0]
            return True

    yield Double
    unregister("Double")


def test_a_new_handler_is_picked_up(doubling_handler):
    middle = [helper.make_node("Double", ["a"], ["m"], name="double", domain="test.onnxprune")]
    model = from_proto(conv_net(middle, domains=["test.onnxprune"]))
    assert blocked_by(model) == {"it reaches the graph output 'y'"}, "conv_a's channels follow through 'double'"
    unregister("Double")
    assert "node 'double' (Double): onnxprune cannot follow channels through Double, so they are kept whole" in (
        blocked_by(model)
    ), "without its handler the generic rule keeps them (onnxruntime cannot run the op alone)"


# --- the generic rule ---------------------------------------------------------------------------


def test_generic_rule_passes_ops_it_measures_channelwise():
    """Shrink and a nearest Resize by scales keep channels apart: they pass, and compaction stays exact."""
    assert "Shrink" not in OPS and "Resize" not in OPS
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    middle = [
        helper.make_node("Shrink", ["a"], ["s"], name="shrink", lambd=0.1, bias=0.05),
        helper.make_node("Resize", ["s", "", "scales"], ["m"], name="upsample", mode="nearest"),
    ]
    model = from_proto(conv_net(middle, [scales]))
    structure = analyse(model)
    assert structure.generic == {"shrink": "Shrink", "upsample": "Resize"}
    assert blocked_by(model) == {"it reaches the graph output 'y'"}
    report = compacts_exactly(model)
    assert report.removed["conv_a"] > 0


@pytest.mark.parametrize(
    "middle, extra, node",
    [
        (
            [helper.make_node("CumSum", ["a", "axis"], ["m"], name="running_sum")],
            [np.array(1, np.int64)],
            "running_sum",
        ),
        (
            [helper.make_node("Resize", ["a", "", "", "sizes"], ["m"], name="resize_to", mode="nearest")],
            [np.array([2, 8, 16, 16], np.int64)],
            "resize_to",
        ),
    ],
    ids=["cumsum-over-channels", "resize-to-sizes-naming-channels"],
)  # fmt: skip
def test_generic_rule_keeps_what_it_cannot_show_channelwise(middle, extra, node):
    """An op that mixes channels, or whose operand names the channel count, keeps them whole: named, not refused."""
    names = {"running_sum": "axis", "resize_to": "sizes"}
    inits = [numpy_helper.from_array(value, names[node]) for value in extra]
    model = from_proto(conv_net(middle, inits))
    reasons = blocked_by(model)
    assert any(reason.startswith(f"node '{node}'") and "kept whole" in reason for reason in reasons), reasons
    structure = analyse(model)
    kept = kept_whole(structure)
    assert sum(kept.values()) == 8, "conv_a's eight channels"
    compacts_exactly(model)

    result = onnxprune.prune(model, 0.3, method="l1-filter")
    selectable = 8 + 6  # conv_b and conv_c; conv_a is kept whole, the head reaches the output
    assert len(result_units(result)) == target_count(0.3, selectable, kept) == 7
    assert result.compaction.removed["conv_a"] == 0
    assert any(f"node '{node}'" in note and "kept whole" in note for note in result.notes), result.notes


def result_units(result) -> list:
    return [name for name, count in result.compaction.removed.items() for _ in range(count)]


def test_kept_groups_raise_the_other_layers_ratio_in_layer_scope():
    middle = [helper.make_node("CumSum", ["a", "axis"], ["m"], name="running_sum")]
    model = from_proto(conv_net(middle, [numpy_helper.from_array(np.array(1, np.int64), "axis")]))
    result = onnxprune.prune(model, 0.3, method="l1-filter", scope="layer")
    # 30% of 22 units is 7 (rounded), taken from conv_b (8) and conv_c (6) at the raised ratio 7/14
    assert result.compaction.removed == {"conv_a": 0, "conv_b": 4, "conv_c": 3, "head": 0}


def test_mask_only_zeroes_the_kept_groups_too():
    middle = [helper.make_node("CumSum", ["a", "axis"], ["m"], name="running_sum")]
    model = from_proto(conv_net(middle, [numpy_helper.from_array(np.array(1, np.int64), "axis")]))
    result = onnxprune.prune(model, 0.5, method="l1-filter", mask_only=True)
    zero_filters = int((~result.weights["a_W"].reshape(8, -1).any(axis=1)).sum())
    assert zero_filters == 4, "selected and zeroed"
    assert result.compaction.removed["conv_a"] == 0, "but not removed"


@pytest.mark.parametrize("bias", ["shared", "none"])
def test_constant_folds_into_a_matmul_bias(bias):
    """A removed neuron's sigmoid(0) = 0.5 reaches a MatMul: folded into its bias, read through Identity
    (TorchScript shares equal tensors so) or added after it where it has none (timm's Linear(bias=False))."""
    rng = np.random.default_rng(3)
    inits = [
        weight("w1", (6, 8), rng), weight("b1", (8,), rng), weight("w2", (8, 8), rng), weight("b2", (8,), rng),
        weight("w3", (8, 3), rng),
    ]  # fmt: skip
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"], name="fc1"),
        helper.make_node("Add", ["h1", "b1"], ["a1"], name="fc1_bias"),
        helper.make_node("Sigmoid", ["a1"], ["s1"], name="gate"),
        helper.make_node("MatMul", ["s1", "w2"], ["h2"], name="fc2"),
        helper.make_node("Relu", ["a2"], ["r2"], name="relu"),
        helper.make_node("MatMul", ["r2", "w3"], ["y"], name="head"),
    ]
    if bias == "shared":
        nodes[4:4] = [
            helper.make_node("Identity", ["b2"], ["b2_shared"], name="share"),
            helper.make_node("Add", ["h2", "b2_shared"], ["a2"], name="fc2_bias"),
        ]
    else:
        nodes[4:4] = [helper.make_node("Identity", ["h2"], ["a2"], name="no_bias")]
        inits = [tensor for tensor in inits if tensor.name != "b2"]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], inits,
    )  # fmt: skip
    model = from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    values = {"w1": model.weight_array(model.layer("fc1")).copy(), "b1": numpy_helper.to_array(inits[1]).copy()}
    values["w1"][:, :3], values["b1"][:3] = 0, 0  # three neurons carry sigmoid(0) = 0.5 into fc2
    masked = from_proto(write_back(model, values))
    compacted, report = compact(masked)
    assert report.removed["fc1"] == 3 and report.folded == ["fc2"]
    assert bool(report.rewritten) == (bias == "none"), report.rewritten
    batch = random_batch(model.input, 2, seed=1)
    outputs = [session(p.SerializeToString()).run(None, {"x": batch})[0] for p in (masked.proto, compacted)]
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-5, atol=1e-6)


def test_a_matmul_along_another_axis_keeps_the_channels():
    """csatv2's DCT: a constant MatMul over the rows of a tensor whose channels are elsewhere, sizes equal."""
    rng = np.random.default_rng(6)
    inits = [
        weight("a_W", (8, 3, 3, 3), rng), weight("a_B", (8,), rng, 0.1, 0.5), weight("dct", (8, 8), rng),
        weight("h_W", (4, 8), rng), weight("h_B", (4,), rng),
        numpy_helper.from_array(np.array([1, 2], np.int64), "axes"),
    ]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "a_W", "a_B"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("MatMul", ["a", "dct"], ["rows"], name="rows_dct"),
        helper.make_node("ReduceMean", ["rows", "axes"], ["pooled"], name="pool", keepdims=0),
        helper.make_node("Gemm", ["pooled", "h_W", "h_B"], ["y"], name="head", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], inits,
    )  # fmt: skip
    model = from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    reasons = blocked_by(model)
    assert "node 'rows_dct' (MatMul) multiplies along another axis than its input's channels" in reasons, reasons
    report = compacts_exactly(model, smaller=False)  # before, the DCT's rows were cut for conv_a's channels
    assert report.removed["conv_a"] == 0
