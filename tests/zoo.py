"""Two zoos of classification architectures, exported as PyTorch users export them.

- **torchvision** (`ZOO`): a hand-kept list of torchvision's classifiers, exported by both of
  torch's exporters (below);
- **timm** (`timm_architecture(family)` for each of `timm_families()`): not chosen by hand.
  timm's registry is enumerated by code: every architecture family (`timm.list_modules()`), its
  smallest registered variant (parameters counted on the meta device), the smallest input side
  among 64-256 px (or its own default) its forward pass accepts, exported three ways
  (`TIMM_EXPORTERS`: dynamo with torch's defaults, TorchScript at opsets 13 and 17).

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
    source: str = "torchvision"


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


def architecture(name_or_architecture: str | Architecture) -> Architecture:
    """The zoo entry for a torchvision zoo name, a timm model name, or an `Architecture` itself."""
    if isinstance(name_or_architecture, Architecture):
        return name_or_architecture
    if name_or_architecture in BY_NAME:
        return BY_NAME[name_or_architecture]
    if name_or_architecture in _TIMM_CHOSEN:
        return _TIMM_CHOSEN[name_or_architecture]
    raise KeyError(f"{name_or_architecture!r} is in neither zoo; torchvision's: {', '.join(BY_NAME)}")


def build(name: str | Architecture, seed: int = 0, classes: int = 10) -> torch.nn.Module:
    """The architecture with seeded random weights and non-trivial normalisation, in eval mode."""
    entry = architecture(name)
    torch.manual_seed(seed)
    if entry.source == "timm":
        module = _timm_module(entry.constructor, entry.size, classes)
    else:
        module = _torchvision_module(entry, classes)
    _randomise_normalisation(module, seed)
    return module.eval()


def _torchvision_module(entry: Architecture, classes: int) -> torch.nn.Module:
    with torchvision_models() as models:
        constructor = getattr(models, entry.constructor)
        kwargs = dict(entry.kwargs)
        if kwargs.get("block_setting") == "toy":  # two ConvNeXt stages of one block each
            from torchvision.models.convnext import CNBlockConfig

            kwargs["block_setting"] = [CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)]
        if entry.constructor[0].isupper():  # a model class: no `weights` argument
            return constructor(num_classes=classes, **kwargs)
        return constructor(weights=None, num_classes=classes, **kwargs)


def _randomise_normalisation(module: torch.nn.Module, seed: int) -> None:
    """Random BatchNorm statistics, norm scales and shifts, layer scales, and zero-initialised weights.

    Left at their initial values (scale 1, shift 0, mean 0, variance 1, timm's layer scales of
    1e-5, heads of zeros) they would make folding, compaction and conversion look exact where
    they are not.
    """
    generator = torch.Generator().manual_seed(seed + 1)

    def uniform(like: torch.Tensor, low: float, high: float) -> torch.Tensor:
        return (torch.rand(like.shape, generator=generator) * (high - low) + low).to(like.dtype)

    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm) and layer.running_mean is not None:
                layer.running_mean.copy_(torch.randn(layer.running_mean.shape, generator=generator) * 0.1)
                layer.running_var.copy_(uniform(layer.running_var, 0.5, 1.5))
            if "Norm" in type(layer).__name__:
                weight, bias = getattr(layer, "weight", None), getattr(layer, "bias", None)
                if isinstance(weight, torch.nn.Parameter) and weight.ndim == 1:
                    weight.copy_(uniform(weight, 0.5, 1.5))
                if isinstance(bias, torch.nn.Parameter) and bias.ndim == 1:
                    bias.copy_(torch.randn(bias.shape, generator=generator) * 0.1)
        for name, parameter in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if ("gamma" in leaf or leaf in ("scale", "layer_scale")) and parameter.ndim <= 1 and parameter.numel() > 1:
                parameter.copy_(uniform(parameter, 0.5, 1.5))
            elif parameter.numel() > 1 and parameter.is_floating_point() and not parameter.any():
                # zero-initialised (MLP-Mixer's and Sequencer's heads, residual projections): an
                # all-zero output would make every comparison exact
                fan_in = parameter[0].numel() if parameter.ndim > 1 else 100
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / fan_in**0.5)


def example_input(name: str | Architecture, batch: int = 1) -> torch.Tensor:
    """A seeded input batch of the architecture's zoo size."""
    side = architecture(name).size
    return torch.rand((batch, 3, side, side), generator=torch.Generator().manual_seed(7))


