"""Loading, describing and saving ONNX classifiers.

The original `ModelProto` is kept untouched for the whole life of a `Model`; everything onnx2torch
needs (an opset upgrade, sanitised attributes) is done on a separate conversion copy. Pruned weights
are written back into a copy of the original graph, so names, ops, opset and producer survive.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper, version_converter
from onnx.external_data_helper import load_external_data_for_model

from onnxprune.errors import ConfigError, ModelLoadError, stage
from onnxprune.graph.proto import PRUNABLE_OPS, attribute, inferred_shapes, set_attribute, weightless_copy
from onnxprune.graph.proto import is_stand_in as is_stand_in  # re-exported: workbench/convert.py reads it here

MATLAB_PRODUCER = "MATLAB Deep Learning Toolbox Converter for ONNX Model Format"
# onnx2torch picks converters by the schema version in force at the model's opset, and has none
# for the opset 6-12 versions of Flatten, BatchNormalization, Dropout and Gemm that MATLAB writes.
CONVERSION_OPSET = 13


@dataclass(frozen=True)
class InputSpec:
    """What the model expects as input.

    Attributes:
        name: the graph input's name.
        shape: dimensions; symbolic ones (a batch size) are strings.
        layout: "NCHW", "NHWC", "flat" (N x features) or "unknown".
        elem_type: ONNX element type name, e.g. "FLOAT".
    """

    name: str
    shape: tuple[int | str, ...]
    layout: str
    elem_type: str

    def concrete_shape(self, batch: int = 1) -> tuple[int, ...]:
        """The shape with the batch dimension set to `batch` and other symbols set to 1."""
        dims = [d if isinstance(d, int) and d > 0 else 1 for d in self.shape]
        if dims:
            dims[0] = batch
        return tuple(dims)

    @property
    def fixed_batch(self) -> bool:
        """True when the batch dimension is a fixed number (MATLAB before R2022a writes 1)."""
        return bool(self.shape) and isinstance(self.shape[0], int) and self.shape[0] > 0


@dataclass(frozen=True)
class PrunableLayer:
    """A Conv, Gemm or MatMul node whose weight is an initializer.

    Attributes:
        name: the node name (generated as "<op>_<index>" when the node has none).
        op_type: "Conv", "Gemm" or "MatMul".
        weight: name of the weight initializer.
        shape: shape of the weight as stored in ONNX.
        out_axis: axis of `shape` that indexes output channels / neurons.
        in_axis: axis of `shape` that indexes input channels / features.
        bias: name of the bias initializer, if any.
        output: name of the node's first output (unique in the graph).
        groups: the Conv `group` attribute (1 for fully-connected layers).
        macs: multiply-accumulates per sample (0 when shapes are unknown).
    """

    name: str
    op_type: str
    weight: str
    shape: tuple[int, ...]
    out_axis: int
    in_axis: int
    bias: str | None
    output: str
    groups: int = 1
    macs: int = 0

    @property
    def numel(self) -> int:
        """Number of weights in the layer."""
        return int(np.prod(self.shape))


@dataclass
class Model:
    """An ONNX classifier as loaded: the original proto and what was learnt about it.

    Attributes:
        proto: the original ModelProto; never modified.
        path: the file it came from (None when built in memory).
        layers: the prunable layers, in graph order.
        input: the (first) graph input that is not an initializer.
        outputs: names of the graph outputs.
        external_data: the file kept its weights in a data file beside it (torch's exporter
            does for models over a few MB); files written from this model do the same.
    """

    proto: onnx.ModelProto
    path: Path | None
    layers: list[PrunableLayer]
    input: InputSpec
    outputs: list[str]
    external_data: bool = False
    _initializers: dict[str, onnx.TensorProto] = field(repr=False, default_factory=dict)
    # `onnxprune.workbench.fidelity.ConversionCheck` of its torch conversion, made once per model
    conversion_check: object = field(default=None, repr=False, compare=False)

    @property
    def producer(self) -> str:
        """Producer name and version, e.g. "pytorch 1.8"."""
        return f"{self.proto.producer_name} {self.proto.producer_version}".strip()

    @property
    def is_matlab(self) -> bool:
        """True for files written by MATLAB's exportONNXNetwork."""
        return self.proto.producer_name.startswith("MATLAB")

    @property
    def opset(self) -> int:
        """The default-domain opset the file declares."""
        return default_opset(self.proto)

    @property
    def num_classes(self) -> int:
        """Number of classes: the last dimension of the first output (0 when unknown)."""
        for value in self.proto.graph.output:
            dims = value.type.tensor_type.shape.dim
            if dims and dims[-1].HasField("dim_value"):
                return int(dims[-1].dim_value)
        return 0

    @property
    def final_softmax(self) -> str | None:
        """Output name of the Softmax that ends the graph (MATLAB exports end so), or None.

        Training and data-driven scoring cut the graph there, to work on logits: cross-entropy
        of log(probabilities) loses precision and gives wrong gradients once a value saturates.
        Flatten / Reshape / Identity / Squeeze after the Softmax are looked through.
        """
        producer = {output: node for node in self.proto.graph.node for output in node.output}
        node = producer.get(self.outputs[0]) if self.outputs else None
        while node is not None and node.op_type in ("Flatten", "Reshape", "Identity", "Squeeze"):
            node = producer.get(node.input[0])
        return node.output[0] if node is not None and node.op_type == "Softmax" else None

    def initializer(self, name: str) -> onnx.TensorProto:
        """The original initializer called `name`."""
        return self._initializers[name]

    def weight_array(self, layer: PrunableLayer) -> np.ndarray:
        """The layer's weight as a numpy array in ONNX layout."""
        return numpy_helper.to_array(self._initializers[layer.weight])

    def layer(self, name: str) -> PrunableLayer:
        """Look a layer up by node name or weight initializer name."""
        for layer in self.layers:
            if name in (layer.name, layer.weight):
                return layer
        valid = ", ".join(layer.name for layer in self.layers)
        raise ConfigError(f"no prunable layer called '{name}'; the layers are: {valid}")

    def layer_total(self, attribute: str) -> int:
        """Sum over prunable layers of `numel` or `macs`."""
        return sum(getattr(layer, attribute) for layer in self.layers)

    def layer_nonzero(self) -> int:
        """Nonzero weights over prunable layers (what pruning left)."""
        return sum(int(np.count_nonzero(self.weight_array(layer))) for layer in self.layers)

    def parameter_counts(self) -> tuple[int, int]:
        """(all floating-point initializer elements, of which zero)."""
        total = zeros = 0
        for tensor in self.proto.graph.initializer:
            if tensor.data_type in FLOAT_TYPES:
                array = numpy_helper.to_array(tensor)
                total += array.size
                zeros += int(array.size - np.count_nonzero(array))
        for sparse in self.proto.graph.sparse_initializer:
            if sparse.values.data_type in FLOAT_TYPES:
                total += int(np.prod(sparse.dims))
                zeros += int(np.prod(sparse.dims)) - int(np.count_nonzero(numpy_helper.to_array(sparse.values)))
        return total, zeros


FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)


def default_opset(proto: onnx.ModelProto) -> int:
    """The version of the default ("" or "ai.onnx") domain the model imports."""
    for opset in proto.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return opset.version
    raise ModelLoadError("the model imports no version of the default ONNX domain; is it an ONNX model?")


@stage("load")
def load(path: str | os.PathLike) -> Model:
    """Load an ONNX classifier and find its prunable layers.

    Args:
        path: an .onnx file.

    Returns:
        A `Model`; its proto is the file's content, untouched.

    Raises:
        ModelLoadError: the file is missing, unreadable, or not a valid ONNX model.
        ConversionError: never here; conversion happens in `onnxprune.workbench.convert.to_torch`.

    Example:
        >>> model = onnxprune.load("alexnet.onnx")  # doctest: +SKIP
        >>> [layer.name for layer in model.layers]  # doctest: +SKIP
    """
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a folder, not an .onnx file")
    proto, external = _read_proto(path)
    model = from_proto(proto, path=path)
    model.external_data = external
    _check_finite_weights(model, path)
    return model


def _check_finite_weights(model: Model, path: Path) -> None:
    """Refuse weights holding NaN or infinity: nothing can be ranked, trained or verified against them."""
    for layer in model.layers:
        weight = model.weight_array(layer)
        if weight.dtype.kind == "f" and not np.isfinite(weight).all():
            raise ModelLoadError(
                f"{path}: weight '{layer.weight}' of layer '{layer.name}' holds NaN or infinite values; "
                "the model is broken (check the training that produced it)"
            )


