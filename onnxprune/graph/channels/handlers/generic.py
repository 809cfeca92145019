"""The rule for ops no handler knows: measure whether channels pass, else keep them whole.

An op passes channels through when, run alone in onnxruntime on a random input of the tensor's
shape, its output keeps the channel axis position for position and dropping input channels drops
exactly those output channels, the rest unchanged (so removal elsewhere cannot change what it
computes). Every other input must be a constant. Anything else, or a probe that cannot run, keeps
the channels that reach the node whole, with a note naming it: never a refusal of the whole run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.graph.channels.handlers.base import Handler
from onnxprune.graph.proto import session

if TYPE_CHECKING:
    from onnxprune.graph.channels.groups import Tracked
    from onnxprune.graph.channels.handlers.base import TraceContext

# a probe's output equals the reference within this (float32 kernels, identical arithmetic per channel)
PROBE_RTOL, PROBE_ATOL = 1e-5, 1e-6


class Generic(Handler):
    """Channels pass where a probe shows the op keeps them apart; otherwise they are kept."""

    def trace(self, ctx: TraceContext, node: onnx.NodeProto, inputs: list[Tracked | None], where: str) -> bool:
        """Pass channels through a measured channel-wise op, or keep them whole."""
        present = [t for t in inputs if t is not None]
        if not present:
            return True
        if passes_channels(ctx, node, inputs):
            ctx.structure.tracked[node.output[0]] = present[0]
            ctx.structure.generic[node.name or node.output[0]] = node.op_type
            return True
        ctx.structure.block(
            present, f"{where}: onnxprune cannot follow channels through {node.op_type}, so they are kept whole"
        )
        return True


def passes_channels(ctx: TraceContext, node: onnx.NodeProto, inputs: list[Tracked | None]) -> bool:
    """True when the node is shown channel-wise by a probe (see the module docstring)."""
    source = inputs[0]
    if source is None or source.grid is not None or any(t is not None for t in inputs[1:]):
        return False
    if len([o for o in node.output if o]) != 1:
        return False
    shape = ctx.shapes.get(node.input[0], complete=True)
    if not shape or 0 in shape[1:] or len(shape) != source.rank or shape[source.axis] != source.ids.size:
        return False
    operands = _constant_operands(ctx, node)
    if operands is None:
        return False
    try:
        return _probe(ctx, node, (1, *shape[1:]), source.axis, operands)
    except Exception:  # an op onnxruntime cannot run alone (a custom domain): not followed
        return False


def _constant_operands(ctx: TraceContext, node: onnx.NodeProto) -> list[onnx.TensorProto] | None:
    """The node's other inputs as initializers of the probe, or None if one is computed."""
    initializers = {t.name: t for t in ctx.model.proto.graph.initializer}
    tensors = []
    for name in node.input[1:]:
        if not name:
            continue
        if name in initializers:
            tensors.append(initializers[name])
        elif name in ctx.constants:
            tensors.append(numpy_helper.from_array(np.asarray(ctx.constants[name]), name))
        else:
            return None
    return tensors


def _probe(ctx: TraceContext, node: onnx.NodeProto, shape: tuple, axis: int, operands: list) -> bool:
    rng = np.random.default_rng(0)
    full = rng.standard_normal(shape).astype(np.float32)
    size = shape[axis]
    dropped = sorted({0, size // 2}) if size > 2 else [0] if size > 1 else []
    if not dropped:
        return False
    reduced = np.delete(full, dropped, axis=axis)
    outputs = []
    for data in (full, reduced):
        probe = onnx.NodeProto()
        probe.CopyFrom(node)
        probe.input[0] = "x"
        probe.output[0] = "y"
        graph = helper.make_graph(
            [probe], "probe", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, data.shape)],
            [helper.make_empty_tensor_value_info("y")], operands,
        )  # fmt: skip
        model = helper.make_model(graph, opset_imports=ctx.model.proto.opset_import)
        model.ir_version = ctx.model.proto.ir_version
        outputs.append(np.asarray(session(model.SerializeToString()).run(None, {"x": data})[0]))
    whole, cut = outputs
    if whole.ndim != len(shape) or whole.shape[axis] != size or cut.shape[axis] != size - len(dropped):
        return False
    expected = np.delete(whole, dropped, axis=axis)
    return expected.shape == cut.shape and np.allclose(cut, expected, rtol=PROBE_RTOL, atol=PROBE_ATOL)