def export(name: str | Architecture, exporter: str, folder: Path, seed: int = 0) -> Path:
    """Export a zoo model with `exporter` into `folder`.

    `exporter` is "dynamo" (torch's defaults), "torchscript" (`dynamo=False`, torch's default
    opset) or "torchscript<N>" (`dynamo=False`, opset N). Every export declares a symbolic batch
    dimension, as users who batch do.
    """
    entry = architecture(name)
    opset = _torchscript_opset(exporter)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{entry.name}_{exporter}.onnx"
    module = build(entry, seed)
    args = (example_input(entry),)
    names = {"input_names": ["input"], "output_names": ["logits"]}
    # no torch.no_grad() around the export, as in torch's examples: under it, attention takes its
    # fused fast path (aten::_native_multi_head_attention), which the TorchScript exporter refuses
    if exporter != "dynamo":
        try:
            torch.onnx.export(
                module, args, str(path), dynamic_axes=DYNAMIC_AXES, dynamo=False, opset_version=opset, **names
            )
        except Exception as exc:
            if entry.source != "timm" or "scaled_dot_product_attention" not in str(exc):
                raise
            # before opset 14 TorchScript cannot export fused attention; timm's switch for it is
            # what its users turn off to export at such opsets, so the zoo does the same, and says so
            with _timm_unfused_attention():
                module = build(entry, seed)
            torch.onnx.export(
                module, args, str(path), dynamic_axes=DYNAMIC_AXES, dynamo=False, opset_version=opset, **names
            )
            EXPORT_NOTES[path] = "exported with timm.layers.set_fused_attn(False): no fused attention before opset 14"
        return _checked(path)
    try:  # a dynamic batch as torch.export spells it
        batch = torch.export.Dim("batch", min=1, max=1024)
        torch.onnx.export(module, args, str(path), dynamic_shapes=({0: batch},), **names)
    except Exception:  # ConvNeXt: "Invalid ranges [2:1]"; the older spelling lets torch.export choose
        torch.onnx.export(module, args, str(path), dynamic_axes=DYNAMIC_AXES, **names)
    return _checked(path)


def _checked(path: Path) -> Path:
    """The exported file, if onnx.checker accepts it (an exporter can write a graph no runtime loads)."""
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise RuntimeError(f"the exporter wrote an invalid model: {str(exc).splitlines()[0][:200]}") from None
    return path


def _torchscript_opset(exporter: str) -> int | None:
    """The opset an exporter name asks for (None: torch's default), or ValueError for an unknown name."""
    known = (*EXPORTERS, *TIMM_EXPORTERS)
    if exporter == "dynamo" or exporter == "torchscript":
        return None
    if exporter.startswith("torchscript") and exporter[len("torchscript") :].isdigit():
        return int(exporter[len("torchscript") :])
    raise ValueError(f"unknown exporter {exporter!r}; known: {', '.join(known)} (or torchscript<opset>)")


# --- the timm zoo: timm's registry, enumerated ------------------------------------------------

TIMM_EXPORTERS = ("dynamo", "torchscript13", "torchscript17")
# how an export had to differ from torch's and timm's defaults, per written file
EXPORT_NOTES: dict[Path, str] = {}
# input sides tried, smallest first; the first the model's forward pass accepts is its zoo size
TIMM_SIDES = (64, 96, 128, 160, 192, 224, 256)
_TIMM_CHOSEN: dict[str, Architecture] = {}


@contextlib.contextmanager
def _timm():
    """Import timm (a test and benchmark dependency) behind the same torchvision stub."""
    with torchvision_models():
        import timm

        yield timm


@contextlib.contextmanager
def _timm_unfused_attention():
    """Build timm models with plain (unfused) attention inside this block."""
    with _timm():
        from timm.layers import set_fused_attn, use_fused_attn

        before = use_fused_attn()
        set_fused_attn(False)
        try:
            yield
        finally:
            set_fused_attn(before)


def timm_families() -> list[str]:
    """Every architecture family of timm's registry (its model modules), sorted."""
    with _timm() as timm:
        return sorted(timm.list_modules())


