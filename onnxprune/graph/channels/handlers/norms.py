"""Normalisations over several channels, and ops that read only a tensor's shape.

Softmax, LogSoftmax, Hardmax and ArgMax/ArgMin over channels, GroupNormalization, and a
LayerNormalization whose normalised axes include the channel axis read every channel to compute
each one: removing a channel changes the others, so their channels are kept by design. A
LayerNormalization over trailing axes after the channel axis, or a Softmax over another axis
(attention's scores), lets them pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxprune.graph.channels.handlers.base import Handler, register
from onnxprune.graph.proto import attribute

if TYPE_CHECKING:
    import onnx

    from onnxprune.graph.channels.groups import Tracked
    from onnxprune.graph.channels.handlers.base import TraceContext


SOFTMAX = ("Softmax", "LogSoftmax", "Hardmax")


def _softmax_across(ctx: TraceContext, node: onnx.NodeProto, source: Tracked) -> bool:
    """Whether a Softmax normalises over the channel axis.

    From revision 13 it normalises one axis (default -1); before, every axis from `axis`
    (default 1) on, flattened.
    """
    rank = ctx.shapes.rank(node.input[0], source.rank)
    if ctx.model.opset >= 13:
        return attribute(node, "axis", -1) % rank == source.axis
    return source.axis >= attribute(node, "axis", 1) % rank


@register
class CrossChannel(Handler):
    """Ops that normalise or choose across the channel axis."""

    ops = ("Softmax", "LogSoftmax", "Hardmax", "ArgMax", "ArgMin", "GroupNormalization", "LayerNormalization")

    def trace(self, ctx: TraceContext, node: onnx.NodeProto, inputs: list[Tracked | None], where: str) -> bool:
        """Protect channels normalised together; pass channels a LayerNormalization does not normalise over."""
        source = inputs[0]
        if source is None:
            return False
        if node.op_type == "LayerNormalization" and source.axis < attribute(node, "axis", -1) % source.rank:
            ctx.structure.tracked[node.output[0]] = source  # over axes after the channel axis
            return True
        if node.op_type in SOFTMAX and not _softmax_across(ctx, node, source):
            ctx.structure.tracked[node.output[0]] = source
            return True
        ctx.structure.block([t for t in inputs if t is not None], f"{where} normalises across channels", protected=True)
        ctx.structure.tracked[node.output[0]] = source
        return True


@register
class ShapeOnly(Handler):
    """Shape and Size: what they compute follows the compacted shape at run time."""

    ops = ("Shape", "Size")

    def trace(self, ctx: TraceContext, node: onnx.NodeProto, inputs: list[Tracked | None], where: str) -> bool:
        """Nothing to carry."""
        return True
