"""Network Slimming's sparsity training with three lambdas, and the histograms of BatchNorm scales.

Fine-tunes the VGG13-BN reference model `--epochs` epochs on `--train` CIFAR-10 images with the L1
penalty on BatchNorm scales at each lambda, writes each model, and overlays their |gamma|
histograms (`onnxprune plot gamma` draws the same from the files).

Usage:  .venv/bin/python benchmarks/slimming_lambdas.py [--epochs 1] [--train 10000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

import onnxprune  # noqa: E402
from onnxprune.options import TrainOptions  # noqa: E402
from onnxprune.report import plots  # noqa: E402
from onnxprune.workbench.convert import to_torch  # noqa: E402
from onnxprune.workbench.data import load_data, preprocess_for  # noqa: E402
from onnxprune.workbench.train import finetune  # noqa: E402
from onnxprune.workflow.schedule import write_checkpoint  # noqa: E402

CIFAR = {"mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train", type=int, default=10000)
    parser.add_argument("--lambdas", default="1e-4,1e-3,1e-2")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "slimming_gamma.png")
    args = parser.parse_args()
    path = ROOT / "models" / "vgg13_bn_w025_cifar10.onnx"
    model = onnxprune.load(path)
    preprocess = preprocess_for(model, **CIFAR)
    train = load_data(SHARED / "data/cifar10/train.zip")
    train = train.subset(np.random.default_rng(0).permutation(len(train))[: args.train])
    models, labels = [model], ["dense (no penalty)"]
    with tempfile.TemporaryDirectory() as folder:
        for strength in (float(x) for x in args.lambdas.split(",")):
            converted = to_torch(model)
            options = TrainOptions(epochs=args.epochs, batch_size=128, lr=0.01, weight_decay=0.0, bn_l1=strength)
            history = finetune(converted, train, preprocess, options)
            target = Path(folder) / f"slim_{strength:g}.onnx"
            write_checkpoint(model, converted, target)
            models.append(onnxprune.load(target))
            labels.append(f"lambda {strength:g}")
            print(json.dumps({"lambda": strength, "scale_sparsity": history.history[-1].scale_sparsity,
                              "train_top1": history.history[-1].train_top1}), flush=True)  # fmt: skip
        plots.batchnorm_scales(models, args.out, labels)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
