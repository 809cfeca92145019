"""The `onnxprune` command line: parse, call the library, print tables, set exit codes.

Every `OnnxpruneError` becomes one line on stderr and exit code 2; anything unexpected becomes one
line and exit code 1 (set ONNXPRUNE_DEBUG=1 for the traceback). Usage errors are typer's (exit 2).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from onnxprune.errors import ConfigError, OnnxpruneError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Prune ONNX classifiers exported by MATLAB or PyTorch, verified in onnxruntime.",
)


def _print_version(value: bool) -> None:
    if value:
        from onnxprune import __version__

        typer.echo(f"onnxprune {__version__}")
        raise typer.Exit()


@app.callback()
def _main_options(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit"),
    ] = None,
) -> None:
    """Prune ONNX classifiers exported by MATLAB or PyTorch, verified in onnxruntime."""


def _console(stderr: bool = False) -> Console:
    """A rich console; wide when output goes to a file or pipe, so tables keep full layer names."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, width=None if stream.isatty() else 160, soft_wrap=True)


def _model_size(path: Path) -> int:
    """Bytes of a written model, its external data file included."""
    from onnxprune.graph.model import model_file_size

    return model_file_size(path)


def _human_size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    return f"{size:.2f} GB"


def reports_errors(command: Callable) -> Callable:
    """Turn an `OnnxpruneError` into one line and exit code 2, anything else into one line and 1."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except OnnxpruneError as exc:
            _print_error(str(exc))
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            _print_error("interrupted; no output was written")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            if os.environ.get("ONNXPRUNE_DEBUG"):
                raise
            _print_error(f"internal error: {type(exc).__name__}: {exc} (set ONNXPRUNE_DEBUG=1 for the traceback)")
            raise typer.Exit(1) from None

    return run


@app.command()
@reports_errors
def inspect(
    model_path: Annotated[Path, typer.Argument(metavar="MODEL", help="an .onnx file")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for machines")] = False,
) -> None:
    """Show producer, opset, inputs and outputs, and every prunable layer with parameters, zeros and MACs."""
    from onnxprune.graph.inspection import describe
    from onnxprune.graph.model import load

    description = describe(load(model_path))
    if as_json:
        typer.echo(json.dumps(description, indent=2))
        return
    spec = description["input"]
    _console().print(f"[bold]{model_path}[/bold]  producer: {description['producer']}  opset {description['opset']}")
    _console().print(f"input  {spec['name']} {spec['shape']} {spec['layout']} {spec['elem_type']}")
    _console().print(f"output {', '.join(description['outputs'])}")
    table = Table("layer", "op", "weight shape", "params", "zeros", "sparsity", "MACs")
    for layer in description["layers"]:
        table.add_row(
            layer["name"],
            layer["op_type"] + (f" g={layer['groups']}" if layer["groups"] > 1 else ""),
            "x".join(map(str, layer["shape"])),
            f"{layer['params']:,}",
            f"{layer['zeros']:,}",
            f"{layer['sparsity']:.1%}",
            f"{layer['macs']:,}",
        )
    _console().print(table)
    totals = description["totals"]
    _console().print(
        f"prunable: {totals['prunable_params']:,} weights, {totals['prunable_zeros']:,} zero; "
        f"all parameters: {totals['all_params']:,}, {totals['all_zeros']:,} zero; MACs {totals['macs']:,}"
    )


DataOption = Annotated[
    Path | None, typer.Option("--data", help="images: class-subfolder folder or .zip, .mat, .npz or MNIST idx")
]
ValOption = Annotated[Path | None, typer.Option("--val", help="validation data (same formats); else --val-split")]
ValSplitOption = Annotated[
    float | None, typer.Option(help="fraction of --data held out for validation (default 0.2 when fine-tuning)")
]
LimitOption = Annotated[int | None, typer.Option(help="use only the first N samples of each data source")]
PixelRangeOption = Annotated[
    str | None, typer.Option(help="'0-255' or '0-1' (default: 0-255 for MATLAB exports with a mean-image Sub)")
]
MeanOption = Annotated[str | None, typer.Option(help="per-channel mean after scaling, e.g. 0.4914,0.4822,0.4465")]
StdOption = Annotated[str | None, typer.Option(help="per-channel std, e.g. 0.2470,0.2435,0.2616")]
FlattenOption = Annotated[
    str | None, typer.Option(help="for flat inputs: 'row' (numpy order, the default) or 'column' (MATLAB's X(:) order)")
]
SeedOption = Annotated[int, typer.Option(help="seed for splits, shuffling, augmentation and dropout")]


def _numbers(text: str | None, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated numbers, got '{text}'") from None


def _data_options(data, val=None, val_split=None, limit=None, pixel_range=None, mean=None, std=None, flatten=None,
                  seed=0):  # fmt: skip
    """The data options of a command, or None without --data."""
    from onnxprune.options import DataOptions

    return DataOptions(
        path=str(data) if data is not None else None, val=str(val) if val is not None else None,
        val_split=val_split, limit=limit, pixel_range=pixel_range, mean=_numbers(mean, "--mean"),
        std=_numbers(std, "--std"), flatten=flatten, seed=seed,
    )  # fmt: skip


def _prepare_data(model, data, val, val_split, limit, pixel_range, mean, std, flatten, seed, default_split):
    """(preprocess, train set or None, validation set or None) for a model and the data options."""
    from onnxprune.workbench.data import prepare

    options = _data_options(data, val, val_split, limit, pixel_range, mean, std, flatten, seed)
    return prepare(model, options, default_split)


def _evaluation_data(model, data, limit, pixel_range, mean, std, flatten):
    """(preprocess, dataset) for commands that only measure: all of --data, no split."""
    preprocess, dataset, _ = _prepare_data(model, data, None, 0.0, limit, pixel_range, mean, std, flatten, 0, 0.0)
    return preprocess, dataset


@app.command()
@reports_errors
def evaluate(
    model_path: Annotated[Path, typer.Argument(metavar="MODEL", help="an .onnx file")],
    data: DataOption = None,
    engine: Annotated[str, typer.Option(help="onnxruntime, torch or both")] = "onnxruntime",
    limit: LimitOption = None,
    pixel_range: PixelRangeOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    flatten: FlattenOption = None,
    batch_size: Annotated[int, typer.Option(help="samples per call")] = 256,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Top-1 and top-5 accuracy and loss of MODEL on labelled data, in onnxruntime and/or torch."""
    from onnxprune.graph.model import load
    from onnxprune.measure.evaluate import evaluate as evaluate_model

    if data is None:
        raise ConfigError("evaluate needs --data (a folder, .zip, .mat, .npz or MNIST idx file)")
    engines = ["onnxruntime", "torch"] if engine == "both" else [engine]
    model = load(model_path)
    preprocess, dataset = _evaluation_data(model, data, limit, pixel_range, mean, std, flatten)
    results = [evaluate_model(model, dataset, preprocess, engine=name, batch_size=batch_size) for name in engines]
    if as_json:
        typer.echo(json.dumps([result.as_dict() for result in results], indent=2))
        return
    for note in preprocess.notes:
        _console().print(f"note: {note}")
    for result in results:
        _console().print(
            f"{result.engine:>11}: top-1 {result.top1:.2%}  top-5 {result.top5:.2%}  loss {result.loss:.4f}  "
            f"({result.samples} samples, {result.samples / result.seconds:,.0f} samples/s)"
        )


