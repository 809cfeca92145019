"""Commands that measure: evaluate, sweep, sensitivity, bench, and quantize (measured against the float model)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from onnxprune.cli.common import (
    DATA_PANEL,
    DataOption,
    FirstOption,
    FlattenOption,
    FromOption,
    JsonOption,
    LimitOption,
    MeanOption,
    PixelRangeOption,
    SparsitiesOption,
    StdOption,
    StepOption,
    ToOption,
    console,
    data_options,
    emit_json,
    evaluation_data,
    help_panels,
    human_size,
    level_options,
    level_progress,
    numbers,
    old_spelling,
    percent,
    print_error,
    reports_errors,
)
from onnxprune.errors import ConfigError

if TYPE_CHECKING:
    from onnxprune.measure.bench import ModelBench
    from onnxprune.measure.sweep import Allocation
    from onnxprune.results import ResultTable

BENCH_BATCHES = "1,32"


@reports_errors
def evaluate(
    model_path: Annotated[Path, typer.Argument(metavar="MODEL", help="an .onnx file")],
    data: DataOption = None,
    engine: Annotated[str, typer.Option(help="onnxruntime, torch or both")] = "onnxruntime",
    limit: LimitOption = None,
    first: FirstOption = None,
    pixel_range: PixelRangeOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    flatten: FlattenOption = None,
    batch_size: Annotated[int, typer.Option(help="samples per call")] = 256,
    as_json: JsonOption = False,
) -> None:
    """Top-1 and top-5 accuracy and loss of MODEL on labelled data, in onnxruntime and/or torch."""
    from onnxprune.graph.model import load
    from onnxprune.workbench.evaluate import data_notes
    from onnxprune.workbench.evaluate import evaluate as evaluate_model

    if data is None:
        raise ConfigError("evaluate needs --data (a folder, .zip, .mat, .npz or MNIST idx file)")
    engines = ["onnxruntime", "torch"] if engine == "both" else [engine]
    model = load(model_path)
    preprocess, dataset = evaluation_data(model, data, limit, pixel_range, mean, std, flatten, first=first)
    results = [evaluate_model(model, dataset, preprocess, engine=name, batch_size=batch_size) for name in engines]
    classes, flat = model.num_classes or len(dataset.classes), preprocess.layout == "flat"
    notes = [note for note in [*preprocess.notes, *data_notes(results[0], classes, flat)] if note]
    if as_json:  # every engine's entry carries the notes, as the other commands' JSON does
        typer.echo(json.dumps([{**result.as_dict(), "notes": notes} for result in results], indent=2))
        return
    _print_notes(notes)
    for result in results:
        console().print(
            f"{result.engine:>11}: top-1 {result.top1:.2%}  top-5 {result.top5:.2%}  loss {result.loss:.4f}  "
            f"({result.samples} samples, {result.samples / result.seconds:,.0f} samples/s)"
        )


@help_panels(**DATA_PANEL, data="Data", **dict.fromkeys(("sparsities", "start", "stop", "step"), "Levels"))
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
    out_dir: Annotated[
        Path | None, typer.Option("--out-dir", "-o", help="folder for results and the figure (default: MODEL_sweep)")
    ] = None,
    limit: LimitOption = None,
    first: FirstOption = None,
    pixel_range: PixelRangeOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    flatten: FlattenOption = None,
    reconstruct: Annotated[
        bool,
        typer.Option(
            "--reconstruct",
            help="re-solve each level's kept weights on 512 images held out of --data (least "
            "squares against the dense outputs); the others are evaluated",
        ),
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="continue the sweep in --out-dir: its measured levels are kept")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Accuracy at every sparsity level without fine-tuning; the best trade-off within --max-drop.

    Results are written as levels finish (kept on an error or Ctrl-C; --resume continues), and a
    level that cannot be reached is recorded and skipped.
    """
    from onnxprune.files import file_digest
    from onnxprune.graph.model import load
    from onnxprune.measure.sweep import repeated_levels, trade_off
    from onnxprune.measure.sweep import sweep as sweep_model
    from onnxprune.pruning.reconstruct import calibration_split
    from onnxprune.report import plots
    from onnxprune.report.html import write_report
    from onnxprune.workbench.evaluate import chance_note, input_scale_note

    if data is None:
        raise ConfigError("sweep needs --data")
    levels = level_options(sparsities, start, stop, step, "0:0.1:0.9,0.9:0.02:0.98")
    model = load(model_path)
    preprocess, dataset = evaluation_data(model, data, limit, pixel_range, mean, std, flatten, first=first)
    methods, scopes = [m.strip() for m in method.split(",")], [x.strip() for x in scope.split(",")]
    calibration, notes = None, list(preprocess.notes)
    if reconstruct:
        calibration, dataset = calibration_split(dataset)
        notes.append(
            f"--reconstruct: {len(calibration)} of the images (stratified) solve the layers; top-1 is measured on "
            f"the other {len(dataset)}"
        )
    out_dir = out_dir or model_path.with_name(f"{model_path.stem}_sweep")
    identity = {
        "model_sha256": file_digest(model_path), "data": str(data), "limit": limit, "first": first,
        "pixel_range": pixel_range, "mean": mean, "std": std, "flatten": flatten, "reconstruct": reconstruct,
    }  # fmt: skip
    done = _earlier_sweep(out_dir, identity) if resume else None
    writer = _SweepWriter(out_dir, identity)
    with writer.keeps_what_was_measured(len(levels) * len(methods) * len(scopes)):  # until the last write
        with level_progress() as progress:
            table = sweep_model(model, dataset, preprocess, levels, methods, scopes, progress=progress,
                                calibration=calibration, checkpoint=writer.update, done=done)  # fmt: skip
        choice = trade_off(table, max_drop)
        classes, flat = model.num_classes or len(dataset.classes), preprocess.layout == "flat"
        chance = chance_note(table.baseline_accuracy, classes, flat)
        if chance:  # a choice on a baseline near chance would choose on noise: the curves stay, the choice goes
            choice["near_chance"] = f"no trade-off is chosen: the dense model's {chance}"
        scale = input_scale_note(table.baseline_accuracy, table.extra.get("baseline_loss"), classes, flat)
        notes += [f"the dense model's {scale}"] if scale else []
        table.extra["trade_off"] = choice
        notes += [f"{u['method']} ({u['scope']}) at {u['sparsity']:g}: not reached: {u['reason']}"
                  for u in table.extra.get("unreachable", [])]  # fmt: skip
        notes += repeated_levels(table)
        written = writer.write(table)
        figure = plots.accuracy_vs_sparsity([table], out_dir / "accuracy_vs_sparsity.png")
        page = write_report(out_dir)
    if as_json:
        rows = [{"method": r.method, "scope": r.scope, "sparsity": r.sparsity, "accuracy": r.accuracy, "loss": r.loss,
                 "num_nonzero": r.num_nonzero} for r in table.rows]  # fmt: skip
        emit_json({"baseline_top1": table.baseline_accuracy, "trade_off": choice, "rows": rows,
                   "results": written, "figure": figure, "report": page, "notes": notes})  # fmt: skip
        return
    _print_notes(notes)
    _print_sweep(table, choice)
    console().print(f"wrote {', '.join(str(p) for p in written.values())}, {figure} and {page}")


