"""The registry of pruning methods, and the contract every method follows.

A method is registered by name with its granularity ("weight" for unstructured pruning, "channel"
for filters and neurons) and returns scores, lower pruned first. Selection, masking and
compaction are shared, so a new method is one file (see docs/methods.md, "Adding a method"):

    @register("l1-filter", granularity="channel")
    def l1_filter(entry: ParamEntry, ctx: ScoreContext) -> np.ndarray:
        '''Score each output filter (or neuron) by the L1 norm of its weights.'''

Three shapes of method, all called the same way (`Method.layer_scores(ctx)`):

- per layer (the default): `score(entry, ctx)` -> the scores of one layer;
- whole model (`whole_model=True`): `score(ctx)` -> {layer name: scores}, for methods whose
  scores come from one computation over every layer (Taylor, SSS, SynFlow);
- iterative selection (`loop=`): for channel methods that remove units in rounds, scoring
  again between them (Taylor's MATLAB loop, greedy removal); the loop returns the plan.

Every registered method gets the contract tests of tests/test_methods.py for free.
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
    from onnxprune.graph.model import Model
    from onnxprune.options import PruneOptions, ScheduleOptions
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

    def logits(self):
        """The torch model without a final Softmax: its output is logits, whatever the export ended with.

        Cross-entropy of probabilities as if they were logits gives wrong gradients (MATLAB
        exports end with a Softmax); every data-driven method takes its loss on this module.
        Parameters are shared with `torch_model.module`.
        """
        from onnxprune.workbench.train import logits_module

        return logits_module(self.torch_model, self.softmax_output)

    def minibatch_loss(self, network, rng: np.random.Generator):
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


_REGISTRY: dict[str, Method] = {}


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
        if name in _REGISTRY:
            raise ValueError(f"pruning method '{name}' is already registered")
        summary = (function.__doc__ or "").strip().splitlines()[0] if function.__doc__ else ""
        _REGISTRY[name] = Method(name, granularity, function, summary, needs_data, whole_model, loop)
        return function

    return decorate


def get_method(name: str) -> Method:
    """The registered method called `name` (ConfigError listing the known ones otherwise)."""
    _load_builtin_methods()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown pruning method '{name}'; known methods: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def list_methods() -> list[Method]:
    """Every registered method, sorted by name."""
    _load_builtin_methods()
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def _load_builtin_methods() -> None:
    # imported on first use: the methods import torch, which `onnxprune --help` should not wait for
    from onnxprune.pruning.methods import greedy, magnitude, norms, slimming, sss, synflow, taylor  # noqa: F401  (they register)


def sparsity_units(method: str) -> str:
    """What a method's sparsity counts: "channels" for filter and neuron methods, else "weights".

    A recipe or a schedule's rows count weights too: their sparsity is measured in weights.
    """
    try:
        return "channels" if get_method(method).granularity == "channel" else "weights"
    except ConfigError:
        return "weights"


@dataclass(frozen=True)
class Traits:
    """What a prune's methods are, read from the registry (`traits`).

    Attributes:
        kind: "unstructured" (weights), "filter" (channels) or "hybrid" (a recipe of both): it
            names output files.
        needs_data: a stage's method scores on data.
        selects_in_rounds: the (single) method selects in rounds of its own (Taylor, greedy).
    """

    kind: str
    needs_data: bool
    selects_in_rounds: bool


def traits(options: PruneOptions) -> Traits:
    """The traits of the methods `options` name; an unknown method fails here, listing the known ones."""
    methods = [get_method(name) for name, _ in options.stages]
    granularities = {method.granularity for method in methods}
    kind = "unstructured" if granularities == {"weight"} else "filter" if granularities == {"channel"} else "hybrid"
    return Traits(
        kind=kind,
        needs_data=any(method.needs_data for method in methods),
        selects_in_rounds=not options.is_recipe and methods[0].loop is not None,
    )


def check_schedule(schedule: ScheduleOptions) -> Traits:
    """The checks of `ScheduleOptions` that need the methods' traits; returns the traits.

    Rewinding and gradual pruning reset or grow the masks of single weights: channel methods are refused.
    """
    found = traits(schedule.prune)
    if schedule.rewind and found.kind != "unstructured":
        raise ConfigError("--rewind resets surviving weights of a masked model: it needs an unstructured method")
    if schedule.schedule == "gradual" and found.kind != "unstructured":
        raise ConfigError(
            f"--schedule gradual grows weight masks while training; {schedule.prune.method} removes channels: "
            "use one-shot or --iterations"
        )
    return found


def default_scope(options: PruneOptions, fine_tunes: bool = False, raw_pixels: bool = False) -> str:
    """The scope to prune in when `options.scope` is None: the measured defaults (docs/training.md).

    Single-weight methods: "lamp", except "global" when the pruned model is fine-tuned and its
    inputs are normalised (VGG13 80%, 1 epoch: global 84.89% vs LAMP 84.21%); without
    fine-tuning LAMP keeps 10-27 points more, and on raw 0-255 inputs (layers of very different
    scale) 1-10 points more after fine-tuning too. Structured methods and recipes: "layer".
    """
    if options.scope is not None:
        return options.scope
    if options.is_recipe or traits(options).kind != "unstructured":
        return "layer"
    return "global" if fine_tunes and not raw_pixels else "lamp"
