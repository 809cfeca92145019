"""Structured pruning: choose whole filters / neurons, mask them in torch, compact the ONNX graph.

`--sparsity` is the fraction of filters and neurons removed (of those that can be removed: the
classifier's output neurons and channels the graph keeps by design are not counted). Coupled
channels (a residual Add) are one unit, scored by the sum of their layers' normalised scores.
Selection groups are layers, or sets of layers coupled by residual connections.

Channels the analysis cannot follow (an op it does not know, a reshape of the channel axis) are
kept whole and named in a note, never a refusal of the run; they still count in the fraction, so
the other groups are pruned further to reach it (`kept_whole`, `target_count`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from onnxprune.errors import ConfigError, stage
from onnxprune.graph.channels import Structure, analyse
from onnxprune.graph.model import Model
from onnxprune.pruning import select
from onnxprune.pruning.methods.registry import Method, ScoreContext
from onnxprune.workbench.convert import ParamEntry, TorchModel, mask_parameter


@dataclass
class ChannelGroup:
    """Units selected together: the channels of one layer, or of layers coupled by residual Adds."""

    name: str
    layers: list[str]
    roots: list[int]
    blocks: list[list[int]] = field(default_factory=list)  # equal removal per block (grouped conv)


@dataclass
class ChannelPlan:
    """What structured selection decided."""

    structure: Structure
    groups: dict[str, ChannelGroup]
    removed: set[int]
    counts: dict[str, int]
    kept_layers: dict[str, str]  # layer -> why it cannot lose channels
    kept_whole: dict[str, int] = field(default_factory=dict)  # why units could not be followed -> how many


def channel_groups(
    model: Model, structure: Structure, mask_only: bool = False
) -> tuple[dict[str, ChannelGroup], dict[str, str]]:
    """Selection groups of removable units, and the layers that have none (with the reason).

    Units the analysis could not follow are left out (kept whole: `kept_whole` counts them), unless
    `mask_only`: then they are selected too, and zeroed but not removed.
    """
    units = structure.units()
    by_layers: dict[tuple[str, ...], list[int]] = {}
    kept_layers = {}
    order = {layer.name: i for i, layer in enumerate(model.layers)}
    for layer in model.layers:
        if layer.name not in structure.producers:
            continue
        for root in dict.fromkeys(int(r) for r in structure.layer_units(layer.name)):
            unit = units[root]
            if unit.blocked_by and not (mask_only and unit.unresolved):
                kept_layers.setdefault(layer.name, unit.blocked_by)
                continue
            key = tuple(sorted({member[0] for member in unit.members}, key=order.get))
            if root not in by_layers.setdefault(key, []):
                by_layers[key].append(root)
    groups = {}
    for key, roots in by_layers.items():
        name = "+".join(key)
        group = ChannelGroup(name, list(key), roots)
        for blocks in structure.blocks:
            block_roots = [[structure.root(i) for i in block] for block in blocks]
            if any(root in block for block in block_roots for root in roots):
                group.blocks = [[r for r in dict.fromkeys(block) if r in roots] for block in block_roots]
        groups[name] = group
        for layer_name in key:
            kept_layers.pop(layer_name, None)
    return groups, kept_layers


def kept_whole(structure: Structure, mask_only: bool = False) -> dict[str, int]:
    """Units kept whole because the analysis could not follow them: reason (naming the node) -> count.

    Empty with `mask_only`, where such units are selected and zeroed like the others.
    """
    if mask_only:
        return {}
    counts: dict[str, int] = {}
    for unit in structure.units().values():
        if unit.blocked_by and unit.unresolved:
            counts[unit.blocked_by] = counts.get(unit.blocked_by, 0) + 1
    return counts


def target_count(sparsity: float, selectable: int, kept: dict[str, int]) -> int:
    """Units to remove: `sparsity` of the selectable and the kept-whole ones, taken from the selectable.

    Channels kept only because the analysis could not follow them count towards the requested
    fraction, so that a model with an op onnxprune does not know loses as much as one without.
    """
    return int(round(sparsity * (selectable + sum(kept.values()))))


def kept_note(kept: dict[str, int], sparsity: float) -> str | None:
    """One line saying how many units were kept whole and why (None when none were)."""
    if not kept:
        return None
    count = sum(kept.values())
    reasons = sorted(kept, key=kept.get, reverse=True)
    more = f" (and {len(reasons) - 1} more reason{'s' if len(reasons) > 2 else ''})" if len(reasons) > 1 else ""
    return (
        f"{count} channel group(s) kept whole because onnxprune cannot follow them; the others lose more so that "
        f"{sparsity:.0%} of all is removed: {reasons[0]}{more}; add --mask-only to zero them without removing them"
    )


def unit_scores(layer_scores: dict[str, np.ndarray], structure: Structure) -> dict[int, float]:
    """Each unit's score: the sum over its member channels of the layer-normalised scores."""
    scores: dict[int, float] = {}
    for name, layer_score in layer_scores.items():
        if name not in structure.producers:
            continue
        layer_score = np.asarray(layer_score, dtype=np.float64)
        finite = layer_score[np.isfinite(layer_score)]
        scale = float(np.mean(np.abs(finite))) if finite.size and np.mean(np.abs(finite)) > 0 else 1.0
        for root, value in zip(structure.layer_units(name), layer_score / scale, strict=True):
            scores[int(root)] = scores.get(int(root), 0.0) + float(value)
    return scores


