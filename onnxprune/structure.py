"""Which channels move together in an ONNX graph, and compaction: removing them for real.

Every output channel of a prunable layer (Conv filter, fully-connected neuron) gets an id. The
ids are carried along the graph: element-wise ops, pooling, BatchNorm, Dropout and LRN keep them;
`Transpose` moves their axis; `Concat` lays several lists end to end; `Flatten`/`Reshape` into a
fully-connected layer repeat each channel id over its block of columns; a residual `Add` joins
the ids of its inputs (union-find), so coupled channels are removed together. A union-find class
of ids is one removable *unit*. Units that reach a graph output, pass through an op this module
does not know, or feed a Softmax are not removable (the reason is kept, naming the node).

Compaction (`compact`) removes every removable unit whose filters are all zero: it slices the
producers' weights and biases, the BatchNorm parameters and channel-wise constants on the way,
and the consumers' input channels (or columns), patches `Reshape` targets, and folds the
constant a removed channel still carries (a bias, `sigmoid(0) = 0.5`) into the consumer's bias.
The graph otherwise stays the original: names, op types, opset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.errors import ConversionError
from onnxprune.model import Model, _inferred_shapes, copy_without_initializers

PASS_THROUGH = {
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Elu", "Selu", "HardSigmoid", "HardSwish", "Softplus", "Clip",
    "Dropout", "Identity", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "BatchNormalization",
    "InstanceNormalization", "LRN", "Cast", "Abs", "Neg", "Exp", "Sqrt", "Erf", "Mish", "Gelu", "PRelu", "Pad",
}  # fmt: skip
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean"}
# ops whose output channel c depends on other channels too: removal is approximate
MIXING = {"LRN"}
# ops that normalise across the channel axis: channels before them cannot be removed
CROSS_CHANNEL = {"Softmax", "LogSoftmax", "Hardmax", "ReduceMean", "ReduceSum", "ReduceMax", "ArgMax"}


class _UnionFind:
    def __init__(self):
        self.parent: list[int] = []

    def add(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, item: int) -> int:
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


@dataclass
class Tracked:
    """A tensor whose `axis` carries channel ids (one per position along that axis)."""

    axis: int
    ids: np.ndarray  # int64 channel ids, length = size of `axis`
    rank: int = 4


@dataclass
class Unit:
    """One removable channel (a union-find class of channel ids)."""

    root: int
    members: list[tuple[str, int]]  # (layer name, output channel index)
    blocked_by: str | None = None  # why it cannot be removed
    unresolved: bool = False  # blocked because the graph could not be followed (not by design)


@dataclass
class Structure:
    """The channel analysis of one model.

    Attributes:
        tracked: tensor name -> its channel ids.
        units: union-find root -> `Unit`.
        producers: layer name -> channel ids of its output channels (in order).
        consumers: (node index, weight axis, tensor) of each layer reading tracked channels.
        blocks: groups of ids that must lose the same number of channels (grouped convolutions).
        inexact: node names where removal changes the output (LRN), with why.
    """

    tracked: dict[str, Tracked] = field(default_factory=dict)
    uf: _UnionFind = field(default_factory=_UnionFind)
    producers: dict[str, np.ndarray] = field(default_factory=dict)
    owner: list[tuple[str, int]] = field(default_factory=list)
    blocked: dict[int, str] = field(default_factory=dict)
    protected: set[int] = field(default_factory=set)
    blocks: list[list[np.ndarray]] = field(default_factory=list)
    inexact: dict[str, str] = field(default_factory=dict)

    def root(self, channel_id: int) -> int:
        """The unit a channel id belongs to."""
        return self.uf.find(int(channel_id))

    def units(self) -> dict[int, Unit]:
        """Every unit, with its member channels and, if not removable, why."""
        units: dict[int, Unit] = {}
        for channel_id, member in enumerate(self.owner):
            root = self.root(channel_id)
            units.setdefault(root, Unit(root, [])).members.append(member)
        for channel_id, reason in self.blocked.items():
            unit = units[self.root(channel_id)]
            unit.blocked_by = unit.blocked_by or reason
            unit.unresolved = unit.unresolved or channel_id not in self.protected
        for unit in units.values():
            if unit.blocked_by and any(self.root(i) == unit.root for i in self.protected):
                unit.unresolved = False  # protected by design wins: nothing to report
        return units

    def layer_units(self, layer: str) -> np.ndarray:
        """The unit (root) of each output channel of a layer."""
        return np.array([self.root(i) for i in self.producers[layer]], dtype=np.int64)


def analyse(model: Model) -> Structure:
    """Trace channel ids through the graph; see the module docstring."""
    structure = Structure()
    shapes = _inferred_shapes(model.proto)
    for value in model.proto.graph.input:
        dims = value.type.tensor_type.shape.dim
        shapes.setdefault(value.name, tuple(d.dim_value if d.HasField("dim_value") else 0 for d in dims))
    layers = {layer.output: layer for layer in model.layers}
    initializers = {t.name for t in model.proto.graph.initializer}
    constants = _constant_values(model)
    for index, node in enumerate(model.proto.graph.node):
        _trace(structure, node, index, layers, initializers, constants, shapes)
    for output in model.proto.graph.output:
        _block(structure, output.name, f"it reaches the graph output '{output.name}'")
    return structure


def _constant_values(model: Model) -> dict[str, np.ndarray]:
    values = {t.name: t for t in model.proto.graph.initializer if int(np.prod(t.dims)) <= 16}
    result = {name: numpy_helper.to_array(tensor) for name, tensor in values.items()}
    for node in model.proto.graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    result[node.output[0]] = numpy_helper.to_array(attribute.t)
    return result


def _block(structure: Structure, tensor: str, reason: str) -> None:
    tracked = structure.tracked.get(tensor)
    if tracked is not None:
        _block_all(structure, [tracked], reason, protected=True)


def _new_ids(structure: Structure, layer: str, count: int) -> np.ndarray:
    ids = np.array([structure.uf.add() for _ in range(count)], dtype=np.int64)
    structure.owner.extend((layer, i) for i in range(count))
    structure.producers[layer] = ids
    return ids


def _trace(structure, node, index, layers, initializers, constants, shapes) -> None:
    tracked_inputs = [structure.tracked.get(name) for name in node.input]
    where = f"node '{node.name or f'#{index}'}' ({node.op_type})"
    layer = layers.get(node.output[0]) if node.output else None
    if layer is not None:
        _trace_layer(structure, node, layer, tracked_inputs[0], where, shapes)
        return
    present = [t for t in tracked_inputs if t is not None]
    if not present:
        return
    op = node.op_type
    if op in PASS_THROUGH and tracked_inputs[0] is not None:
        if op == "Pad" and not _pad_keeps_channels(node, constants, tracked_inputs[0].axis):
            _block_all(structure, present, f"{where} pads the channel axis")
            return
        if op in MIXING:
            structure.inexact[node.name or f"#{index}"] = f"{op} mixes neighbouring channels"
        structure.tracked[node.output[0]] = tracked_inputs[0]
    elif op in ELEMENTWISE:
        _trace_elementwise(structure, node, tracked_inputs, initializers, constants, shapes, where)
    elif op == "Transpose":
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        source = tracked_inputs[0]
        axis = perm.index(source.axis) if perm else len(shapes.get(node.input[0], ())) - 1 - source.axis
        structure.tracked[node.output[0]] = Tracked(axis, source.ids, source.rank)
    elif op == "Concat":
        _trace_concat(structure, node, tracked_inputs, shapes, where)
    elif op in ("Flatten", "Reshape", "Squeeze", "Unsqueeze"):
        _trace_reshape(structure, node, tracked_inputs[0], shapes, where)
    elif op in CROSS_CHANNEL:
        _block_all(structure, present, f"{where} normalises across channels", protected=True)
        structure.tracked[node.output[0]] = tracked_inputs[0]
    else:
        _block_all(structure, present, f"{where}: onnxprune cannot follow channels through {op}")


def _block_all(structure: Structure, tracked: list[Tracked], reason: str, protected: bool = False) -> None:
    """Mark channels as not removable: `protected` ones by design (outputs), others unresolved."""
    for item in tracked:
        for channel_id in np.unique(item.ids):
            structure.blocked.setdefault(int(channel_id), reason)
            if protected:
                structure.protected.add(int(channel_id))


def _pad_keeps_channels(node, constants, axis) -> bool:
    pads = next((list(a.ints) for a in node.attribute if a.name == "pads"), None)
    if pads is None and len(node.input) > 1:
        value = constants.get(node.input[1])
        pads = None if value is None else [int(v) for v in value]
    if pads is None:
        return False
    rank = len(pads) // 2
    return pads[axis] == 0 and pads[axis + rank] == 0


def _trace_layer(structure, node, layer, source: Tracked | None, where, shapes) -> None:
    """A Conv / Gemm / MatMul: consumes its input's channels, produces new ones."""
    out_axis = 1 if node.op_type == "Conv" else len(shapes.get(node.output[0], (0, 0))) - 1
    out_axis = max(out_axis, 1)
    ids = _new_ids(structure, layer.name, layer.shape[layer.out_axis])
    rank = len(shapes.get(node.output[0], ())) or (4 if node.op_type == "Conv" else 2)
    structure.tracked[node.output[0]] = Tracked(out_axis, ids, rank)
    if source is None:
        return
    if node.op_type == "Conv" and layer.groups > 1:
        in_channels = source.ids.size
        if layer.groups == in_channels and layer.shape[1] == 1 and layer.shape[0] == in_channels:
            for a, b in zip(source.ids, ids, strict=True):  # depthwise: channel c in, channel c out
                structure.uf.union(int(a), int(b))
            return
        structure.blocks.append(np.array_split(source.ids, layer.groups))
        structure.blocks.append(np.array_split(ids, layer.groups))
    expected = layer.shape[layer.in_axis] * (layer.groups if node.op_type == "Conv" else 1)
    if source.ids.size != expected:
        _block_all(structure, [source], f"{where}: its input has {source.ids.size} channels, its weight {expected}")


