"""Where int8 time goes in onnxruntime: float against static int8, node by node (issue 28).

For each model: `onnxprune quantize`'s defaults (BatchNormalization folded, QDQ, per-channel
int8 weights, uint8 activations, 500 stratified calibration samples), then onnxruntime's
profiler on the float and the int8 session at batch 32 (2 threads, 200 calls each, the same
random batch): the kernel time per operator type, and per convolution the float kernel against
its QLinearConv with the layer's widths. Then the forms side by side end to end
(`onnxprune.measure.bench`, batch 1 and 32): float; int8 with every layer quantized
(`--keep-float none`); int8 with the layers this profile found slower left float; and
`quantize`'s default (`--keep-float auto`, which measures the same thing itself).

Models: the VGG13 reference, its `l1-filter --speedup 2` and `--target-macs 0.35` prunes (one
shot: latency does not depend on fine-tuning) and the AlexNet-shaped spectrogram model (fixed
batch 1: profiled and timed at batch 32 on a symbolic-batch copy).

Usage:  .venv/bin/python benchmarks/int8_profile.py  (writes benchmarks/out/int8_profile.json)
"""

from __future__ import annotations

import collections
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
OUT = ROOT / "benchmarks" / "out"
CIFAR = {"mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)}
BATCH = 32
CALLS = 200

import onnxprune  # noqa: E402
from onnxprune.graph.model import with_symbolic_batch  # noqa: E402
from onnxprune.measure.bench import bench  # noqa: E402
from onnxprune.measure.quantize import quantize  # noqa: E402
from onnxprune.workbench.data import load_data, preprocess_for  # noqa: E402


def profile(path: Path, folder: Path) -> list[dict]:
    """onnxruntime's per-node kernel events (name, op, microseconds per call) at BATCH."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.enable_profiling = True
    options.profile_file_prefix = str(folder / path.stem)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    shape = [BATCH] + [dim if isinstance(dim, int) else 1 for dim in spec.shape[1:]]
    feed = {spec.name: np.random.default_rng(0).random(shape, dtype=np.float32)}
    for _ in range(20):
        session.run(None, feed)
    session.end_profiling()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(CALLS):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[tuple[str, str], float] = collections.defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            totals[(event["name"].removesuffix("_kernel_time"), event["args"]["op_name"])] += event["dur"]
    return [{"node": node, "op": op, "us": total / CALLS} for (node, op), total in totals.items()]


def conv_outputs(proto: onnx.ModelProto) -> dict[str, str]:
    """{tensor: the Conv it comes from} through BatchNormalization/Relu/Clip, for fused float nodes."""
    consumers = collections.defaultdict(list)
    for node in proto.graph.node:
        for name in node.input:
            consumers[name].append(node)
    owner = {}
    for node in proto.graph.node:
        if node.op_type != "Conv":
            continue
        tensor = node.output[0]
        owner[tensor] = node.name
        while len(consumers[tensor]) == 1 and consumers[tensor][0].op_type in ("BatchNormalization", "Relu", "Clip"):
            tensor = consumers[tensor][0].output[0]
            owner[tensor] = node.name
    return owner


def conv_widths(proto: onnx.ModelProto) -> dict[str, str]:
    weights = {tensor.name: list(tensor.dims) for tensor in proto.graph.initializer}
    return {
        node.name: "{1}->{0}".format(*weights[node.input[1]])
        for node in proto.graph.node
        if node.op_type == "Conv" and node.input[1] in weights
    }


def per_conv(float_events: list[dict], int8_events: list[dict], proto: onnx.ModelProto) -> list[dict]:
    """Float kernel against int8 kernel for every convolution, by the Conv's name."""
    owner = conv_outputs(proto)
    float_us: dict[str, float] = collections.defaultdict(float)
    for event in float_events:
        if event["op"] == "Conv":
            name = event["node"].removesuffix("_nchwc")
            float_us[owner.get(name, name)] += event["us"]
    int8_us: dict[str, float] = collections.defaultdict(float)
    for event in int8_events:
        if event["op"] == "QLinearConv":
            int8_us[event["node"].split("_token")[0]] += event["us"]
    widths = conv_widths(proto)
    return [
        {"conv": name, "widths": widths.get(name, "?"), "float_us": round(float_us[name], 1),
         "int8_us": round(int8_us.get(name, 0.0), 1)}
        for name in widths if name in float_us
    ]  # fmt: skip


def by_op(events: list[dict]) -> dict[str, float]:
    totals: dict[str, float] = collections.defaultdict(float)
    for event in events:
        totals[event["op"]] += event["us"]
    return {op: round(us, 1) for op, us in sorted(totals.items(), key=lambda item: -item[1])}


def study(label: str, path: Path, data, preprocess, folder: Path) -> dict:
    model = onnxprune.load(path)
    int8 = folder / f"{path.stem}_int8.onnx"
    quantize(model, int8, "static", data, preprocess, 500, keep_float="none")
    float_path, int8_path = path, int8
    if model.input.fixed_batch:
        float_path, int8_path = folder / f"{path.stem}_b.onnx", folder / f"{path.stem}_int8_b.onnx"
        onnx.save(with_symbolic_batch(model.proto), str(float_path))
        onnx.save(with_symbolic_batch(onnx.load(str(int8))), str(int8_path))
    float_events, int8_events = profile(float_path, folder), profile(int8_path, folder)
    convs = per_conv(float_events, int8_events, model.proto)
    slower = [row["conv"] for row in convs if row["int8_us"] > row["float_us"]]
    kept = folder / f"{path.stem}_int8_kept.onnx"
    quantize(model, kept, "static", data, preprocess, 500, keep_float=slower or "none")
    auto = folder / f"{path.stem}_int8_auto.onnx"
    report = quantize(model, auto, "static", data, preprocess, 500)
    timed = bench([str(path), str(int8), str(kept), str(auto)], (1, BATCH))
    result = {
        "model": label,
        "float_by_op_us": by_op(float_events),
        "int8_by_op_us": by_op(int8_events),
        "convolutions": convs,
        "slower_in_int8": slower,
        "auto_kept_float": [layer.node for layer in report.kept_float],
        "auto_note": report.notes[0] if report.notes else "",
        "forms": ["float", "int8 (--keep-float none)", "int8, slower layers float", "int8 (--keep-float auto)"],
        "speedup_b1": [timing.speedup.get("1") for timing in timed],
        "speedup_b32": [timing.speedup.get(str(BATCH)) for timing in timed],
    }
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    from onnxprune.demo import spectrograms

    OUT.mkdir(parents=True, exist_ok=True)
    vgg = ROOT / "models" / "vgg13_bn_w025_cifar10.onnx"
    alexnet = ROOT / "models" / "alexnet_spectro.onnx"
    cifar = load_data(SHARED / "data" / "cifar10" / "train.zip")
    cifar_preprocess = preprocess_for(onnxprune.load(vgg), **CIFAR)
    results = []
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        results.append(study("VGG13 dense", vgg, cifar, cifar_preprocess, folder))
        for label, budget in (
            ("VGG13 --speedup 2", {"speedup": 2.0}),
            ("VGG13 --target-macs 0.35", {"target_macs": 0.35}),
        ):
            pruned = folder / f"vgg_{label.split()[-1]}.onnx"
            result = onnxprune.prune(onnxprune.load(vgg), method="l1-filter", bench_batch_size=BATCH, **budget)
            onnxprune.save(result, pruned)
            results.append(study(label, pruned, cifar, cifar_preprocess, folder))
        preprocess = preprocess_for(onnxprune.load(alexnet))
        root = spectrograms.generate(train_per_class=300, test_per_class=50)
        spectra = load_data(root / "train", size=preprocess.image_size)
        results.append(study("AlexNet-shaped dense", alexnet, spectra, preprocess, folder))
    (OUT / "int8_profile.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
