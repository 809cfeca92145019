"""Structured pruning to a budget: a measured speedup in onnxruntime (`--speedup`) or a MAC fraction (`--target-macs`).

The channels go where they cost most and matter least: starting from the dense model, the
selection group (a layer's filters, or channels coupled by residual connections) whose next
block of lowest-scored channels has the smallest importance per unit of cost saved loses them,
until the predicted cost meets the budget (greedy, as HALP and NetAdapt do). A block's importance
is divided by the square of the fraction of its group that would be left (`THINNING`): scores are
normalised per layer, so without it the layers whose channels cost most would be emptied first
whatever they carry. Blocks keep each
group a multiple of `round_to` channels (the widths onnxruntime runs fast), and the greedy step
also looks two blocks ahead, because some kernels only get faster every 16 channels.

The cost of a layer is its MACs, or its latency in onnxruntime at its new input and output widths
from the machine's `onnxprune.workbench.latency.LatencyTable` (measured once, cached). For a
speedup the prediction is the table's layers plus what the rest of the graph costs (the measured
dense latency less the dense layers' table sum); the pruned model is then compacted and timed
against the dense one, end to end, and the budget corrected by the error until the measured
speedup is within `TOLERANCE` of the request (at most `ATTEMPTS` times). Where the table sees no
more time to save and the plan is still short (small models, whose table is pessimistic), every
group is taken to its floor and timed; a request even that misses is refused with the measured
figure, otherwise MAC fractions are bisected (at most `ATTEMPTS` more plans, each timed). The
report says what was reached, and why where it falls short.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from onnxprune.errors import ConfigError, stage
from onnxprune.graph.channels import Structure
from onnxprune.graph.model import Model, from_proto
from onnxprune.pruning.channels import ChannelGroup, ChannelPlan, floors, selectable
from onnxprune.pruning.methods.registry import Method, ScoreContext
from onnxprune.workbench.latency import LatencyTable, LayerShape, layer_shapes

TOLERANCE = 0.10  # the measured speedup may miss the request by this fraction
THINNING = 2.0  # a block's importance is divided by (the fraction its group keeps) ** THINNING
ATTEMPTS = 4


@dataclass
class LayerWidths:
    """How one prunable layer's widths follow the removed units."""

    name: str
    cout: int
    cin: int  # input features (channels of a Conv)
    out_counts: dict[int, int]  # unit root -> output channels it owns
    in_counts: dict[int, int]  # unit root -> input features it feeds (empty: inputs not followed)
    macs: int
    depthwise: bool
    shape: LayerShape | None


@dataclass
class BudgetReport:
    """What a budget run asked for, predicted, measured and decided."""

    kind: str  # "speedup" or "macs"
    target: float
    reached: float  # measured speedup, or MAC fraction left
    within: bool
    macs_left: float
    measured_speedup: float | None = None
    batch: int = 1
    threads: int = 0
    attempts: list[dict] = field(default_factory=list)
    table: str = ""
    table_measured: int = 0
    why: str = ""

    def note(self) -> str:
        """One line for the run's notes."""
        where = f"in onnxruntime (batch {self.batch}, {self.threads} thread(s), end to end)"
        slower = " (slower than the dense model)" if (self.measured_speedup or 1.0) < 1.0 else ""
        if self.kind == "speedup":
            return (
                f"--speedup {self.target:g}: measured {self.reached:.2f}x {where}{slower}, {self.macs_left:.1%} "
                f"of the dense MACs left"
                + ("" if self.within else f"; not within {TOLERANCE:.0%}: {self.why}")
                + f"; latency table {self.table} ({self.table_measured} layer shape(s) timed now)"
            )
        return (
            f"--target-macs {self.target:g}: {self.macs_left:.1%} of the dense MACs left, "
            f"{self.measured_speedup:.2f}x {where}{slower}" + ("" if self.within else f"; not reached: {self.why}")
        )


