"""Issue 15 follow-up on the VGG13 reference: what the last half point at 80% is made of, and whether
reconstruction after filter removal gives a structured gain.

Every row uses `versus_anchors.Cifar` (the VGG13 reference, CIFAR-10's 50,000 training and 10,000
test images, the issue's recipe: 1 epoch, SGD 0.01 momentum 0.9 weight decay 5e-4, cosine, batch
128, flip + crop) and prints one JSON line. Parts:

- `unstructured`: global magnitude at 80% (torch.nn.utils.prune's selection for the anchor rows),
  fine-tuned with seeds, learning rates, batch sizes (batch 32 over four seeds against 64: what
  made 32 the default), Adam, augmentation, label smoothing, a layer cap, a BatchNorm-aware score
  and feature distillation beside the defaults' distillation 0.9.
- `reconstruction`: l1-filter at 40.7% per layer (34.6% of the MACs), each layer's weights then
  solved by least squares to reproduce the dense layer's outputs (He et al. 2017, ThiNet) on 512
  training images, before the same one epoch.

Usage:  .venv/bin/python benchmarks/vgg_followup.py [--parts unstructured,reconstruction] [--train N]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch.nn.utils import prune as torch_prune

sys.path.insert(0, str(Path(__file__).resolve().parent))
import versus_anchors as anchors  # noqa: E402

import onnxprune  # noqa: E402
from onnxprune.workbench import train as training  # noqa: E402
from onnxprune.workbench.convert import to_torch  # noqa: E402
from onnxprune.workbench.data import split, stratified_sample  # noqa: E402
from onnxprune.workbench.train import logits_module  # noqa: E402

RECIPE = anchors.RECIPE
DISTILLED = dataclasses.replace(RECIPE, batch_size=64, distill_weight=0.9)  # the defaults' fine-tuning until batch 32


def unstructured(cifar: anchors.Cifar) -> None:
    """80% of the weights, one epoch: each row names what differs from the defaults' fine-tuning."""
    rows = [
        ("anchor: torch.nn.utils.prune, the recipe, seed 1", "anchor", dataclasses.replace(RECIPE, seed=1), {}),
        ("anchor, batch 64", "anchor", dataclasses.replace(RECIPE, batch_size=64), {}),
        ("anchor, batch 64, SGD 0.05", "anchor", dataclasses.replace(RECIPE, batch_size=64, lr=0.05), {}),
        ("defaults: distillation 0.9, batch 64, seed 1", "global", dataclasses.replace(DISTILLED, seed=1), {}),
        *[
            (f"distillation 0.9, batch 64, SGD {lr}", "global", dataclasses.replace(DISTILLED, lr=lr), {})
            for lr in (0.02, 0.05, 0.1)
        ],  # fmt: skip
        *[
            (
                f"distillation 0.9, batch 64, SGD 0.05, seed {seed}",
                "global",
                dataclasses.replace(DISTILLED, lr=0.05, seed=seed),
                {},
            )
            for seed in (1, 2)
        ],  # fmt: skip
        *[
            (f"distillation 0.9, batch 64, seed {seed}", "global", dataclasses.replace(DISTILLED, seed=seed), {})
            for seed in (2, 3)
        ],  # fmt: skip
        *[
            (
                f"distillation 0.9, batch 32 (the defaults now), seed {seed}",
                "global",
                dataclasses.replace(DISTILLED, batch_size=32, seed=seed),
                {},
            )
            for seed in (0, 1, 2, 3)
        ],  # fmt: skip
        (
            "distillation 0.9, batch 32, SGD 0.005",
            "global",
            dataclasses.replace(DISTILLED, batch_size=32, lr=0.005),
            {},
        ),  # fmt: skip
        *[
            (
                f"distillation 0.9, batch 64, Adam {lr:g}",
                "global",
                dataclasses.replace(DISTILLED, optimizer="adam", lr=lr),
                {},
            )
            for lr in (1e-3, 3e-4)
        ],  # fmt: skip
        ("distillation 0.9, batch 64, no flip + crop", "global", dataclasses.replace(DISTILLED, augment=False), {}),
        (
            "distillation 0.9, batch 64, label smoothing 0.1",
            "global",
            dataclasses.replace(DISTILLED, label_smoothing=0.1),
            {},
        ),  # fmt: skip
        ("--max-layer-sparsity 0.9, distillation 0.9, batch 64", "global", DISTILLED, {"max_layer_sparsity": 0.9}),
        ("BatchNorm-aware global score, the recipe", "bn-aware", RECIPE, {}),
        ("BatchNorm-aware global score, distillation 0.9, batch 64", "bn-aware", DISTILLED, {}),
    ]
    for label, selection, options, extra in rows:
        started = time.perf_counter()
        if selection == "anchor":
            converted = anchors.anchor_prune(cifar.dense, 0.8)
        elif selection == "bn-aware":
            converted = batchnorm_aware_prune(cifar.dense, 0.8)
        else:
            converted = onnxprune.prune(cifar.dense, 0.8, scope="global", keep_masks=True, **extra).torch_model
        before, after = cifar.finetune(converted, cifar.dense, options)
        anchors.emit(part="vgg-followup", row=label, top1_before=before, top1_after=after,
                     seconds=round(time.perf_counter() - started, 1))  # fmt: skip
    for weight in (1.0, 5.0):
        started = time.perf_counter()
        before, after = feature_distilled(cifar, weight)
        anchors.emit(part="vgg-followup", row=f"distillation 0.9 + feature distillation (weight {weight:g}), batch 64",
                     top1_before=before, top1_after=after, seconds=round(time.perf_counter() - started, 1))  # fmt: skip


