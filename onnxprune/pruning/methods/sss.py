"""Sparse Structure Selection (Huang & Wang 2017): learned scaling factors on structures.

Every output channel of a Conv (neuron of a fully-connected layer) gets a scaling factor on its
output, initialised to 1 and trained with the network on data, L1-regularised by a proximal step
(soft-thresholding after each SGD step, which sets many factors exactly to zero). The factors are
then folded into the weights (output c of a layer scaled by s equals the layer with filter and
bias c scaled by s, exactly), and a channel's score is |s|: the channels whose factors fell
lowest are removed (then compacted; polish the rest with a hybrid recipe such as
`sss:0.5,magnitude:0.5`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from onnxprune.pruning.methods.registry import ScoreContext, register

if TYPE_CHECKING:
    from onnxprune.workbench.convert import TorchModel


@register("sss", granularity="channel", needs_data=True, whole_model=True)
def sss(ctx: ScoreContext) -> dict[str, np.ndarray]:
    """Score each output channel by its learned, L1-regularised scaling factor |s| (SSS)."""
    return {name: np.abs(factors) for name, factors in learn_factors(ctx).items()}


class _Scale:
    """A forward hook multiplying a layer's output channels by a learnable factor."""

    def __init__(self, count: int, axis: int) -> None:
        self.factor = torch.nn.Parameter(torch.ones(count))
        self.axis = axis

    def __call__(
        self, _module: torch.nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> torch.Tensor:
        shape = [1] * output.dim()
        shape[self.axis if self.axis >= 0 else output.dim() + self.axis] = -1
        return output * self.factor.reshape(shape)


def learn_factors(ctx: ScoreContext) -> dict[str, np.ndarray]:
    """Train the factors (and the network) with a proximal L1 step, then fold them into the weights."""
    settings = ctx.settings
    torch_model = ctx.torch_model
    network = ctx.logits()
    scales, hooks = {}, []
    for name, entry in torch_model.params.items():
        axis = 1 if entry.layer.op_type == "Conv" else -1
        scales[name] = _Scale(entry.layer.shape[entry.layer.out_axis], axis)
        hooks.append(entry.module.register_forward_hook(scales[name]))
    factors = [scale.factor for scale in scales.values()]
    optimizer = torch.optim.SGD(list(network.parameters()) + factors, lr=settings.lr, momentum=settings.momentum)
    rng = np.random.default_rng(ctx.seed)
    steps = settings.sss_epochs * max(1, len(ctx.data) // settings.batch_size)
    if settings.max_steps:
        steps = min(steps, int(settings.max_steps))
    network.train()
    try:
        with torch.random.fork_rng(devices=[]):  # dropout: repeatable factors
            torch.manual_seed(ctx.seed)
            _train(ctx, network, optimizer, factors, rng, steps)
    finally:
        for hook in hooks:
            hook.remove()
        torch_model.module.eval()
    fold(torch_model, {name: scale.factor.detach() for name, scale in scales.items()})
    return {name: scale.factor.detach().numpy().astype(np.float64) for name, scale in scales.items()}


def _train(
    ctx: ScoreContext,
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    factors: list[torch.nn.Parameter],
    rng: np.random.Generator,
    steps: int,
) -> None:
    """SGD steps on the loss, each followed by the proximal step of the factors' L1 penalty."""
    settings = ctx.settings
    for _ in range(steps):
        loss = ctx.minibatch_loss(network, rng)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # proximal step for gamma * |s|: soft-threshold the factors
            threshold = settings.lr * settings.sss_gamma
            for factor in factors:
                factor.copy_(torch.sign(factor) * torch.clamp(factor.abs() - threshold, min=0.0))


def fold(torch_model: TorchModel, factors: dict[str, torch.Tensor]) -> None:
    """Multiply each layer's filters and biases by its channels' factors (exactly what the hooks did)."""
    with torch.no_grad():
        for name, factor in factors.items():
            entry = torch_model.params[name]
            module = entry.module
            weight = getattr(module, "weight_orig", module.weight)
            shape = [1] * weight.dim()
            shape[entry.torch_out_axis] = -1
            weight.mul_(factor.reshape(shape))
            bias = getattr(module, "bias_orig", getattr(module, "bias", None))
            if isinstance(bias, torch.Tensor) and bias.numel() == factor.numel():
                bias.mul_(factor)
