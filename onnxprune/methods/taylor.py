"""First-order Taylor importance of filters (Molchanov et al. 2017/2019).

The importance of output channel c of a layer is |a_c * dL/da_c|, the first-order estimate of how
much the loss changes when the channel's activation a_c is removed, averaged over positions and
accumulated over mini-batches of real data, then normalised per layer (L2). As in MATLAB's
`taylorPrunableNetwork`, the network is fine-tuned on those same mini-batches while the scores
accumulate, and pruning is iterative: see `onnxprune.pruning` (up to `max_per_round` filters per
round until the target).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from onnxprune.errors import ConfigError
from onnxprune.methods import ScoreContext, register

DEFAULTS = {"batches_per_round": 10, "max_per_round": 8, "batch_size": 32, "lr": 0.01, "momentum": 0.9, "seed": 0}


def settings(ctx: ScoreContext) -> dict:
    """Taylor's settings: DEFAULTS overridden by `ctx.options`."""
    return {**DEFAULTS, **(ctx.options or {})}


@register("taylor", granularity="channel", needs_data=True)
def taylor(entry, ctx: ScoreContext) -> np.ndarray:
    """Score each output filter by |activation x gradient| on real data (first-order Taylor)."""
    state = ctx.options.setdefault("_taylor_state", {}) if ctx.options is not None else None
    if state is None:
        raise ConfigError("taylor needs a ScoreContext with options (a dict) and data")
    if "scores" not in state:
        state["scores"] = accumulate(ctx)
    return state["scores"][entry.layer.name]


def accumulate(ctx: ScoreContext) -> dict[str, np.ndarray]:
    """Fine-tune on `batches_per_round` mini-batches, accumulating |a x dL/da| per output channel."""
    if ctx.data is None or ctx.preprocess is None:
        raise ConfigError("the taylor method needs training data: give --data")
    options = settings(ctx)
    torch_model = ctx.torch_model
    module = torch_model.module
    module.train()
    totals = {name: None for name in torch_model.params}
    captured: dict[str, torch.Tensor] = {}
    hooks = [entry.module.register_forward_hook(_capture(name, captured)) for name, entry in torch_model.params.items()]
    optimizer = torch.optim.SGD(module.parameters(), lr=options["lr"], momentum=options["momentum"])
    generator = np.random.default_rng(options["seed"] + options.get("round", 0))
    losses = []
    try:
        for _ in range(options["batches_per_round"]):
            indices = generator.choice(len(ctx.data), size=min(options["batch_size"], len(ctx.data)), replace=False)
            inputs = torch.from_numpy(ctx.preprocess(ctx.data, np.sort(indices)))
            labels = torch.from_numpy(ctx.data.labels[np.sort(indices)])
            output = _logits(module(inputs), options.get("probabilities", False))
            loss = F.cross_entropy(output.reshape(output.shape[0], -1), labels)
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
        module.eval()
    ctx.options.setdefault("_taylor_state", {})["losses"] = losses
    return {name: _normalised(total) for name, total in totals.items()}


def _capture(name: str, captured: dict):
    def hook(_module, _inputs, output):
        output.retain_grad()
        captured[name] = output

    return hook


def _channel_importance(activation: torch.Tensor, entry) -> np.ndarray:
    """|a * grad| averaged over everything but the channel axis."""
    axis = 1 if entry.layer.op_type == "Conv" else activation.ndim - 1
    product = (activation * activation.grad).detach()
    dims = [d for d in range(product.ndim) if d != axis]
    return product.mean(dim=dims).abs().double().cpu().numpy()


def _logits(output: torch.Tensor, probabilities: bool) -> torch.Tensor:
    output = output[0] if isinstance(output, (tuple, list)) else output
    return torch.log(output.clamp_min(1e-12)) if probabilities else output


def _normalised(total: np.ndarray | None) -> np.ndarray:
    if total is None:
        return np.zeros(0)
    norm = np.linalg.norm(total)
    return total / norm if norm > 0 else total
