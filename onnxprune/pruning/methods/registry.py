"""The registry's parts every method imports: `register`, `Method` and `ScoreContext`.

They live apart from the package's `__init__` (which looks methods up and loads the built-in ones)
so that a method module and the registry never import each other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from onnxprune.errors import ConfigError
from onnxprune.options import MethodSettings

if TYPE_CHECKING:
    import torch

    from onnxprune.graph.model import Model
    from onnxprune.workbench.convert import TorchModel
    from onnxprune.workbench.data import Dataset, Preprocess

GRANULARITIES = ("weight", "channel")


@dataclass(frozen=True)
class ScoreContext:
    """Everything a scoring function may use besides the layer itself.

    Attributes:
        torch_model: the converted `onnxprune.workbench.convert.TorchModel` (masks attached, if any).
        model: the ONNX `Model` it was converted from (its graph: slimming finds BatchNorms).
        data: training samples, for data-driven methods; None for data-free ones.
        preprocess: how `data` becomes the model's input.
        val: validation samples (Taylor records accuracy per round when given).
        val_preprocess: how `val` becomes the model's input.
        target: the sparsity asked for (SynFlow schedules its rounds to it).
        seed: seeds every random choice a method makes.
        settings: `MethodSettings`.
    """

    torch_model: TorchModel
    model: Model | None = None
    data: Dataset | None = None
    preprocess: Preprocess | None = None
    val: Dataset | None = None
    val_preprocess: Preprocess | None = None
    target: float = 0.0
    seed: int = 0
    settings: MethodSettings = field(default_factory=MethodSettings)

    @property
    def softmax_output(self) -> str | None:
        """The output of the final Softmax, which scoring on a loss must cut off (see `logits`)."""
        return self.model.final_softmax if self.model is not None else None

    def logits(self) -> torch.nn.Module:
        """The torch model without a final Softmax: its output is logits, whatever the export ended with.

        Cross-entropy of probabilities as if they were logits gives wrong gradients (MATLAB
        exports end with a Softmax); every data-driven method takes its loss on this module.
        Parameters are shared with `torch_model.module`.
        """
        from onnxprune.workbench.train import logits_module

        return logits_module(self.torch_model, self.softmax_output)

    def minibatch_loss(self, network: torch.nn.Module, rng: np.random.Generator) -> torch.Tensor:
        """Cross-entropy of `network`'s logits on a random mini-batch (`settings.batch_size`) of `data`.

        The one mini-batch step the data-driven methods share; `rng` keeps their draws seeded.
        """
        import torch
        import torch.nn.functional as F

        size = min(self.settings.batch_size, len(self.data))
        indices = np.sort(rng.choice(len(self.data), size=size, replace=False))
        output = network(torch.from_numpy(self.preprocess(self.data, indices)))
        output = output[0] if isinstance(output, (tuple, list)) else output
        return F.cross_entropy(output.reshape(output.shape[0], -1), torch.from_numpy(self.data.labels[indices]))

    def input_shape(self, batch: int = 1) -> tuple[int, ...]:
        """The model's input shape with this batch size."""
        return self.model.input.concrete_shape(batch)


@dataclass(frozen=True)
class Method:
    """A registered pruning method.

    Attributes:
        name: what --method takes.
        granularity: "weight" (unstructured) or "channel" (filters and neurons, compacted).
        score: per layer `score(entry, ctx)`, or with `whole_model` `score(ctx)` -> {layer: scores}.
        summary: the first line of its docstring.
        needs_data: the method needs training data in its `ScoreContext`.
        whole_model: `score` scores every layer in one computation.
        loop: channel methods that select in rounds: `loop(ctx, sparsity, max_layer_sparsity,
            mask_only)` -> (`onnxprune.pruning.channels.ChannelPlan`, per-round history).
    """

    name: str
    granularity: str
    score: Callable
    summary: str
    needs_data: bool = False
    whole_model: bool = False
    loop: Callable | None = None

    @property
    def runs_model(self) -> bool:
        """Whether scoring runs the torch model (data-driven methods, SynFlow) rather than only reading weights.

        Only these need a conversion that computes what onnxruntime does (`onnxprune.workbench.fidelity`).
        """
        return self.needs_data or self.whole_model or self.loop is not None

    def layer_scores(self, ctx: ScoreContext) -> dict[str, np.ndarray]:
        """Scores of every prunable layer (float64, lower goes first), in the model's layer order."""
        import torch  # here, not at import: the registry is read by `onnxprune --help` paths too

        if self.needs_data and ctx.data is None:
            raise ConfigError(f"the {self.name} method needs training data: give --data")
        # data-driven methods take gradients of a loss; the others need no autograd graph
        with torch.no_grad() if not self.needs_data else contextlib.nullcontext():
            if self.whole_model:
                scores = self.score(ctx)
                return {name: np.asarray(scores[name], dtype=np.float64) for name in ctx.torch_model.params}
            return {
                name: np.asarray(self.score(entry, ctx), dtype=np.float64)
                for name, entry in ctx.torch_model.params.items()
            }


METHODS: dict[str, Method] = {}  # by name, filled by `register`; read through `get_method`


def register(
    name: str, granularity: str, needs_data: bool = False, whole_model: bool = False, loop: Callable | None = None
) -> Callable:
    """Register a scoring function under `name` (see the module docstring for its shapes).

    Registering a name twice raises.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if loop is not None and granularity != "channel":
        raise ValueError("only channel methods select in rounds (loop=)")

    def decorate(function: Callable) -> Callable:
        if name in METHODS:
            raise ValueError(f"pruning method '{name}' is already registered")
        summary = (function.__doc__ or "").strip().splitlines()[0] if function.__doc__ else ""
        METHODS[name] = Method(name, granularity, function, summary, needs_data, whole_model, loop)
        return function

    return decorate