def _trace_elementwise(structure, node, tracked_inputs, initializers, constants, shapes, where) -> None:
    present = [t for t in tracked_inputs if t is not None]
    first = present[0]
    for other, name in zip(tracked_inputs, node.input, strict=True):
        if other is None:
            size = _size_along(shapes.get(name), first.axis, shapes.get(node.output[0]))
            if name not in initializers and name not in constants and size not in (1, None):
                _block_all(structure, present, f"{where} combines channels with a computed tensor")
                return
            continue
        if other.ids.size != first.ids.size:
            _block_all(structure, present, f"{where} combines tensors of different channel counts")
            return
        for a, b in zip(first.ids, other.ids, strict=True):
            structure.uf.union(int(a), int(b))
    structure.tracked[node.output[0]] = first


def _size_along(shape, axis, output_shape) -> int | None:
    """Size of a broadcast operand along the output's `axis` (None when unknown)."""
    if not shape or not output_shape:
        return None
    offset = len(output_shape) - len(shape)
    position = axis - offset
    return 1 if position < 0 else shape[position]


def _trace_concat(structure, node, tracked_inputs, shapes, where) -> None:
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    rank = len(shapes.get(node.output[0], ())) or 4
    axis = axis % rank
    present = [t for t in tracked_inputs if t is not None]
    if present[0].axis != axis:
        _trace_elementwise(structure, node, tracked_inputs, set(), {}, shapes, where)
        return
    if any(t is None for t in tracked_inputs):
        _block_all(structure, present, f"{where} concatenates channels onnxprune does not track")
        return
    structure.tracked[node.output[0]] = Tracked(axis, np.concatenate([t.ids for t in tracked_inputs]), rank)


