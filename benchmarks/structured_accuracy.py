"""Accuracy after fine-tuning of l1-filter, l2-filter and taylor at 40% on a CIFAR-10 model.

Model: ../shared/models/pytorch/resnet_2b_cifar10.onnx (a residual CIFAR-10 network trained by
others; the project's own CIFAR-10 reference model comes with a later version). Each method
removes 40% of the removable filters and neurons (one-shot), the compacted model is fine-tuned
with the same budget, and top-1 is measured in onnxruntime on the 10,000 test images. The dense
model fine-tuned with the same budget is the reference.

Usage:  .venv/bin/python benchmarks/structured_accuracy.py [--train 20000] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import onnxprune
from onnxprune.options import PruneOptions, ScheduleOptions, TrainOptions
from onnxprune.workbench.data import load_data, preprocess_for
from onnxprune.workbench.evaluate import evaluate
from onnxprune.workflow.schedule import run

SHARED = Path(__file__).resolve().parents[2] / "shared"
CIFAR = {"mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--sparsity", type=float, default=0.4)
    args = parser.parse_args()
    model_path = SHARED / "models/pytorch/resnet_2b_cifar10.onnx"
    model = onnxprune.load(model_path)
    preprocess = preprocess_for(model, **CIFAR)
    train = load_data(SHARED / "data/cifar10/train.zip")
    train = train.subset(np.random.default_rng(0).permutation(len(train))[: args.train])
    test = load_data(SHARED / "data/cifar10/test.zip")
    dense = evaluate(model, test, preprocess)
    print(json.dumps({"model": "dense, as published", "top1": dense.top1}))
    training = TrainOptions(epochs=args.epochs, batch_size=128, lr=0.01, weight_decay=5e-4)
    for method, sparsity in (
        ("magnitude", 0.0),
        ("l1-filter", args.sparsity),
        ("l2-filter", args.sparsity),
        ("taylor", args.sparsity),
    ):
        options = ScheduleOptions(
            PruneOptions(sparsity, method=method, settings={"batches_per_round": 10}), train=training
        )
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            result = run(model_path, Path(folder) / "run", options, train, test, preprocess)
            final = onnxprune.load(result.final_path)
            params = sum(layer.numel for layer in final.layers) / sum(layer.numel for layer in model.layers)
            macs = sum(layer.macs for layer in final.layers) / sum(layer.macs for layer in model.layers)
        label = "dense, fine-tuned with the same budget" if sparsity == 0 else method
        row = {"model": label, "filters_removed": round(result.rounds[-1].sparsity, 3), "top1": result.final_top1}
        row.update(params_kept=round(params, 3), macs_kept=round(macs, 3))
        print(json.dumps({**row, "seconds": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()
