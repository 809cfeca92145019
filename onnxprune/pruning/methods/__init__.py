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

from dataclasses import dataclass
from typing import TYPE_CHECKING

from onnxprune.errors import ConfigError
from onnxprune.pruning.methods.registry import GRANULARITIES, METHODS, Method, ScoreContext, register

if TYPE_CHECKING:
    from onnxprune.options import PruneOptions, ScheduleOptions

__all__ = [
    "GRANULARITIES", "Method", "ScoreContext", "Traits", "check_schedule", "default_scope", "get_method",
    "list_methods", "register", "sparsity_units", "traits",
]  # fmt: skip


def get_method(name: str) -> Method:
    """The registered method called `name` (ConfigError listing the known ones otherwise)."""
    _load_builtin_methods()
    if name not in METHODS:
        raise ConfigError(f"unknown pruning method '{name}'; known methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def list_methods() -> list[Method]:
    """Every registered method, sorted by name."""
    _load_builtin_methods()
    return [METHODS[name] for name in sorted(METHODS)]


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
        runs_model: a stage's method runs the torch model to score (`Method.runs_model`).
    """

    kind: str
    needs_data: bool
    selects_in_rounds: bool
    runs_model: bool = False


def traits(options: PruneOptions) -> Traits:
    """The traits of the methods `options` name; an unknown method fails here, listing the known ones."""
    methods = [get_method(name) for name, _ in options.stages]
    granularities = {method.granularity for method in methods}
    kind = "unstructured" if granularities == {"weight"} else "filter" if granularities == {"channel"} else "hybrid"
    return Traits(
        kind=kind,
        needs_data=any(method.needs_data for method in methods),
        selects_in_rounds=not options.is_recipe and methods[0].loop is not None,
        runs_model=any(method.runs_model for method in methods),
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
