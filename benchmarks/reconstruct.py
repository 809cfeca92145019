"""Least-squares reconstruction (--reconstruct) against pruning as torch.nn.utils.prune leaves it, no fine-tuning.

Each part sweeps one model at 50-95% of its weights with global magnitude (torch.nn.utils.prune's
`global_unstructured` L1 selects the same weights: checked at one level as the anchor row) and with
LAMP, each with and without reconstruction of the kept weights on 512 training samples (stratified);
top-1 on the test samples, which the layers were not solved on. Parts:

- `vgg`: the VGG13 reference (models/vgg13_bn_w025_cifar10.onnx), CIFAR-10: calibration from the 50,000
  training images, top-1 on the 10,000 test images.
- `resnet`: resnet_2b_cifar10.onnx (PyTorch, VNN-COMP 2021; a residual network), the same data.
- `mlp`: MATLAB's nln_logsig_200_100_50.onnx (sigmoid MLP, raw 0-255 pixels): calibration from the
  first 8,000 MNIST test images, top-1 on the other 2,000.
- `alexnet`: the AlexNet-shaped spectrogram model (MATLAB layout, a grouped convolution): the demo's
  1,800 training and 300 test spectrograms.
- `vgg-channels`: the VGG13 with l1-filter (layer scope) at 10-50% of the filters, the same way.
- `finetune`: the VGG13 at 80% (global), then the defaults' one epoch (distillation 0.9, batch 64, SGD
  0.01) with and without reconstruction first, seeds 0 and 1: does a better start end higher?

Prints one JSON line per row and draws docs/images/reconstruct.png (one panel per model).

Usage:  .venv/bin/python benchmarks/reconstruct.py [--parts vgg,resnet,mlp,alexnet,vgg-channels,finetune]
            [--figure PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import versus_anchors as anchors  # noqa: E402

import onnxprune  # noqa: E402
from onnxprune.measure.sweep import sweep  # noqa: E402
from onnxprune.pruning.reconstruct import CALIBRATION_SAMPLES  # noqa: E402
from onnxprune.report import plots  # noqa: E402
from onnxprune.workbench.data import load_data, preprocess_for, stratified_sample  # noqa: E402
from onnxprune.workbench.evaluate import evaluate  # noqa: E402

LEVELS = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
SCOPES = ["global", "lamp"]
RESNET = anchors.SHARED / "models/pytorch/resnet_2b_cifar10.onnx"
FIGURE = anchors.ROOT / "docs/images/reconstruct.png"


def calibration_of(train):
    return train.subset(stratified_sample(train.labels, CALIBRATION_SAMPLES, 0), " (calibration)")


def cifar_sets():
    return load_data(anchors.SHARED / "data/cifar10/train.zip"), load_data(anchors.SHARED / "data/cifar10/test.zip")


def models():
    """name -> a function giving (model, preprocess, calibration set, test set, anchor level)."""

    def vgg():
        model = onnxprune.load(anchors.VGG)
        train, test = cifar_sets()
        return model, preprocess_for(model, **anchors.CIFAR), calibration_of(train), test, 0.8

    def resnet():
        model = onnxprune.load(RESNET)
        train, test = cifar_sets()
        return model, preprocess_for(model, **anchors.CIFAR), calibration_of(train), test, 0.8

    def mlp():
        from mnist_omp_imp import mlp_and_mnist

        model, preprocess, train, test = mlp_and_mnist()
        return model, preprocess, calibration_of(train), test, 0.9

    def alexnet():
        from onnxprune.demo import spectrograms

        model = onnxprune.load(anchors.ALEXNET)
        preprocess = preprocess_for(model)
        root = spectrograms.generate(train_per_class=300, test_per_class=50)
        train = load_data(root / "train", size=preprocess.image_size)
        return model, preprocess, calibration_of(train), load_data(root / "test", size=preprocess.image_size), 0.9

    return {"vgg": vgg, "resnet": resnet, "mlp": mlp, "alexnet": alexnet}


def sweep_part(name: str, build) -> dict:
    """The anchor at one level, then the four curves; returns the tables for the figure."""
    model, preprocess, calibration, test, level = build()
    converted = anchors.anchor_prune(model, level)
    top1 = evaluate(model, test, preprocess, engine="torch", torch_module=converted.module).top1
    anchors.emit(part=name, row=f"torch.nn.utils.prune global_unstructured L1 {level:.0%}", top1=top1)
    tables = {}
    for reconstructed in (False, True):
        started = time.perf_counter()
        table = sweep(model, test, preprocess, LEVELS, ["magnitude"], SCOPES, engine="torch",
                      calibration=calibration if reconstructed else None)  # fmt: skip
        seconds = time.perf_counter() - started
        tables[reconstructed] = table
        for row in table.rows:
            anchors.emit(part=name, row=f"{row.scope}{' + reconstruct' if reconstructed else ''}",
                         sparsity=row.sparsity, top1=row.accuracy)  # fmt: skip
        anchors.emit(part=name, row="sweep seconds", reconstruct=reconstructed, levels=len(table.rows),
                     seconds=round(seconds, 1), dense=table.baseline_accuracy)  # fmt: skip
    return tables


def channels_part() -> None:
    """The VGG13 with l1-filter (layer scope) at 10-50% of the filters, with and without reconstruction."""
    model, preprocess, calibration, test, _ = models()["vgg"]()
    for reconstructed in (False, True):
        started = time.perf_counter()
        table = sweep(model, test, preprocess, [0.1, 0.2, 0.3, 0.4, 0.5], ["l1-filter"], ["layer"], engine="torch",
                      calibration=calibration if reconstructed else None)  # fmt: skip
        for row in table.rows:
            anchors.emit(part="vgg-channels", row=f"l1-filter layer{' + reconstruct' if reconstructed else ''}",
                         sparsity=row.sparsity, top1=row.accuracy)  # fmt: skip
        anchors.emit(part="vgg-channels", row="sweep seconds", reconstruct=reconstructed,
                     seconds=round(time.perf_counter() - started, 1))  # fmt: skip


def finetune_part() -> None:
    """80% global on the VGG13, one epoch of the defaults' fine-tuning, with and without reconstruction."""
    from onnxprune.pruning.reconstruct import reconstruct, reference_copy
    from onnxprune.workbench.convert import to_torch

    cifar = anchors.Cifar()
    distilled = dataclasses.replace(anchors.RECIPE, batch_size=64, distill_weight=0.9)
    calibration = torch.from_numpy(cifar.preprocess(calibration_of(cifar.train)))
    for seed in (0, 1):
        for reconstructed in (False, True):
            started = time.perf_counter()
            converted = onnxprune.prune(cifar.dense, 0.8, scope="global").torch_model
            if reconstructed:
                reconstruct(converted, reference_copy(to_torch(cifar.dense)), calibration)
            before, after = cifar.finetune(converted, cifar.dense, dataclasses.replace(distilled, seed=seed))
            anchors.emit(part="finetune", row=f"global 80%{' + reconstruct' if reconstructed else ''}, 1 epoch",
                         seed=seed, top1_before=before, top1_after=after,
                         seconds=round(time.perf_counter() - started, 1))  # fmt: skip


