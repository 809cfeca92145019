"""Which channels move together in an ONNX graph, and compaction: removing them for real.

The rooms:

- `groups.py`: the channel-group model. Every output channel of a prunable layer (Conv filter,
  fully-connected neuron) gets an id; ids that must go together are joined (union-find) into one
  removable *unit*; units that cannot go are blocked, with the reason naming the node.
- `handlers/`: one file per op family, `trace` (how channels flow through the op) and `patch`
  (what the op holds for removed channels, cut down) side by side, registered by op type. An op
  no handler knows goes to the generic rule (`handlers/generic.py`): channels pass where a probe
  in onnxruntime shows the op keeps them apart, else they are kept whole and named in a note.
- `analysis.py`: every node's handler, in graph order (`analyse`).
- `exact.py`: the exactness checks. A removed channel must carry a constant into its consumers
  (folded into their bias), never a varying value, never a nonzero constant into zero padding.
- `rewrite.py` and `store.py`: `compact`, the graph copy with the new initializers and shapes.

Compaction is exact or it does not remove: `CompactReport.skipped` says why a unit stayed. The
graph otherwise stays the original: names, op types, opset; the exceptions are listed in
`CompactReport.rewritten` (a `Gather` restoring channel order after a shuffle, an `LRN` run over
the original channel positions).
"""

from onnxprune.graph.channels.analysis import analyse
from onnxprune.graph.channels.groups import Structure, Tracked, Unit, removable, zero_units
from onnxprune.graph.channels.rewrite import CompactReport, compact

__all__ = ["CompactReport", "Structure", "Tracked", "Unit", "analyse", "compact", "removable", "zero_units"]
