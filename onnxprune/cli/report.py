"""The plot and report commands: figures of masks, sparsity per layer, sweeps, BatchNorm scales; a run's page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onnxprune.cli.common import (
    JsonOption,
    console,
    emit_json,
    reports_errors,
)
from onnxprune.errors import ConfigError


@reports_errors
def plot(
    kind: Annotated[str, typer.Argument(help="accuracy, pareto, mask, layers, filters, training, taylor or gamma")],
    sources: Annotated[list[Path], typer.Argument(help="results files / run folders / models, as KIND needs")],
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG to write")],
    layer: Annotated[str | None, typer.Option(help="mask: one layer (default: all)")] = None,
    label: Annotated[list[str] | None, typer.Option(help="gamma/pareto: a label per source")] = None,
    as_json: JsonOption = False,
) -> None:
    """Draw a figure from saved results or models (PNG)."""
    import json as json_module

    from onnxprune import results
    from onnxprune.graph.model import load
    from onnxprune.report import plots

    if kind == "accuracy":
        figure = plots.accuracy_vs_sparsity([results.read(path) for path in sources], output)
    elif kind == "pareto":
        from onnxprune.pruning.methods import sparsity_units

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
                            "units": sparsity_units(row.method),
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
    if as_json:
        emit_json({"figure": figure, "kind": kind})
        return
    console().print(f"wrote {figure}")


@reports_errors
def report(
    folder: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="a folder onnxprune wrote (--out-dir, demo)")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="HTML file (default: RUN_DIR/report.html)")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Write one self-contained HTML page of a run: headline numbers, tables, every figure."""
    from onnxprune.report.html import write_report

    written = write_report(folder, output)
    if as_json:
        emit_json({"report": written})
        return
    console().print(f"wrote {written}")