def floors(groups: dict[str, ChannelGroup], max_layer_sparsity: float) -> dict[str, int]:
    """Units each group keeps at least: 1 - `max_layer_sparsity` of them, and never fewer than one."""
    return {name: max(1, int(np.ceil((1 - max_layer_sparsity) * len(g.roots)))) for name, g in groups.items()}


def selectable(
    model: Model, method: Method, ctx: ScoreContext, mask_only: bool = False
) -> tuple[Structure, dict[str, ChannelGroup], dict[str, str], dict[str, int], dict[int, float]]:
    """(structure, selection groups, layers kept and why, units kept whole, each unit's score).

    Raises ConfigError where no filter or neuron can be removed, or none by `method`.
    """
    structure = analyse(model)
    groups, kept_layers = channel_groups(model, structure, mask_only)
    kept = kept_whole(structure, mask_only)
    if not groups:
        raise ConfigError(
            "no filter or neuron can be removed in this model "
            + (f"({next(iter(kept_layers.values()))})" if kept_layers else "(it has no Conv or fully-connected layer)")
            + ("; add --mask-only to zero filters without removing them" if kept else "")
        )
    scores = unit_scores(method.layer_scores(ctx), structure)
    # a method may leave layers alone (neuron: convolutions) by scoring them +inf
    ineligible = [name for name, group in groups.items() if all(np.isinf(scores[r]) for r in group.roots)]
    for name in ineligible:
        kept_layers.update({layer: f"{method.name} does not prune {name}" for layer in groups.pop(name).layers})
    if not groups:
        raise ConfigError(f"no layer of this model can be pruned by {method.name}")
    return structure, groups, kept_layers, kept, scores


@stage("selection")
def plan(
    model: Model,
    method: Method,
    torch_model: TorchModel,
    sparsity: float,
    scope: str,
    pinned: dict[str, float],
    free_sparsity: float,
    max_layer_sparsity: float,
    ctx: ScoreContext,
    original_counts: dict[str, int] | None = None,
    mask_only: bool = False,
    round_to: int = 1,
    saturate: bool = False,
) -> ChannelPlan:
    """Choose the units to remove.

    Args:
        model: the model to prune.
        method: the registered method that scores channels.
        torch_model: its converted torch model.
        ctx: the `ScoreContext` handed to the method.
        sparsity: the overall fraction of removable units to remove.
        scope: "layer" (every group loses that fraction) or "global" (one ranking of
            layer-normalised scores, no group beyond `max_layer_sparsity`).
        pinned: layer name -> fraction, from a ratio file or --skip-first/--skip-last.
        free_sparsity: the fraction for groups not pinned.
        max_layer_sparsity: the floor of global scope (each group keeps at least 1 - this).
        original_counts: group name -> its unit count in the uncompacted model, for models
            compacted in earlier rounds (fractions are of the original counts).
        mask_only: select channels whose dependencies cannot be resolved too (they are zeroed,
            not removed).
        round_to: leave each group a multiple of this many channels (see `_rounded`).
        saturate: a ratio that would empty a layer leaves it one channel instead of raising
            (sweeps up to high levels).
    """
    structure, groups, kept_layers, kept, scores = selectable(model, method, ctx, mask_only)
    counts = {}
    group_scores = {name: np.array([scores[r] for r in group.roots]) for name, group in groups.items()}
    originals = {name: max(len(g.roots), (original_counts or {}).get(name, 0)) for name, g in groups.items()}
    already = {name: originals[name] - len(group.roots) for name, group in groups.items()}
    layer_ratio = free_sparsity
    if kept:  # the free groups also carry the share of the units kept whole (see target_count)
        free_units = sum(originals[n] for n, g in groups.items() if not any(layer in pinned for layer in g.layers))
        wanted = target_count(free_sparsity, free_units, kept) / max(1, free_units)
        layer_ratio = max(free_sparsity, min(wanted, max_layer_sparsity))
    for name, group in groups.items():
        ratio = next((pinned[layer] for layer in group.layers if layer in pinned), None)
        if ratio is None and scope == "global":
            continue
        # a ratio raised for the kept-whole units leaves a small group one channel rather than refusing
        full = saturate or (ratio is None and layer_ratio > free_sparsity)
        ratio = layer_ratio if ratio is None else ratio
        counts[name] = _count(name, ratio, originals[name], already.get(name, 0), len(group.roots), full)
    free = {name: s for name, s in group_scores.items() if name not in counts}
    if free:
        target_total = target_count(free_sparsity, sum(originals[name] for name in free), kept)
        budget = max(0, target_total - sum(already.get(name, 0) for name in free))
        shares = select.select_global(
            free, budget / max(1, sum(s.size for s in free.values())), min(max_layer_sparsity, 1 - 1e-9)
        )
        for name, plan_entry in shares.items():
            counts[name] = min(plan_entry.count, len(groups[name].roots) - 1)
    if round_to > 1:
        counts = {
            name: _rounded(count, originals[name], len(groups[name].roots), round_to) for name, count in counts.items()
        }
    removed = set()
    for name, group in groups.items():
        removed |= _lowest(group, dict(zip(group.roots, group_scores[name], strict=True)), counts.get(name, 0))
    return ChannelPlan(structure, groups, removed, counts, kept_layers, kept)