def layer_widths(model: Model, structure: Structure, batch: int) -> list[LayerWidths]:
    """Every prunable layer's widths as functions of the units removed."""
    shapes = layer_shapes(model, batch)
    nodes = {node.output[0]: node for node in model.proto.graph.node if node.output}
    result = []
    for layer in model.layers:
        out_counts: dict[int, int] = {}
        if layer.name in structure.producers:
            for root in structure.layer_units(layer.name):
                out_counts[int(root)] = out_counts.get(int(root), 0) + 1
        in_counts: dict[int, int] = {}
        node = nodes.get(layer.output)
        tracked = structure.tracked.get(node.input[0]) if node is not None else None
        if tracked is not None and tracked.grid is None:
            for channel_id in tracked.ids:
                root = structure.root(int(channel_id))
                in_counts[root] = in_counts.get(root, 0) + 1
        cout = layer.shape[layer.out_axis]
        cin = layer.shape[layer.in_axis] * layer.groups
        if in_counts and sum(in_counts.values()) != cin:
            in_counts = {}  # the tracked axis is not this layer's input axis: its inputs are not followed
        depthwise = layer.groups > 1 and layer.groups == cout
        result.append(LayerWidths(layer.name, cout, cin, out_counts, in_counts, layer.macs, depthwise,
                                  shapes.get(layer.name)))  # fmt: skip
    return result


class _Costs:
    """A layer's cost at given widths: MACs, or milliseconds from the latency table."""

    def __init__(self, layers: list[LayerWidths], table: LatencyTable | None) -> None:
        self.table = table
        self.ms_per_mac = 0.0
        if table is not None:  # layers of unknown geometry are costed at the model's ms per MAC
            shaped = [layer for layer in layers if layer.shape is not None]
            macs = sum(layer.macs for layer in shaped)
            self.ms_per_mac = sum(table.milliseconds(layer.shape) for layer in shaped) / macs if macs else 0.0

    def __call__(self, layer: LayerWidths, kin: int, kout: int) -> float:
        if self.table is not None and layer.shape is not None:
            return self.table.milliseconds(layer.shape.with_widths(kin, kout))  # depthwise: kin follows kout
        macs = layer.macs * (kout / layer.cout) * (1.0 if layer.depthwise else kin / max(1, layer.cin))
        return macs * self.ms_per_mac if self.table is not None else macs


def greedy_plan(
    groups: dict[str, ChannelGroup], scores: dict[int, float], layers: list[LayerWidths], cost: _Costs,
    budget: float, max_layer_sparsity: float, round_to: int, meter: _Costs | None = None,
) -> tuple[dict[str, int], float]:  # fmt: skip
    """Units to remove per group so that the summed cost is at most `budget`; (counts, cost reached).

    `meter`: what the budget is counted in, when not `cost` (MACs counted, latency ranking the moves).
    """
    meter = meter or cost
    order = {name: _removal_order(group, scores) for name, group in groups.items()}
    floor = floors(groups, max_layer_sparsity)
    removed = {name: 0 for name in groups}
    widths = {layer.name: [layer.cin, layer.cout] for layer in layers}
    touching = {
        name: [layer for layer in layers if any(r in layer.out_counts or r in layer.in_counts for r in group.roots)]
        for name, group in groups.items()
    }
    total = sum(meter(layer, *widths[layer.name]) for layer in layers)
    while total > budget:
        best = None
        for name, group in groups.items():
            kept = len(group.roots) - removed[name]
            for step in _steps(group, kept, round_to):
                if kept - step < floor[name]:
                    continue
                new = order[name][removed[name] : removed[name] + step]
                saved, metered, changes = 0.0, 0.0, {}
                for layer in touching[name]:
                    kin = widths[layer.name][0] - sum(layer.in_counts.get(r, 0) for r in new)
                    kout = widths[layer.name][1] - sum(layer.out_counts.get(r, 0) for r in new)
                    saved += cost(layer, *widths[layer.name]) - cost(layer, kin, kout)
                    metered += meter(layer, *widths[layer.name]) - meter(layer, kin, kout)
                    changes[layer.name] = [kin, kout]
                if metered <= 0 or (saved <= 0 and meter is cost):
                    continue
                if saved <= 0:  # MACs saved, no measured time (noise, or a step): ranked after the moves that save time
                    saved = 1e-12 * metered
                # a channel matters more as its group thins: divided by the fraction the group keeps,
                # so that no layer is emptied for its cost alone (an L1 score is only comparable within a layer)
                keeps = (kept - step) / len(group.roots)
                ratio = sum(max(scores[r], 0.0) for r in new) / keeps**THINNING / saved
                if best is None or ratio < best[0]:
                    best = (ratio, name, step, changes, metered)
        if best is None:
            break  # every group is at its floor, or no step saves anything
        _, name, step, changes, metered = best
        removed[name] += step
        widths.update(changes)
        total -= metered
    return removed, total


