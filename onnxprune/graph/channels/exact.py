"""Exactness checks of compaction: a unit goes only where the compacted model computes the same.

A filter of zeros outputs its bias everywhere; BatchNorm, activations, pooling and gates turn that
into another value, constant or not. The values at the inputs of the consumers of removed
channels are measured once in onnxruntime (`probe`): a removed channel must carry a value constant
over batch and space into every consumer whose kept outputs read it (then it is folded into the
consumer's bias), and a nonzero constant must not meet a convolution's zero padding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from onnxprune.graph.channels.handlers import handler_for
from onnxprune.graph.channels.shapes import run_with_outputs
from onnxprune.graph.proto import attribute

if TYPE_CHECKING:
    import onnx

    from onnxprune.graph.channels.bounds import RunTimeBounds
    from onnxprune.graph.channels.groups import Structure
    from onnxprune.graph.model import Model, PrunableLayer

# a constant this close to constant (relative spread over batch and space) is folded as one
CONSTANT_SPREAD = 1e-6


def consumers(model: Model, structure: Structure) -> dict[str, list]:
    """Tensor -> the nodes that read the value of its channels: (node, layer) of layers, (node, None) of LRNs."""
    layers = {layer.output: layer for layer in model.layers}
    found: dict[str, list] = {}
    for node in model.proto.graph.node:
        layer = layers.get(node.output[0]) if node.output else None
        reads = layer is not None or handler_for(node.op_type).reads_neighbours
        if reads and node.input and node.input[0] in structure.tracked:
            found.setdefault(node.input[0], []).append((node, layer))
    return found


def probe(model: Model, structure: Structure, chosen: set[int]) -> dict[str, np.ndarray]:
    """The values at the inputs of the consumers of chosen channels, measured once in onnxruntime."""
    if not chosen:
        return {}
    tensors = [
        name for name in consumers(model, structure)
        if any(structure.root(i) in chosen for i in structure.tracked[name].ids)
    ]  # fmt: skip
    if not tensors:
        return {}
    # a graph fixed to batch 1 is run twice, so that "constant over the batch" is measured too
    seeds = (1, 2) if model.input.fixed_batch and model.input.shape[0] == 1 else (1,)
    return run_with_outputs(model, tensors, seeds)


def carried_constants(
    model: Model, structure: Structure, chosen: set[int], measured: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[int, str]]:
    """The constant each removed position carries into each consumer, and the units refused (with why)."""
    values: dict[str, np.ndarray] = {}
    refused: dict[int, str] = {}
    for tensor, readers in consumers(model, structure).items():
        tracked = structure.tracked[tensor]
        removed = np.array([structure.root(i) in chosen for i in tracked.ids])
        if not removed.any():
            continue
        data = np.moveaxis(np.asarray(measured[tensor], np.float64), tracked.axis, 1)
        positions = np.flatnonzero(removed)
        if data.shape[1] != tracked.ids.size:
            for position in positions:
                refused[structure.root(tracked.ids[position])] = f"the channels of '{tensor}' were not followed right"
            continue
        chunk = data.reshape(data.shape[0], data.shape[1], -1)[:, removed, :]
        low, high, value = chunk.min(axis=(0, 2)), chunk.max(axis=(0, 2)), chunk.mean(axis=(0, 2))
        constant = high - low <= CONSTANT_SPREAD * np.maximum(1.0, np.abs(value))
        per_position = np.zeros(tracked.ids.size)
        per_position[removed] = np.where(constant, value, 0.0)
        values[tensor] = per_position
        for node, layer in readers:
            if layer is None:  # an LRN: its window reads the removed channels' values (handlers/lrn.py)
                for k in np.flatnonzero(~constant):
                    refused[structure.root(tracked.ids[positions[k]])] = (
                        f"its value at the input of '{node.name}' ({node.op_type}) varies (spread "
                        f"{high[k] - low[k]:.3g}), and that normalisation reads it for the channels beside it"
                    )
                continue
            keep_out = np.array([structure.root(i) not in chosen for i in structure.tracked[node.output[0]].ids])
            reach = _reaches_kept(layer, tracked.ids.size, positions, keep_out)
            name = f"'{node.name or layer.name}'"
            for k, position in enumerate(positions):
                if not reach[k]:
                    continue  # only outputs removed with it read this channel
                root = structure.root(tracked.ids[position])
                if not constant[k]:
                    refused[root] = (
                        f"its value at the input of {name} varies (spread {high[k] - low[k]:.3g} over batch and "
                        "space), so no bias can stand for it"
                    )
                elif value[k] != 0:
                    why = _cannot_fold(node, layer, model)
                    if why:
                        refused[root] = f"it carries the constant {value[k]:.3g} into {name}, {why}"
    return values, refused


def _compacted_shapes(structure: Structure, bounds: RunTimeBounds, chosen: set[int]) -> dict[str, tuple[int, ...]]:
    """The shapes the tensors whose `Shape` feeds `bounds` have once `chosen` is removed."""
    compacted = {}
    for tensor in {t for t, _, _ in bounds.leaves.values()}:
        shape = list(bounds.shapes[tensor])
        tracked = structure.tracked.get(tensor)
        if tracked is not None and tracked.grid is None:
            shape[tracked.axis] = sum(structure.root(i) not in chosen for i in tracked.ids)
        compacted[tensor] = tuple(shape)
    return compacted


def computed_operands_refused(structure: Structure, chosen: set[int]) -> dict[int, str]:
    """Units to keep because a Reshape target or Pad computed from shapes at run time would no longer fit.

    The operands are evaluated for the compacted shapes: pads must stay the same, and a target
    shape may change only where the reshaped tensor's channels are counted (to the count kept).
    """
    from onnxprune.graph.channels.handlers.reshape import target_change

    refused: dict[int, str] = {}
    for output, bounds in structure.computed.items():
        node = bounds.node
        involved = [structure.tracked[t] for t in {t for t, _, _ in bounds.leaves.values()} | {node.input[0]}
                    if t in structure.tracked]  # fmt: skip
        losing = {structure.root(i) for t in involved for i in t.ids if structure.root(i) in chosen}
        if not losing:
            continue
        before = [value for value in bounds.evaluate() if value is not None]
        after = [value for value in bounds.evaluate(_compacted_shapes(structure, bounds, chosen)) if value is not None]
        expected = [list(value) for value in before]
        target = structure.tracked.get(output)
        if node.op_type == "Reshape" and target is not None:
            position, old, new = target_change(target, sum(structure.root(i) not in chosen for i in target.ids))
            if position < len(expected[0]) and expected[0][position] == old:
                expected[0][position] = new
                if position in bounds.constant_positions():  # a constant there: compaction writes it
                    after[0] = [new if i == position else v for i, v in enumerate(after[0])]
        if after != expected:
            what = "target shape" if node.op_type == "Reshape" else "pads"
            reason = (
                f"node '{node.name}' ({node.op_type}) computes its {what} from tensor shapes at run time, and "
                "it would no longer fit the compacted tensors"
            )
            refused.update(dict.fromkeys(losing, reason))
    return refused


def run_time_bounds_refused(structure: Structure, chosen: set[int]) -> dict[int, str]:
    """Units to keep because a Slice computing its bounds at run time would then cut elsewhere."""
    refused = {}
    for output, bounds in structure.dynamic.items():
        source = structure.tracked[bounds.node.input[0]]
        keep = np.array([structure.root(i) not in chosen for i in source.ids])
        if keep.all():
            continue
        starts, ends, _, _ = bounds.evaluate(_compacted_shapes(structure, bounds, chosen))
        start, stop = structure.ranges[output]
        kept = int(keep.sum())
        got = [min(max(v + kept if v < 0 else v, 0), kept) for v in (starts[bounds.index], ends[bounds.index])]
        if got != [int(keep[:start].sum()), int(keep[:stop].sum())]:
            reason = (
                f"node '{bounds.node.name}' (Slice) computes its channel bounds at run time, and they would "
                "no longer fall between the same channels"
            )
            refused.update({structure.root(i): reason for i in source.ids if structure.root(i) in chosen})
    return refused


def _reaches_kept(layer: PrunableLayer, size: int, positions: np.ndarray, keep_out: np.ndarray) -> np.ndarray:
    """For each removed input position, whether it feeds an output channel that stays."""
    if layer.op_type == "Conv" and layer.groups > 1:
        per_in, per_out = size // layer.groups, keep_out.size // layer.groups
        return np.array([keep_out[(p // per_in) * per_out : (p // per_in + 1) * per_out].any() for p in positions])
    return np.full(positions.size, bool(keep_out.any()))


def _cannot_fold(node: onnx.NodeProto, layer: PrunableLayer, model: Model) -> str | None:
    """Why a nonzero constant at this consumer's input cannot become part of its bias (None: it can)."""
    if node.op_type == "Conv" and has_padding(node):
        return "whose zero padding would make its contribution differ at the border"
    if node.op_type == "Gemm" and attribute(node, "beta", 1.0) == 0:
        return "a Gemm whose bias is multiplied by beta = 0"
    initializers = {t.name for t in model.proto.graph.initializer}
    if node.op_type in ("Conv", "Gemm") and len(node.input) > 2 and node.input[2] and node.input[2] not in initializers:
        producer = next((n for n in model.proto.graph.node if node.input[2] in n.output), None)
        if producer is None or producer.op_type not in ("Identity", "Constant"):
            return "whose bias is computed at run time"
    return None


def has_padding(node: onnx.NodeProto) -> bool:
    """Whether a Conv pads its input (explicitly or by auto_pad)."""
    pads = attribute(node, "pads", [])
    auto = attribute(node, "auto_pad", b"NOTSET")
    auto = auto.encode() if isinstance(auto, str) else auto
    return any(pads) or auto not in (b"NOTSET", b"VALID")
