"""Split and Slice: along the channel axis they cut the ids; along another axis they keep them.

Patching writes the kept channels' new split sizes and slice bounds. Bounds TorchScript computes
from `Shape` at run time (`torch.chunk`) follow the compacted size by themselves when every equal
piece loses equally (a block); `exact.py` checks they still fall between the same channels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from onnxprune.graph.channels.bounds import RunTimeBounds
from onnxprune.graph.channels.groups import Tracked
from onnxprune.graph.channels.handlers.base import Handler, register
from onnxprune.graph.proto import attribute, remove_attribute, set_attribute

if TYPE_CHECKING:
    import onnx

    from onnxprune.graph.channels.handlers.base import PatchContext, TraceContext


@register
class Split(Handler):
    """Split into pieces of constant sizes (or equal pieces)."""

    ops = ("Split",)

    def trace(self, ctx: TraceContext, node: onnx.NodeProto, inputs: list[Tracked | None], where: str) -> bool:
        """Each output takes its range of the channel ids."""
        source = inputs[0]
        if source is None:
            return False
        rank = ctx.shapes.rank(node.input[0], source.rank)
        axis = attribute(node, "axis", 0) % rank
        if axis != source.axis:
            for output in node.output:
                ctx.structure.tracked[output] = source
            return True
        sizes = split_sizes(node, source.ids.size, ctx.constants)
        if sizes is None or sum(sizes) != source.ids.size or len(sizes) != len(node.output):
            ctx.structure.block([source], f"{where} splits the channel axis at positions onnxprune cannot read")
            return True
        start = 0
        for output, size in zip(node.output, sizes, strict=True):
            ctx.structure.tracked[output] = Tracked(axis, source.ids[start : start + size], source.rank)
            ctx.structure.ranges[output] = (start, start + size)
            start += size
        return True

    def patch(self, ctx: PatchContext, node: onnx.NodeProto, index: int) -> None:
        """New split sizes: the channels each output keeps."""
        structure, store = ctx.structure, ctx.store
        if not node.output or not all(o in structure.ranges for o in node.output):
            return
        old = [structure.ranges[o][1] - structure.ranges[o][0] for o in node.output]
        new = [int(ctx.keep_of[o].sum()) for o in node.output]
        if old == new:
            return
        if attribute(node, "split") is not None:
            set_attribute(node, "split", new)
            return
        if len(node.input) > 1 and node.input[1]:
            store.put(node, 1, np.array(new, np.int64))
            return
        remove_attribute(node, "num_outputs")  # opset 18: equal parts no more; sizes replace the count
        if ctx.opset >= 13:
            while len(node.input) < 2:
                node.input.append("")
            node.input[1] = store.add(f"{node.name or node.output[0]}_split", np.array(new, np.int64))
        else:
            set_attribute(node, "split", new)


def split_sizes(node: onnx.NodeProto, size: int, constants: dict) -> list[int] | None:
    """The sizes a Split cuts `size` into (None when computed at run time or unreadable)."""
    sizes = attribute(node, "split")
    if sizes is None and len(node.input) > 1 and node.input[1]:
        value = constants.get(node.input[1])
        if value is None:
            return None  # computed at run time
        sizes = [int(v) for v in np.ravel(value)]
    if sizes is None:
        count = attribute(node, "num_outputs")
        if count is not None:  # opset 18: ceil(size / n) each, the last one smaller
            chunk = -(-size // count)
            sizes = [min(chunk, max(size - chunk * i, 0)) for i in range(count)]
        elif size % len(node.output) == 0:
            sizes = [size // len(node.output)] * len(node.output)
        else:
            return None
    return [int(s) for s in sizes]


@register
class Slice(Handler):
    """Slice with constant bounds, or bounds computed from shapes at run time."""

    ops = ("Slice",)

    def trace(self, ctx: TraceContext, node: onnx.NodeProto, inputs: list[Tracked | None], where: str) -> bool:
        """The output takes the channel ids between its bounds (step 1 only)."""
        source, structure = inputs[0], ctx.structure
        if source is None or any(t is not None for t in inputs[1:]):
            return False
        arguments = slice_arguments(node, ctx.constants)
        bounds = None
        if arguments is None:  # TorchScript's chunk: bounds computed from the tensor's Shape at run time
            bounds = RunTimeBounds.of(node, ctx.shapes)
            arguments = bounds.evaluate() if bounds is not None else None
        if arguments is None:
            structure.block([source], f"{where} slices at positions computed at run time")
            return True
        starts, ends, axes, steps = arguments
        rank = ctx.shapes.rank(node.input[0], source.rank)
        axes = [a % rank for a in (axes if axes is not None else range(len(starts)))]
        if source.axis not in axes:
            structure.tracked[node.output[0]] = source
            return True
        k = axes.index(source.axis)
        if steps is not None and steps[k] != 1:
            structure.block([source], f"{where} slices the channel axis with step {steps[k]}")
            return True
        size = source.ids.size
        start, end = (min(max(v + size if v < 0 else v, 0), size) for v in (starts[k], ends[k]))
        end = max(end, start)
        structure.tracked[node.output[0]] = Tracked(source.axis, source.ids[start:end], source.rank)
        structure.ranges[node.output[0]] = (start, end)
        if bounds is not None:
            piece = end - start
            if not 0 < piece < size or size % piece or start % piece:
                structure.block([source], f"{where} slices at positions computed at run time")
                return True
            # bounds that follow the size at run time stay right when every equal piece loses equally
            structure.blocks.append(np.array_split(source.ids, size // piece))
            bounds.index, bounds.axis = k, source.axis
            structure.dynamic[node.output[0]] = bounds
        return True

    def patch(self, ctx: PatchContext, node: onnx.NodeProto, index: int) -> None:
        """New start and end on the channel axis: the kept channels before them."""
        structure, store = ctx.structure, ctx.store
        output = node.output[0]
        if output not in structure.ranges or output in structure.dynamic:
            return  # bounds computed at run time follow the compacted size (checked in exact.py)
        start, stop = structure.ranges[output]
        keep_in = ctx.keep_of[node.input[0]]
        new_start, new_stop = int(keep_in[:start].sum()), int(keep_in[:stop].sum())
        if (new_start, new_stop) == (start, stop):
            return
        source = structure.tracked[node.input[0]]
        rank = len(structure.shapes.get(node.input[0]) or ()) or source.rank
        by_attribute = attribute(node, "starts") is not None
        if by_attribute:
            starts, axes = list(attribute(node, "starts")), attribute(node, "axes")
        else:
            starts = list(np.ravel(store.get(node.input[1])))
            axes = list(np.ravel(store.get(node.input[3]))) if len(node.input) > 3 and node.input[3] else None
        axes = [int(a) % rank for a in (axes if axes is not None else range(len(starts)))]
        k = axes.index(source.axis)
        for position, key, value in ((1, "starts", new_start), (2, "ends", new_stop)):
            if by_attribute:
                limits = list(attribute(node, key))
                if not (key == "ends" and limits[k] >= keep_in.size):  # "to the end" stays so
                    limits[k] = value
                    set_attribute(node, key, limits)
            else:
                array = np.array(store.get(node.input[position]), copy=True)
                if not (key == "ends" and array[k] >= keep_in.size):
                    array[k] = value
                    store.put(node, position, array)


def slice_arguments(node: onnx.NodeProto, constants: dict) -> tuple | None:
    """(starts, ends, axes, steps) of a Slice, as lists, or None when any is computed at run time."""
    if attribute(node, "starts") is not None:  # opset < 10
        starts, ends = list(attribute(node, "starts")), list(attribute(node, "ends"))
        axes = attribute(node, "axes")
        return starts, ends, list(axes) if axes is not None else None, None
    values = []
    for position in range(1, 5):
        name = node.input[position] if len(node.input) > position else ""
        if not name:
            values.append(None)
            continue
        if name not in constants:
            return None
        values.append([int(v) for v in np.ravel(constants[name])])
    return tuple(values)
