"""Conv, Gemm and MatMul by a constant weight: they consume their input's channels and produce new ones.

Tracing gives every output channel a new id; a depthwise convolution ties output c to input c
(one unit), a grouped one makes its groups lose equally. Patching cuts the weight's output rows
and input columns, the bias, the group count of a depthwise convolution, and folds the constant a
removed input channel still carries (a bias, `sigmoid(0) = 0.5`) into this layer's bias (an `Add`
after a MatMul that has none).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from onnx import helper

from onnxprune.errors import ConversionError
from onnxprune.graph.channels.groups import Tracked
from onnxprune.graph.channels.handlers.base import Handler, register
from onnxprune.graph.proto import attribute, set_attribute

if TYPE_CHECKING:
    import onnx

    from onnxprune.graph.channels.handlers.base import PatchContext, TraceContext
    from onnxprune.graph.model import PrunableLayer


@register
class LayerHandler(Handler):
    """A prunable layer (a Conv, Gemm or MatMul whose weight is an initializer)."""

    ops = ("Conv", "Gemm", "MatMul")
    needs_tracked_input = False

    def reads_shuffled(self, ctx: TraceContext, node: onnx.NodeProto) -> bool:
        """A layer takes any input: a shuffled one blocks its channels (in `trace`)."""
        return node.output[0] in ctx.layers

    def trace(self, ctx: TraceContext, node: onnx.NodeProto, inputs: list[Tracked | None], where: str) -> bool:
        """New ids for the output channels; the input's ids checked against the weight, tied where depthwise."""
        layer = ctx.layers.get(node.output[0])
        if layer is None:
            return False  # a MatMul of two computed tensors (attention): the generic rule keeps it
        structure, source = ctx.structure, inputs[0]
        if source is not None and source.grid:
            structure.block([source], f"{where} reads a channel shuffle's split channel axis")
            source = None
        if source is not None and source.axis != _contracted_axis(ctx, node, source):
            # a MatMul over another axis than the one carrying channels (a DCT along rows, after a Transpose)
            structure.block([source], f"{where} multiplies along another axis than its input's channels")
            source = None
        out_shape = ctx.shapes.get(node.output[0]) or ()
        out_axis = max(1 if node.op_type == "Conv" else len(out_shape or (0, 0)) - 1, 1)
        ids = structure.new_ids(layer.name, layer.shape[layer.out_axis])
        output = Tracked(out_axis, ids, len(out_shape) or (4 if node.op_type == "Conv" else 2))
        structure.tracked[node.output[0]] = output
        grouped = node.op_type == "Conv" and layer.groups > 1
        if source is None:
            if grouped and ids.size // layer.groups == 1:
                # one output per group: removing it empties a group whose input channel stays
                reason = f"{where}: its channels are tied one to one to input channels that cannot be removed"
                structure.block([output], reason, protected=True)
            elif grouped:
                structure.blocks.append(np.array_split(ids, layer.groups))
            return True
        if grouped:
            in_channels = source.ids.size
            if layer.groups == in_channels and layer.shape[1] == 1 and layer.shape[0] == in_channels:
                structure.union_all(source, output)  # depthwise: channel c in, channel c out
                return True
            structure.blocks.append(np.array_split(source.ids, layer.groups))
            structure.blocks.append(np.array_split(ids, layer.groups))
        expected = layer.shape[layer.in_axis] * (layer.groups if node.op_type == "Conv" else 1)
        if source.ids.size != expected:
            structure.block([source], f"{where}: its input has {source.ids.size} channels, its weight {expected}")
        return True

    def patch(self, ctx: PatchContext, node: onnx.NodeProto, index: int) -> None:
        """Cut output rows, input columns and the bias; fold removed inputs' constants into the bias."""
        layer = ctx.layers.get(node.output[0]) if node.output else None
        if layer is None:
            return
        store = ctx.store
        keep_out = ctx.keep_of[node.output[0]]
        weight = original = store.get(node.input[1])
        if ctx.changed(node.input[0]):  # input channels / columns
            keep_in = ctx.keep_of[node.input[0]]
            carried = ctx.carried.get(node.input[0])
            if carried is not None and np.any(carried[~keep_in] != 0):
                bias_part = contribution(layer, weight, np.where(keep_in, 0.0, carried))
                _add_to_bias(ctx, node, layer, bias_part, index)
                ctx.folded.append(node.name or layer.name)
            weight = _cut_inputs(weight, layer, keep_in)
            if node.op_type == "Conv" and layer.groups > 1 and layer.shape[1] == 1 and layer.groups == keep_in.size:
                set_attribute(node, "group", int(keep_in.sum()))  # depthwise: one group per channel
        if not keep_out.all():
            weight = np.compress(keep_out, weight, axis=layer.out_axis)
            # the bias here (also one _add_to_bias just created) loses the same output channels;
            # a MatMul's bias lives in the Add after it, which is cut as a channel-wise constant
            if node.op_type in ("Conv", "Gemm") and len(node.input) > 2 and node.input[2]:
                bias = store.get(node.input[2])
                if bias is not None and bias.ndim >= 1 and bias.shape[-1] == keep_out.size:
                    store.put(node, 2, np.compress(keep_out, bias, axis=-1))
        if weight is not original:
            store.put(node, 1, weight)


