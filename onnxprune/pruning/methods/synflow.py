"""SynFlow: data-free, unstructured, global pruning (Tanaka et al. 2020).

"Pruning neural networks without any data by iteratively conserving synaptic flow".

Every parameter of a copy of the network is replaced by its absolute value (BatchNorm in eval
mode), an all-ones input goes through it, and the score of a weight is |dR/dw x w| for R the sum
of the outputs (the logits: a final Softmax is skipped, its sum is constant). Pruning is
iterative: over `iterations` rounds (default 10, as in MATLAB's example) the kept fraction falls
exponentially to the target, and the scores are recomputed with the weights pruned so far. The
scores returned rank the weights in the order they were pruned, so the prune's global selection
takes exactly SynFlow's set.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np
import torch

from onnxprune.pruning import select
from onnxprune.pruning.methods.registry import ScoreContext, register

if TYPE_CHECKING:
    from onnxprune.workbench.convert import ParamEntry, TorchModel


@register("synflow", granularity="weight", whole_model=True)
def synflow(ctx: ScoreContext) -> dict[str, np.ndarray]:
    """Score each weight by iterative synaptic flow |dR/dw x w| on an all-ones input (data-free)."""
    return iterative_scores(ctx.torch_model, ctx.target, ctx.settings.synflow_iterations, ctx.input_shape(1),
                            ctx.logits())  # fmt: skip


def iterative_scores(
    torch_model: TorchModel, target: float, iterations: int, input_shape: tuple[int, ...], logits: torch.nn.Module
) -> dict[str, np.ndarray]:
    """Run the SynFlow rounds on a |W| copy of `logits` (the model without a final Softmax).

    Returns:
        Per layer, scores ordered by when each weight was pruned.
    """
    names = list(torch_model.params)
    network = copy.deepcopy(logits).double().eval()
    modules = _twins(torch_model, network)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.abs_()
        for module in network.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.abs_()
        for buffer in network.buffers():
            # MATLAB's mean-image Sub would turn the all-ones input negative and stop every
            # ReLU: input normalisation is not part of the synaptic flow, so it is neutralised
            if tuple(buffer.shape[-len(input_shape) + 1 :]) == tuple(input_shape[1:]) and buffer.dim() >= 3:
                buffer.zero_()
    weights = {name: modules[name].weight for name in names}
    originals = {name: weights[name].detach().clone() for name in names}
    keep = {name: torch.ones_like(weights[name], dtype=torch.bool) for name in names}
    pruned_at = {name: np.full(weights[name].numel(), np.inf) for name in names}
    ones = torch.ones(input_shape, dtype=torch.float64)
    final = {}
    rounds = max(1, iterations) if target > 0 else 1
    for round_number in range(1, rounds + 1):
        with torch.no_grad():
            for name in names:
                weights[name].copy_(originals[name] * keep[name])
        network.zero_grad(set_to_none=True)
        with torch.enable_grad():  # the prune's scoring runs under no_grad
            output = network(ones)
            output = output[0] if isinstance(output, (tuple, list)) else output
            output.sum().backward()
        scores = {
            name: (weights[name].grad * weights[name]).detach().abs().reshape(-1).numpy().astype(np.float64)
            for name in names
        }
        final = scores
        density = (1.0 - target) ** (round_number / rounds)
        plans = select.select_global({n: s.astype(np.float32) for n, s in scores.items()}, 1.0 - density, 0.9999)
        for name in names:
            order = np.argsort(scores[name], kind="stable")[: plans[name].count]
            newly = np.isinf(pruned_at[name][order])
            pruned_at[name][order[newly]] = round_number
            mask = np.ones(scores[name].size, dtype=bool)
            mask[order] = False
            keep[name] = torch.from_numpy(mask.reshape(tuple(weights[name].shape)))
    return {name: _ranked(final[name], pruned_at[name], torch_model.params[name]) for name in names}


def _ranked(last_scores: np.ndarray, pruned_at: np.ndarray, entry: ParamEntry) -> np.ndarray:
    """Survivors keep their last SynFlow score; pruned weights score below all of them, earliest lowest."""
    scores = np.where(np.isinf(pruned_at), last_scores + 1.0, -1.0 / np.where(np.isinf(pruned_at), 1.0, pruned_at))
    scores = np.where(np.isinf(pruned_at), scores, scores - 1.0)
    return entry.layout_to_onnx(scores.reshape(tuple(entry.parameter.shape)))


def _twins(torch_model: TorchModel, network: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The copy's module holding each prunable weight (matched by qualified name)."""
    names = {id(module): name for name, module in torch_model.module.named_modules()}
    twins = {}
    for layer, entry in torch_model.params.items():
        qualified = names[id(entry.module)]
        twins[layer] = network.get_submodule(qualified) if qualified else network
    return twins
