"""The issue-3 result: OMP and IMP on MATLAB's nln_logsig_200_100_50 (MNIST, 96.0% listed).

Trains on the first 8,000 MNIST test images and reports top-1 on the other 2,000, in
onnxruntime, for one-shot (OMP) and iterative (IMP, 3 rounds) magnitude pruning at 80% and 95%,
with and without fine-tuning.

Usage:  .venv/bin/python benchmarks/mnist_omp_imp.py [--epochs 5] [--lr 0.001] [--scope global]
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


MLP = SHARED / "models/matlab/nln_logsig_200_100_50.onnx"


def mlp_and_mnist():
    """The MATLAB MLP, its preprocessing, and MNIST split as issue 3 measured it: the first 8,000
    test images to fine-tune on, the other 2,000 to measure (MNIST's file is not grouped by class)."""
    model = onnxprune.load(MLP)
    mnist = load_data(SHARED / "data/mnist")
    return model, preprocess_for(model), mnist.subset(np.arange(8000)), mnist.subset(np.arange(8000, 10000))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.0001)
    parser.add_argument("--scope", default="layer")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    model_path = MLP
    model, preprocess, train, test = mlp_and_mnist()
    dense = evaluate(model, test, preprocess)
    print(f"dense: top-1 {dense.top1:.4f} on the 2,000 held-out images")
    rows = []
    for target in (0.8, 0.95):
        for iterations in (1, 3):
            for epochs in (0, args.epochs):
                options = ScheduleOptions(
                    PruneOptions(target, scope=args.scope),
                    iterations=iterations,
                    train=TrainOptions(epochs=epochs, batch_size=64, lr=args.lr, weight_decay=0.0, augment=False),
                )
                started = time.perf_counter()
                with tempfile.TemporaryDirectory() as folder:
                    result = run(model_path, Path(folder) / "run", options, train, test, preprocess)
                row = {
                    "method": options.name,
                    "target": target,
                    "rounds": iterations,
                    "epochs_per_round": epochs,
                    "sparsity": round(result.rounds[-1].sparsity, 4),
                    "top1": result.final_top1,
                    "seconds": round(time.perf_counter() - started, 1),
                }
                rows.append(row)
                print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps({"dense_top1": dense.top1, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
