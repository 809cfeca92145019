"""Compaction: the graph copy with every tensor the removed channels touch cut down.

Each node's handler patches what it holds (`Handler.patch`); this module chooses the units,
runs the exactness checks, and writes the new initializers, shapes and added nodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.errors import at_node, stage
from onnxprune.graph.channels.analysis import analyse
from onnxprune.graph.channels.exact import (
    carried_constants,
    computed_operands_refused,
    probe,
    run_time_bounds_refused,
)
from onnxprune.graph.channels.groups import balance, label, removable, zero_units
from onnxprune.graph.channels.handlers import PatchContext, handler_for
from onnxprune.graph.channels.store import Store
from onnxprune.graph.proto import copy_without_initializers

if TYPE_CHECKING:
    from onnxprune.graph.channels.groups import Structure
    from onnxprune.graph.model import Model


@dataclass
class CompactReport:
    """What compaction removed and what it changed."""

    removed: dict[str, int]  # layer name -> output channels removed
    kept: dict[str, int]  # layer name -> output channels kept
    folded: list[str]  # consumers whose bias received a removed channel's constant
    inexact: dict[str, str]  # nodes where the result differs from the masked model, and why
    skipped: dict[str, str]  # all-zero channels that could not be removed, and why
    rewritten: dict[str, str] = field(default_factory=dict)  # nodes added or replaced, and why


@stage("compaction")
def compact(model: Model, remove: set[int] | None = None) -> tuple[onnx.ModelProto, CompactReport]:
    """Physically remove channels: the all-zero, removable ones (or the units given in `remove`).

    A unit is removed only where the result stays exact: the value it still carries into every
    consumer must be constant over batch and space (then it is folded into the consumer's bias),
    and a nonzero constant must not meet a convolution's zero padding. Units that fail are kept
    and listed in `CompactReport.skipped` with the node that refused them.

    Where channels next to an LRN go, or a channel shuffle's groups keep different channels, a few
    nodes are added to keep the result exact; `CompactReport.rewritten` names them.

    Returns:
        The compacted ModelProto (same graph, smaller tensors) and a `CompactReport`.

    Raises:
        ConversionError: a constant would have to be folded into a bias the graph computes at run
            time (such units are refused first; this names the layer if one slips through).
    """
    structure = analyse(model)
    candidates = zero_units(model, structure) if remove is None else set(remove)
    chosen, skipped = removable(structure, candidates)
    measured = probe(model, structure, chosen)
    while True:
        carried, refused = carried_constants(model, structure, chosen, measured)
        refused.update(run_time_bounds_refused(structure, chosen))
        refused.update(computed_operands_refused(structure, chosen))
        if not refused:
            break
        units = structure.units()
        for root, reason in refused.items():
            chosen.discard(root)
            skipped[label(units[root])] = reason
        balance(structure, chosen, skipped, units)
    proto, ctx = _rewrite(model, structure, chosen, carried)
    removed = {name: int(np.isin(structure.layer_units(name), list(chosen)).sum()) for name in structure.producers}
    kept = {name: int(ids.size) - removed[name] for name, ids in structure.producers.items()}
    # an LRN next to removed channels is rewritten to stay exact; one left as it was would not be
    inexact = {}
    for node in model.proto.graph.node:
        name = node.name or node.output[0]
        source = structure.tracked.get(node.input[0]) if node.input and name in structure.inexact else None
        if source is not None and name not in ctx.rewritten and any(structure.root(i) in chosen for i in source.ids):
            inexact[name] = structure.inexact[name]
    return proto, CompactReport(removed, kept, ctx.folded, inexact, skipped, ctx.rewritten)


def _rewrite(
    model: Model, structure: Structure, chosen: set[int], carried: dict[str, np.ndarray]
) -> tuple[onnx.ModelProto, PatchContext]:
    """A copy of the graph with every tensor touched by the removed channels cut down."""
    keep_of = {
        name: np.array([structure.root(i) not in chosen for i in tracked.ids])
        for name, tracked in structure.tracked.items()
    }
    proto = onnx.ModelProto()
    copy_without_initializers(model.proto, proto)
    readers: dict[str, list] = {}
    for node in proto.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    ctx = PatchContext(
        model=model, structure=structure, keep_of=keep_of, store=Store(model.proto, proto), carried=carried,
        producers={output: n for n in proto.graph.node for output in n.output}, readers=readers,
        layers={layer.output: layer for layer in model.layers}, opset=model.opset,
    )  # fmt: skip
    for index, node in enumerate(proto.graph.node):
        with at_node(node, index):
            handler_for(node.op_type).patch(ctx, node, index)
    if ctx.before or ctx.after:
        nodes = list(proto.graph.node)
        del proto.graph.node[:]
        for index, node in enumerate(nodes):
            proto.graph.node.extend(ctx.before.get(index, []))
            proto.graph.node.append(node)
            proto.graph.node.extend(ctx.after.get(index, []))
    _write_values(model, proto, ctx)
    return proto, ctx


def _write_values(model: Model, proto: onnx.ModelProto, ctx: PatchContext) -> None:
    """Initializers (cut, copied, new) into `proto`; value_info of changed tensors dropped; dead aliases gone."""
    store = ctx.store
    changed = {name for name, keep in ctx.keep_of.items() if not keep.all()} | ctx.renamed
    # exporters (torch's dynamo) also record the shapes of initializers
    changed |= {name for name, array in store.values.items() if np.shape(array) != np.shape(store.original[name])}
    kept_info = [v for v in proto.graph.value_info if v.name not in changed]
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(kept_info)
    # an Identity alias whose readers were all given their own copy is dead: drop it, then unused originals
    read = {name for node in proto.graph.node for name in node.input} | {o.name for o in proto.graph.output}
    dead = [
        n for n in proto.graph.node
        if n.op_type == "Identity" and n.output[0] in store.alias and n.output[0] not in read
    ]  # fmt: skip
    for node in dead:
        proto.graph.node.remove(node)
    read = {name for node in proto.graph.node for name in node.input} | {o.name for o in proto.graph.output}
    read |= {v.name for v in proto.graph.input}
    for tensor in model.proto.graph.initializer:
        array = store.values[tensor.name]
        if tensor.name not in read and store.uses.get(tensor.name, 0) > 0:
            continue  # every reader now has its own compacted copy
        if array is store.original[tensor.name]:
            proto.graph.initializer.append(tensor)
        else:
            dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
            proto.graph.initializer.append(numpy_helper.from_array(np.asarray(array, dtype=dtype), tensor.name))
    for name, array in store.fresh.items():
        proto.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
    _shrink_inputs_listing_initializers(proto, {**store.values, **store.fresh})


def _shrink_inputs_listing_initializers(proto: onnx.ModelProto, values: dict) -> None:
    """IR < 4 files list initializers among the inputs; their shapes must follow the cut."""
    for value in proto.graph.input:
        if value.name in values:
            dims = value.type.tensor_type.shape.dim
            shape = np.shape(values[value.name])
            if len(dims) == len(shape):
                for dim, size in zip(dims, shape, strict=True):
                    dim.dim_value = int(size)
