"""Which channels move together in an ONNX graph, and compaction: removing them for real.

Every output channel of a prunable layer (Conv filter, fully-connected neuron) gets an id. The
ids are carried along the graph: element-wise ops, pooling, BatchNorm, Dropout and LRN keep them;
reductions over other axes keep them; `Transpose` moves their axis; `Concat` lays several lists
end to end and `Split` / `Slice` along the channel axis cut them; `Flatten`/`Reshape` into a
fully-connected layer repeat each channel id over its block of columns; a channel shuffle
(`Reshape` [N, C, ...] -> [N, g, C/g, ...], `Transpose`, `Reshape` back) is a fixed permutation
of ids whose g groups must lose channels equally; a residual `Add` or a squeeze-and-excitation
gate (`Mul` of the channels by a gate computed from them) joins the ids of its inputs
(union-find), so coupled channels are removed together. A union-find class of ids is one
removable *unit*. Units that reach a graph output, pass through an op this module does not know,
or feed a Softmax are not removable (the reason is kept, naming the node).

Compaction (`compact`) removes every removable unit whose filters are all zero: it slices the
producers' weights and biases, the BatchNorm parameters and channel-wise constants on the way,
and the consumers' input channels (or columns), patches `Reshape` targets and `Split` / `Slice`
bounds, and folds the constant a removed channel still carries (a bias, `sigmoid(0) = 0.5`)
into the consumer's bias. It is exact or it does not remove: a unit whose carried value is not
constant at a consumer, or is a nonzero constant meeting a convolution's zero padding, stays
(`CompactReport.skipped` says why). The graph otherwise stays the original: names, op types,
opset; the exceptions are listed in `CompactReport.rewritten` (a `Gather` restoring channel
order after a shuffle, an `LRN` expressed in standard ops over the kept channels).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.errors import ConversionError
from onnxprune.graph.model import Model, copy_without_initializers, identity_aliases

PASS_THROUGH = {
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Elu", "Selu", "HardSigmoid", "HardSwish", "Softplus", "Clip",
    "Dropout", "Identity", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "BatchNormalization",
    "InstanceNormalization", "LRN", "Cast", "Abs", "Neg", "Exp", "Sqrt", "Erf", "Mish", "Gelu", "PRelu", "Pad",
}  # fmt: skip
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean"}
# ops whose output channel c depends on other channels too (compaction rewrites them: see _lrn_rewrite)
MIXING = {"LRN"}
# ops that normalise across the channel axis: channels before them cannot be removed
CROSS_CHANNEL = {"Softmax", "LogSoftmax", "Hardmax", "ArgMax", "ArgMin"}
# normalisations over trailing axes (LayerNormalization from `axis` on) or channel groups
NORMALISING = {"LayerNormalization", "GroupNormalization"}
REDUCE = {
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
    "ReduceLogSumExp", "ReduceSumSquare",
}  # fmt: skip
# ops that read a tensor's shape, not its values: what they compute follows the compacted shape at run time
SHAPE_ONLY = {"Shape", "Size"}
# a constant this close to constant (relative spread over batch and space) is folded as one
CONSTANT_SPREAD = 1e-6


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
    """A tensor whose `axis` carries channel ids (one per position along that axis).

    Inside a channel shuffle the channel axis is split in two (`grid`: the sizes of axes `axis`
    and `axis + 1`, ids flattened row-major); `group_axis` (0 or 1) says which of the two counts
    the shuffle's groups, each of which must lose the same number of channels.
    """

    axis: int
    ids: np.ndarray  # int64 channel ids, length = size of `axis` (or of the grid)
    rank: int = 4
    grid: tuple[int, int] | None = None
    group_axis: int = 0


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
        blocks: groups of ids that must lose the same number of channels (grouped convolutions,
            the groups of a channel shuffle).
        inexact: node names where removal changes the output unless compaction rewrites them (LRN), with why.
        ranges: output of a `Split` / `Slice` along the channel axis -> the (start, stop) it takes.
        merges: output of a shuffle's last `Reshape` -> the grid it merges back into one axis.
        picks: output of a `Gather` along the channel axis -> the input positions it takes.
        dynamic: output of a `Slice` whose channel bounds are computed from `Shape` at run time
            -> how to recompute them for the compacted shapes.
        shapes: the static shape of each tensor where known (0 for an unknown dimension).
    """

    tracked: dict[str, Tracked] = field(default_factory=dict)
    uf: _UnionFind = field(default_factory=_UnionFind)
    producers: dict[str, np.ndarray] = field(default_factory=dict)
    owner: list[tuple[str, int]] = field(default_factory=list)
    blocked: dict[int, str] = field(default_factory=dict)
    protected: set[int] = field(default_factory=set)
    blocks: list[list[np.ndarray]] = field(default_factory=list)
    inexact: dict[str, str] = field(default_factory=dict)
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    merges: dict[str, Tracked] = field(default_factory=dict)
    dynamic: dict[str, _RunTimeBounds] = field(default_factory=dict, repr=False)
    picks: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict, repr=False)

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
    shapes = _Shapes(model)
    structure.shapes = shapes.known
    layers = {layer.output: layer for layer in model.layers}
    # a tensor fed through Identity(initializer) (TorchScript's deduplication) is a constant operand too
    initializers = {t.name for t in model.proto.graph.initializer} | set(identity_aliases(model.proto))
    constants = _constant_values(model)
    for index, node in enumerate(model.proto.graph.node):
        _trace(structure, node, index, layers, initializers, constants, shapes)
    for output in model.proto.graph.output:
        _block(structure, output.name, f"it reaches the graph output '{output.name}'")
    return structure


class _Shapes:
    """Static shapes: ONNX shape inference with data propagation, else one onnxruntime run.

    Exporters compute shuffle targets from `Shape` at run time (`C / 2`), which shape inference
    cannot always follow; the run is made only when such a shape is asked for.
    """

    def __init__(self, model: Model):
        self.model = model
        self.known = _inferred_shapes(model.proto)
        self.measured = False
        for value in model.proto.graph.input:
            dims = value.type.tensor_type.shape.dim
            self.known.setdefault(value.name, tuple(d.dim_value if d.HasField("dim_value") else 0 for d in dims))

    @property
    def model_initializers(self) -> dict[str, np.ndarray]:
        """Integer initializers of any size (indices), as arrays."""
        if not hasattr(self, "_integers"):
            self._integers = {
                t.name: numpy_helper.to_array(t) for t in self.model.proto.graph.initializer
                if t.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32)
            }  # fmt: skip
        return self._integers

    @property
    def producers(self) -> dict[str, onnx.NodeProto]:
        """Tensor name -> the node that computes it."""
        if not hasattr(self, "_producers"):
            self._producers = {o: n for n in self.model.proto.graph.node for o in n.output}
        return self._producers

    def get(self, name: str, complete: bool = False) -> tuple[int, ...] | None:
        """The shape of `name`; with `complete`, measured if inference left any non-batch dimension unknown."""
        shape = self.known.get(name)
        if complete and (not shape or 0 in shape[1:]) and not self.measured:
            self.measured = True
            self.known.update({k: v for k, v in _measured_shapes(self.model).items() if k not in self.known or
                               0 in self.known[k][1:] or not self.known[k]})  # fmt: skip
            shape = self.known.get(name)
        return shape