def _read_proto(path: Path) -> tuple[onnx.ModelProto, bool]:
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, onnx raises several others
        raise ModelLoadError(
            f"{path}: not a readable ONNX file ({type(exc).__name__}); is it truncated or another format?"
        ) from None
    external = _load_external_data(proto, path)
    if not proto.graph.node:
        raise ModelLoadError(f"{path}: contains no ONNX graph (no nodes); is it truncated or another format?")
    try:
        onnx.checker.check_model(weightless_copy(proto, stand_ins_as_inputs=True))
        _check_initializer_sizes(proto)
    except onnx.checker.ValidationError as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise ModelLoadError(f"{path}: not a valid ONNX model: {first_line}") from None
    except UnicodeDecodeError:  # protobuf parses string fields lazily: a corrupted name surfaces here
        raise ModelLoadError(f"{path}: not a valid ONNX model: a name or text is not UTF-8 (corrupted?)") from None
    if not _names_are_text(proto.graph):  # or comes back as bytes
        raise ModelLoadError(f"{path}: not a valid ONNX model: a name or text is not UTF-8 (corrupted?)")
    return proto, external


def _names_are_text(graph: onnx.GraphProto) -> bool:
    """Whether every name of the graph decoded as text (protobuf returns undecodable ones as bytes)."""
    names = [graph.name]
    for node in graph.node:
        names += [node.name, node.op_type, node.domain, *node.input, *node.output]
        names += [item.name for item in node.attribute]
    for group in (graph.initializer, graph.input, graph.output, graph.value_info):
        names += [item.name for item in group]
    return all(isinstance(name, str) for name in names)


def _external_locations(proto: onnx.ModelProto) -> list[str]:
    """The data files (relative to the model) its initializers' bytes live in, sorted."""
    return sorted(
        {
            entry.value
            for tensor in proto.graph.initializer
            if tensor.data_location == onnx.TensorProto.EXTERNAL
            for entry in tensor.external_data
            if entry.key == "location"
        }
    )


def _load_external_data(proto: onnx.ModelProto, path: Path) -> bool:
    """Read the weights torch's exporter (and others) keep in a data file beside the model.

    Returns:
        True when there was external data (outputs then keep that form, see `Model.external_data`).
    """
    locations = _external_locations(proto)
    if not locations:
        return False
    for location in locations:
        data_path = path.parent / location
        if not data_path.is_file():
            raise ModelLoadError(
                f"{path}: its weights live in '{location}', which is not beside it ({data_path}); "
                "keep the .onnx and its data file in the same folder"
            )
    try:
        load_external_data_for_model(proto, str(path.parent))
    except Exception as exc:
        raise ModelLoadError(
            f"{path}: cannot read its external weights ({', '.join(locations)}): {str(exc).strip()[:200]}"
        ) from None
    return True


QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger"}


def is_quantized(proto: onnx.ModelProto) -> bool:
    """True when the graph holds quantization ops (it came out of onnxruntime.quantization)."""
    return any(node.op_type in QUANTIZED_OPS for node in proto.graph.node)


def with_symbolic_batch(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose input and output batch dimension is symbolic (fixed-batch MATLAB exports)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    initializers = {tensor.name for tensor in copy.graph.initializer}
    for value in list(copy.graph.input) + list(copy.graph.output):
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
    del copy.graph.value_info[:]  # intermediate shapes recorded with batch 1 would contradict
    return copy


def model_file_size(path: str | os.PathLike) -> int:
    """Bytes of an .onnx file plus the external data files it points at."""
    path = Path(path)
    size = path.stat().st_size
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except Exception:
        return size
    files = [path.parent / location for location in _external_locations(proto)]
    return size + sum(file.stat().st_size for file in files if file.is_file())


def identity_aliases(proto: onnx.ModelProto) -> dict[str, str]:
    """`Identity` outputs that are initializers under another name -> the initializer's name.

    The TorchScript exporter stores identical tensors once and feeds the other users through
    Identity nodes; onnxprune treats such an output as the tensor it copies.
    """
    initializers = {tensor.name for tensor in proto.graph.initializer}
    outputs = {value.name for value in proto.graph.output}
    return {
        node.output[0]: node.input[0]
        for node in proto.graph.node
        if node.op_type == "Identity" and node.input and node.input[0] in initializers and node.output[0] not in outputs
    }


def _check_initializer_sizes(proto: onnx.ModelProto) -> None:
    """What the checker would have found in the weights the skeleton lacks: data of the wrong size."""
    for tensor in proto.graph.initializer:
        if tensor.raw_data:
            expected = int(np.prod(tensor.dims)) * helper_itemsize(tensor.data_type)
            if expected and len(tensor.raw_data) != expected:
                raise onnx.checker.ValidationError(
                    f"initializer '{tensor.name}' holds {len(tensor.raw_data)} bytes for shape {list(tensor.dims)}"
                )


def helper_itemsize(data_type: int) -> int:
    """Bytes per element of an ONNX tensor type (0 when not fixed-size)."""
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        return 0


def from_proto(proto: onnx.ModelProto, path: Path | None = None) -> Model:
    """Build a `Model` from an in-memory proto (the proto is kept, not copied)."""
    default_opset(proto)
    initializers = {tensor.name: tensor for tensor in proto.graph.initializer}
    # a tensor the exporter stored once and feeds to other users through Identity is, to each
    # user, an initializer of its own (written back untied if its value ever differs)
    initializers.update({alias: initializers[source] for alias, source in identity_aliases(proto).items()})
    model_input = _describe_input(proto, initializers)
    layers = _find_prunable_layers(proto, initializers)
    return Model(
        proto=proto,
        path=path,
        layers=layers,
        input=model_input,
        outputs=[output.name for output in proto.graph.output],
        _initializers=initializers,
    )


def _describe_input(proto: onnx.ModelProto, initializers: dict) -> InputSpec:
    real_inputs = [value for value in proto.graph.input if value.name not in initializers]
    if not real_inputs:
        raise ModelLoadError("the graph has no input besides its initializers; nothing to feed it")
    value = real_inputs[0]
    tensor_type = value.type.tensor_type
    shape = tuple(
        dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or "?") for dim in tensor_type.shape.dim
    )
    return InputSpec(
        name=value.name,
        shape=shape,
        layout=_guess_layout(shape),
        elem_type=onnx.TensorProto.DataType.Name(tensor_type.elem_type),
    )