def _initializers(model) -> dict[str, np.ndarray]:
    return {tensor.name: numpy_helper.to_array(tensor) for tensor in model.proto.graph.initializer}


def _consumers(model) -> dict[str, list]:
    consumers: dict[str, list] = {}
    for node in model.proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def batchnorm_aware_prune(dense, amount: float):
    """One global threshold on |w| x |gamma| / sqrt(var + eps) of the BatchNorm that follows each layer."""
    converted = to_torch(dense)
    values, consumers = _initializers(dense), _consumers(dense)
    scores = {}
    for name, entry in converted.params.items():
        score = entry.parameter.detach().abs().numpy()
        norm = next((n for n in consumers.get(entry.layer.output, []) if n.op_type == "BatchNormalization"), None)
        if norm is not None:
            epsilon = next((a.f for a in norm.attribute if a.name == "epsilon"), 1e-5)
            factor = np.abs(values[norm.input[1]]) / np.sqrt(values[norm.input[4]] + epsilon)
            score = score * factor.reshape(-1, *([1] * (score.ndim - 1)))
        scores[name] = score
    every = np.concatenate([score.ravel() for score in scores.values()])
    threshold = np.partition(every, int(round(amount * every.size)))[int(round(amount * every.size))]
    for name, entry in converted.params.items():
        torch_prune.custom_from_mask(entry.module, "weight", torch.from_numpy((scores[name] >= threshold) * 1.0))
    return converted


def feature_distilled(cifar: anchors.Cifar, weight: float) -> tuple[float, float]:
    """The defaults' fine-tuning plus weight x MSE of the normalised features entering the classifier."""
    classifier = cifar.dense.layers[-1].name
    teacher_model = to_torch(cifar.dense)
    cifar.teacher = logits_module(teacher_model, cifar.dense.final_softmax)
    features = {}

    def keep(key):
        return lambda module, inputs, output: features.__setitem__(key, inputs[0])

    teacher_model.params[classifier].module.register_forward_hook(keep("teacher"))
    converted = onnxprune.prune(cifar.dense, 0.8, scope="global", keep_masks=True).torch_model
    converted.params[classifier].module.register_forward_hook(keep("student"))
    logits_only = training._with_distillation

    def with_features(loss, logits, teacher, x, options):
        total = logits_only(loss, logits, teacher, x, options)
        student, target = features["student"].flatten(1), features["teacher"].flatten(1).detach()
        return total + weight * F.mse_loss(F.normalize(student, dim=1), F.normalize(target, dim=1),
                                           reduction="sum") / student.shape[0]  # fmt: skip

    training._with_distillation = with_features
    try:
        return cifar.finetune(converted, cifar.dense, DISTILLED)
    finally:
        training._with_distillation = logits_only


