"""VGG13 with BatchNorm for CIFAR-10 (32x32): the standard configuration and narrower variants.

Train:  .venv/bin/python models/vgg.py --width 0.25 --epochs 40 --out models/vgg13_bn_w025_cifar10.onnx
(the narrow variant trains on a laptop CPU; --width 1 is the standard VGG13-BN, for a GPU).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
VGG13 = [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def vgg13_bn(width: float = 1.0, classes: int = 10) -> nn.Sequential:
    """VGG13 with BatchNorm after every convolution; `width` scales every layer's channels."""
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG13:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            out = max(8, int(round(item * width)))
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
    layers += [nn.Flatten(), nn.Dropout(0.3), nn.Linear(channels, classes)]
    return nn.Sequential(*layers)


def random_crop_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-image random 4-pixel-padded crop and horizontal flip (NCHW)."""
    count, _, height, width = images.shape
    padded = F.pad(images, (4, 4, 4, 4), mode="reflect")
    dy = torch.randint(0, 9, (count,), generator=generator)
    dx = torch.randint(0, 9, (count,), generator=generator)
    channels = images.shape[1]
    rows = (dy[:, None] + torch.arange(height)[None, :])[:, None, :, None].expand(count, channels, height, width + 8)
    cropped = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(width)[None, :])[:, None, None, :].expand(count, images.shape[1], height, width)
    cropped = cropped.gather(3, cols)
    flip = torch.rand(count, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], cropped.flip(-1), cropped)


def train(width: float, epochs: int, batch: int, lr: float, seed: int, limit: int | None) -> tuple[nn.Module, dict]:
    """Train on ../shared/data/cifar10/train.zip; returns the model and its record."""
    sys.path.insert(0, str(ROOT))
    from onnxprune.workbench.data import load_data

    shared = ROOT.parent / "shared" / "data" / "cifar10"
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    train_set = load_data(shared / "train.zip")
    test_set = load_data(shared / "test.zip")
    if limit:
        train_set = train_set.subset(np.arange(limit))

    def tensor(dataset):
        images = torch.from_numpy(dataset.images).permute(0, 3, 1, 2).float() / 255
        mean, std = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
        return (images - mean) / std, torch.from_numpy(dataset.labels)

    x_train, y_train = tensor(train_set)
    x_test, y_test = tensor(test_set)
    model = vgg13_bn(width)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = epochs * math.ceil(len(y_train) / batch)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.15)
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(y_train), generator=generator)
        started, seen, correct, loss_sum = time.perf_counter(), 0, 0, 0.0
        for start in range(0, len(order), batch):
            index = order[start : start + batch]
            images = random_crop_flip(x_train[index], generator)
            logits = model(images)
            loss = F.cross_entropy(logits, y_train[index], label_smoothing=0.05)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            seen += len(index)
            correct += int((logits.argmax(1) == y_train[index]).sum())
            loss_sum += float(loss.detach()) * len(index)
        accuracy = evaluate(model, x_test, y_test)
        history.append({"epoch": epoch, "loss": loss_sum / seen, "train_top1": correct / seen, "test_top1": accuracy,
                        "seconds": time.perf_counter() - started})  # fmt: skip
        print(json.dumps(history[-1]), flush=True)
    return model.eval(), {"history": history, "test_top1": history[-1]["test_top1"]}


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy on prepared tensors."""
    model.eval()
    hits = 0
    with torch.no_grad():
        for start in range(0, len(labels), 1000):
            hits += int((model(images[start : start + 1000]).argmax(1) == labels[start : start + 1000]).sum())
    return hits / len(labels)


def export(model: nn.Module, path: Path) -> None:
    """ONNX with BatchNormalization kept as nodes (TorchScript exporter, PRESERVE mode), symbolic batch."""
    torch.onnx.export(
        model.eval(), (torch.randn(1, 3, 32, 32),), str(path), dynamo=False, opset_version=13,
        training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
        input_names=["images"], output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
    )  # fmt: skip


def main() -> None:
    """Train, export, write the model card's numbers beside the ONNX file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    model, record = train(args.width, args.epochs, args.batch, args.lr, args.seed, args.limit)
    export(model, args.out)
    record.update(vars(args) | {"out": str(args.out), "date": time.strftime("%Y-%m-%d")})
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2))
    print(f"test top-1 {record['test_top1']:.4f}; wrote {args.out}")


if __name__ == "__main__":
    main()
