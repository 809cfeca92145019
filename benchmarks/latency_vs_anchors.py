"""Faster in onnxruntime, by measurement: onnxprune --speedup against Torch-Pruning, and int8 of each (issue 28).

One run per part; every latency comes from one final `onnxprune.measure.bench.bench` call over
all the part's models (one session computing at a time, in turns, until the spread settles), so
the speedups are ratios measured side by side. Every pruned model gets the same fine-tuning
(the part's recipe), then top-1 on the part's test set in onnxruntime, fp32 and static int8
(`onnxprune quantize`'s defaults: BatchNormalization folded, QDQ, 500 stratified calibration
images from the training set).

- `vgg`: the VGG13 reference (models/vgg13_bn_w025_cifar10.onnx). Torch-Pruning (benchmark-only
  dependency, `pip install torch-pruning`; MetaPruner, L1 filter norms, the classifier kept) at
  20/40/60% of the channels, exported with torch.onnx; onnxprune `l1-filter --speedup S` at the
  speedups Torch-Pruning's models measured (batch 32) and at 2.0, and `--target-macs 0.35`.
  1 epoch on the 50,000 CIFAR-10 training images (SGD lr 0.01, momentum 0.9, wd 5e-4, cosine,
  batch 128), top-1 on the 10,000 test images.
- `alexnet`: the AlexNet-shaped spectrogram model (MATLAB layout, fixed batch 1: batch 32 is
  timed on a symbolic-batch copy); onnxprune `--speedup 1.3 / 1.6 / 2`; 3 epochs of Adam 1e-3 (its
  raw-pixel default) on 1,800 training spectrograms, top-1 on 300 test ones. Torch-Pruning needs a
  torch definition of the network, which a MATLAB export does not have: no anchor row.
- `resnet`: resnet_2b_cifar10 (../shared/models/pytorch, residual Adds couple channels);
  onnxprune `--speedup 1.5 / 2`; 1 epoch as `vgg`, CIFAR-10 normalisation. No torch definition
  either: no anchor row.

Prints one JSON line per model; writes benchmarks/out/latency_<part>.json, keeps the models in
benchmarks/out/latency_models/<part>/ and draws docs/images/latency_pareto.png (top-1 against
measured latency, batch 1 and 32).

Usage:  .venv/bin/python benchmarks/latency_vs_anchors.py [--parts vgg,alexnet,resnet]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import onnxprune  # noqa: E402
from onnxprune.measure.bench import bench  # noqa: E402
from onnxprune.measure.quantize import quantize  # noqa: E402
from onnxprune.options import TrainOptions  # noqa: E402
from onnxprune.workbench.convert import to_torch  # noqa: E402
from onnxprune.workbench.data import load_data, preprocess_for  # noqa: E402
from onnxprune.workbench.evaluate import evaluate  # noqa: E402
from onnxprune.workbench.timing import time_side_by_side  # noqa: E402
from onnxprune.workbench.train import finetune  # noqa: E402
from onnxprune.workflow.schedule import write_checkpoint  # noqa: E402

SHARED = ROOT.parent / "shared"
VGG = ROOT / "models" / "vgg13_bn_w025_cifar10.onnx"
ALEXNET = ROOT / "models" / "alexnet_spectro.onnx"
RESNET = SHARED / "models" / "pytorch" / "resnet_2b_cifar10.onnx"
CIFAR = {"mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)}
SGD = TrainOptions(epochs=1, batch_size=128, lr=0.01, momentum=0.9, weight_decay=5e-4, seed=0)
ADAM = TrainOptions(epochs=3, batch_size=64, lr=1e-3, weight_decay=5e-4, optimizer="adam", seed=0)
OUT = ROOT / "benchmarks" / "out"


@dataclasses.dataclass
class Part:
    name: str
    dense: Path
    train: object
    test: object
    preprocess: object
    recipe: TrainOptions
    folder: Path
    rows: list[dict] = dataclasses.field(default_factory=list)
    refused: list[dict] = dataclasses.field(default_factory=list)

    def finetuned(self, model: onnxprune.Model, label: str) -> Path:
        """`model` fine-tuned with the part's recipe, written as <label>.onnx."""
        converted = to_torch(model)
        finetune(converted, self.train, self.preprocess, self.recipe)
        path = self.folder / f"{label}.onnx"
        write_checkpoint(model, converted, path)
        return path

    def add(self, label: str, path: Path, seconds: float, **extra) -> None:
        self.rows.append({"part": self.name, "row": label, "path": str(path), "seconds": round(seconds, 1), **extra})


def onnxprune_row(part: Part, label: str, **budget) -> None:
    from onnxprune.errors import ConfigError

    started = time.perf_counter()
    try:
        result = onnxprune.prune(onnxprune.load(part.dense), method="l1-filter", bench_batch_size=32, **budget)
    except ConfigError as error:  # an unreachable request is refused: the refusal is the row
        part.refused.append({"part": part.name, "row": label, "error": str(error)})
        print(json.dumps(part.refused[-1]), flush=True)
        return
    small = part.folder / f"{label}_pruned.onnx"
    onnxprune.save(result, small)
    path = part.finetuned(onnxprune.load(small), label)
    part.add(label, path, time.perf_counter() - started, note=result.notes[0],
             prune_measured=result.budget.reached, macs_left=result.budget.macs_left)  # fmt: skip


