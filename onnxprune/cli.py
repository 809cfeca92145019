"""The `onnxprune` command line: parse, call the library, print tables, set exit codes.

Every `OnnxpruneError` becomes one line on stderr and exit code 2; anything unexpected becomes one
line and exit code 1 (set ONNXPRUNE_DEBUG=1 for the traceback). Usage errors are typer's (exit 2).
"""

from __future__ import annotations

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

from onnxprune.errors import OnnxpruneError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Prune ONNX classifiers exported by MATLAB or PyTorch, verified in onnxruntime.",
)


def _console(stderr: bool = False) -> Console:
    """A rich console; wide when output goes to a file or pipe, so tables keep full layer names."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, width=None if stream.isatty() else 160, soft_wrap=True)


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
    from onnxprune.inspection import describe
    from onnxprune.model import load

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


@app.command()
@reports_errors
def prune(
    model_path: Annotated[Path, typer.Argument(metavar="MODEL", help="an .onnx file")],
    sparsity: Annotated[float, typer.Option(help="fraction of prunable weights to remove, in [0, 1)")] = 0.5,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="output .onnx (default: beside the input)")
    ] = None,
    method: Annotated[str, typer.Option(help="pruning method")] = "magnitude",
    scope: Annotated[str, typer.Option(help="layer: each layer to SPARSITY; global: one threshold")] = "layer",
    config: Annotated[
        Path | None, typer.Option(help="YAML of per-layer ratios, e.g. 'conv1: 0.5' and 'default: 0.8'")
    ] = None,
    skip_first: Annotated[bool, typer.Option("--skip-first", help="leave the first prunable layer dense")] = False,
    skip_last: Annotated[bool, typer.Option("--skip-last", help="leave the last prunable layer dense")] = False,
    max_layer_sparsity: Annotated[
        float, typer.Option(help="global scope: no layer pruned beyond this (guards against layer collapse)")
    ] = 0.99,
    sparse_storage: Annotated[
        bool,
        typer.Option(
            "--sparse-storage",
            help="store weights as sparse initializers where smaller (disk only: onnxruntime densifies at load)",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Prune MODEL and write the same graph with zeros in it, verified in onnxruntime."""
    from onnxprune.model import check_output_path, load
    from onnxprune.pruning import default_output, save
    from onnxprune.pruning import prune as prune_model
    from onnxprune.select import check_sparsity

    check_sparsity(sparsity)
    model = load(model_path)
    output = output or default_output(model_path, sparsity, method)
    check_output_path(model, output)
    result = prune_model(
        model,
        sparsity,
        method=method,
        scope=scope,
        config=config,
        skip_first=skip_first,
        skip_last=skip_last,
        max_layer_sparsity=max_layer_sparsity,
        keep_masks=False,  # nothing trains after this command: the zeros are the mask
    )
    del model  # with release=True, save frees the last references once the file is written
    report = save(result, output, sparse_storage=sparse_storage, release=True)
    summary = _prune_summary(result, output)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    _print_prune_table(result)
    for note in result.notes:
        _console().print(f"note: {note}")
    if result.sparse_initializers:
        _console().print(
            f"sparse storage: {len(result.sparse_initializers)} weight(s) stored as sparse initializers "
            "(smaller file; onnxruntime densifies them at load, so inference is not faster)",
            highlight=False,
        )
    _console().print(
        f"sparsity {result.prunable_sparsity:.2%} of prunable weights, {result.total_sparsity:.2%} of all parameters; "
        f"verified in onnxruntime (max |diff| {report.max_abs_diff:.2e}); wrote {output} "
        f"({_human_size(output.stat().st_size)})"
    )


def _prune_summary(result, output: Path) -> dict:
    return {
        "output": str(output),
        "method": result.method,
        "scope": result.scope,
        "requested": result.requested,
        "prunable_sparsity": result.prunable_sparsity,
        "total_sparsity": result.total_sparsity,
        "layers": [
            {"name": layer.name, "params": layer.numel, "zeros": layer.zeros, "sparsity": layer.sparsity}
            for layer in result.layers
        ],
        "notes": result.notes,
        "sparse_initializers": result.sparse_initializers,
        "max_abs_diff": result.verification.max_abs_diff if result.verification else None,
        "bytes": output.stat().st_size,
    }


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


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="folder for the demo's results")] = Path("onnxprune-demo"),
) -> None:
    """Run the built-in demo (coming in a later version)."""
    _console().print(
        "The built-in demo (data set, reference models, sweep and figures) is coming in a later version.\n"
        "Today you can prune any ONNX classifier:  onnxprune prune model.onnx --sparsity 0.9 -o pruned.onnx"
    )


def main() -> None:
    """Console entry point."""
    app()


def _print_error(message: str) -> None:
    _console(stderr=True).print(f"error: {message}", markup=False)


if __name__ == "__main__":
    main()
