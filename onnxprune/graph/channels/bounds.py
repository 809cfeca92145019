"""Operands an exporter computes from tensor shapes at run time (TorchScript's `chunk`, TF's SAME pads).

The integer subgraph between the `Shape` nodes and a node's operands is cut out and run with
onnx's reference evaluator: at analysis on the original shapes, at compaction on the compacted
ones, to check that the operands then still select the same channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import helper

from onnxprune.graph.proto import attribute

if TYPE_CHECKING:
    from onnxprune.graph.channels.shapes import Shapes

# ops a computation from shapes never needs (only a path from `Shape` or constants is followed: a
# path to the input's values ends at the graph input and is refused anyway)
NOT_SHAPE_ARITHMETIC = {
    "Conv", "ConvTranspose", "Gemm", "MatMul", "RandomNormal", "RandomUniform", "Loop", "If", "Scan",
}  # fmt: skip


@dataclass
class RunTimeBounds:
    """A node's operands (inputs 1-4 by default) as computed at run time from `Shape`, for any input shapes."""

    node: onnx.NodeProto
    evaluator: Any
    leaves: dict[str, tuple[str, int | None, int | None]]  # Shape output -> (tensor read, start, end)
    shapes: dict[str, tuple[int, ...]]  # shapes of the tensors read, as measured
    operands: tuple[str, ...] = ()  # the node's inputs computed (empty names kept in place)
    index: int = 0  # which entry of starts/ends (or pads) is the channel axis
    axis: int = 1

    @staticmethod
    def of(node: onnx.NodeProto, shapes: Shapes, operands: tuple[str, ...] | None = None) -> RunTimeBounds | None:
        """The operands of `node` as a function of shapes, or None if they depend on anything else."""
        if operands is None:  # Slice: starts, ends, axes, steps
            operands = tuple(node.input[1:5]) + ("",) * (4 - len(node.input[1:5]))
        initializers = {t.name: t for t in shapes.model.proto.graph.initializer}
        nodes: dict[int, onnx.NodeProto] = {}
        leaves: dict[str, tuple[str, int | None, int | None]] = {}
        used: list[onnx.TensorProto] = []
        seen: set[str] = set()

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
                leaves[name] = (producer.input[0], attribute(producer, "start"), attribute(producer, "end"))
                return True
            if producer.op_type in NOT_SHAPE_ARITHMETIC or producer.domain not in ("", "ai.onnx"):
                return False
            if not all(visit(i) for i in producer.input):
                return False
            nodes.setdefault(id(producer), producer)  # after its inputs: topological order
            return True

        targets = [name for name in operands if name]
        if not targets or not all(visit(name) for name in targets):
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
            bounds = RunTimeBounds(node, ReferenceEvaluator(proto), leaves, read, operands)
            bounds.evaluate()
        except Exception:  # an op the reference evaluator does not run: not followed
            return None
        return bounds

    def evaluate(self, shapes: dict[str, tuple[int, ...]] | None = None) -> tuple:
        """The operands as lists of ints (None where absent), for the tensors read having `shapes`."""
        shapes = {**self.shapes, **(shapes or {})}
        feeds = {name: np.array(shapes[t][start:end], np.int64) for name, (t, start, end) in self.leaves.items()}
        names = [n for n in self.operands if n]
        values = dict(zip(names, self.evaluator.run(None, feeds), strict=True))
        return tuple([int(v) for v in np.ravel(values[n])] if n else None for n in self.operands)

    def constant_positions(self) -> set[int]:
        """Positions of the first operand that no shape read changes (constants the patch rewrites)."""
        grown = {t: (shape[0], *(d + 1 for d in shape[1:])) for t, shape in self.shapes.items()}
        before, after = self.evaluate()[0] or [], self.evaluate(grown)[0] or []
        return {i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a == b}
