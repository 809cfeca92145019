"""LRN: each output channel is normalised by a window of neighbouring channels.

Removing a channel changes its neighbours' windows, so compaction keeps the LRN over the original
channel positions: the compacted input is put back at those positions, each removed channel as
the constant it carried (what the masked model computed with), the LRN runs unchanged, and a
Gather keeps the kept channels. A removed channel whose value varies cannot be put back that way
and is refused by the exactness checks (`exact.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from onnx import helper

from onnxprune.graph.channels.handlers.base import Handler, register

if TYPE_CHECKING:
    import onnx

    from onnxprune.graph.channels.groups import Tracked
    from onnxprune.graph.channels.handlers.base import PatchContext, TraceContext


@register
class LRN(Handler):
    """Local response normalisation across channels."""

    ops = ("LRN",)
    reads_neighbours = True

    def trace(self, ctx: TraceContext, node: onnx.NodeProto, inputs: list[Tracked | None], where: str) -> bool:
        """Channels pass; the node is inexact unless compaction rewrites it."""
        if inputs[0] is None:
            return False
        ctx.structure.inexact[node.name or node.output[0]] = "LRN mixes neighbouring channels"
        ctx.structure.tracked[node.output[0]] = inputs[0]
        return True

    def patch(self, ctx: PatchContext, node: onnx.NodeProto, index: int) -> None:
        """Run the LRN over the original channel positions (see the module docstring)."""
        if not ctx.changed(node.input[0]):
            return
        before, after = _over_kept(ctx, node)
        ctx.before.setdefault(index, []).extend(before)
        ctx.after.setdefault(index, []).extend(after)
        ctx.renamed.update(n.output[0] for n in before + after)
        ctx.rewritten[node.name or node.output[0]] = (
            "the LRN runs over the original channel positions, the removed channels put back as the "
            "constant they carry, so its window is unchanged"
        )


def _over_kept(ctx: PatchContext, node: onnx.NodeProto) -> tuple[list, list]:
    """(nodes before the LRN, nodes after it); the LRN's output name stays."""
    store, source = ctx.store, node.input[0]
    tracked, keep = ctx.structure.tracked[source], ctx.keep_of[source]
    rank, axis = tracked.rank, tracked.axis
    kept = int(keep.sum())
    base = node.name or node.output[0]
    pads = [0] * (2 * rank)
    pads[rank + axis] = 1  # one zero channel after the kept ones, at compacted position `kept`
    padded = store.unique(f"{base}_padded")
    if ctx.opset >= 11:
        pad = helper.make_node("Pad", [source, store.add(f"{base}_pads", np.array(pads, np.int64))], [padded])
    else:
        pad = helper.make_node("Pad", [source], [padded], pads=pads)
    pad.name = store.unique(f"{base}_pad")
    placement = np.where(keep, np.cumsum(keep) - 1, kept).astype(np.int64)
    placed = store.unique(f"{base}_placed")
    before = [
        pad,
        helper.make_node(
            "Gather", [padded, store.add(f"{base}_placement", placement)], [placed],
            name=store.unique(f"{base}_place"), axis=axis,
        ),
    ]  # fmt: skip
    carried = ctx.carried.get(source, np.zeros(keep.size))
    if np.any(carried[~keep] != 0):
        shape = [keep.size] + [1] * (rank - axis - 1)
        value = np.where(keep, 0.0, carried).astype(np.float32).reshape(shape)
        restored = store.unique(f"{base}_restored")
        before.append(
            helper.make_node(
                "Add", [placed, store.add(f"{base}_removed_constants", value)], [restored],
                name=store.unique(f"{base}_restore"),
            )
        )  # fmt: skip
        placed = restored
    output = node.output[0]
    node.input[0] = placed
    node.output[0] = store.unique(f"{output}_all_positions")
    after = [
        helper.make_node(
            "Gather", [node.output[0], store.add(f"{base}_kept", np.flatnonzero(keep).astype(np.int64))], [output],
            name=store.unique(f"{base}_keep"), axis=axis,
        )
    ]  # fmt: skip
    return before, after
