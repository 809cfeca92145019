"""Commands that change the weights: prune and finetune."""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from onnxprune.cli.common import (
    DATA_PANEL,
    DataOption,
    FirstOption,
    FlattenOption,
    JsonOption,
    LimitOption,
    MeanOption,
    PixelRangeOption,
    SeedOption,
    SparsitiesOption,
    StdOption,
    ValOption,
    ValSplitOption,
    console,
    data_options,
    emit_json,
    help_panels,
    human_size,
    level_progress,
    pick,
    prepare_data,
    print_error,
    reports_errors,
    training_progress,
)
from onnxprune.errors import ConfigError
from onnxprune.options import (
    ADAM_LR,
    DISTILL_WEIGHT,
    RAW_PIXEL_LR,
    SLIMMING_BN_L1,
    MethodSettings,
    PruneOptions,
    ScheduleOptions,
    TrainOptions,
)

if TYPE_CHECKING:
    from onnxprune.pruning.oneshot import PruneResult
    from onnxprune.workflow.pipeline import PruneReport, RunOptions

# the defaults shown in --help are the options' own (the dataclasses are the one place they are written)
PRUNE, TRAIN, SCHEDULE, SETTINGS = PruneOptions(), TrainOptions(), ScheduleOptions(), MethodSettings()