def _contracted_axis(ctx: TraceContext, node: onnx.NodeProto, source: Tracked) -> int:
    """The input axis a layer sums over: Conv's channels (1), a MatMul's or Gemm's last (or first, transA)."""
    if node.op_type == "Conv":
        return 1
    rank = ctx.shapes.rank(node.input[0], source.rank)
    if node.op_type == "Gemm" and attribute(node, "transA", 0):
        return 0
    return rank - 1


def _cut_inputs(weight: np.ndarray, layer: PrunableLayer, keep_in: np.ndarray) -> np.ndarray:
    if layer.op_type == "Conv" and layer.groups > 1 and weight.shape[1] != 1:
        per_group_in = keep_in.reshape(layer.groups, -1)
        rows = np.split(weight, layer.groups, axis=0)
        return np.concatenate(
            [np.compress(mask, block, axis=1) for mask, block in zip(per_group_in, rows, strict=True)]
        )
    if layer.op_type == "Conv" and layer.groups > 1:
        return weight  # depthwise: its input channels are its filters, cut as outputs
    return np.compress(keep_in, weight, axis=layer.in_axis)


def contribution(layer: PrunableLayer, weight: np.ndarray, constant: np.ndarray) -> np.ndarray:
    """sum_c constant_c * W[:, c] over removed inputs c: what the consumer's bias must absorb."""
    weight = weight.astype(np.float64)
    if layer.op_type == "Conv":
        groups = layer.groups
        outputs, per_group_in = weight.shape[0], weight.shape[1]
        per_input = weight.reshape(groups, outputs // groups, per_group_in, -1).sum(axis=3)
        # a grouped convolution: input c reaches only the outputs of its own group
        return np.einsum("gok,gk->go", per_input, constant.reshape(groups, per_group_in)).reshape(outputs)
    return np.moveaxis(weight, layer.in_axis, -1) @ constant


def _add_to_bias(
    ctx: PatchContext, node: onnx.NodeProto, layer: PrunableLayer, bias_part: np.ndarray, index: int
) -> None:
    store = ctx.store
    dtype = store.get(node.input[1]).dtype
    if layer.op_type == "MatMul":
        add = next((n for n in ctx.readers.get(node.output[0], []) if n.op_type == "Add"), None)
        position = None if add is None or layer.bias is None else next(
            (i for i, name in enumerate(add.input) if store.source(name) == store.source(layer.bias)), None
        )  # fmt: skip
        if position is None:
            _new_matmul_bias(ctx, node, layer, bias_part.astype(dtype), index)
            return
        store.put(add, position, (store.get(add.input[position]).astype(np.float64) + bias_part).astype(dtype))
        return
    scale = 1.0
    if layer.op_type == "Gemm":
        scale = attribute(node, "alpha", 1.0) / attribute(node, "beta", 1.0)
    if len(node.input) > 2 and node.input[2]:
        bias = store.get(node.input[2])
        if bias is None:
            raise ConversionError(f"layer '{layer.name}': its bias is computed at run time; cannot fold into it")
        store.put(node, 2, (bias.astype(np.float64) + scale * bias_part).astype(bias.dtype))
        return
    while len(node.input) < 3:
        node.input.append("")
    node.input[2] = store.add(f"{layer.name}_folded_bias", (scale * bias_part).astype(dtype))


def _new_matmul_bias(
    ctx: PatchContext, node: onnx.NodeProto, layer: PrunableLayer, bias: np.ndarray, index: int
) -> None:
    """An Add after a MatMul that has no bias, holding what its removed inputs carried (kept outputs only)."""
    keep_out = ctx.keep_of[node.output[0]]
    output = node.output[0]
    node.output[0] = ctx.store.unique(f"{output}_before_bias")
    name = ctx.store.unique(f"{node.name or layer.name}_folded_bias")
    value = ctx.store.add(f"{layer.name}_folded_bias", np.compress(keep_out, bias, axis=-1))
    ctx.after.setdefault(index, []).append(helper.make_node("Add", [node.output[0], value], [output], name=name))
    ctx.renamed.add(node.output[0])
    ctx.rewritten[name] = "a bias for the constant the removed inputs of a MatMul without one carried"
