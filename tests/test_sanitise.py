"""Graphs onnx2torch does not convert as written: newer op revisions, Identity of initializers,
auto_pad, asymmetric pooling pads, and external data. Each converts, equals onnxruntime, prunes,
and the written file keeps the original graph."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_cli_errors import assert_one_line_error, run

import onnxprune
from onnxprune.errors import ConversionError
from onnxprune.graph.model import from_proto
from onnxprune.graph.proto import session
from onnxprune.graph.storage import write_back
from onnxprune.graph.verify import random_batch, torch_outputs
from onnxprune.workbench.convert import to_torch


def graph_model(nodes, initializers, input_shape, output_shape, opset, name="x", output="y"):
    graph = helper.make_graph(
        nodes,
        "sanitise",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, output_shape)],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tests")
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


def weight(rng, name, shape):
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)


def assert_torch_equals_onnxruntime(proto, atol=1e-5):
    """The three-way check of onnx2torch's tests, two ways here: torch vs onnxruntime."""
    model = from_proto(proto)
    converted = to_torch(model)
    inputs = random_batch(model.input, 2, seed=3)
    run_session = session(proto.SerializeToString())
    expected = run_session.run(None, {run_session.get_inputs()[0].name: inputs})
    actual = torch_outputs(converted.module, inputs)
    for want, got in zip(expected, actual, strict=True):
        np.testing.assert_allclose(got, want, atol=atol, rtol=1e-5)
    return model


