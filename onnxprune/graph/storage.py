"""Writing weights back into the original graph: dense, sparse initializers, or external data; the package.

A weight that the TorchScript exporter stored once and fed to a second user through
`Identity(initializer)` may come back with a value of its own (fine-tuning trained two copies of
a shared bias); then that Identity node gives way to an initializer of the same name, so both
users keep the values torch computed with. Nothing else in the graph changes.

Package (`pack` / `unpack`): a zip holding the graph with every sparse float initializer
emptied, and those initializers as their non-zero values plus a one-bit-per-weight mask. It is
the smallest form onnxprune writes (close to the values+mask size: the values plus the
entropy of the mask) and unpacks to the same graph with bit-identical weights (the file's bytes may
differ: protobuf can store a tensor's values in either of two fields).
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.errors import ModelLoadError, stage, write_error
from onnxprune.files import save_atomic, temporary_path
from onnxprune.graph.model import (
    FLOAT_TYPES,
    Model,
    identity_aliases,
    model_file_size,
)
from onnxprune.graph.proto import copy_without_initializers

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

# Each stored non-zero costs its value (4 bytes for float32) plus an int64 linear index.
INDEX_BYTES = 8
RAW_DATA_FIELD = onnx.TensorProto.DESCRIPTOR.fields_by_name["raw_data"].number


@stage("write-back")
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
    for tensor in [*original.graph.initializer, *_untied(result, original, weights)]:
        if tensor.name in weights:
            result.graph.initializer.append(_replacement(tensor, weights[tensor.name]))
        else:
            result.graph.initializer.append(tensor)
    return result


def _untied(skeleton: onnx.ModelProto, source: onnx.ModelProto, weights: dict) -> list[onnx.TensorProto]:
    """Headers for `Identity(initializer)` outputs given a value that differs from the shared one.

    Their Identity nodes are removed from `skeleton`; the caller writes an initializer under each
    returned name, so the tensor keeps its name and its consumers.
    """
    aliases = identity_aliases(source)
    originals = {tensor.name: tensor for tensor in source.graph.initializer}
    untied = []
    for name, value in weights.items():
        source_name = aliases.get(name)
        if source_name is None or name in originals:
            continue
        shared = numpy_helper.to_array(originals[source_name])
        if np.shape(value) == shared.shape and np.array_equal(np.asarray(value, shared.dtype), shared):
            continue
        untied.append(onnx.TensorProto(name=name, data_type=originals[source_name].data_type, dims=shared.shape))
    if untied:
        names = {tensor.name for tensor in untied}
        kept = [node for node in skeleton.graph.node if not (node.op_type == "Identity" and node.output[0] in names)]
        del skeleton.graph.node[:]
        skeleton.graph.node.extend(kept)
    return untied


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


@dataclass
class ExternalData:
    """Where `write_model` puts tensor bytes instead of the .onnx file.

    Attributes:
        stream: an open binary file the bytes are written to (None: only the offsets are
            computed, for a second .onnx file pointing at data already written).
        location: the data file's name as recorded in the model (relative to the .onnx file).
    """

    stream: object | None
    location: str
    offset: int = 0


# Tensors under this size stay inside the .onnx file, as onnx.save's own external-data writer does.
EXTERNAL_THRESHOLD = 1024


def write_model(
    path: str | os.PathLike,
    source: onnx.ModelProto,
    replacements: dict[str, np.ndarray],
    sparse_candidates: Iterable[str] = (),
    external: ExternalData | None = None,
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
        external: write tensors of 1 KB and more to this external data file (the form torch's
            exporter writes for large models) instead of the .onnx file.

    Returns:
        The names stored as sparse initializers.
    """
    skeleton = onnx.ModelProto()
    copy_without_initializers(source, skeleton)
    moved = _add_sparse_initializers(skeleton, source, replacements, sparse_candidates)
    untied = _untied(skeleton, source, replacements)
    graph = skeleton.graph
    graph_field = _tag(onnx.ModelProto.DESCRIPTOR.fields_by_name["graph"].number)
    initializer_field = _tag(onnx.GraphProto.DESCRIPTOR.fields_by_name["initializer"].number)
    records = [
        (tensor, replacements.get(tensor.name))
        for tensor in [*source.graph.initializer, *untied]
        if tensor.name not in moved
    ]
    if external is not None:
        records = [_to_external(tensor, value, external) for tensor, value in records]
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


def _to_external(
    tensor: onnx.TensorProto, value: np.ndarray | None, external: ExternalData
) -> tuple[onnx.TensorProto, np.ndarray | None]:
    """The record of one tensor whose bytes go to the external data file (written now, if a stream)."""
    if value is None:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise ValueError(f"initializer '{tensor.name}' has no data loaded; load the model with its weights")
        value = numpy_helper.to_array(tensor)
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).newbyteorder("<")
    data = np.ascontiguousarray(value, dtype=dtype).reshape(np.shape(value))  # keeps 0-d scalars 0-d
    if data.nbytes < EXTERNAL_THRESHOLD:
        return tensor, data
    header = _tensor_header(tensor, data.shape)
    header.data_location = onnx.TensorProto.EXTERNAL
    for key, entry in (("location", external.location), ("offset", external.offset), ("length", data.nbytes)):
        item = header.external_data.add()
        item.key, item.value = key, str(entry)
    if external.stream is not None:
        external.stream.write(memoryview(data.reshape(-1)).cast("B"))
    external.offset += data.nbytes
    return header, None


