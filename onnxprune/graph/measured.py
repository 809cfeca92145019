"""What onnxruntime measures on a model for its conversion copy: every tensor's shape, and static values.

Exporters leave graphs that onnx2torch converts only with facts shape inference loses: the rank
of a tensor after a `Reshape` whose target is computed (BatchNormalization and pooling on it
fail with "spatial rank == -2"), TensorFlow-style SAME padding computed from `Shape` at run time
(a `Max` and a `Pad` whose bounds are tensors), a weight standardised by ops in the graph (a
BatchNormalization in training form, or `ReduceMean`/`Sub`/`Div` over an initializer). One run
of the original model in onnxruntime, at batch sizes 1 and 2, gives:

- the shape of every tensor, recorded in the copy's value_info (the batch dimension symbolic
  where the two runs differ);
- the value of every *static* tensor (computed from initializers, constants and `Shape`s only,
  never from the input's values) that is the same at both batch sizes: the copy holds it as an
  initializer and drops the ops that computed it.

The written model keeps the user's graph; only the conversion copy changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.graph.proto import PRUNABLE_OPS, session, subgraph_reads

# ops whose output depends on more than their inputs' values, or whose shape on their values
NOT_STATIC = {
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli", "NonZero",
    "Unique", "Loop", "If", "Scan", "SequenceConstruct", "Dropout",
}  # fmt: skip
SHAPE_READERS = {"Shape", "Size"}
# ops whose weight and bias onnx2torch converts only from initializers (not from a Constant node:
# TResNet's anti-aliasing blur is a Conv whose kernel is a Constant)
WEIGHT_READERS = {"Conv", "ConvTranspose", "Gemm", "BatchNormalization", "InstanceNormalization", "LayerNormalization"}


@dataclass
class Measured:
    """Shapes of every tensor (None for a dimension that follows the batch) and the static values."""

    shapes: dict[str, tuple[int | None, ...]] = field(default_factory=dict)
    types: dict[str, int] = field(default_factory=dict)
    static: dict[str, np.ndarray] = field(default_factory=dict)


def measure(proto: onnx.ModelProto) -> Measured:
    """Run `proto` (with its weights) in onnxruntime at batch 1 and 2; an empty result where it cannot run.

    Nothing is measured when the input has symbolic dimensions besides the batch (a value read
    at one image size would be wrong at another).
    """
    shape = _input_shape(proto)
    if shape is None:
        return Measured()
    candidates, from_shapes = static_frontier(proto)
    outputs = [o for node in proto.graph.node for o in node.output if o]
    runs = []
    for batch in (1, 2) if shape[0] is None else (shape[0],):
        try:
            runs.append(_run(proto, outputs, shape, batch))
        except Exception:  # a graph onnxruntime cannot run (or only at batch 1: a reshape to [1, -1])
            break
    if not runs:
        return Measured()
    if len(runs) == 1 and shape[0] is None:  # batch-following values cannot be told apart: weights only
        candidates -= from_shapes
    measured = Measured()
    for name in outputs:
        values = [run.get(name) for run in runs]
        if any(v is None for v in values):
            continue
        shapes = [np.shape(v) for v in values]
        if len({len(s) for s in shapes}) != 1:
            continue
        measured.shapes[name] = tuple(d if all(s[i] == d for s in shapes) else None for i, d in enumerate(shapes[0]))
        measured.types[name] = helper.np_dtype_to_tensor_dtype(np.asarray(values[0]).dtype)
        if name in candidates and all(np.array_equal(values[0], v) for v in values[1:]):
            measured.static[name] = np.asarray(values[0])
    return measured


def _input_shape(proto: onnx.ModelProto) -> tuple[int | None, ...] | None:
    """The first real input's shape, the batch as None when symbolic; None if another dimension is."""
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [value for value in proto.graph.input if value.name not in initializers]
    if len(inputs) != 1 or inputs[0].type.tensor_type.elem_type not in (
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.DOUBLE,
    ):
        return None
    dims = [
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
        for d in inputs[0].type.tensor_type.shape.dim
    ]
    if not dims or any(d is None for d in dims[1:]):
        return None
    return tuple(dims)


