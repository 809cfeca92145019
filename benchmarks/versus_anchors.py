"""onnxprune against the tools users already have, side by side at equal budget (issue 15).

Anchors (benchmark-only dependencies): torch.nn.utils.prune (`global_unstructured`, L1) and
Torch-Pruning (`pip install torch-pruning`; `MetaPruner`, L1 filter norms, 40% of every layer's
channels, the classifier kept). Every row of a part starts from the same model and gets the same
fine-tuning; only the selection differs, except the rows marked with what they add (distillation,
Adam), which onnxprune offers and the anchors do not. Parts:

- `vgg-unstructured`: the VGG13 reference (models/vgg13_bn_w025_cifar10.onnx), 80% of the
  prunable weights, 1 epoch on the 50,000 CIFAR-10 training images (SGD lr 0.01 momentum 0.9
  weight decay 5e-4, cosine, batch 128, flip + crop, seed 0), top-1 on the 10,000 test images.
- `vgg-channels`: the same model, 40% of the channels with Torch-Pruning; onnxprune at equal or
  fewer MACs (the sparsity found by bisection), 1 epoch (and `--epochs 5` for the 5-epoch rows).
- `vgg-taylor` (not in the default parts): Taylor's criterion at three filter fractions around
  Torch-Pruning's MACs, with the defaults' fine-tuning.
- `mlp`: MATLAB's `nln_logsig_200_100_50.onnx` (sigmoid MLP fed raw 0-255 pixels), 90% of the
  weights, IMP 3 rounds x 3 epochs on the first 8,000 MNIST test images, top-1 on the other 2,000.
- `alexnet`: the AlexNet-shaped spectrogram model (models/alexnet_spectro.onnx, MATLAB layout),
  90% of the weights, one-shot + 3 epochs on the demo's 1,800 training spectrograms, top-1 on its
  300 test spectrograms.

Each row prints one JSON line; the table in docs/benchmarks.md is made from them.

Usage:  .venv/bin/python benchmarks/versus_anchors.py [--parts vgg-unstructured,vgg-channels,mlp,alexnet]
            [--epochs 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils import prune as torch_prune

import onnxprune
from onnxprune.options import PruneOptions, ScheduleOptions, TrainOptions
from onnxprune.workbench.convert import to_torch
from onnxprune.workbench.data import load_data, preprocess_for, split
from onnxprune.workbench.evaluate import evaluate
from onnxprune.workbench.train import finetune, logits_module
from onnxprune.workflow.schedule import run

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT / "models"))
VGG = ROOT / "models" / "vgg13_bn_w025_cifar10.onnx"
ALEXNET = ROOT / "models" / "alexnet_spectro.onnx"
CIFAR = {"mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)}
RECIPE = TrainOptions(epochs=1, batch_size=128, lr=0.01, momentum=0.9, weight_decay=5e-4, seed=0)


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def layer_sparsity(converted) -> float:
    weights = [entry.parameter.detach().numpy() for entry in converted.params.values()]
    return sum(int(np.sum(w == 0)) for w in weights) / sum(w.size for w in weights)


class Cifar:
    """The VGG13 reference, its preprocessing, the training and test sets, and the dense teacher."""

    def __init__(self):
        self.dense = onnxprune.load(VGG)
        self.preprocess = preprocess_for(self.dense, **CIFAR)
        self.train = load_data(SHARED / "data/cifar10/train.zip")
        self.test = load_data(SHARED / "data/cifar10/test.zip")
        self.teacher = logits_module(to_torch(self.dense), self.dense.final_softmax)
        self.macs = self.dense.layer_total("macs")
        emit(part="vgg", row="dense", top1=self.top1(to_torch(self.dense)), macs=self.macs)

    def top1(self, converted, model=None) -> float:
        model = model or self.dense
        return evaluate(model, self.test, self.preprocess, engine="torch", torch_module=converted.module).top1

    def finetune(self, converted, model, options: TrainOptions, step_hook=None) -> tuple[float, float]:
        """(top-1 before, top-1 after) fine-tuning `converted` (a conversion of `model`) with `options`."""
        before = self.top1(converted, model)
        teacher = self.teacher if options.distill_weight > 0 else None
        finetune(converted, self.train, self.preprocess, options, teacher=teacher, step_hook=step_hook)
        return before, self.top1(converted, model)


def vgg_unstructured(cifar: Cifar, epochs: int) -> None:
    """80% of the weights: torch.nn.utils.prune's global L1 against onnxprune's scopes and options."""
    from onnxprune.pruning.gradual import GradualPruning

    recipe = dataclasses.replace(RECIPE, epochs=epochs)
    distilled = dataclasses.replace(recipe, distill_weight=0.9)
    rows = [("torch.nn.utils.prune global_unstructured L1", "anchor", recipe)]
    rows += [(f"onnxprune --scope {scope}", scope, recipe) for scope in ("global", "lamp", "erk")]
    rows += [(f"onnxprune --scope {scope} --distill-weight 0.9", scope, distilled) for scope in ("global", "lamp")]
    rows += [("onnxprune --scope global --schedule gradual", "gradual", recipe)]
    for label, scope, options in rows:
        started = time.perf_counter()
        hook = None
        if scope == "anchor":
            converted = anchor_prune(cifar.dense, 0.8)
        elif scope == "gradual":
            converted = onnxprune.prune(cifar.dense, 0.0, scope="global").torch_model
            hook = GradualPruning(cifar.dense, PruneOptions(0.8, scope="global"), converted)
        else:
            converted = onnxprune.prune(cifar.dense, 0.8, scope=scope, keep_masks=True).torch_model
        before, after = cifar.finetune(converted, cifar.dense, options, hook)
        emit(part="vgg-unstructured", row=label, epochs=epochs, sparsity=round(layer_sparsity(converted), 4),
             top1_before=before, top1_after=after, seconds=round(time.perf_counter() - started, 1))  # fmt: skip
    top1, chosen, seconds = with_defaults(
        VGG, SHARED / "data/cifar10/train.zip", SHARED / "data/cifar10/test.zip", sparsity=0.8, finetune_epochs=epochs,
        mean=",".join(map(str, CIFAR["mean"])), std=",".join(map(str, CIFAR["std"])),
    )  # fmt: skip
    emit(part="vgg-unstructured", row="onnxprune defaults: prune --sparsity 0.8 --data --finetune-epochs",
         epochs=epochs, top1_after=top1, chosen=chosen, seconds=seconds)  # fmt: skip


def torch_pruning_vgg(dense, folder: Path, ratio: float = 0.4) -> Path:
    """Torch-Pruning on the reference's own torch definition, weights copied from the ONNX file; exported."""
    import torch_pruning as tp
    from vgg import vgg13_bn

    converted = to_torch(dense)
    network = vgg13_bn(0.25).eval()
    kinds = (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.Linear)
    for mine, theirs in zip(
        [m for m in network.modules() if isinstance(m, kinds)],
        [m for m in converted.module.modules() if isinstance(m, kinds)],
        strict=True,
    ):
        mine.load_state_dict(theirs.state_dict())
    example = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(network(example), converted.module(example), atol=1e-4), "weights copied wrongly"
    pruner = tp.pruner.MetaPruner(
        network, example, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio,
        ignored_layers=[network[-1]],
    )  # fmt: skip
    pruner.step()
    path = folder / "torch_pruning.onnx"
    # BatchNormalization kept as nodes (PRESERVE), as in the reference: an eval-mode export folds it into the
    # convolutions, and the anchor would then fine-tune without BatchNorm
    torch.onnx.export(network, example, str(path), input_names=["images"], output_names=["logits"],
                      dynamic_axes={"images": {0: "batch"}}, opset_version=13, dynamo=False,
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)  # fmt: skip
    return path


