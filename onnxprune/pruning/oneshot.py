"""The prune verb: score, select, mask, write back; and save with verification."""

from __future__ import annotations

import dataclasses
import gc
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from onnxprune.errors import ConfigError, VerificationError, stage
from onnxprune.graph.channels import CompactReport, compact
from onnxprune.graph.model import Model, PrunableLayer, check_output_path, from_proto, is_quantized
from onnxprune.graph.storage import save_model_file, write_back
from onnxprune.graph.verify import Reference, VerifyReport, random_batch, reference, verify
from onnxprune.options import MethodSettings, PruneOptions, check_sparsity
from onnxprune.pruning import channels, select
from onnxprune.pruning.budget import BudgetReport, plan_to_budget
from onnxprune.pruning.methods import Method, ScoreContext, default_scope, get_method, traits
from onnxprune.pruning.reconstruct import CALIBRATION_SAMPLES, Reconstruction, reference_copy
from onnxprune.pruning.reconstruct import reconstruct as reconstruct_layers
from onnxprune.workbench.convert import TorchModel, mask_parameter, to_torch
from onnxprune.workbench.data import Dataset, Preprocess, stratified_sample


@dataclass(frozen=True)
class LayerReport:
    """Sparsity of one prunable layer, counted on the weights that will be written."""

    name: str
    op_type: str
    weight: str
    shape: tuple[int, ...]
    numel: int
    zeros: int
    target: float | None
    capped: bool = False
    channels: int = 0
    channels_removed: int = 0

    @property
    def sparsity(self) -> float:
        """Fraction of the layer's weights that are zero (structured: removed)."""
        return self.zeros / self.numel if self.numel else 0.0

    @property
    def channel_sparsity(self) -> float:
        """Fraction of the layer's output channels removed (structured methods)."""
        return self.channels_removed / self.channels if self.channels else 0.0


@dataclass
class PruneResult:
    """A pruned model in memory, with what was done to it.

    Attributes:
        source: the model it was pruned from (untouched).
        torch_model: the pruned torch model; with `masks_kept`, its masks are
            torch.nn.utils.prune masks (`weight_orig` x `weight_mask`), ready for fine-tuning.
        weights: the new value of each prunable weight initializer, in ONNX layout.
        layers: per-layer report.
        method, scope: what was asked.
        requested: the requested sparsity.
        notes: things the user should know (capped layers, excluded layers).
        selection_seconds: time spent scoring and selecting.
        masks_kept: whether the torch model carries torch.nn.utils.prune masks.
        total_sparsity: zeros over every floating-point initializer (biases, BatchNorm
            parameters and MATLAB's mean image included).
        compacted: structured methods: the model with the removed channels physically gone.
        compaction: what compaction removed, folded, and where it is approximate.
        granularity: "weight" or "channel".
        params_removed, macs_removed: structured methods: the fractions of prunable-layer
            parameters and multiply-accumulates removed by compaction.
        history: Taylor: per round, mini-batch loss, validation top-1, filters left.
        units: structured methods: (units removed, removable units and those kept whole); a unit
            is a filter or neuron, or channels coupled by residual connections.
        kept_whole: structured methods: units kept only because the analysis cannot follow them.
        reconstruction: with `reconstruct`: what `onnxprune.pruning.reconstruct` did (also a note).
        budget: with `speedup` or `target_macs`: what `onnxprune.pruning.budget` measured (also a note).
        verification: filled in by `save`.
        sparse_initializers: filled in by `save` with `sparse_storage=True`.
    """

    source: Model
    torch_model: TorchModel
    weights: dict[str, np.ndarray]
    layers: list[LayerReport]
    method: str
    scope: str
    requested: float
    notes: list[str] = field(default_factory=list)
    selection_seconds: float = 0.0
    masks_kept: bool = True
    verification: VerifyReport | None = None
    sparse_initializers: list[str] = field(default_factory=list)
    total_sparsity: float = 0.0
    compacted: onnx.ModelProto | None = field(default=None, repr=False)
    compaction: CompactReport | None = None
    granularity: str = "weight"
    params_removed: float = 0.0
    macs_removed: float = 0.0
    history: list[dict] = field(default_factory=list)
    units: tuple[int, int] = (0, 0)
    kept_whole: int = 0
    reconstruction: Reconstruction | None = None
    budget: BudgetReport | None = None
    verified_against: str = "torch"  # or "onnxruntime": the conversion differs, the input graph is the reference
    _model: Model | None = field(default=None, repr=False)

    @property
    def model(self) -> Model:
        """The pruned model as an in-memory `Model` (compacted for structured methods)."""
        if self._model is None:
            proto = self.compacted if self.compacted is not None else write_back(self.source, self.weights)
            self._model = from_proto(proto)
        return self._model

    @property
    def channel_sparsity(self) -> float:
        """Structured methods: the fraction of removable filters and neurons removed (kept-whole ones counted)."""
        removed, total = self.units
        return removed / total if total else 0.0

    @property
    def prunable_sparsity(self) -> float:
        """Zeros over all weights of prunable layers."""
        total = sum(layer.numel for layer in self.layers)
        return sum(layer.zeros for layer in self.layers) / total if total else 0.0

    def release(self) -> None:
        """Drop the torch model, the new weights and the source model to free their memory.

        Afterwards only the reports (`layers`, sparsities, `notes`, `verification`) remain;
        `save(..., release=True)` calls this once the file is written.
        """
        self.torch_model = None
        self.weights = {}
        self.source = None
        self._model = None
        gc.collect()  # an fx.GraphModule and its graph reference each other: free the cycle now