def timm_smallest(family: str) -> tuple[str, int] | str:
    """(model name, parameters) of a family's smallest registered variant, or why none builds.

    Parameters are counted on the meta device: no memory, no initialisation.
    """
    with _timm() as timm:
        best, errors = None, []
        for name in timm.list_models(module=family):
            try:
                with torch.device("meta"):
                    model = timm.create_model(name, pretrained=False, num_classes=10)
            except Exception as exc:
                errors.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}")
                continue
            count = sum(p.numel() for p in model.parameters())
            if best is None or count < best[1]:
                best = (name, count)
        if best is None:
            return "no variant builds: " + (errors[0] if errors else "the family lists no model")
        return best


def _timm_module(name: str, side: int, classes: int) -> torch.nn.Module:
    with _timm() as timm:
        try:
            return timm.create_model(name, pretrained=False, num_classes=classes, img_size=side)
        except TypeError:  # no img_size argument: a network of any input size
            return timm.create_model(name, pretrained=False, num_classes=classes)


def timm_architecture(family: str) -> Architecture | str:
    """The zoo entry of a timm family (its smallest variant at the smallest side it runs at), or why none."""
    smallest = timm_smallest(family)
    if isinstance(smallest, str):
        return smallest
    name, _ = smallest
    reasons = []
    for side in _sides(name):
        torch.manual_seed(0)
        try:
            module = _timm_module(name, side, 10).eval()
            with torch.no_grad():
                module(torch.rand(1, 3, side, side))
        except Exception as exc:
            reasons.append(f"{side}: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}")
            continue
        entry = Architecture(name, name, size=side, family=family, source="timm")
        _TIMM_CHOSEN[name] = entry
        return entry
    return f"{name} runs at none of the sides {_sides(name)}: {reasons[-1]}"


def _sides(name: str) -> list[int]:
    """The sides to try: `TIMM_SIDES`, then the one the model was defined for (crossvit's 240)."""
    with _timm() as timm:
        config = timm.get_pretrained_cfg(name)
    default = int(config.input_size[-1]) if config is not None and config.input_size else None
    return [*TIMM_SIDES, default] if default and default not in TIMM_SIDES else list(TIMM_SIDES)


def timm_entry(name: str, side: int, family: str) -> Architecture:
    """A timm zoo entry known already (from a saved table), registered for `architecture(name)`."""
    entry = Architecture(name, name, size=side, family=family, source="timm")
    _TIMM_CHOSEN[name] = entry
    return entry


def timm_sample(count: int, seed: int, max_params: int) -> list[Architecture]:
    """`count` timm families drawn at random (seeded), each as its zoo entry.

    Families whose smallest variant has more than `max_params` parameters, or that no variant of
    builds or runs, are passed over and the next drawn: the sample keeps CI within minutes, and
    the whole registry is the benchmark's (`benchmarks/zoo_support.py --source timm`).
    """
    import random

    families = timm_families()
    random.Random(seed).shuffle(families)
    chosen = []
    for family in families:
        smallest = timm_smallest(family)
        if isinstance(smallest, str) or smallest[1] > max_params:
            continue
        entry = timm_architecture(family)
        if isinstance(entry, Architecture):
            chosen.append(entry)
        if len(chosen) == count:
            break
    return chosen


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
    from onnxprune.graph.proto import session

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
    from onnxprune.workbench.convert import conversion_report, to_torch

    model = onnxprune.load(path)
    totals = describe(model)["totals"]
    conversion = conversion_report(model)  # what `onnxprune inspect --check` prints
    if not conversion["exact"]:
        raise AssertionError(conversion["summary"])
    torch_model = to_torch(model)
    inputs = random_batch(model.input, 2)
    expected = run_onnx(path, inputs)
    if np.ptp(expected[0]) == 0:
        raise AssertionError("the output is the same for every input: the zoo's weights would make every check vacuous")
    difference = relative_difference(expected, torch_outputs(torch_model.module, inputs))
    return {"layers": len(model.layers), "params": totals["prunable_params"], "torch_vs_ort": difference,
            "conversion": conversion["summary"], "node_values_compared": len(conversion["nodes"])}  # fmt: skip


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
    from onnxprune.graph.channels import compact
    from onnxprune.graph.model import from_proto
    from onnxprune.graph.storage import write_back
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
    return {"params_ratio": after / before, "max_abs_diff": report.max_abs_diff, "kept_units": result.kept_whole}


STAGE_FUNCTIONS = {"load": stage_load, "prune": stage_prune, "compact": stage_compact, "l1-filter": stage_l1_filter}
