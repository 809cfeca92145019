"""Writing weights back into the original graph, densely or as sparse initializers."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.model import Model, copy_without_initializers

# Each stored non-zero costs its value (4 bytes for float32) plus an int64 linear index.
INDEX_BYTES = 8


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
            dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
            replacement = numpy_helper.from_array(np.asarray(weights[tensor.name], dtype=dtype), tensor.name)
            if tensor.doc_string:
                replacement.doc_string = tensor.doc_string
            result.graph.initializer.append(replacement)
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
    moved = []
    kept = []
    wanted = set(candidates)
    for tensor in proto.graph.initializer:
        if tensor.name not in wanted:
            kept.append(tensor)
            continue
        array = numpy_helper.to_array(tensor)
        if sparse_size(array) >= array.nbytes:
            kept.append(tensor)
            continue
        flat = array.reshape(-1)
        indices = np.flatnonzero(flat).astype(np.int64)
        values = numpy_helper.from_array(flat[indices], tensor.name)
        index_tensor = numpy_helper.from_array(indices, f"{tensor.name}_indices")
        proto.graph.sparse_initializer.append(helper.make_sparse_tensor(values, index_tensor, list(array.shape)))
        moved.append(tensor.name)
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    if moved:
        # graph inputs that shadow initializers (IR < 4 habit) would now be unfed inputs
        moved_names = set(moved)
        inputs = [value for value in proto.graph.input if value.name not in moved_names]
        del proto.graph.input[:]
        proto.graph.input.extend(inputs)
        proto.ir_version = max(proto.ir_version, 4)
    return moved