def _guess_layout(shape: tuple) -> str:
    if len(shape) == 2:
        return "flat"
    if len(shape) == 4:
        channels_first, channels_last = shape[1], shape[3]
        if channels_first in (1, 3) and channels_last not in (1, 3):
            return "NCHW"
        if channels_last in (1, 3) and channels_first not in (1, 3):
            return "NHWC"
        if channels_first == 1 and channels_last == 1:
            return "NCHW"  # MATLAB's feature vectors: [1, 1, 1, 784] style
        return "NCHW"
    return "unknown"


def _find_prunable_layers(proto: onnx.ModelProto, initializers: dict[str, onnx.TensorProto]) -> list[PrunableLayer]:
    macs = _macs_per_node(proto)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    layers = []
    for index, node in enumerate(proto.graph.node):
        if node.op_type not in PRUNABLE_OPS or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        weight = initializers.get(node.input[1])
        if weight is None or weight.data_type not in FLOAT_TYPES:
            continue
        layer = _describe_layer(node, index, weight, initializers, macs, consumers)
        if layer is not None:
            layers.append(layer)
    return layers


def node_display_name(node: onnx.NodeProto, index: int) -> str:
    """The node's name, or "<op>_<index>" for unnamed nodes."""
    return node.name or f"{node.op_type}_{index}"


def _describe_layer(
    node: onnx.NodeProto,
    index: int,
    weight: onnx.TensorProto,
    initializers: dict[str, onnx.TensorProto],
    macs: dict[str, int],
    consumers: dict[str, list[onnx.NodeProto]],
) -> PrunableLayer | None:
    shape = tuple(int(d) for d in weight.dims)
    bias = node.input[2] if len(node.input) > 2 and node.input[2] in initializers else None
    if node.op_type == "MatMul" and len(shape) == 2:
        bias = _matmul_bias(node, shape[1], initializers, consumers)
    if node.op_type == "Conv":
        out_axis, in_axis = 0, 1
    elif node.op_type == "Gemm":
        if len(shape) != 2:
            return None
        out_axis, in_axis = (0, 1) if attribute(node, "transB", 0) else (1, 0)
    else:  # MatMul: x @ W with W stored [in, out]
        if len(shape) != 2:
            return None
        out_axis, in_axis = 1, 0
    return PrunableLayer(
        name=node_display_name(node, index),
        op_type=node.op_type,
        weight=weight.name,
        shape=shape,
        out_axis=out_axis,
        in_axis=in_axis,
        bias=bias,
        output=node.output[0],
        groups=int(attribute(node, "group", 1)),
        macs=macs.get(node.output[0], 0),
    )


def _matmul_bias(
    node: onnx.NodeProto,
    width: int,
    initializers: dict[str, onnx.TensorProto],
    consumers: dict[str, list[onnx.NodeProto]],
) -> str | None:
    """The bias of a MatMul layer: a 1-D initializer of its width in the single Add that follows it."""
    following = consumers.get(node.output[0], [])
    if len(following) != 1 or following[0].op_type != "Add":
        return None
    for name in following[0].input:
        tensor = initializers.get(name)
        if tensor is not None and [int(d) for d in tensor.dims] == [width]:
            return name
    return None