def _total_sparsity(model: Model, weights: dict[str, np.ndarray]) -> float:
    """Zeros over every floating-point initializer once `weights` replace their initializers."""
    total, zeros = model.parameter_counts()
    for layer in model.layers:
        before = model.weight_array(layer)
        zeros += int(np.count_nonzero(weights[layer.weight] == 0)) - int(before.size - np.count_nonzero(before))
    return zeros / total if total else 0.0


@dataclass
class PruneInputs:
    """What a prune works on besides its options: the torch model to continue from, and the data.

    Attributes:
        torch_model: an already converted model to continue from (iterative pruning); None converts.
        keep_masks: attach the masks with torch.nn.utils.prune so fine-tuning keeps pruned weights
            at zero. False zeroes the weights in place (the zeros are the mask: reloading the file
            recovers it), which saves two copies of every weight when nothing trains afterwards.
        data: training samples, for methods that score on data (Taylor) and for `reconstruct`.
        preprocess: how `data` becomes the model's input.
        val: validation samples (Taylor records accuracy per round on them).
        val_preprocess: how `val` becomes the model's input.
        original_counts: structured methods on a model compacted earlier: each channel group's
            original size, so the sparsity stays a fraction of the original channels.
    """

    torch_model: TorchModel | None = None
    keep_masks: bool = True
    data: Dataset | None = None
    preprocess: Preprocess | None = None
    val: Dataset | None = None
    val_preprocess: Preprocess | None = None
    original_counts: dict[str, int] | None = None