def equal_macs_sparsity(dense, method: str, scope: str, macs_allowed: float) -> float:
    """The smallest sparsity (to 1e-3) at which onnxprune's compacted model has at most `macs_allowed` MACs."""
    low, high = 0.0, 0.9
    while high - low > 1e-3:
        middle = (low + high) / 2
        result = onnxprune.prune(dense, middle, method=method, scope=scope, keep_masks=False)
        if dense.layer_total("macs") * (1 - result.macs_removed) <= macs_allowed:
            high = middle
        else:
            low = middle
    return high


def vgg_channels(cifar: Cifar, epochs: int) -> None:
    """40% of the channels: Torch-Pruning against onnxprune at equal or fewer MACs."""
    recipe = dataclasses.replace(RECIPE, epochs=epochs)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        anchor = onnxprune.load(torch_pruning_vgg(cifar.dense, Path(folder)))
        converted = to_torch(anchor)
        macs = anchor.layer_total("macs")
        before, after = cifar.finetune(converted, anchor, recipe)
        emit(part="vgg-channels", row="Torch-Pruning MetaPruner L1, 40% of channels", epochs=epochs,
             macs_kept=round(macs / cifar.macs, 4), top1_before=before, top1_after=after,
             seconds=round(time.perf_counter() - started, 1))  # fmt: skip
    rows = [("l1-filter", "layer", recipe), ("l1-filter", "global", recipe)]
    rows += [("l1-filter", "global", dataclasses.replace(recipe, distill_weight=0.9))]
    for method, scope, options in rows:
        started = time.perf_counter()
        sparsity = equal_macs_sparsity(cifar.dense, method, scope, macs)
        result = onnxprune.prune(cifar.dense, sparsity, method=method, scope=scope)
        small = result.model
        converted = to_torch(small)
        before, after = cifar.finetune(converted, small, options)
        label = f"onnxprune --method {method} --scope {scope} --sparsity {sparsity:.3f}"
        label += f" --distill-weight {options.distill_weight:g}" if options.distill_weight else ""
        emit(part="vgg-channels", row=label, epochs=epochs, macs_kept=round(small.layer_total("macs") / cifar.macs, 4),
             top1_before=before, top1_after=after, seconds=round(time.perf_counter() - started, 1))  # fmt: skip
    sparsity = equal_macs_sparsity(cifar.dense, "l1-filter", "layer", macs)
    top1, chosen, seconds = with_defaults(
        VGG, SHARED / "data/cifar10/train.zip", SHARED / "data/cifar10/test.zip", method="l1-filter",
        sparsity=sparsity, finetune_epochs=epochs, mean=",".join(map(str, CIFAR["mean"])),
        std=",".join(map(str, CIFAR["std"])),
    )  # fmt: skip
    emit(part="vgg-channels", row=f"onnxprune defaults: prune --method l1-filter --sparsity {sparsity:.3f} --data "
         "--finetune-epochs", epochs=epochs, top1_after=top1, chosen=chosen, seconds=seconds)  # fmt: skip


