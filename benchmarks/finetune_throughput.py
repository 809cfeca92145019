"""Fine-tuning throughput of `onnxprune.workbench.train.finetune` against a plain torch loop, side by side.

Same model (../shared/models/pytorch/resnet_2b_cifar10.onnx converted by onnx2torch), same
batch size, same CIFAR-10 images, same optimizer. onnxprune's loop adds the pruning masks
(torch.nn.utils.prune hooks), the cosine schedule, progress accounting and (optionally)
augmentation. Runs alternate to share the machine's noise; the median epoch counts.

Usage:  .venv/bin/python benchmarks/finetune_throughput.py [--images 4096] [--batch 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import onnxprune
from onnxprune.options import TrainOptions
from onnxprune.workbench.convert import to_torch
from onnxprune.workbench.data import load_data, preprocess_for
from onnxprune.workbench.train import finetune

SHARED = Path(__file__).resolve().parents[2] / "shared"
CIFAR = {"mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)}


def plain_epoch(module, inputs, labels, batch) -> float:
    """Images per second of the textbook loop."""
    optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    module.train()
    order = torch.randperm(inputs.shape[0])
    started = time.perf_counter()
    for start in range(0, inputs.shape[0], batch):
        index = order[start : start + batch]
        loss = F.cross_entropy(module(inputs[index]), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return inputs.shape[0] / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)

    model = onnxprune.load(SHARED / "models/pytorch/resnet_2b_cifar10.onnx")
    preprocess = preprocess_for(model, **CIFAR)
    data = load_data(SHARED / "data/cifar10/train.zip")
    data = data.subset(np.random.default_rng(0).permutation(len(data))[: args.images])
    inputs, labels = torch.from_numpy(preprocess(data)), torch.from_numpy(data.labels)

    pruned = onnxprune.prune(model, 0.5)  # masks attached by torch.nn.utils.prune
    plain_module = to_torch(model).module
    rates = {"onnxprune (masked, no augmentation)": [], "onnxprune (masked, flip + crop)": [], "plain torch loop": []}
    for _ in range(args.repeats):
        for augment in (False, True):
            options = TrainOptions(epochs=1, batch_size=args.batch, augment=augment, device="cpu")
            record = finetune(pruned.torch_model, data, preprocess, options).history[0]
            name = "onnxprune (masked, flip + crop)" if augment else "onnxprune (masked, no augmentation)"
            rates[name].append(record.images_per_second)
        rates["plain torch loop"].append(plain_epoch(plain_module, inputs, labels, args.batch))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    plain = medians["plain torch loop"]
    report = {
        "model": "resnet_2b_cifar10.onnx",
        "images": args.images,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "images_per_second": {name: round(rate, 1) for name, rate in medians.items()},
        "ratio_to_plain": {name: round(rate / plain, 3) for name, rate in medians.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