def _trace_reshape(structure, node, source: Tracked, shapes, where) -> None:
    shape = shapes.get(node.input[0])
    out_shape = shapes.get(node.output[0])
    if not shape or not out_shape or 0 in shape[1:] or 0 in out_shape[1:]:
        _block_all(structure, [source], f"{where}: shapes unknown, cannot follow channels")
        return
    if len(out_shape) == 2 and source.axis >= 1:  # into a fully-connected layer: blocks of columns
        grid = np.broadcast_to(
            source.ids.reshape([-1 if i == source.axis else 1 for i in range(len(shape))]),
            (1, *shape[1:]),
        )
        structure.tracked[node.output[0]] = Tracked(1, grid.reshape(-1).copy(), 2)
        return
    if node.op_type in ("Squeeze", "Unsqueeze", "Reshape", "Flatten") and source.ids.size in out_shape[1:]:
        axis = list(out_shape[1:]).index(source.ids.size) + 1
        structure.tracked[node.output[0]] = Tracked(axis, source.ids, len(out_shape))
        return
    _block_all(structure, [source], f"{where} reshapes the channel axis")


# --- compaction ------------------------------------------------------------------------------


@dataclass
class CompactReport:
    """What compaction removed and what it changed."""

    removed: dict[str, int]  # layer name -> output channels removed
    kept: dict[str, int]  # layer name -> output channels kept
    folded: list[str]  # consumers whose bias received a removed channel's constant
    inexact: dict[str, str]  # nodes where the result differs from the masked model, and why
    skipped: dict[str, str]  # all-zero channels that could not be removed, and why


