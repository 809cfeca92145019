"""The small ONNX helpers of graph/proto.py, each on a graph built with onnx.helper."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.graph import proto as proto_module
from onnxprune.graph.proto import (
    SKELETON_DATA_LIMIT,
    attribute,
    constant_value,
    inferred_shapes,
    is_stand_in,
    remove_attribute,
    session,
    set_attribute,
    subgraph_reads,
    weightless_copy,
)


def conv_model(out_channels: int = 64, in_channels: int = 32) -> onnx.ModelProto:
    """x [1, C, 8, 8] -> Conv 3x3 -> Reshape to [1, -1] by a small target (the default weight: 73 KB)."""
    weight = np.random.default_rng(0).standard_normal((out_channels, in_channels, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", kernel_shape=[3, 3]),
        helper.make_node("Reshape", ["c", "target"], ["y"], name="flatten"),
    ]
    initializers = [
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(np.zeros(out_channels, np.float32), "b"),
        numpy_helper.from_array(np.array([1, -1], np.int64), "target"),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, in_channels, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, None])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


# --- attributes ---


def test_attribute_returns_python_values_and_the_default():
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=2, kernel_shape=[3, 3], auto_pad="SAME_UPPER", alpha=0.5)
    assert attribute(node, "group") == 2
    assert attribute(node, "kernel_shape") == [3, 3]
    assert attribute(node, "auto_pad") == b"SAME_UPPER"  # strings come back as bytes
    assert attribute(node, "alpha") == pytest.approx(0.5)
    assert attribute(node, "strides") is None
    assert attribute(node, "strides", [1, 1]) == [1, 1]
    assert attribute(node, "group", 1) == 2  # a default never hides a present value


def test_attribute_of_a_graph_is_the_graph():
    branch = helper.make_graph([], "then", [], [])
    node = helper.make_node("If", ["cond"], [], then_branch=branch, else_branch=branch)
    assert isinstance(attribute(node, "then_branch"), onnx.GraphProto)


def test_set_attribute_replaces_in_place_or_appends():
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=4, pads=[1, 1, 1, 1], strides=[1, 1])
    set_attribute(node, "pads", [0, 0, 0, 0])
    assert [a.name for a in node.attribute] == ["group", "pads", "strides"]  # the order is kept
    assert attribute(node, "pads") == [0, 0, 0, 0]
    set_attribute(node, "group", 2)
    assert attribute(node, "group") == 2 and len(node.attribute) == 3
    set_attribute(node, "dilations", [2, 2])
    assert [a.name for a in node.attribute][-1] == "dilations"


def test_remove_attribute():
    node = helper.make_node("Split", ["x"], ["a", "b"], axis=1, num_outputs=2)
    remove_attribute(node, "num_outputs")
    remove_attribute(node, "missing")  # nothing to remove: nothing happens
    assert [a.name for a in node.attribute] == ["axis"]


def test_subgraph_reads_names_outer_tensors_only():
    inner = helper.make_node("Add", ["outer", "local"], ["sum"])
    local = helper.make_node("Identity", ["outer_too"], ["local"])
    branch = helper.make_graph(
        [local, inner], "then", [], [helper.make_tensor_value_info("sum", TensorProto.FLOAT, None)]
    )
    node = helper.make_node("If", ["cond"], ["out"], then_branch=branch, else_branch=branch)
    assert subgraph_reads(node) == {"outer", "outer_too"}
    assert subgraph_reads(helper.make_node("Relu", ["x"], ["y"])) == set()


# --- Constant nodes ---


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("value_floats", [0.5, 1.5], np.array([0.5, 1.5], np.float32)),
        ("value_float", 2.5, np.array(2.5, np.float32)),
        ("value_ints", [1, -1, 3], np.array([1, -1, 3], np.int64)),
        ("value_int", 7, np.array(7, np.int64)),
    ],
)
def test_constant_value_of_list_and_scalar_attributes(name, value, expected):
    node = helper.make_node("Constant", [], ["c"], **{name: value})
    found = constant_value(node)
    assert found.dtype == expected.dtype and found.shape == expected.shape
    np.testing.assert_array_equal(found, expected)


def test_constant_value_of_a_tensor_keeps_its_type():
    array = np.arange(6, dtype=np.int32).reshape(2, 3)
    node = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(array))
    found = constant_value(node)
    assert found.dtype == np.int32
    np.testing.assert_array_equal(found, array)


@pytest.mark.parametrize("coordinates", [False, True])
def test_constant_value_of_a_sparse_tensor_is_dense(coordinates):
    dense = np.zeros((3, 4), np.float32)
    dense[0, 1], dense[2, 3] = 5.0, -2.0
    linear = np.flatnonzero(dense)
    indices = np.stack(np.unravel_index(linear, dense.shape), axis=1) if coordinates else linear
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(dense.reshape(-1)[linear], "values"),
        numpy_helper.from_array(indices.astype(np.int64), "indices"),
        list(dense.shape),
    )
    node = helper.make_node("Constant", [], ["c"], sparse_value=sparse)
    np.testing.assert_array_equal(constant_value(node), dense)


def test_constant_value_is_none_for_text_and_for_other_ops():
    assert constant_value(helper.make_node("Constant", [], ["c"], value_strings=["a", "b"])) is None
    assert constant_value(helper.make_node("Identity", ["x"], ["y"])) is None


# --- weightless copies ---


def test_weightless_copy_keeps_shapes_not_weight_data():
    model = conv_model()
    assert numpy_helper.to_array(model.graph.initializer[0]).nbytes > SKELETON_DATA_LIMIT
    original_bytes = model.SerializeToString()
    copy = weightless_copy(model)
    assert model.SerializeToString() == original_bytes  # the original is untouched
    tensors = {t.name: t for t in copy.graph.initializer}
    weight = tensors["w"]
    assert is_stand_in(weight) and list(weight.dims) == [64, 32, 3, 3] and weight.data_type == TensorProto.FLOAT
    assert not weight.raw_data and not weight.float_data
    assert not is_stand_in(tensors["target"])
    np.testing.assert_array_equal(numpy_helper.to_array(tensors["target"]), [1, -1])  # small data kept
    assert copy.ByteSize() < SKELETON_DATA_LIMIT < model.ByteSize()
    assert [n.op_type for n in copy.graph.node] == ["Conv", "Reshape"]
    assert copy.opset_import == model.opset_import


def test_weightless_copy_with_stand_ins_as_inputs_passes_the_checker():
    model = conv_model()
    copy = weightless_copy(model, stand_ins_as_inputs=True)
    assert "w" not in {t.name for t in copy.graph.initializer}
    added = next(v for v in copy.graph.input if v.name == "w")
    assert [d.dim_value for d in added.type.tensor_type.shape.dim] == [64, 32, 3, 3]
    onnx.checker.check_model(copy)
    with pytest.raises(onnx.checker.ValidationError):  # why the stand-ins become inputs for the checker
        onnx.checker.check_model(weightless_copy(model))


# --- shapes ---


def test_inferred_shapes_of_a_model_with_large_weights():
    shapes = inferred_shapes(conv_model())
    assert shapes["c"] == (1, 64, 6, 6)
    assert shapes["y"] == (1, 64 * 6 * 6)
    assert shapes["x"] == (1, 32, 8, 8)  # graph inputs too
    assert "w" not in shapes  # initializers are not listed


def test_inferred_shapes_run_on_a_weightless_copy(monkeypatch):
    seen = []
    infer = onnx.shape_inference.infer_shapes

    def spy(model, *args, **kwargs):
        seen.append(model.ByteSize())
        return infer(model, *args, **kwargs)

    monkeypatch.setattr(proto_module.shape_inference, "infer_shapes", spy)
    inferred_shapes(conv_model())
    assert seen and seen[0] < SKELETON_DATA_LIMIT


def test_inferred_shapes_with_data_propagation():
    """A Reshape target computed from `Shape`: known with data propagation, unknown dims (0) without."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "first"], ["n"], axis=0),
        helper.make_node("Concat", ["n", "rest"], ["t"], axis=0),
        helper.make_node("Reshape", ["x", "t"], ["y"]),
    ]
    initializers = [
        numpy_helper.from_array(np.array([0], np.int64), "first"),
        numpy_helper.from_array(np.array([-1], np.int64), "rest"),
    ]
    graph = helper.make_graph(
        nodes,
        "computed_target",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    assert inferred_shapes(model)["y"] == (0, 0)
    assert inferred_shapes(model, data_prop=True)["y"] == (2, 24)


def test_inferred_shapes_are_empty_where_inference_fails(monkeypatch):
    def broken(*args, **kwargs):
        raise onnx.shape_inference.InferenceError("broken")

    monkeypatch.setattr(proto_module.shape_inference, "infer_shapes", broken)
    assert inferred_shapes(conv_model()) == {}


# --- running ---


def test_session_runs_a_model_from_bytes():
    model = conv_model(out_channels=2, in_channels=1)
    run = session(model.SerializeToString())
    (output,) = run.run(None, {"x": np.ones((1, 1, 8, 8), np.float32)})
    assert output.shape == (1, 2 * 6 * 6)


def test_constant_map_reads_initializers_constants_and_identities_within_a_size():
    from onnxprune.graph.proto import constant_map

    nodes = [
        helper.make_node("Constant", [], ["axes"], value_ints=[0, 2]),
        helper.make_node("Identity", ["pads"], ["pads_copy"]),
        helper.make_node("Identity", ["x"], ["y"]),
    ]
    initializers = [
        numpy_helper.from_array(np.array([1, 1], np.int64), "pads"),
        numpy_helper.from_array(np.zeros((4, 8), np.float32), "weight"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], initializers)  # fmt: skip
    proto = helper.make_model(graph)
    everything = constant_map(proto)
    assert sorted(everything) == ["axes", "pads", "weight"]  # no Identity unless asked
    small = constant_map(proto, max_size=16, through_identity=True)
    assert sorted(small) == ["axes", "pads", "pads_copy"]  # the 32-element weight left out
    np.testing.assert_array_equal(small["pads_copy"], [1, 1])