def vgg_taylor(cifar: Cifar, sparsities=(0.407, 0.45, 0.5)) -> None:
    """Taylor's criterion (Molchanov et al. 2019) at filter fractions around Torch-Pruning's MACs, then the
    defaults' one epoch (distillation 0.9, batch 32). It selects in rounds and trains between them (10
    mini-batches of 32 a round, 8 filters a round): steps the other rows do not get, counted in its row."""
    tuned = dataclasses.replace(RECIPE, batch_size=32, distill_weight=0.9)
    for sparsity in sparsities:
        started = time.perf_counter()
        result = onnxprune.prune(cifar.dense, sparsity, method="taylor", data=cifar.train, preprocess=cifar.preprocess)
        small = result.model
        rounds = len(result.history)
        converted = to_torch(small)
        before, after = cifar.finetune(converted, small, tuned)
        emit(part="vgg-channels", row=f"onnxprune --method taylor --sparsity {sparsity:g} + defaults' fine-tuning",
             macs_kept=round(small.layer_total("macs") / cifar.macs, 4), selection_rounds=rounds,
             selection_steps=rounds * 10, top1_before=before, top1_after=after,
             seconds=round(time.perf_counter() - started, 1))  # fmt: skip


def with_defaults(model_path, data, val, **given):
    """`onnxprune prune MODEL --data DATA --val VAL ...given`, as the command line builds and runs it: the
    defaults a user gets. Returns (final top-1 on VAL, the options it chose, seconds)."""
    from onnxprune.cli.prune import _prune_run_options
    from onnxprune.workflow.pipeline import run as run_pipeline

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        given = {"model_path": Path(model_path), "data": Path(data), "val": Path(val),
                 "out_dir": Path(folder) / "run", **given}  # fmt: skip
        report = run_pipeline(Path(model_path), _prune_run_options(given))
    schedule = report.options.schedule
    chosen = {"scope": schedule.prune.scope, "optimizer": schedule.train.optimizer, "lr": schedule.train.lr,
              "distill_weight": schedule.train.distill_weight, "batch_size": schedule.train.batch_size}  # fmt: skip
    return report.schedule.final_top1, chosen, round(time.perf_counter() - started, 1)


def save_npz(dataset, path: Path) -> Path:
    np.savez(path, x=dataset.images, y=dataset.labels)
    return path


def anchor_prune(model, amount: float, converted=None):
    """torch.nn.utils.prune's global L1 over every prunable layer, what a torch user writes."""
    converted = converted or to_torch(model)
    parameters = [(entry.module, "weight") for entry in converted.params.values()]
    torch_prune.global_unstructured(parameters, pruning_method=torch_prune.L1Unstructured, amount=amount)
    return converted