def _inferred_shapes(proto: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    skeleton = onnx.ModelProto()
    copy_without_initializers(proto, skeleton)
    for tensor in proto.graph.initializer:  # shapes only: inference reads the data of small tensors
        if tensor.ByteSize() <= 65536:
            skeleton.graph.initializer.append(tensor)
        else:
            stand_in = skeleton.graph.initializer.add()
            stand_in.name, stand_in.data_type = tensor.name, tensor.data_type
            stand_in.dims.extend(tensor.dims)
            stand_in.data_location = onnx.TensorProto.EXTERNAL
            entry = stand_in.external_data.add()
            entry.key, entry.value = "location", "onnxprune-shape-only"
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton, strict_mode=False, data_prop=True)
    except Exception:  # best effort: a shape left unknown blocks the channels that need it, nothing else
        return {}
    shapes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.output):
        if value.type.tensor_type.HasField("shape"):
            dims = value.type.tensor_type.shape.dim
            shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else 0 for d in dims)
    return shapes


def _measured_shapes(model: Model) -> dict[str, tuple[int, ...]]:
    try:
        outputs = _run_with_outputs(model, [o for n in model.proto.graph.node for o in n.output if o], seeds=(1,))
    except Exception:  # a graph onnxruntime cannot run keeps the inferred shapes
        return {}
    return {name: tuple(int(d) for d in np.shape(value)) for name, value in outputs.items()}


def _run_with_outputs(model: Model, tensors: list[str], seeds=(1,)) -> dict[str, np.ndarray]:
    """Run the model in onnxruntime on random batches with `tensors` as extra outputs (one batch per seed)."""
    from onnxprune.graph.verify import random_batch, session

    probe = onnx.ModelProto()
    probe.CopyFrom(model.proto)
    existing = {o.name for o in probe.graph.output}
    for tensor in dict.fromkeys(tensors):
        if tensor not in existing:
            probe.graph.output.append(helper.make_empty_tensor_value_info(tensor))
    run = session(probe.SerializeToString())
    names = [o.name for o in run.get_outputs()]
    results: dict[str, list[np.ndarray]] = {}
    for seed in seeds:
        values = run.run(None, {run.get_inputs()[0].name: random_batch(model.input, 2, seed=seed)})
        for name, value in zip(names, values, strict=True):
            results.setdefault(name, []).append(np.asarray(value))
    return {name: values[0] if len(values) == 1 else np.concatenate(values) for name, values in results.items()}


def _constant_values(model: Model) -> dict[str, np.ndarray]:
    values = {t.name: t for t in model.proto.graph.initializer if int(np.prod(t.dims)) <= 16}
    result = {name: numpy_helper.to_array(tensor) for name, tensor in values.items()}
    for node in model.proto.graph.node:
        if node.op_type == "Constant" and _constant_node_value(node) is not None:
            result[node.output[0]] = _constant_node_value(node)
        elif node.op_type == "Identity" and node.input[0] in result:
            result[node.output[0]] = result[node.input[0]]
    return result


def _constant_node_value(node) -> np.ndarray | None:
    """The value of a Constant node, whichever attribute holds it (None for sparse or string values)."""
    for attribute in node.attribute:
        if attribute.name == "value":
            return numpy_helper.to_array(attribute.t)
        if attribute.name in ("value_ints", "value_int"):
            return np.array(helper.get_attribute_value(attribute), np.int64)
        if attribute.name in ("value_floats", "value_float"):
            return np.array(helper.get_attribute_value(attribute), np.float32)
    return None


def _block(structure: Structure, tensor: str, reason: str) -> None:
    tracked = structure.tracked.get(tensor)
    if tracked is not None:
        _block_all(structure, [tracked], reason, protected=True)


def _new_ids(structure: Structure, layer: str, count: int) -> np.ndarray:
    ids = np.array([structure.uf.add() for _ in range(count)], dtype=np.int64)
    structure.owner.extend((layer, i) for i in range(count))
    structure.producers[layer] = ids
    return ids


