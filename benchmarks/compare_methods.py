"""Every method on the VGG13-BN reference model (CIFAR-10) with the same fine-tuning budget.

Each method prunes once to its target, then the result is fine-tuned `--epochs` epochs on
`--train` CIFAR-10 training images (SGD, lr 0.01, cosine, flip + crop); slimming first trains
`--epochs` epochs with the L1 penalty on BatchNorm scales. Top-1 in onnxruntime on the 10,000
test images; sparsity on a common axis: the fraction of prunable-layer parameters that are gone
or zero. Latency: onnxruntime, batch 32, all models in one `onnxprune.bench` run. Writes the
Pareto figure and a markdown table.

Usage:  .venv/bin/python benchmarks/compare_methods.py [--epochs 2] [--train 20000]
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
from onnxprune import bench, plots  # noqa: E402
from onnxprune.data import load_data, preprocess_for  # noqa: E402
from onnxprune.evaluate import evaluate  # noqa: E402
from onnxprune.pruning import parse_recipe, prune_chain  # noqa: E402
from onnxprune.schedule import ScheduleOptions, run  # noqa: E402
from onnxprune.train import TrainOptions, finetune  # noqa: E402

CIFAR = {"mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)}
RUNS = [
    ("magnitude", 0.8, "global", {}),
    ("synflow", 0.8, "global", {}),
    ("l1-filter", 0.5, "layer", {}),
    ("l2-filter", 0.5, "layer", {}),
    ("taylor", 0.5, "global", {"batches_per_round": 5, "max_per_round": 16}),
    ("slimming", 0.5, "global", {}),
    ("sss", 0.5, "global", {"sss_gamma": 1e-2, "max_steps": 150}),
    ("greedy", 0.3, "global", {"candidates": 8, "val_samples": 128, "finetune_every": 16}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train", type=int, default=20000)
    parser.add_argument("--bn-l1", type=float, default=1e-3)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "pareto_methods.png")
    args = parser.parse_args()
    path = ROOT / "models" / "vgg13_bn_w025_cifar10.onnx"
    dense = onnxprune.load(path)
    preprocess = preprocess_for(dense, **CIFAR)
    train = load_data(SHARED / "data/cifar10/train.zip")
    train = train.subset(np.random.default_rng(0).permutation(len(train))[: args.train])
    test = load_data(SHARED / "data/cifar10/test.zip")
    training = TrainOptions(epochs=args.epochs, batch_size=128, lr=0.01, weight_decay=5e-4)
    dense_params = dense.layer_total("numel")
    rows, files = [], {"dense": path}
    rows.append({"method": "dense", "target": 0.0, "top1": evaluate(dense, test, preprocess).top1, "seconds": 0.0})
    with tempfile.TemporaryDirectory() as folder:
        for method, target, scope, options in RUNS:
            started = time.perf_counter()
            extra = {"bn_l1": args.bn_l1, "sparsity_epochs": args.epochs} if method == "slimming" else {}
            settings = ScheduleOptions(target=target, method=method, scope=scope, train=training,
                                       method_options=options, **extra)  # fmt: skip
            result = run(path, Path(folder) / method, settings, train, test, preprocess)
            files[method] = result.final_path
            rows.append({"method": f"{method} {target:.0%}", "target": target, "top1": result.final_top1,
                         "seconds": time.perf_counter() - started})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
        started = time.perf_counter()
        chain = prune_chain(dense, parse_recipe("l1-filter:0.3,magnitude:0.8"), keep_masks=True)
        finetune(chain.torch_model, train, preprocess, training, test)
        hybrid = Path(folder) / "hybrid.onnx"
        from onnxprune.schedule import write_checkpoint

        write_checkpoint(chain.source, chain.torch_model, hybrid)
        files["hybrid"] = hybrid
        rows.append({"method": "l1-filter 30% + magnitude 80%", "target": None,
                     "top1": evaluate(onnxprune.load(hybrid), test, preprocess).top1,
                     "seconds": time.perf_counter() - started})  # fmt: skip
        measured = bench.bench(list(files.values()), [32], runs=20)
        for row, result in zip(rows, measured, strict=True):
            model = onnxprune.load(result.path)
            kept = sum(int(np.count_nonzero(model.weight_array(layer))) for layer in model.layers)
            row.update(
                sparsity=1 - kept / dense_params,
                params=kept,
                macs=model.layer_total("macs"),
                ms_b32=result.latency_ms["32"]["median"],
            )
            row["score"] = (row["top1"] + row["sparsity"]) / 2
    points = [{"sparsity": r["sparsity"], "accuracy": r["top1"], "label": r["method"]} for r in rows]
    plots.pareto(points, args.out, "VGG13-BN x0.25 on CIFAR-10: every method, same fine-tuning budget")
    print("| method | parameters kept | sparsity (params) | MACs | latency b32 | top-1 | score | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [r["method"], f"{r['params']:,}", f"{r['sparsity']:.1%}", f"{r['macs'] / 1e6:.2f} M"]
        cells += [f"{r['ms_b32']:.2f} ms", f"{r['top1']:.2%}", f"{r['score']:.3f}", f"{r['seconds']:.0f}"]
        print("| " + " | ".join(cells) + " |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