@app.command()
@reports_errors
def finetune(
    model_path: Annotated[Path, typer.Argument(metavar="MODEL", help="an .onnx file (its zeros are kept)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="output .onnx")],
    data: DataOption = None,
    val: ValOption = None,
    val_split: ValSplitOption = None,
    epochs: Annotated[int, typer.Option(help="passes over the training data")] = 3,
    batch_size: Annotated[int, typer.Option(help="samples per step")] = 64,
    lr: Annotated[
        float | None,
        typer.Option(help="initial learning rate, cosine schedule (default 0.01; 1e-4 for raw 0-255 inputs)"),
    ] = None,
    momentum: Annotated[float, typer.Option(help="SGD momentum")] = 0.9,
    weight_decay: Annotated[float, typer.Option(help="weight decay")] = 5e-4,
    label_smoothing: Annotated[float, typer.Option(help="label smoothing")] = 0.0,
    augment: Annotated[bool, typer.Option(help="random flip and crop for image inputs")] = True,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda when present)")] = None,
    limit: LimitOption = None,
    pixel_range: PixelRangeOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    flatten: FlattenOption = None,
    seed: SeedOption = 0,
) -> None:
    """Fine-tune MODEL with its zero weights held at zero; write the best epoch on validation."""
    from onnxprune.graph.model import check_output_path, load
    from onnxprune.options import TrainOptions
    from onnxprune.pruning import pipeline
    from onnxprune.pruning.schedule import write_checkpoint
    from onnxprune.workbench.convert import to_torch
    from onnxprune.workbench.train import finetune as finetune_model

    if data is None:
        raise ConfigError("finetune needs --data")
    model = load(model_path)
    check_output_path(model, output)
    preprocess, train, held_out = _prepare_data(
        model, data, val, val_split, limit, pixel_range, mean, std, flatten, seed, 0.2
    )
    options = TrainOptions(
        epochs=epochs, batch_size=batch_size, lr=lr or pipeline.DEFAULT_LR, momentum=momentum,
        weight_decay=weight_decay,
        label_smoothing=label_smoothing, augment=augment, seed=seed, device=device,
    )  # fmt: skip
    if lr is None and preprocess.pixel_range == "0-255":
        _console().print(f"note: raw 0-255 inputs: learning rate {pipeline.RAW_PIXEL_LR:g} (set --lr to choose)")
        options = dataclasses.replace(options, lr=pipeline.RAW_PIXEL_LR)
    torch_model = to_torch(model)
    softmax = model.final_softmax
    with _training_progress() as progress:
        result = finetune_model(torch_model, train, preprocess, options, held_out, softmax, progress)
    write_checkpoint(model, torch_model, output)
    best = result.best
    accuracy = f", validation top-1 {best.val_top1:.2%}" if best and best.val_top1 is not None else ""
    _console().print(f"kept epoch {result.best_epoch} of {epochs}{accuracy}; wrote {output}")


class _training_progress:
    """A rich progress bar fed by the library's progress callbacks."""

    def __enter__(self):
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
            TimeRemainingColumn(), console=_console(stderr=True), transient=True,
        )  # fmt: skip
        self.task = None
        self.started = False
        return self.update

    def update(self, event: dict) -> None:
        if not self.started:  # started on the first event, so an early error prints nothing else
            self.bar.start()
            self.started = True
        if "phase" in event:
            description = f"round {event['round']}/{event['rounds']}: {event['phase']}"
            if self.task is None:
                self.task = self.bar.add_task(description, total=None, status="")
            self.bar.update(self.task, description=description)
        elif "step" in event:
            if self.task is None:
                self.task = self.bar.add_task("", total=event["steps"], status="")
            self.bar.update(
                self.task,
                total=event["steps"],
                completed=event["step"],
                status=f"epoch {event['epoch']}  loss {event['loss']:.3f}  acc {event['top1']:.1%}",
            )
        elif "record" in event:
            record = event["record"]
            val = f"  val top-1 {record.val_top1:.2%}" if record.val_top1 is not None else ""
            self.bar.console.print(
                f"epoch {record.epoch}: loss {record.train_loss:.3f}  train top-1 {record.train_top1:.2%}{val}  "
                f"({record.images_per_second:,.0f} images/s)"
            )

    def __exit__(self, *exc_info):
        if self.started:
            self.bar.stop()
        return False


