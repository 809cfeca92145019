"""Channel analysis: every node's handler traces channel ids through the graph, in order."""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxprune.errors import at_node, stage
from onnxprune.graph.channels.groups import Structure
from onnxprune.graph.channels.handlers import GENERIC, TraceContext, handler_for, where
from onnxprune.graph.channels.shapes import Shapes, constant_values
from onnxprune.graph.model import identity_aliases
from onnxprune.graph.proto import subgraph_reads

if TYPE_CHECKING:
    import onnx

    from onnxprune.graph.model import Model


@stage("channel analysis")
def analyse(model: Model) -> Structure:
    """Trace channel ids through the graph (see `onnxprune.graph.channels`)."""
    structure = Structure()
    shapes = Shapes(model)
    structure.shapes = shapes.known
    # a tensor fed through Identity(initializer) (TorchScript's deduplication) is a constant operand too
    initializers = {t.name for t in model.proto.graph.initializer} | set(identity_aliases(model.proto))
    ctx = TraceContext(
        structure, model, {layer.output: layer for layer in model.layers}, initializers, constant_values(model), shapes
    )
    for index, node in enumerate(model.proto.graph.node):
        with at_node(node, index):
            trace_node(ctx, node, index)
    for output in model.proto.graph.output:
        structure.block_tensor(output.name, f"it reaches the graph output '{output.name}'")
    return structure


def trace_node(ctx: TraceContext, node: onnx.NodeProto, index: int) -> None:
    """Dispatch one node to its handler (the generic rule where the handler declines)."""
    read_inside = [ctx.structure.tracked[name] for name in subgraph_reads(node) if name in ctx.structure.tracked]
    if read_inside:  # an If / Loop branch reads them by name: no handler sees that use
        ctx.structure.block(read_inside, f"{where(node, index)} reads them inside its subgraph")
    inputs = [ctx.structure.tracked.get(name) for name in node.input]
    present = [t for t in inputs if t is not None]
    handler = handler_for(node.op_type)
    if not present and handler.needs_tracked_input:
        return
    label = where(node, index)
    if any(t.grid for t in present) and not handler.reads_shuffled(ctx, node):
        # channels split into groups that are then used apart, not shuffled back (attention's q, k and v):
        # kept by design, so that the rest of the model stays removable
        ctx.structure.block(
            present, f"{label} uses channel groups apart (not a channel shuffle); they are kept", protected=True
        )
        return
    if not handler.trace(ctx, node, inputs, label):
        GENERIC.trace(ctx, node, inputs, label)