@help_panels(
    **dict.fromkeys(("config", "skip_first", "skip_last", "max_layer_sparsity"), "Selection"),
    **DATA_PANEL,
    **dict.fromkeys(("data", "val", "val_split"), "Data"),
    **dict.fromkeys(
        (
            "finetune_epochs",
            "batch_size",
            "lr",
            "optimizer",
            "weight_decay",
            "label_smoothing",
            "distill_weight",
            "distill_temperature",
            "device",
            "seed",
            "reconstruct",
        ),
        "Fine-tuning",
    ),  # fmt: skip
    **dict.fromkeys(("iterations", "schedule", "rewind", "lr_schedule", "sparsities", "out_dir", "resume"), "Schedule"),
    **dict.fromkeys(
        ("mask_only", "batches_per_round", "max_per_round", "round_to", "max_drop", "bn_l1", "sparsity_epochs"),
        "Structured methods",
    ),
    **dict.fromkeys(("speedup", "target_macs", "bench_batch_size", "threads"), "Speed budget (structured methods)"),
    **dict.fromkeys(("sparse_storage", "as_json"), "Output"),
)
@reports_errors
def prune(
    model_path: Annotated[Path, typer.Argument(metavar="MODEL", help="an .onnx file")],
    sparsity: Annotated[
        float | None,
        typer.Option(help=f"fraction of prunable weights to remove, in [0, 1) (default: {PRUNE.sparsity})"),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="output .onnx (default: beside the input)")
    ] = None,
    method: Annotated[str, typer.Option(help="pruning method, or a recipe: l1-filter:0.3,magnitude:0.8")] = "magnitude",
    scope: Annotated[
        str | None,
        typer.Option(
            help="layer: each layer to SPARSITY; global: one threshold; lamp: one threshold on LAMP scores; "
            "erk: Erdos-Renyi-Kernel shares (default: lamp; global when fine-tuning normalised inputs; "
            "layer for filter methods)"
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML of per-layer ratios, e.g. 'conv1: 0.5' and 'default: 0.8'")
    ] = None,
    skip_first: Annotated[bool, typer.Option("--skip-first", help="leave the first prunable layer dense")] = False,
    skip_last: Annotated[bool, typer.Option("--skip-last", help="leave the last prunable layer dense")] = False,
    max_layer_sparsity: Annotated[
        float | None,
        typer.Option(
            help="global scope: no layer pruned beyond this (guards against layer collapse) "
            f"(default: {PRUNE.max_layer_sparsity})"
        ),
    ] = None,
    sparse_storage: Annotated[
        bool,
        typer.Option(
            "--sparse-storage",
            help="store weights as sparse initializers where smaller (disk only: onnxruntime densifies at load)",
        ),
    ] = False,
    as_json: JsonOption = False,
    data: DataOption = None,
    val: ValOption = None,
    val_split: ValSplitOption = None,
    finetune_epochs: Annotated[int, typer.Option(help="fine-tuning epochs after each pruning round")] = 0,
    iterations: Annotated[int, typer.Option(help="pruning rounds: 1 = one-shot (OMP), 3+ = iterative (IMP)")] = 1,
    schedule: Annotated[
        str | None,
        typer.Option(
            help="IMP schedule: geometric or cubic (Zhu-Gupta); gradual: prune while fine-tuning "
            f"(default: {SCHEDULE.schedule})"
        ),
    ] = None,
    rewind: Annotated[bool, typer.Option("--rewind", help="reset surviving weights to their original values")] = False,
    reconstruct: Annotated[
        bool | None,
        typer.Option(
            "--reconstruct/--no-reconstruct",
            help="re-solve each layer's kept weights on 512 samples of --data so that it reproduces the dense "
            "layer's outputs (least squares; no labels used; the masks and channels removed stay) "
            "(default: with --data and nothing trained, measured on the model)",
        ),
    ] = None,
    out_dir: Annotated[Path | None, typer.Option(help="folder for checkpoints and results (with --data)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --out-dir")] = False,
    batch_size: Annotated[
        int | None, typer.Option(help=f"fine-tuning batch size (default: {TRAIN.batch_size})")
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            help=f"fine-tuning learning rate (default: {TRAIN.lr:g} with sgd, {ADAM_LR:g} with adam, "
            f"{RAW_PIXEL_LR:g} sgd on raw 0-255)"
        ),
    ] = None,
    weight_decay: Annotated[
        float | None, typer.Option(help=f"fine-tuning weight decay (default: {TRAIN.weight_decay:g})")
    ] = None,
    label_smoothing: Annotated[
        float | None, typer.Option(help=f"label smoothing (default: {TRAIN.label_smoothing:g})")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda when present)")] = None,
    limit: LimitOption = None,
    first: FirstOption = None,
    pixel_range: PixelRangeOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    flatten: FlattenOption = None,
    seed: Annotated[int | None, typer.Option(help="seed for splits, shuffling, augmentation and dropout")] = None,
    mask_only: Annotated[
        bool, typer.Option("--mask-only", help="structured: zero channels whose dependencies cannot be resolved")
    ] = False,
    batches_per_round: Annotated[
        int | None,
        typer.Option(
            help=f"taylor: mini-batches scored (and trained) per round (default: {SETTINGS.batches_per_round})"
        ),
    ] = None,
    max_per_round: Annotated[
        int | None, typer.Option(help=f"taylor: most filters removed per round (default: {SETTINGS.max_per_round})")
    ] = None,
    round_to: Annotated[
        int | None,
        typer.Option(
            help=f"structured: leave layers of 32+ channels a multiple of this (1: exact) (default: {PRUNE.round_to})"
        ),
    ] = None,
    speedup: Annotated[
        float | None,
        typer.Option(
            help="structured: remove the channels that make the model this many times faster in onnxruntime, "
            "measured on this machine (e.g. 2); replaces --sparsity"
        ),
    ] = None,
    target_macs: Annotated[
        float | None,
        typer.Option(help="structured: remove channels until this fraction of the dense MACs is left (e.g. 0.35)"),
    ] = None,
    bench_batch_size: Annotated[
        int | None,
        typer.Option(help=f"--speedup: the batch size latency is measured at (default: {PRUNE.bench_batch_size})"),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(help="--speedup: onnxruntime intra-op threads latency is measured with (default: every core)"),
    ] = None,
    max_drop: Annotated[
        float | None,
        typer.Option(
            help="choose the sparsity: the highest within this accuracy drop on --data (0.01 = one point); "
            "sweeps the scope and, for comparison, the other of layer/global"
        ),
    ] = None,
    bn_l1: Annotated[
        float | None,
        typer.Option(help=f"slimming: L1 penalty lambda on BatchNorm scales (default: {SLIMMING_BN_L1:g})"),
    ] = None,
    sparsity_epochs: Annotated[int, typer.Option(help="slimming: sparsity-training epochs before pruning")] = 0,
    sparsities: SparsitiesOption = None,
    optimizer: Annotated[
        str | None,
        typer.Option(
            help="fine-tuning: sgd (with momentum) or adam (AdamW) (default: adam for raw 0-255 inputs, else sgd)"
        ),
    ] = None,
    lr_schedule: Annotated[
        str | None,
        typer.Option(
            help="IMP: rewind (restart the learning-rate decay each round) or continue "
            f"(default: {SCHEDULE.lr_schedule})"
        ),
    ] = None,
    distill_weight: Annotated[
        float | None,
        typer.Option(
            help="fine-tuning: distil from the dense model, weight of the soft loss in [0, 1] (0: off) "
            f"(default: {DISTILL_WEIGHT:g})"
        ),
    ] = None,
    distill_temperature: Annotated[
        float | None,
        typer.Option(help=f"fine-tuning: temperature of the distillation (default: {TRAIN.distill_temperature:g})"),
    ] = None,
) -> None:
    """Prune MODEL and write the same graph with zeros in it, verified in onnxruntime.

    Structured methods (l1-filter, l2-filter, neuron, taylor, ...) remove the fraction SPARSITY
    of the filters and neurons and write the smaller, compacted graph.

    With --data: accuracy before and after, optional fine-tuning (--finetune-epochs) and
    iterative rounds (--iterations), checkpoints and results in --out-dir, and a final model
    named like omp_unstructured_0.80_acc_0.912.onnx (and written to -o when given).

    Every option acts in every mode it is accepted in; one that would have no effect is refused.
    """
    given = {name: value for name, value in locals().items() if value is not None and value is not False}
    if reconstruct is False:  # --no-reconstruct: given, and False
        given["reconstruct"] = False
    options = _prune_run_options(given)
    from onnxprune.workflow.pipeline import run

    printed: list[str] = []

    def announce(note: str) -> None:  # a note is on screen before the work it concerns (stdout is JSON with --json)
        if not as_json and not note.startswith("checkpoints"):
            console().print(f"note: {note}", highlight=False)
            printed.append(note)

    try:
        with training_progress() as progress, level_progress() as levels:
            report = run(model_path, options, progress=progress, level_progress=levels, on_note=announce)
    except KeyboardInterrupt:
        if options.mode == "schedule":
            print_error("interrupted; finished rounds are kept in the run folder; add --resume to continue")
            raise typer.Exit(130) from None
        raise
    if as_json:
        typer.echo(json.dumps(_prune_summary(report), indent=2))
        return
    _print_prune_report(report, printed)


