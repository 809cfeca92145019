"""onnx2torch converters for what its own refuse or get wrong, installed in its registry.

One correction, applied to what onnx2torch's converter returns:

- `CumSum` without a `reverse` attribute: onnx2torch 1.5.15 reads its default as 1 (ONNX's is 0),
  so a plain cumulative sum ran backwards (EdgeNeXt's positional encoding, 2e-2 off).

Where onnx2torch raises `NotImplementedError` for a node, the fallback here converts it:

- `Clip` whose bounds are computed tensors ("Dynamic value of min/max is not implemented"):
  `torch.clamp` with tensor bounds;
- `BatchNormalization` on a tensor whose rank the graph does not record ("spatial rank == -2"):
  a BatchNorm module that accepts any rank (still a torch `_BatchNorm`, so masks, fine-tuning
  and write-back treat it as any other);
- `AveragePool` / `MaxPool` on such a tensor: the rank read from the kernel shape instead.

Ops onnx2torch has no converter for at all, registered through its `add_converter`:

- `LSTM` and `GRU` (Sequencer's bidirectional LSTMs over image rows and columns): torch's
  `nn.LSTM` / `nn.GRU` with ONNX's gate order (i, o, f, c and z, r, h) rearranged into torch's
  (i, f, c, o and r, z, h), and ONNX's output layouts. What torch cannot express is refused in
  onnx2torch's words ("... is not implemented"): peepholes, clipping, other activations,
  per-sample sequence lengths, a GRU that resets before its linear transform, the batch-first
  layout (onnxruntime refuses it too);
- `Col2Im` (the dynamo exporter's `F.fold`, VOLO's outlook attention): `torch.nn.Fold`, for
  2-D images with constant sizes and symmetric pads.

Most graphs never reach them: the conversion copy records every tensor's shape measured in
onnxruntime and folds computed bounds (`onnxprune.graph.measured`); these cover what that cannot
measure (an input with symbolic image sizes, bounds computed from data).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from onnx import TensorProto, helper
from torch import nn

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from onnx2torch.onnx_graph import OnnxGraph
    from onnx2torch.onnx_node import OnnxNode
    from onnx2torch.utils.common import OperationConverterResult

    # onnx2torch's converter; a fallback also gets the converter that refused; a correction its result
    Converter = Callable[[OnnxNode, OnnxGraph], OperationConverterResult]
    Fallback = Callable[[OnnxNode, OnnxGraph, Converter], OperationConverterResult]
    Correction = Callable[[OnnxNode, OperationConverterResult], OperationConverterResult]

# marks a registry entry already wrapped (onnx2torch is imported once per process, wrapped once)
WRAPPED = "onnxprune_fallback"


class DynamicClip(nn.Module):
    """Clip with bounds that are tensors computed by the graph (either may be absent)."""

    def __init__(self, has_min: bool, has_max: bool) -> None:
        super().__init__()
        self.has_min, self.has_max = has_min, has_max

    def forward(self, data: torch.Tensor, *bounds: torch.Tensor) -> torch.Tensor:  # noqa: D102
        bounds = list(bounds)
        low = bounds.pop(0) if self.has_min else None
        high = bounds.pop(0) if self.has_max else None
        return torch.clamp(data, low, high)


class AnyRankBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over axis 1 of an input of any rank >= 2 (`F.batch_norm` takes any)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:  # noqa: A002 - torch's name
        if input.dim() < 2:
            raise ValueError(f"BatchNormalization needs an input of rank 2 or more, got {input.dim()}")


def _clip(node: OnnxNode, graph: OnnxGraph, original: Converter) -> OperationConverterResult:
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

    names = list(node.input_values) + [""] * (3 - len(node.input_values))
    present = [name for name in names if name]
    return OperationConverterResult(
        torch_module=DynamicClip(bool(names[1]), bool(names[2])),
        onnx_mapping=OnnxMapping(inputs=tuple(present), outputs=node.output_values),
    )


def _batch_norm(node: OnnxNode, graph: OnnxGraph, original: Converter) -> OperationConverterResult:
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

    parameters = node.input_values[1:5]
    if len(node.output_values) != 1 or not all(name in graph.initializers for name in parameters):
        raise NotImplementedError("BatchNormalization in training form on computed values is not implemented")
    scale, shift, mean, variance = (graph.initializers[name].to_torch() for name in parameters)
    attributes = node.attributes
    module = AnyRankBatchNorm(
        scale.numel(), eps=attributes.get("epsilon", 1e-5), momentum=1 - attributes.get("momentum", 0.9)
    )
    with torch.no_grad():
        module.weight.copy_(scale)
        module.bias.copy_(shift)
        module.running_mean.copy_(mean)
        module.running_var.copy_(variance)
    return OperationConverterResult(
        torch_module=module, onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values)
    )


def _pool(node: OnnxNode, graph: OnnxGraph, original: Converter) -> OperationConverterResult:
    """Convert again with the input's rank taken from the kernel shape."""
    kernel = node.attributes.get("kernel_shape")
    source = node.input_values[0]
    if not kernel:
        raise NotImplementedError(f"{node.operation_type} without kernel_shape on an input of unknown rank")
    known = graph.value_info.get(source)
    element = known.type.tensor_type.elem_type if known is not None else TensorProto.FLOAT
    graph.value_info[source] = helper.make_tensor_value_info(source, element, [None] * (len(kernel) + 2))
    try:
        return original(node, graph)
    finally:
        if known is None:
            del graph.value_info[source]
        else:
            graph.value_info[source] = known


