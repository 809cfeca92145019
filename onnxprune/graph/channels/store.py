"""Initializer and constant values of a graph being compacted, written copy-on-write."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.graph.proto import constant_value


class Store:
    """Values of the graph being compacted, written copy-on-write.

    Exporters share tensors between nodes (one shape constant for every shuffle of a stage, one
    zero bias fed through `Identity` nodes to several convolutions): a value cut for one node is
    written in place only where that node is its only user, else under a new name for that node.
    """

    def __init__(self, source: onnx.ModelProto, proto: onnx.ModelProto) -> None:
        self.original = {t.name: numpy_helper.to_array(t) for t in source.graph.initializer}
        self.values = dict(self.original)
        self.fresh: dict[str, np.ndarray] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.alias: dict[str, str] = {}
        for node in proto.graph.node:
            value = constant_value(node)
            if value is not None:
                self.constants[node.output[0]] = value
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
        """The initializer or Constant an Identity chain reads."""
        while name in self.alias:
            name = self.alias[name]
        return name

    def get(self, name: str) -> np.ndarray | None:
        """The current value of a constant input (an initializer, a Constant, or an Identity of one)."""
        if name in self.fresh:
            return self.fresh[name]
        name = self.source(name)
        return self.values[name] if name in self.values else self.constants.get(name)

    def put(self, node: onnx.NodeProto, index: int, array: np.ndarray, tag: str = "compacted") -> None:
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
        """A tensor or node name not used in the graph, reserved."""
        name, suffix = hint, 1
        while name in self.taken:
            suffix += 1
            name = f"{hint}_{suffix}"
        self.taken.add(name)
        return name
