"""A zoo of torchvision classification architectures, exported as PyTorch users export them.

Weights are seeded random (nothing is downloaded), BatchNorm layers get non-trivial statistics
(scale, shift, running mean and variance drawn at random) so that folding and compaction are
tested on real numbers, and every model is exported with both of torch's exporters:

- ``dynamo``: ``torch.onnx.export(model, args, path)`` with torch's defaults (the dynamo exporter,
  opset 18+, weights in an external ``.onnx.data`` file);
- ``torchscript``: ``torch.onnx.export(..., dynamo=False)`` (opset 20 with torch 2.13, BatchNorm folded into
  Conv in eval mode, identical tensors stored once and fed through ``Identity`` nodes).

The torchvision wheel beside the project's CPU torch fails to import its compiled operators
(``torchvision::nms``); its model classes only need ``torchvision._meta_registrations`` stubbed.
Used by the tests (a fast subset) and by ``benchmarks/zoo_support.py`` (the whole zoo).
"""

from __future__ import annotations

import contextlib
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

EXPORTERS = ("dynamo", "torchscript")
DYNAMIC_AXES = {"input": {0: "batch"}, "logits": {0: "batch"}}


@dataclass(frozen=True)
class Architecture:
    """One zoo entry: a torchvision constructor, its keyword arguments and an input side."""

    name: str
    constructor: str
    kwargs: tuple = ()
    size: int = 64
    family: str = ""


# Input sides are the smallest each architecture accepts with all its stages intact, to keep the
# zoo fast on a 2-core machine; the graphs are the architectures' own. VGG and AlexNet end in an
# adaptive pool to 7x7 / 6x6 that the TorchScript exporter exports only from 224x224 inputs.
ZOO = [
    Architecture("resnet18", "resnet18", family="ResNet"),
    Architecture("resnet50", "resnet50", family="ResNet"),
    Architecture("resnext50_32x4d", "resnext50_32x4d", family="ResNeXt"),
    Architecture("wide_resnet50_2", "wide_resnet50_2", family="Wide ResNet"),
    Architecture("vgg11_bn", "vgg11_bn", size=224, family="VGG-BN"),
    Architecture("vgg16_bn", "vgg16_bn", size=224, family="VGG-BN"),
    Architecture("alexnet", "alexnet", size=224, family="AlexNet"),
    Architecture("mobilenet_v2", "mobilenet_v2", family="MobileNetV2"),
    Architecture("mobilenet_v3_small", "mobilenet_v3_small", family="MobileNetV3"),
    Architecture("mobilenet_v3_large", "mobilenet_v3_large", family="MobileNetV3"),
    Architecture("efficientnet_b0", "efficientnet_b0", family="EfficientNet"),
    Architecture("efficientnet_v2_s", "efficientnet_v2_s", family="EfficientNetV2"),
    Architecture("regnet_x_400mf", "regnet_x_400mf", family="RegNet"),
    Architecture("regnet_y_400mf", "regnet_y_400mf", family="RegNet"),
    Architecture("shufflenet_v2_x0_5", "shufflenet_v2_x0_5", family="ShuffleNetV2"),
    Architecture("shufflenet_v2_x1_0", "shufflenet_v2_x1_0", family="ShuffleNetV2"),
    Architecture("squeezenet1_0", "squeezenet1_0", family="SqueezeNet"),
    Architecture("squeezenet1_1", "squeezenet1_1", family="SqueezeNet"),
    Architecture("densenet121", "densenet121", family="DenseNet"),
    Architecture("googlenet", "googlenet", kwargs=(("aux_logits", False), ("init_weights", True)), family="GoogLeNet"),
    Architecture(
        "inception_v3", "inception_v3", kwargs=(("aux_logits", False), ("init_weights", True)), size=75,
        family="Inception",
    ),
    Architecture("mnasnet0_5", "mnasnet0_5", family="MNASNet"),
    Architecture("mnasnet1_0", "mnasnet1_0", family="MNASNet"),
    Architecture("convnext_tiny", "convnext_tiny", family="ConvNeXt"),
    Architecture("vit_b_16", "vit_b_16", kwargs=(("image_size", 32),), size=32, family="ViT"),
    Architecture("swin_t", "swin_t", size=64, family="Swin"),
    # the same classes at toy sizes, for CI: attention heads, LayerNorm over channels, class token
    Architecture("vit_tiny", "VisionTransformer", kwargs=(("image_size", 32), ("patch_size", 8), ("num_layers", 2),
                 ("num_heads", 2), ("hidden_dim", 32), ("mlp_dim", 64)), size=32, family="ViT (toy size)"),
    Architecture("convnext_toy", "ConvNeXt", kwargs=(("block_setting", "toy"),), size=32,
                 family="ConvNeXt (toy size)"),
]  # fmt: skip
BY_NAME = {architecture.name: architecture for architecture in ZOO}
# A fast subset for CI: one model of each structural kind the compaction must follow.
FAST = [
    "resnet18",
    "mobilenet_v3_small",
    "shufflenet_v2_x0_5",
    "squeezenet1_1",
    "densenet121",
    "vit_tiny",
    "convnext_toy",
]


