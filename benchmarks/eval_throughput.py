"""Evaluation throughput on the CIFAR-10 test set: onnxruntime vs torch, side by side.

Both engines run the same model on the same preprocessed images (preprocessing is timed
inside both). Alternating runs; the median of --repeats counts.

Usage:  .venv/bin/python benchmarks/eval_throughput.py [--repeats 3] [--batch 256]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import onnxprune
from onnxprune.workbench.convert import to_torch
from onnxprune.workbench.data import load_data, preprocess_for
from onnxprune.workbench.evaluate import evaluate

SHARED = Path(__file__).resolve().parents[2] / "shared"
CIFAR = {"mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)}
MODELS = ("pytorch/resnet_2b_cifar10.onnx", "pytorch/oval21_cifar_base.onnx")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    test = load_data(SHARED / "data/cifar10/test.zip")
    report = []
    for name in MODELS:
        model = onnxprune.load(SHARED / "models" / name)
        preprocess = preprocess_for(model, **CIFAR)
        module = to_torch(model).module
        rates = {"onnxruntime": [], "torch": []}
        accuracy = {}
        for _ in range(args.repeats):
            for engine in rates:
                result = evaluate(model, test, preprocess, engine=engine, batch_size=args.batch, torch_module=module)
                rates[engine].append(result.samples / result.seconds)
                accuracy[engine] = result.top1
        medians = {engine: statistics.median(values) for engine, values in rates.items()}
        report.append(
            {
                "model": name,
                "images": len(test),
                "images_per_second": {k: round(v) for k, v in medians.items()},
                "onnxruntime_over_torch": round(medians["onnxruntime"] / medians["torch"], 2),
                "top1": accuracy,
            }
        )
        print(json.dumps(report[-1]))


if __name__ == "__main__":
    main()
