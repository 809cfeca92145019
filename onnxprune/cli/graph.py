"""Commands on the model file itself: inspect, compact, pack, unpack."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from onnxprune.cli.common import (
    JsonOption,
    console,
    emit_json,
    human_size,
    reports_errors,
)
from onnxprune.errors import ConfigError


@reports_errors
def inspect(
    model_path: Annotated[Path, typer.Argument(metavar="MODEL", help="an .onnx file")],
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="compare the torch conversion (onnx2torch) with onnxruntime node by node; exit 1 where it differs",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Show producer, opset, inputs and outputs, and every prunable layer with parameters, zeros and MACs."""
    from onnxprune.graph.inspection import describe
    from onnxprune.graph.model import load

    model = load(model_path)
    description = describe(model)
    if check:
        from onnxprune.workbench.convert import conversion_report

        description["conversion"] = conversion_report(model)
    if as_json:
        typer.echo(json.dumps(description, indent=2))
        _exit_on_a_failed_check(description)
        return
    spec = description["input"]
    console().print(f"[bold]{model_path}[/bold]  producer: {description['producer']}  opset {description['opset']}")
    console().print(f"input  {spec['name']} {spec['shape']} {spec['layout']} {spec['elem_type']}")
    console().print(f"output {', '.join(description['outputs'])}")
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
    console().print(table)
    totals = description["totals"]
    console().print(
        f"prunable: {totals['prunable_params']:,} weights, {totals['prunable_zeros']:,} zero; "
        f"all parameters: {totals['all_params']:,}, {totals['all_zeros']:,} zero; MACs {totals['macs']:,}"
    )
    if check:
        _print_conversion(description["conversion"])
        _exit_on_a_failed_check(description)


# the node values `inspect --check` shows after the first that differs (its consequences)
SHOWN_AFTER_FIRST = 3


def _print_conversion(report: dict) -> None:
    """The conversion check: one line when exact; else the nodes up to the first that differs, and a few after."""
    nodes = report["nodes"]
    compared = f"; {len(nodes)} node values compared of {report['graph_nodes']} nodes" if report["converts"] else ""
    console().print(f"{report['summary']}{compared}", highlight=False)
    if report["exact"] or not nodes:
        return
    first = next((index for index, node in enumerate(nodes) if not node["agrees"]), len(nodes) - 1)
    table = Table("node", "op", "revision", "inputs", "output", "max |diff|", "")
    for node in nodes[: first + 1 + SHOWN_AFTER_FIRST]:
        table.add_row(
            node["node"], node["op"], str(node["revision"] or "-"), ", ".join(node["input_shapes"]), node["shape"],
            f"{node['max_abs_diff']:.3g}", "ok" if node["agrees"] else "DIFFERS",
        )  # fmt: skip
    console().print(table)
    if not report["nondeterministic"]:
        console().print(
            f"the first node that differs is where the conversion goes wrong (those after inherit it): report "
            f"onnx2torch's converter of {nodes[first]['op']} with this table; pruning by weights still works "
            "(docs/formats.md#checking-the-conversion)",
            highlight=False,
        )


def _exit_on_a_failed_check(description: dict) -> None:
    """`inspect --check` exits 1 when the conversion fails or differs (0 when nondeterminism explains it)."""
    report = description.get("conversion")
    if report is not None and not (report["exact"] or report.get("nondeterministic")):
        raise typer.Exit(1)


NOTHING_TO_REMOVE = (
    "no filter or neuron is all zero: the output is the same model (prune with a filter method, "
    "e.g. --method l1-filter, to remove channels)"
)


@reports_errors
def compact(
    model_path: Annotated[Path, typer.Argument(metavar="MODEL", help="a masked .onnx file (all-zero filters)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="output .onnx")],
    as_json: JsonOption = False,
) -> None:
    """Remove every all-zero filter and neuron of MODEL for real: smaller tensors, same outputs."""
    from onnxprune.graph.channels import compact as compact_model
    from onnxprune.graph.inspection import describe
    from onnxprune.graph.model import check_output_path, from_proto, load
    from onnxprune.graph.proto import session
    from onnxprune.graph.storage import save_model_file
    from onnxprune.graph.verify import Reference, random_batch, verify

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
        "notes": [] if any(report.removed.values()) else [NOTHING_TO_REMOVE],
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    for note in summary["notes"]:
        console().print(f"note: {note}")
    table = Table("layer", "channels before", "after")
    for name, kept in report.kept.items():
        table.add_row(name, str(kept + report.removed[name]), str(kept))
    console().print(table)
    for name, why in report.inexact.items():
        console().print(f"note: approximate at '{name}': {why}")
    for name, why in report.rewritten.items():
        console().print(f"note: node '{name}' added to stay exact: {why}", highlight=False)
    for where, why in list(report.skipped.items())[:5]:
        console().print(f"note: zero channel {where} kept: {why}")
    console().print(
        f"parameters {before['prunable_params']:,} -> {after['prunable_params']:,}, MACs {before['macs']:,} -> "
        f"{after['macs']:,}; output vs the masked model: max |diff| {reports[0].max_abs_diff:.2e}; wrote {output}"
    )


@reports_errors
def pack(
    model_path: Annotated[Path, typer.Argument(metavar="MODEL", help="a pruned .onnx file")],
    output: Annotated[Path, typer.Option("--output", "-o", help="the package to write (.onnxz)")],
    as_json: JsonOption = False,
) -> None:
    """Store a pruned model in the smallest form: sparse weights as values + a bit mask, deflated."""
    from onnxprune.graph.model import load
    from onnxprune.graph.storage import pack as pack_model
    from onnxprune.measure.bench import values_mask_bytes

    model = load(model_path)
    report = pack_model(model, output)
    bound = values_mask_bytes(model)
    if as_json:
        emit_json({"output": output, "bytes_before": model_path.stat().st_size, "bytes": report["bytes"],
                   "values_mask_bytes": bound, "packed": report["packed"]})  # fmt: skip
        return
    console().print(
        f"{human_size(model_path.stat().st_size)} -> {human_size(report['bytes'])} "
        f"({report['bytes'] / bound:.2f}x the values+mask size {human_size(bound)}); "
        f"{len(report['packed'])} weight(s) packed; wrote {output} (onnxprune unpack restores the .onnx)"
    )


@reports_errors
def unpack(
    package: Annotated[Path, typer.Argument(metavar="PACKAGE", help="a package written by onnxprune pack")],
    output: Annotated[Path, typer.Option("--output", "-o", help="the .onnx to write")],
    as_json: JsonOption = False,
) -> None:
    """Restore the ONNX model a package holds: the same graph, bit-identical weights (not the same bytes)."""
    from onnxprune.files import save_atomic
    from onnxprune.graph.storage import unpack as unpack_model

    if output.exists() and output.resolve() == package.resolve():
        raise ConfigError("output is the package itself; choose another -o")
    save_atomic(unpack_model(package), output)
    if as_json:
        emit_json({"output": output})
        return
    console().print(f"wrote {output}")
