"""Greedy filter removal (ThiNet-style, simplified as in the course reports).

Repeatedly remove the filter (or neuron) whose removal costs the least loss on a validation
sample: each step tries `candidates` units sampled among those still present (bounded time),
zeroing one at a time, keeps the cheapest out, and fine-tunes for `finetune_batches` mini-batches
every `finetune_every` removals (`greedy_loop`). The loss is taken on logits (a final Softmax cut
off). Scored once without the loop (a sweep, say), each channel's score is the loss with it
zeroed alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from onnxprune.graph.channels import analyse
from onnxprune.pruning.channels import ChannelPlan, apply, channel_groups, floors, kept_whole, target_count
from onnxprune.pruning.methods.registry import ScoreContext, register

if TYPE_CHECKING:
    from onnxprune.workbench.convert import TorchModel


class _Loss:
    """Cross-entropy of the logits on a fixed, seeded validation sample of the training data."""

    def __init__(self, ctx: ScoreContext, rng: np.random.Generator) -> None:
        indices = np.sort(rng.permutation(len(ctx.data))[: ctx.settings.val_samples])
        self.inputs = torch.from_numpy(ctx.preprocess(ctx.data, indices))
        self.labels = torch.from_numpy(ctx.data.labels[indices])
        self.network = ctx.logits()

    def __call__(self) -> float:
        with torch.no_grad():
            output = _first(self.network.eval()(self.inputs))
            return float(F.cross_entropy(output.reshape(output.shape[0], -1), self.labels))


def greedy_loop(
    ctx: ScoreContext, sparsity: float, max_layer_sparsity: float, mask_only: bool = False
) -> tuple[ChannelPlan, list[dict]]:
    """Remove, one at a time, the unit whose removal raises the validation loss least.

    Each step samples up to `candidates` units still present (never one already removed),
    measures the loss with each zeroed alone on `val_samples` samples, and masks the cheapest;
    every `finetune_every` removals it fine-tunes `finetune_batches` mini-batches (masks held).

    Returns:
        The `ChannelPlan`, and per removal: the unit's layer, the loss with it removed, units left.
    """
    model, torch_model, settings = ctx.model, ctx.torch_model, ctx.settings
    structure = analyse(model)
    groups, kept_layers = channel_groups(model, structure, mask_only)
    total = sum(len(group.roots) for group in groups.values())
    kept = kept_whole(structure, mask_only)
    goal = target_count(sparsity, total, kept)
    minimum = floors(groups, max_layer_sparsity)
    rng = np.random.default_rng(ctx.seed)
    loss_now = _Loss(ctx, rng)
    removed: set[int] = set()
    history = []
    while len(removed) < goal:
        present = [
            (name, root)
            for name, group in groups.items()
            if len([r for r in group.roots if r not in removed]) > minimum[name]
            for root in group.roots
            if root not in removed and not group.blocks
        ]
        if not present:
            break
        sample = [present[i] for i in rng.permutation(len(present))[: settings.candidates]]
        costs = []
        for _name, root in sample:
            saved = _zero_temporarily(torch_model, {n: structure.layer_units(n) == root for n in structure.producers})
            costs.append(loss_now())
            _restore(saved)
        best = int(np.argmin(costs))
        name, root = sample[best]
        apply(torch_model, model, ChannelPlan(structure, groups, {root}, {}, kept_layers), keep_masks=True)
        removed.add(root)
        history.append({"step": len(removed), "layer": name, "loss": costs[best], "units": total - len(removed)})
        if settings.finetune_batches and len(removed) % settings.finetune_every == 0:
            _short_finetune(ctx, rng)
    counts = {name: sum(1 for r in group.roots if r in removed) for name, group in groups.items()}
    return ChannelPlan(structure, groups, removed, counts, kept_layers, kept), history


@register("greedy", granularity="channel", needs_data=True, whole_model=True, loop=greedy_loop)
def greedy(ctx: ScoreContext) -> dict[str, np.ndarray]:
    """Score each filter by the validation loss with it zeroed alone (greedy removal, one step)."""
    loss_now = _Loss(ctx, np.random.default_rng(ctx.seed))
    scores = {}
    for name, entry in ctx.torch_model.params.items():
        channels = np.arange(entry.layer.shape[entry.layer.out_axis])
        scores[name] = np.empty(channels.size)
        for channel in channels:
            saved = _zero_temporarily(ctx.torch_model, {name: channels == channel})
            scores[name][channel] = loss_now()
            _restore(saved)
    return scores


def _zero_temporarily(torch_model: TorchModel, drops: dict[str, np.ndarray]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Zero the output channels `drops[layer]` marks, filters and biases, in place; return what to restore.

    Masks attached by torch.nn.utils.prune stay in force: their hooks multiply again on the next forward.
    """
    saved = []
    for name, drop in drops.items():
        if not drop.any():
            continue
        entry = torch_model.params[name]
        module = entry.module
        weight = getattr(module, "weight_orig", module.weight)
        saved.append((weight.data, weight.data.clone()))
        index = [slice(None)] * weight.dim()
        index[entry.torch_out_axis] = torch.from_numpy(drop)
        weight.data[tuple(index)] = 0
        bias = getattr(module, "bias_orig", getattr(module, "bias", None))
        if isinstance(bias, torch.Tensor) and bias.dim() == 1 and bias.numel() == drop.size:
            saved.append((bias.data, bias.data.clone()))
            bias.data[torch.from_numpy(drop)] = 0
    return saved


def _restore(saved: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    for target, original in saved:
        target.copy_(original)


def _short_finetune(ctx: ScoreContext, rng: np.random.Generator) -> None:
    network = ctx.logits().train()
    optimizer = torch.optim.SGD(network.parameters(), lr=ctx.settings.lr, momentum=0.9)
    for _ in range(ctx.settings.finetune_batches):
        loss = ctx.minibatch_loss(network, rng)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    ctx.torch_model.module.eval()


def _first(output: torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output