def schedule_rows(part, model_path, train, test, preprocess, rows, anchor_options, defaults) -> None:
    """torch.nn.utils.prune's global L1 fine-tuned with each recipe; onnxprune's rows through its schedule;
    and onnxprune's defaults through the command line's own option building (`defaults`: extra CLI options)."""
    model = onnxprune.load(model_path)
    emit(part=part, row="dense", top1=evaluate(model, test, preprocess).top1)
    recipes, rounds = anchor_options
    for recipe_name, train_options in recipes:
        started = time.perf_counter()
        before = anchor_prune(model, 0.9)
        before = evaluate(model, test, preprocess, engine="torch", torch_module=before.module).top1
        converted = anchor_prune(model, 0.0)
        for number in range(1, rounds + 1):  # IMP: each round removes the same fraction of what is left
            anchor_prune(model, 1 - 0.1 ** (1 / rounds), converted)  # torch's amount counts the unpruned
            finetune(converted, train, preprocess, dataclasses.replace(train_options, seed=number), None,
                     model.final_softmax)  # fmt: skip
        after = evaluate(model, test, preprocess, engine="torch", torch_module=converted.module).top1
        label = f"torch.nn.utils.prune global L1, {rounds} round(s), {recipe_name}"
        emit(part=part, row=label, sparsity=round(layer_sparsity(converted), 4),
             top1_before=before, top1_after=after, seconds=round(time.perf_counter() - started, 1))  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        train_file, test_file = save_npz(train, Path(folder) / "train.npz"), save_npz(test, Path(folder) / "test.npz")
        for label, given in defaults:
            top1, chosen, seconds = with_defaults(model_path, train_file, test_file, sparsity=0.9, **given)
            emit(part=part, row=f"onnxprune defaults: prune --sparsity 0.9 --data {label}", top1_after=top1,
                 chosen=chosen, seconds=seconds)  # fmt: skip
    for label, options in rows:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            result = run(model_path, Path(folder) / "run", options, train, test, preprocess)
        emit(part=part, row=label, sparsity=round(result.rounds[-1].sparsity, 4), top1_after=result.final_top1,
             seconds=round(time.perf_counter() - started, 1))  # fmt: skip


def mlp() -> None:
    """The MATLAB lab's MLP: 90%, IMP 3 x 3 epochs."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from mnist_omp_imp import MLP, mlp_and_mnist

    _, preprocess, train, test = mlp_and_mnist()
    sgd = TrainOptions(epochs=3, batch_size=64, lr=1e-4, weight_decay=0.0, augment=False)
    adam = dataclasses.replace(sgd, optimizer="adam", lr=1e-3)
    rows = [
        (f"onnxprune --scope {scope} {name}", ScheduleOptions(PruneOptions(0.9, scope=scope), train=train_options,
                                                               iterations=3))
        for scope in ("global", "lamp", "erk") for name, train_options in (("sgd lr 1e-4", sgd), ("adam lr 1e-3", adam))
    ]  # fmt: skip
    defaults = [("--finetune-epochs 9", {"finetune_epochs": 9}),
                ("--finetune-epochs 3 --iterations 3", {"finetune_epochs": 3, "iterations": 3})]  # fmt: skip
    recipes = [("sgd lr 1e-4", sgd), ("adam lr 1e-3", adam)]
    schedule_rows("mlp", MLP, train, test, preprocess, rows, (recipes, 3), defaults)


def alexnet() -> None:
    """The AlexNet-shaped spectrogram model: 90%, one-shot + 3 epochs."""
    from onnxprune.demo import spectrograms

    model = onnxprune.load(ALEXNET)
    preprocess = preprocess_for(model)
    root = spectrograms.generate(train_per_class=300, test_per_class=50)
    train = load_data(root / "train", size=preprocess.image_size)
    test = load_data(root / "test", size=preprocess.image_size)
    sgd = TrainOptions(epochs=3, batch_size=64, lr=1e-4, weight_decay=5e-4)
    adam = dataclasses.replace(sgd, optimizer="adam", lr=1e-3)
    rows = [
        (f"onnxprune --scope {scope} {name}", ScheduleOptions(PruneOptions(0.9, scope=scope), train=train_options))
        for scope in ("global", "lamp", "erk") for name, train_options in (("sgd lr 1e-4", sgd), ("adam lr 1e-3", adam))
    ]  # fmt: skip
    recipes = [("sgd lr 1e-4", sgd), ("adam lr 1e-3", adam)]
    schedule_rows(
        "alexnet",
        ALEXNET,
        train,
        test,
        preprocess,
        rows,
        (recipes, 1),
        [("--finetune-epochs 3", {"finetune_epochs": 3})],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="vgg-unstructured,vgg-channels,mlp,alexnet")
    parser.add_argument("--epochs", type=int, default=1, help="VGG parts: fine-tuning epochs")
    parser.add_argument("--train", type=int, default=50000, help="VGG parts: training images (stratified sample)")
    args = parser.parse_args()
    parts = args.parts.split(",")
    if "mlp" in parts:
        mlp()
    if "alexnet" in parts:
        alexnet()
    if {"vgg-unstructured", "vgg-channels", "vgg-taylor"} & set(parts):
        cifar = Cifar()
        if args.train < len(cifar.train):
            _, cifar.train = split(cifar.train, args.train / len(cifar.train), seed=0)
        if "vgg-unstructured" in parts:
            vgg_unstructured(cifar, args.epochs)
        if "vgg-channels" in parts:
            vgg_channels(cifar, args.epochs)
        if "vgg-taylor" in parts:
            vgg_taylor(cifar)


if __name__ == "__main__":
    main()