# sensitivity: the share of --data kept apart to measure the combined allocation on
HELD_OUT_FRACTION = 0.3


def _allocation_note(allocation: Allocation, max_drop: float) -> str | None:
    """What the check of the combined allocation changed, or could not reach."""
    if not allocation.within_budget:
        return (
            f"no blend of the per-layer allocation with global magnitude's stays within {max_drop:g} of the dense "
            f"top-1 at this target; the best measured (mix {allocation.mix:g}) keeps {allocation.top1:.2%} of "
            f"{allocation.baseline:.2%}: lower --target or raise --max-drop"
        )
    if allocation.mix < 1:
        first = allocation.candidates[0]
        best = max(allocation.candidates, key=lambda candidate: candidate["top1"])
        inside_noise = (
            f" (mix {best['mix']:g} kept {best['top1']:.2%}: not beyond the sampling noise of "
            f"{allocation.samples} samples, so global's allocation is written)"
            if best["top1"] > allocation.top1
            else ""
        )
        return (
            f"the per-layer budgets added up: together they kept {first['top1']:.2%} (dense "
            f"{allocation.baseline:.2%}); blended with global magnitude's allocation (mix {allocation.mix:g}) "
            f"they keep {allocation.top1:.2%}{inside_noise}"
        )
    return None


