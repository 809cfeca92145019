"""Ops that keep every channel where it is: activations, pooling, per-channel normalisation, casts.

Channel c of the output is computed from channel c of the input alone. BatchNormalization,
InstanceNormalization and PRelu hold per-channel parameters, cut with the channels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxprune.graph.channels.handlers.base import Handler, register

if TYPE_CHECKING:
    import onnx

    from onnxprune.graph.channels.groups import Tracked
    from onnxprune.graph.channels.handlers.base import PatchContext, TraceContext

# ops whose per-channel parameters (inputs 1...) are sliced with the channels
PER_CHANNEL_PARAMETERS = ("BatchNormalization", "InstanceNormalization", "PRelu")


@register
class PassThrough(Handler):
    """Output channel c is input channel c, transformed on its own."""

    ops = (
        "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Elu", "Selu", "Celu", "HardSigmoid", "HardSwish", "Softplus",
        "Softsign", "ThresholdedRelu", "Clip", "Dropout", "Identity", "MaxPool", "AveragePool", "LpPool",
        "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "BatchNormalization", "InstanceNormalization", "Cast",
        "Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Erf", "Mish", "Gelu", "PRelu", "Floor", "Ceil", "Round",
        "Sign", "Sin", "Cos",
    )  # fmt: skip
    follows_shuffles = frozenset({"Identity"})

    def trace(self, ctx: TraceContext, node: onnx.NodeProto, inputs: list[Tracked | None], where: str) -> bool:
        """The output carries the input's channels, when the tracked input is the data input."""
        if inputs[0] is None or any(t is not None for t in inputs[1:]):
            return False
        for output in node.output[:1]:
            ctx.structure.tracked[output] = inputs[0]
        return True

    def patch(self, ctx: PatchContext, node: onnx.NodeProto, index: int) -> None:
        """Slice per-channel parameters (BatchNorm scale, shift, mean, variance; PRelu slopes)."""
        if node.op_type not in PER_CHANNEL_PARAMETERS or not node.output or not ctx.changed(node.output[0]):
            return
        keep = ctx.keep_of[node.output[0]]
        for position in range(1, len(node.input)):
            array = ctx.store.get(node.input[position])
            if array is not None and array.ndim >= 1 and array.shape[0] == keep.size:
                ctx.store.put(node, position, array[keep])