def prune(
    model: Model,
    sparsity: float = PruneOptions.sparsity,
    *,
    torch_model: TorchModel | None = None,
    keep_masks: bool = True,
    data: Dataset | None = None,
    preprocess: Preprocess | None = None,
    val: Dataset | None = None,
    val_preprocess: Preprocess | None = None,
    original_counts: dict[str, int] | None = None,
    method_options: MethodSettings | dict | None = None,
    **options: Any,
) -> PruneResult:
    """Prune a loaded model: the keyword form of `prune_with`, which every caller ends in.

    Args:
        model: from `onnxprune.load`.
        sparsity: fraction of prunable weights to remove, in [0, 1) (structured methods: of the
            removable filters and neurons, and the model is compacted: `PruneResult.compacted`).
        torch_model: see `PruneInputs` (as are the six below).
        keep_masks: see `PruneInputs`.
        data: see `PruneInputs`.
        preprocess: see `PruneInputs`.
        val: see `PruneInputs`.
        val_preprocess: see `PruneInputs`.
        original_counts: see `PruneInputs`.
        method_options: `onnxprune.options.MethodSettings` (or a dict of some of its fields), the
            `settings` of `PruneOptions`: Taylor's batches_per_round, greedy's candidates, ...
        **options: any other field of `onnxprune.options.PruneOptions`, with its default there:
            method ("magnitude"), scope (None: the measured default, LAMP for weight methods),
            config (a YAML of per-layer ratios), skip_first, skip_last, max_layer_sparsity,
            mask_only, round_to, seed, reconstruct. An unknown name is refused, listing them.

    Returns:
        A `PruneResult`; nothing is written until `save`. `onnxprune prune m.onnx --sparsity 0.9`
        and `prune(load("m.onnx"), 0.9)` give the same weights (tests/test_api.py).

    Example:
        >>> model = onnxprune.load("alexnet.onnx")  # doctest: +SKIP
        >>> result = onnxprune.prune(model, 0.9, scope="global")  # doctest: +SKIP
        >>> onnxprune.save(result, "alexnet_pruned.onnx")  # doctest: +SKIP
    """
    known = {item.name for item in dataclasses.fields(PruneOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"prune() got an unknown option '{unknown[0]}'; the options are: {', '.join(sorted(known))}")
    if method_options is not None:
        options["settings"] = method_options
    if options.get("config") is not None:
        options["config"] = str(options["config"])
    inputs = PruneInputs(torch_model, keep_masks, data, preprocess, val, val_preprocess, original_counts)
    return prune_with(model, PruneOptions(sparsity=sparsity, **options), inputs)


def prune_with(
    model: Model, options: PruneOptions, inputs: PruneInputs | None = None, *, sparsity: float | None = None
) -> PruneResult:
    """Prune as `options` say, one method or a hybrid recipe's stages in turn: the one prune core.

    Every field of `options` takes effect; a scope left None becomes the measured default
    (`onnxprune.pruning.methods.default_scope`, with a note).

    Args:
        model: from `onnxprune.load`.
        options: `onnxprune.options.PruneOptions`.
        inputs: `PruneInputs` (None: convert the model, no data, masks kept).
        sparsity: overrides `options.sparsity` (a schedule's round target); not for recipes.
    """
    inputs = inputs or PruneInputs()
    if is_quantized(model.proto):
        raise ConfigError(
            "this model is quantized (QuantizeLinear / DequantizeLinear): it cannot be pruned or trained; "
            "prune the float model, then quantize the result"
        )
    if not model.layers:
        raise ConfigError(
            "the model has no prunable layer (Conv, Gemm or MatMul with an initializer weight); nothing to prune"
        )
    notes = []
    if options.scope is None:
        options = dataclasses.replace(options, scope=default_scope(options))
        if traits(options).kind == "unstructured" and not options.is_recipe:
            notes.append(f"scope {options.scope}: the default measured on reference models, not on this one")
    if options.reconstruct and inputs.data is None:
        raise ConfigError("--reconstruct solves each layer on samples: give --data")
    if options.is_recipe:
        result = _prune_recipe(model, options, inputs)
    else:
        target = options.sparsity if sparsity is None else check_sparsity(sparsity)
        result = _prune_one(model, options, inputs, target)
    result.notes = notes + result.notes
    return result


def _prune_one(model: Model, options: PruneOptions, inputs: PruneInputs, sparsity: float) -> PruneResult:
    """One method at `sparsity`: score, select, mask (and reconstruct), for weights or channels."""
    chosen = get_method(options.method)
    select.check_scope(options.scope, options.method, chosen.granularity)
    torch_model, degraded = (inputs.torch_model, None) if inputs.torch_model else _converted_for(model, chosen, options)
    context = ScoreContext(
        torch_model, model=model, data=inputs.data, preprocess=inputs.preprocess, val=inputs.val,
        val_preprocess=inputs.val_preprocess, target=sparsity, seed=options.seed, settings=options.settings,
    )  # fmt: skip
    unpruned = reference_copy(torch_model) if options.reconstruct else None  # the outputs reconstruction aims at
    if chosen.granularity == "channel":
        return _degraded(_prune_channels(model, chosen, options, inputs, context, sparsity, unpruned), degraded)
    if options.budget is not None:
        raise ConfigError(
            f"{options.budget_option} needs a structured method (l1-filter, l2-filter, neuron, taylor-filter, ...): "
            f"{options.method} zeroes single weights, which leaves onnxruntime's dense kernels as fast as before"
        )

    pinned, default = _pinned_ratios(model, options.config, options.skip_first, options.skip_last)
    started = time.perf_counter()
    masks, plans = _select(chosen, torch_model, pinned, options.scope, sparsity if default is None else default,
                           options.max_layer_sparsity, context)  # fmt: skip
    selection_seconds = time.perf_counter() - started

    _apply_masks(torch_model, masks, inputs.keep_masks)
    del masks
    notes = _notes(plans, pinned, options.skip_first, options.skip_last, model, options.max_layer_sparsity)
    reconstruction = None if unpruned is None else _reconstruct(torch_model, unpruned, context)
    if reconstruction is None:
        weights = {entry.layer.weight: entry.to_onnx() for entry in torch_model.params.values()}
    else:
        notes.append(reconstruction.note())
        weights = torch_model.initializer_values(model)  # reconstruction also solved biases
    layers = [_layer_report(layer, weights[layer.weight], plans[layer.name]) for layer in model.layers]
    return _degraded(_result(model, torch_model, weights, layers, options, sparsity, notes, selection_seconds,
                             inputs.keep_masks, reconstruction), degraded)  # fmt: skip


def _converted_for(model: Model, method: Method, options: PruneOptions) -> tuple[TorchModel, str | None]:
    """The torch model, and a note when its conversion differs but `method` needs only its weights.

    Selection by magnitude, LAMP or filter norms reads weights, which the conversion maps one to one
    (checked exactly at load); the written model is then verified against the input graph in
    onnxruntime with the same weights. Anything that runs the torch model refuses, naming the node.
    """
    from onnxprune.workbench.fidelity import ConversionMismatch, mismatch_message

    try:
        return to_torch(model), None
    except ConversionMismatch as error:
        if method.runs_model or options.reconstruct:
            purpose = "--reconstruct" if options.reconstruct else f"--method {method.name}"
            raise ConversionMismatch(mismatch_message(error.check, purpose), error.torch_model, error.check) from None
        where = error.check.first.describe() if error.check.first else "its outputs"
        return error.torch_model, (
            f"the conversion to torch differs from onnxruntime ({where}; `onnxprune inspect --check` reports it): "
            f"{method.name} needs only the weights, so they were pruned in the file's initializers and the written "
            "model was verified against the input model in onnxruntime with the same weights"
        )


def _degraded(result: PruneResult, note: str | None) -> PruneResult:
    """A result whose torch model is known to differ from onnxruntime: verified against the input graph instead."""
    if note is not None:
        result.verified_against = "onnxruntime"
        result.notes.append(note)
    return result


def _prune_channels(
    model: Model,
    method: Method,
    options: PruneOptions,
    inputs: PruneInputs,
    context: ScoreContext,
    sparsity: float,
    unpruned: torch.nn.Module | None,
) -> PruneResult:
    """Structured pruning: plan, mask in torch, (reconstruct against `unpruned`,) write the masked graph, compact it."""
    if method.needs_data and context.data is None:
        raise ConfigError(f"the {method.name} method needs training data: give --data")
    torch_model, keep_masks = context.torch_model, inputs.keep_masks
    started = time.perf_counter()
    history = []
    budget = None
    if options.budget is not None:
        if method.loop is not None:
            raise ConfigError(
                f"{options.budget_option} needs a method that scores once; {method.name} selects in rounds"
            )
        chosen_plan, budget = plan_to_budget(
            model, method, context, speedup=options.speedup, target_macs=options.target_macs,
            batch=options.bench_batch_size, threads=options.threads, max_layer_sparsity=options.max_layer_sparsity,
            round_to=options.round_to, mask_only=options.mask_only,
        )  # fmt: skip
        channels.apply(torch_model, model, chosen_plan, keep_masks)
        selectable = sum(len(group.roots) for group in chosen_plan.groups.values())
        sparsity = len(chosen_plan.removed) / max(1, selectable + sum(chosen_plan.kept_whole.values()))
    elif method.loop is not None:  # a method that selects in rounds, scoring again between them
        chosen_plan, history = method.loop(context, sparsity, options.max_layer_sparsity, options.mask_only)
        keep_masks = True  # the masks were attached while training between rounds
    else:
        pinned, default = _pinned_ratios(model, options.config, options.skip_first, options.skip_last)
        chosen_plan = channels.plan(
            model, method, torch_model, sparsity, options.scope, pinned, sparsity if default is None else default,
            options.max_layer_sparsity, context, inputs.original_counts, options.mask_only, options.round_to,
        )  # fmt: skip
        channels.apply(torch_model, model, chosen_plan, keep_masks)
    selection_seconds = time.perf_counter() - started
    reconstruction = None
    if unpruned is not None:  # the kept filters' weights, on the kept inputs, solved for the dense outputs
        reconstruction = _reconstruct(torch_model, unpruned, context)
    weights = torch_model.initializer_values(model)
    compacted, report = compact(from_proto(write_back(model, weights)), remove=chosen_plan.removed)
    with stage("compaction"):
        small = from_proto(compacted)
    before = {layer.name: layer for layer in model.layers}
    layers = [
        LayerReport(
            name=layer.name, op_type=layer.op_type, weight=layer.weight, shape=layer.shape,
            numel=before[layer.name].numel, zeros=before[layer.name].numel - layer.numel, target=None,
            channels=before[layer.name].shape[layer.out_axis], channels_removed=report.removed.get(layer.name, 0),
        )
        for layer in small.layers
    ]  # fmt: skip
    notes = [f"'{name}' keeps its channels: {why}" for name, why in chosen_plan.kept_layers.items()]
    kept = channels.kept_note(chosen_plan.kept_whole, sparsity)
    notes += [kept] if kept else []
    notes += [f"compaction is approximate at '{name}': {why}" for name, why in report.inexact.items()]
    if report.skipped:
        notes.append(f"{len(report.skipped)} channel(s) zeroed but not removed: {next(iter(report.skipped.values()))}")
    if reconstruction is not None:
        notes.append(reconstruction.note())
    if budget is not None:
        notes.insert(0, budget.note())
    return _result(
        model, torch_model, weights, layers, options, sparsity, notes, selection_seconds, keep_masks, reconstruction,
        budget=budget,
        compacted=compacted,
        compaction=report,
        granularity="channel",
        params_removed=1 - small.layer_total("numel") / max(1, model.layer_total("numel")),
        macs_removed=1 - small.layer_total("macs") / max(1, model.layer_total("macs")),
        units=(
            len(chosen_plan.removed),
            sum(len(g.roots) for g in chosen_plan.groups.values()) + sum(chosen_plan.kept_whole.values()),
        ),
        kept_whole=sum(chosen_plan.kept_whole.values()),
        history=history,
    )  # fmt: skip


def _result(
    model: Model, torch_model: TorchModel, weights: dict[str, np.ndarray], layers: list[LayerReport],
    options: PruneOptions, sparsity: float, notes: list[str], selection_seconds: float, keep_masks: bool,
    reconstruction: Reconstruction | None, **structured: Any,
) -> PruneResult:  # fmt: skip
    """The `PruneResult` of one method's prune; `structured` holds what compaction adds."""
    return PruneResult(
        source=model, torch_model=torch_model, weights=weights, layers=layers, method=options.method,
        scope=options.scope, requested=sparsity, notes=notes, selection_seconds=selection_seconds,
        masks_kept=keep_masks, total_sparsity=_total_sparsity(model, weights), reconstruction=reconstruction,
        **structured,
    )  # fmt: skip


@stage("selection")
def _select(
    method: Method, torch_model: TorchModel, pinned: dict[str, float], scope: str, free_sparsity: float,
    max_layer_sparsity: float, context: ScoreContext,
) -> tuple[dict[str, np.ndarray], dict[str, select.LayerPlan]]:  # fmt: skip
    """Score every layer and choose what to remove: (keep-masks in ONNX layout, plans)."""
    scores = _score(method, context)
    if scope == "lamp":
        scores = {name: select.lamp_scores(layer_scores) for name, layer_scores in scores.items()}
    plans = select.select_layerwise(scores, pinned)
    free = {name: scores[name] for name in scores if name not in pinned}
    if free:
        shapes = {name: torch_model.params[name].layer.shape for name in free}
        plans.update(select.plan_scope(free, shapes, scope, free_sparsity, max_layer_sparsity))
    return select.masks_from_plans(scores, plans), plans


def reselect(
    model: Model,
    options: PruneOptions,
    torch_model: TorchModel,
    sparsity: float,
    data: Dataset | None = None,
    preprocess: Preprocess | None = None,
) -> dict[str, select.LayerPlan]:
    """Score the current (masked, trained) weights again and narrow the masks to `sparsity`.

    Gradual pruning's step: `options` as for `prune`, every ratio of a --config file scaled by
    `sparsity / options.target`. Weights masked before stay masked (the masks only narrow).
    """
    method = get_method(options.method)
    pinned, default = _pinned_ratios(model, options.config, options.skip_first, options.skip_last)
    factor = sparsity / options.target if options.target else 0.0
    pinned = {name: ratio * factor for name, ratio in pinned.items()}
    free_sparsity = (options.target if default is None else default) * factor
    context = ScoreContext(
        torch_model, model=model, data=data, preprocess=preprocess, target=sparsity, seed=options.seed,
        settings=options.settings,
    )  # fmt: skip
    scope = default_scope(options, fine_tunes=True)  # gradual pruning fine-tunes; a given scope stays
    masks, plans = _select(method, torch_model, pinned, scope, free_sparsity, options.max_layer_sparsity, context)
    for name, keep in masks.items():
        entry = torch_model.params[name]
        narrowed = entry.layout_to_torch(keep)
        if hasattr(entry.module, "weight_mask"):
            entry.module.weight_mask.mul_(narrowed.to(entry.module.weight_mask))
        else:
            mask_parameter(entry.module, "weight", narrowed, keep_masks=True)
    return plans


def _pinned_ratios(
    model: Model, config: str | os.PathLike | None, skip_first: bool, skip_last: bool
) -> tuple[dict[str, float], float | None]:
    names = [layer.name for layer in model.layers]
    pinned, default = {}, None
    if config is not None:
        aliases = {layer.weight: layer.name for layer in model.layers}
        pinned, default = select.read_ratios(config, names, aliases)
    if skip_first:
        pinned[names[0]] = 0.0
    if skip_last:
        pinned[names[-1]] = 0.0
    return pinned, default


@stage("selection")
def _score(method: Method, context: ScoreContext) -> dict[str, np.ndarray]:
    return {name: scores.astype(np.float32) for name, scores in method.layer_scores(context).items()}


def _reconstruct(torch_model: TorchModel, unpruned: torch.nn.Module, context: ScoreContext) -> Reconstruction:
    """Reconstruction on a stratified sample of the context's data (at most `CALIBRATION_SAMPLES`)."""
    data = context.data
    chosen = stratified_sample(data.labels, min(CALIBRATION_SAMPLES, len(data)), context.seed)
    inputs = torch.from_numpy(context.preprocess(data, chosen))
    return reconstruct_layers(torch_model, unpruned, inputs, seed=context.seed)


@stage("selection")
def _apply_masks(torch_model: TorchModel, masks: dict[str, np.ndarray], keep_masks: bool) -> None:
    """Attach each mask through torch.nn.utils.prune, or zero the weights in place."""
    for name, mask in masks.items():
        entry = torch_model.params[name]
        mask_parameter(entry.module, "weight", entry.layout_to_torch(mask), keep_masks)


def _layer_report(layer: PrunableLayer, weight: np.ndarray, plan: select.LayerPlan) -> LayerReport:
    return LayerReport(
        name=layer.name,
        op_type=layer.op_type,
        weight=layer.weight,
        shape=layer.shape,
        numel=layer.numel,
        zeros=int(weight.size - np.count_nonzero(weight)),
        target=plan.ratio,
        capped=plan.capped,
    )


def _notes(
    plans: dict[str, select.LayerPlan], pinned: dict[str, float], skip_first: bool, skip_last: bool, model: Model,
    max_layer_sparsity: float,
) -> list[str]:  # fmt: skip
    notes = []
    capped = [name for name, plan in plans.items() if plan.capped]
    if capped:
        notes.append(
            f"global selection capped {len(capped)} layer(s) at {max_layer_sparsity:.0%} to avoid layer collapse: "
            + ", ".join(capped)
        )
    if skip_first:
        notes.append(f"first layer '{model.layers[0].name}' left dense")
    if skip_last:
        notes.append(f"last layer '{model.layers[-1].name}' left dense")
    return notes


def save(
    result: PruneResult,
    output: str | os.PathLike,
    *,
    sparse_storage: bool = False,
    release: bool = False,
) -> VerifyReport:
    """Write a pruned model atomically, after verifying it.

    The file is written to a temporary name, checked (onnx.checker, onnxruntime loads it, output
    equals the torch model's within `onnxprune.graph.verify.RTOL/ATOL`), then renamed into place. On
    any failure nothing is left at `output`. The input file is never overwritten.

    Args:
        result: from `prune`.
        output: the .onnx path to write.
        sparse_storage: move weights to `graph.sparse_initializer` where that is smaller
            (smaller file; onnxruntime densifies them at load, so no speed-up).
        release: free the torch model and both copies of the weights as soon as the file is
            written, before onnxruntime loads it (`PruneResult.release`); for callers that
            need nothing but the reports afterwards. It keeps peak memory near 4x the file.

    Returns:
        The verification report (also stored in `result.verification`).
    """
    output = check_output_path(result.source, output)
    if result.compacted is not None:
        return _save_compacted(result, output)
    candidates = [layer.weight for layer in result.source.layers] if sparse_storage else []
    expected = _reference(result)
    weights = result.weights

    def release_memory() -> None:
        result.release()
        weights.clear()  # the arrays themselves, not only this result's reference to them

    reports: list[VerifyReport] = []
    moved = save_model_file(
        output, result.source.proto, weights, sparse_candidates=candidates,
        external_data=result.source.external_data, check=lambda path: reports.append(_verified(path, expected, result)),
        after_write=release_memory if release else None,
    )  # fmt: skip
    result.sparse_initializers = moved
    result.verification = reports[0]
    return reports[0]


def _save_compacted(result: PruneResult, output: Path) -> VerifyReport:
    """Write the compacted model; where compaction is approximate (LRN), measure instead of failing."""
    expected = _reference(result)
    strict = not result.compaction.inexact
    reports: list[VerifyReport] = []
    save_model_file(
        output, result.compacted, external_data=result.source.external_data,
        check=lambda path: reports.append(_verified(path, expected, result, strict=strict)),
    )  # fmt: skip
    result.verification = reports[0]
    return reports[0]


def _reference(result: PruneResult) -> Reference:
    """What the written file must reproduce.

    The pruned torch model; or, where the conversion differs, the input graph in onnxruntime with the pruned weights.
    """
    if result.verified_against == "torch":
        return reference(result.torch_model.module, result.source.input)
    from onnxprune.workbench.fidelity import onnxruntime_session

    inputs = random_batch(result.source.input, 2)
    masked = onnxruntime_session(write_back(result.source, result.weights))
    return Reference(inputs, masked.run(None, {masked.get_inputs()[0].name: inputs}))


def _verified(path: Path, expected: Reference, result: PruneResult, strict: bool = True) -> VerifyReport:
    """`verify`, and where the written model differs, the first node of it that departs from the reference."""
    try:
        return verify(path, expected, strict=strict)
    except VerificationError as error:
        if result.verified_against != "torch":
            raise
        from onnxprune.workbench.fidelity import first_departure

        try:  # only a written model onnxruntime runs can be compared node by node
            first, _ = first_departure(onnx.load(str(path)), result.torch_model.module, expected.inputs)
        except Exception:  # it cannot (onnx.checker or onnxruntime refused it): the error says why already
            raise error from None
        where = (
            f"the first value to depart is at {first.describe()}: the rewrite of that layer changed the output"
            if first
            else "no single node departs"
        )
        raise VerificationError(
            f"{error} (the conversion itself is exact: checked at load); {where}; please report this model"
        ) from None


def default_output(model_path: Path, sparsity: float | str, method: str) -> Path:
    """`<stem>_<method>_<sparsity>.onnx` beside the input (`sparsity` may be a label: "speedup2.00")."""
    method = method.replace(":", "").replace(",", "+").replace("/", "_")  # recipes name the file too
    label = sparsity if isinstance(sparsity, str) else f"{sparsity:.2f}"
    return model_path.with_name(f"{model_path.stem}_{method}_{label}.onnx")


def _prune_recipe(model: Model, options: PruneOptions, inputs: PruneInputs) -> PruneResult:
    """A hybrid: the recipe's methods in turn, e.g. remove 30% of filters, then 80% of the weights left.

    Each stage prunes the previous stage's result (compacted after a structured stage) with the
    recipe's other options. Returns the last stage's result, its `source` the original model and
    its notes those of every stage.
    """
    current, notes, result = model, [], None
    for index, (name, sparsity) in enumerate(options.stages):
        stage = dataclasses.replace(options, method=name, sparsity=sparsity)
        # the first stage continues from the given torch model; the next converts the model this one left
        stage_inputs = inputs if index == 0 else dataclasses.replace(inputs, torch_model=None, original_counts=None)
        result = _prune_one(current, stage, stage_inputs, sparsity)
        notes += [f"{name} {sparsity:g}: {note}" for note in result.notes]
        current = result.model if result.granularity == "channel" else from_proto(write_back(current, result.weights))
    result.notes = notes
    result.method = "+".join(f"{name}:{sparsity:g}" for name, sparsity in options.stages)
    return result


def prune_chain(model: Model, stages: list[tuple[str, float]], **options: Any) -> PruneResult:
    """Apply several methods in turn (a hybrid recipe given as (method, sparsity) pairs).

    `options` as for `prune` (every stage shares them). Same as `prune` with
    `method="l1-filter:0.3,magnitude:0.8"`.
    """
    if not stages:
        raise ConfigError("an empty recipe: give stages like l1-filter:0.3,magnitude:0.8")
    recipe = ",".join(f"{name}:{sparsity!r}" for name, sparsity in stages)
    return prune(model, method=recipe, **options)