# prune options that act only in some modes: (option, refused when, why)
def _prune_refusals(given: dict, options: RunOptions) -> list[tuple[str, bool, str]]:
    prune, schedule = options.schedule.prune, options.schedule
    has_data = "data" in given
    from onnxprune.pruning.methods import traits

    found = traits(prune)
    loop, structured = found.selects_in_rounds, found.kind != "unstructured"
    trains = schedule.train.epochs > 0 or schedule.sparsity_epochs > 0
    budget = next((option for option in ("--speedup", "--target-macs") if option[2:].replace("-", "_") in given), None)
    single_weights = (
        f"{prune.method} zeroes single weights, which leaves onnxruntime's dense kernels as fast as before; "
        "use a structured method (l1-filter, l2-filter, neuron, taylor-filter, ...)"
    )
    return [
        ("--speedup", not structured, single_weights),
        ("--target-macs", not structured, single_weights),
        ("--sparsity", prune.is_recipe, "a hybrid recipe carries each stage's sparsity"),
        ("--sparsity", options.max_drop is not None, "--max-drop chooses the sparsity"),
        ("--scope", loop, f"{prune.method} ranks every layer together, round after round"),
        ("--config", prune.is_recipe, "a hybrid recipe carries each stage's sparsity"),
        ("--config", loop, f"{prune.method} ranks every layer together, round after round"),
        ("--skip-first", loop, f"{prune.method} ranks every layer together, round after round"),
        ("--skip-last", loop, f"{prune.method} ranks every layer together, round after round"),
        ("--max-layer-sparsity", (prune.scope or ("layer" if structured else "lamp")) == "layer" and not loop,
         "it caps global selection: add --scope global"),
        ("--mask-only", not structured, "it concerns structured methods (filters and neurons)"),
        ("--round-to", not structured or loop, "it rounds the channel counts of l1-filter, l2-filter, neuron, ..."),
        ("--batches-per-round", prune.method != "taylor", "it is a setting of --method taylor"),
        ("--max-per-round", prune.method != "taylor", "it is a setting of --method taylor"),
        ("--schedule", schedule.iterations == 1 and schedule.schedule != "gradual",
         "it shapes several rounds: add --iterations (or --schedule gradual)"),
        ("--lr-schedule", schedule.iterations == 1 or schedule.train.epochs == 0,
         "it shapes the learning rate over several rounds of fine-tuning: add --iterations and --finetune-epochs"),
        ("--rewind", schedule.iterations == 1,
         "it resets survivors to their original values after each later round: add --iterations 2 or more"),
        ("--rewind", schedule.train.epochs == 0, "it resets survivors before fine-tuning: add --finetune-epochs"),
        ("--bn-l1", schedule.sparsity_epochs == 0, "it is the penalty of sparsity training: add --sparsity-epochs"),
        *[(option, not trains, "it is a fine-tuning setting: add --finetune-epochs")
          for option in ("--batch-size", "--lr", "--weight-decay", "--label-smoothing", "--device",
                         "--distill-weight", "--optimizer")],
        ("--distill-temperature", not trains or given.get("distill_weight") == 0,
         "it shapes distillation, which runs when fine-tuning: add --finetune-epochs (and a --distill-weight > 0)"),
        *[(option, not has_data, "it describes --data: give --data")
          for option in ("--val", "--val-split", "--limit", "--first", "--pixel-range", "--mean", "--std",
                         "--flatten")],
        ("--val", options.mode != "schedule", "validation data is used by runs that fine-tune or go in rounds"),
        ("--val-split", options.mode != "schedule", "validation data is used by runs that fine-tune or go in rounds"),
        ("--seed", not has_data and not trains, "nothing is random in a data-free prune"),
        *[(option, budget is not None, f"{budget} chooses how many channels go")
          for option in ("--sparsity", "--scope", "--max-drop", "--sparsities")],
        ("--sparsity-epochs", budget is not None and schedule.sparsity_epochs > 0,
         f"{budget} prunes once, by a measured budget, not gradually"),
        ("--iterations", budget is not None and schedule.iterations > 1,
         f"{budget} prunes in one round (fine-tune after it with --finetune-epochs)"),
        *[(option, given.get("speedup") is None, "it describes how --speedup is measured: add --speedup")
          for option in ("--bench-batch-size", "--threads")],
    ]  # fmt: skip