def _run(proto: onnx.ModelProto, outputs: list[str], shape: tuple, batch: int) -> dict[str, np.ndarray]:
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    existing = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in outputs if name not in existing)
    initializers = {t.name for t in proto.graph.initializer}
    value = next(v for v in proto.graph.input if v.name not in initializers)
    dtype = np.float64 if value.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE else np.float32
    data = np.random.default_rng(batch).random((batch, *shape[1:])).astype(dtype)
    run = session(probe.SerializeToString())
    names = [o.name for o in run.get_outputs()]
    return dict(zip(names, run.run(None, {value.name: data}), strict=True))


def static_frontier(proto: onnx.ModelProto) -> tuple[set[str], set[str]]:
    """Static tensors (see the module docstring) that a non-static node reads: what folding replaces.

    Returns the frontier and, of all static tensors, those computed from a `Shape` (they may
    follow the batch size; the others are functions of the weights alone).
    """
    static = {t.name for t in proto.graph.initializer}
    initializers = set(static)
    computed_static, from_shapes = set(), set()
    for node in proto.graph.node:
        outputs = [o for o in node.output if o]
        if node.op_type in NOT_STATIC or node.domain not in ("", "ai.onnx") or _is_layer(node, initializers):
            continue
        if node.op_type == "Constant":
            static.update(outputs)
        elif node.op_type in SHAPE_READERS:
            static.update(outputs)
            computed_static.update(outputs)
            from_shapes.update(outputs)
        elif all(not name or name in static for name in node.input):
            static.update(outputs)
            computed_static.update(outputs)
            if any(name in from_shapes for name in node.input):
                from_shapes.update(outputs)
    frontier = set()
    for node in proto.graph.node:
        if not all(o in computed_static for o in node.output if o):
            read = set(node.input) | subgraph_reads(node)
            frontier.update(name for name in read if name in computed_static)
        if node.op_type in WEIGHT_READERS:  # onnx2torch reads their weights from initializers only
            frontier.update(name for name in node.input[1:] if name in static and name not in initializers)
    return frontier, from_shapes


def _is_layer(node: onnx.NodeProto, initializers: set[str]) -> bool:
    """Whether `node` is one onnxprune prunes (a weight initializer as its second input).

    Such a node is never folded, even when its input is static (a relative-position MLP fed
    with a constant coordinate table): its weight must stay a torch parameter.
    """
    return node.op_type in PRUNABLE_OPS and len(node.input) > 1 and node.input[1] in initializers


def fold_static(copy: onnx.ModelProto, measured: Measured) -> list[str]:
    """Replace the static tensors of `copy` by initializers and drop the nodes no longer read.

    Returns the names folded.
    """
    if not measured.static:
        return []
    present = {o for node in copy.graph.node for o in node.output}
    folded = [name for name in measured.static if name in present]
    existing = {t.name for t in copy.graph.initializer}
    for name in folded:
        if name not in existing:
            copy.graph.initializer.append(numpy_helper.from_array(measured.static[name], name))
    _drop_dead_nodes(copy, set(folded))
    return folded


def _drop_dead_nodes(copy: onnx.ModelProto, replaced: set[str]) -> None:
    """Remove nodes whose outputs nothing reads any more (their folded outputs became initializers)."""
    needed = {o.name for o in copy.graph.output}
    kept = []
    for node in reversed(copy.graph.node):
        outputs = [o for o in node.output if o]
        if any(o in needed and o not in replaced for o in outputs):
            kept.append(node)
            needed.update(name for name in node.input if name)
            needed.update(subgraph_reads(node))  # an If branch reads outer tensors by name
    kept.reverse()
    del copy.graph.node[:]
    copy.graph.node.extend(kept)
    used = {name for node in copy.graph.node for name in node.input} | needed
    initializers = [t for t in copy.graph.initializer if t.name in used]
    del copy.graph.initializer[:]
    copy.graph.initializer.extend(initializers)


def record_shapes(copy: onnx.ModelProto, measured: Measured) -> None:
    """Write the measured shapes into `copy`'s value_info (batch-following dimensions symbolic)."""
    if not measured.shapes:
        return
    outputs = {o.name for o in copy.graph.output}
    kept = [v for v in copy.graph.value_info if v.name not in measured.shapes]
    del copy.graph.value_info[:]
    copy.graph.value_info.extend(kept)
    present = {o for node in copy.graph.node for o in node.output}
    for name, shape in measured.shapes.items():
        if name in present and name not in outputs:
            dims = [d if d is not None else "batch" for d in shape]
            copy.graph.value_info.append(helper.make_tensor_value_info(name, measured.types[name], dims))
