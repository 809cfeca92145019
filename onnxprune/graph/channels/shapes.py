"""What the channel analysis reads of a graph besides its nodes: static shapes and small constants.

Shapes come from ONNX shape inference with data propagation; where it leaves a dimension unknown
that a handler needs (exporters compute shuffle targets from `Shape` at run time, `C / 2`), the
model is run once in onnxruntime and the shapes are measured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.graph.proto import constant_map, inferred_shapes, session

if TYPE_CHECKING:
    from onnxprune.graph.model import Model

# a constant above this many elements is not read as an operand (axes, pads, sizes are small)
SMALL_CONSTANT = 16


def constant_values(model: Model) -> dict[str, np.ndarray]:
    """Values of the small initializers, Constant nodes and Identity nodes of them."""
    return constant_map(model.proto, max_size=SMALL_CONSTANT, through_identity=True)


class Shapes:
    """Static shapes: ONNX shape inference with data propagation, else one onnxruntime run.

    The run is made only when a handler asks for a shape inference left incomplete.
    """

    def __init__(self, model: Model) -> None:
        self.model = model
        self.known = inferred_shapes(model.proto, data_prop=True)
        self.measured = False
        self._integers: dict[str, np.ndarray] | None = None
        self._producers: dict[str, onnx.NodeProto] | None = None
        for value in model.proto.graph.input:
            dims = value.type.tensor_type.shape.dim
            self.known.setdefault(value.name, tuple(d.dim_value if d.HasField("dim_value") else 0 for d in dims))

    @property
    def model_initializers(self) -> dict[str, np.ndarray]:
        """Integer initializers of any size (indices), as arrays."""
        if self._integers is None:
            self._integers = {
                t.name: numpy_helper.to_array(t) for t in self.model.proto.graph.initializer
                if t.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32)
            }  # fmt: skip
        return self._integers

    @property
    def producers(self) -> dict[str, onnx.NodeProto]:
        """Tensor name -> the node that computes it."""
        if self._producers is None:
            self._producers = {o: n for n in self.model.proto.graph.node for o in n.output}
        return self._producers

    def get(self, name: str, complete: bool = False) -> tuple[int, ...] | None:
        """The shape of `name`; with `complete`, measured if inference left any non-batch dimension unknown."""
        shape = self.known.get(name)
        if complete and (not shape or 0 in shape[1:]) and not self.measured:
            self.measured = True
            self.known.update({k: v for k, v in measured_shapes(self.model).items() if k not in self.known or
                               0 in self.known[k][1:] or not self.known[k]})  # fmt: skip
            shape = self.known.get(name)
        return shape

    def rank(self, name: str, default: int) -> int:
        """The rank of `name` where known, else `default`."""
        return len(self.get(name) or ()) or default


def measured_shapes(model: Model) -> dict[str, tuple[int, ...]]:
    """The shape of every node output, from one onnxruntime run ({} if the graph does not run)."""
    try:
        outputs = run_with_outputs(model, [o for n in model.proto.graph.node for o in n.output if o], seeds=(1,))
    except Exception:  # a graph onnxruntime cannot run keeps the inferred shapes
        return {}
    return {name: tuple(int(d) for d in np.shape(value)) for name, value in outputs.items()}


def run_with_outputs(model: Model, tensors: list[str], seeds: tuple[int, ...] = (1,)) -> dict[str, np.ndarray]:
    """Run the model in onnxruntime on random batches with `tensors` as extra outputs (one batch per seed)."""
    from onnxprune.graph.verify import random_batch

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
