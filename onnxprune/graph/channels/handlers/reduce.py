"""Reductions: over other axes the channels remain; over the channel axis they are kept by design."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from onnxprune.graph.channels.groups import Tracked
from onnxprune.graph.channels.handlers.base import Handler, register
from onnxprune.graph.proto import attribute

if TYPE_CHECKING:
    import onnx

    from onnxprune.graph.channels.handlers.base import TraceContext


@register
class Reduce(Handler):
    """Reduce* with constant axes (attribute or input)."""

    ops = (
        "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
        "ReduceLogSumExp", "ReduceSumSquare",
    )  # fmt: skip

    def trace(self, ctx: TraceContext, node: onnx.NodeProto, inputs: list[Tracked | None], where: str) -> bool:
        """Move the channel axis past the reduced (dropped) axes, or protect channels reduced together."""
        source, structure = inputs[0], ctx.structure
        if source is None:
            return False
        rank = ctx.shapes.rank(node.input[0], source.rank)
        axes = attribute(node, "axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            value = ctx.constants.get(node.input[1])
            if value is None:
                structure.block([source], f"{where} reduces over axes computed at run time")
                return True
            axes = [int(v) for v in np.ravel(value)]
        if not axes:
            if attribute(node, "noop_with_empty_axes", 0):
                structure.tracked[node.output[0]] = source
                return True
            axes = list(range(rank))
        axes = sorted({a % rank for a in axes})
        if source.axis in axes:
            structure.block([source], f"{where} reduces across channels", protected=True)
            return True
        keepdims = attribute(node, "keepdims", 1)
        axis = source.axis if keepdims else source.axis - sum(a < source.axis for a in axes)
        structure.tracked[node.output[0]] = Tracked(axis, source.ids, rank if keepdims else rank - len(axes))
        return True