@contextlib.contextmanager
def torchvision_models():
    """Import torchvision.models despite a torchvision built for another torch.

    Only the model classes are needed; the compiled operators (nms, roi_align) stay unusable.
    """
    stubbed = "torchvision._meta_registrations" not in sys.modules
    if stubbed:
        sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
    try:
        import torchvision.models as models

        yield models
    finally:
        if stubbed:
            sys.modules.pop("torchvision._meta_registrations", None)


def build(name: str, seed: int = 0, classes: int = 10) -> torch.nn.Module:
    """The architecture `name` with seeded random weights and BatchNorm statistics, in eval mode."""
    architecture = BY_NAME[name]
    torch.manual_seed(seed)
    with torchvision_models() as models:
        constructor = getattr(models, architecture.constructor)
        kwargs = dict(architecture.kwargs)
        if kwargs.get("block_setting") == "toy":  # two ConvNeXt stages of one block each
            from torchvision.models.convnext import CNBlockConfig

            kwargs["block_setting"] = [CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)]
        if architecture.constructor[0].isupper():  # a model class: no `weights` argument
            module = constructor(num_classes=classes, **kwargs)
        else:
            module = constructor(weights=None, num_classes=classes, **kwargs)
    generator = torch.Generator().manual_seed(seed + 1)
    for layer in module.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            channels = layer.num_features
            with torch.no_grad():
                layer.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
                layer.bias.copy_(torch.randn(channels, generator=generator) * 0.1)
                layer.running_mean.copy_(torch.randn(channels, generator=generator) * 0.1)
                layer.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
    return module.eval()


def example_input(name: str, batch: int = 1) -> torch.Tensor:
    """A seeded input batch of the architecture's zoo size."""
    side = BY_NAME[name].size
    return torch.rand((batch, 3, side, side), generator=torch.Generator().manual_seed(7))


