"""The channel-group model: channel ids, their union-find classes (units), and which units can go.

Every output channel of a prunable layer (Conv filter, fully-connected neuron) gets an id. The
handlers (`handlers/`) carry the ids along the graph as `Tracked` tensors and join the ids that
must be removed together (a residual `Add`, a squeeze-and-excitation gate); a union-find class of
ids is one removable *unit*. A unit that cannot be removed is *blocked*, with the reason naming
the node: by design (`protected`: it reaches a graph output, a Softmax normalises over it) or
because a handler could not follow it (unresolved: kept whole and named in a note).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from onnxprune.graph.channels.bounds import RunTimeBounds
    from onnxprune.graph.model import Model


class UnionFind:
    """Disjoint sets of channel ids, with path halving."""

    def __init__(self) -> None:
        self.parent: list[int] = []

    def add(self) -> int:
        """A new id in a set of its own."""
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, item: int) -> int:
        """The root of the set holding `item`."""
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, a: int, b: int) -> None:
        """Join the sets of `a` and `b`."""
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
        computed: output of a `Reshape` or `Pad` whose target shape or pads are computed from
            `Shape` at run time -> how to recompute them (exact.py checks they still fit).
        shapes: the static shape of each tensor where known (0 for an unknown dimension).
        generic: nodes of ops no handler knows that the generic rule let channels pass (name -> op).
    """

    tracked: dict[str, Tracked] = field(default_factory=dict)
    uf: UnionFind = field(default_factory=UnionFind)
    producers: dict[str, np.ndarray] = field(default_factory=dict)
    owner: list[tuple[str, int]] = field(default_factory=list)
    blocked: dict[int, str] = field(default_factory=dict)
    protected: set[int] = field(default_factory=set)
    blocks: list[list[np.ndarray]] = field(default_factory=list)
    inexact: dict[str, str] = field(default_factory=dict)
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    merges: dict[str, Tracked] = field(default_factory=dict)
    dynamic: dict[str, RunTimeBounds] = field(default_factory=dict, repr=False)
    computed: dict[str, RunTimeBounds] = field(default_factory=dict, repr=False)
    picks: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict, repr=False)
    generic: dict[str, str] = field(default_factory=dict)

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
        protected_roots = {self.root(i) for i in self.protected}
        for unit in units.values():
            if unit.blocked_by and unit.root in protected_roots:
                unit.unresolved = False  # protected by design wins: nothing to report
        return units

    def layer_units(self, layer: str) -> np.ndarray:
        """The unit (root) of each output channel of a layer."""
        return np.array([self.root(i) for i in self.producers[layer]], dtype=np.int64)

    def new_ids(self, layer: str, count: int) -> np.ndarray:
        """Ids for the `count` output channels of a prunable layer."""
        ids = np.array([self.uf.add() for _ in range(count)], dtype=np.int64)
        self.owner.extend((layer, i) for i in range(count))
        self.producers[layer] = ids
        return ids

    def constant_ids(self, owner: str, count: int, reason: str) -> list[int]:
        """Ids for channels an op adds (padding): never removable, owned by `owner`."""
        added = []
        for i in range(count):
            added.append(self.uf.add())
            self.owner.append((owner, i))
            self.blocked[added[-1]] = reason
            self.protected.add(added[-1])
        return added

    def block(self, tracked: list[Tracked], reason: str, protected: bool = False) -> None:
        """Mark channels as not removable: `protected` ones by design (outputs), others unresolved."""
        for item in tracked:
            for channel_id in np.unique(item.ids):
                self.blocked.setdefault(int(channel_id), reason)
                if protected:
                    self.protected.add(int(channel_id))

    def block_tensor(self, tensor: str, reason: str) -> None:
        """Protect the channels of `tensor` (if it carries any)."""
        tracked = self.tracked.get(tensor)
        if tracked is not None:
            self.block([tracked], reason, protected=True)

    def union_all(self, first: Tracked, other: Tracked) -> None:
        """Channel c of one tensor meets channel c of the other: they go together."""
        for a, b in zip(first.ids, other.ids, strict=True):
            self.uf.union(int(a), int(b))


def label(unit: Unit) -> str:
    """A unit as a user reads it: its first member, `layer[channel]`."""
    return f"{unit.members[0][0]}[{unit.members[0][1]}]"


def zero_units(model: Model, structure: Structure) -> set[int]:
    """Units whose every member filter (weights) is all zero in the model's initializers."""
    zero: dict[int, bool] = {}
    for layer in model.layers:
        if layer.name not in structure.producers:
            continue
        weight = np.moveaxis(model.weight_array(layer), layer.out_axis, 0)
        is_zero = ~weight.reshape(weight.shape[0], -1).any(axis=1)
        for root, empty in zip(structure.layer_units(layer.name), is_zero, strict=True):
            zero[int(root)] = zero.get(int(root), True) and bool(empty)
    return {root for root, empty in zero.items() if empty}


def removable(structure: Structure, candidates: set[int]) -> tuple[set[int], dict[str, str]]:
    """The candidates that can go, and why each other one stays (unit label -> reason).

    Not blocked, equal in number in every block (grouped convolution, channel shuffle), and never
    every channel of a tensor.
    """
    units = structure.units()
    skipped: dict[str, str] = {}
    chosen = set()
    for root in candidates:
        unit = units[root]
        if unit.blocked_by:
            skipped[label(unit)] = unit.blocked_by
        else:
            chosen.add(root)
    balance(structure, chosen, skipped, units)
    return chosen, skipped


def balance(structure: Structure, chosen: set[int], skipped: dict[str, str], units: dict[int, Unit]) -> None:
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
                        skipped[label(units[root])] = (
                            "a grouped convolution or a channel shuffle needs equal removals in every group"
                        )
        for tracked in tensors:
            roots = [structure.root(i) for i in tracked.ids]
            if roots and all(root in chosen for root in roots):
                chosen.discard(roots[-1])
                changed = True
                skipped[label(units[roots[-1]])] = "removing it would leave a tensor without channels"