def _rounded(count: int, original: int, remaining: int, round_to: int) -> int:
    """Adjust a removal count so that the channels left are a multiple of `round_to`.

    onnxruntime's convolution kernels work on blocks of 8 or 16 channels: a layer left with 77
    channels can run slower than one with 128 (measured: benchmarks/structured_latency.py).
    Layers of fewer than 4 x `round_to` channels are left as they are (rounding would swamp the
    requested fraction, and such layers gain little).
    """
    if original < 4 * round_to:
        return count
    left = remaining - count
    target = max(round_to, int(round(left / round_to)) * round_to)
    return max(0, min(remaining - 1, remaining - target))


def _count(name: str, ratio: float, original: int, already: int, remaining: int, saturate: bool = False) -> int:
    wanted = int(round(ratio * original)) - already
    if int(round(ratio * original)) >= original and not saturate:
        raise ConfigError(
            f"a ratio of {ratio} would remove every channel of '{name}' ({original}); lower it, or skip that layer"
        )
    return max(0, min(wanted, remaining - 1))


def _lowest(group: ChannelGroup, scores: dict[int, float], count: int) -> set[int]:
    if count <= 0:
        return set()
    if not group.blocks:
        return set(sorted(group.roots, key=lambda r: (scores[r], r))[:count])
    per_block = count // len(group.blocks)  # grouped convolutions need equal groups
    chosen = set()
    for block in group.blocks:
        chosen |= set(sorted(block, key=lambda r: (scores[r], r))[:per_block])
    return chosen


def apply(torch_model: TorchModel, model: Model, chosen_plan: ChannelPlan, keep_masks: bool) -> None:
    """Zero the removed units in torch: filter rows, biases, and the BatchNorm scale and shift after them.

    With `keep_masks`, through torch.nn.utils.prune (they stay zero while fine-tuning);
    otherwise in place.
    """
    structure, removed = chosen_plan.structure, chosen_plan.removed
    for name, entry in torch_model.params.items():
        if name not in structure.producers:
            continue
        drop = np.isin(structure.layer_units(name), list(removed))
        if not drop.any():
            continue
        keep = torch.from_numpy(~drop)
        shape = [1] * entry.parameter.ndim
        shape[entry.torch_out_axis] = -1
        mask_parameter(entry.module, "weight", keep.reshape(shape).expand_as(entry.parameter), keep_masks)
        bias = _bias_module(entry, torch_model)
        if bias is not None:
            mask_parameter(bias, "bias", keep, keep_masks)
    for node in model.proto.graph.node:
        if node.op_type == "BatchNormalization" and node.input[0] in structure.tracked:
            module = torch_model.node_modules.get(node.output[0])
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                ids = structure.tracked[node.input[0]].ids
                keep = torch.tensor([structure.root(i) not in removed for i in ids])
                if not keep.all():
                    mask_parameter(module, "weight", keep, keep_masks)
                    mask_parameter(module, "bias", keep, keep_masks)


def _bias_module(entry: ParamEntry, torch_model: TorchModel) -> torch.nn.Module | None:
    module = entry.module
    if isinstance(module, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)) and module.bias is not None:
        return module
    return None