def _attribute(node, name, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _trace(structure, node, index, layers, initializers, constants, shapes) -> None:
    tracked_inputs = [structure.tracked.get(name) for name in node.input]
    where = f"node '{node.name or f'#{index}'}' ({node.op_type})"
    layer = layers.get(node.output[0]) if node.output else None
    if layer is not None:
        if tracked_inputs[0] is not None and tracked_inputs[0].grid:
            _block_all(structure, [tracked_inputs[0]], f"{where} reads a channel shuffle's split channel axis")
            tracked_inputs[0] = None
        _trace_layer(structure, node, layer, tracked_inputs[0], where, shapes)
        return
    present = [t for t in tracked_inputs if t is not None]
    if not present:
        return
    op = node.op_type
    if op in SHAPE_ONLY:
        return
    if any(t.grid for t in present) and op not in ("Transpose", "Reshape", "Identity"):
        # channels split into groups that are then used apart, not shuffled back (attention's q, k and v):
        # kept by design, so that the rest of the model stays removable
        _block_all(
            structure, present, f"{where} uses channel groups apart (not a channel shuffle); they are kept",
            protected=True,
        )  # fmt: skip
        return
    if op == "Pad" and tracked_inputs[0] is not None:
        _trace_pad(structure, node, tracked_inputs[0], constants, shapes, where)
    elif op in PASS_THROUGH and tracked_inputs[0] is not None:
        if op in MIXING:
            structure.inexact[node.name or f"#{index}"] = f"{op} mixes neighbouring channels"
        structure.tracked[node.output[0]] = tracked_inputs[0]
    elif op in ELEMENTWISE:
        _trace_elementwise(structure, node, tracked_inputs, initializers, constants, shapes, where)
    elif op == "Transpose":
        _trace_transpose(structure, node, tracked_inputs[0], shapes, where)
    elif op == "Concat":
        _trace_concat(structure, node, tracked_inputs, shapes, where)
    elif op in ("Flatten", "Reshape", "Squeeze", "Unsqueeze"):
        _trace_reshape(structure, node, tracked_inputs[0], shapes, where)
    elif op == "Split" and tracked_inputs[0] is not None:
        _trace_split(structure, node, tracked_inputs[0], constants, shapes, where)
    elif op == "Slice" and tracked_inputs[0] is not None:
        _trace_slice(structure, node, tracked_inputs[0], constants, shapes, where)
    elif op == "Gather" and tracked_inputs[0] is not None and tracked_inputs[1:] == [None]:
        _trace_gather(structure, node, tracked_inputs[0], constants, shapes, where)
    elif op in REDUCE and tracked_inputs[0] is not None:
        _trace_reduce(structure, node, tracked_inputs[0], constants, shapes, where)
    elif op in CROSS_CHANNEL or (op in NORMALISING and _normalises_channels(node, tracked_inputs[0])):
        _block_all(structure, present, f"{where} normalises across channels", protected=True)
        structure.tracked[node.output[0]] = tracked_inputs[0]
    elif op in NORMALISING:  # over axes after the channel axis: channels pass through
        structure.tracked[node.output[0]] = tracked_inputs[0]
    else:
        _block_all(structure, present, f"{where}: onnxprune cannot follow channels through {op}")


def _normalises_channels(node, source: Tracked | None) -> bool:
    """True when a LayerNormalization's normalised axes include the channel axis (GroupNormalization always)."""
    if source is None or node.op_type == "GroupNormalization":
        return True
    axis = _attribute(node, "axis", -1) % source.rank
    return source.axis >= axis


def _block_all(structure: Structure, tracked: list[Tracked], reason: str, protected: bool = False) -> None:
    """Mark channels as not removable: `protected` ones by design (outputs), others unresolved."""
    for item in tracked:
        for channel_id in np.unique(item.ids):
            structure.blocked.setdefault(int(channel_id), reason)
            if protected:
                structure.protected.add(int(channel_id))


def _channel_pads(node, constants, axis: int, rank: int) -> tuple[int, int] | None:
    """(before, after) a Pad adds on the channel axis; None when computed at run time."""
    pads = _attribute(node, "pads")
    axes = None
    if pads is None and len(node.input) > 1:
        value = constants.get(node.input[1])
        pads = None if value is None else [int(v) for v in np.ravel(value)]
        if len(node.input) > 3 and node.input[3]:  # opset 18: pads of the listed axes only
            value = constants.get(node.input[3])
            axes = None if value is None else [int(a) % rank for a in np.ravel(value)]
            if axes is None:
                return None
    if pads is None:
        return None
    axes = axes if axes is not None else list(range(len(pads) // 2))
    if axis not in axes:
        return 0, 0
    k = axes.index(axis)
    return pads[k], pads[k + len(axes)]


def _trace_pad(structure, node, source: Tracked, constants, shapes, where) -> None:
    """Padding of other axes keeps the channels; padding the channel axis adds constant channels.

    The added channels get ids of their own, not removable (the LRN rewrite of compaction pads
    one in, and a later compaction must follow it).
    """
    rank = len(shapes.get(node.input[0]) or ()) or source.rank
    pads = _channel_pads(node, constants, source.axis, rank)
    mode = _attribute(node, "mode", b"constant")
    if pads == (0, 0):
        structure.tracked[node.output[0]] = source
        return
    if pads is None or min(pads) < 0 or mode not in (b"constant", "constant"):
        _block_all(structure, [source], f"{where} pads the channel axis")
        return
    added = []
    for i in range(sum(pads)):
        added.append(structure.uf.add())
        structure.owner.append((f"{node.name or node.output[0]} (padding)", i))
        structure.blocked[added[-1]] = f"{where} pads it in"
        structure.protected.add(added[-1])
    ids = np.concatenate([added[: pads[0]], source.ids, added[pads[0] :]]).astype(np.int64)
    structure.tracked[node.output[0]] = Tracked(source.axis, ids, source.rank)


def _trace_gather(structure, node, source: Tracked, constants, shapes, where) -> None:
    """A Gather of constant indices: along the channel axis it picks channel ids, elsewhere it keeps them."""
    rank = len(shapes.get(node.input[0]) or ()) or source.rank
    axis = _attribute(node, "axis", 0) % rank
    indices = constants.get(node.input[1])
    if indices is None and node.input[1] in shapes.model_initializers:
        indices = shapes.model_initializers[node.input[1]]
    if indices is None or np.ndim(indices) > 1:
        _block_all(structure, [source], f"{where} gathers at indices onnxprune cannot read")
        return
    if axis != source.axis:
        shift = 1 if np.ndim(indices) == 0 and axis < source.axis else 0
        structure.tracked[node.output[0]] = Tracked(source.axis - shift, source.ids, rank - (np.ndim(indices) == 0))
        return
    if np.ndim(indices) == 0:
        _block_all(structure, [source], f"{where} takes a single channel")
        return
    positions = np.asarray(indices, np.int64) % source.ids.size
    structure.tracked[node.output[0]] = Tracked(axis, source.ids[positions], source.rank)
    structure.picks[node.output[0]] = positions


def _trace_layer(structure, node, layer, source: Tracked | None, where, shapes) -> None:
    """A Conv / Gemm / MatMul: consumes its input's channels, produces new ones."""
    out_shape = shapes.get(node.output[0]) or ()
    out_axis = 1 if node.op_type == "Conv" else len(out_shape or (0, 0)) - 1
    out_axis = max(out_axis, 1)
    ids = _new_ids(structure, layer.name, layer.shape[layer.out_axis])
    rank = len(out_shape) or (4 if node.op_type == "Conv" else 2)
    output = Tracked(out_axis, ids, rank)
    structure.tracked[node.output[0]] = output
    grouped = node.op_type == "Conv" and layer.groups > 1
    if source is None:
        if grouped and ids.size // layer.groups == 1:
            # one output per group: removing it empties a group whose input channel stays
            reason = f"{where}: its channels are tied one to one to input channels that cannot be removed"
            _block_all(structure, [output], reason, protected=True)
        elif grouped:
            structure.blocks.append(np.array_split(ids, layer.groups))
        return
    if grouped:
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
        # a residual Add, or a squeeze-and-excitation gate: channel c of one input meets channel c of the other
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


def _trace_transpose(structure, node, source: Tracked, shapes, where) -> None:
    perm = _attribute(node, "perm")
    rank = len(shapes.get(node.input[0]) or ()) or source.rank
    perm = list(perm) if perm else list(range(rank))[::-1]
    if source.grid is None:
        structure.tracked[node.output[0]] = Tracked(perm.index(source.axis), source.ids, source.rank)
        return
    first, second = perm.index(source.axis), perm.index(source.axis + 1)
    if abs(first - second) != 1:
        _block_all(structure, [source], f"{where} separates the two halves of a shuffled channel axis")
        return
    if first < second:
        structure.tracked[node.output[0]] = Tracked(first, source.ids, source.rank, source.grid, source.group_axis)
        return
    grid = source.ids.reshape(source.grid).T
    structure.tracked[node.output[0]] = Tracked(
        second, grid.reshape(-1).copy(), source.rank, grid.shape, 1 - source.group_axis
    )


def _trace_concat(structure, node, tracked_inputs, shapes, where) -> None:
    axis = _attribute(node, "axis", 1)
    rank = len(shapes.get(node.output[0]) or ()) or 4
    axis = axis % rank
    present = [t for t in tracked_inputs if t is not None]
    if present[0].axis != axis:
        if any(t is None for t in tracked_inputs):
            # a class token put before the patch sequence (ViT): its channels would have to shrink too;
            # kept by design, so that the other units of the model stay removable
            _block_all(structure, present, f"{where} joins another tensor along a non-channel axis", protected=True)
            structure.tracked[node.output[0]] = Tracked(present[0].axis, present[0].ids, rank)
            return
        _trace_elementwise(structure, node, tracked_inputs, set(), {}, shapes, where)
        return
    if any(t is None for t in tracked_inputs):
        _block_all(structure, present, f"{where} concatenates channels onnxprune does not track")
        return
    structure.tracked[node.output[0]] = Tracked(axis, np.concatenate([t.ids for t in tracked_inputs]), rank)


def _same_dims(a, b) -> bool:
    """Equal shapes where 0 (unknown) matches anything."""
    return len(a) == len(b) and all(x == y or 0 in (x, y) for x, y in zip(a, b, strict=True))


def _trace_reshape(structure, node, source: Tracked, shapes, where) -> None:
    shape = shapes.get(node.input[0], complete=True)
    out_shape = shapes.get(node.output[0], complete=True)
    if not shape or not out_shape or 0 in shape[1:] or 0 in out_shape[1:]:
        _block_all(structure, [source], f"{where}: shapes unknown, cannot follow channels")
        return
    axis = source.axis
    if source.grid is not None:  # the last Reshape of a channel shuffle: the grid merged back into one axis
        if (
            node.op_type == "Reshape" and len(out_shape) == len(shape) - 1 and out_shape[axis] == source.ids.size
            and _same_dims(out_shape[:axis], shape[:axis]) and _same_dims(out_shape[axis + 1 :], shape[axis + 2 :])
        ):  # fmt: skip
            merged = Tracked(axis, source.ids, len(out_shape))
            structure.tracked[node.output[0]] = merged
            structure.merges[node.output[0]] = source
            return
        _block_all(structure, [source], f"{where} reshapes a shuffled channel axis in a way onnxprune does not follow")
        return
    if len(out_shape) == 2 and axis >= 1 and len(shape) > 2:  # into a fully-connected layer: blocks of columns
        grid = np.broadcast_to(
            source.ids.reshape([-1 if i == axis else 1 for i in range(len(shape))]),
            (1, *shape[1:]),
        )
        structure.tracked[node.output[0]] = Tracked(1, grid.reshape(-1).copy(), 2)
        return
    size = source.ids.size
    if (
        node.op_type == "Reshape" and len(out_shape) == len(shape) + 1 and out_shape[axis] * out_shape[axis + 1] == size
        and min(out_shape[axis], out_shape[axis + 1]) > 1 and _same_dims(out_shape[:axis], shape[:axis])
        and _same_dims(out_shape[axis + 2 :], shape[axis + 1 :])
    ):  # fmt: skip
        # the first Reshape of a channel shuffle: [N, C, ...] -> [N, g, C/g, ...]; each group loses equally
        groups = out_shape[axis]
        structure.tracked[node.output[0]] = Tracked(axis, source.ids, len(out_shape), (groups, size // groups), 0)
        structure.blocks.append(np.array_split(source.ids, groups))
        return
    if size in out_shape[1:]:
        new_axis = list(out_shape[1:]).index(size) + 1
        structure.tracked[node.output[0]] = Tracked(new_axis, source.ids, len(out_shape))
        return
    if axis == len(shape) - 1 and len(out_shape) > len(shape) and int(np.prod(out_shape[axis:])) == size:
        # [.., C] -> [.., 3, heads, head_dim]: attention splits its channels into heads; whole channels
        # cannot go without breaking the heads, so they are kept by design (the MLP's neurons stay removable)
        _block_all(structure, [source], f"{where} splits the channels into attention heads", protected=True)
        return
    _block_all(structure, [source], f"{where} reshapes the channel axis")


def _split_sizes(node, size: int, constants) -> list[int] | None:
    sizes = _attribute(node, "split")
    if sizes is None and len(node.input) > 1 and node.input[1]:
        value = constants.get(node.input[1])
        if value is None:
            return None  # computed at run time
        sizes = [int(v) for v in np.ravel(value)]
    if sizes is None:
        count = _attribute(node, "num_outputs")
        if count is not None:  # opset 18: ceil(size / n) each, the last one smaller
            chunk = -(-size // count)
            sizes = [min(chunk, max(size - chunk * i, 0)) for i in range(count)]
        elif size % len(node.output) == 0:
            sizes = [size // len(node.output)] * len(node.output)
        else:
            return None
    return [int(s) for s in sizes]


def _trace_split(structure, node, source: Tracked, constants, shapes, where) -> None:
    rank = len(shapes.get(node.input[0]) or ()) or source.rank
    axis = _attribute(node, "axis", 0) % rank
    if axis != source.axis:
        for output in node.output:
            structure.tracked[output] = source
        return
    sizes = _split_sizes(node, source.ids.size, constants)
    if sizes is None or sum(sizes) != source.ids.size or len(sizes) != len(node.output):
        _block_all(structure, [source], f"{where} splits the channel axis at positions onnxprune cannot read")
        return
    start = 0
    for output, size in zip(node.output, sizes, strict=True):
        structure.tracked[output] = Tracked(axis, source.ids[start : start + size], source.rank)
        structure.ranges[output] = (start, start + size)
        start += size


def _slice_arguments(node, constants) -> tuple | None:
    """(starts, ends, axes, steps) of a Slice, as lists, or None when any is computed at run time."""
    if _attribute(node, "starts") is not None:  # opset < 10
        starts, ends = list(_attribute(node, "starts")), list(_attribute(node, "ends"))
        axes = _attribute(node, "axes")
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


def _trace_slice(structure, node, source: Tracked, constants, shapes, where) -> None:
    arguments = _slice_arguments(node, constants)
    bounds = None
    if arguments is None:  # TorchScript's chunk: bounds computed from the tensor's Shape at run time
        bounds = _RunTimeBounds.of(node, shapes, where)
        arguments = bounds.evaluate() if bounds is not None else None
    if arguments is None:
        _block_all(structure, [source], f"{where} slices at positions computed at run time")
        return
    starts, ends, axes, steps = arguments
    rank = len(shapes.get(node.input[0]) or ()) or source.rank
    axes = [a % rank for a in (axes if axes is not None else range(len(starts)))]
    if source.axis not in axes:
        structure.tracked[node.output[0]] = source
        return
    k = axes.index(source.axis)
    if steps is not None and steps[k] != 1:
        _block_all(structure, [source], f"{where} slices the channel axis with step {steps[k]}")
        return
    size = source.ids.size
    start, end = (min(max(v + size if v < 0 else v, 0), size) for v in (starts[k], ends[k]))
    end = max(end, start)
    structure.tracked[node.output[0]] = Tracked(source.axis, source.ids[start:end], source.rank)
    structure.ranges[node.output[0]] = (start, end)
    if bounds is not None:
        piece = end - start
        if not 0 < piece < size or size % piece or start % piece:
            _block_all(structure, [source], f"{where} slices at positions computed at run time")
            return
        # bounds that follow the size at run time stay right when every equal piece loses equally
        structure.blocks.append(np.array_split(source.ids, size // piece))
        bounds.index, bounds.axis = k, source.axis
        structure.dynamic[node.output[0]] = bounds


# integer ops a shape computation is made of (what TorchScript writes for chunk and view)
SHAPE_ARITHMETIC = {
    "Constant", "Gather", "Add", "Sub", "Mul", "Div", "Unsqueeze", "Squeeze", "Concat", "Cast", "Slice", "Reshape",
    "Identity", "Floor", "Ceil", "Min", "Max", "Mod", "Neg", "Abs",
}  # fmt: skip


@dataclass
class _RunTimeBounds:
    """A Slice's starts/ends/axes/steps as computed at run time from `Shape`, for any input shapes.

    The integer subgraph between the `Shape` nodes and the Slice's inputs is cut out and run with
    onnx's reference evaluator: at analysis on the original shapes, at compaction on the compacted
    ones, to check that the bounds then fall between the same channels.
    """

    node: onnx.NodeProto
    evaluator: object
    leaves: dict[str, tuple[str, int | None, int | None]]  # Shape output -> (tensor read, start, end)
    shapes: dict[str, tuple[int, ...]]  # shapes of the tensors read, as measured
    index: int = 0  # which entry of starts/ends is the channel axis
    axis: int = 1

    @staticmethod
    def of(node, shapes: _Shapes, where: str) -> _RunTimeBounds | None:
        """The bounds of `node` as a function of shapes, or None if they depend on anything else."""
        initializers = {t.name: t for t in shapes.model.proto.graph.initializer}
        nodes, leaves, used, seen = {}, {}, [], set()

        def visit(name: str) -> bool:
            if not name or name in seen:
                return True
            seen.add(name)
            if name in initializers:
                used.append(initializers[name])
                return True
            producer = shapes.producers.get(name)
            if producer is None:
                return False
            if producer.op_type == "Shape":
                leaves[name] = (producer.input[0], _attribute(producer, "start"), _attribute(producer, "end"))
                return True
            if producer.op_type not in SHAPE_ARITHMETIC or not all(visit(i) for i in producer.input):
                return False
            nodes.setdefault(id(producer), producer)  # after its inputs: topological order
            return True

        targets = [name for name in node.input[1:5] if name]
        if not all(visit(name) for name in targets):
            return None
        read = {}
        for tensor, _, _ in leaves.values():
            shape = shapes.get(tensor, complete=True)
            if not shape or 0 in shape[1:]:
                return None
            read[tensor] = tuple(d or 1 for d in shape)  # an unknown batch: any size will do
        from onnx.reference import ReferenceEvaluator

        graph = helper.make_graph(
            list(nodes.values()), "bounds",
            [helper.make_tensor_value_info(name, onnx.TensorProto.INT64, None) for name in leaves],
            [helper.make_tensor_value_info(name, onnx.TensorProto.INT64, None) for name in targets],
            used,
        )  # fmt: skip
        proto = helper.make_model(graph, opset_imports=shapes.model.proto.opset_import)
        try:
            bounds = _RunTimeBounds(node, ReferenceEvaluator(proto), leaves, read)
            bounds.evaluate()
        except Exception:  # an op the reference evaluator does not run: not followed
            return None
        return bounds

    def evaluate(self, shapes: dict[str, tuple[int, ...]] | None = None) -> tuple:
        """(starts, ends, axes, steps) for the tensors read having `shapes` (default: as measured)."""
        shapes = {**self.shapes, **(shapes or {})}
        feeds = {name: np.array(shapes[t][start:end], np.int64) for name, (t, start, end) in self.leaves.items()}
        values = dict(zip([n for n in self.node.input[1:5] if n], self.evaluator.run(None, feeds), strict=True))
        names = list(self.node.input[1:5]) + [""] * (4 - len(self.node.input[1:5]))
        return tuple([int(v) for v in np.ravel(values[n])] if n else None for n in names)


def _trace_reduce(structure, node, source: Tracked, constants, shapes, where) -> None:
    rank = len(shapes.get(node.input[0]) or ()) or source.rank
    axes = _attribute(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        value = constants.get(node.input[1])
        if value is None:
            _block_all(structure, [source], f"{where} reduces over axes computed at run time")
            return
        axes = [int(v) for v in np.ravel(value)]
    if not axes:
        if _attribute(node, "noop_with_empty_axes", 0):
            structure.tracked[node.output[0]] = source
            return
        axes = list(range(rank))
    axes = sorted({a % rank for a in axes})
    if source.axis in axes:
        _block_all(structure, [source], f"{where} reduces across channels", protected=True)
        return
    keepdims = _attribute(node, "keepdims", 1)
    axis = source.axis if keepdims else source.axis - sum(a < source.axis for a in axes)
    structure.tracked[node.output[0]] = Tracked(axis, source.ids, rank if keepdims else rank - len(axes))


# --- compaction ------------------------------------------------------------------------------


@dataclass
class CompactReport:
    """What compaction removed and what it changed."""

    removed: dict[str, int]  # layer name -> output channels removed
    kept: dict[str, int]  # layer name -> output channels kept
    folded: list[str]  # consumers whose bias received a removed channel's constant
    inexact: dict[str, str]  # nodes where the result differs from the masked model, and why
    skipped: dict[str, str]  # all-zero channels that could not be removed, and why
    rewritten: dict[str, str] = field(default_factory=dict)  # nodes added or replaced, and why


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


def _label(unit: Unit) -> str:
    return f"{unit.members[0][0]}[{unit.members[0][1]}]"


def removable(structure: Structure, candidates: set[int]) -> tuple[set[int], dict[str, str]]:
    """The candidates that can go.

    Not blocked, equal in number in every block (grouped convolution, channel shuffle), and never
    every channel of a tensor.
    """
    units = structure.units()
    skipped = {}
    chosen = set()
    for root in candidates:
        unit = units[root]
        if unit.blocked_by:
            skipped[_label(unit)] = unit.blocked_by
        else:
            chosen.add(root)
    _balance(structure, chosen, skipped, units)
    return chosen, skipped


def _balance(structure: Structure, chosen: set[int], skipped: dict[str, str], units: dict[int, Unit]) -> None:
    """Drop chosen units until every block loses equally and every tracked tensor keeps a channel."""
    tensors = list({id(t): t for t in structure.tracked.values()}.values())
    changed = bool(chosen)
    while changed:
        changed = False
        for blocks in structure.blocks:
            roots = [[structure.root(i) for i in block] for block in blocks]
            counts = [sum(r in chosen for r in block) for block in roots]
            target = min(counts)
            for block, count in zip(roots, counts, strict=True):
                for root in reversed(list(dict.fromkeys(block))):
                    if count <= target:
                        break
                    if root in chosen:
                        chosen.discard(root)
                        count -= block.count(root)
                        changed = True
                        skipped[_label(units[root])] = (
                            "a grouped convolution or a channel shuffle needs equal removals in every group"
                        )
        for tracked in tensors:
            roots = [structure.root(i) for i in tracked.ids]
            if roots and all(root in chosen for root in roots):
                chosen.discard(roots[-1])
                changed = True
                skipped[_label(units[roots[-1]])] = "removing it would leave a tensor without channels"


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
    probe = _probe(model, structure, chosen)
    while True:
        constants, refused = _carried_constants(model, structure, chosen, probe)
        refused.update(_run_time_bounds_refused(structure, chosen))
        if not refused:
            break
        units = structure.units()
        for root, reason in refused.items():
            chosen.discard(root)
            skipped[_label(units[root])] = reason
        _balance(structure, chosen, skipped, units)
    proto, folded, rewritten = _rewrite(model, structure, chosen, constants)
    removed = {name: int(np.isin(structure.layer_units(name), list(chosen)).sum()) for name in structure.producers}
    kept = {name: int(ids.size) - removed[name] for name, ids in structure.producers.items()}
    # an LRN next to removed channels is rewritten to stay exact (_lrn_over_kept); one left as it was would not be
    inexact = {}
    for index, node in enumerate(model.proto.graph.node):
        name = node.name or f"#{index}"
        source = structure.tracked.get(node.input[0]) if node.op_type in MIXING else None
        if source is not None and (node.name or node.output[0]) not in rewritten:
            if any(structure.root(i) in chosen for i in source.ids):
                inexact[name] = structure.inexact.get(name, f"{node.op_type} mixes neighbouring channels")
    return proto, CompactReport(removed, kept, folded, inexact, skipped, rewritten)


def _consumers(model: Model, structure: Structure) -> dict[str, list]:
    """Tensor -> the nodes that read the value of its channels: (node, layer) of layers, (node, None) of LRNs."""
    layers = {layer.output: layer for layer in model.layers}
    consumers: dict[str, list] = {}
    for node in model.proto.graph.node:
        layer = layers.get(node.output[0]) if node.output else None
        if (layer is not None or node.op_type in MIXING) and node.input and node.input[0] in structure.tracked:
            consumers.setdefault(node.input[0], []).append((node, layer))
    return consumers


def _probe(model: Model, structure: Structure, chosen: set[int]) -> dict[str, np.ndarray]:
    """The values at the inputs of the consumers of chosen channels, measured once in onnxruntime.

    A filter of zeros outputs its bias everywhere; BatchNorm, activations, pooling and gates turn
    that into another value, constant or not. Running the model with the consumers' inputs as
    extra outputs gives those values directly, whatever ops lie between.
    """
    if not chosen:
        return {}
    tensors = [
        name for name in _consumers(model, structure)
        if any(structure.root(i) in chosen for i in structure.tracked[name].ids)
    ]  # fmt: skip
    if not tensors:
        return {}
    # a graph fixed to batch 1 is run twice, so that "constant over the batch" is measured too
    seeds = (1, 2) if model.input.fixed_batch and model.input.shape[0] == 1 else (1,)
    return _run_with_outputs(model, tensors, seeds)


@dataclass
class _Constants:
    values: dict[str, np.ndarray]  # tensor -> value of each position along its channel axis (0: kept)


def _carried_constants(model, structure, chosen, probe) -> tuple[_Constants, dict[int, str]]:
    """The constants to fold into each consumer, and the units that cannot be removed exactly (with why)."""
    values: dict[str, np.ndarray] = {}
    refused: dict[int, str] = {}
    for tensor, readers in _consumers(model, structure).items():
        tracked = structure.tracked[tensor]
        removed = np.array([structure.root(i) in chosen for i in tracked.ids])
        if not removed.any():
            continue
        data = np.moveaxis(np.asarray(probe[tensor], np.float64), tracked.axis, 1)
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
            if layer is None:  # an LRN: its window reads the removed channels' values (see _lrn_over_kept)
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
    return _Constants(values), refused


def _run_time_bounds_refused(structure: Structure, chosen: set[int]) -> dict[int, str]:
    """Units to keep because a Slice computing its bounds at run time would then cut elsewhere."""
    refused = {}
    for output, bounds in structure.dynamic.items():
        source = structure.tracked[bounds.node.input[0]]
        keep = np.array([structure.root(i) not in chosen for i in source.ids])
        if keep.all():
            continue
        compacted = {}
        for tensor in {t for t, _, _ in bounds.leaves.values()}:
            shape = list(bounds.shapes[tensor])
            tracked = structure.tracked.get(tensor)
            if tracked is not None and tracked.grid is None:
                shape[tracked.axis] = sum(structure.root(i) not in chosen for i in tracked.ids)
            compacted[tensor] = tuple(shape)
        starts, ends, _, _ = bounds.evaluate(compacted)
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


def _reaches_kept(layer, size: int, positions: np.ndarray, keep_out: np.ndarray) -> np.ndarray:
    """For each removed input position, whether it feeds an output channel that stays."""
    if layer.op_type == "Conv" and layer.groups > 1:
        per_in, per_out = size // layer.groups, keep_out.size // layer.groups
        return np.array([keep_out[(p // per_in) * per_out : (p // per_in + 1) * per_out].any() for p in positions])
    return np.full(positions.size, bool(keep_out.any()))


def _cannot_fold(node, layer, model) -> str | None:
    """Why a nonzero constant at this consumer's input cannot become part of its bias (None: it can)."""
    if node.op_type == "Conv" and _has_padding(node):
        return "whose zero padding would make its contribution differ at the border"
    if node.op_type == "MatMul" and layer.bias is None:
        return "a MatMul with no bias to take it"
    if node.op_type == "Gemm" and _attribute(node, "beta", 1.0) == 0:
        return "a Gemm whose bias is multiplied by beta = 0"
    initializers = {t.name for t in model.proto.graph.initializer}
    if node.op_type in ("Conv", "Gemm") and len(node.input) > 2 and node.input[2] and node.input[2] not in initializers:
        producer = next((n for n in model.proto.graph.node if node.input[2] in n.output), None)
        if producer is None or producer.op_type not in ("Identity", "Constant"):
            return "whose bias is computed at run time"
    return None


def _has_padding(node) -> bool:
    pads = _attribute(node, "pads", [])
    auto = _attribute(node, "auto_pad", b"NOTSET")
    auto = auto.encode() if isinstance(auto, str) else auto
    return any(pads) or auto not in (b"NOTSET", b"VALID")


class _Store:
    """Initializer and constant values of the graph being compacted, written copy-on-write.

    Exporters share tensors between nodes (one shape constant for every shuffle of a stage, one
    zero bias fed through `Identity` nodes to several convolutions): a value cut for one node is
    written in place only where that node is its only user, else under a new name for that node.
    """

    def __init__(self, source: onnx.ModelProto, proto: onnx.ModelProto):
        self.original = {t.name: numpy_helper.to_array(t) for t in source.graph.initializer}
        self.values = dict(self.original)
        self.fresh: dict[str, np.ndarray] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.alias: dict[str, str] = {}
        for node in proto.graph.node:
            if node.op_type == "Constant" and _constant_node_value(node) is not None:
                self.constants[node.output[0]] = _constant_node_value(node)
            elif node.op_type == "Identity" and self.get(node.input[0]) is not None:
                self.alias[node.output[0]] = self.source(node.input[0])
        self.uses: dict[str, int] = {}
        for node in proto.graph.node:
            if node.op_type == "Identity" and node.output[0] in self.alias:
                continue
            for name in node.input:
                if name:
                    self.uses[self.source(name)] = self.uses.get(self.source(name), 0) + 1
        for value in proto.graph.output:
            self.uses[self.source(value.name)] = self.uses.get(self.source(value.name), 0) + 1
        self.taken = (
            set(self.values) | {o for n in proto.graph.node for o in n.output} | {v.name for v in proto.graph.input}
        )
        self.taken |= {n.name for n in proto.graph.node}  # names of new nodes come from here too

    def source(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def get(self, name: str) -> np.ndarray | None:
        """The current value of a constant input (an initializer, a Constant, or an Identity of one)."""
        if name in self.fresh:
            return self.fresh[name]
        name = self.source(name)
        return self.values[name] if name in self.values else self.constants.get(name)

    def put(self, node, index: int, array: np.ndarray, tag: str = "compacted") -> None:
        """Give `node.input[index]` a new value: in place if the node is its only user, else a copy."""
        name = node.input[index]
        if name in self.fresh:
            self.fresh[name] = array
        elif name in self.values and self.uses.get(name, 0) <= 1:
            self.values[name] = array
        else:
            node.input[index] = self.add(f"{self.source(name)}_{tag}", array)

    def add(self, hint: str, array: np.ndarray) -> str:
        """A new initializer with a name not used in the graph."""
        name = self.unique(hint)
        self.fresh[name] = array
        return name

    def unique(self, hint: str) -> str:
        name, suffix = hint, 1
        while name in self.taken:
            suffix += 1
            name = f"{hint}_{suffix}"
        self.taken.add(name)
        return name


def _rewrite(model: Model, structure: Structure, chosen: set[int], constants: _Constants):
    """A copy of the graph with every tensor touched by the removed channels cut down."""
    keep_of = {
        name: np.array([structure.root(i) not in chosen for i in tracked.ids])
        for name, tracked in structure.tracked.items()
    }
    layers = {layer.output: layer for layer in model.layers}
    proto = onnx.ModelProto()
    copy_without_initializers(model.proto, proto)
    store = _Store(model.proto, proto)
    producers = {output: n for n in proto.graph.node for output in n.output}
    readers: dict[str, list] = {}
    for node in proto.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    folded: list[str] = []
    rewritten: dict[str, str] = {}
    added: dict[int, list] = {}  # nodes to insert after node `index`
    inserted: dict[int, list] = {}  # and before it
    renamed: set[str] = set()
    for index, node in enumerate(proto.graph.node):
        output = node.output[0] if node.output else None
        layer = layers.get(output)
        if layer is not None:
            _cut_layer(node, layer, keep_of, store, constants, folded, readers)
        elif output in keep_of:
            _cut_channelwise(node, keep_of[output], structure.tracked[output], store, structure)
        if node.op_type in MIXING and node.input[0] in keep_of and not keep_of[node.input[0]].all():
            before, after = _lrn_over_kept(node, structure, keep_of, store, constants, model.opset)
            inserted.setdefault(index, []).extend(before)
            added.setdefault(index, []).extend(after)
            renamed.update(n.output[0] for n in before + after)
            rewritten[node.name or node.output[0]] = (
                "the LRN runs over the original channel positions, the removed channels put back as the "
                "constant they carry, so its window is unchanged"
            )
        elif node.op_type == "Gather" and output in structure.picks:
            _patch_gather(node, structure, keep_of, store)
        if node.op_type == "Split":
            _patch_split(node, structure, keep_of, store, model.opset)
        elif node.op_type == "Slice":
            _patch_slice(node, structure, keep_of, store)
        elif node.op_type == "Reshape" and output in keep_of and not keep_of[output].all():
            _patch_reshape(node, structure, keep_of, store, producers)
            gather = _shuffle_order(node, structure, keep_of, store)
            if gather is not None:
                added.setdefault(index, []).append(gather)
                renamed.add(node.output[0])
                rewritten[gather.name] = "restores the original order of the kept channels after a channel shuffle"
    if added or inserted:
        nodes = list(proto.graph.node)
        del proto.graph.node[:]
        for index, node in enumerate(nodes):
            proto.graph.node.extend(inserted.get(index, []))
            proto.graph.node.append(node)
            proto.graph.node.extend(added.get(index, []))
    _write_values(model, proto, store, keep_of, renamed)
    return proto, folded, rewritten


def _write_values(model: Model, proto: onnx.ModelProto, store: _Store, keep_of, renamed) -> None:
    """Initializers (cut, copied, new) into `proto`; value_info of changed tensors dropped; dead aliases gone."""
    changed = {name for name, keep in keep_of.items() if not keep.all()} | renamed
    # exporters (torch's dynamo) also record the shapes of initializers
    changed |= {name for name, array in store.values.items() if np.shape(array) != np.shape(store.original[name])}
    kept_info = [v for v in proto.graph.value_info if v.name not in changed]
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(kept_info)
    # an Identity alias whose readers were all given their own copy is dead: drop it, then unused originals
    read = {name for node in proto.graph.node for name in node.input} | {o.name for o in proto.graph.output}
    dead = [
        n
        for n in proto.graph.node
        if n.op_type == "Identity" and n.output[0] in store.alias and n.output[0] not in read
    ]
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


def _cut_layer(node, layer, keep_of, store: _Store, constants: _Constants, folded, readers) -> None:
    keep_out = keep_of[node.output[0]]
    weight = original = store.get(node.input[1])
    if node.input[0] in keep_of and not keep_of[node.input[0]].all():  # input channels / columns
        keep_in = keep_of[node.input[0]]
        carried = constants.values.get(node.input[0])
        if carried is not None and np.any(carried[~keep_in] != 0):
            contribution = _contribution(layer, weight, np.where(keep_in, 0.0, carried))
            _add_to_bias(node, layer, store, contribution, readers)
            folded.append(node.name or layer.name)
        weight = _cut_inputs(weight, layer, keep_in)
        if node.op_type == "Conv" and layer.groups > 1 and layer.shape[1] == 1 and layer.groups == keep_in.size:
            _set_group(node, int(keep_in.sum()))  # depthwise: one group per channel
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


def _contribution(layer, weight: np.ndarray, constant: np.ndarray) -> np.ndarray:
    """sum_c constant_c * W[:, c] over removed inputs c: what the consumer's bias must absorb."""
    weight = weight.astype(np.float64)
    if layer.op_type == "Conv":
        groups = layer.groups
        outputs, per_group_in = weight.shape[0], weight.shape[1]
        per_input = weight.reshape(groups, outputs // groups, per_group_in, -1).sum(axis=3)
        # a grouped convolution: input c reaches only the outputs of its own group
        return np.einsum("gok,gk->go", per_input, constant.reshape(groups, per_group_in)).reshape(outputs)
    return np.moveaxis(weight, layer.in_axis, -1) @ constant


def _add_to_bias(node, layer, store: _Store, contribution: np.ndarray, readers) -> None:
    dtype = store.get(node.input[1]).dtype
    if layer.op_type == "MatMul":
        add = next((n for n in readers.get(node.output[0], []) if n.op_type == "Add"), None)
        index = (
            None
            if add is None
            else next((i for i, name in enumerate(add.input) if store.source(name) == layer.bias), None)
        )
        if index is None:
            raise ConversionError(
                f"layer '{layer.name}': a removed input carries a constant and this MatMul has no bias to take it"
            )
        store.put(add, index, (store.get(add.input[index]).astype(np.float64) + contribution).astype(dtype))
        return
    scale = 1.0
    if layer.op_type == "Gemm":
        scale = _attribute(node, "alpha", 1.0) / _attribute(node, "beta", 1.0)
    if len(node.input) > 2 and node.input[2]:
        bias = store.get(node.input[2])
        if bias is None:
            raise ConversionError(f"layer '{layer.name}': its bias is computed at run time; cannot fold into it")
        store.put(node, 2, (bias.astype(np.float64) + scale * contribution).astype(bias.dtype))
        return
    while len(node.input) < 3:
        node.input.append("")
    node.input[2] = store.add(f"{layer.name}_folded_bias", (scale * contribution).astype(dtype))


def _set_group(node, groups: int) -> None:
    for attribute in node.attribute:
        if attribute.name == "group":
            attribute.i = groups


def _cut_channelwise(node, keep: np.ndarray, tracked: Tracked, store: _Store, structure: Structure) -> None:
    """Slice BatchNorm parameters and channel-wise constants of element-wise ops."""
    if keep.all():
        return
    if node.op_type in ("BatchNormalization", "InstanceNormalization", "PRelu"):
        for index in range(1, len(node.input)):
            array = store.get(node.input[index])
            if array is not None and array.ndim >= 1 and array.shape[0] == keep.size:
                store.put(node, index, array[keep])
        return
    if node.op_type in ELEMENTWISE:
        for index, name in enumerate(node.input):
            array = store.get(name)
            if name in structure.tracked or array is None or not array.ndim:
                continue
            axis = array.ndim - (tracked.rank - tracked.axis)  # numpy broadcasting aligns trailing axes
            if 0 <= axis < array.ndim and array.shape[axis] == keep.size:
                store.put(node, index, np.compress(keep, array, axis=axis))


def _lrn_over_kept(node, structure: Structure, keep_of, store: _Store, constants: _Constants, opset: int):
    """Nodes around an LRN so that it normalises the kept channels exactly as before.

    LRN's window spans `size` neighbouring channel positions; with channels removed, the kept
    ones would see other neighbours. So the compacted input is put back at the original positions:
    one zero channel padded at the end, a Gather placing every kept channel where it was and the
    pad where a removed one was, plus each removed channel's constant where it is not zero (what
    the masked model carried there). The LRN itself is unchanged; a Gather after it keeps the
    kept channels. Returns (nodes before the LRN, nodes after it); the LRN's output name stays.
    """
    source = node.input[0]
    tracked, keep = structure.tracked[source], keep_of[source]
    rank, axis = tracked.rank, tracked.axis
    kept = int(keep.sum())
    base = node.name or node.output[0]
    pads = [0] * (2 * rank)
    pads[rank + axis] = 1  # one zero channel after the kept ones, at compacted position `kept`
    padded = store.unique(f"{base}_padded")
    if opset >= 11:
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
    carried = constants.values.get(source, np.zeros(keep.size))
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


def _patch_gather(node, structure: Structure, keep_of, store: _Store) -> None:
    """Indices of a channel Gather: the kept channels it takes, at their compacted positions."""
    keep_in = keep_of[node.input[0]]
    if keep_in.all():
        return
    positions = structure.picks[node.output[0]]
    compacted = np.cumsum(keep_in) - 1
    indices = store.get(node.input[1])
    store.put(node, 1, compacted[positions[keep_in[positions]]].astype(indices.dtype))


def _patch_split(node, structure: Structure, keep_of, store: _Store, opset: int) -> None:
    """New split sizes: the channels each output keeps."""
    if not node.output or not all(o in structure.ranges for o in node.output):
        return
    old = [structure.ranges[o][1] - structure.ranges[o][0] for o in node.output]
    new = [int(keep_of[o].sum()) for o in node.output]
    if old == new:
        return
    for attribute in node.attribute:
        if attribute.name == "split":
            del attribute.ints[:]
            attribute.ints.extend(new)
            return
    if len(node.input) > 1 and node.input[1]:
        store.put(node, 1, np.array(new, np.int64))
        return
    for attribute in list(node.attribute):
        if attribute.name == "num_outputs":  # opset 18: equal parts no more; sizes replace the count
            node.attribute.remove(attribute)
    if opset >= 13:
        while len(node.input) < 2:
            node.input.append("")
        node.input[1] = store.add(f"{node.name or node.output[0]}_split", np.array(new, np.int64))
    else:
        node.attribute.append(helper.make_attribute("split", new))


def _patch_slice(node, structure: Structure, keep_of, store: _Store) -> None:
    """New start and end on the channel axis: the kept channels before them."""
    output = node.output[0]
    if output not in structure.ranges or output in structure.dynamic:
        return  # bounds computed at run time follow the compacted size (checked in _run_time_bounds_refused)
    start, stop = structure.ranges[output]
    keep_in = keep_of[node.input[0]]
    new_start, new_stop = int(keep_in[:start].sum()), int(keep_in[:stop].sum())
    if (new_start, new_stop) == (start, stop):
        return
    source = structure.tracked[node.input[0]]
    rank = len(structure.shapes.get(node.input[0]) or ()) or source.rank
    by_attribute = _attribute(node, "starts") is not None
    if by_attribute:
        starts, axes = list(_attribute(node, "starts")), _attribute(node, "axes")
    else:
        starts = list(np.ravel(store.get(node.input[1])))
        axes = list(np.ravel(store.get(node.input[3]))) if len(node.input) > 3 and node.input[3] else None
    axes = [int(a) % rank for a in (axes if axes is not None else range(len(starts)))]
    k = axes.index(source.axis)
    for index, key, value in ((1, "starts", new_start), (2, "ends", new_stop)):
        if by_attribute:
            attribute = next(a for a in node.attribute if a.name == key)
            if not (key == "ends" and attribute.ints[k] >= keep_in.size):  # "to the end" stays so
                attribute.ints[k] = value
        else:
            array = np.array(store.get(node.input[index]), copy=True)
            if not (key == "ends" and array[k] >= keep_in.size):
                array[k] = value
                store.put(node, index, array)


def _patch_reshape(node, structure: Structure, keep_of, store: _Store, producers) -> None:
    """The new size of the channel axis (or of a shuffle's group axis) in the Reshape's target shape."""
    if len(node.input) < 2:
        return
    target = structure.tracked[node.output[0]]
    kept = int(keep_of[node.output[0]].sum())
    if target.grid is not None:
        groups = target.grid[target.group_axis]
        position, old, new = target.axis + 1 - target.group_axis, target.grid[1 - target.group_axis], kept // groups
    else:
        position, old, new = target.axis, target.ids.size, kept
    _patch_shape_at(node, 1, position, old, new, store, producers, structure.shapes)


def _patch_shape_at(node, index, position, old, new, store: _Store, producers, shapes) -> None:
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
        _patch_shape_at(producer, 0, position, old, new, store, producers, shapes)
    elif producer.op_type == "Concat":
        offset = 0
        for part_index, part in enumerate(producer.input):
            part_value = store.get(part)
            length = np.size(part_value) if part_value is not None else (shapes.get(part) or (None,))[0]
            if not length:
                return  # a piece of unknown length: the position cannot be found
            if offset <= position < offset + length:
                _patch_shape_at(producer, part_index, position - offset, old, new, store, producers, shapes)
                return
            offset += length


def _shuffle_order(node, structure: Structure, keep_of, store: _Store):
    """A Gather putting a shuffle's kept channels back in their original order, where removal changed it.

    Each group of the shuffle keeps its channels in order, but groups keep different ones: merged
    back, the kept channels come out interleaved differently from the original's order. Every
    later consumer was cut for the original order, so the order is restored (None if it already is).
    """
    grid = structure.merges.get(node.output[0])
    if grid is None:
        return None
    rows, columns = grid.grid
    kept = keep_of[node.input[0]].reshape(rows, columns)
    positions = np.arange(rows * columns).reshape(rows, columns)
    if grid.group_axis == 0:
        order = np.stack([positions[i][kept[i]] for i in range(rows)])
    else:
        order = np.stack([positions[:, j][kept[:, j]] for j in range(columns)], axis=1)
    order = order.reshape(-1)
    if np.all(np.diff(order) > 0):
        return None
    output = node.output[0]
    node.output[0] = store.unique(f"{output}_shuffled")
    indices = store.add(f"{output}_channel_order", np.argsort(order).astype(np.int64))
    name = store.unique(f"{node.name or output}_channel_order")
    return helper.make_node(
        "Gather", [node.output[0], indices], [output], name=name, axis=structure.tracked[output].axis
    )


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