def _earlier_sweep(out_dir: Path, identity: dict) -> ResultTable:
    """The interrupted sweep in `out_dir`, checked to be of the same model and data."""
    from onnxprune import results

    if not (out_dir / "results.json").is_file():
        raise ConfigError(f"--resume: no sweep in {out_dir} (no results.json); run without --resume")
    earlier = results.read(out_dir)
    recorded = earlier.extra.get("identity", {})
    for key, value in identity.items():
        if recorded.get(key) != value:
            raise ConfigError(
                f"--resume: the sweep in {out_dir} was run with {key} = {recorded.get(key)}, this one with "
                f"{value}; give the same model and data, or another --out-dir"
            )
    return earlier


class _SweepWriter:
    """Writes a sweep's results as levels finish (at most every 2 s), and what was measured on an interruption."""

    def __init__(self, out_dir: Path, identity: dict) -> None:
        self.out_dir, self.identity = out_dir, identity
        self.table: ResultTable | None = None
        self.last = 0.0

    def update(self, table: ResultTable) -> None:
        """Called after every level; writes when 2 s have passed since the last write."""
        self.table = table
        if time.monotonic() - self.last >= 2.0:
            self.write(table)

    def write(self, table: ResultTable) -> dict[str, Path]:
        """results.json, .csv and .mat in the out folder, with the run's identity (for --resume)."""
        from onnxprune import results

        table.extra["identity"] = self.identity
        self.last = time.monotonic()
        return results.write(table, self.out_dir)

    @contextlib.contextmanager
    def keeps_what_was_measured(self, total: int) -> Iterator[None]:
        """On Ctrl-C or an error, write the levels measured so far before leaving."""
        try:
            yield
        except BaseException as exc:
            if self.table is not None and self.table.rows:
                self.write(self.table)
                if isinstance(exc, KeyboardInterrupt):
                    print_error(
                        f"interrupted; {len(self.table.rows)} of {total} levels written to {self.out_dir}; "
                        "add --resume to continue"
                    )
                    raise typer.Exit(130) from None
            raise


def _print_notes(notes: list[str]) -> None:
    for note in notes:
        if note:
            console().print(f"note: {note}", highlight=False)


def _print_sweep(table: ResultTable, choice: dict | None) -> None:
    labels = table.methods()
    units = {f"{curve['method']} ({curve['scope']})": curve["units"] for curve in choice["curves"]}
    mixed = len(set(units.values())) > 1  # then each column says what its sparsity counts
    levels = list(dict.fromkeys(row.sparsity for row in table.rows))
    header = "sparsity (of the units in [ ])" if mixed else f"sparsity (% of {next(iter(units.values()), 'weights')})"
    grid_table = Table(header, *[f"{label} [{units[label]}]" if mixed else label for label in labels])
    by_key = {(f"{r.method} ({r.scope})", r.sparsity): r for r in table.rows}
    for level in levels:
        cells = [f"{by_key[(label, level)].accuracy:.2%}" if (label, level) in by_key else "" for label in labels]
        grid_table.add_row(f"{level:.1%}", *cells)
    console().print(grid_table)
    budget = f"{choice['max_drop']:.1%}"
    curves = Table("curve", f"highest sparsity within {budget}", "its top-1", "knee of the curve")
    for curve in choice["curves"]:
        knee = f"{percent(curve['knee_sparsity'])} ({percent(curve['knee_accuracy'])})"
        curves.add_row(f"{curve['method']} ({curve['scope']})", f"{curve['sparsity']:.1%} of {curve['units']}",
                       f"{curve['accuracy']:.2%}", knee if curve["knee_sparsity"] is not None else "-")  # fmt: skip
    console().print(curves)
    on = f" on {table.extra['samples']} samples" if table.extra.get("samples") else ""
    console().print(
        f"dense top-1 {table.baseline_accuracy:.2%}{on}; {_trade_off_line(choice, budget)}", highlight=False
    )


def _trade_off_line(choice: dict, budget: str) -> str:
    if choice.get("near_chance"):
        return choice["near_chance"]
    if choice["method"] is None:
        return f"no level of any curve stays within {budget} of it"
    mixed = len({curve["units"] for curve in choice["curves"]}) > 1
    return (
        f"highest sparsity within {budget} of it{' (of the curves counting weights)' if mixed else ''}: "
        f"{choice['sparsity']:.1%} of the {choice['units']} ({choice['method']}, {choice['scope']}, "
        f"top-1 {choice['accuracy']:.2%}; knee of that curve {percent(choice['knee_sparsity'])})"
    )


