"""Gather of constant indices: along the channel axis it picks channel ids, elsewhere it keeps them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from onnxprune.graph.channels.groups import Tracked
from onnxprune.graph.channels.handlers.base import Handler, register
from onnxprune.graph.proto import attribute

if TYPE_CHECKING:
    import onnx

    from onnxprune.graph.channels.handlers.base import PatchContext, TraceContext


@register
class Gather(Handler):
    """Gather whose data input carries channels and whose indices are constant."""

    ops = ("Gather",)

    def trace(self, ctx: TraceContext, node: onnx.NodeProto, inputs: list[Tracked | None], where: str) -> bool:
        """The picked ids along the channel axis; the same ids (axis shifted) along another."""
        source, structure = inputs[0], ctx.structure
        if source is None or inputs[1:] != [None]:
            return False
        rank = ctx.shapes.rank(node.input[0], source.rank)
        axis = attribute(node, "axis", 0) % rank
        indices = ctx.constants.get(node.input[1])
        if indices is None and node.input[1] in ctx.shapes.model_initializers:
            indices = ctx.shapes.model_initializers[node.input[1]]
        if indices is None or np.ndim(indices) > 1:
            structure.block([source], f"{where} gathers at indices onnxprune cannot read")
            return True
        if axis != source.axis:
            shift = 1 if np.ndim(indices) == 0 and axis < source.axis else 0
            structure.tracked[node.output[0]] = Tracked(source.axis - shift, source.ids, rank - (np.ndim(indices) == 0))
            return True
        if np.ndim(indices) == 0:
            structure.block([source], f"{where} takes a single channel")
            return True
        positions = np.asarray(indices, np.int64) % source.ids.size
        structure.tracked[node.output[0]] = Tracked(axis, source.ids[positions], source.rank)
        structure.picks[node.output[0]] = positions
        return True

    def patch(self, ctx: PatchContext, node: onnx.NodeProto, index: int) -> None:
        """Indices of a channel Gather: the kept channels it takes, at their compacted positions."""
        output = node.output[0]
        if output not in ctx.structure.picks or not ctx.changed(node.input[0]):
            return
        keep_in = ctx.keep_of[node.input[0]]
        positions = ctx.structure.picks[output]
        compacted = np.cumsum(keep_in) - 1
        indices = ctx.store.get(node.input[1])
        ctx.store.put(node, 1, compacted[positions[keep_in[positions]]].astype(indices.dtype))