@stage("save")
def save_model_file(
    output: Path,
    source: onnx.ModelProto,
    replacements: dict[str, np.ndarray] | None = None,
    *,
    sparse_candidates: Iterable[str] = (),
    external_data: bool = False,
    check: Callable[[Path], object] | None = None,
    after_write: Callable[[], object] | None = None,
) -> list[str]:
    """Write `source` (with `replacements`) to `output` atomically, checked before it lands.

    With `external_data`, the weights go to `<output>.data` beside it (the file name torch's
    exporter uses): both files are written under temporary names, the model is checked against
    its temporary data, and only then are both renamed into place. A failure leaves neither.

    Args:
        output: the final .onnx path.
        source: the model to write (left untouched).
        replacements: initializer name -> new value, as `write_model`.
        sparse_candidates: as `write_model`.
        external_data: keep the weights in an external data file.
        check: `check(path)` on the written model before it is renamed into place.
        after_write: called once the bytes are written, before `check` (to free memory early).

    Returns:
        The names stored as sparse initializers.
    """
    replacements = replacements or {}
    moved: list[str] = []
    check = stage("verification")(check) if check is not None else None
    if not external_data:

        def write(path: Path) -> None:
            moved[:] = write_model(path, source, replacements, sparse_candidates)
            if after_write is not None:
                after_write()

        save_atomic(write, output, check=check)
        return moved
    data_output = output.with_name(output.name + ".data")
    data_temp = temporary_path(data_output)
    checked_temp = temporary_path(output)
    try:
        with open(data_temp, "wb") as stream:
            moved[:] = write_model(
                checked_temp, source, replacements, sparse_candidates, ExternalData(stream, data_temp.name)
            )
        if after_write is not None:
            after_write()
        if check is not None:
            check(checked_temp)
        # the checked model points at the temporary data file; the final one at its final name
        final = onnx.load_model(str(checked_temp), load_external_data=False)
        for tensor in final.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = data_output.name
        save_atomic(final, output, check=lambda _path: os.replace(data_temp, data_output))
    except OSError as exc:  # disk full while writing the data file: neither file lands
        raise write_error(output, exc) from None
    finally:
        data_temp.unlink(missing_ok=True)
        checked_temp.unlink(missing_ok=True)
    return moved


def _write_replacement(stream: BinaryIO, tensor: onnx.TensorProto, value: np.ndarray) -> None:
    """Write a TensorProto record for `value` without copying its data into a proto first."""
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).newbyteorder("<")
    data = np.ascontiguousarray(value, dtype=dtype).reshape(np.shape(value))  # keeps 0-d scalars 0-d
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


def _add_sparse_initializers(
    skeleton: onnx.ModelProto,
    source: onnx.ModelProto,
    replacements: dict[str, np.ndarray],
    candidates: Iterable[str],
) -> set[str]:
    originals = {tensor.name: tensor for tensor in source.graph.initializer}
    moved = set()
    for name in candidates:
        if name not in originals:
            continue  # a tensor shared through Identity stays dense (`_untied` writes it)
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


# --- the compact package ---------------------------------------------------------------------

PACKAGE_GRAPH = "graph.onnx"
PACKAGE_WEIGHTS = "weights.npz"


def pack(model: Model, output: str | os.PathLike) -> dict:
    """Write the package: a deflated zip of the graph and each sparse weight as values + bit mask.

    Returns:
        {"bytes": size of the package, "packed": names stored as values + mask}.
    """
    from onnxprune.graph.model import check_output_path

    output = check_output_path(model, output)
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model.proto)
    arrays: dict[str, np.ndarray] = {}
    packed = []
    for tensor in skeleton.graph.initializer:
        if tensor.data_type not in FLOAT_TYPES:
            continue
        array = numpy_helper.to_array(tensor)
        nonzero = array != 0
        if array.size < 64 or nonzero.sum() * array.itemsize + array.size / 8 >= array.nbytes * 0.97:
            continue  # dense enough that the mask costs more than it saves
        arrays[f"{tensor.name}::values"] = array[nonzero]
        arrays[f"{tensor.name}::mask"] = np.packbits(nonzero.reshape(-1))
        arrays[f"{tensor.name}::shape"] = np.array(array.shape, dtype=np.int64)
        tensor.ClearField("raw_data")
        tensor.ClearField("float_data")
        tensor.ClearField("double_data")
        packed.append(tensor.name)
    weights = io.BytesIO()
    np.savez(weights, **arrays)

    def write(path: Path) -> None:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            archive.writestr(PACKAGE_GRAPH, skeleton.SerializeToString())
            archive.writestr(PACKAGE_WEIGHTS, weights.getvalue())

    save_atomic(write, output)
    return {"bytes": model_file_size(output), "packed": packed}


def unpack(package: str | os.PathLike) -> onnx.ModelProto:
    """The model a package holds: the graph as packed, every weight bit-identical to the packed one."""
    package = Path(package)
    try:
        with zipfile.ZipFile(package) as archive:
            proto = onnx.load_from_string(archive.read(PACKAGE_GRAPH))
            arrays = np.load(io.BytesIO(archive.read(PACKAGE_WEIGHTS)))
            for tensor in proto.graph.initializer:
                if f"{tensor.name}::values" not in arrays:
                    continue
                shape = tuple(arrays[f"{tensor.name}::shape"])
                count = int(np.prod(shape))
                mask = np.unpackbits(arrays[f"{tensor.name}::mask"], count=count).astype(bool)
                values = arrays[f"{tensor.name}::values"]
                dense = np.zeros(count, dtype=values.dtype)
                dense[mask] = values
                tensor.raw_data = dense.reshape(shape).tobytes()
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise ModelLoadError(f"{package}: not an onnxprune package ({type(exc).__name__})") from None
    return proto
