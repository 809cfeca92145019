"""Network Slimming (Liu et al. 2017): channels ranked by their BatchNorm scale factor |gamma|.

After sparsity training (an L1 penalty on every gamma, `TrainOptions.bn_l1`), many scale factors
are near zero and their channels contribute little; one global threshold on |gamma| removes the
requested fraction of channels, then the model is compacted and fine-tuned. Layers without a
BatchNorm directly after them are left alone (scored +inf).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from onnxprune.errors import ConfigError
from onnxprune.pruning.methods.registry import ScoreContext, register

if TYPE_CHECKING:
    from onnxprune.workbench.convert import ParamEntry


@register("slimming", granularity="channel")
def slimming(entry: ParamEntry, ctx: ScoreContext) -> np.ndarray:
    """Score each output channel by |gamma| of the BatchNorm that follows it (Network Slimming)."""
    model = ctx.model
    if model is None:
        raise ConfigError("slimming needs the model's graph in its ScoreContext (model=...)")
    batchnorms = [node for node in model.proto.graph.node if node.op_type == "BatchNormalization"]
    if not batchnorms:
        raise ConfigError("slimming ranks channels by their BatchNorm scale: this model has no BatchNormalization")
    following = next((node for node in batchnorms if node.input[0] == entry.layer.output), None)
    if following is None:
        return np.full(entry.layer.shape[entry.layer.out_axis], np.inf)
    from onnxprune.workbench.convert import current_value

    module = ctx.torch_model.node_modules.get(following.output[0])
    return np.abs(current_value(module, "weight").detach().cpu().numpy().astype(np.float64))