def _prune_run_options(given: dict) -> RunOptions:
    """RunOptions from the prune command's given options; an option that would have no effect is refused."""
    from onnxprune.measure.sweep import parse_levels
    from onnxprune.workflow.pipeline import CHOSEN, RunOptions

    prune = PruneOptions(
        **pick(given, "sparsity", "method", "scope", "skip_first", "skip_last", "max_layer_sparsity", "mask_only",
               "round_to", "seed", "reconstruct", "speedup", "target_macs", "bench_batch_size", "threads"),
        config=str(given["config"]) if "config" in given else None,
        settings=MethodSettings(**pick(given, "batches_per_round", "max_per_round")),
    )  # fmt: skip
    train = TrainOptions(
        **pick(given, "batch_size", "lr", "weight_decay", "label_smoothing", "seed", "device", "distill_weight",
               "distill_temperature", "optimizer", epochs="finetune_epochs"),
    )  # fmt: skip
    schedule = ScheduleOptions(
        prune, train=train,
        **pick(given, "iterations", "schedule", "rewind", "lr_schedule", "sparsity_epochs", "bn_l1"),
    )  # fmt: skip
    data = data_options(
        given.get("data"), given.get("val"), given.get("val_split"), given.get("limit"), given.get("pixel_range"),
        given.get("mean"), given.get("std"), given.get("flatten"), given.get("seed", 0), given.get("first"),
    )  # fmt: skip
    options = RunOptions(
        schedule=schedule, data=data if "data" in given else None, output=given.get("output"),
        out_dir=given.get("out_dir"), resume="resume" in given, sparse_storage="sparse_storage" in given,
        max_drop=given.get("max_drop"),
        levels=tuple(parse_levels(given["sparsities"])) if "sparsities" in given else None,
        unset=frozenset(name for name in CHOSEN if name not in given),
        command=shlex.join(["onnxprune", *sys.argv[1:]]) if sys.argv[1:2] == ["prune"] else None,
    )  # fmt: skip
    for option, refused, why in _prune_refusals(given, options):
        if refused and option.lstrip("-").replace("-", "_") in given:
            raise ConfigError(f"{option} has no effect here: {why}")
    if given.get("reconstruct") is False and not options.chooses_reconstruction(ignore_given=True):
        raise ConfigError(
            "--no-reconstruct has no effect here: reconstruction is chosen only for a prune with --data and "
            "nothing trained (magnitude or filter norms, no --config, --skip-first/last or --max-drop)"
        )
    return options