def _macs_per_node(proto: onnx.ModelProto) -> dict[str, int]:
    """Multiply-accumulates per sample of each Conv/Gemm/MatMul, keyed by the node's output name."""
    shapes = inferred_shapes(proto)  # best effort: MACs become 0 where inference fails
    initializers = {tensor.name: tuple(tensor.dims) for tensor in proto.graph.initializer}
    macs = {}
    for node in proto.graph.node:
        if node.op_type not in PRUNABLE_OPS or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        weight_shape = initializers[node.input[1]]
        output_shape = shapes.get(node.output[0])
        if not output_shape or not weight_shape:
            continue
        per_sample_outputs = int(np.prod([d if d > 0 else 1 for d in output_shape[1:]]))
        if node.op_type == "Conv":
            # each output element is a dot product over (C_in / groups) x kH x kW
            macs[node.output[0]] = per_sample_outputs * int(np.prod(weight_shape[1:]))
        else:
            reduction = weight_shape[0] if node.op_type == "MatMul" else _gemm_reduction(node, weight_shape)
            macs[node.output[0]] = per_sample_outputs * int(reduction)
    return macs


def _gemm_reduction(node: onnx.NodeProto, weight_shape: tuple[int, ...]) -> int:
    return weight_shape[1] if attribute(node, "transB", 0) else weight_shape[0]


@stage("conversion to torch")
def conversion_copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A skeleton copy of `proto` that onnx2torch can convert: opset >= 13, sanitised.

    Initializers over 64 KB are shape-only stand-ins (see `is_stand_in`); their values stay in the
    original. The original is never modified. Besides `onnxprune.graph.sanitise.sanitise` (newer op
    revisions, Identity of initializers, auto_pad, asymmetric pooling pads):
    - `Reshape(allowzero=1)` (torch.onnx's dynamo exporter writes it) becomes allowzero=0, which
      onnx2torch supports; the two differ only for a 0 in the target shape, which a classifier's
      shapes (computed from real, non-empty tensors) never contain.
    - initializers listed among the graph inputs (IR < 4 habit) are removed from the inputs.
    - every tensor's shape as onnxruntime measures it, and values computed from weights and shapes
      alone folded into initializers (`onnxprune.graph.measured`).
    """
    from onnxprune.graph.measured import fold_static, measure, record_shapes
    from onnxprune.graph.sanitise import sanitise

    # Work on a skeleton: large initializers are shape-only stand-ins (`is_stand_in`). The version
    # converter and shape inference serialise the whole model, which would copy every weight
    # twice; `onnxprune.workbench.convert` feeds the real values to onnx2torch from the original instead.
    copy = weightless_copy(proto)
    initializer_names = {tensor.name for tensor in copy.graph.initializer}
    kept_inputs = [value for value in copy.graph.input if value.name not in initializer_names]
    del copy.graph.input[:]
    copy.graph.input.extend(kept_inputs)
    if copy.ir_version < 4:
        copy.ir_version = 4
    measured = measure(proto)
    fold_static(copy, measured)
    record_shapes(copy, measured)
    if default_opset(copy) < CONVERSION_OPSET:
        copy = _upgrade_opset(copy)
    for node in copy.graph.node:
        if node.op_type == "Reshape" and attribute(node, "allowzero") is not None:
            set_attribute(node, "allowzero", 0)
    sanitise(copy)
    return copy


def _upgrade_opset(proto: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return version_converter.convert_version(proto, CONVERSION_OPSET)
    except Exception as exc:
        from onnxprune.errors import ConversionError

        raise ConversionError(
            f"cannot upgrade the graph from opset {default_opset(proto)} to {CONVERSION_OPSET} for onnx2torch: "
            f"{str(exc).strip().splitlines()[0]}"
        ) from None


def check_output_path(model: Model, output: str | os.PathLike) -> Path:
    """Refuse an output path that would overwrite the input or land in a missing folder."""
    output = Path(output)
    if model.path is not None and output.exists() and output.resolve() == model.path.resolve():
        raise ConfigError(f"output {output} is the input file; choose another path with -o")
    if not output.parent.exists():
        raise ConfigError(f"output folder {output.parent} does not exist; create it or choose another -o")
    if output.is_dir():
        raise ConfigError(f"output {output} is a folder; give a file name ending in .onnx")
    return output
