"""What structured pruning buys in onnxruntime: dense vs 40% filters removed vs 80% unstructured.

A VGG-style network for 32x32 images (VGG11 layout with BatchNorm, random weights: latency does
not depend on training), exported by torch.onnx (TorchScript, opset 13). Each model gets its own
onnxruntime session, one at a time (never two computing at once on 2 cores); they take
turns in rounds, after a warm-up, and the median of all runs at batch 1 and 32 counts. The efficiency of the cut is the
speedup divided by the MAC reduction (1.0: latency falls exactly with the arithmetic).

Usage:  .venv/bin/python benchmarks/structured_latency.py [--runs1 300] [--runs32 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import onnxprune
from onnxprune.graph.inspection import describe
from onnxprune.graph.proto import session

VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


def vgg(width: float = 1.0) -> nn.Module:
    layers, channels = [], 3
    for item in VGG11:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            out = int(item * width)
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
            channels = out
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels, 10)).eval()


def latencies(paths: dict[str, Path], batch: int, runs: int, rounds: int = 5) -> dict[str, float]:
    """Median milliseconds per call; models take turns (round-robin) so drifts hit all alike.

    Only one session computes at any moment; each is warmed up before its first timed turn.
    """
    sessions = {name: session(path) for name, path in paths.items()}
    inputs = np.random.default_rng(0).random((batch, 3, 32, 32), dtype=np.float32)
    times = {name: [] for name in paths}
    for run in sessions.values():
        for _ in range(max(3, runs // 10)):
            run.run(None, {run.get_inputs()[0].name: inputs})
    for _ in range(rounds):
        for name, run in sessions.items():
            feed = {run.get_inputs()[0].name: inputs}
            for _ in range(runs // rounds):
                started = time.perf_counter()
                run.run(None, feed)
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) * 1000 for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs1", type=int, default=300)
    parser.add_argument("--runs32", type=int, default=30)
    parser.add_argument("--round-to", type=int, default=16)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        dense = folder / "dense.onnx"
        torch.onnx.export(
            vgg(), (torch.randn(1, 3, 32, 32),), str(dense), dynamo=False, opset_version=13,
            input_names=["images"], output_names=["logits"], dynamic_axes={"images": {0: "n"}, "logits": {0: "n"}},
        )  # fmt: skip
        model = onnxprune.load(dense)
        filters = folder / "filters40.onnx"
        onnxprune.save(
            onnxprune.prune(model, 0.4, method="l1-filter", keep_masks=False, round_to=args.round_to), filters
        )
        unstructured = folder / "unstructured80.onnx"
        onnxprune.save(onnxprune.prune(model, 0.8, scope="global", keep_masks=False), unstructured)
        paths = {"dense": dense, "40% filters removed": filters, "80% unstructured": unstructured}
        batch1, batch32 = latencies(paths, 1, args.runs1), latencies(paths, 32, args.runs32)
        rows = {}
        for name, path in paths.items():
            totals = describe(onnxprune.load(path))["totals"]
            rows[name] = {
                "params": totals["prunable_params"] - totals["prunable_zeros"],
                "macs": totals["macs"],
                "bytes": path.stat().st_size,
                "ms_batch1": batch1[name],
                "ms_batch32": batch32[name],
            }
    base = rows["dense"]
    for name, row in rows.items():
        row["speedup_batch1"] = base["ms_batch1"] / row["ms_batch1"]
        row["speedup_batch32"] = base["ms_batch32"] / row["ms_batch32"]
        row["mac_reduction"] = base["macs"] / row["macs"]
        for batch in ("batch1", "batch32"):
            row[f"efficiency_{batch}"] = row[f"speedup_{batch}"] / row["mac_reduction"]
        print(json.dumps({"model": name, **{k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}}))
    print(f"threads: onnxruntime default, torch {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