def _print_prune_report(report: PruneReport, printed: list[str]) -> None:
    """The prune's outcome for people: the notes not yet printed, its tables and the closing line."""
    for note in report.notes:
        if not note.startswith("checkpoints") and note not in printed:
            console().print(f"note: {note}", highlight=False)
    if report.mode == "schedule":
        _print_rounds(report)
        for record in report.schedule.rounds:
            for note in record.notes:
                console().print(f"note: round {record.round}: {note}", highlight=False)
        final = report.schedule.final_top1
        accuracy = f" (top-1 {final:.2%} on {report.evaluated_on}, in onnxruntime)" if final is not None else ""
        console().print(
            f"wrote {report.output}{accuracy} ({human_size(report.bytes)}); checkpoints and results.json/.csv "
            f"in {report.schedule.folder}"
        )
        return
    result = report.result
    if result.granularity == "channel":
        _print_channel_table(result)
        console().print(
            f"{result.method}: removed {result.channel_sparsity:.1%} of the removable filters and neurons"
            + (f" ({result.kept_whole} kept whole counted)" if result.kept_whole else "")
            + ": "
            f"parameters -{result.params_removed:.1%}, MACs -{result.macs_removed:.1%}; "
            + f"weights {result.prunable_sparsity:.1%} "
            + (
                "removed or zeroed (the channels that could not be removed are zero)"
                if result.compaction.skipped
                else "removed (the channels are gone from the file)"
            )
            + f"; verified in onnxruntime (max |diff| {report.max_abs_diff:.2e}); "
            f"wrote {report.output} ({human_size(report.bytes)})"
        )
        return
    _print_prune_table(result)
    if report.sparse_initializers:
        console().print(
            f"sparse storage: {len(report.sparse_initializers)} weight(s) stored as sparse initializers "
            "(smaller file; onnxruntime densifies them at load, so inference is not faster)",
            highlight=False,
        )
    console().print(
        f"sparsity {result.prunable_sparsity:.2%} of prunable weights, {result.total_sparsity:.2%} of all parameters; "
        f"verified in onnxruntime (max |diff| {report.max_abs_diff:.2e}); wrote {report.output} "
        f"({human_size(report.bytes)})"
    )


