"""Rank once, apply per level: one model's weights ranked by a method once, then set to any sparsity.

The sweep and the sensitivity analysis (`onnxprune.measure.sweep`) evaluate many levels of one
method. `RankedModel` scores the weights once per method (and scope: LAMP ranks its own scores),
sorts each layer's scores once, and derives every level's mask from those orders: the first k
weights of a layer's order are its k lowest. The masks are the ones `prune` would choose at that
level (same counts, same tie-breaking), so a level set here and evaluated equals `prune` then
`evaluate` exactly. Structured levels are planned over channel groups as `prune` plans them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from onnxprune.options import DEFAULT_MAX_LAYER_SPARSITY, DEFAULT_ROUND_TO
from onnxprune.pruning import channels, select
from onnxprune.pruning.methods import ScoreContext, get_method
from onnxprune.pruning.reconstruct import reconstruct, reference_copy
from onnxprune.workbench.convert import TorchModel, mask_parameter, to_torch

if TYPE_CHECKING:
    from onnxprune.graph.model import Model


@dataclass
class Ranking:
    """One method's per-layer scores (flattened, float32) and their stable ascending orders."""

    scores: dict[str, np.ndarray]
    orders: dict[str, np.ndarray]


class RankedModel:
    """A converted model whose weights can be set to any level of a method, ranking each method once.

    Args:
        model: the ONNX model.
        torch_model: its conversion (None: converted here).
        calibration: preprocessed samples to reconstruct every level's kept weights on
            (`onnxprune.pruning.reconstruct`); None leaves the pruned weights as they are.
    """

    def __init__(
        self, model: Model, torch_model: TorchModel | None = None, calibration: torch.Tensor | None = None
    ) -> None:
        self.model = model
        self.torch_model = torch_model or to_torch(model)
        self.originals = {name: entry.parameter.detach().clone() for name, entry in self.torch_model.params.items()}
        self.extra_originals = _bias_and_norm_state(self.torch_model)
        self.calibration = calibration
        self.reference = None if calibration is None else reference_copy(self.torch_model)
        self._rankings: dict[tuple[str, bool], Ranking] = {}

    def restore(self) -> None:
        """Every weight, bias and BatchNorm scale back to its dense value."""
        with torch.no_grad():
            for name, entry in self.torch_model.params.items():
                entry.module.weight.copy_(self.originals[name])
            for tensor, original in self.extra_originals:
                tensor.copy_(original)

    def apply(
        self, method: str, scope: str, sparsity: float, max_layer_sparsity: float = DEFAULT_MAX_LAYER_SPARSITY,
        solve: bool = True,
    ) -> None:  # fmt: skip
        """Set the weights to `method` in `scope` at `sparsity`, from the stored ranking.

        With calibration samples (and `solve`), the kept weights are solved again on them.
        """
        chosen = get_method(method)
        select.check_scope(scope, method, chosen.granularity)
        self.restore()
        if chosen.granularity == "channel":
            self._apply_channels(method, scope, sparsity, max_layer_sparsity)
        else:
            self._apply_weights(method, scope, sparsity, max_layer_sparsity)
        if self.calibration is not None and solve and sparsity > 0:
            reconstruct(self.torch_model, self.reference, self.calibration)

    def apply_to_layer(self, method: str, layer: str, sparsity: float) -> int:
        """Prune only `layer` to `sparsity` by `method`'s ranking (the others dense); returns the weights removed."""
        self.restore()
        ranking = self.ranking(method)
        count = int(round(sparsity * ranking.scores[layer].size))
        self._mask(layer, ranking, count)
        return count

    def apply_ratios(self, method: str, ratios: dict[str, float]) -> None:
        """Prune every layer to its own ratio by `method`'s ranking (as `prune --config` with those ratios)."""
        self.restore()
        ranking = self.ranking(method)
        for name, ratio in ratios.items():
            self._mask(name, ranking, int(round(ratio * ranking.scores[name].size)))

    def zeros(self) -> dict[str, int]:
        """Zero weights per prunable layer, as the model stands."""
        return {name: int((entry.module.weight == 0).sum()) for name, entry in self.torch_model.params.items()}

    def ranking(self, method: str, lamp: bool = False) -> Ranking:
        """The method's scores (LAMP scores with `lamp`) and their order, computed once per model."""
        key = (method, lamp)
        if key not in self._rankings:
            layer_scores = get_method(method).layer_scores(ScoreContext(self.torch_model, model=self.model))
            if lamp:
                layer_scores = {name: select.lamp_scores(values) for name, values in layer_scores.items()}
            scores = {name: values.astype(np.float32).reshape(-1) for name, values in layer_scores.items()}
            orders = {name: np.argsort(values, kind="stable") for name, values in scores.items()}
            self._rankings[key] = Ranking(scores, orders)
        return self._rankings[key]

    def _mask(self, layer: str, ranking: Ranking, count: int) -> None:
        """Zero the `count` lowest-ranked weights of one layer (ties by position, as `select.smallest`)."""
        entry = self.torch_model.params[layer]
        keep = np.ones(ranking.scores[layer].size, dtype=bool)
        keep[ranking.orders[layer][:count]] = False
        with torch.no_grad():
            mask_parameter(entry.module, "weight", entry.layout_to_torch(keep.reshape(entry.layer.shape)), False)

    def _apply_weights(self, method: str, scope: str, sparsity: float, max_layer_sparsity: float) -> None:
        ranking = self.ranking(method, lamp=scope == "lamp")
        shapes = {name: entry.layer.shape for name, entry in self.torch_model.params.items()}
        plans = select.plan_scope(ranking.scores, shapes, scope, sparsity, max_layer_sparsity)
        for name in self.torch_model.params:
            self._mask(name, ranking, plans[name].count)

    def _apply_channels(self, method: str, scope: str, sparsity: float, max_layer_sparsity: float) -> None:
        context = ScoreContext(self.torch_model, model=self.model)
        plan = channels.plan(
            self.model, get_method(method), self.torch_model, sparsity, scope, {}, sparsity, max_layer_sparsity,
            context, round_to=DEFAULT_ROUND_TO, saturate=True,
        )  # fmt: skip
        channels.apply(self.torch_model, self.model, plan, keep_masks=False)


def _bias_and_norm_state(torch_model: TorchModel) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Biases and BatchNorm affine parameters, which structured levels zero: saved to restore."""
    saved = []
    for module in torch_model.module.modules():
        tensor = getattr(module, "bias", None)
        if isinstance(tensor, torch.nn.Parameter):
            saved.append((tensor.data, tensor.detach().clone()))
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            saved.append((module.weight.data, module.weight.detach().clone()))
    return saved