def zero_units(model: Model, structure: Structure) -> set[int]:
    """Units whose every member filter (weights) is all zero in the model's initializers."""
    zero = {}
    for layer in model.layers:
        if layer.name not in structure.producers:
            continue
        weight = np.moveaxis(model.weight_array(layer), layer.out_axis, 0)
        is_zero = ~weight.reshape(weight.shape[0], -1).any(axis=1)
        for root, empty in zip(structure.layer_units(layer.name), is_zero, strict=True):
            zero[int(root)] = zero.get(int(root), True) and bool(empty)
    return {root for root, empty in zero.items() if empty}


def removable(structure: Structure, candidates: set[int]) -> tuple[set[int], dict[str, str]]:
    """The candidates that can go: not blocked, and equal in number in every block of a grouped conv."""
    units = structure.units()
    skipped = {}
    chosen = set()
    for root in candidates:
        unit = units[root]
        if unit.blocked_by:
            skipped[f"{unit.members[0][0]}[{unit.members[0][1]}]"] = unit.blocked_by
        else:
            chosen.add(root)
    for blocks in structure.blocks:
        per_block = [[structure.root(i) for i in block] for block in blocks]
        in_block = [[root for root in dict.fromkeys(roots) if root in chosen] for roots in per_block]
        keep_count = min(len(roots) for roots in in_block)
        for roots in in_block:
            for root in roots[keep_count:]:
                chosen.discard(root)
                member = units[root].members[0]
                skipped[f"{member[0]}[{member[1]}]"] = "a grouped convolution needs equal removals in every group"
    return chosen, skipped


def compact(model: Model, remove: set[int] | None = None) -> tuple[onnx.ModelProto, CompactReport]:
    """Physically remove channels: the all-zero, removable ones (or the units given in `remove`).

    Returns:
        The compacted ModelProto (same graph, smaller tensors) and a `CompactReport`.

    Raises:
        ConversionError: nothing could be removed because of the graph (names the reason).
    """
    structure = analyse(model)
    candidates = zero_units(model, structure) if remove is None else set(remove)
    chosen, skipped = removable(structure, candidates)
    constants = _carried_constants(model, structure, chosen)
    proto, folded = _rewrite(model, structure, chosen, constants)
    removed = {name: int(np.isin(structure.layer_units(name), list(chosen)).sum()) for name in structure.producers}
    kept = {name: int(ids.size) - removed[name] for name, ids in structure.producers.items()}
    inexact = dict(structure.inexact) if chosen else {}
    inexact.update({name: why for name, why in constants.inexact.items()})
    return proto, CompactReport(removed, kept, folded, inexact, skipped)


@dataclass
class _Constants:
    values: dict[str, np.ndarray]  # tensor -> value of each position along its channel axis (nan: kept)
    inexact: dict[str, str]