def _print_rounds(report: PruneReport) -> None:
    """The schedule's rounds: target, sparsity in its units, top-1 as pruned and (when it trained) fine-tuned."""
    from onnxprune.pruning.methods import traits

    result, schedule = report.schedule, report.options.schedule
    on = f"top-1 on {report.evaluated_on or f'{result.val_samples} validation images'}" if result.val_samples else (
        "no validation data"
    )  # fmt: skip
    units = {"filter": "of channels", "hybrid": "of weights, removed or zero"}.get(traits(schedule.prune).kind,
                                                                                     "of weights")  # fmt: skip
    trained = schedule.train.epochs > 0 or any(record.train_history for record in result.rounds)
    # a round that trained nothing was measured once, as pruned (its layers solved again with --reconstruct)
    as_pruned = "top-1 pruned" + (" and solved" if schedule.prune.reconstruct else "")
    columns = ["round", "target", f"sparsity ({units})", as_pruned] + (["top-1 fine-tuned"] if trained else [])
    table = Table(*columns, "loss", "seconds", title=on)
    if result.baseline_top1 is not None:
        dense = [f"{result.baseline_top1:.2%}"] + ([""] if trained else [])
        table.add_row("dense", "0%", "-", *dense, "", "")
    for record in result.rounds:
        measured = f"{record.top1:.2%}" if record.top1 is not None else "-"
        if trained:
            pruned = f"{record.top1_pruned:.2%}" if record.top1_pruned is not None else "-"
            accuracies = [pruned, measured + " (pruned kept)" * (record.kept == "pruned")]
        else:
            accuracies = [measured]
        table.add_row(
            str(record.round), f"{record.target_sparsity:.1%}", f"{record.sparsity:.1%}", *accuracies,
            f"{record.loss:.4f}" if record.loss is not None else "-", f"{record.seconds:.1f}",
        )  # fmt: skip
    console().print(table)
    worse = [record for record in result.rounds if record.kept == "pruned"]
    if worse:
        margin = max(record.keep_margin or 0.0 for record in worse)
        console().print(
            f"note: in round(s) {', '.join(str(record.round) for record in worse)} fine-tuning ended below the "
            f"pruned model's accuracy by more than the sampling noise of the {result.val_samples} validation images "
            f"({margin:.1%}): the pruned model was kept; try a lower --lr"
        )


def _prune_summary(report: PruneReport) -> dict:
    """The prune's outcome for machines (--json), in either mode."""
    summary = {
        "output": str(report.output),
        "mode": report.mode,
        "method": report.options.schedule.prune.method,
        "scope": report.options.schedule.prune.scope,
        "requested": report.options.schedule.target,
        "notes": report.notes,
        "sparse_initializers": report.sparse_initializers,
        "max_abs_diff": report.max_abs_diff,
        "bytes": report.bytes,
        "chosen": report.choice,
    }
    if report.mode == "schedule":
        result = report.schedule
        summary.update(
            folder=str(result.folder), baseline_top1=result.baseline_top1, final_top1=result.final_top1,
            val_samples=result.val_samples, evaluated_on=report.evaluated_on,
            rounds=[dataclasses.asdict(record) for record in result.rounds],
        )  # fmt: skip
        return summary
    result = report.result
    summary.update(
        prunable_sparsity=result.prunable_sparsity,
        total_sparsity=result.total_sparsity,
        layers=[
            {"name": layer.name, "params": layer.numel, "zeros": layer.zeros, "sparsity": layer.sparsity}
            for layer in result.layers
        ],
        granularity=result.granularity,
        channel_sparsity=result.channel_sparsity,
        channels_kept_whole=result.kept_whole,
        params_removed=result.params_removed,
        macs_removed=result.macs_removed,
    )
    return summary


def _print_channel_table(result: PruneResult) -> None:
    table = Table("layer", "op", "channels", "channels removed", "params before", "params after")
    for layer in result.layers:
        table.add_row(
            layer.name,
            layer.op_type,
            f"{layer.channels} -> {layer.channels - layer.channels_removed}",
            f"{layer.channel_sparsity:.1%}",
            f"{layer.numel:,}",
            f"{layer.numel - layer.zeros:,}",
        )
    console().print(table)


def _print_prune_table(result: PruneResult) -> None:
    table = Table("layer", "op", "weight shape", "params", "zeros", "sparsity")
    for layer in result.layers:
        table.add_row(
            layer.name + (" (capped)" if layer.capped else ""),
            layer.op_type,
            "x".join(map(str, layer.shape)),
            f"{layer.numel:,}",
            f"{layer.zeros:,}",
            f"{layer.sparsity:.1%}",
        )
    console().print(table)


