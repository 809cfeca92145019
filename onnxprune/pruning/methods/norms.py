"""Structured criteria by weight norm: L1 / L2 filters (Li et al. 2016) and neurons."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from onnxprune.pruning.methods.registry import ScoreContext, register

if TYPE_CHECKING:
    from onnxprune.workbench.convert import ParamEntry


def _per_output(entry: ParamEntry) -> np.ndarray:
    """The layer's weight with one row per output channel / neuron."""
    weight = entry.to_onnx()
    return np.moveaxis(weight, entry.layer.out_axis, 0).reshape(weight.shape[entry.layer.out_axis], -1)


@register("l1-filter", granularity="channel")
def l1_filter(entry: ParamEntry, ctx: ScoreContext) -> np.ndarray:
    """Score each output filter (or neuron) by the L1 norm of its weights (Li et al. 2016)."""
    return np.abs(_per_output(entry)).sum(axis=1)


@register("l2-filter", granularity="channel")
def l2_filter(entry: ParamEntry, ctx: ScoreContext) -> np.ndarray:
    """Score each output filter (or neuron) by the L2 norm of its weights."""
    return np.sqrt(np.square(_per_output(entry)).sum(axis=1))


@register("neuron", granularity="channel")
def neuron(entry: ParamEntry, ctx: ScoreContext) -> np.ndarray:
    """Score each neuron of a fully-connected layer by the L2 norm of its weights.

    Convolutions are left alone by this method (their score is infinite): use l1-filter or
    l2-filter for them.
    """
    scores = np.sqrt(np.square(_per_output(entry)).sum(axis=1))
    if entry.layer.op_type == "Conv" and entry.layer.shape[2:] != tuple(1 for _ in entry.layer.shape[2:]):
        return np.full(scores.shape, np.inf)
    return scores
