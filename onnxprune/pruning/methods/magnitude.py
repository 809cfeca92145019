"""Unstructured magnitude pruning (Han et al. 2015): the smallest |w| go first."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from onnxprune.pruning.methods.registry import ScoreContext, register

if TYPE_CHECKING:
    from onnxprune.workbench.convert import ParamEntry


@register("magnitude", granularity="weight")
def magnitude(entry: ParamEntry, ctx: ScoreContext) -> np.ndarray:
    """Score each weight by its absolute value."""
    return np.abs(entry.to_onnx())
