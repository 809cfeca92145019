"""Greedy filter removal (ThiNet-style, simplified as in the course reports).

Repeatedly remove the filter (or neuron) whose removal costs the least loss on a validation
sample: each step tries `candidates` units sampled among those still present (bounded time),
zeroing one at a time, keeps the cheapest out, and fine-tunes for `finetune_batches` mini-batches
every `finetune_every` removals. See `onnxprune.channels.greedy_iterative`.
"""

from __future__ import annotations

import numpy as np

from onnxprune.errors import ConfigError
from onnxprune.methods import ScoreContext, register

DEFAULTS = {"candidates": 16, "val_samples": 256, "finetune_every": 8, "finetune_batches": 5, "lr": 0.01, "seed": 0}


def settings(ctx: ScoreContext) -> dict:
    """The greedy search's settings: DEFAULTS overridden by `ctx.options`."""
    return {**DEFAULTS, **{k: v for k, v in (ctx.options or {}).items() if k in DEFAULTS}}


@register("greedy", granularity="channel", needs_data=True)
def greedy(entry, ctx: ScoreContext) -> np.ndarray:
    """Score by the loss a filter's removal costs on validation data (used through the greedy loop)."""
    raise ConfigError("greedy removal runs as its own loop (onnxprune.channels.greedy_iterative), not as scores")
