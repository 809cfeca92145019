"""Concat: along the channel axis the inputs' ids are laid end to end; along another axis they meet.

A Concat of tracked tensors along another axis joins their channels as an element-wise op does.
A class token joined before the patch sequence (ViT) would need its channels cut too: those
channels are kept by design, so that the rest of the model stays removable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from onnxprune.graph.channels.groups import Tracked
from onnxprune.graph.channels.handlers.base import Handler, register
from onnxprune.graph.channels.handlers.elementwise import join
from onnxprune.graph.proto import attribute

if TYPE_CHECKING:
    import onnx

    from onnxprune.graph.channels.handlers.base import TraceContext


@register
class Concat(Handler):
    """Concat of tensors that carry channels."""

    ops = ("Concat",)

    def trace(self, ctx: TraceContext, node: onnx.NodeProto, inputs: list[Tracked | None], where: str) -> bool:
        """Lay the ids end to end along the channel axis, or join them along another."""
        structure = ctx.structure
        rank = len(ctx.shapes.get(node.output[0]) or ()) or 4
        axis = attribute(node, "axis", 1) % rank
        present = [t for t in inputs if t is not None]
        if present[0].axis != axis:
            if any(t is None for t in inputs):
                structure.block(present, f"{where} joins another tensor along a non-channel axis", protected=True)
                structure.tracked[node.output[0]] = Tracked(present[0].axis, present[0].ids, rank)
                return True
            join(ctx, node, inputs, where, constant_operands=False)
            return True
        if any(t is None for t in inputs):
            structure.block(present, f"{where} concatenates channels onnxprune does not track")
            return True
        structure.tracked[node.output[0]] = Tracked(axis, np.concatenate([t.ids for t in inputs]), rank)
        return True