def _carried_constants(model: Model, structure: Structure, chosen: set[int]) -> _Constants:
    """The value removed channels still carry into each consumer, measured in onnxruntime.

    A filter of zeros outputs its bias everywhere; BatchNorm, activations and pooling turn that
    into another constant. Running the model once with the consumers' inputs as extra outputs
    gives those constants directly, whatever ops lie between.
    """
    consumers = _consumer_inputs(model, structure)
    if not chosen or not consumers:
        return _Constants({}, {})
    from onnxprune.verify import random_batch, session

    probe = onnx.ModelProto()
    probe.CopyFrom(model.proto)
    existing = {o.name for o in probe.graph.output}
    for tensor in consumers:
        if tensor not in existing:
            probe.graph.output.append(helper.make_empty_tensor_value_info(tensor))
    run = session(probe.SerializeToString())
    names = [o.name for o in run.get_outputs()]
    outputs = dict(
        zip(names, run.run(None, {run.get_inputs()[0].name: random_batch(model.input, 2, seed=1)}), strict=True)
    )
    values, inexact = {}, {}
    for tensor, (node, tracked) in consumers.items():
        data = np.moveaxis(outputs[tensor], tracked.axis, 1)
        data = data.reshape(data.shape[0], data.shape[1], -1)
        removed = np.array([structure.root(i) in chosen for i in tracked.ids])
        per_channel = np.full(tracked.ids.size, np.nan)
        if removed.any():
            chunk = data[:, removed, :]
            spread = float(np.max(chunk.max(axis=(0, 2)) - chunk.min(axis=(0, 2))))
            if spread > 1e-6 * max(1.0, float(np.abs(chunk).max())):
                inexact[node.name] = f"removed channels are not constant at its input (spread {spread:.3g})"
            per_channel[removed] = chunk.mean(axis=(0, 2))
            if node.op_type == "Conv" and _has_padding(node) and np.any(per_channel[removed] != 0):
                inexact[node.name] = (
                    "a removed channel's constant meets zero padding: the bias fold is exact only inside"
                )
        values[tensor] = per_channel
    return _Constants(values, inexact)


def _has_padding(node) -> bool:
    pads = next((list(a.ints) for a in node.attribute if a.name == "pads"), [])
    auto = next((a.s for a in node.attribute if a.name == "auto_pad"), b"NOTSET")
    return any(pads) or auto not in (b"NOTSET", b"VALID")


def _consumer_inputs(model: Model, structure: Structure) -> dict[str, tuple]:
    layers = {layer.output: layer for layer in model.layers}
    consumers = {}
    for node in model.proto.graph.node:
        if node.output and node.output[0] in layers and node.input[0] in structure.tracked:
            consumers[node.input[0]] = (node, structure.tracked[node.input[0]])
    return consumers


def _rewrite(model: Model, structure: Structure, chosen: set[int], constants: _Constants):
    """A copy of the graph with every tensor touched by the removed channels cut down."""
    values = {t.name: numpy_helper.to_array(t) for t in model.proto.graph.initializer}
    new_values = dict(values)
    keep_of = {
        name: np.array([structure.root(i) not in chosen for i in tracked.ids])
        for name, tracked in structure.tracked.items()
    }
    layers = {layer.output: layer for layer in model.layers}
    proto = onnx.ModelProto()
    copy_without_initializers(model.proto, proto)
    folded = []
    for node in proto.graph.node:
        layer = layers.get(node.output[0]) if node.output else None
        if layer is not None:
            _cut_layer(node, layer, keep_of, structure, new_values, constants, proto, folded)
        elif node.output and node.output[0] in keep_of:
            _cut_channelwise(node, keep_of[node.output[0]], structure.tracked[node.output[0]], new_values)
        if node.op_type == "Reshape" and node.output[0] in keep_of:
            _patch_reshape(node, keep_of, new_values, proto)
    changed = {name for name, keep in keep_of.items() if not keep.all()}
    # exporters (torch's dynamo) also record the shapes of initializers
    changed |= {name for name, array in new_values.items() if np.shape(array) != np.shape(values.get(name))}
    kept_info = [v for v in proto.graph.value_info if v.name not in changed]
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(kept_info)
    for tensor in model.proto.graph.initializer:
        array = new_values[tensor.name]
        dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
        replacement = numpy_helper.from_array(np.asarray(array, dtype=dtype), tensor.name)
        proto.graph.initializer.append(tensor if array is values[tensor.name] else replacement)
    for name, array in new_values.items():
        if name not in values:
            proto.graph.initializer.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
    _shrink_inputs_listing_initializers(proto, new_values)
    return proto, folded


