"""The 91-level sweep 0.80:0.002:0.98 of a CIFAR-10 model on the 10,000 test images, against the naive way.

onnxprune: `onnxprune.measure.sweep.sweep` (global magnitude): data preprocessed once, weights ranked
once, each level's mask derived from the ranking, evaluation in torch on the held tensor.

Naive (what a torch tutorial does at each level): convert the ONNX model to torch again (a
fresh dense model), `torch.nn.utils.prune.global_unstructured(..., L1Unstructured, amount)`,
then evaluate the test set. Two variants, both measured:
- "naive, reading the images": evaluation reads the test images from the archive each level,
  as a DataLoader over an image folder does;
- "naive, images in memory": the images are decoded once; each level still converts, prunes
  from scratch and normalises every batch. This is the naive loop's lower bound.
The naive loops run on every `--naive-every`-th level to keep the benchmark short; their time
per level is the mean of those.

Usage:  .venv/bin/python benchmarks/sweep_speed.py [--naive-every 10]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.nn.utils import prune as torch_prune

import onnxprune
from onnxprune.measure.sweep import parse_levels, sweep
from onnxprune.workbench.convert import to_torch
from onnxprune.workbench.data import load_data, preprocess_for
from onnxprune.workbench.metrics import scores_to_metrics

SHARED = Path(__file__).resolve().parents[2] / "shared"
CIFAR = {"mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)}


def naive_level(model, test, level: float, batch: int = 256, reread: bool = False) -> float:
    if reread:
        test = load_data(SHARED / "data/cifar10/test.zip")
    module = to_torch(model).module.eval()
    parameters = [(m, "weight") for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    torch_prune.global_unstructured(parameters, pruning_method=torch_prune.L1Unstructured, amount=level)
    mean = torch.tensor(CIFAR["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR["std"]).view(1, 3, 1, 1)
    hits = 0
    with torch.no_grad():
        for start in range(0, len(test), batch):
            images = torch.from_numpy(test.images[start : start + batch]).permute(0, 3, 1, 2).float() / 255
            output = module((images - mean) / std).numpy()
            hits += scores_to_metrics(output, test.labels[start : start + batch], False)[0]
    return hits / len(test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--naive-every", type=int, default=10)
    args = parser.parse_args()
    model = onnxprune.load(SHARED / "models/pytorch/resnet_2b_cifar10.onnx")
    preprocess = preprocess_for(model, **CIFAR)
    test = load_data(SHARED / "data/cifar10/test.zip")
    levels = parse_levels("0.80:0.002:0.98")
    started = time.perf_counter()
    table = sweep(model, test, preprocess, levels, ["magnitude"], ["global"], max_layer_sparsity=0.999)
    ours = (time.perf_counter() - started) / len(levels)
    sampled = levels[:: args.naive_every]
    ours_accuracy = {row.sparsity: row.accuracy for row in table.rows}
    report = {
        "model": "resnet_2b_cifar10.onnx",
        "images": len(test),
        "levels": len(levels),
        "engine": table.extra["engine"],
        "onnxprune_seconds_per_level": round(ours, 3),
        "onnxprune_total_seconds": round(ours * len(levels), 1),
        "naive_levels_timed": len(sampled),
    }
    for name, reread in (("naive, reading the images", True), ("naive, images in memory", False)):
        started = time.perf_counter()
        accuracy = [naive_level(model, test, level, reread=reread) for level in sampled]
        seconds = (time.perf_counter() - started) / len(sampled)
        difference = max(abs(ours_accuracy[lv] - acc) for lv, acc in zip(sampled, accuracy, strict=True))
        report[name] = {"seconds_per_level": round(seconds, 3), "speedup": round(seconds / ours, 2)}
        report[name]["accuracy_max_difference"] = difference
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