def torch_pruning_rows(part: Part, ratios=(0.2, 0.4, 0.6)) -> list[float]:
    """Torch-Pruning's models, fine-tuned; their speedups at batch 32 (a quick side-by-side timing)."""
    from versus_anchors import torch_pruning_vgg

    dense = onnxprune.load(part.dense)
    speedups = []
    for ratio in ratios:
        started = time.perf_counter()
        folder = part.folder / f"tp_{ratio}"
        folder.mkdir(exist_ok=True)
        exported = onnxprune.load(torch_pruning_vgg(dense, folder, ratio))
        path = part.finetuned(exported, f"torch_pruning_{ratio:.1f}")
        base, pruned = time_side_by_side([dense, onnxprune.load(path)], [32])
        speedups.append(base.latency_ms["32"]["median"] / pruned.latency_ms["32"]["median"])
        part.add(f"Torch-Pruning {ratio:.0%} L1 channels", path, time.perf_counter() - started)
    return speedups


def measure(part: Part) -> None:
    """int8 of every model, then one bench run of all, then top-1 of each; one JSON line per model."""
    models = [{"part": part.name, "row": "dense", "path": str(part.dense), "seconds": 0.0}, *part.rows]
    rows = []
    for row in models:
        rows.append(row)
        int8 = part.folder / f"{Path(row['path']).stem}_int8.onnx"
        report = quantize(onnxprune.load(row["path"]), int8, "static", part.train, part.preprocess, 500)
        rows.append({"part": part.name, "row": f"{row['row']} + int8", "path": str(int8), "seconds": 0.0,
                     "int8_float_nodes": len(report.kernels.float)})  # fmt: skip
    timed = bench([row["path"] for row in rows], (1, 32))
    for row, result in zip(rows, timed, strict=True):
        row["ms_b1"] = result.latency_ms.get("1", {}).get("median")
        row["ms_b32"] = result.latency_ms.get("32", {}).get("median")
        row["speedup_b1"] = result.speedup.get("1")
        row["speedup_b32"] = result.speedup.get("32")
        row["macs"] = result.macs
        row["top1"] = evaluate(onnxprune.load(row["path"]), part.test, part.preprocess).top1
        row["threads"] = result.threads
        print(json.dumps({key: value for key, value in row.items() if key != "path"}), flush=True)
    (OUT / f"latency_{part.name}.json").write_text(json.dumps(rows + part.refused, indent=1))
    part.rows = rows


def vgg(folder: Path) -> Part:
    dense = onnxprune.load(VGG)
    part = Part("vgg", VGG, load_data(SHARED / "data/cifar10/train.zip"), load_data(SHARED / "data/cifar10/test.zip"),
                preprocess_for(dense, **CIFAR), SGD, folder)  # fmt: skip
    for speedup in torch_pruning_rows(part):
        if speedup > 1.05:
            onnxprune_row(part, f"onnxprune --speedup {speedup:.2f}", speedup=round(speedup, 2))
    onnxprune_row(part, "onnxprune --speedup 2", speedup=2.0)
    onnxprune_row(part, "onnxprune --target-macs 0.35", target_macs=0.35)
    return part


def alexnet(folder: Path) -> Part:
    from onnxprune.demo import spectrograms

    dense = onnxprune.load(ALEXNET)
    preprocess = preprocess_for(dense)
    root = spectrograms.generate(train_per_class=300, test_per_class=50)
    part = Part("alexnet", ALEXNET, load_data(root / "train", size=preprocess.image_size),
                load_data(root / "test", size=preprocess.image_size), preprocess, ADAM, folder)  # fmt: skip
    for speedup in (1.3, 1.6, 2.0):
        onnxprune_row(part, f"onnxprune --speedup {speedup:g}", speedup=speedup)
    return part


def resnet(folder: Path) -> Part:
    dense = onnxprune.load(RESNET)
    part = Part("resnet", RESNET, load_data(SHARED / "data/cifar10/train.zip"),
                load_data(SHARED / "data/cifar10/test.zip"), preprocess_for(dense, **CIFAR), SGD, folder)  # fmt: skip
    for speedup in (1.5, 2.0):
        onnxprune_row(part, f"onnxprune --speedup {speedup:g}", speedup=speedup)
    return part


def pareto(parts: list[Part], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(parts), 2, figsize=(11, 3.6 * len(parts)), squeeze=False)
    for row_axes, part in zip(axes, parts, strict=True):
        for axis, batch in zip(row_axes, ("1", "32"), strict=True):
            for row in part.rows:
                if row.get(f"ms_b{batch}") is None:
                    continue
                int8 = row["row"].endswith("+ int8")
                family = "dense" if row["row"].startswith("dense") else (
                    "Torch-Pruning" if row["row"].startswith("Torch") else "onnxprune")  # fmt: skip
                color = {"dense": "black", "Torch-Pruning": "tab:red", "onnxprune": "tab:blue"}[family]
                axis.scatter(row[f"ms_b{batch}"], 100 * row["top1"], color=color, marker="s" if int8 else "o",
                             label=f"{family}{' int8' if int8 else ''}")  # fmt: skip
            handles, labels = axis.get_legend_handles_labels()
            unique = dict(zip(labels, handles, strict=True))
            axis.legend(unique.values(), unique.keys(), fontsize=8)
            axis.set_xlabel(f"median latency at batch {batch} (ms, onnxruntime, {part.rows[0]['threads']} threads)")
            axis.set_ylabel("top-1 (%)")
            axis.set_title(f"{part.name}: top-1 against measured latency, batch {batch}")
            axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="vgg,alexnet,resnet")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    builders = {"vgg": vgg, "alexnet": alexnet, "resnet": resnet}
    parts = []
    for name in args.parts.split(","):
        folder = OUT / "latency_models" / name  # kept (benchmarks/out is not tracked) to bench again
        folder.mkdir(parents=True, exist_ok=True)
        part = builders[name](folder)
        measure(part)
        parts.append(part)
    pareto(parts, ROOT / "docs" / "images" / "latency_pareto.png")


if __name__ == "__main__":
    main()
