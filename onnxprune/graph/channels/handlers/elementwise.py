"""Binary and n-ary element-wise ops: a residual Add, a squeeze-and-excitation gate, a constant scale.

Channel c of every tracked input meets channel c of the others, so their ids are joined (one unit).
An operand that is a constant, or that broadcasts over the channel axis, leaves the channels
alone; a computed operand of full channel size cannot be followed (its channels are unknown).
Per-channel constants (a bias, a layer scale) are cut with the channels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from onnxprune.graph.channels.handlers.base import Handler, register

if TYPE_CHECKING:
    import onnx

    from onnxprune.graph.channels.groups import Tracked
    from onnxprune.graph.channels.handlers.base import PatchContext, TraceContext


@register
class Elementwise(Handler):
    """Add, Sub, Mul, Div, Max, Min, Sum, Mean, Pow, Where's arithmetic cousins."""

    ops = ("Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "Pow")

    def trace(self, ctx: TraceContext, node: onnx.NodeProto, inputs: list[Tracked | None], where: str) -> bool:
        """Join the tracked inputs' ids position by position."""
        join(ctx, node, inputs, where)
        return True

    def patch(self, ctx: PatchContext, node: onnx.NodeProto, index: int) -> None:
        """Cut constant operands that hold one value per channel."""
        if not node.output or not ctx.changed(node.output[0]):
            return
        keep, tracked = ctx.keep_of[node.output[0]], ctx.structure.tracked[node.output[0]]
        for position, name in enumerate(node.input):
            array = ctx.store.get(name)
            if name in ctx.structure.tracked or array is None or not array.ndim:
                continue
            axis = array.ndim - (tracked.rank - tracked.axis)  # numpy broadcasting aligns trailing axes
            if 0 <= axis < array.ndim and array.shape[axis] == keep.size:
                ctx.store.put(node, position, np.compress(keep, array, axis=axis))


def join(
    ctx: TraceContext, node: onnx.NodeProto, inputs: list[Tracked | None], where: str,
    constant_operands: bool = True,
) -> None:  # fmt: skip
    """Join the ids of the tracked inputs (or block them where an operand cannot be followed).

    With `constant_operands` False (a Concat along another axis), untracked operands are treated
    as computed tensors whatever they are.
    """
    structure, shapes = ctx.structure, ctx.shapes
    present = [t for t in inputs if t is not None]
    first = present[0]
    for other, name in zip(inputs, node.input, strict=True):
        if other is None:
            size = size_along(shapes.get(name), first.axis, shapes.get(node.output[0]))
            constant = constant_operands and (name in ctx.initializers or name in ctx.constants)
            if not constant and size not in (1, None):
                structure.block(present, f"{where} combines channels with a computed tensor")
                return
            continue
        if other.ids.size != first.ids.size:
            structure.block(present, f"{where} combines tensors of different channel counts")
            return
        # a residual Add, or a squeeze-and-excitation gate: channel c of one input meets channel c of the other
        structure.union_all(first, other)
    structure.tracked[node.output[0]] = first


def size_along(shape: tuple[int, ...] | None, axis: int, output_shape: tuple[int, ...] | None) -> int | None:
    """Size of a broadcast operand along the output's `axis` (None when unknown)."""
    if not shape or not output_shape:
        return None
    offset = len(output_shape) - len(shape)
    position = axis - offset
    return 1 if position < 0 else shape[position]
