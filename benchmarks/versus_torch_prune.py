"""onnxprune against torch.nn.utils.prune at the same budget: 80% unstructured on the VGG13 reference.

Side by side in one run, on the same converted torch model and the same fine-tuning (1 epoch on
the 50,000 CIFAR-10 training images, SGD lr 0.01 momentum 0.9 weight decay 5e-4, cosine, batch
128, flip + crop, seed 0), top-1 on the 10,000 test images:

- torch.nn.utils.prune: `global_unstructured(..., L1Unstructured, amount=0.8)` over every
  prunable layer, what a torch user writes;
- onnxprune `--scope global` (magnitude, the collapse guard);
- onnxprune `--scope lamp`;
- onnxprune `--scope lamp` with distillation from the dense model (weight 0.5, T 4).

Usage:  .venv/bin/python benchmarks/versus_torch_prune.py [--epochs 1] [--train 50000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from torch.nn.utils import prune as torch_prune

import onnxprune
from onnxprune.options import TrainOptions
from onnxprune.workbench.convert import to_torch
from onnxprune.workbench.data import load_data, preprocess_for, split
from onnxprune.workbench.evaluate import evaluate
from onnxprune.workbench.train import finetune, logits_module

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFERENCE = ROOT / "models" / "vgg13_bn_w025_cifar10.onnx"
CIFAR = {"mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)}
TARGET = 0.8


def torch_prune_global(model):
    """What a torch user writes: one global L1 threshold over the layers' weights."""
    converted = to_torch(model)
    parameters = [(entry.module, "weight") for entry in converted.params.values()]
    torch_prune.global_unstructured(parameters, pruning_method=torch_prune.L1Unstructured, amount=TARGET)
    return converted


def onnxprune_scope(model, scope):
    """onnxprune's prune, masks kept for fine-tuning."""
    return onnxprune.prune(model, TARGET, scope=scope, keep_masks=True).torch_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train", type=int, default=50000, help="training images (a seeded stratified sample)")
    args = parser.parse_args()
    dense = onnxprune.load(REFERENCE)
    preprocess = preprocess_for(dense, **CIFAR)
    train = load_data(SHARED / "data/cifar10/train.zip")
    if args.train < len(train):
        _, train = split(train, args.train / len(train), seed=0)  # stratified: every class alike
    test = load_data(SHARED / "data/cifar10/test.zip")
    print(json.dumps({"dense_top1": evaluate(dense, test, preprocess).top1, "train_images": len(train)}), flush=True)
    teacher = logits_module(to_torch(dense), dense.final_softmax)
    rows = [
        ("torch.nn.utils.prune global L1", lambda: torch_prune_global(dense), 0.0),
        ("onnxprune --scope global", lambda: onnxprune_scope(dense, "global"), 0.0),
        ("onnxprune --scope lamp", lambda: onnxprune_scope(dense, "lamp"), 0.0),
        ("onnxprune --scope lamp --distill-weight 0.5", lambda: onnxprune_scope(dense, "lamp"), 0.5),
    ]
    for label, make, distill in rows:
        started = time.perf_counter()
        converted = make()
        before = evaluate(dense, test, preprocess, engine="torch", torch_module=converted.module).top1
        weights = [entry.parameter.detach().numpy() for entry in converted.params.values()]
        sparsity = sum(int(np.sum(w == 0)) for w in weights) / sum(w.size for w in weights)
        options = TrainOptions(epochs=args.epochs, batch_size=128, lr=0.01, momentum=0.9, weight_decay=5e-4, seed=0,
                               distill_weight=distill)  # fmt: skip
        finetune(converted, train, preprocess, options, teacher=teacher if distill else None)
        after = evaluate(dense, test, preprocess, engine="torch", torch_module=converted.module).top1
        print(json.dumps({"method": label, "sparsity": round(sparsity, 4), "top1_before": before, "top1_after": after,
                          "seconds": round(time.perf_counter() - started, 1)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