@app.command()
@reports_errors
def prune(
    model_path: Annotated[Path, typer.Argument(metavar="MODEL", help="an .onnx file")],
    sparsity: Annotated[
        float | None, typer.Option(help="fraction of prunable weights to remove, in [0, 1) [default: 0.5]")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="output .onnx (default: beside the input)")
    ] = None,
    method: Annotated[str, typer.Option(help="pruning method, or a recipe: l1-filter:0.3,magnitude:0.8")] = "magnitude",
    scope: Annotated[
        str | None, typer.Option(help="layer: each layer to SPARSITY; global: one threshold [default: layer]")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML of per-layer ratios, e.g. 'conv1: 0.5' and 'default: 0.8'")
    ] = None,
    skip_first: Annotated[bool, typer.Option("--skip-first", help="leave the first prunable layer dense")] = False,
    skip_last: Annotated[bool, typer.Option("--skip-last", help="leave the last prunable layer dense")] = False,
    max_layer_sparsity: Annotated[
        float | None,
        typer.Option(help="global scope: no layer pruned beyond this (guards against layer collapse) [default: 0.99]"),
    ] = None,
    sparse_storage: Annotated[
        bool,
        typer.Option(
            "--sparse-storage",
            help="store weights as sparse initializers where smaller (disk only: onnxruntime densifies at load)",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    data: DataOption = None,
    val: ValOption = None,
    val_split: ValSplitOption = None,
    finetune_epochs: Annotated[int, typer.Option(help="fine-tuning epochs after each pruning round")] = 0,
    iterations: Annotated[int, typer.Option(help="pruning rounds: 1 = one-shot (OMP), 3+ = iterative (IMP)")] = 1,
    schedule: Annotated[
        str | None, typer.Option(help="IMP schedule: geometric or cubic (Zhu-Gupta) [default: geometric]")
    ] = None,
    rewind: Annotated[bool, typer.Option("--rewind", help="reset surviving weights to their original values")] = False,
    out_dir: Annotated[Path | None, typer.Option(help="folder for checkpoints and results (with --data)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --out-dir")] = False,
    batch_size: Annotated[int | None, typer.Option(help="fine-tuning batch size [default: 64]")] = None,
    lr: Annotated[
        float | None, typer.Option(help="fine-tuning learning rate (default 0.01; 1e-4 for raw 0-255 inputs)")
    ] = None,
    weight_decay: Annotated[float | None, typer.Option(help="fine-tuning weight decay [default: 5e-4]")] = None,
    label_smoothing: Annotated[float | None, typer.Option(help="label smoothing [default: 0]")] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda when present)")] = None,
    limit: LimitOption = None,
    pixel_range: PixelRangeOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    flatten: FlattenOption = None,
    seed: Annotated[int | None, typer.Option(help="seed for splits, shuffling, augmentation and dropout")] = None,
    mask_only: Annotated[
        bool, typer.Option("--mask-only", help="structured: zero channels whose dependencies cannot be resolved")
    ] = False,
    batches_per_round: Annotated[
        int | None, typer.Option(help="taylor: mini-batches scored (and trained) per round [default: 10]")
    ] = None,
    max_per_round: Annotated[
        int | None, typer.Option(help="taylor: most filters removed per round [default: 8]")
    ] = None,
    round_to: Annotated[
        int | None,
        typer.Option(help="structured: leave layers of 32+ channels a multiple of this (1: exact) [default: 8]"),
    ] = None,
    max_drop: Annotated[
        float | None,
        typer.Option(help="choose the sparsity: the highest within this accuracy drop on --data (0.01 = one point)"),
    ] = None,
    bn_l1: Annotated[
        float | None, typer.Option(help="slimming: L1 penalty lambda on BatchNorm scales [default: 1e-4]")
    ] = None,
    sparsity_epochs: Annotated[int, typer.Option(help="slimming: sparsity-training epochs before pruning")] = 0,
    sparsities: SparsitiesOption = None,
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
    options = _prune_run_options(given)
    from onnxprune.pruning.pipeline import run

    try:
        with _training_progress() as progress, _level_progress() as levels:
            report = run(model_path, options, progress=progress, level_progress=levels)
    except KeyboardInterrupt:
        if options.mode == "schedule":
            _print_error("interrupted; finished rounds are kept in the run folder; add --resume to continue")
            raise typer.Exit(130) from None
        raise
    if as_json:
        typer.echo(json.dumps(_prune_summary(report), indent=2))
        return
    _print_prune_report(report)


# prune options that act only in some modes: (option, refused when, why)
def _prune_refusals(given: dict, options) -> list[tuple[str, bool, str]]:
    prune, schedule = options.schedule.prune, options.schedule
    has_data = "data" in given
    loop = prune.selects_in_rounds
    structured = prune.kind != "unstructured"
    trains = schedule.train.epochs > 0 or schedule.sparsity_epochs > 0
    return [
        ("--sparsity", prune.is_recipe, "a hybrid recipe carries each stage's sparsity"),
        ("--sparsity", options.max_drop is not None, "--max-drop chooses the sparsity"),
        ("--scope", loop, f"{prune.method} ranks every layer together, round after round"),
        ("--config", prune.is_recipe, "a hybrid recipe carries each stage's sparsity"),
        ("--config", loop, f"{prune.method} ranks every layer together, round after round"),
        ("--skip-first", loop, f"{prune.method} ranks every layer together, round after round"),
        ("--skip-last", loop, f"{prune.method} ranks every layer together, round after round"),
        ("--max-layer-sparsity", prune.scope == "layer" and not loop,
         "it caps global selection: add --scope global"),
        ("--mask-only", not structured, "it concerns structured methods (filters and neurons)"),
        ("--round-to", not structured or loop, "it rounds the channel counts of l1-filter, l2-filter, neuron, ..."),
        ("--batches-per-round", prune.method != "taylor", "it is a setting of --method taylor"),
        ("--max-per-round", prune.method != "taylor", "it is a setting of --method taylor"),
        ("--schedule", schedule.iterations == 1, "it shapes several rounds: add --iterations"),
        ("--rewind", schedule.iterations == 1,
         "it resets survivors to their original values after each later round: add --iterations 2 or more"),
        ("--rewind", schedule.train.epochs == 0, "it resets survivors before fine-tuning: add --finetune-epochs"),
        ("--bn-l1", schedule.sparsity_epochs == 0, "it is the penalty of sparsity training: add --sparsity-epochs"),
        *[(option, not trains, "it is a fine-tuning setting: add --finetune-epochs")
          for option in ("--batch-size", "--lr", "--weight-decay", "--label-smoothing", "--device")],
        *[(option, not has_data, "it describes --data: give --data")
          for option in ("--val", "--val-split", "--limit", "--pixel-range", "--mean", "--std", "--flatten")],
        ("--val", options.mode != "schedule", "validation data is used by runs that fine-tune or go in rounds"),
        ("--val-split", options.mode != "schedule", "validation data is used by runs that fine-tune or go in rounds"),
        ("--seed", not has_data and not trains, "nothing is random in a data-free prune"),
    ]  # fmt: skip


def _prune_run_options(given: dict):
    """RunOptions from the prune command's given options; an option that would have no effect is refused."""
    from onnxprune.measure.sweep import parse_levels
    from onnxprune.options import PruneOptions, ScheduleOptions, TrainOptions
    from onnxprune.pruning.methods import MethodSettings
    from onnxprune.pruning.pipeline import DEFAULT_LR, RunOptions

    settings = {key: given[key] for key in ("batches_per_round", "max_per_round") if key in given}
    prune = PruneOptions(
        sparsity=given.get("sparsity", 0.5), method=given.get("method", "magnitude"),
        scope=given.get("scope", "layer"), config=str(given["config"]) if "config" in given else None,
        skip_first="skip_first" in given, skip_last="skip_last" in given,
        max_layer_sparsity=given.get("max_layer_sparsity", 0.99), mask_only="mask_only" in given,
        round_to=given.get("round_to", 8), settings=MethodSettings(**settings), seed=given.get("seed", 0),
    )  # fmt: skip
    train = TrainOptions(
        epochs=given.get("finetune_epochs", 0), batch_size=given.get("batch_size", 64),
        lr=given.get("lr", DEFAULT_LR), weight_decay=given.get("weight_decay", 5e-4),
        label_smoothing=given.get("label_smoothing", 0.0), seed=given.get("seed", 0), device=given.get("device"),
    )  # fmt: skip
    schedule = ScheduleOptions(
        prune, train=train, iterations=given.get("iterations", 1), schedule=given.get("schedule", "geometric"),
        rewind="rewind" in given, sparsity_epochs=given.get("sparsity_epochs", 0),
        bn_l1=given.get("bn_l1", 1e-4 if given.get("sparsity_epochs") else 0.0),
    )  # fmt: skip
    data = _data_options(
        given.get("data"), given.get("val"), given.get("val_split"), given.get("limit"), given.get("pixel_range"),
        given.get("mean"), given.get("std"), given.get("flatten"), given.get("seed", 0),
    )  # fmt: skip
    options = RunOptions(
        schedule=schedule, data=data if "data" in given else None, output=given.get("output"),
        out_dir=given.get("out_dir"), resume="resume" in given, sparse_storage="sparse_storage" in given,
        max_drop=given.get("max_drop"),
        levels=tuple(parse_levels(given["sparsities"])) if "sparsities" in given else None,
        auto_lr="lr" not in given,
    )  # fmt: skip
    for option, refused, why in _prune_refusals(given, options):
        if refused and option.lstrip("-").replace("-", "_") in given:
            raise ConfigError(f"{option} has no effect here: {why}")
    return options


def _print_prune_report(report) -> None:
    for note in report.notes:
        if not note.startswith("checkpoints"):
            _console().print(f"note: {note}", highlight=False)
    if report.mode == "schedule":
        _print_rounds(report.schedule)
        final = report.schedule.final_top1
        accuracy = f" (top-1 {final:.2%} in onnxruntime)" if final is not None else ""
        _console().print(
            f"wrote {report.output}{accuracy} ({_human_size(report.bytes)}); checkpoints and results.json/.csv "
            f"in {report.schedule.folder}"
        )
        return
    result = report.result
    if result.granularity == "channel":
        _print_channel_table(result)
        _console().print(
            f"{result.method}: removed {result.channel_sparsity:.1%} of the removable filters and neurons: "
            f"parameters -{result.params_removed:.1%}, MACs -{result.macs_removed:.1%}; weights "
            f"{result.prunable_sparsity:.1%} zero; verified in onnxruntime (max |diff| {report.max_abs_diff:.2e}); "
            f"wrote {report.output} ({_human_size(report.bytes)})"
        )
        return
    _print_prune_table(result)
    if report.sparse_initializers:
        _console().print(
            f"sparse storage: {len(report.sparse_initializers)} weight(s) stored as sparse initializers "
            "(smaller file; onnxruntime densifies them at load, so inference is not faster)",
            highlight=False,
        )
    _console().print(
        f"sparsity {result.prunable_sparsity:.2%} of prunable weights, {result.total_sparsity:.2%} of all parameters; "
        f"verified in onnxruntime (max |diff| {report.max_abs_diff:.2e}); wrote {report.output} "
        f"({_human_size(report.bytes)})"
    )


def _print_rounds(result) -> None:
    table = Table("round", "target", "sparsity", "top-1", "loss", "seconds")
    if result.baseline_top1 is not None:
        table.add_row("dense", "0%", "-", f"{result.baseline_top1:.2%}", "", "")
    for record in result.rounds:
        table.add_row(
            str(record.round),
            f"{record.target_sparsity:.1%}",
            f"{record.sparsity:.1%}",
            f"{record.top1:.2%}" if record.top1 is not None else "-",
            f"{record.loss:.4f}" if record.loss is not None else "-",
            f"{record.seconds:.1f}",
        )
    _console().print(table)


def _prune_summary(report) -> dict:
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
        params_removed=result.params_removed,
        macs_removed=result.macs_removed,
    )
    return summary


