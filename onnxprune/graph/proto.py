"""The small ONNX helpers the graph room shares: attributes, Constant values, weightless copies, shapes.

One version of each, used by every module of `onnxprune.graph` (loading, sanitising, channel
analysis, compaction, storage). This module imports nothing of onnxprune, so any module may use
it without an import cycle.

- `attribute`, `set_attribute`, `remove_attribute`: a node's attribute as a Python value, written,
  or dropped.
- `constant_value`: what a Constant node holds, whichever of its attributes holds it.
- `copy_without_initializers`, `weightless_copy`, `is_stand_in`: copies of a model without its
  weight data (large initializers become shape-only stand-ins, or typed graph inputs).
- `subgraph_reads`: the outer tensors a node's If / Loop bodies read.
- `inferred_shapes`: ONNX shape inference, run on a weightless copy so it stays fast on large models.
- `session`: an onnxruntime session with its log silenced.
- `PRUNABLE_OPS`: the ops whose weight initializer onnxprune prunes (`graph.model` and `graph.measured`
  both read it; it lives here so that `measured` need not import `model`, which imports it).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

if TYPE_CHECKING:
    import onnxruntime
    from google.protobuf.descriptor import FieldDescriptor
    from google.protobuf.message import Message

# Ops whose second input, when it is a float initializer, is a weight onnxprune prunes.
PRUNABLE_OPS = ("Conv", "Gemm", "MatMul")

# Initializers above this many serialised bytes become shape-only stand-ins in a weightless copy;
# the smaller ones (Reshape targets, axes, pads, split sizes) keep their data: shape inference reads it.
SKELETON_DATA_LIMIT = 65536
# The external-data location that marks a stand-in; it is never a file.
STAND_IN_LOCATION = "onnxprune-weights-not-loaded"


# --- attributes ------------------------------------------------------------------------------


def attribute(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """The value of the node's attribute `name` (`onnx.helper.get_attribute_value`), or `default`.

    Ints come back as int, floats as float, strings as bytes, lists as lists, a graph as a
    GraphProto, a tensor as a TensorProto.
    """
    for item in node.attribute:
        if item.name == name:
            return helper.get_attribute_value(item)
    return default


def set_attribute(node: onnx.NodeProto, name: str, value: Any) -> None:
    """Give the node the attribute `name` = `value` (any type `onnx.helper.make_attribute` takes).

    An attribute of that name is replaced where it stands (the node's attribute order is kept);
    otherwise the new one is appended.
    """
    new = helper.make_attribute(name, value)
    for item in node.attribute:
        if item.name == name:
            item.CopyFrom(new)
            return
    node.attribute.append(new)


def remove_attribute(node: onnx.NodeProto, name: str) -> None:
    """Drop every attribute called `name` from the node (nothing if it has none)."""
    kept = [item for item in node.attribute if item.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)


def subgraph_reads(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs (If branches, Loop bodies) read from the scope around them."""
    names: set[str] = set()
    for item in node.attribute:
        graphs = [item.g] if item.type == onnx.AttributeProto.GRAPH else list(item.graphs)
        for graph in graphs:
            defined = {t.name for t in graph.initializer} | {v.name for v in graph.input}
            for inner in graph.node:
                names.update(name for name in inner.input if name and name not in defined)
                names.update(subgraph_reads(inner) - defined)
                defined.update(inner.output)
            names.update(v.name for v in graph.output if v.name not in defined)
    return names


# --- Constant nodes --------------------------------------------------------------------------


def constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    """The value a Constant node holds, as a numpy array; None for other nodes and for string lists.

    `value` (a tensor) and `sparse_value` (densified) keep their element type; `value_int` /
    `value_ints` are int64, `value_float` / `value_floats` float32 (0-d for the single forms).
    `value_string` / `value_strings` give None: no caller computes with text.
    """
    if node.op_type != "Constant":
        return None
    for item in node.attribute:
        if item.name == "value":
            return numpy_helper.to_array(item.t)
        if item.name == "sparse_value":
            return _dense(item.sparse_tensor)
        if item.name in ("value_int", "value_ints"):
            return np.array(helper.get_attribute_value(item), np.int64)
        if item.name in ("value_float", "value_floats"):
            return np.array(helper.get_attribute_value(item), np.float32)
    return None


def constant_map(
    proto: onnx.ModelProto, *, max_size: int | None = None, through_identity: bool = False
) -> dict[str, np.ndarray]:
    """Name -> value of the graph's constants: initializers with data and Constant nodes.

    Args:
        proto: the model.
        max_size: leave out initializers of more elements (operands such as axes, pads and sizes
            are small; weights are not read).
        through_identity: an Identity of a constant is that constant too.
    """
    values = {
        tensor.name: numpy_helper.to_array(tensor)
        for tensor in proto.graph.initializer
        if not is_stand_in(tensor) and (max_size is None or int(np.prod(tensor.dims)) <= max_size)
    }
    for node in proto.graph.node:
        value = constant_value(node)
        if value is not None:
            values[node.output[0]] = value
        elif through_identity and node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
    return values


def _dense(sparse: onnx.SparseTensorProto) -> np.ndarray:
    """A sparse tensor as a dense array (indices linearised [NNZ] or coordinates [NNZ, rank])."""
    shape = tuple(int(d) for d in sparse.dims)
    values = numpy_helper.to_array(sparse.values).reshape(-1)
    indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
    if indices.ndim == 2:
        indices = np.ravel_multi_index(tuple(indices.T), shape)
    dense = np.zeros(int(np.prod(shape)), values.dtype)
    dense[indices.reshape(-1)] = values
    return dense.reshape(shape)


# --- copies without weights ------------------------------------------------------------------


def copy_field(target: Message, descriptor: FieldDescriptor, value: Any) -> None:
    """Copy one field (as listed by `ListFields`) of a protobuf message into `target`."""
    if descriptor.message_type is None and not hasattr(value, "extend"):
        setattr(target, descriptor.name, value)
    elif hasattr(value, "extend"):  # a repeated field
        getattr(target, descriptor.name).extend(value)
    else:
        getattr(target, descriptor.name).CopyFrom(value)


def copy_without_initializers(proto: onnx.ModelProto, target: onnx.ModelProto) -> None:
    """Copy every field of `proto` into `target` except the graph's dense initializers."""
    for descriptor, value in proto.ListFields():
        if descriptor.name != "graph":
            copy_field(target, descriptor, value)
    for descriptor, value in proto.graph.ListFields():
        if descriptor.name != "initializer":
            copy_field(target.graph, descriptor, value)


def weightless_copy(proto: onnx.ModelProto, *, stand_ins_as_inputs: bool = False) -> onnx.ModelProto:
    """A copy of `proto` without the data of its large initializers (the original is not modified).

    Initializers up to `SKELETON_DATA_LIMIT` bytes are kept whole (shape inference reads their
    values). A larger one becomes a shape-only stand-in (`is_stand_in`): name, type and dims, its
    data marked as external at `STAND_IN_LOCATION`, which nothing ever reads. With
    `stand_ins_as_inputs` it becomes a typed graph input instead (unless already listed as one):
    the form `onnx.checker` accepts, which refuses an external location that is not a file.

    Serialising the copy (shape inference, the version converter and the checker all do) then
    costs no more than the graph: a 250 MB model is not copied again.
    """
    copy = onnx.ModelProto()
    copy_without_initializers(proto, copy)
    listed = {value.name for value in copy.graph.input}
    for tensor in proto.graph.initializer:
        if tensor.ByteSize() <= SKELETON_DATA_LIMIT:
            copy.graph.initializer.append(tensor)
        elif stand_ins_as_inputs:
            if tensor.name not in listed:
                copy.graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims))
        else:
            stand_in = copy.graph.initializer.add()
            stand_in.name = tensor.name
            stand_in.data_type = tensor.data_type
            stand_in.dims.extend(tensor.dims)
            stand_in.data_location = onnx.TensorProto.EXTERNAL
            entry = stand_in.external_data.add()
            entry.key, entry.value = "location", STAND_IN_LOCATION
    return copy


