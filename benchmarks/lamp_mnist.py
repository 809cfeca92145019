"""Global magnitude vs LAMP on the MATLAB lab's MLP: the allocation of sparsity across layers.

`nln_logsig_200_100_50.onnx` (MATLAB, sigmoid MLP fed raw 0-255 pixels): fine-tuning on the
first 8,000 MNIST test images, top-1 on the other 2,000 in onnxruntime. 90% of the prunable
weights, one-shot without fine-tuning and IMP (3 rounds x 3 epochs, the CLI's default
fine-tuning for raw-pixel inputs: SGD lr 1e-4), with `--scope global` and `--scope lamp`;
the first layer's sparsity shows where global magnitude puts its zeros. A last run adds
distillation from the dense model (weight 0.5, T = 4) to LAMP's IMP, and one more runs IMP with one
learning-rate decay over the three rounds (`--lr-schedule continue`) instead of restarting it
each round (learning-rate rewinding, the default). The last two replace SGD (lr 1e-4, the CLI's
default for raw 0-255 inputs) by Adam (AdamW, lr 1e-3).

Usage:  .venv/bin/python benchmarks/lamp_mnist.py [--target 0.9] [--epochs 3] [--lr 1e-4]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from mnist_omp_imp import MLP, mlp_and_mnist  # the same model and split (benchmarks/ is on the path)

from onnxprune.options import PruneOptions, ScheduleOptions, TrainOptions
from onnxprune.workbench.evaluate import evaluate
from onnxprune.workflow.schedule import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-4)
    args = parser.parse_args()
    model_path = MLP
    model, preprocess, train, test = mlp_and_mnist()
    print(json.dumps({"dense_top1": evaluate(model, test, preprocess).top1}))
    runs = [(scope, iterations, epochs, 0.0, "rewind") for scope in ("global", "lamp") for iterations, epochs in
            ((1, 0), (3, args.epochs))]  # fmt: skip
    runs += [("lamp", 3, args.epochs, 0.5, "rewind"), ("lamp", 3, args.epochs, 0.0, "continue")]
    runs = [(*run, "sgd", args.lr) for run in runs]
    runs += [(scope, 3, args.epochs, 0.0, "rewind", "adam", 1e-3) for scope in ("global", "lamp")]
    for scope, iterations, epochs, distill, lr_schedule, optimizer, lr in runs:
        training = TrainOptions(
            epochs=epochs, batch_size=64, lr=lr, weight_decay=0.0, augment=False, distill_weight=distill,
            optimizer=optimizer,
        )  # fmt: skip
        options = ScheduleOptions(
            PruneOptions(args.target, scope=scope), iterations=iterations, train=training, lr_schedule=lr_schedule
        )
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            result = run(model_path, Path(folder) / "run", options, train, test, preprocess)
        layers = result.rounds[-1].layer_sparsity
        print(json.dumps({
            "scope": scope, "rounds": iterations, "epochs_per_round": epochs, "distill_weight": distill,
            "lr_schedule": lr_schedule, "optimizer": optimizer, "lr": lr,
            "sparsity": round(result.rounds[-1].sparsity, 4), "top1": result.final_top1,
            "first_layer_sparsity": round(next(iter(layers.values())), 4),
            "layer_sparsity": {name: round(value, 3) for name, value in layers.items()},
            "seconds": round(time.perf_counter() - started, 1),
        }))  # fmt: skip


if __name__ == "__main__":
    main()