def _print_channel_table(result) -> None:
    table = Table("layer", "op", "channels", "removed", "params before", "params after")
    for layer in result.layers:
        table.add_row(
            layer.name,
            layer.op_type,
            f"{layer.channels} -> {layer.channels - layer.channels_removed}",
            f"{layer.channel_sparsity:.1%}",
            f"{layer.numel:,}",
            f"{layer.numel - layer.zeros:,}",
        )
    _console().print(table)


def _print_prune_table(result) -> None:
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
    _console().print(table)


class _level_progress:
    """A progress bar over sweep levels, showing the level and its accuracy."""

    def __enter__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=_console(stderr=True), transient=True,
        )  # fmt: skip
        self.task = None
        return self.update

    def update(self, event: dict) -> None:
        row = event["row"]
        if self.task is None:
            self.bar.start()
            self.task = self.bar.add_task("", total=event["total"])
        label = f"{row.method} {row.scope} {row.sparsity:.1%}: top-1 {row.accuracy:.2%}"
        self.bar.update(self.task, completed=event["done"], description=label)

    def __exit__(self, *exc_info):
        if self.task is not None:
            self.bar.stop()
        return False


def _levels(sparsities: str | None, start: float | None, stop: float | None, step: float | None, default: str):
    from onnxprune.measure.sweep import grid, parse_levels

    if start is not None or stop is not None or step is not None:
        if None in (start, stop, step):
            raise ConfigError("--from, --to and --step go together")
        return grid(start, stop, step)
    return parse_levels(sparsities or default)