def is_stand_in(tensor: onnx.TensorProto) -> bool:
    """True for the shape-only placeholder of a large initializer in a `weightless_copy`."""
    return tensor.data_location == onnx.TensorProto.EXTERNAL and any(
        entry.value == STAND_IN_LOCATION for entry in tensor.external_data
    )


# --- shapes ----------------------------------------------------------------------------------


def inferred_shapes(proto: onnx.ModelProto, *, data_prop: bool = False) -> dict[str, tuple[int, ...]]:
    """Static shapes from ONNX shape inference, run on a `weightless_copy` of `proto`.

    Args:
        proto: the model (left untouched).
        data_prop: also propagate the values of small integer tensors (`Shape` -> arithmetic ->
            `Reshape` targets), as `onnx.shape_inference.infer_shapes(data_prop=True)` does.

    Returns:
        Tensor name -> dims, 0 for a dimension inference leaves unknown or symbolic, for every
        value_info, graph input and graph output whose shape is known (in that order, a later
        one replacing an earlier one of the same name). Initializers are not included. Inference
        is best effort: {} where it fails.
    """
    skeleton = weightless_copy(proto)
    try:
        inferred = shape_inference.infer_shapes(skeleton, strict_mode=False, data_prop=data_prop)
    except Exception:  # best effort: a shape left unknown costs its users precision, nothing else
        return {}
    shapes = {}
    graph = inferred.graph
    for value in [*graph.value_info, *graph.input, *graph.output]:
        if value.type.tensor_type.HasField("shape"):
            dims = value.type.tensor_type.shape.dim
            shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else 0 for d in dims)
    return shapes


# --- running ---------------------------------------------------------------------------------


def session(path_or_bytes: Path | str | bytes, providers: list[str] | None = None) -> onnxruntime.InferenceSession:
    """An onnxruntime InferenceSession with its log silenced (it goes to stderr, not the user).

    Errors too: a failed run raises with the same message, and the probes that try a variant of a
    model (`onnxprune.graph.channels`, `onnxprune.graph.measured`) expect some runs to fail.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    source = str(path_or_bytes) if isinstance(path_or_bytes, Path) else path_or_bytes
    return ort.InferenceSession(source, options, providers=providers or ["CPUExecutionProvider"])
