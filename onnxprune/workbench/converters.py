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
    from collections.abc import Callable

# marks a registry entry already wrapped (onnx2torch is imported once per process, wrapped once)
WRAPPED = "onnxprune_fallback"


class DynamicClip(nn.Module):
    """Clip with bounds that are tensors computed by the graph (either may be absent)."""

    def __init__(self, has_min: bool, has_max: bool):
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


def _clip(node, graph, original):
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

    names = list(node.input_values) + [""] * (3 - len(node.input_values))
    present = [name for name in names if name]
    return OperationConverterResult(
        torch_module=DynamicClip(bool(names[1]), bool(names[2])),
        onnx_mapping=OnnxMapping(inputs=tuple(present), outputs=node.output_values),
    )


def _batch_norm(node, graph, original):
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


def _pool(node, graph, original):
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


def _cumsum_direction(node, result):
    """The direction ONNX's defaults mean (`reverse` and `exclusive` default to 0)."""
    result.torch_module.reverse = bool(node.attributes.get("reverse", 0))
    result.torch_module.exclusive = bool(node.attributes.get("exclusive", 0))
    return result


CORRECTIONS: dict[str, Callable] = {"CumSum": _cumsum_direction}


def install() -> None:
    """Put each fallback behind, and each correction after, onnx2torch's converters of its op (every revision)."""
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY

    for description, original in list(_CONVERTER_REGISTRY.items()):
        op = description.operation_type
        if description.domain not in ("", "ai.onnx") or getattr(original, WRAPPED, False):
            continue
        if op in FALLBACKS or op in CORRECTIONS:
            _CONVERTER_REGISTRY[description] = _wrapped(original, FALLBACKS.get(op), CORRECTIONS.get(op))


def _wrapped(original, fallback, correction):
    def converter(node, graph):
        try:
            result = original(node, graph)
        except NotImplementedError:
            if fallback is None:
                raise
            return fallback(node, graph, original)
        return correction(node, result) if correction is not None else result

    setattr(converter, WRAPPED, True)
    return converter