SparsitiesOption = Annotated[
    str | None, typer.Option(help="levels: start:step:stop ranges and values, e.g. 0:0.1:0.9,0.9:0.02:0.98")
]
FromOption = Annotated[float | None, typer.Option("--from", help="first level (with --to and --step)")]
ToOption = Annotated[float | None, typer.Option("--to", help="last level")]
StepOption = Annotated[float | None, typer.Option("--step", help="level step")]


@app.command()
@reports_errors
def sweep(
    model_path: Annotated[Path, typer.Argument(metavar="MODEL", help="an .onnx file")],
    data: DataOption = None,
    method: Annotated[str, typer.Option(help="method(s), comma-separated: magnitude,l1-filter,...")] = "magnitude",
    scope: Annotated[str, typer.Option(help="scope(s), comma-separated: layer,global")] = "layer",
    sparsities: SparsitiesOption = None,
    start: FromOption = None,
    stop: ToOption = None,
    step: StepOption = None,
    max_drop: Annotated[float, typer.Option(help="accuracy budget for the trade-off (0.01 = one point)")] = 0.01,
    out_dir: Annotated[Path | None, typer.Option(help="folder for results and the figure")] = None,
    limit: LimitOption = None,
    pixel_range: PixelRangeOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    flatten: FlattenOption = None,
) -> None:
    """Accuracy at every sparsity level without fine-tuning; the best trade-off within --max-drop."""
    from onnxprune.graph.model import load
    from onnxprune.measure.sweep import sweep as sweep_model
    from onnxprune.measure.sweep import trade_off
    from onnxprune.report import plots, results

    if data is None:
        raise ConfigError("sweep needs --data")
    levels = _levels(sparsities, start, stop, step, "0:0.1:0.9,0.9:0.02:0.98")
    model = load(model_path)
    preprocess, dataset = _evaluation_data(model, data, limit, pixel_range, mean, std, flatten)
    methods, scopes = [m.strip() for m in method.split(",")], [x.strip() for x in scope.split(",")]
    with _level_progress() as progress:
        table = sweep_model(model, dataset, preprocess, levels, methods, scopes, progress=progress)
    choice = trade_off(table, max_drop)
    table.extra["trade_off"] = choice
    out_dir = out_dir or model_path.with_name(f"{model_path.stem}_sweep")
    written = results.write(table, out_dir)
    figure = plots.accuracy_vs_sparsity([table], out_dir / "accuracy_vs_sparsity.png")
    _print_sweep(table, choice)
    _console().print(f"wrote {', '.join(str(p) for p in written.values())} and {figure}")