def _cut_layer(node, layer, keep_of, structure, values, constants, proto, folded) -> None:
    keep_out = keep_of[node.output[0]]
    weight = values[layer.weight]
    if node.input[0] in keep_of:  # input channels / columns
        keep_in = keep_of[node.input[0]]
        carried = constants.values.get(node.input[0])
        if carried is not None and np.any(np.nan_to_num(carried[~keep_in]) != 0):
            _fold(node, layer, weight, keep_in, carried, values, proto)
            folded.append(node.name or layer.name)
        weight = _cut_inputs(weight, layer, keep_in)
        if node.op_type == "Conv" and layer.groups > 1 and layer.shape[1] == 1 and layer.groups == keep_in.size:
            _set_group(node, int(keep_in.sum()))  # depthwise: one group per channel
    weight = np.compress(keep_out, weight, axis=layer.out_axis)
    values[layer.weight] = weight
    # a MatMul's bias lives in the Add after it, which is cut as a channel-wise constant
    bias_here = layer.bias is not None and layer.op_type != "MatMul"
    if bias_here and values[layer.bias].ndim == 1 and values[layer.bias].size == keep_out.size:
        values[layer.bias] = values[layer.bias][keep_out]


def _cut_inputs(weight: np.ndarray, layer, keep_in: np.ndarray) -> np.ndarray:
    if layer.op_type == "Conv" and layer.groups > 1 and weight.shape[1] != 1:
        groups = layer.groups
        per_group_in = keep_in.reshape(groups, -1)
        rows = np.split(weight, groups, axis=0)
        return np.concatenate(
            [np.compress(mask, block, axis=1) for mask, block in zip(per_group_in, rows, strict=True)]
        )
    if layer.op_type == "Conv" and layer.groups > 1:
        return weight  # depthwise: its input channels are its filters, cut as outputs
    return np.compress(keep_in, weight, axis=layer.in_axis)


def _fold(node, layer, weight, keep_in, carried, values, proto) -> None:
    """Add sum_c constant_c * W[:, c] (over removed inputs c) to the consumer's bias."""
    constant = np.where(keep_in, 0.0, np.nan_to_num(carried)).astype(np.float64)
    if layer.op_type == "Conv":
        if layer.groups > 1:
            return  # grouped consumers: each removed channel reaches only its group (rare; left unfolded)
        per_input = weight.astype(np.float64).reshape(weight.shape[0], weight.shape[1], -1).sum(axis=2)
        contribution = per_input @ constant
    else:
        contribution = np.moveaxis(weight, layer.in_axis, -1).astype(np.float64) @ constant
    bias_name = layer.bias
    if bias_name is None:
        bias_name = f"{layer.name}_folded_bias"
        if layer.op_type == "MatMul":
            raise ConversionError(
                f"layer '{layer.name}': a removed input carries a constant and this MatMul has no bias to take it"
            )
        values[bias_name] = np.zeros(contribution.shape, np.float32)
        while len(node.input) < 3:
            node.input.append("")
        node.input[2] = bias_name
    scale = 1.0
    if layer.op_type == "Gemm":
        alpha = next((a.f for a in node.attribute if a.name == "alpha"), 1.0)
        beta = next((a.f for a in node.attribute if a.name == "beta"), 1.0)
        scale = alpha / beta
    values[bias_name] = (values[bias_name].astype(np.float64) + scale * contribution).astype(np.float32)


def _set_group(node, groups: int) -> None:
    for attribute in node.attribute:
        if attribute.name == "group":
            attribute.i = groups