def conv_head(rng, opset, extra_nodes, extra_inits, source="feat"):
    """Conv 3->8 then `extra_nodes` (which must produce 'pooled' [N,8]), then Gemm 8->4."""
    nodes = [helper.make_node("Conv", ["x", "cw", "cb"], ["feat"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    nodes += extra_nodes
    nodes.append(helper.make_node("Gemm", ["pooled", "fw", "fb"], ["y"], name="fc", transB=1))
    inits = [
        weight(rng, "cw", (8, 3, 3, 3)),
        weight(rng, "cb", (8,)),
        weight(rng, "fw", (4, 8)),
        weight(rng, "fb", (4,)),
    ]
    return graph_model(nodes, inits + extra_inits, ["N", 3, 8, 8], ["N", 4], opset)


def test_reduce_mean_revision_18_axes_input():
    rng = np.random.default_rng(0)
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    nodes = [helper.make_node("ReduceMean", ["feat", "axes"], ["pooled"], name="mean", keepdims=0)]
    assert_torch_equals_onnxruntime(conv_head(rng, 20, nodes, [axes]))


def test_reduce_max_revision_18_without_axes_keeps_noop_semantics():
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("ReduceMax", ["feat"], ["same"], name="noop", noop_with_empty_axes=1),
        helper.make_node("GlobalAveragePool", ["same"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["pooled"]),
    ]
    assert_torch_equals_onnxruntime(conv_head(rng, 18, nodes, []))


def test_split_revision_18_num_outputs_uneven():
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Split", ["feat"], ["a", "b", "c"], name="split", axis=1, num_outputs=3),  # 3, 3, 2
        helper.make_node("Concat", ["c", "a", "b"], ["shuffled"], axis=1),
        helper.make_node("GlobalAveragePool", ["shuffled"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["pooled"]),
    ]
    assert_torch_equals_onnxruntime(conv_head(rng, 18, nodes, []))


def test_pad_revision_19_with_axes_and_average_pool_19_dilations_one():
    rng = np.random.default_rng(3)
    pads = numpy_helper.from_array(np.array([1, 0, 2, 1], np.int64), "pads")
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "pad_axes")
    zero = numpy_helper.from_array(np.array(0.5, np.float32), "pad_value")
    nodes = [
        helper.make_node("Pad", ["feat", "pads", "pad_value", "pad_axes"], ["padded"], name="pad"),
        helper.make_node("AveragePool", ["padded"], ["avg"], kernel_shape=[2, 2], strides=[2, 2], dilations=[1, 1]),
        helper.make_node("GlobalAveragePool", ["avg"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["pooled"]),
    ]
    assert_torch_equals_onnxruntime(conv_head(rng, 20, nodes, [pads, axes, zero]))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_opset_20(approximate):
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("Gelu", ["feat"], ["gelu"], name="gelu", approximate=approximate),
        helper.make_node("GlobalAveragePool", ["gelu"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["pooled"]),
    ]
    assert_torch_equals_onnxruntime(conv_head(rng, 20, nodes, []))


def same_padded_net(auto_pad: str, seed: int = 5) -> onnx.ModelProto:
    """Keras/tf2onnx style: strided SAME convolutions and a SAME max pool on an even input."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", kernel_shape=[3, 3], strides=[2, 2],
                         auto_pad=auto_pad),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2],
                         auto_pad=auto_pad),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="conv2", kernel_shape=[4, 4], auto_pad=auto_pad),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fw", "fb"], ["y"], name="fc", transB=1),
    ]  # fmt: skip
    inits = [
        weight(rng, "w1", (8, 3, 3, 3)), weight(rng, "b1", (8,)), weight(rng, "w2", (16, 8, 4, 4)),
        weight(rng, "b2", (16,)), weight(rng, "fw", (5, 16)), weight(rng, "fb", (5,)),
    ]  # fmt: skip
    return graph_model(nodes, inits, ["N", 3, 16, 16], ["N", 5], 13)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
def test_auto_pad_same_converts_exactly(auto_pad):
    assert_torch_equals_onnxruntime(same_padded_net(auto_pad))


def test_same_upper_conv_prunes_end_to_end_and_keeps_auto_pad(tmp_path):
    source = tmp_path / "same.onnx"
    onnx.save(same_padded_net("SAME_UPPER"), source)
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    output = tmp_path / "pruned.onnx"
    result = run("prune", source, "--sparsity", "0.5", "--scope", "global", "-o", output)
    assert result.exit_code == 0, result.output
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before
    written = onnxprune.load(output)
    weights = [written.weight_array(layer) for layer in written.layers]
    zeros = sum(int(w.size - np.count_nonzero(w)) for w in weights)
    assert zeros / sum(w.size for w in weights) == pytest.approx(0.5, abs=0.01)
    conv1 = next(node for node in written.proto.graph.node if node.name == "conv1")
    assert any(a.name == "auto_pad" and a.s == b"SAME_UPPER" for a in conv1.attribute), (
        "the written graph is the original"
    )
    assert not any(a.name == "pads" for a in conv1.attribute)


@pytest.mark.parametrize("op, extra", [("MaxPool", {}), ("AveragePool", {"count_include_pad": 1})])
def test_asymmetric_pooling_pads(op, extra):
    rng = np.random.default_rng(6)
    nodes = [
        helper.make_node(op, ["feat"], ["pool"], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1], **extra),
        helper.make_node("GlobalAveragePool", ["pool"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["pooled"]),
    ]
    # the conv's outputs are often negative: zero padding would win the max at the border, -inf never
    assert_torch_equals_onnxruntime(conv_head(rng, 13, nodes, []))


def test_asymmetric_average_pool_pads_not_counted_is_refused_in_one_line():
    rng = np.random.default_rng(6)
    nodes = [
        helper.make_node("AveragePool", ["feat"], ["pool"], name="avg", kernel_shape=[3, 3], pads=[0, 0, 1, 1]),
        helper.make_node("GlobalAveragePool", ["pool"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["pooled"]),
    ]
    with pytest.raises(ConversionError, match="node 'avg' .*count_include_pad"):
        to_torch(from_proto(conv_head(rng, 13, nodes, [])))


def shared_bias_net(seed: int = 7) -> onnx.ModelProto:
    """Two convs whose equal (zero) biases the TorchScript exporter stored once: Identity feeds the second."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "bias"], ["c1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Identity", ["bias"], ["conv2.bias"], name="dedup"),
        helper.make_node("Conv", ["r1", "w2", "conv2.bias"], ["c2"], name="conv2", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fw", "fb"], ["y"], name="fc", transB=1),
    ]  # fmt: skip
    inits = [
        weight(rng, "w1", (8, 3, 3, 3)), numpy_helper.from_array(np.zeros(8, np.float32), "bias"),
        weight(rng, "w2", (8, 8, 3, 3)), weight(rng, "fw", (4, 8)), weight(rng, "fb", (4,)),
    ]  # fmt: skip
    return graph_model(nodes, inits, ["N", 3, 8, 8], ["N", 4], 17)


def test_identity_of_initializer_converts():
    model = assert_torch_equals_onnxruntime(shared_bias_net())
    assert [layer.name for layer in model.layers] == ["conv1", "conv2", "fc"]


def test_a_shared_tensor_given_its_own_value_is_untied_in_the_written_file():
    model = from_proto(shared_bias_net())
    converted = to_torch(model)
    with np.errstate(all="ignore"):
        values = converted.initializer_values(model)
    assert "conv2.bias" in values, "the second conv's bias is trained through its Identity"
    values["conv2.bias"] = np.full(8, 0.25, np.float32)
    values["bias"] = np.full(8, -0.5, np.float32)
    written = write_back(model, values)
    assert not any(node.op_type == "Identity" for node in written.graph.node)
    stored = {t.name: numpy_helper.to_array(t) for t in written.graph.initializer}
    np.testing.assert_array_equal(stored["conv2.bias"], np.full(8, 0.25, np.float32))
    np.testing.assert_array_equal(stored["bias"], np.full(8, -0.5, np.float32))
    onnx.checker.check_model(written)
    # untouched values keep the Identity: the graph changes only where it must
    same = write_back(model, {"conv2.bias": np.zeros(8, np.float32)})
    assert any(node.op_type == "Identity" for node in same.graph.node)


def test_unconvertible_op_names_op_revision_and_node():
    rng = np.random.default_rng(8)
    nodes = [
        helper.make_node("Conv", ["x", "cw", "cb"], ["feat"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Compress", ["feat", "keep"], ["y"], name="fold_it", axis=1),
    ]
    inits = [
        weight(rng, "cw", (8, 3, 3, 3)), weight(rng, "cb", (8,)),
        numpy_helper.from_array(np.array([True, False] * 4), "keep"),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits,
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(ConversionError, match=r"node 'fold_it' uses op Compress revision 11 \(opset 18\)"):
        to_torch(from_proto(proto))


def test_external_data_missing_is_one_line(tmp_path):
    proto = shared_bias_net()
    path = tmp_path / "ext.onnx"
    onnx.save(proto, path, save_as_external_data=True, all_tensors_to_one_file=True, location="ext.onnx.data",
              size_threshold=0)  # fmt: skip
    (tmp_path / "ext.onnx.data").unlink()
    result = run("inspect", path)
    assert_one_line_error(result, "ext.onnx.data", "beside")


def test_external_data_in_external_data_out(tmp_path):
    source = tmp_path / "ext.onnx"
    onnx.save(same_padded_net("SAME_UPPER"), source, save_as_external_data=True, location="ext.onnx.data",
              size_threshold=0)  # fmt: skip
    data_before = (tmp_path / "ext.onnx.data").read_bytes()
    output = tmp_path / "out" / "pruned.onnx"
    output.parent.mkdir()
    result = run("prune", source, "--sparsity", "0.6", "-o", output)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ext.onnx.data").read_bytes() == data_before
    assert sorted(p.name for p in output.parent.iterdir()) == ["pruned.onnx", "pruned.onnx.data"]
    raw = onnx.load(str(output), load_external_data=False)
    assert any(t.data_location == TensorProto.EXTERNAL for t in raw.graph.initializer)
    assert all(
        entry.value == "pruned.onnx.data" for t in raw.graph.initializer for entry in t.external_data
        if entry.key == "location"
    )  # fmt: skip
    written = onnxprune.load(output)
    assert written.external_data
    weights = [written.weight_array(layer) for layer in written.layers]
    assert sum(int(w.size - np.count_nonzero(w)) for w in weights) / sum(w.size for w in weights) == pytest.approx(
        0.6, abs=0.02
    )


def test_external_data_keeps_scalars_scalar(tmp_path):
    """A 0-d shape constant (torch's exporter writes them) written with external data stays 0-d."""
    from onnxprune.graph.storage import save_model_file

    proto = shared_bias_net()
    proto.graph.initializer.append(numpy_helper.from_array(np.array(3, np.int64), "a_scalar"))
    source = tmp_path / "ext.onnx"
    onnx.save(proto, source, save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    copy = tmp_path / "copy.onnx"
    save_model_file(copy, onnxprune.load(source).proto, {}, external_data=True)
    written = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(copy)).graph.initializer}
    assert written["a_scalar"].shape == () and int(written["a_scalar"]) == 3


# --- facts measured in onnxruntime: shapes of every tensor, values computed from weights and shapes ---


def shape_computed_graph(rng):
    """x [batch, 8, 4, 4] -> conv -> reshape to [batch, 8, 16] (batch read at run time) -> conv1d-free chain:
    a weight computed from an initializer (x 0.5), a target computed from the channel count (batch-free),
    then a reshape back whose first entry follows the batch."""
    nodes = [
        helper.make_node("Mul", ["raw_w", "half"], ["computed_w"], name="scale_weight"),
        helper.make_node("Conv", ["x", "computed_w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Shape", ["c"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], name="take_batch", axis=0),
        helper.make_node("Gather", ["shape", "one"], ["channels"], name="take_channels", axis=0),
        helper.make_node("Unsqueeze", ["batch", "axis0"], ["batch1"], name="batch_1d"),
        helper.make_node("Unsqueeze", ["channels", "axis0"], ["channels1"], name="channels_1d"),
        helper.make_node("Concat", ["batch1", "channels1", "minus_one"], ["target"], name="target", axis=0),
        helper.make_node("Reshape", ["c", "target"], ["tokens"], name="to_tokens"),
        helper.make_node("BatchNormalization", ["tokens", "s", "b", "m", "v"], ["normed"], name="token_bn"),
        helper.make_node("ReduceMean", ["normed"], ["y"], name="pool", axes=[2], keepdims=0),
    ]
    inits = [
        weight(rng, "raw_w", (8, 8, 3, 3)),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array(1, np.int64), "one"),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
        *(numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), name) for name in "sbmv"),
    ]
    return graph_model(nodes, inits, ["batch", 8, 4, 4], ["batch", 8], 13)


def test_measured_shapes_and_static_values_reach_the_conversion_copy():
    from onnxprune.graph.measured import measure, static_frontier

    proto = shape_computed_graph(np.random.default_rng(5))
    frontier, from_shapes = static_frontier(proto)
    assert frontier == {"computed_w", "target"}
    assert "target" in from_shapes and "computed_w" not in from_shapes
    measured = measure(proto)
    assert set(measured.static) == {"computed_w"}, "the target follows the batch size: it stays computed"
    assert measured.shapes["tokens"] == (None, 8, 16), "the batch symbolic, the rest measured"
    model = assert_torch_equals_onnxruntime(proto)
    assert model.layers == [], "a computed weight is not an initializer to prune"


def test_a_graph_onnxruntime_cannot_run_keeps_inferred_shapes():
    from onnxprune.graph.measured import measure

    proto = shape_computed_graph(np.random.default_rng(5))
    proto.graph.node[0].op_type = "NoSuchOp"
    assert measure(proto).shapes == {}


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_of_opset_19_converts(mode):
    """torch's dynamo exporter writes upsampling as Resize revision 19 (opset 20), which onnx2torch does not know."""
    rng = np.random.default_rng(2)
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    resize = helper.make_node(
        "Resize", ["feat", "", "scales"], ["up"], name="upsample", mode=mode, antialias=0,
        keep_aspect_ratio_policy="stretch", coordinate_transformation_mode="half_pixel",
    )  # fmt: skip
    pool = helper.make_node("ReduceMean", ["up", "axes"], ["pooled"], name="pool", keepdims=0)
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    proto = conv_head(rng, 20, [resize, pool], [scales, axes])
    assert_torch_equals_onnxruntime(proto)


def test_clip_with_bounds_computed_from_data_converts():
    """Clip(x, min=mean(x)): onnx2torch refuses tensor bounds; the fallback clamps with them."""
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("ReduceMean", ["feat"], ["low"], name="floor", keepdims=0),
        helper.make_node("Clip", ["feat", "low", ""], ["clipped"], name="clip"),
        helper.make_node("GlobalAveragePool", ["clipped"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["pooled"], name="flat"),
    ]
    assert_torch_equals_onnxruntime(conv_head(rng, 13, nodes, []))


@pytest.mark.parametrize("op", ["BatchNormalization", "AveragePool", "MaxPool"])
def test_ops_on_a_tensor_of_unknown_rank_convert(op):
    """Where no shape says a tensor's rank (an input of symbolic image size reshaped at run time)."""
    import torch
    from onnx2torch.node_converters import get_converter
    from onnx2torch.onnx_graph import OnnxGraph

    from onnxprune.workbench.convert import import_onnx2torch

    import_onnx2torch()
    rng = np.random.default_rng(4)
    params = [numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), n) for n in ("s", "b", "m", "v")]
    if op == "BatchNormalization":
        node = helper.make_node(op, ["t", "s", "b", "m", "v"], ["y"], name="bn", epsilon=1e-5)
    else:
        node = helper.make_node(op, ["t"], ["y"], name="pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])
    graph = helper.make_graph(
        [node], "unknown_rank", [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], params if op == "BatchNormalization" else [],
    )  # fmt: skip
    onnx_graph = OnnxGraph(graph)
    converted = get_converter(op, 13)(next(iter(onnx_graph.nodes.values())), onnx_graph)
    data = rng.standard_normal((2, 8, 5, 5)).astype(np.float32)
    with torch.no_grad():
        got = converted.torch_module.eval()(torch.from_numpy(data)).numpy()
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    np.testing.assert_allclose(got, session(proto.SerializeToString()).run(None, {"t": data})[0], rtol=1e-5, atol=1e-6)
    if op == "BatchNormalization":
        assert isinstance(converted.torch_module, torch.nn.modules.batchnorm._BatchNorm)


@pytest.mark.parametrize("attributes", [{}, {"reverse": 1}, {"exclusive": 1}, {"reverse": 1, "exclusive": 1}])
def test_cumsum_runs_the_way_onnx_says(attributes):
    """onnx2torch read a missing `reverse` as 1: EdgeNeXt's positional encoding summed backwards."""
    rng = np.random.default_rng(5)
    axis = numpy_helper.from_array(np.array(2, np.int64), "axis")
    nodes = [
        helper.make_node("CumSum", ["feat", "axis"], ["summed"], name="running", **attributes),
        helper.make_node("GlobalAveragePool", ["summed"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["pooled"], name="flat"),
    ]
    assert_torch_equals_onnxruntime(conv_head(rng, 14, nodes, [axis]), atol=1e-4)


def test_if_decided_by_the_image_size_is_inlined_and_its_reads_kept():
    """TorchScript keeps `if H > 2:` as an If (Hiera, SAM2): the branch the model's size takes is converted;
    the channels its branches read are kept by compaction (no handler sees a read inside a subgraph)."""
    from onnxprune.graph.channels import analyse

    rng = np.random.default_rng(6)
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    then_branch = helper.make_graph(
        [helper.make_node("Mul", ["feat", "two"], ["doubled"], name="double")], "then", [],
        [helper.make_tensor_value_info("doubled", TensorProto.FLOAT, None)],
    )  # fmt: skip
    else_branch = helper.make_graph(
        [helper.make_node("Identity", ["feat"], ["same"], name="same")], "else", [],
        [helper.make_tensor_value_info("same", TensorProto.FLOAT, None)],
    )  # fmt: skip
    nodes = [
        helper.make_node("Shape", ["feat"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "two_index"], ["height"], name="height", axis=0),
        helper.make_node("Greater", ["height", "limit"], ["tall"], name="tall"),
        helper.make_node("If", ["tall"], ["branched"], name="decide", then_branch=then_branch, else_branch=else_branch),
        helper.make_node("GlobalAveragePool", ["branched"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["pooled"], name="flat"),
    ]
    extra = [
        two, numpy_helper.from_array(np.array(2, np.int64), "two_index"),
        numpy_helper.from_array(np.array(2, np.int64), "limit"),
    ]  # fmt: skip
    model = assert_torch_equals_onnxruntime(conv_head(rng, 13, nodes, extra))
    reasons = {unit.blocked_by for unit in analyse(model).units().values() if unit.blocked_by}
    assert "node 'decide' (If) reads them inside its subgraph" in reasons, reasons


def constant_fed_graph(rng):
    """A blur Conv whose kernel is a Constant node (TResNet's anti-aliasing), and a position bias
    computed by an MLP of layers from a constant coordinate table (Swin V2's and relpos ViTs')."""
    blur = np.full((4, 1, 3, 3), 1 / 9, np.float32)
    coordinates = rng.uniform(-1, 1, (5, 2)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["blur_kernel"], name="blur_kernel", value=numpy_helper.from_array(blur)),
        helper.make_node("Conv", ["x", "blur_kernel"], ["blurred"], name="blur", group=4, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["blurred", "cw"], ["feat"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["feat"], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flat"),
        helper.make_node("MatMul", ["flat", "head_w"], ["logits"], name="head"),
        helper.make_node("Constant", [], ["coords"], name="coords", value=numpy_helper.from_array(coordinates)),
        helper.make_node("MatMul", ["coords", "mlp_w1"], ["hidden"], name="mlp_fc1"),
        helper.make_node("Relu", ["hidden"], ["hidden_act"], name="mlp_act"),
        helper.make_node("MatMul", ["hidden_act", "mlp_w2"], ["bias_table"], name="mlp_fc2"),
        helper.make_node("ReduceMean", ["bias_table"], ["position_bias"], name="bias_mean", axes=[0], keepdims=0),
        helper.make_node("Add", ["logits", "position_bias"], ["y"], name="add_bias"),
    ]
    inits = [weight(rng, "cw", (8, 4, 3, 3)), weight(rng, "head_w", (8, 3))]
    inits += [weight(rng, "mlp_w1", (2, 16)), weight(rng, "mlp_w2", (16, 3))]
    return graph_model(nodes, inits, ["batch", 4, 6, 6], ["batch", 3], 13)


def test_constants_feeding_a_weight_fold_and_layers_on_constants_stay_layers(tmp_path):
    proto = constant_fed_graph(np.random.default_rng(8))
    model = assert_torch_equals_onnxruntime(proto)
    assert [layer.name for layer in model.layers] == ["conv", "head", "mlp_fc1", "mlp_fc2"]
    converted = to_torch(model)
    blur = converted.node_modules["blurred"]
    assert not blur.weight.requires_grad, "a folded weight is not written back: fine-tuning must not change it"
    assert all(entry.module.weight.requires_grad for entry in converted.params.values())

    source = tmp_path / "constant_fed.onnx"
    onnx.save(proto, source)
    pruned = tmp_path / "pruned.onnx"
    result = run("prune", source, "--sparsity", "0.5", "--scope", "global", "-o", pruned)
    assert result.exit_code == 0, result.output
    written = onnxprune.load(pruned)
    zeros = {layer.name: float(np.mean(written.weight_array(layer) == 0)) for layer in written.layers}
    assert sum(zeros.values()) > 0 and set(zeros) == {"conv", "head", "mlp_fc1", "mlp_fc2"}
    assert [n.op_type for n in onnx.load(str(pruned)).graph.node] == [n.op_type for n in proto.graph.node]


def recurrent_graph(rng, op, direction, initial_state, **attributes):
    """x [batch, 6, 4] -> time-major -> one LSTM / GRU (hidden 3) -> Y_h flattened -> MatMul head."""
    gates, directions = (4 if op == "LSTM" else 3), (2 if direction == "bidirectional" else 1)
    inputs = ["x_time_major", "w", "r", "b", "", "h0" if initial_state else ""]
    nodes = [
        helper.make_node("Transpose", ["x"], ["x_time_major"], perm=[1, 0, 2]),
        helper.make_node(op, inputs, ["sequence", "last"], name="recurrent", hidden_size=3, direction=direction,
                         **attributes),
        helper.make_node("Transpose", ["last"], ["last_batch_first"], perm=[1, 0, 2]),
        helper.make_node("Flatten", ["last_batch_first"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "head_w"], ["logits"], name="head"),
        helper.make_node("ReduceMean", ["sequence"], ["mean"], axes=[0, 1, 2, 3], keepdims=0),
        helper.make_node("Add", ["logits", "mean"], ["y"], name="add_sequence"),
    ]  # fmt: skip
    inits = [
        weight(rng, "w", (directions, gates * 3, 4)),
        weight(rng, "r", (directions, gates * 3, 3)),
        weight(rng, "b", (directions, 2 * gates * 3)),
        weight(rng, "head_w", (directions * 3, 5)),
    ]
    if initial_state:
        inits.append(weight(rng, "h0", (directions, 2, 3)))
    return graph_model(nodes, inits, [2, 6, 4], [2, 5], 14)


@pytest.mark.parametrize(
    "op, direction, initial_state",
    [("LSTM", "bidirectional", False), ("LSTM", "reverse", True), ("GRU", "forward", True),
     ("GRU", "bidirectional", False)],
)  # fmt: skip
def test_recurrent_layers_convert_in_every_direction(op, direction, initial_state):
    attributes = {"linear_before_reset": 1} if op == "GRU" else {}
    proto = recurrent_graph(np.random.default_rng(9), op, direction, initial_state, **attributes)
    model = assert_torch_equals_onnxruntime(proto)
    assert [layer.name for layer in model.layers] == ["head"]


def test_a_gru_resetting_before_its_linear_transform_is_refused_in_one_line(tmp_path):
    proto = recurrent_graph(np.random.default_rng(9), "GRU", "forward", False)
    path = tmp_path / "gru.onnx"
    onnx.save(proto, path)
    result = run("prune", path, "--sparsity", "0.5", "-o", tmp_path / "out.onnx")
    assert_one_line_error(result, "GRU with linear_before_reset=0 is not implemented")
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("strides, pads", [([1, 1], [1, 1, 1, 1]), ([2, 2], [0, 0, 0, 0])])
def test_col2im_converts(strides, pads):
    """The dynamo exporter writes `F.fold` (VOLO's outlook attention) as Col2Im, which onnx2torch does not know."""
    rng = np.random.default_rng(10)
    blocks = 16 if strides == [1, 1] else 1
    side = 4 if strides == [1, 1] else 3
    nodes = [
        helper.make_node("Col2Im", ["x", "image", "block"], ["folded"], name="fold", strides=strides, pads=pads),
        helper.make_node("Conv", ["folded", "cw"], ["feat"], name="conv"),
        helper.make_node("GlobalAveragePool", ["feat"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([side, side], np.int64), "image"),
        numpy_helper.from_array(np.array([3, 3], np.int64), "block"),
        weight(rng, "cw", (5, 4, 1, 1)),
    ]
    model = assert_torch_equals_onnxruntime(graph_model(nodes, inits, ["batch", 36, blocks], ["batch", 5], 18))
    assert [layer.name for layer in model.layers] == ["conv"]


def test_verification_tolerance_follows_the_output_scale(tmp_path):
    """Rounding of logits in the hundreds is accepted on a logit near zero; an error of the output's size is not."""
    from onnxprune.errors import VerificationError
    from onnxprune.graph.verify import Reference, verify

    inputs = np.zeros((1, 3), np.float32)
    nodes = [helper.make_node("Add", ["x", "offsets"], ["y"])]
    offsets = numpy_helper.from_array(np.array([[800.0, 1.0, -300.0]], np.float32), "offsets")
    path = tmp_path / "scale.onnx"
    onnx.save(graph_model(nodes, [offsets], [1, 3], [1, 3], 13), path)
    rounded = np.array([[800.0, 1.003, -300.0]], np.float32)
    assert verify(path, Reference(inputs, [rounded])).atol == pytest.approx(0.08)
    with pytest.raises(
        VerificationError, match=r"differs from torch by up to 0\.5 \(tolerance rtol=0\.001, atol=0\.08\)"
    ):
        verify(path, Reference(inputs, [np.array([[800.0, 1.5, -300.0]], np.float32)]))
