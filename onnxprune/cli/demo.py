"""The demo command: the pruning lab on the built-in data and model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from onnxprune.cli.common import (
    console,
    human_size,
    level_progress,
    old_spelling,
    print_error,
    reports_errors,
    training_progress,
)

DEMO_FOLDER = Path("onnxprune-demo")


@reports_errors
def demo(
    out_dir: Annotated[
        Path | None,
        typer.Option("--out-dir", "-o", help="folder for the demo's results, new or empty (default: onnxprune-demo)"),
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="a reduced run (small data, few levels): seconds")] = False,
    out: Annotated[Path | None, typer.Option("--out", hidden=True, help="old spelling of --out-dir")] = None,
) -> None:
    """Run the pruning lab end to end on the built-in spectrogram data and AlexNet-shaped model."""
    from onnxprune.demo.run import run_demo

    out = old_spelling(out, out_dir, "--out", "--out-dir", DEMO_FOLDER)

    with training_progress() as training, level_progress() as levels:

        def progress(event: dict) -> None:
            (levels if "row" in event else training)(event)

        try:
            summary = run_demo(out, quick=quick, say=lambda line: console().print(line), progress=progress)
        except KeyboardInterrupt:
            print_error(interrupted_line(out))
            raise typer.Exit(130) from None
    _print_demo(summary, out)


def interrupted_line(out: Path, shown: int = 6) -> str:
    """What an interrupted demo left in `out` (the steps that finished wrote their files), and what to do."""
    written = sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file()) if out.exists() else []
    if not written:
        return "interrupted; no output was written"
    listed = ", ".join(written[:shown]) + (f" and {len(written) - shown} more" if len(written) > shown else "")
    return (
        f"interrupted; {out} holds what finished ({listed}); the demo starts in an empty folder: "
        "delete it or give another --out-dir"
    )


def _print_demo(summary: dict, out: Path) -> None:
    layers = Table("layer", "sparsity")
    for name, value in summary["layer_sparsity"].items():
        layers.add_row(name, f"{value:.1%}")
    console().print(layers)
    comparison = Table("model", "latency (batch 1)", "file", "zipped")
    for name, row in summary["comparison"].items():
        comparison.add_row(
            name, f"{row['latency_ms']:.2f} ms", human_size(row["bytes"]), human_size(row["zipped_bytes"])
        )
    console().print(comparison)
    before = summary["pruned_top1_before_finetuning"]
    console().print(
        f"dense top-1 {summary['dense_top1']:.2%}; pruned to {summary['pruned_sparsity']:.1%}: "
        + (f"{before:.2%} before fine-tuning, " if before is not None else "")
        + f"{summary['pruned_top1']:.2%} after (top-1 on the {summary['test_samples']} test spectrograms); "
        f"{summary['seconds']:.0f} s"
    )
    console().print(
        f"""
Everything is in {out}/, and on one page in {summary["report"]}:
  accuracy_vs_sparsity.png   accuracy at each sparsity, global and per layer, with the dense line
  layer_sparsity.png         sparsity of each layer and block of the pruned model
  masks.png                  kept and pruned weights of every layer
  training.png               fine-tuning loss and accuracy
  sweep/results.{{json,csv,mat}}  the sweep's numbers (MATLAB: load('sweep/results.mat'))
  pruned/                    the pruned model ({Path(summary["pruned_model"]).name}), its checkpoint and results
  pruned_sparse_storage.onnx the pruned model stored as sparse initializers (smaller above ~67% sparsity)
  comparison.json            latency and sizes of dense and pruned in onnxruntime
  summary.json               all of the above in one file

Next: run the same on your own model and images:
  onnxprune sweep your_model.onnx --data your_images/ --scope layer,global
  onnxprune prune your_model.onnx --max-drop 0.01 --data your_images/ --finetune-epochs 3
  onnxprune prune your_model.onnx --method l1-filter --sparsity 0.4 -o smaller.onnx   (filters removed: faster)"""
    )