def draw(results: dict, path: Path) -> Path:
    """One panel per model: each scope with and without reconstruction, the dense model dashed."""
    figure, axes = plots._figure(1, len(results), squeeze=False, figsize=(3.2 * len(results), 3.6), sharey=False)
    for axis, tables in zip(axes[0], results.values(), strict=True):
        for index, scope in enumerate(SCOPES):
            for reconstructed, style in ((False, ":"), (True, "-")):
                rows = [r for r in tables[reconstructed].rows if r.scope == scope]
                label = f"{scope}{' + reconstruct' if reconstructed else ''}"
                axis.plot([100 * r.sparsity for r in rows], [100 * r.accuracy for r in rows], style, marker=".",
                          color=f"C{index}", label=label)  # fmt: skip
        axis.axhline(100 * tables[False].baseline_accuracy, label="dense", **plots.DENSE_STYLE)
        axis.set_title(Path(tables[False].model).stem, fontsize=9)
        axis.set_xlabel("weights removed (%)")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("top-1, no fine-tuning (%)")
    plots._figure_legend(figure, axes[0])
    title = "Magnitude pruning without fine-tuning, with and without --reconstruct (512 samples)"
    figure.suptitle(plots._wrapped(title))
    return plots.save_checked(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="vgg,resnet,mlp,alexnet,vgg-channels,finetune")
    parser.add_argument("--figure", type=Path, default=FIGURE)
    args = parser.parse_args()
    parts = args.parts.split(",")
    results = {name: sweep_part(name, build) for name, build in models().items() if name in parts}
    if results:
        anchors.emit(figure=str(draw(results, args.figure)))
    if "vgg-channels" in parts:
        channels_part()
    if "finetune" in parts:
        finetune_part()


if __name__ == "__main__":
    main()
