"""What each form of a model costs in onnxruntime: dense, 80% unstructured, 40% filters removed,
int8 (static), and 40% filters + int8, side by side, for the project's reference models.

For each reference model (VGG13-BN narrow on CIFAR-10, the AlexNet-shaped spectrogram model):
- dense: the shipped model;
- 80% unstructured: global magnitude pruning, fine-tuned `--epochs` on the training data;
- 40% filters: l1-filter, compacted, fine-tuned `--epochs`;
- int8: static QDQ quantization of the dense model, calibrated on 256 training samples;
- 40% filters + int8: the compacted model quantized the same way.
Then `onnxprune.measure.bench` measures every file one session at a time (median latency at batch 1
and 32, throughput, file size raw and zipped, values+mask size, top-1 on the test set). The
90%-unstructured storage forms (dense zeros, sparse initializers, zipped, the onnxprune
package) are compared with the values+mask size of their weights.

Usage:  .venv/bin/python benchmarks/deployment.py [--epochs 1] [--train 10000] [--out benchmarks/out/deployment]
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
from onnxprune.demo import spectrograms  # noqa: E402
from onnxprune.graph.storage import pack, write_model  # noqa: E402
from onnxprune.measure import bench  # noqa: E402
from onnxprune.measure.quantize import quantize  # noqa: E402
from onnxprune.options import (  # noqa: E402
    PruneOptions,
    ScheduleOptions,
    TrainOptions,  # noqa: E402
)
from onnxprune.workbench.data import load_data, preprocess_for  # noqa: E402
from onnxprune.workflow.schedule import run  # noqa: E402

CIFAR = {"mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)}


def reference_models(train_limit: int):
    """(name, path, train, test, preprocess options, learning rate) of each reference model."""
    vgg = ROOT / "models" / "vgg13_bn_w025_cifar10.onnx"
    train = load_data(SHARED / "data/cifar10/train.zip")
    train = train.subset(np.random.default_rng(0).permutation(len(train))[:train_limit])
    test = load_data(SHARED / "data/cifar10/test.zip")
    yield "VGG13-BN x0.25 (CIFAR-10)", vgg, train, test, CIFAR, 0.01
    root = spectrograms.generate()
    alexnet = ROOT / "models" / "alexnet_spectro.onnx"
    yield "AlexNet-shaped (spectrograms)", alexnet, load_data(root / "train"), load_data(root / "test"), {}, 1e-4


def forms(name, path, train, test, options, lr, epochs, folder: Path) -> dict[str, Path]:
    model = onnxprune.load(path)
    preprocess = preprocess_for(model, **options)
    training = TrainOptions(epochs=epochs, batch_size=64, lr=lr, weight_decay=5e-4 if lr > 1e-3 else 0.0)
    files = {"dense": path}
    for label, method, sparsity, scope in (("80% unstructured", "magnitude", 0.8, "global"),
                                           ("40% filters removed", "l1-filter", 0.4, "layer")):  # fmt: skip
        options_ = ScheduleOptions(PruneOptions(sparsity, method=method, scope=scope), train=training)
        result = run(path, folder / label.replace(" ", "_").replace("%", ""), options_, train, test, preprocess)
        files[label] = result.final_path
    for label, source in (("int8 (static)", path), ("40% filters + int8", files["40% filters removed"])):
        target = folder / (label.replace(" ", "_").replace("%", "").replace("(", "").replace(")", "") + ".onnx")
        quantize(onnxprune.load(source), target, "static", train, preprocess, 256)
        files[label] = target
    return files


def storage_forms(path: Path, folder: Path) -> dict:
    """Sizes of a 90%-unstructured model stored every way, against the values+mask size."""
    model = onnxprune.load(path)
    pruned = onnxprune.prune(model, 0.9, scope="global", keep_masks=False)
    dense = folder / "u90_dense.onnx"
    onnxprune.save(pruned, dense)
    sparse = folder / "u90_sparse.onnx"
    write_model(sparse, onnxprune.load(dense).proto, {}, [layer.weight for layer in model.layers])
    package = folder / "u90.onnxz"
    pack(onnxprune.load(dense), package)
    bound = bench.values_mask_bytes(onnxprune.load(dense))
    sizes = {
        "dense zeros": dense.stat().st_size,
        "dense zeros, zipped": bench.zipped_size(dense),
        "sparse initializers": sparse.stat().st_size,
        "sparse initializers, zipped": bench.zipped_size(sparse),
        "onnxprune package (values + bit mask, deflated)": package.stat().st_size,
    }
    return {"values_mask_bytes": bound, "sizes": sizes, "ratios": {k: v / bound for k, v in sizes.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train", type=int, default=10000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "deployment")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, path, train, test, options, lr in reference_models(args.train):
            folder = Path(scratch) / name.split()[0]
            folder.mkdir()
            files = forms(name, path, train, test, options, lr, args.epochs, folder)
            results = bench.bench(list(files.values()), [1, 32], data=test, preprocess_options=options)
            rows = {}
            for label, result in zip(files, results, strict=True):
                rows[label] = {
                    "ms_b1": result.latency_ms.get("1", {}).get("median"),
                    "ms_b32": result.latency_ms.get("32", {}).get("median"),
                    "throughput_b32": result.throughput.get("32"),
                    "speedup_b1": result.speedup.get("1"),
                    "speedup_b32": result.speedup.get("32"),
                    "bytes": result.bytes,
                    "zipped": result.zipped_bytes,
                    "nonzero": result.nonzero,
                    "macs": result.macs,
                    "top1": result.top1,
                }
            report[name] = {"forms": rows, "storage_at_90": storage_forms(path, folder)}
            print(json.dumps({name: report[name]}, indent=1), flush=True)
    (args.out / "deployment.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
