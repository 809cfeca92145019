"""Every method on the VGG13-BN reference model (CIFAR-10) with the same fine-tuning budget.

Two phases, so that the training can run on a GPU machine and the measuring on this one:

- `train`: each method prunes the reference model once to its target, then the result is
  fine-tuned `--epochs` epochs (SGD, `--lr`, cosine, flip + crop) on the CIFAR-10 training images
  less a seeded, stratified 10% validation split that picks the kept epoch (the test set is never
  seen in training). Network Slimming first trains `--epochs` epochs with the L1 penalty
  `--bn-l1` on the BatchNorm scales. The hybrid chain (l1-filter 30% then magnitude 80%) gets
  the same fine-tuning. Writes `<method>.onnx`, its run's `<method>.results.json` (per epoch:
  loss, accuracy, BatchNorm scale sparsity) and `train_record.json` into `--models`.
- `measure`: top-1 in onnxruntime on the 10,000 test images; sparsity on one axis for all: the
  fraction of prunable-layer parameters gone or zero; MACs; latency in onnxruntime at batch 32,
  every model in one round-robin `onnxprune.measure.bench` run. Writes the Pareto figure and prints the
  markdown table.
- `all` (the default): both, here.

Usage:  .venv/bin/python benchmarks/compare_methods.py [all|train|measure] --models DIR \
            [--epochs 2] [--train 50000] [--lr 0.01] [--bn-l1 1e-3] [--only slimming,...] [--resume]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

import onnxprune  # noqa: E402
from onnxprune.measure import bench  # noqa: E402
from onnxprune.options import (  # noqa: E402
    PruneOptions,
    ScheduleOptions,
    TrainOptions,  # noqa: E402
    parse_recipe,  # noqa: E402
)
from onnxprune.pruning.oneshot import prune_chain  # noqa: E402
from onnxprune.report import plots  # noqa: E402
from onnxprune.workbench.data import load_data, preprocess_for, split  # noqa: E402
from onnxprune.workbench.evaluate import evaluate  # noqa: E402
from onnxprune.workbench.train import finetune, pick_device  # noqa: E402
from onnxprune.workflow.schedule import run, write_checkpoint  # noqa: E402

REFERENCE = ROOT / "models" / "vgg13_bn_w025_cifar10.onnx"
CIFAR = {"mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)}
RUNS = [
    ("slimming", 0.5, "global", {}),
    ("magnitude", 0.8, "global", {}),
    ("synflow", 0.8, "global", {}),
    ("l1-filter", 0.5, "layer", {}),
    ("l2-filter", 0.5, "layer", {}),
    ("taylor", 0.5, "global", {"batches_per_round": 5, "max_per_round": 16}),
    ("sss", 0.5, "global", {"sss_gamma": 1e-2, "max_steps": 150}),
    ("greedy", 0.3, "global", {"candidates": 8, "val_samples": 128, "finetune_every": 16}),
]
HYBRID = ("hybrid", "l1-filter:0.3,magnitude:0.8", "l1-filter 30% + magnitude 80%")


def train_phase(args: argparse.Namespace) -> None:
    """Prune and fine-tune every method; write the models and what training measured."""
    args.models.mkdir(parents=True, exist_ok=True)
    dense = onnxprune.load(REFERENCE)
    preprocess = preprocess_for(dense, **CIFAR)
    every = load_data(args.data)
    every = every.subset(np.random.default_rng(0).permutation(len(every))[: args.train])
    train, val = split(every, 0.1, seed=0)
    training = TrainOptions(epochs=args.epochs, batch_size=128, lr=args.lr, weight_decay=5e-4)
    record = {"epochs": args.epochs, "lr": args.lr, "bn_l1": args.bn_l1, "train_images": len(train),
              "val_images": len(val), "device": _device_name(), "runs": []}  # fmt: skip
    wanted = set(args.only.split(",")) if args.only else {name for name, *_ in RUNS} | {HYBRID[0]}
    if args.resume and (args.models / "train_record.json").exists():
        earlier = json.loads((args.models / "train_record.json").read_text())
        if any(earlier[key] != record[key] for key in ("epochs", "lr", "bn_l1", "train_images")):
            sys.exit(f"--resume: {args.models} holds a run with other settings; use a new --models folder")
        record["runs"] = [{"device": earlier["device"], **row} for row in earlier["runs"]]
        done = {row["name"] for row in earlier["runs"]}
        wanted -= done
    with tempfile.TemporaryDirectory() as folder:
        for method, target, scope, options in RUNS:
            if method not in wanted:
                continue
            started = time.perf_counter()
            extra = {"bn_l1": args.bn_l1, "sparsity_epochs": args.epochs} if method == "slimming" else {}
            prune_options = PruneOptions(target, method=method, scope=scope, settings=options)
            settings = ScheduleOptions(prune_options, train=training, **extra)
            result = run(REFERENCE, Path(folder) / method, settings, train, val, preprocess)
            (args.models / f"{method}.onnx").write_bytes(result.final_path.read_bytes())
            # per epoch: training and validation accuracy, BatchNorm scale sparsity (slimming)
            (args.models / f"{method}.results.json").write_bytes((result.folder / "results.json").read_bytes())
            _log(record, args.models, {"name": method, "label": f"{method} {target:.0%}", "val_top1": result.final_top1,
                                       "seconds": time.perf_counter() - started})  # fmt: skip
    if HYBRID[0] not in wanted:
        return
    started = time.perf_counter()
    chain = prune_chain(dense, parse_recipe(HYBRID[1]), keep_masks=True)
    trained = finetune(chain.torch_model, train, preprocess, training, val)
    write_checkpoint(chain.source, chain.torch_model, args.models / f"{HYBRID[0]}.onnx")
    _log(record, args.models, {"name": HYBRID[0], "label": HYBRID[2], "val_top1": trained.best.val_top1,
                               "seconds": time.perf_counter() - started})  # fmt: skip


def _device_name() -> str:
    device = pick_device(None)
    if device.type == "cuda":
        import torch

        return f"cuda ({torch.cuda.get_device_name(0)})"
    return "cpu"


def _log(record: dict, folder: Path, row: dict) -> None:
    """Keep the record on disk after every method, so a cut-off run still tells what it finished."""
    record["runs"].append({**row, "device": record["device"]})
    (folder / "train_record.json").write_text(json.dumps(record, indent=2))
    print(json.dumps(row), flush=True)


def measure_phase(args: argparse.Namespace) -> None:
    """Test accuracy, sparsity, MACs and latency of every trained model; the figure and the table."""
    record = json.loads((args.models / "train_record.json").read_text())
    dense = onnxprune.load(REFERENCE)
    preprocess = preprocess_for(dense, **CIFAR)
    test = load_data(args.test)
    trained = [{"device": record["device"], **run_row} for run_row in record["runs"]]  # older records: one device
    rows = [{"label": "dense", "path": REFERENCE, "seconds": 0.0, "device": "-"}]
    rows += [{**run_row, "path": args.models / f"{run_row['name']}.onnx"} for run_row in trained]
    dense_params = dense.layer_total("numel")
    measured = bench.bench([row["path"] for row in rows], [32], runs=args.runs)
    for row, timing in zip(rows, measured, strict=True):
        model = onnxprune.load(row["path"])
        kept = model.layer_nonzero()
        row.update(top1=evaluate(model, test, preprocess).top1, sparsity=1 - kept / dense_params, params=kept,
                   macs=model.layer_total("macs"), ms_b32=timing.latency_ms["32"]["median"])  # fmt: skip
        row["score"] = (row["top1"] + row["sparsity"]) / 2
    points = [{"sparsity": r["sparsity"], "accuracy": r["top1"], "label": r["label"]} for r in rows]
    title = f"VGG13-BN x0.25 on CIFAR-10: every method, {record['epochs']} fine-tuning epochs each"
    plots.pareto(points, args.out, title)
    devices = ", ".join(sorted({row["device"] for row in trained}))
    print(f"training: {record['train_images']} images, {record['epochs']} epochs, lr {record['lr']}, "
          f"lambda {record['bn_l1']}, on {devices}")  # fmt: skip
    header = ["method", "parameters kept", "sparsity (params)", "MACs", "latency b32", "val top-1", "test top-1"]
    header += ["score", "train s", "trained on"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        val = f"{r['val_top1']:.2%}" if r.get("val_top1") is not None else "-"
        cells = [r["label"], f"{r['params']:,}", f"{r['sparsity']:.1%}", f"{r['macs'] / 1e6:.2f} M"]
        cells += [f"{r['ms_b32']:.2f} ms", val, f"{r['top1']:.2%}", f"{r['score']:.3f}", f"{r['seconds']:.0f}"]
        cells.append(r["device"])
        print("| " + " | ".join(cells) + " |")
    print(f"wrote {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", nargs="?", choices=("all", "train", "measure"), default="all")
    parser.add_argument("--models", type=Path, help="where the trained models go (default: a temporary folder)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train", type=int, default=50000, help="CIFAR-10 training images used (before the split)")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--bn-l1", type=float, default=1e-3)
    parser.add_argument("--only", help="comma-separated method names to train (default: all)")
    parser.add_argument("--resume", action="store_true", help="train only the methods --models does not hold yet")
    parser.add_argument("--runs", type=int, default=20, help="timed calls per model in the latency run")
    parser.add_argument("--data", type=Path, default=SHARED / "data/cifar10/train.zip")
    parser.add_argument("--test", type=Path, default=SHARED / "data/cifar10/test.zip")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "pareto_methods.png")
    args = parser.parse_args()
    if args.phase == "measure" and args.models is None:
        parser.error("measure needs --models, the folder the train phase wrote")
    with tempfile.TemporaryDirectory() as scratch:
        args.models = args.models or Path(scratch)
        if args.phase in ("all", "train"):
            train_phase(args)
        if args.phase in ("all", "measure"):
            measure_phase(args)


if __name__ == "__main__":
    main()
