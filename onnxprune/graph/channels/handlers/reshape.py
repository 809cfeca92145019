"""Reshape, Flatten, Squeeze, Unsqueeze and Transpose: the channel axis moves, splits or merges.

- A reshape that keeps the channel axis whole moves it (Squeeze, Unsqueeze, [N, C, 1, 1] -> [N, C]).
- Into a fully-connected layer ([N, C, H, W] -> [N, C*H*W]) each channel becomes a block of columns.
- A channel shuffle ([N, C, ...] -> [N, g, C/g, ...], Transpose, Reshape back) is a fixed
  permutation whose g groups lose channels equally (`Tracked.grid` while split).
- Channels split into attention heads ([.., C] -> [.., 3, heads, dim]) are kept by design.
Patching writes the new channel count into the target shape (followed back to its constants) and
restores the original channel order after a shuffle whose groups kept different channels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from onnx import helper

from onnxprune.graph.channels.bounds import RunTimeBounds
from onnxprune.graph.channels.groups import Tracked
from onnxprune.graph.channels.handlers.base import Handler, register
from onnxprune.graph.proto import attribute

if TYPE_CHECKING:
    import onnx

    from onnxprune.graph.channels.handlers.base import PatchContext, TraceContext
    from onnxprune.graph.channels.store import Store


def same_dims(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Equal shapes where 0 (unknown) matches anything."""
    return len(a) == len(b) and all(x == y or 0 in (x, y) for x, y in zip(a, b, strict=True))