def export(name: str, exporter: str, folder: Path, seed: int = 0) -> Path:
    """Export the zoo model `name` with `exporter` ("dynamo" or "torchscript") into `folder`.

    Both exports declare a symbolic batch dimension, as users who batch do.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; known: {', '.join(EXPORTERS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}_{exporter}.onnx"
    module = build(name, seed)
    args = (example_input(name),)
    names = {"input_names": ["input"], "output_names": ["logits"]}
    # no torch.no_grad() around the export, as in torch's examples: under it, attention takes its
    # fused fast path (aten::_native_multi_head_attention), which the TorchScript exporter refuses
    if exporter == "torchscript":
        torch.onnx.export(module, args, str(path), dynamic_axes=DYNAMIC_AXES, dynamo=False, **names)
        return path
    try:  # a dynamic batch as torch.export spells it
        batch = torch.export.Dim("batch", min=1, max=1024)
        torch.onnx.export(module, args, str(path), dynamic_shapes=({0: batch},), **names)
    except Exception:  # ConvNeXt: "Invalid ranges [2:1]"; the older spelling lets torch.export choose
        torch.onnx.export(module, args, str(path), dynamic_axes=DYNAMIC_AXES, **names)
    return path


# --- the checks every zoo model goes through (tests/test_zoo.py, benchmarks/zoo_support.py) ---

STAGES = ("load", "prune", "compact", "l1-filter")
COMPACT_RTOL = 1e-5


def relative_difference(want: list[np.ndarray], got: list[np.ndarray]) -> float:
    """max |want - got| / max |want| over all outputs."""
    worst = 0.0
    for a, b in zip(want, got, strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        worst = max(worst, float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-12)))
    return worst


def run_onnx(path_or_proto, inputs: np.ndarray) -> list[np.ndarray]:
    """The outputs of a model file (or proto) in onnxruntime."""
    from onnxprune.graph.verify import session

    source = path_or_proto if isinstance(path_or_proto, Path) else path_or_proto.SerializeToString()
    run = session(source)
    return run.run(None, {run.get_inputs()[0].name: inputs})


def zero_random_filters(model, fraction: float, seed: int = 0) -> dict[str, np.ndarray]:
    """A `fraction` of the filters of every Conv and the neurons of every fully-connected layer set
    to zero (weights only, biases kept), as another tool would leave them."""
    rng = np.random.default_rng(seed)
    values = {}
    for layer in model.layers:
        weight = np.moveaxis(model.weight_array(layer).copy(), layer.out_axis, 0)
        count = int(round(fraction * weight.shape[0]))
        if count == 0:
            continue
        weight[rng.choice(weight.shape[0], count, replace=False)] = 0
        values[layer.weight] = np.moveaxis(weight, 0, layer.out_axis)
    return values


def stage_load(path: Path, work: Path) -> dict:
    import onnxprune
    from onnxprune.graph.inspection import describe
    from onnxprune.graph.verify import random_batch, torch_outputs
    from onnxprune.workbench.convert import to_torch

    model = onnxprune.load(path)
    totals = describe(model)["totals"]
    torch_model = to_torch(model)
    inputs = random_batch(model.input, 2)
    difference = relative_difference(run_onnx(path, inputs), torch_outputs(torch_model.module, inputs))
    if difference > 1e-4:
        raise AssertionError(f"torch differs from onnxruntime on the dense model by {difference:.2e} (relative)")
    return {"layers": len(model.layers), "params": totals["prunable_params"], "torch_vs_ort": difference}


def stage_prune(path: Path, work: Path) -> dict:
    import onnxprune

    model = onnxprune.load(path)
    result = onnxprune.prune(model, 0.5, scope="global", keep_masks=False)
    output = work / "pruned.onnx"
    report = onnxprune.save(result, output, release=True)
    written = onnxprune.load(output)
    weights = sum(layer.numel for layer in written.layers)
    zeros = sum(int(np.size(a) - np.count_nonzero(a)) for a in map(written.weight_array, written.layers))
    return {"sparsity": zeros / weights, "max_abs_diff": report.max_abs_diff}


def stage_compact(path: Path, work: Path) -> dict:
    import onnxprune
    from onnxprune.graph.model import from_proto
    from onnxprune.graph.storage import write_back
    from onnxprune.graph.structure import compact
    from onnxprune.graph.verify import random_batch

    model = onnxprune.load(path)
    masked_proto = write_back(model, zero_random_filters(model, 0.3))
    masked = from_proto(masked_proto, path=None)
    compacted, report = compact(masked)
    inputs = random_batch(model.input, 2)
    difference = relative_difference(run_onnx(masked_proto, inputs), run_onnx(compacted, inputs))
    before = masked.layer_total("numel")
    after = from_proto(compacted).layer_total("numel")
    if difference > COMPACT_RTOL:
        raise AssertionError(f"compacted output differs from the masked model by {difference:.2e} (relative)")
    if after >= before:
        reasons = sorted(set(report.skipped.values()))[:2]
        raise AssertionError(f"nothing removed ({'; '.join(reasons) or 'no zero unit found'})")
    return {"params_ratio": after / before, "relative_difference": difference, "removed": sum(report.removed.values())}


def stage_l1_filter(path: Path, work: Path) -> dict:
    import onnxprune

    model = onnxprune.load(path)
    result = onnxprune.prune(model, 0.3, method="l1-filter", keep_masks=False)
    output = work / "l1.onnx"
    report = onnxprune.save(result, output)
    before = model.layer_total("numel")
    after = onnxprune.load(output).layer_total("numel")
    if after >= before:
        raise AssertionError("l1-filter wrote a model no smaller than the input")
    return {"params_ratio": after / before, "max_abs_diff": report.max_abs_diff}


STAGE_FUNCTIONS = {"load": stage_load, "prune": stage_prune, "compact": stage_compact, "l1-filter": stage_l1_filter}