def _percent(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def _print_sweep(table, choice) -> None:
    labels = table.methods()
    levels = list(dict.fromkeys(row.sparsity for row in table.rows))
    grid_table = Table("sparsity", *labels)
    by_key = {(f"{r.method} ({r.scope})", r.sparsity): r for r in table.rows}
    for level in levels:
        cells = [f"{by_key[(label, level)].accuracy:.2%}" if (label, level) in by_key else "" for label in labels]
        grid_table.add_row(f"{level:.1%}", *cells)
    _console().print(grid_table)
    _console().print(
        f"dense top-1 {table.baseline_accuracy:.2%}; highest sparsity within {choice['max_drop']:.1%} of it: "
        f"{choice['sparsity']:.1%} ({choice['method']}, {choice['scope']}, top-1 {choice['accuracy']:.2%}); "
        f"knee of the curve: {_percent(choice['knee_sparsity'])}"
    )


@app.command()
@reports_errors
def sensitivity(
    model_path: Annotated[Path, typer.Argument(metavar="MODEL", help="an .onnx file")],
    data: DataOption = None,
    sparsities: SparsitiesOption = None,
    target: Annotated[float, typer.Option(help="overall sparsity the ratio file must reach")] = 0.8,
    max_drop: Annotated[float, typer.Option(help="accuracy budget per layer (0.01 = one point)")] = 0.01,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="ratio YAML to write")] = None,
    out_dir: Annotated[Path | None, typer.Option(help="folder for results and the figure")] = None,
    limit: LimitOption = None,
    pixel_range: PixelRangeOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    flatten: FlattenOption = None,
) -> None:
    """Prune one layer at a time to find the sensitive ones; write per-layer ratios reaching --target."""
    from onnxprune.graph.model import load
    from onnxprune.measure.sweep import ratios_for_target, write_ratios
    from onnxprune.measure.sweep import sensitivity as layer_sensitivity
    from onnxprune.pruning.select import check_sparsity
    from onnxprune.report import plots, results

    if data is None:
        raise ConfigError("sensitivity needs --data")
    check_sparsity(target, "--target")
    levels = _levels(sparsities, None, None, None, "0:0.1:0.9,0.95,0.98")
    model = load(model_path)
    preprocess, dataset = _evaluation_data(model, data, limit, pixel_range, mean, std, flatten)
    with _level_progress() as progress:
        table = layer_sensitivity(model, dataset, preprocess, levels, progress=progress)
    ratios = ratios_for_target(table, model, target, max_drop)
    out_dir = out_dir or model_path.with_name(f"{model_path.stem}_sensitivity")
    output = output or out_dir / "ratios.yaml"
    table.extra["ratios"] = ratios
    results.write(table, out_dir)
    figure = plots.sensitivity(table, out_dir / "sensitivity.png")
    sizes = {layer.name: layer.numel for layer in model.layers}
    reached = sum(ratios[n] * sizes[n] for n in ratios) / sum(sizes.values())
    write_ratios(
        ratios, output, f"onnxprune sensitivity: target {target}, per-layer budget {max_drop}; reaches {reached:.4f}"
    )
    summary = Table("layer", "weights", "ratio")
    for name, ratio in ratios.items():
        summary.add_row(name, f"{sizes[name]:,}", f"{ratio:.1%}")
    _console().print(summary)
    if reached + 1e-6 < target:
        _console().print(f"note: with {max_drop:.1%} per layer the ratios reach only {reached:.1%} of {target:.1%}")
    _console().print(f"overall {reached:.2%}; wrote {output}, {figure} and results in {out_dir}")


@app.command()
@reports_errors
def plot(
    kind: Annotated[str, typer.Argument(help="accuracy, pareto, mask, layers, filters, training, taylor or gamma")],
    sources: Annotated[list[Path], typer.Argument(help="results files / run folders / models, as KIND needs")],
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG to write")],
    layer: Annotated[str | None, typer.Option(help="mask: one layer (default: all)")] = None,
    label: Annotated[list[str] | None, typer.Option(help="gamma/pareto: a label per source")] = None,
) -> None:
    """Draw a figure from saved results or models (PNG)."""
    import json as json_module

    from onnxprune.graph.model import load
    from onnxprune.report import plots, results

    if kind == "accuracy":
        figure = plots.accuracy_vs_sparsity([results.read(path) for path in sources], output)
    elif kind == "pareto":
        points = []
        for index, path in enumerate(sources):
            table = results.read(path)
            name = label[index] if label and index < len(label) else None
            for row in table.rows:
                if row.accuracy is not None:
                    points.append(
                        {
                            "sparsity": row.sparsity,
                            "accuracy": row.accuracy,
                            "label": name or f"{row.method} ({row.scope})",
                        }
                    )
        figure = plots.pareto(points, output)
    elif kind == "mask":
        figure = plots.mask(load(sources[0]), output, layer)
    elif kind == "layers":
        figure = plots.layer_sparsity(load(sources[0]), output)
    elif kind == "filters":
        if len(sources) != 2:
            raise ConfigError("plot filters takes two models: before and after")
        figure = plots.filters_per_layer(load(sources[0]), load(sources[1]), output)
    elif kind in ("training", "taylor"):
        results.read(sources[0])  # checks the schema
        path = sources[0] / "results.json" if sources[0].is_dir() else sources[0]
        document = json_module.loads(path.read_text())
        if kind == "training":
            figure = plots.training(document, output)
        else:
            history = [h for r in document["extra"]["rounds"] for h in r.get("method_history", [])]
            if not history:
                raise ConfigError(f"{path}: no Taylor rounds recorded (run prune --method taylor --data ...)")
            figure = plots.taylor_rounds(history, output)
    elif kind == "gamma":
        figure = plots.batchnorm_scales([load(path) for path in sources], output, label)
    else:
        raise ConfigError(
            f"unknown figure '{kind}'; choose accuracy, pareto, mask, layers, filters, training, taylor or gamma"
        )
    _console().print(f"wrote {figure}")