def reconstruction(cifar: anchors.Cifar, sparsity: float = 0.407, images: int = 512, positions: int = 32) -> None:
    """l1-filter per layer, then every layer after the first solved to reproduce the dense layer's outputs."""
    dense = cifar.dense
    small = onnxprune.prune(dense, sparsity, method="l1-filter", scope="layer").model
    kept = _kept_channels(dense, small)
    samples = torch.from_numpy(cifar.preprocess(cifar.train, stratified_sample(cifar.train.labels, images, 0)))
    dense_torch, small_torch = to_torch(dense), to_torch(small)
    dense_torch.module.eval()
    small_torch.module.eval()
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    small_nodes = {node.name: node for node in small.proto.graph.node}
    for layer in dense.layers[1:]:  # the first layer's inputs are the image: nothing was removed from them
        inputs = _captured(small_torch, layer.name, samples)["input"]  # earlier layers already rebuilt
        target = _captured(dense_torch, layer.name, samples)["output"]
        module = small_torch.params[layer.name].module
        target = target[:, kept.get(layer.name, list(range(target.shape[1])))]
        if isinstance(module, torch.nn.Conv2d):
            solution = _solve_conv(module, inputs, target, positions, generator)
            with torch.no_grad():
                module.weight.copy_(solution[:-1].T.reshape(module.weight.shape))
                norm = next(n for n in small.proto.graph.node if n.op_type == "BatchNormalization"
                            and n.input[0] == small_nodes[layer.name].output[0])  # fmt: skip
                # the intercept moves into the BatchNorm after: BN(y + c) uses the running mean - c
                small_torch.module.get_submodule(norm.name.lstrip("/")).running_mean -= solution[-1]
        else:
            solution = _least_squares(torch.cat([inputs.flatten(1), torch.ones(len(inputs), 1)], 1), target.flatten(1))
            with torch.no_grad():
                module.weight.copy_(solution[:-1].T)
                module.bias.copy_(solution[-1])
    seconds = time.perf_counter() - started
    before, after = cifar.finetune(small_torch, small, RECIPE)
    anchors.emit(part="vgg-followup", row=f"l1-filter layer {sparsity} + least-squares reconstruction",
                 macs_kept=round(small.layer_total("macs") / cifar.macs, 4), top1_before=before, top1_after=after,
                 reconstruction_seconds=round(seconds, 1))  # fmt: skip


def _kept_channels(dense, small) -> dict[str, list[int]]:
    """Per layer followed by a BatchNorm, the dense output channels the compacted model kept (running means match)."""
    values, small_values, consumers = _initializers(dense), _initializers(small), _consumers(dense)
    small_nodes = {node.name: node for node in small.proto.graph.node}
    kept = {}
    for layer in dense.layers:
        norm = next((n for n in consumers.get(layer.output, []) if n.op_type == "BatchNormalization"), None)
        if norm is not None:
            means = values[norm.input[3]]
            kept[layer.name] = [
                int(np.flatnonzero(means == m)[0]) for m in small_values[small_nodes[norm.name].input[3]]
            ]
    return kept


def _captured(converted, name: str, samples: torch.Tensor) -> dict[str, torch.Tensor]:
    box = {}
    handle = converted.params[name].module.register_forward_hook(
        lambda module, inputs, output: box.update(input=inputs[0].detach(), output=output.detach())
    )
    with torch.no_grad():
        converted.module(samples)
    handle.remove()
    return box


def _solve_conv(module, inputs, target, positions: int, generator) -> torch.Tensor:
    """(weights as columns, intercept last) reproducing `target` from `inputs` at sampled positions."""
    columns = F.unfold(inputs, module.kernel_size, padding=module.padding, stride=module.stride)
    count, features, places = columns.shape
    picked = torch.randint(0, places, (count, positions), generator=generator)
    rows = torch.gather(columns, 2, picked.unsqueeze(1).expand(count, features, positions))
    goals = torch.gather(target.flatten(2), 2, picked.unsqueeze(1).expand(count, target.shape[1], positions))
    rows = rows.permute(0, 2, 1).reshape(-1, features)
    goals = goals.permute(0, 2, 1).reshape(-1, target.shape[1])
    return _least_squares(torch.cat([rows, torch.ones(len(rows), 1)], 1), goals)


def _least_squares(rows: torch.Tensor, goals: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    gram = rows.T @ rows
    gram += ridge * gram.diagonal().mean() * torch.eye(gram.shape[0])
    return torch.linalg.solve(gram, rows.T @ goals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="unstructured,reconstruction")
    parser.add_argument("--train", type=int, default=50000, help="training images (stratified sample)")
    args = parser.parse_args()
    cifar = anchors.Cifar()
    if args.train < len(cifar.train):
        _, cifar.train = split(cifar.train, args.train / len(cifar.train), seed=0)
    parts = args.parts.split(",")
    if "reconstruction" in parts:
        reconstruction(cifar)
    if "unstructured" in parts:
        unstructured(cifar)


if __name__ == "__main__":
    main()
