"""`onnxprune demo`: the signal-processing pruning lab, end to end, on data and a model that ship.

1. generate the spectrogram data set (cached; `onnxprune.demo.spectrograms`),
2. load the AlexNet-shaped reference model exported the way MATLAB exports it,
3. evaluate it in onnxruntime,
4. sweep magnitude pruning (global and per layer) from 0 to 98%,
5. choose the highest sparsity within one point of the dense accuracy,
6. prune to it and fine-tune briefly (masks held),
7. report sparsity per layer, and compare dense and pruned in onnxruntime (latency, size),
8. write every figure and results file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from onnxprune import results
from onnxprune.demo import spectrograms
from onnxprune.errors import ConfigError
from onnxprune.graph.model import load
from onnxprune.measure.sweep import parse_levels, sweep, trade_off
from onnxprune.options import PruneOptions, ScheduleOptions, TrainOptions
from onnxprune.report import plots
from onnxprune.report.html import write_report
from onnxprune.workbench.data import load_data, preprocess_for
from onnxprune.workbench.evaluate import evaluate
from onnxprune.workflow.schedule import run

# package data: installed with onnxprune (models/alexnet_spectro.onnx in the source tree links to it)
DEMO_MODEL = Path(__file__).resolve().parent / "alexnet_spectro.onnx"
FULL = {"train_per_class": 300, "test_per_class": 50, "levels": "0:0.1:0.9,0.92:0.02:0.98", "epochs": 2}
QUICK = {"train_per_class": 40, "test_per_class": 10, "levels": "0:0.3:0.9", "epochs": 1}

Say = Callable[[str], None]


def run_demo(
    out: str | Path, quick: bool = False, say: Say | None = None, progress: Callable[[dict], None] | None = None
) -> dict:
    """Run the whole lab; returns a summary (also written to OUT/summary.json).

    Args:
        out: the folder for everything the demo writes (created; must be empty or absent).
        quick: a reduced run (small data, few levels, one short epoch) for tests.
        say: called with one line per step.
        progress: passed to the sweep and the fine-tuning (see their docs).
    """
    say = say or (lambda _line: None)
    settings = QUICK if quick else FULL
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty; choose another -o/--out-dir")
    if not DEMO_MODEL.exists():
        raise ConfigError(f"the demo model {DEMO_MODEL} is missing: reinstall onnxprune (pip install onnxprune)")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    say("1/8 generating the spectrogram data set (cached after the first run)")
    root = spectrograms.generate(train_per_class=settings["train_per_class"], test_per_class=settings["test_per_class"])
    model = load(DEMO_MODEL)
    preprocess = preprocess_for(model)
    train = load_data(root / "train", size=preprocess.image_size)
    test = load_data(root / "test", size=preprocess.image_size)

    say(f"2/8 loaded {DEMO_MODEL.name}: {model.producer}, opset {model.opset}, {len(model.layers)} prunable layers")
    dense = evaluate(model, test, preprocess)
    say(f"3/8 dense top-1 in onnxruntime: {dense.top1:.2%} on {dense.samples} test spectrograms")

    say("4/8 sweeping magnitude pruning, global and per layer")
    levels = parse_levels(settings["levels"])
    table = sweep(model, test, preprocess, levels, ["magnitude"], ["global", "layer"], progress=progress)
    choice = trade_off(table, 0.01, method="magnitude", scope="global")
    table.extra["trade_off"] = choice
    results.write(table, out / "sweep")
    plots.accuracy_vs_sparsity(
        [table], out / "accuracy_vs_sparsity.png", "Accuracy vs sparsity: AlexNet on spectrograms"
    )

    target = max(choice["sparsity"], levels[1] if len(levels) > 1 else 0.1)
    say(f"5/8 trade-off: {choice['sparsity']:.0%} stays within one point (top-1 {choice['accuracy']:.2%})")

    say(f"6/8 pruning to {target:.0%} and fine-tuning ({settings['epochs']} epoch(s), masks held)")
    training = TrainOptions(epochs=settings["epochs"], batch_size=64, lr=1e-4, weight_decay=0.0, augment=False)
    options = ScheduleOptions(PruneOptions(target, scope="global"), train=training)
    schedule = run(DEMO_MODEL, out / "pruned", options, train, test, preprocess, progress=progress)
    pruned = load(schedule.final_path)

    say("7/8 sparsity per layer, and dense vs pruned in onnxruntime")
    plots.layer_sparsity(pruned, out / "layer_sparsity.png")
    plots.mask(pruned, out / "masks.png")
    plots.training(json.loads((out / "pruned" / "results.json").read_text()), out / "training.png")
    comparison = compare(DEMO_MODEL, schedule.final_path, out)

    say("8/8 writing the summary")
    summary = {
        "data": str(root),
        "model": str(DEMO_MODEL),
        "dense_top1": dense.top1,
        "test_samples": dense.samples,  # every top-1 of the demo is measured on these
        "trade_off": choice,
        "pruned_model": str(schedule.final_path),
        "pruned_sparsity": schedule.rounds[-1].sparsity,
        "pruned_top1_before_finetuning": _accuracy_at(table, target),
        "pruned_top1": schedule.final_top1,
        "layer_sparsity": schedule.rounds[-1].layer_sparsity,
        "comparison": comparison,
        "seconds": time.perf_counter() - started,
        "files": sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    summary["report"] = str(write_report(out))
    return summary


def _accuracy_at(table: results.ResultTable, sparsity: float) -> float | None:
    rows = [r for r in table.rows if r.scope == "global" and abs(r.sparsity - sparsity) < 1e-9]
    return rows[0].accuracy if rows else None


def compare(dense_path: Path, pruned_path: Path, out: Path, runs: int = 200) -> dict:
    """Latency (median, batch 1, one session at a time) and sizes (raw, zipped, sparse) of both models."""
    from onnxprune.graph.storage import write_model

    sparse_path = out / "pruned_sparse_storage.onnx"
    pruned = load(pruned_path)
    write_model(sparse_path, pruned.proto, {}, [layer.weight for layer in pruned.layers])
    from onnxprune.measure.bench import bench

    labels = ("dense", "pruned", "pruned, sparse storage")
    # the one latency loop: models take turns, one session computing at a time
    measured = bench([dense_path, pruned_path, sparse_path], batches=[1], runs=runs)
    rows = {
        label: {"latency_ms": result.latency_ms["1"]["median"], "bytes": result.bytes,
                "zipped_bytes": result.zipped_bytes}
        for label, result in zip(labels, measured, strict=True)
    }  # fmt: skip
    (out / "comparison.json").write_text(json.dumps(rows, indent=2))
    return rows