@help_panels(
    **DATA_PANEL,
    **dict.fromkeys(("data", "val", "val_split"), "Data"),
    **dict.fromkeys(
        (
            "epochs",
            "batch_size",
            "lr",
            "momentum",
            "optimizer",
            "weight_decay",
            "label_smoothing",
            "augment",
            "device",
            "seed",
        ),
        "Fine-tuning",
    ),  # fmt: skip
)
@reports_errors
def finetune(
    model_path: Annotated[Path, typer.Argument(metavar="MODEL", help="an .onnx file (its zeros are kept)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="output .onnx")],
    data: DataOption = None,
    val: ValOption = None,
    val_split: ValSplitOption = None,
    epochs: Annotated[int, typer.Option(help="passes over the training data")] = TRAIN.epochs,
    batch_size: Annotated[int, typer.Option(help="samples per step")] = TRAIN.batch_size,
    lr: Annotated[
        float | None,
        typer.Option(
            help=f"initial learning rate, cosine schedule (default: {TRAIN.lr:g} with sgd, {ADAM_LR:g} with adam, "
            f"{RAW_PIXEL_LR:g} sgd on raw 0-255 inputs)"
        ),
    ] = None,
    momentum: Annotated[float | None, typer.Option(help=f"SGD momentum (default: {TRAIN.momentum:g})")] = None,
    optimizer: Annotated[
        str | None, typer.Option(help="sgd (with momentum) or adam (AdamW) (default: adam on raw 0-255, else sgd)")
    ] = None,
    weight_decay: Annotated[float, typer.Option(help="weight decay")] = TRAIN.weight_decay,
    label_smoothing: Annotated[float, typer.Option(help="label smoothing")] = TRAIN.label_smoothing,
    augment: Annotated[bool, typer.Option(help="random flip and crop for image inputs")] = TRAIN.augment,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda when present)")] = None,
    limit: LimitOption = None,
    first: FirstOption = None,
    pixel_range: PixelRangeOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    flatten: FlattenOption = None,
    seed: SeedOption = 0,
    as_json: JsonOption = False,
) -> None:
    """Fine-tune MODEL with its zero weights held at zero; write the best epoch on validation."""
    from onnxprune.graph.model import check_output_path, load
    from onnxprune.workbench.convert import to_torch
    from onnxprune.workbench.train import finetune as finetune_model
    from onnxprune.workflow import pipeline
    from onnxprune.workflow.schedule import write_checkpoint

    if momentum is not None and optimizer not in (None, "sgd"):
        raise ConfigError(f"--momentum has no effect here: it is SGD's; --optimizer {optimizer} keeps its own moments")
    if data is None:
        raise ConfigError("finetune needs --data")
    model = load(model_path)
    check_output_path(model, output)
    preprocess, train, held_out = prepare_data(
        model, data, val, val_split, limit, pixel_range, mean, std, flatten, seed, 0.2, first=first
    )
    if momentum is not None and optimizer is None:
        optimizer = "sgd"  # momentum is SGD's: asking for it chooses SGD
    options = TrainOptions(
        epochs=epochs, batch_size=batch_size, weight_decay=weight_decay, label_smoothing=label_smoothing,
        augment=augment, seed=seed, device=device,
        **pick({"lr": lr, "momentum": momentum, "optimizer": optimizer}, "lr", "momentum", "optimizer"),
    )  # fmt: skip
    unset = frozenset(name for name, value in (("optimizer", optimizer), ("lr", lr)) if value is None)
    # the same measured optimizer and learning rate as prune's (no teacher here: distillation stays off)
    options, chosen = pipeline.measured_training(options, unset, preprocess.pixel_range == "0-255")
    notes = list(preprocess.notes) + chosen
    if not as_json:  # stdout holds only the JSON with --json
        for note in notes:
            console().print(f"note: {note}")
    torch_model = to_torch(model)
    softmax = model.final_softmax
    with training_progress() as progress:
        result = finetune_model(torch_model, train, preprocess, options, held_out, softmax, progress)
    write_checkpoint(model, torch_model, output)
    if as_json:
        emit_json({"output": output, "best_epoch": result.best_epoch, "lr": options.lr, "notes": notes,
                   "epochs": [dataclasses.asdict(record) for record in result.history]})  # fmt: skip
        return
    best = result.best
    accuracy = f", validation top-1 {best.val_top1:.2%}" if best and best.val_top1 is not None else ""
    console().print(f"kept epoch {result.best_epoch} of {epochs}{accuracy}; wrote {output}")