@app.command(name="bench")
@reports_errors
def bench_command(
    models: Annotated[
        list[Path], typer.Argument(metavar="MODEL...", help="models to compare (the first is the reference)")
    ],
    batch: Annotated[str, typer.Option(help="batch sizes, comma-separated")] = "1,32",
    provider: Annotated[str, typer.Option(help="cpu or cuda (needs the gpu extra and a GPU)")] = "cpu",
    threads: Annotated[int | None, typer.Option(help="onnxruntime intra-op threads")] = None,
    runs: Annotated[int | None, typer.Option(help="timed calls per batch size (default: ~2 s worth)")] = None,
    data: DataOption = None,
    limit: LimitOption = None,
    pixel_range: PixelRangeOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    flatten: FlattenOption = None,
    out_dir: Annotated[Path | None, typer.Option(help="folder for bench.json and bench.png")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Latency, throughput, sizes and accuracy of models side by side in onnxruntime, one session at a time."""
    from onnxprune.graph.model import load
    from onnxprune.measure import bench as bench_module

    batches = [int(float(b)) for b in batch.split(",") if b.strip()]
    dataset, options = None, None
    if data is not None:
        first = load(models[0])
        _, dataset = _evaluation_data(first, data, limit, pixel_range, mean, std, flatten)
        options = {"pixel_range": pixel_range, "mean": _numbers(mean, "--mean"), "std": _numbers(std, "--std"),
                   "flatten_order": flatten}  # fmt: skip
    results = bench_module.bench(models, batches, provider, threads, runs, dataset, options)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "bench.json").write_text(json.dumps(bench_module.as_dicts(results), indent=2))
        bench_module.figure(results, out_dir / "bench.png")
    if as_json:
        typer.echo(json.dumps(bench_module.as_dicts(results), indent=2))
        return
    columns = ["model"] + [f"b{b} ms (p90)" for b in batches] + [f"b{b} speedup" for b in batches]
    table = Table(*columns, "size", "zipped", "bound", "non-zeros", "MACs", "top-1")
    for r in results:
        latency = [f"{r.latency_ms[str(b)]['median']:.2f} ({r.latency_ms[str(b)]['p90']:.2f})" if str(b) in r.latency_ms
                   else "-" for b in batches]  # fmt: skip
        speed = [f"{r.speedup[str(b)]:.2f}x" if str(b) in r.speedup else "-" for b in batches]
        table.add_row(
            r.name, *latency, *speed, _human_size(r.bytes), _human_size(r.zipped_bytes), _human_size(r.bound_bytes),
            f"{r.nonzero:,}", f"{r.macs:,}", f"{r.top1:.2%}" if r.top1 is not None else "-",
        )  # fmt: skip
    _console().print(table)
    _console().print("bound: the weights' non-zero values plus the entropy of their mask (no lossless file is smaller)")


@app.command()
@reports_errors
def quantize(
    model_path: Annotated[Path, typer.Argument(metavar="MODEL", help="a float .onnx file (pruned or not)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="the int8 .onnx to write")],
    method: Annotated[str, typer.Option(help="static (QDQ, calibrated on --data) or dynamic")] = "static",
    data: DataOption = None,
    calibration: Annotated[int, typer.Option(help="samples used to calibrate activations")] = 256,
    limit: LimitOption = None,
    pixel_range: PixelRangeOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    flatten: FlattenOption = None,
) -> None:
    """Quantize MODEL to int8 with onnxruntime.quantization; pruned zeros stay zero."""
    from onnxprune.graph.model import load
    from onnxprune.measure.quantize import quantize as quantize_model

    model = load(model_path)
    preprocess, dataset = _evaluation_data(model, data, limit, pixel_range, mean, std, flatten)
    report = quantize_model(model, output, method, dataset, preprocess, calibration, evaluate_data=dataset)
    accuracy = ""
    if report.top1_before is not None:
        accuracy = f"; top-1 {report.top1_before:.2%} -> {report.top1_after:.2%}"
    _console().print(
        f"{method} int8: {_human_size(report.bytes_before)} -> {_human_size(report.bytes_after)}; "
        f"weight zeros {report.zeros_before:,} -> {report.zeros_after:,}{accuracy}; wrote {output}"
    )


@app.command()
@reports_errors
def pack(
    model_path: Annotated[Path, typer.Argument(metavar="MODEL", help="a pruned .onnx file")],
    output: Annotated[Path, typer.Option("--output", "-o", help="the package to write (.onnxz)")],
) -> None:
    """Store a pruned model in the smallest form: sparse weights as values + a bit mask, deflated."""
    from onnxprune.graph.model import load
    from onnxprune.measure.bench import information_bound
    from onnxprune.measure.quantize import pack as pack_model

    model = load(model_path)
    report = pack_model(model, output)
    bound = information_bound(model)
    _console().print(
        f"{_human_size(model_path.stat().st_size)} -> {_human_size(report['bytes'])} "
        f"({report['bytes'] / bound:.2f}x the information bound {_human_size(bound)}); "
        f"{len(report['packed'])} weight(s) packed; wrote {output} (onnxprune unpack restores the .onnx)"
    )


@app.command()
@reports_errors
def unpack(
    package: Annotated[Path, typer.Argument(metavar="PACKAGE", help="a package written by onnxprune pack")],
    output: Annotated[Path, typer.Option("--output", "-o", help="the .onnx to write")],
) -> None:
    """Restore the ONNX model a package holds, exactly."""
    from onnxprune.graph.model import save_atomic
    from onnxprune.measure.quantize import unpack as unpack_model

    if output.exists() and output.resolve() == package.resolve():
        raise ConfigError("output is the package itself; choose another -o")
    save_atomic(unpack_model(package), output)
    _console().print(f"wrote {output}")


@app.command()
@reports_errors
def compact(
    model_path: Annotated[Path, typer.Argument(metavar="MODEL", help="a masked .onnx file (all-zero filters)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="output .onnx")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Remove every all-zero filter and neuron of MODEL for real: smaller tensors, same outputs."""
    from onnxprune.graph.inspection import describe
    from onnxprune.graph.model import check_output_path, from_proto, load
    from onnxprune.graph.storage import save_model_file
    from onnxprune.graph.structure import compact as compact_model
    from onnxprune.graph.verify import Reference, random_batch, session, verify

    model = load(model_path)
    check_output_path(model, output)
    proto, report = compact_model(model)
    inputs = random_batch(model.input, 2)
    masked = session(model.path)
    expected = Reference(inputs, masked.run(None, {masked.get_inputs()[0].name: inputs}))
    reports = []
    strict = not report.inexact
    save_model_file(
        output, proto, external_data=model.external_data,
        check=lambda path: reports.append(verify(path, expected, strict=strict)),
    )  # fmt: skip
    before, after = describe(model)["totals"], describe(from_proto(proto))["totals"]
    summary = {
        "output": str(output),
        "removed": report.removed,
        "kept": report.kept,
        "folded_into_bias": report.folded,
        "approximate": report.inexact,
        "not_removed": report.skipped,
        "rewritten": report.rewritten,
        "params": [before["prunable_params"], after["prunable_params"]],
        "macs": [before["macs"], after["macs"]],
        "max_abs_diff": reports[0].max_abs_diff,
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    table = Table("layer", "channels before", "after")
    for name, kept in report.kept.items():
        table.add_row(name, str(kept + report.removed[name]), str(kept))
    _console().print(table)
    for name, why in report.inexact.items():
        _console().print(f"note: approximate at '{name}': {why}")
    for name, why in report.rewritten.items():
        _console().print(f"note: node '{name}' added to stay exact: {why}", highlight=False)
    for where, why in list(report.skipped.items())[:5]:
        _console().print(f"note: zero channel {where} kept: {why}")
    _console().print(
        f"parameters {before['prunable_params']:,} -> {after['prunable_params']:,}, MACs {before['macs']:,} -> "
        f"{after['macs']:,}; output vs the masked model: max |diff| {reports[0].max_abs_diff:.2e}; wrote {output}"
    )


@app.command()
@reports_errors
def demo(
    out: Annotated[Path, typer.Option(help="folder for the demo's results (must be new or empty)")] = Path(
        "onnxprune-demo"
    ),
    quick: Annotated[bool, typer.Option("--quick", help="a reduced run (small data, few levels): seconds")] = False,
) -> None:
    """Run the pruning lab end to end on the built-in spectrogram data and AlexNet-shaped model."""
    from onnxprune.demo.run import run_demo

    with _training_progress() as training, _level_progress() as levels:

        def progress(event: dict) -> None:
            (levels if "row" in event else training)(event)

        summary = run_demo(out, quick=quick, say=lambda line: _console().print(line), progress=progress)
    _print_demo(summary, out)


def _print_demo(summary: dict, out: Path) -> None:
    layers = Table("layer", "sparsity")
    for name, value in summary["layer_sparsity"].items():
        layers.add_row(name, f"{value:.1%}")
    _console().print(layers)
    comparison = Table("model", "latency (batch 1)", "file", "zipped")
    for name, row in summary["comparison"].items():
        comparison.add_row(
            name, f"{row['latency_ms']:.2f} ms", _human_size(row["bytes"]), _human_size(row["zipped_bytes"])
        )
    _console().print(comparison)
    before = summary["pruned_top1_before_finetuning"]
    _console().print(
        f"dense top-1 {summary['dense_top1']:.2%}; pruned to {summary['pruned_sparsity']:.1%}: "
        + (f"{before:.2%} before fine-tuning, " if before is not None else "")
        + f"{summary['pruned_top1']:.2%} after; {summary['seconds']:.0f} s"
    )
    _console().print(
        f"""
Everything is in {out}/:
  accuracy_vs_sparsity.png   accuracy at each sparsity, global and per layer, with the dense line
  layer_sparsity.png         sparsity of each layer and block of the pruned model
  masks.png                  kept and pruned weights of every layer
  training.png               fine-tuning loss and accuracy
  sweep/results.{{json,csv,mat}}  the sweep's numbers (MATLAB: load('sweep/results.mat'))
  pruned/                    the pruned model ({Path(summary["pruned_model"]).name}), its checkpoint and results
  pruned_sparse_storage.onnx the pruned model stored as sparse initializers (smaller file)
  comparison.json            latency and sizes of dense and pruned in onnxruntime
  summary.json               all of the above in one file

Next: run the same on your own model and images:
  onnxprune sweep your_model.onnx --data your_images/ --scope layer,global
  onnxprune prune your_model.onnx --max-drop 0.01 --data your_images/ --finetune-epochs 3
  onnxprune prune your_model.onnx --method l1-filter --sparsity 0.4 -o smaller.onnx   (filters removed: faster)"""
    )


def main() -> None:
    """Console entry point."""
    app()


def _print_error(message: str) -> None:
    _console(stderr=True).print(f"error: {message}", markup=False)


if __name__ == "__main__":
    main()