@register
class Reshape(Handler):
    """Reshape, Flatten, Squeeze and Unsqueeze."""

    ops = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")
    follows_shuffles = frozenset({"Reshape"})
    # a target shape read from another tensor's Shape ties that tensor's channels, tracked here or not
    needs_tracked_input = False

    def trace(self, ctx: TraceContext, node: onnx.NodeProto, inputs: list[Tracked | None], where: str) -> bool:
        """Where the channel axis goes, from the static shapes before and after."""
        source, structure = inputs[0], ctx.structure
        if node.op_type == "Reshape" and len(node.input) > 1 and node.input[1] not in ctx.constants:
            bounds = RunTimeBounds.of(node, ctx.shapes, (node.input[1],))
            reads_tracked = bounds is not None and any(t in structure.tracked for t, _, _ in bounds.leaves.values())
            if reads_tracked or (bounds is not None and source is not None):
                structure.computed[node.output[0]] = bounds  # exact.py checks the target after compaction
                _block_counted_channels(ctx, bounds, source, where)
        if source is None:
            return True
        if any(t is not None for t in inputs[1:]):
            return False
        shape = ctx.shapes.get(node.input[0], complete=True)
        out_shape = ctx.shapes.get(node.output[0], complete=True)
        if not shape or not out_shape or 0 in shape[1:] or 0 in out_shape[1:]:
            structure.block([source], f"{where}: shapes unknown, cannot follow channels")
            return True
        if source.grid is not None:
            _merge_shuffle(ctx, node, source, shape, out_shape, where)
            return True
        axis, size = source.axis, source.ids.size
        flattened = len(out_shape) == 2 and out_shape[1] == int(np.prod(shape[1:]))
        if flattened and axis >= 1 and len(shape) > 2:  # into a fully-connected layer: blocks of columns
            grid = np.broadcast_to(
                source.ids.reshape([-1 if i == axis else 1 for i in range(len(shape))]), (1, *shape[1:])
            )
            structure.tracked[node.output[0]] = Tracked(1, grid.reshape(-1).copy(), 2)
            return True
        if (
            node.op_type == "Reshape" and len(out_shape) == len(shape) + 1
            and out_shape[axis] * out_shape[axis + 1] == size and min(out_shape[axis], out_shape[axis + 1]) > 1
            and same_dims(out_shape[:axis], shape[:axis]) and same_dims(out_shape[axis + 2 :], shape[axis + 1 :])
        ):  # fmt: skip
            # the first Reshape of a channel shuffle: [N, C, ...] -> [N, g, C/g, ...]; each group loses equally
            groups = out_shape[axis]
            structure.tracked[node.output[0]] = Tracked(axis, source.ids, len(out_shape), (groups, size // groups), 0)
            structure.blocks.append(np.array_split(source.ids, groups))
            return True
        # a reshape keeps memory order: the channel axis is where its size stands with as many elements
        # after it as before ([B, C, 4, 4] -> [B, C, 16]; [B*N, C] -> [B, N, C] even when N == C)
        after = int(np.prod(shape[axis + 1 :]))
        places = [i for i in range(1, len(out_shape)) if out_shape[i] == size and np.prod(out_shape[i + 1 :]) == after]
        if places:
            structure.tracked[node.output[0]] = Tracked(places[0], source.ids, len(out_shape))
            return True
        if axis == len(shape) - 1 and len(out_shape) > len(shape) and int(np.prod(out_shape[axis:])) == size:
            # [.., C] -> [.., 3, heads, head_dim]: attention splits its channels into heads; whole channels
            # cannot go without breaking the heads, so they are kept by design (the MLP's neurons stay removable)
            structure.block([source], f"{where} splits the channels into attention heads", protected=True)
            return True
        structure.block([source], f"{where} reshapes the channel axis")
        return True

    def patch(self, ctx: PatchContext, node: onnx.NodeProto, index: int) -> None:
        """The new channel count in the target shape; the channel order restored after a shuffle."""
        output = node.output[0] if node.output else None
        if node.op_type != "Reshape" or not ctx.changed(output):
            return
        _patch_target(ctx, node)
        gather = _shuffle_order(ctx, node)
        if gather is not None:
            ctx.after.setdefault(index, []).append(gather)
            ctx.renamed.add(node.output[0])
            ctx.rewritten[gather.name] = "restores the original order of the kept channels after a channel shuffle"


def _block_counted_channels(ctx: TraceContext, bounds: RunTimeBounds, source: Tracked | None, where: str) -> None:
    """Keep the channels of a tensor whose channel count a target shape reads for another tensor.

    `x.reshape(B, y.size(1), H, W)`: removing channels of `y` would change the target of `x`.
    Reading the reshaped tensor's own count (a channel shuffle's `C / g`) follows it by itself.
    """
    structure = ctx.structure
    for tensor in {t for t, _, _ in bounds.leaves.values()}:
        tracked = structure.tracked.get(tensor)
        if tracked is None or tracked.grid is not None or tracked.ids.size < 2:
            continue
        if source is not None and set(source.ids.tolist()) == set(tracked.ids.tolist()):
            continue  # the reshaped channels themselves, in any order (a shuffle merging back)
        shape = list(bounds.shapes[tensor])
        shape[tracked.axis] -= 1
        if bounds.evaluate({tensor: tuple(shape)}) != bounds.evaluate():
            structure.block([tracked], f"{where} reads the channel count of '{tensor}' for its target shape")


def _merge_shuffle(
    ctx: TraceContext,
    node: onnx.NodeProto,
    source: Tracked,
    shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    where: str,
) -> None:
    """The last Reshape of a channel shuffle: the grid merged back into one axis."""
    axis = source.axis
    if (
        node.op_type == "Reshape" and len(out_shape) == len(shape) - 1 and out_shape[axis] == source.ids.size
        and same_dims(out_shape[:axis], shape[:axis]) and same_dims(out_shape[axis + 1 :], shape[axis + 2 :])
    ):  # fmt: skip
        ctx.structure.tracked[node.output[0]] = Tracked(axis, source.ids, len(out_shape))
        ctx.structure.merges[node.output[0]] = source
        return
    ctx.structure.block([source], f"{where} reshapes a shuffled channel axis in a way onnxprune does not follow")


@register
class Transpose(Handler):
    """A permutation of axes: the channel axis moves (both halves of a shuffled one together)."""

    ops = ("Transpose",)
    follows_shuffles = frozenset({"Transpose"})

    def trace(self, ctx: TraceContext, node: onnx.NodeProto, inputs: list[Tracked | None], where: str) -> bool:
        """Move the channel axis with the permutation."""
        source = inputs[0]
        perm = attribute(node, "perm")
        rank = ctx.shapes.rank(node.input[0], source.rank)
        perm = list(perm) if perm else list(range(rank))[::-1]
        if source.grid is None:
            ctx.structure.tracked[node.output[0]] = Tracked(perm.index(source.axis), source.ids, source.rank)
            return True
        first, second = perm.index(source.axis), perm.index(source.axis + 1)
        if abs(first - second) != 1:
            ctx.structure.block([source], f"{where} separates the two halves of a shuffled channel axis")
            return True
        if first < second:
            ctx.structure.tracked[node.output[0]] = Tracked(
                first, source.ids, source.rank, source.grid, source.group_axis
            )
            return True
        grid = source.ids.reshape(source.grid).T
        ctx.structure.tracked[node.output[0]] = Tracked(
            second, grid.reshape(-1).copy(), source.rank, grid.shape, 1 - source.group_axis
        )
        return True


def target_change(target: Tracked, kept: int) -> tuple[int, int, int]:
    """(position, old size, new size) in a Reshape's target shape when its output keeps `kept` channels.

    The channel axis, or for the first Reshape of a shuffle the axis counting channels per group.
    """
    if target.grid is not None:
        groups = target.grid[target.group_axis]
        return target.axis + 1 - target.group_axis, target.grid[1 - target.group_axis], kept // groups
    return target.axis, target.ids.size, kept


def _patch_target(ctx: PatchContext, node: onnx.NodeProto) -> None:
    """The new size of the channel axis (or of a shuffle's group axis) in the Reshape's target shape."""
    if len(node.input) < 2:
        return
    position, old, new = target_change(ctx.structure.tracked[node.output[0]], int(ctx.keep_of[node.output[0]].sum()))
    patch_shape_at(node, 1, position, old, new, ctx.store, ctx.producers, ctx.structure.shapes)


def patch_shape_at(
    node: onnx.NodeProto, index: int, position: int, old: int, new: int, store: Store, producers: dict, shapes: dict
) -> None:
    """Replace `old` by `new` at `position` of the shape tensor `node.input[index]`.

    The shape is followed back through Concat / Cast / Identity / Unsqueeze to its constants; a
    shape computed from `Shape` at run time follows the compacted tensor by itself.
    """
    value = store.get(node.input[index])
    if value is not None:
        array = np.array(value, copy=True)
        if array.ndim == 0 and position == 0 and int(array) == old:
            store.put(node, index, np.array(new, array.dtype))
        elif array.ndim == 1 and position < array.size and int(array[position]) == old:
            array[position] = new
            store.put(node, index, array)
        return
    producer = producers.get(node.input[index])
    if producer is None:
        return
    if producer.op_type in ("Cast", "Identity") or (producer.op_type == "Unsqueeze" and position == 0):
        patch_shape_at(producer, 0, position, old, new, store, producers, shapes)
    elif producer.op_type == "Concat":
        offset = 0
        for part_index, part in enumerate(producer.input):
            part_value = store.get(part)
            length = np.size(part_value) if part_value is not None else (shapes.get(part) or (None,))[0]
            if not length:
                return  # a piece of unknown length: the position cannot be found
            if offset <= position < offset + length:
                patch_shape_at(producer, part_index, position - offset, old, new, store, producers, shapes)
                return
            offset += length


def _shuffle_order(ctx: PatchContext, node: onnx.NodeProto) -> onnx.NodeProto | None:
    """A Gather putting a shuffle's kept channels back in their original order, where removal changed it.

    Each group of the shuffle keeps its channels in order, but groups keep different ones: merged
    back, the kept channels come out interleaved differently from the original's order. Every
    later consumer was cut for the original order, so the order is restored (None if it already is).
    """
    grid = ctx.structure.merges.get(node.output[0])
    if grid is None:
        return None
    rows, columns = grid.grid
    kept = ctx.keep_of[node.input[0]].reshape(rows, columns)
    positions = np.arange(rows * columns).reshape(rows, columns)
    if grid.group_axis == 0:
        order = np.stack([positions[i][kept[i]] for i in range(rows)])
    else:
        order = np.stack([positions[:, j][kept[:, j]] for j in range(columns)], axis=1)
    order = order.reshape(-1)
    if np.all(np.diff(order) > 0):
        return None
    output = node.output[0]
    store = ctx.store
    node.output[0] = store.unique(f"{output}_shuffled")
    indices = store.add(f"{output}_channel_order", np.argsort(order).astype(np.int64))
    name = store.unique(f"{node.name or output}_channel_order")
    return helper.make_node(
        "Gather", [node.output[0], indices], [output], name=name, axis=ctx.structure.tracked[output].axis
    )