FALLBACKS: dict[str, Callable] = {
    "Clip": _clip,
    "BatchNormalization": _batch_norm,
    "AveragePool": _pool,
    "MaxPool": _pool,
}


class OnnxRecurrent(nn.Module):
    """ONNX's LSTM / GRU (one layer, forward, reverse or bidirectional) as torch's module.

    Inputs: X [seq, batch, features], then the optional initial hidden (and cell) state
    [directions, batch, hidden]; outputs: Y [seq, directions, batch, hidden], Y_h (and Y_c), as
    many as the node names. (ONNX's batch-first layout=1 is not run by onnxruntime either.)
    """

    def __init__(self, recurrent: nn.RNNBase, reverse: bool, inputs: tuple[bool, ...], outputs: int) -> None:
        super().__init__()
        self.recurrent, self.reverse = recurrent, reverse
        self.has_initial, self.outputs = inputs, outputs

    def forward(self, data: torch.Tensor, *initial: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:  # noqa: D102
        if self.reverse:
            data = data.flip(0)
        states = list(initial)
        lstm = isinstance(self.recurrent, nn.LSTM)
        directions = 2 if self.recurrent.bidirectional else 1
        batch, hidden = data.shape[1], self.recurrent.hidden_size
        zeros = data.new_zeros(directions, batch, hidden)
        h0 = states.pop(0) if self.has_initial[0] else zeros
        if lstm:
            c0 = states.pop(0) if self.has_initial[1] else zeros
            sequence, (last, cell) = self.recurrent(data, (h0, c0))
        else:
            sequence, last = self.recurrent(data, h0)
        if self.reverse:
            sequence = sequence.flip(0)
        sequence = sequence.reshape(sequence.shape[0], batch, directions, hidden).permute(0, 2, 1, 3)
        results = ([sequence, last] + ([cell] if lstm else []))[: self.outputs]
        return results[0] if self.outputs == 1 else tuple(results)


# ONNX's gate blocks in torch's order: LSTM i o f c -> i f c o; GRU z r h -> r z h
GATE_ORDER = {"LSTM": (0, 2, 3, 1), "GRU": (1, 0, 2)}


def _recurrent(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

    op, attributes = node.operation_type, node.attributes
    names = list(node.input_values) + [""] * (8 - len(node.input_values))
    state_slots = (5, 6) if op == "LSTM" else (5,)
    refused = [
        (attributes.get("clip") is not None, "clip"),
        (attributes.get("input_forget", 0) != 0, "input_forget"),
        (attributes.get("layout", 0) != 0, "layout=1"),
        (bool(names[4]), "sequence_lens"),
        (op == "LSTM" and bool(names[7]), "peepholes"),
        (op == "GRU" and attributes.get("linear_before_reset", 0) != 1, "linear_before_reset=0"),
        (attributes.get("activations") is not None and _non_default(op, attributes["activations"]), "activations"),
        (not all(name in graph.initializers for name in names[1:4] if name), "computed weights"),
    ]
    for condition, what in refused:
        if condition:
            raise NotImplementedError(f"{op} with {what} is not implemented")
    weights = [graph.initializers[name].to_torch() for name in names[1:3]]
    hidden = int(attributes["hidden_size"]) if "hidden_size" in attributes else weights[1].shape[-1]
    direction = attributes.get("direction", "forward")
    directions = weights[0].shape[0]
    module_type = nn.LSTM if op == "LSTM" else nn.GRU
    recurrent = module_type(weights[0].shape[-1], hidden, bidirectional=direction == "bidirectional", bias=True)
    bias = graph.initializers[names[3]].to_torch() if names[3] else torch.zeros(directions, 2 * weights[0].shape[1])
    order = GATE_ORDER[op]

    def reorder(tensor: torch.Tensor) -> torch.Tensor:
        return torch.cat([tensor.reshape(len(order), hidden, *tensor.shape[1:])[i] for i in order])

    with torch.no_grad():
        for index in range(directions):
            suffix = "_reverse" if index == 1 else ""
            input_bias, hidden_bias = bias[index].chunk(2)
            for name, value in (("weight_ih", weights[0][index]), ("weight_hh", weights[1][index])):
                getattr(recurrent, f"{name}_l0{suffix}").copy_(reorder(value))
            getattr(recurrent, f"bias_ih_l0{suffix}").copy_(reorder(input_bias))
            getattr(recurrent, f"bias_hh_l0{suffix}").copy_(reorder(hidden_bias))
    present = tuple(bool(names[slot]) for slot in state_slots)
    outputs = node.output_values
    module = OnnxRecurrent(recurrent, direction == "reverse", present, len(outputs))
    inputs = (names[0], *(names[slot] for slot in state_slots if names[slot]))
    return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(inputs=inputs, outputs=outputs))


def _non_default(op: str, activations: Sequence[str | bytes]) -> bool:
    names = [a.decode() if isinstance(a, bytes) else a for a in activations]
    default = ["Sigmoid", "Tanh", "Tanh"] if op == "LSTM" else ["Sigmoid", "Tanh"]
    return [n.lower() for n in names] != [n.lower() for n in default * (len(names) // len(default))]


def _col2im(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value

    try:
        image, block = (tuple(int(v) for v in get_const_value(name, graph)) for name in node.input_values[1:3])
    except KeyError:
        raise NotImplementedError("Col2Im with computed image or block shapes is not implemented") from None
    pads = list(node.attributes.get("pads", [0] * 2 * len(image)))
    if len(image) != 2 or pads[:2] != pads[2:]:
        raise NotImplementedError("Col2Im other than 2-D with symmetric pads is not implemented")
    module = nn.Fold(
        image, block, dilation=tuple(node.attributes.get("dilations", (1, 1))), padding=tuple(pads[:2]),
        stride=tuple(node.attributes.get("strides", (1, 1))),
    )  # fmt: skip
    return OperationConverterResult(
        torch_module=module, onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values)
    )


# op -> (converter, the ONNX revisions it converts)
NEW_CONVERTERS: dict[str, tuple[Callable, tuple[int, ...]]] = {
    "LSTM": (_recurrent, (7, 14, 22)),
    "GRU": (_recurrent, (7, 14, 22)),
    "Col2Im": (_col2im, (18,)),
}


def _cumsum_direction(node: OnnxNode, result: OperationConverterResult) -> OperationConverterResult:
    """The direction ONNX's defaults mean (`reverse` and `exclusive` default to 0)."""
    result.torch_module.reverse = bool(node.attributes.get("reverse", 0))
    result.torch_module.exclusive = bool(node.attributes.get("exclusive", 0))
    return result


CORRECTIONS: dict[str, Callable] = {"CumSum": _cumsum_direction}


def install() -> None:
    """Install the converters of this module in onnx2torch's registry.

    Each fallback goes behind, and each correction after, onnx2torch's converters of its op (every
    revision); the converters of ops onnx2torch does not know are registered.
    """
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription, add_converter

    for op, (converter, revisions) in NEW_CONVERTERS.items():
        for version in revisions:
            if OperationDescription("", op, version) not in _CONVERTER_REGISTRY:
                add_converter(operation_type=op, version=version)(converter)

    for description, original in list(_CONVERTER_REGISTRY.items()):
        op = description.operation_type
        if description.domain not in ("", "ai.onnx") or getattr(original, WRAPPED, False):
            continue
        if op in FALLBACKS or op in CORRECTIONS:
            _CONVERTER_REGISTRY[description] = _wrapped(original, FALLBACKS.get(op), CORRECTIONS.get(op))


def _wrapped(original: Converter, fallback: Fallback | None, correction: Correction | None) -> Converter:
    def converter(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
        try:
            result = original(node, graph)
        except NotImplementedError:
            if fallback is None:
                raise
            return fallback(node, graph, original)
        return correction(node, result) if correction is not None else result

    setattr(converter, WRAPPED, True)
    return converter
