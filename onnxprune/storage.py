"""Writing weights back into the original graph, densely or as sparse initializers."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.model import Model, copy_without_initializers

# Each stored non-zero costs its value (4 bytes for float32) plus an int64 linear index.
INDEX_BYTES = 8
RAW_DATA_FIELD = onnx.TensorProto.DESCRIPTOR.fields_by_name["raw_data"].number


def write_back(model: Model, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of the original proto with the given initializers replaced.

    Args:
        model: the loaded model whose proto is copied (and left untouched).
        weights: initializer name -> new value in ONNX layout. Its dtype is cast to the original
            initializer's type.

    Returns:
        A new ModelProto: same nodes, names, attributes, opset, producer, inputs and outputs;
        only the named initializers differ.
    """
    original = model.proto
    result = onnx.ModelProto()
    copy_without_initializers(original, result)
    for tensor in original.graph.initializer:
        if tensor.name in weights:
            result.graph.initializer.append(_replacement(tensor, weights[tensor.name]))
        else:
            result.graph.initializer.append(tensor)
    return result


def sparse_size(array: np.ndarray) -> int:
    """Bytes of values plus int64 linear indices for the non-zeros of `array`."""
    return int(np.count_nonzero(array)) * (array.itemsize + INDEX_BYTES)


def to_sparse_storage(proto: onnx.ModelProto, candidates: list[str]) -> list[str]:
    """Move each named initializer to `graph.sparse_initializer` where that makes it smaller.

    Indices are int64 and linearised (the form `onnx.checker` accepts). onnxruntime densifies
    sparse initializers when it creates a session: this saves disk, not inference time.

    Args:
        proto: modified in place.
        candidates: initializer names to consider (the prunable weights).

    Returns:
        The names that were moved.
    """
    moved = _add_sparse_initializers(proto, proto, {}, candidates)
    kept = [tensor for tensor in proto.graph.initializer if tensor.name not in moved]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    return sorted(moved)


def write_model(
    path,
    source: onnx.ModelProto,
    replacements: dict[str, np.ndarray],
    sparse_candidates: list[str] = (),
) -> list[str]:
    """Write `source` with some initializers replaced, one tensor at a time.

    The result is the file `write_back(...)` would serialise, byte for byte equivalent once
    parsed, but it is streamed: protobuf's wire format lets the graph field be written as its
    skeleton followed by one initializer record after another, so the whole model never exists
    twice in memory (a 61M-parameter AlexNet would otherwise need the proto and its serialised
    copy at once).

    Args:
        path: the file to write.
        source: the original model (left untouched).
        replacements: initializer name -> new value (ONNX layout), cast to the original type.
        sparse_candidates: initializer names to store as int64-indexed sparse initializers where
            that is smaller (see `to_sparse_storage`).

    Returns:
        The names stored as sparse initializers.
    """
    skeleton = onnx.ModelProto()
    copy_without_initializers(source, skeleton)
    moved = _add_sparse_initializers(skeleton, source, replacements, sparse_candidates)
    graph = skeleton.graph
    graph_field = _tag(onnx.ModelProto.DESCRIPTOR.fields_by_name["graph"].number)
    initializer_field = _tag(onnx.GraphProto.DESCRIPTOR.fields_by_name["initializer"].number)
    records = [
        (tensor, replacements.get(tensor.name)) for tensor in source.graph.initializer if tensor.name not in moved
    ]
    graph_head = graph.SerializeToString()
    sizes = [_record_size(tensor, value) for tensor, value in records]
    graph_size = len(graph_head) + sum(len(initializer_field) + len(_varint(size)) + size for size in sizes)
    skeleton.ClearField("graph")
    with open(path, "wb") as stream:
        stream.write(skeleton.SerializeToString())
        stream.write(graph_field + _varint(graph_size) + graph_head)
        for (tensor, value), size in zip(records, sizes, strict=True):
            stream.write(initializer_field + _varint(size))
            if value is None:
                stream.write(tensor.SerializeToString())
            else:
                _write_replacement(stream, tensor, value)
    return sorted(moved)


def _write_replacement(stream, tensor: onnx.TensorProto, value: np.ndarray) -> None:
    """Write a TensorProto record for `value` without copying its data into a proto first."""
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).newbyteorder("<")
    data = np.ascontiguousarray(value, dtype=dtype)
    stream.write(_tensor_header(tensor, data.shape).SerializeToString())
    stream.write(_tag(RAW_DATA_FIELD) + _varint(data.nbytes))
    stream.write(memoryview(data.reshape(-1)).cast("B"))


def _replacement(tensor: onnx.TensorProto, value: np.ndarray) -> onnx.TensorProto:
    dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
    replacement = numpy_helper.from_array(np.asarray(value, dtype=dtype), tensor.name)
    if tensor.doc_string:
        replacement.doc_string = tensor.doc_string
    return replacement


def _tensor_header(tensor: onnx.TensorProto, shape: tuple) -> onnx.TensorProto:
    """The replacement's fields other than its data: name, type, dims, doc string."""
    header = onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=list(shape))
    if tensor.doc_string:
        header.doc_string = tensor.doc_string
    return header


def _record_size(tensor: onnx.TensorProto, value: np.ndarray | None) -> int:
    """Serialised size of the initializer record, without building the replacement tensor."""
    if value is None:
        return tensor.ByteSize()
    raw_bytes = int(np.prod(np.shape(value))) * np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    header = _tensor_header(tensor, np.shape(value))
    return header.ByteSize() + len(_tag(RAW_DATA_FIELD)) + len(_varint(raw_bytes)) + raw_bytes


def _add_sparse_initializers(skeleton, source, replacements, candidates) -> set[str]:
    originals = {tensor.name: tensor for tensor in source.graph.initializer}
    moved = set()
    for name in candidates:
        value = replacements[name] if name in replacements else numpy_helper.to_array(originals[name])
        value = np.asarray(value, dtype=helper.tensor_dtype_to_np_dtype(originals[name].data_type))
        if sparse_size(value) >= value.nbytes:
            continue
        flat = value.reshape(-1)
        indices = np.flatnonzero(flat).astype(np.int64)
        values = numpy_helper.from_array(flat[indices], name)
        index_tensor = numpy_helper.from_array(indices, f"{name}_indices")
        skeleton.graph.sparse_initializer.append(helper.make_sparse_tensor(values, index_tensor, list(value.shape)))
        moved.add(name)
    if moved:
        # graph inputs that shadow initializers (IR < 4 habit) would become unfed inputs
        inputs = [value for value in skeleton.graph.input if value.name not in moved]
        del skeleton.graph.input[:]
        skeleton.graph.input.extend(inputs)
        skeleton.ir_version = max(skeleton.ir_version, 4)
    return moved


def _tag(field_number: int) -> bytes:
    return _varint(field_number << 3 | 2)  # wire type 2: length-delimited


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
