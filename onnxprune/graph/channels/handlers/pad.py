"""Pad: padding other axes keeps the channels; padding the channel axis adds constant channels.

The added channels get ids of their own, never removable (the LRN rewrite of compaction pads one
in, and a later compaction must follow it). Pads computed from the input's size at run time
(TensorFlow's SAME padding) are evaluated; exact.py checks they stay the same after compaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from onnxprune.graph.channels.bounds import RunTimeBounds
from onnxprune.graph.channels.groups import Tracked
from onnxprune.graph.channels.handlers.base import Handler, register
from onnxprune.graph.proto import attribute

if TYPE_CHECKING:
    import onnx

    from onnxprune.graph.channels.handlers.base import TraceContext


@register
class Pad(Handler):
    """Constant, reflect or edge padding."""

    ops = ("Pad",)

    def trace(self, ctx: TraceContext, node: onnx.NodeProto, inputs: list[Tracked | None], where: str) -> bool:
        """Keep the channels, or add constant ones where the channel axis is padded."""
        source = inputs[0]
        if source is None:
            return False
        structure = ctx.structure
        rank = ctx.shapes.rank(node.input[0], source.rank)
        pads = channel_pads(node, ctx.constants, source.axis, rank)
        if pads is None and len(node.input) > 1:  # TensorFlow's SAME: pads computed from the input's size
            bounds = RunTimeBounds.of(node, ctx.shapes, tuple(node.input[1:4]))
            if bounds is not None:
                values = dict(zip(node.input[1:4], bounds.evaluate(), strict=True))
                pads = channel_pads(
                    node, {**ctx.constants, **{k: v for k, v in values.items() if k}}, source.axis, rank
                )
                structure.computed[node.output[0]] = bounds  # exact.py: the same pads after compaction
        mode = attribute(node, "mode", b"constant")
        if pads == (0, 0):
            structure.tracked[node.output[0]] = source
            return True
        if pads is None or min(pads) < 0 or mode not in (b"constant", "constant"):
            structure.block([source], f"{where} pads the channel axis")
            return True
        added = structure.constant_ids(f"{node.name or node.output[0]} (padding)", sum(pads), f"{where} pads it in")
        ids = np.concatenate([added[: pads[0]], source.ids, added[pads[0] :]]).astype(np.int64)
        structure.tracked[node.output[0]] = Tracked(source.axis, ids, source.rank)
        return True


def channel_pads(node: onnx.NodeProto, constants: dict, axis: int, rank: int) -> tuple[int, int] | None:
    """(before, after) a Pad adds on the channel axis; None when computed at run time."""
    pads = attribute(node, "pads")
    axes = None
    if pads is None and len(node.input) > 1:
        value = constants.get(node.input[1])
        pads = None if value is None else [int(v) for v in np.ravel(value)]
        if len(node.input) > 3 and node.input[3]:  # opset 18: pads of the listed axes only
            value = constants.get(node.input[3])
            axes = None if value is None else [int(a) % rank for a in np.ravel(value)]
            if axes is None:
                return None
    if pads is None:
        return None
    axes = axes if axes is not None else list(range(len(pads) // 2))
    if axis not in axes:
        return 0, 0
    k = axes.index(axis)
    return pads[k], pads[k + len(axes)]
