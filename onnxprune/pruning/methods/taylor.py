"""First-order Taylor importance of filters (Molchanov et al. 2017/2019).

The importance of output channel c of a layer is |a_c * dL/da_c|, the first-order estimate of how
much the loss changes when the channel's activation a_c is removed, averaged over positions and
accumulated over mini-batches of real data, then normalised per layer (L2). The loss is taken on
logits (a final Softmax cut off). As in MATLAB's `taylorPrunableNetwork`, the network is
fine-tuned on those same mini-batches while the scores accumulate, and pruning is iterative
(`taylor_loop`): up to `max_per_round` filters per round until the target.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from onnxprune.errors import ConfigError
from onnxprune.graph.channels import analyse
from onnxprune.pruning.channels import (
    ChannelGroup,
    ChannelPlan,
    apply,
    channel_groups,
    floors,
    kept_whole,
    target_count,
    unit_scores,
)
from onnxprune.pruning.methods.registry import ScoreContext, register
from onnxprune.workbench.evaluate import evaluate

if TYPE_CHECKING:
    from onnxprune.workbench.convert import ParamEntry


def accumulate(ctx: ScoreContext, round_number: int = 0) -> tuple[dict[str, np.ndarray], list[float]]:
    """Fine-tune on `batches_per_round` mini-batches, accumulating |a x dL/da| per output channel.

    Returns:
        Per layer the L2-normalised scores, and the loss of each mini-batch.
    """
    settings = ctx.settings
    torch_model = ctx.torch_model
    network = ctx.logits()
    network.train()
    totals = {name: None for name in torch_model.params}
    captured: dict[str, torch.Tensor] = {}
    hooks = [entry.module.register_forward_hook(_capture(name, captured)) for name, entry in torch_model.params.items()]
    optimizer = torch.optim.SGD(network.parameters(), lr=settings.lr, momentum=settings.momentum)
    generator = np.random.default_rng(ctx.seed + round_number)
    losses = []
    try:
        # dropout draws from torch's generator: seed it (locally) so that scores are repeatable
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed + round_number)
            for _ in range(settings.batches_per_round):
                loss = ctx.minibatch_loss(network, generator)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                for name, activation in captured.items():
                    contribution = _channel_importance(activation, torch_model.params[name])
                    totals[name] = contribution if totals[name] is None else totals[name] + contribution
                optimizer.step()
                losses.append(float(loss.detach()))
                captured.clear()
    finally:
        for hook in hooks:
            hook.remove()
        torch_model.module.eval()
    return {name: _normalised(total) for name, total in totals.items()}, losses


def taylor_loop(
    ctx: ScoreContext, sparsity: float, max_layer_sparsity: float, mask_only: bool = False
) -> tuple[ChannelPlan, list[dict]]:
    """MATLAB's taylorPrunableNetwork loop: score while fine-tuning, remove up to N filters, repeat.

    Each round fine-tunes on `batches_per_round` mini-batches while accumulating Taylor scores,
    then masks the lowest-scoring units (at most `max_per_round`; a grouped convolution loses one
    per group together), until `sparsity` of the removable units are gone. No group loses more
    than `max_layer_sparsity` of its units (and each keeps at least one).

    Returns:
        The `ChannelPlan`, and per round: mean mini-batch loss, validation top-1 (when the
        context has validation data) and the number of filters left.
    """
    model, torch_model = ctx.model, ctx.torch_model
    structure = analyse(model)
    groups, kept_layers = channel_groups(model, structure, mask_only)
    if not groups:
        raise ConfigError("no filter or neuron can be removed in this model")
    total = sum(len(group.roots) for group in groups.values())
    kept = kept_whole(structure, mask_only)
    goal = target_count(sparsity, total, kept)
    minimum = floors(groups, max_layer_sparsity)
    group_of = {root: name for name, group in groups.items() for root in group.roots}
    removed: set[int] = set()
    history = []
    number = 0
    while len(removed) < goal:
        number += 1
        layer_scores, losses = accumulate(ctx, number)
        scores = unit_scores(layer_scores, structure)
        budget = min(ctx.settings.max_per_round, goal - len(removed))
        chosen = _pick(groups, group_of, scores, removed, minimum, budget)
        if not chosen:
            break  # every group is at its floor
        removed |= chosen
        apply(torch_model, model, ChannelPlan(structure, groups, chosen, {}, kept_layers), keep_masks=True)
        history.append(
            {
                "round": number,
                "loss": float(np.mean(losses)) if losses else None,
                "val_top1": _val_top1(ctx),
                "filters": total - len(removed),
            }
        )
    counts = {name: sum(1 for r in group.roots if r in removed) for name, group in groups.items()}
    return ChannelPlan(structure, groups, removed, counts, kept_layers, kept), history


@register("taylor", granularity="channel", needs_data=True, whole_model=True, loop=taylor_loop)
def taylor(ctx: ScoreContext) -> dict[str, np.ndarray]:
    """Score each output filter by |activation x gradient| on real data (first-order Taylor)."""
    return accumulate(ctx)[0]


def _val_top1(ctx: ScoreContext) -> float | None:
    if ctx.val is None or ctx.val_preprocess is None:
        return None
    return evaluate(ctx.model, ctx.val, ctx.val_preprocess, engine="torch", torch_module=ctx.torch_model.module).top1


def _pick(
    groups: dict[str, ChannelGroup],
    group_of: dict[int, str],
    scores: dict[int, float],
    removed: set[int],
    minimum: dict[str, int],
    budget: int,
) -> set[int]:
    remaining = {name: [r for r in group.roots if r not in removed] for name, group in groups.items()}
    chosen: set[int] = set()
    for root in sorted((r for r in group_of if r not in removed), key=lambda r: (scores[r], r)):
        if len(chosen) >= budget:
            break
        name = group_of[root]
        group = groups[name]
        take = {root}
        if group.blocks:  # one from every block of a grouped convolution
            take = {
                min(
                    (r for r in block if r not in removed and r not in chosen),
                    key=lambda r: (scores[r], r),
                    default=None,
                )
                for block in group.blocks
            }
            if None in take:
                continue
        left = [r for r in remaining[name] if r not in chosen and r not in take]
        if len(left) < minimum[name]:
            continue
        chosen |= take
    return chosen


def _capture(
    name: str, captured: dict[str, torch.Tensor]
) -> Callable[[torch.nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
    def hook(_module: torch.nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        output.retain_grad()
        captured[name] = output

    return hook


def _channel_importance(activation: torch.Tensor, entry: ParamEntry) -> np.ndarray:
    """|a * grad| averaged over everything but the channel axis."""
    axis = 1 if entry.layer.op_type == "Conv" else activation.ndim - 1
    product = (activation * activation.grad).detach()
    dims = [d for d in range(product.ndim) if d != axis]
    return product.mean(dim=dims).abs().double().cpu().numpy()


def _normalised(total: np.ndarray | None) -> np.ndarray:
    if total is None:
        return np.zeros(0)
    norm = np.linalg.norm(total)
    return total / norm if norm > 0 else total
