"""The handler contract and its registry: how channels flow through one op family.

A handler has two methods side by side: `trace` (analysis: which channel ids the node's outputs
carry, which ids it joins or blocks) and `patch` (compaction: what the node holds for removed
channels, cut down). `OPS` maps an op type to its handler; `register` fills it and refuses a
second handler for the same op. Ops no handler knows go to the generic rule (`generic.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import onnx

if TYPE_CHECKING:
    from onnxprune.graph.channels.groups import Structure, Tracked
    from onnxprune.graph.channels.shapes import Shapes
    from onnxprune.graph.channels.store import Store
    from onnxprune.graph.model import Model, PrunableLayer


@dataclass
class TraceContext:
    """What a handler reads while tracing: the structure being built and the graph's facts."""

    structure: Structure
    model: Model
    layers: dict[str, PrunableLayer]  # output tensor -> the prunable layer computing it
    initializers: set[str]  # initializer names, and Identity aliases of them
    constants: dict[str, np.ndarray]  # small constant values (axes, pads, sizes)
    shapes: Shapes


@dataclass
class PatchContext:
    """What a handler reads and writes while compacting one graph copy."""

    model: Model
    structure: Structure
    keep_of: dict[str, np.ndarray]  # tracked tensor -> which of its channel positions stay
    store: Store
    carried: dict[str, np.ndarray]  # tensor -> the constant each removed position carries (0: kept)
    producers: dict[str, onnx.NodeProto]
    readers: dict[str, list[onnx.NodeProto]]
    layers: dict[str, PrunableLayer]
    opset: int
    folded: list[str] = field(default_factory=list)
    rewritten: dict[str, str] = field(default_factory=dict)
    before: dict[int, list[onnx.NodeProto]] = field(default_factory=dict)  # nodes to insert before node i
    after: dict[int, list[onnx.NodeProto]] = field(default_factory=dict)  # and after it
    renamed: set[str] = field(default_factory=set)

    def changed(self, tensor: str) -> bool:
        """Whether `tensor` loses channels."""
        keep = self.keep_of.get(tensor)
        return keep is not None and not keep.all()


def where(node: onnx.NodeProto, index: int) -> str:
    """A node as messages name it: `node 'name' (Op)`."""
    return f"node '{node.name or f'#{index}'}' ({node.op_type})"


class Handler:
    """How channels flow through the ops in `ops`.

    Subclasses implement `trace`; `patch` is needed only where the node holds something sized by
    the channels (parameters, split sizes, a target shape).
    """

    ops: ClassVar[tuple[str, ...]] = ()
    # ops that may read a channel shuffle's split channel axis (see groups.Tracked.grid)
    follows_shuffles: ClassVar[frozenset[str]] = frozenset()
    # False: traced even when no input carries channels (layers create them)
    needs_tracked_input: ClassVar[bool] = True
    # True: the op reads the values of neighbouring channels (LRN); exact.py measures what removed ones carry
    reads_neighbours: ClassVar[bool] = False

    def trace(self, ctx: TraceContext, node: onnx.NodeProto, inputs: list[Tracked | None], where: str) -> bool:
        """Record what the node's outputs carry; False when this node is outside what the handler follows.

        A False answer sends the node to the generic rule.
        """
        raise NotImplementedError

    def patch(self, ctx: PatchContext, node: onnx.NodeProto, index: int) -> None:
        """Cut what the node holds for the removed channels (default: nothing)."""

    def reads_shuffled(self, ctx: TraceContext, node: onnx.NodeProto) -> bool:
        """Whether `trace` takes an input whose channel axis a shuffle split in two."""
        return node.op_type in self.follows_shuffles


OPS: dict[str, Handler] = {}


def register(handler_class: type[Handler]) -> type[Handler]:
    """Class decorator: make an instance the handler of each op in `handler_class.ops`.

    Raises:
        ValueError: an op already has a handler (two rules for one op would silently disagree).
    """
    handler = handler_class()
    for op in handler_class.ops:
        if op in OPS:
            raise ValueError(f"op {op} already has the handler {type(OPS[op]).__name__}")
        OPS[op] = handler
    return handler_class


def unregister(op: str) -> None:
    """Remove the handler of `op` (tests register handlers of their own)."""
    OPS.pop(op, None)