@help_panels(**DATA_PANEL, data="Data")
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
    first: FirstOption = None,
    pixel_range: PixelRangeOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    flatten: FlattenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Prune one layer at a time to find the sensitive ones; write per-layer ratios reaching --target."""
    from onnxprune import results
    from onnxprune.graph.model import load
    from onnxprune.measure.sweep import checked_allocation, write_ratios
    from onnxprune.measure.sweep import sensitivity as layer_sensitivity
    from onnxprune.options import check_sparsity
    from onnxprune.report import plots
    from onnxprune.workbench.data import split

    if data is None:
        raise ConfigError("sensitivity needs --data")
    check_sparsity(target, "--target")
    levels = level_options(sparsities, None, None, None, "0:0.1:0.9,0.95,0.98")
    model = load(model_path)
    preprocess, dataset = evaluation_data(model, data, limit, pixel_range, mean, std, flatten, first=first)
    curves_on, held_out = split(dataset, HELD_OUT_FRACTION, seed=0)  # the whole is checked on samples apart
    with level_progress() as progress:
        table = layer_sensitivity(model, curves_on, preprocess, levels, progress=progress)
    allocation = checked_allocation(model, table, held_out, preprocess, target, max_drop)
    ratios = allocation.ratios
    out_dir = out_dir or model_path.with_name(f"{model_path.stem}_sensitivity")
    output = output or out_dir / "ratios.yaml"
    table.extra["ratios"] = ratios
    table.extra["combined"] = dataclasses.asdict(allocation)
    results.write(table, out_dir)
    figure = plots.sensitivity(table, out_dir / "sensitivity.png")
    sizes = {layer.name: layer.numel for layer in model.layers}
    reached = sum(ratios[n] * sizes[n] for n in ratios) / sum(sizes.values())
    combined = (
        f"combined top-1 {allocation.top1:.2%} on {allocation.samples} held-out samples "
        f"(dense {allocation.baseline:.2%}, budget {max_drop:g}{'' if allocation.within_budget else ', not met'}); "
        f"mix {allocation.mix:g} of the sensitivity allocation with global magnitude's"
    )
    write_ratios(
        ratios, output,
        f"onnxprune sensitivity: target {target}, per-layer budget {max_drop}; reaches {reached:.4f}\n# {combined}",
    )  # fmt: skip
    from onnxprune.report.html import write_report

    page = write_report(out_dir)
    notes = [*preprocess.notes, _allocation_note(allocation, max_drop)]
    if as_json:
        layers = [{"name": name, "weights": sizes[name], "ratio": ratio} for name, ratio in ratios.items()]
        emit_json({"ratios_file": output, "figure": figure, "folder": out_dir, "target": target, "reached": reached,
                   "combined": dataclasses.asdict(allocation), "layers": layers, "report": page,
                   "notes": [note for note in notes if note]})  # fmt: skip
        return
    _print_notes([note for note in notes if note])
    summary = Table("layer", "weights", "ratio")
    for name, ratio in ratios.items():
        summary.add_row(name, f"{sizes[name]:,}", f"{ratio:.1%}")
    console().print(summary)
    console().print(combined)
    if reached + 1e-6 < target:
        console().print(f"note: with {max_drop:.1%} per layer the ratios reach only {reached:.1%} of {target:.1%}")
    console().print(f"overall {reached:.2%}; wrote {output}, {figure}, results and {page.name} in {out_dir}")


@help_panels(
    **DATA_PANEL, data="Data", **dict.fromkeys(("batch_size", "batch", "provider", "threads", "runs"), "Timing")
)
@reports_errors
def bench_command(
    models: Annotated[
        list[Path], typer.Argument(metavar="MODEL...", help="models to compare (the first is the reference)")
    ],
    batch_size: Annotated[
        str | None, typer.Option(help=f"batch sizes to time, comma-separated (default: {BENCH_BATCHES})")
    ] = None,
    provider: Annotated[str, typer.Option(help="cpu or cuda (needs the gpu extra and a GPU)")] = "cpu",
    threads: Annotated[int | None, typer.Option(help="onnxruntime intra-op threads")] = None,
    runs: Annotated[int | None, typer.Option(help="timed calls per batch size (default: ~2 s worth)")] = None,
    data: DataOption = None,
    limit: LimitOption = None,
    first: FirstOption = None,
    pixel_range: PixelRangeOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    flatten: FlattenOption = None,
    out_dir: Annotated[Path | None, typer.Option("--out-dir", "-o", help="folder for bench.json and bench.png")] = None,
    baselines: Annotated[
        bool,
        typer.Option(
            "--baselines", help="add the first model quantized to int8: dynamic, and static (calibrated) with --data"
        ),
    ] = False,
    wide: Annotated[bool, typer.Option("--wide", help="also p90 latency, zipped and values+mask sizes")] = False,
    as_json: JsonOption = False,
    batch: Annotated[str | None, typer.Option("--batch", hidden=True, help="old spelling of --batch-size")] = None,
) -> None:
    """Latency, throughput, sizes and accuracy of models side by side in onnxruntime, one session at a time."""
    from onnxprune.graph.model import load
    from onnxprune.measure import bench as bench_module
    from onnxprune.report import plots

    if wide and as_json:
        raise ConfigError("--wide has no effect with --json: the JSON holds every column already")
    batch_size = old_spelling(batch, batch_size, "--batch", "--batch-size", BENCH_BATCHES)
    batches = [int(float(b)) for b in batch_size.split(",") if b.strip()]
    dataset, options, preprocess = None, None, None
    data_options(data, limit=limit, pixel_range=pixel_range, mean=mean, std=std, flatten=flatten, first=first)
    if data is not None:
        reference = load(models[0])
        preprocess, dataset = evaluation_data(reference, data, limit, pixel_range, mean, std, flatten, first=first)
        options = {"pixel_range": pixel_range, "mean": numbers(mean, "--mean"), "std": numbers(std, "--std"),
                   "flatten_order": flatten or "row"}  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:  # the baselines live in --out-dir when given, else only here
        paths = list(models)
        if baselines:
            target = out_dir or Path(folder)
            target.mkdir(parents=True, exist_ok=True)
            paths += bench_module.int8_baselines(models[0], target, dataset, preprocess)
            if dataset is None and not as_json:
                console().print("note: --baselines without --data: the dynamic int8 baseline only (static calibrates)")
        results = bench_module.bench(paths, batches, provider, threads, runs, dataset, options)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "bench.json").write_text(json.dumps(bench_module.as_dicts(results), indent=2))
        plots.bench_figure(results, out_dir / "bench.png")
        from onnxprune.report.html import write_report

        page = write_report(out_dir)
        if not as_json:
            console().print(f"wrote {out_dir / 'bench.json'}, {out_dir / 'bench.png'} and {page}")
    if as_json:  # every entry carries the notes the table prints, as evaluate's JSON does
        notes = bench_module.bench_notes(results)
        typer.echo(json.dumps([{**entry, "notes": notes} for entry in bench_module.as_dicts(results)], indent=2))
        return
    _print_bench(results, batches, wide)


def _print_bench(results: list[ModelBench], batches: list[int], wide: bool) -> None:
    """The bench table: within 120 columns by default; --wide adds p90, zipped and values+mask sizes.

    Each latency column has one unit, µs when all of it is under 1 ms, and three significant digits.
    """
    from onnxprune.measure.bench import bench_notes, latency_unit, significant_decimals, three_digits

    units = {b: latency_unit([r.latency_ms[str(b)]["median"] for r in results if str(b) in r.latency_ms])
             for b in batches}  # fmt: skip
    latency_columns = [f"b{b} {units[b][0]} (IQR" + (", p90)" if wide else ")") for b in batches]
    columns = ["model", *latency_columns, *[f"b{b} speedup" for b in batches], "size",
               *(["zipped", "values+mask"] if wide else []), "non-zeros", "MACs", "top-1"]  # fmt: skip
    table = Table(*columns, title=f"onnxruntime, {results[0].threads} intra-op thread(s); medians of timed calls")
    unstable = []
    for r in results:
        latency = []
        for b in batches:
            timing = r.latency_ms.get(str(b))
            if timing is None:
                latency.append("-")
                continue
            scale = units[b][1]
            # the spread and p90 at the median's precision: three significant digits of the median
            decimals = significant_decimals(timing["median"] * scale)
            shown = [three_digits(timing[key] * scale, decimals) for key in ("median", "iqr", "p90")]
            latency.append(f"{shown[0]} ({shown[1]}" + (f", {shown[2]})" if wide else ")"))
            if not timing.get("stable", True):
                unstable.append(f"{r.name} at batch {b}")
        speed = [f"{r.speedup[str(b)]:.2f}x" if str(b) in r.speedup else "-" for b in batches]
        sizes = [human_size(r.zipped_bytes), human_size(r.values_mask_bytes)] if wide else []
        counted = r.macs is not None  # int8 weights are not float layers: not counted
        table.add_row(
            r.name, *latency, *speed, human_size(r.bytes), *sizes, f"{r.nonzero:,}" if counted else "-",
            f"{r.macs:,}" if counted else "-", f"{r.top1:.2%}" if r.top1 is not None else "-",
        )  # fmt: skip
    console().print(table)
    if any(str(b) not in r.latency_ms for r in results for b in batches):
        console().print("-: a batch size the model cannot take (its graph hard-codes the batch)")
    if any(r.macs is None for r in results):
        console().print("-: int8 models' weights are not float layers; their non-zeros and MACs are not counted")
    if unstable:
        console().print(
            f"note: the spread did not settle within the time budget for {', '.join(unstable)}: the machine is "
            "busy or its clock varies; compare ratios from one run, or give --runs"
        )
    for note in bench_notes(results):
        console().print(f"note: {note}")
    if wide:
        console().print(
            "values+mask: the weights' non-zero values at full width plus the entropy of their zero mask "
            "(a reference size, not a limit: pack can go below it by compressing the values)"
        )


@reports_errors
def quantize(
    model_path: Annotated[Path, typer.Argument(metavar="MODEL", help="a float .onnx file (pruned or not)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="the int8 .onnx to write")],
    method: Annotated[str, typer.Option(help="static (QDQ, calibrated on --data) or dynamic")] = "static",
    data: DataOption = None,
    calibration: Annotated[int, typer.Option(help="samples used to calibrate activations (stratified)")] = 256,
    limit: LimitOption = None,
    first: FirstOption = None,
    pixel_range: PixelRangeOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    flatten: FlattenOption = None,
    timed: Annotated[
        bool,
        typer.Option("--time/--no-time", help="time the int8 model against the float one at batch 1 and 32 (~10 s)"),
    ] = True,
    keep_float: Annotated[
        str,
        typer.Option(
            help="layers to leave float: auto (those measured faster in float than as integer kernels, "
            "kept when the whole model then runs faster), none, or Conv/Gemm/MatMul node names, comma-separated"
        ),
    ] = "auto",
    as_json: JsonOption = False,
) -> None:
    """Quantize MODEL to int8 with onnxruntime.quantization; pruned zeros stay zero."""
    from onnxprune.graph.model import load
    from onnxprune.measure.quantize import quantize as quantize_model

    model = load(model_path)
    preprocess, dataset = evaluation_data(model, data, limit, pixel_range, mean, std, flatten, first=first)
    batches = tuple(int(b) for b in BENCH_BATCHES.split(",")) if timed else ()
    report = quantize_model(model, output, method, dataset, preprocess, calibration, dataset, batches, keep_float)
    notes = [*preprocess.notes, *report.notes]
    if as_json:
        # the layers left float by name (a list of texts: an empty list stays one field for MATLAB);
        # their measured kernel times are in the note
        emit_json(
            {**dataclasses.asdict(report), "kept_float": [layer.node for layer in report.kept_float], "notes": notes}
        )
        return
    _print_notes(notes)
    accuracy = ""
    if report.top1_before is not None:
        on = f"the {len(dataset):,} images of --data"
        accuracy = f"; top-1 {report.top1_before:.2%} -> {report.top1_after:.2%} on {on}"
    console().print(
        f"{method} int8: {human_size(report.bytes_before)} -> {human_size(report.bytes_after)}; "
        f"weight zeros {report.zeros_before:,} -> {report.zeros_after:,}{accuracy}; wrote {output}"
    )
    kernels = report.kernels
    speed = ", ".join(f"{ratio:.2f}x at batch {batch}" for batch, ratio in report.speedup.items())
    console().print(
        f"onnxruntime runs {len(kernels.integer)} of {len(kernels.integer) + len(kernels.float)} compute nodes as "
        f"integer kernels ({report.prepared})" + (f"; against the float model: {speed}" if speed else "")
    )