def _cut_channelwise(node, keep: np.ndarray, tracked: Tracked, values) -> None:
    """Slice BatchNorm parameters and channel-wise constants of element-wise ops."""
    if keep.all():
        return
    if node.op_type in ("BatchNormalization", "InstanceNormalization", "PRelu"):
        for name in node.input[1:]:
            if name in values and values[name].ndim >= 1 and values[name].shape[0] == keep.size:
                values[name] = values[name][keep]
        return
    if node.op_type in ELEMENTWISE:
        for name in node.input:
            if name in values and values[name].ndim:
                array = values[name]
                axis = array.ndim - (tracked.rank - tracked.axis)  # numpy broadcasting aligns trailing axes
                if 0 <= axis < array.ndim and array.shape[axis] == keep.size:
                    values[name] = np.compress(keep, array, axis=axis)


def _patch_reshape(node, keep_of, values, proto) -> None:
    """Replace the old feature count by the new one wherever the Reshape's target shape comes from."""
    keep = keep_of[node.output[0]]
    if keep.all() or len(node.input) < 2:
        return
    producers = {output: n for n in proto.graph.node for output in n.output}
    _patch_shape_source(node.input[1], keep.size, int(keep.sum()), values, producers)


def _patch_shape_source(name: str, old: int, new: int, values, producers) -> None:
    """Follow a shape tensor back through Concat / Cast / Unsqueeze to its constants, and patch them."""
    if name in values:
        target = np.array(values[name], copy=True)
        target[target == old] = new
        values[name] = target
        return
    node = producers.get(name)
    if node is None:
        return
    if node.op_type == "Constant":
        for attribute in node.attribute:
            if attribute.name == "value":
                array = numpy_helper.to_array(attribute.t).copy()
                if np.any(array == old):
                    array[array == old] = new
                    attribute.t.CopyFrom(numpy_helper.from_array(array, attribute.t.name))
            elif attribute.name == "value_ints":
                patched = [new if value == old else value for value in attribute.ints]
                del attribute.ints[:]
                attribute.ints.extend(patched)
            elif attribute.name == "value_int" and attribute.i == old:
                attribute.i = new
    elif node.op_type in ("Concat", "Cast", "Unsqueeze", "Squeeze", "Identity"):
        for source in node.input:
            _patch_shape_source(source, old, new, values, producers)


def _shrink_inputs_listing_initializers(proto: onnx.ModelProto, values: dict) -> None:
    """IR < 4 files list initializers among the inputs; their shapes must follow the cut."""
    for value in proto.graph.input:
        if value.name in values:
            dims = value.type.tensor_type.shape.dim
            shape = np.shape(values[value.name])
            if len(dims) == len(shape):
                for dim, size in zip(dims, shape, strict=True):
                    dim.dim_value = int(size)


def zero_channels(model: Model, structure: Structure, chosen: set[int]) -> dict[str, np.ndarray]:
    """New initializer values that zero the chosen units: filters, biases and BatchNorm scale and shift.

    This is the masked model of structured pruning. Zeroing the bias and the BatchNorm shift too
    makes each removed channel carry exactly f(0) downstream (0 after ReLU), so compaction is
    exact even where the next convolution pads with zeros.
    """
    values = {}
    for layer in model.layers:
        if layer.name not in structure.producers:
            continue
        drop = np.isin(structure.layer_units(layer.name), list(chosen))
        if not drop.any():
            continue
        weight = model.weight_array(layer).copy()
        index = [slice(None)] * weight.ndim
        index[layer.out_axis] = drop
        weight[tuple(index)] = 0
        values[layer.weight] = weight
        if layer.bias is not None:
            bias = numpy_helper.to_array(model.initializer(layer.bias)).copy()
            if bias.ndim == 1 and bias.size == drop.size:
                bias[drop] = 0
                values[layer.bias] = bias
    for node in model.proto.graph.node:
        if node.op_type == "BatchNormalization" and node.input[0] in structure.tracked:
            drop = np.array([structure.root(i) in chosen for i in structure.tracked[node.input[0]].ids])
            if drop.any():
                for name in node.input[1:3]:  # scale and shift
                    array = numpy_helper.to_array(model.initializer(name)).copy()
                    array[drop] = 0
                    values[name] = array
    return values