def _removal_order(group: ChannelGroup, scores: dict[int, float]) -> list[int]:
    """The group's units, lowest score first; a grouped convolution's blocks take turns (equal removal)."""
    if not group.blocks:
        return sorted(group.roots, key=lambda r: (scores[r], r))
    per_block = [sorted(block, key=lambda r: (scores[r], r)) for block in group.blocks]
    return [block[i] for i in range(min(len(b) for b in per_block)) for block in per_block]


def _steps(group: ChannelGroup, kept: int, round_to: int) -> tuple[int, ...]:
    """How many units the next move may take: to the next multiple of `round_to` (and one block more).

    A grouped convolution's blocks lose the same number each, so the multiple is per block.
    """
    blocks = max(1, len(group.blocks))
    per_block, size = kept // blocks, len(group.roots) // blocks
    if round_to <= 1 or size < 4 * round_to:
        return (blocks, 2 * blocks)
    first = per_block - round_to * ((per_block - 1) // round_to)
    return (blocks * first, blocks * (first + round_to))


@stage("selection")
def plan_to_budget(
    model: Model, method: Method, ctx: ScoreContext, *, speedup: float | None = None,
    target_macs: float | None = None, batch: int = 32, threads: int | None = None,
    max_layer_sparsity: float = 0.99, round_to: int = 8, mask_only: bool = False,
) -> tuple[ChannelPlan, BudgetReport]:  # fmt: skip
    """The channels to remove for a measured `speedup` or a `target_macs` fraction; see the module docstring."""
    from onnxprune.graph.channels import compact
    from onnxprune.workbench.timing import available_cores, time_side_by_side

    structure, groups, kept_layers, kept, scores = selectable(model, method, ctx, mask_only)
    layers = layer_widths(model, structure, batch)
    dense_macs = sum(layer.macs for layer in layers)
    if not dense_macs:
        raise ConfigError("the model's layer shapes are unknown (shape inference failed): no budget can be costed")
    threads = threads or available_cores()

    def plan_for(counts: dict[str, int]) -> ChannelPlan:
        chosen = {root for name, group in groups.items() for root in _removal_order(group, scores)[: counts[name]]}
        return ChannelPlan(structure, groups, chosen, counts, kept_layers, kept)

    def timed(chosen: ChannelPlan) -> tuple[float, float]:
        """(measured speedup, MAC fraction left) of the model compacted as `chosen` would leave it."""
        from onnxprune.graph.storage import write_back
        from onnxprune.pruning.channels import apply
        from onnxprune.workbench.convert import to_torch

        scratch = to_torch(model)  # zeroed the way the prune zeroes (filters, biases, norms), then compacted
        apply(scratch, model, chosen, keep_masks=False)
        small = from_proto(compact(from_proto(write_back(model, scratch.initializer_values(model))),
                                   remove=chosen.removed)[0])  # fmt: skip
        dense, pruned = time_side_by_side([model, small], [batch], threads)
        return dense.latency_ms[str(batch)]["median"] / pruned.latency_ms[str(batch)]["median"], (
            small.layer_total("macs") / max(1, model.layer_total("macs"))
        )

    mac_costs = _Costs(layers, None)
    table = LatencyTable(threads)
    costs = _Costs(layers, table)
    if target_macs is not None:  # the MACs counted; the moves ranked by the milliseconds they save
        counts, reached = greedy_plan(groups, scores, layers, costs, target_macs * dense_macs,
                                      max_layer_sparsity, round_to, meter=mac_costs)  # fmt: skip
        table.save()
        chosen = plan_for(counts)
        measured, left = timed(chosen)
        within = left <= target_macs + 1e-9
        report = BudgetReport("macs", target_macs, left, within, left, measured, batch, threads,
                              why="" if within else "every layer is at its floor (--max-layer-sparsity)")  # fmt: skip
        return chosen, report

    layer_sum = sum(costs(layer, layer.cin, layer.cout) for layer in layers)
    (dense_timed,) = time_side_by_side([model], [batch], threads)
    dense_ms = dense_timed.latency_ms[str(batch)]["median"]
    rest = max(0.0, dense_ms - layer_sum)  # pooling, activations, copies: they shrink little
    goal = dense_ms / speedup - rest
    attempts, best = [], None

    def by_macs(fraction: float) -> tuple[ChannelPlan, float, float]:
        """The plan with at most `fraction` of the dense MACs (moves still ranked by the table), measured."""
        counts, _ = greedy_plan(groups, scores, layers, costs, fraction * dense_macs, max_layer_sparsity, round_to,
                                meter=mac_costs)  # fmt: skip
        chosen = plan_for(counts)
        measured, left = timed(chosen)
        attempts.append({"macs_budget": fraction, "measured_speedup": measured, "macs_left": left})
        return chosen, measured, left

    searched = False
    try:  # the table keeps what was timed, a refusal included: the next, smaller request reuses it
        for _ in range(ATTEMPTS):
            if goal <= 0:
                break
            counts, predicted = greedy_plan(groups, scores, layers, costs, goal, max_layer_sparsity, round_to)
            chosen = plan_for(counts)
            measured, left = timed(chosen)
            attempts.append({"layer_budget_ms": goal, "predicted_ms": predicted + rest, "measured_speedup": measured,
                             "macs_left": left})  # fmt: skip
            if best is None or abs(measured - speedup) < abs(best[1] - speedup):
                best = (chosen, measured, left)
            if abs(measured - speedup) <= TOLERANCE * speedup:
                break
            if predicted > goal * 1.001 and measured < speedup:
                # the table sees no more time to save, and the plan is short: the table's floor is not
                # the model's (it skips moves it measures as saving nothing): measure the real one
                best, searched = _search_by_macs(by_macs, speedup, best, max_layer_sparsity, batch), True
                break
            # the model ran slower (faster) than predicted: ask the layers for more (less)
            goal *= measured / speedup
    finally:
        table.save()
    if best is None:
        raise ConfigError(
            f"--speedup {speedup:g} cannot be reached: the layers that can lose channels take "
            f"{layer_sum:.3g} of the dense {dense_ms:.3g} ms at batch {batch}; ask for less"
        )
    chosen, measured, left = best
    within = abs(measured - speedup) <= TOLERANCE * speedup
    why = "" if within else _shortfall(measured, speedup, attempts, searched)
    report = BudgetReport("speedup", speedup, measured, within, left, measured, batch, threads, attempts,
                          str(table.path), table.measured, why)  # fmt: skip
    return chosen, report


def _search_by_macs(
    by_macs: Callable[[float], tuple[ChannelPlan, float, float]], speedup: float,
    best: tuple[ChannelPlan, float, float], max_layer_sparsity: float, batch: int,
) -> tuple[ChannelPlan, float, float]:  # fmt: skip
    """The plan nearest `speedup` when the latency table saw no more time to save (small, overhead-bound models).

    Every group goes to its floor (MACs counted, moves ranked by the table) and is timed end to end:
    where even that is short the request is refused with the measured figure; otherwise the MAC
    fraction is bisected, each plan measured, and the nearest kept.
    """
    floor_plan = by_macs(0.0)
    if floor_plan[1] < speedup * (1 - TOLERANCE):
        raise ConfigError(
            f"--speedup {speedup:g} cannot be reached: with every layer at its floor (--max-layer-sparsity "
            f"{max_layer_sparsity:g}) the model measured {max(floor_plan[1], best[1]):.2f}x faster at batch {batch} "
            f"on this machine; ask for at most that"
        )
    nearest = min((best, floor_plan), key=lambda plan: abs(plan[1] - speedup))
    # MAC fractions: the floor measured at or above the request, the table's plan below it
    fast, slow = floor_plan[2], max(best[2], floor_plan[2])
    for _ in range(ATTEMPTS - 1):
        if abs(nearest[1] - speedup) <= TOLERANCE * speedup:
            break
        middle = (fast + slow) / 2
        plan = by_macs(middle)
        nearest = min((nearest, plan), key=lambda candidate: abs(candidate[1] - speedup))
        fast, slow = (middle, slow) if plan[1] >= speedup else (fast, middle)
    return nearest


def _shortfall(measured: float, speedup: float, attempts: list[dict], searched: bool = False) -> str:
    if searched:
        budgets = sum("macs_budget" in attempt for attempt in attempts)
        return f"the nearest of {budgets} measured MAC budgets (the model's speed moves in steps of channel blocks)"
    if measured < speedup:
        return (
            "every group reached its floor (--max-layer-sparsity) or the rest of the graph (pooling, activations, "
            "layers that keep their channels) does not get faster; ask for less, or let more layers lose channels"
        )
    return f"the nearest of {len(attempts)} measured plans is faster than asked (channel blocks of --round-to)"
