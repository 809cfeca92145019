"""int8 quantization through onnxruntime.quantization, prepared so that it runs faster.

Quantization (`quantize`): static QDQ int8 with calibration batches from the user's data (the
default), or dynamic int8 (weights only; fully-connected models). Weights are quantized
symmetrically, so a pruned zero stays exactly zero. The float model is upgraded to opset 13 on
a copy first (per-channel QDQ needs it; MATLAB exports are opset 8), then pre-processed with
onnxruntime.quantization's `quant_pre_process` (shape inference, and onnxruntime's basic graph
optimisation, which folds BatchNormalization into the Conv before it). Without that folding a
BatchNormalization stays float between a DequantizeLinear and a QuantizeLinear after every
convolution, and the int8 model ran slower than the float one (VGG13 reference at batch 32:
0.61x; folded: 2-2.9x).

`integer_kernels` reads the graph onnxruntime actually runs (`SessionOptions.optimized_model_filepath`)
and lists the compute nodes that stayed float, which is what to look at when int8 is not faster.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.errors import ConfigError
from onnxprune.graph.model import Model, is_quantized, load, model_file_size
from onnxprune.graph.proto import PRUNABLE_OPS, attribute

if TYPE_CHECKING:
    from onnxprune.workbench.data import Dataset, Preprocess

METHODS = ("static", "dynamic")


# compute nodes of onnxruntime's optimized graph, by what they compute in (CPU provider names included)
INTEGER_OPS = frozenset({
    "QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul", "QLinearConvTranspose", "QAttention", "DynamicQuantizeLSTM",
})  # fmt: skip
# a layer is left float when its integer kernel takes this much longer than its float one: one
# layer's profiled time moves by 5-10% between runs (a Gemm of 8.0 and 8.6 µs is a tie)
KERNEL_MARGIN = 1.1
# element-wise nodes onnxruntime fuses into the Conv/Gemm before them (the fused node takes the last output's name)
FUSED_AFTER = frozenset({"BatchNormalization", "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Add"})
FLOAT_COMPUTE_OPS = frozenset({
    "Conv", "FusedConv", "NchwcConv", "ConvTranspose", "Gemm", "FusedGemm", "MatMul", "FusedMatMul",
    "BatchNormalization", "Einsum",
})  # fmt: skip


@dataclass
class KernelCount:
    """What onnxruntime runs a model with: integer and float compute nodes of its optimized graph."""

    integer: list[str] = field(default_factory=list)  # "name (op)"
    float: list[str] = field(default_factory=list)
    conversions: int = 0  # QuantizeLinear / DequantizeLinear nodes left: float <-> int8 each time

    def why_not_faster(self) -> str:
        """One line on what stayed float, or on the slow dynamic kernels (empty when neither applies)."""
        dynamic = [node for node in self.integer if node.endswith(("(ConvInteger)", "(MatMulInteger)"))]
        if dynamic and not self.float:
            return (
                f"dynamic quantization: {len(dynamic)} node(s) quantize their input at every call and run "
                "ConvInteger/MatMulInteger, which onnxruntime's CPU provider does not fuse into its fast integer "
                "kernels; static quantization (QLinearConv, QGemm) is the fast form"
            )
        if not self.float:
            return ""
        shown = ", ".join(self.float[:6]) + (f" and {len(self.float) - 6} more" if len(self.float) > 6 else "")
        return (
            f"{len(self.float)} compute node(s) stayed float in onnxruntime's optimized graph ({shown}), "
            f"{self.conversions} quantize/dequantize conversions around them"
        )


@dataclass
class QuantizeReport:
    """Sizes, zeros kept, kernels, accuracy and speed before and after."""

    output: str
    method: str
    bytes_before: int
    bytes_after: int
    zeros_before: int
    zeros_after: int
    top1_before: float | None = None
    top1_after: float | None = None
    kernels: KernelCount | None = None
    prepared: str = ""  # what the pre-processing did, or why it was skipped
    speedup: dict[str, float] = field(default_factory=dict)  # batch -> float latency / int8 latency
    kept_float: list[KeptFloat] = field(default_factory=list)  # layers left float, and why
    notes: list[str] = field(default_factory=list)


@dataclass
class KeptFloat:
    """A layer left float: given by name, or measured faster in float than as an integer kernel."""

    node: str
    float_us: float | None = None  # its kernel's microseconds per call at `batch`, float and int8
    int8_us: float | None = None
    batch: int | None = None

    def describe(self) -> str:
        """The layer's name, with its measured kernel times where it was measured."""
        if self.float_us is None or self.int8_us is None:
            return self.node
        return f"{self.node} ({_microseconds(self.float_us)} float, {_microseconds(self.int8_us)} int8)"


class _Calibration:
    """onnxruntime's CalibrationDataReader over preprocessed samples."""

    def __init__(self, batches: list[np.ndarray], input_name: str) -> None:
        self.batches = iter(batches)
        self.input_name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {self.input_name: batch}


def quantize(
    model: Model,
    output: str | os.PathLike,
    method: str = "static",
    data: Dataset | None = None,
    preprocess: Preprocess | None = None,
    calibration_samples: int = 256,
    evaluate_data: Dataset | None = None,
    time_batches: tuple[int, ...] = (),
    keep_float: str | Sequence[str] = "auto",
) -> QuantizeReport:
    """Quantize a float model to int8 with onnxruntime.quantization; writes `output` atomically.

    Args:
        model: a loaded float model (pruned or not).
        output: the .onnx file to write.
        method: "static" (QDQ, activations calibrated on `data`) or "dynamic" (weights only).
        data: calibration samples (`Dataset`), required for static.
        preprocess: how `data` becomes the model's input.
        calibration_samples: how many samples calibrate the activation ranges.
        evaluate_data: samples to report top-1 before and after on (optional).
        time_batches: batch sizes at which to time the int8 model against the float one (a short
            `onnxprune.measure.bench` run); a note says when it is not faster, and why.
        keep_float: layers to leave float. "auto" (the default) measures: onnxruntime's profiler
            times every convolution and matrix product float and int8 at batch 32 (the largest of
            `time_batches` when given); those whose integer kernel is slower (a first convolution
            of 3 channels: 3.3x slower on the VGG13 reference) are left float when the whole
            model then measures faster side by side. "none": every layer int8. A list (or a comma-separated string) of
            Conv/Gemm/MatMul node names: those layers.
    """
    from onnxprune.graph.model import check_output_path, conversion_copy
    from onnxprune.graph.storage import save_model_file

    if method not in METHODS:
        raise ConfigError(f"--method must be static or dynamic, got '{method}'")
    if is_quantized(model.proto):
        raise ConfigError("this model is already quantized; quantize its float version")
    if method == "static" and data is None:
        raise ConfigError("static quantization calibrates on data: give --data (or use --method dynamic)")
    output = check_output_path(model, output)
    named = _named_float_layers(model, keep_float)
    float_copy = _float_copy(model, conversion_copy)
    calibration = _calibration_batches(model, data, preprocess, calibration_samples) if method == "static" else []
    with _quiet_root_logger(), tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "float.onnx"
        onnx.save_model(float_copy, str(source))
        source, prepared = _prepared(source, Path(folder) / "prepared.onnx")
        # the pre-processing may rename a layer (MatMul + Add -> "<name>/MatMulAddFusion"): names are
        # given and reported as the user's model has them, excluded as the prepared graph has them
        renamed = _prepared_names(float_copy, onnx.load(str(source), load_external_data=False))
        target = Path(folder) / "int8.onnx"
        _quantize_file(
            source, target, method, calibration, model.input.name, [renamed.get(name, name) for name in named]
        )
        _check_left_float(onnx.load(str(target), load_external_data=False), named, renamed)
        kept, note = [KeptFloat(name) for name in named], ""
        if keep_float == "auto":
            batch = max(time_batches, default=32)
            target, kept, note = _keep_slow_layers_float(model, source, target, batch, method, calibration, renamed)
        quantized = onnx.load(str(target))
    save_model_file(output, quantized, external_data=model.external_data)
    report = QuantizeReport(
        output=str(output),
        method=method,
        bytes_before=model_file_size(model.path) if model.path else model.proto.ByteSize(),
        bytes_after=model_file_size(output),
        zeros_before=_weight_zeros(model.proto, float_only=True),
        zeros_after=_weight_zeros(quantized, float_only=False),
        kernels=integer_kernels(output),
        prepared=prepared,
        kept_float=kept,
    )
    if note:
        report.notes.append(note)
    if time_batches:
        _time_against_float(model, output, time_batches, report)
    if evaluate_data is not None:
        from onnxprune.workbench.evaluate import evaluate

        report.top1_before = evaluate(model, evaluate_data, preprocess).top1
        report.top1_after = evaluate(load(output), evaluate_data, preprocess).top1
    return report


def _named_float_layers(model: Model, keep_float: str | Sequence[str]) -> list[str]:
    """The layers `keep_float` names ("auto" and "none" name none); an unknown or empty name is refused."""
    if isinstance(keep_float, str):
        if keep_float in ("auto", "none"):
            return []
        keep_float = keep_float.split(",")
    given = [name.strip() for name in keep_float]
    layers = [node.name for node in model.proto.graph.node if node.op_type in PRUNABLE_OPS and node.name]
    unknown = [name for name in given if name not in layers]
    if unknown or not given:
        shown = ", ".join(layers[:8]) + (f" and {len(layers) - 8} more" if len(layers) > 8 else "")
        raise ConfigError(
            f"--keep-float names '{unknown[0] if unknown else ''}', which is not a Conv, Gemm or MatMul node of this "
            f"model (its layers: {shown or 'none named'}); give 'auto', 'none' or layer names separated by commas"
        )
    return given


def _quantize_file(
    source: Path, target: Path, method: str, calibration: list[np.ndarray], input_name: str, excluded: list[str]
) -> None:
    """onnxruntime.quantization on `source`, leaving the `excluded` nodes float."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    if method == "static":
        quantize_static(
            str(source), str(target), _Calibration(calibration, input_name), quant_format=QuantFormat.QDQ,
            per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
            nodes_to_exclude=excluded, extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
        )  # fmt: skip
    else:
        quantize_dynamic(
            str(source), str(target), weight_type=QuantType.QInt8, per_channel=False, nodes_to_exclude=excluded
        )


def _keep_slow_layers_float(
    model: Model, source: Path, all_int8: Path, batch: int, method: str, calibration: list[np.ndarray],
    renamed: dict[str, str],
) -> tuple[Path, list[KeptFloat], str]:  # fmt: skip
    """(the faster of all-int8 and int8 with its slow layers float, the layers kept float, a note).

    onnxruntime's integer kernels lose to its float ones on some layers (a 3-channel first
    convolution runs im2col on 27-wide rows); which ones depends on the CPU and the widths, so
    they are measured: each layer's kernel time in both graphs, then the whole model both ways.
    `renamed` maps the user's layer names to the prepared graph's (`_prepared_names`).
    """
    from onnxprune.workbench.timing import SPREAD, time_side_by_side

    times = _layer_kernel_times(load(source), load(all_int8), batch)
    if not times:
        return (
            all_int8,
            [],
            (
                f"every layer is int8: onnxruntime's profiler could not time the layers at batch {batch} "
                "(unnamed nodes, or a graph that fixes another batch); --keep-float names layers to leave float"
            ),
        )
    original = {prepared: name for name, prepared in renamed.items()}
    slower = [
        KeptFloat(original.get(name, name), f, q, batch) for name, (f, q) in times.items() if q > KERNEL_MARGIN * f
    ]
    if not slower:
        return all_int8, [], ""
    mixed = all_int8.with_name("int8_mixed.onnx")
    try:
        _quantize_file(source, mixed, method, calibration, model.input.name, [renamed.get(layer.node, layer.node)
                                                                               for layer in slower])  # fmt: skip
    except Exception as error:  # noqa: BLE001 - the all-int8 model stands; the note says why nothing is float
        return all_int8, [], f"every layer is int8: quantizing with slower layers float failed ({error})"
    all_timed, mixed_timed = time_side_by_side([load(all_int8), load(mixed)], (batch,))
    key = str(batch)
    if key not in all_timed.latency_ms or key not in mixed_timed.latency_ms:
        return all_int8, [], f"every layer is int8: the model cannot be timed at batch {batch} to confirm a mixed form"
    gain = all_timed.latency_ms[key]["median"] / mixed_timed.latency_ms[key]["median"]
    layers = ", ".join(layer.describe() for layer in slower[:4]) + (
        f" and {len(slower) - 4} more" if len(slower) > 4 else ""
    )
    if gain <= 1.0 + SPREAD:  # not faster beyond the timing's noise: the smaller, all-int8 model
        why = f"every layer is int8: {layers} ran slower as integer kernels at batch {batch}, but the model "
        return all_int8, [], why + f"with them float measured {gain:.2f}x the all-int8 one (--keep-float to choose)"
    why = f"kept {len(slower)} layer(s) float, faster than their integer kernels at batch {batch}: {layers}; "
    return mixed, slower, why + f"the model is {gain:.2f}x faster than with every layer int8 (--keep-float none)"


def _prepared_names(original: onnx.ModelProto, prepared: onnx.ModelProto) -> dict[str, str]:
    """{layer of the user's model: the same layer in the pre-processed graph}, by name, then by weight."""
    layers = [node for node in prepared.graph.node if node.op_type in PRUNABLE_OPS]
    names = {node.name for node in layers}
    by_weight = {name: node.name for node in layers for name in node.input[1:2]}
    renamed = {}
    for node in original.graph.node:
        if node.op_type not in PRUNABLE_OPS or not node.name:
            continue
        fused = next((name for name in names if name.startswith(node.name + "/")), None)
        weight = by_weight.get(node.input[1]) if len(node.input) > 1 else None
        renamed[node.name] = node.name if node.name in names else fused or weight or node.name
    return renamed


def _check_left_float(quantized: onnx.ModelProto, named: list[str], renamed: dict[str, str]) -> None:
    """Every layer `--keep-float` named still computes in float: refused in one line where it does not."""
    initializers = {tensor.name for tensor in quantized.graph.initializer}
    floating = {
        node.name for node in quantized.graph.node
        if node.op_type in PRUNABLE_OPS and len(node.input) > 1 and node.input[1] in initializers
    }  # fmt: skip
    for name in named:
        if renamed.get(name, name) not in floating:
            raise ConfigError(
                f"--keep-float: layer '{name}' could not be left float (onnxruntime's pre-processing merged it "
                "into another node); name another layer, or use --keep-float auto"
            )


def _layer_kernel_times(float_model: Model, int8_model: Model, batch: int) -> dict[str, tuple[float, float]]:
    """{layer: (float kernel µs, int8 kernel µs)} per call at `batch`, from onnxruntime's profiler.

    onnxruntime renames what it fuses: a float Conv+Relu runs as a node named after its output
    ("/5/Relu_output_0_nchwc"), a Gemm+Relu as "fused /12/Gemm", a QLinearConv as the Conv's
    name with "_token_N" after the layout transform; all are traced back to the float graph's layer.
    """
    from onnxprune.workbench.timing import node_times

    owner = _layer_of_tensor(float_model.proto)
    float_us = _kernel_times_by_layer(node_times(float_model, batch), owner, FLOAT_COMPUTE_OPS)
    int8_us = _kernel_times_by_layer(node_times(int8_model, batch), owner, INTEGER_OPS)
    return {layer: (float_us[layer], int8_us[layer]) for layer in float_us if layer in int8_us}


# the nodes onnxruntime.quantization's dynamic form puts around a ConvInteger/MatMulInteger, by the
# suffix it names them with: part of the layer's int8 cost (the float side's bias and scale are fused)
DYNAMIC_PARTS = ("_quant_scales_mul", "_quant_output_scale_mul", "_MatMul_quant", "_quant", "_output_quantized_cast",
                 "_bias_add")  # fmt: skip


def _kernel_times_by_layer(
    times: dict[str, tuple[str, float]], owner: dict[str, str], ops: frozenset[str]
) -> dict[str, float]:
    """{layer: µs} of the kernels in `ops` (and the dynamic form's parts), names stripped of what onnxruntime adds."""
    by_layer: dict[str, float] = {}
    for name, (op, microseconds) in times.items():
        base = re.sub(r"(_token_\d+)+$", "", name.removeprefix("fused ")).removesuffix("_nchwc")
        part = next((suffix for suffix in DYNAMIC_PARTS if base.endswith(suffix)), None)
        layer = owner.get(base.removesuffix(part) if part else base)
        if layer and (op in ops or (part and ops is INTEGER_OPS)):
            by_layer[layer] = by_layer.get(layer, 0.0) + microseconds
    return by_layer


def _layer_of_tensor(proto: onnx.ModelProto) -> dict[str, str]:
    """{layer name, or a tensor it produces through the element-wise nodes onnxruntime fuses: layer}.

    A tensor two layers reach (a residual Add after a convolution and its shortcut) is left out:
    which of them onnxruntime fused the Add into is not known from the name, and a kernel's time
    credited to the wrong layer would be worse than none.
    """
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    claims: dict[str, set[str]] = {}
    for node in proto.graph.node:
        if node.op_type not in PRUNABLE_OPS:
            continue
        tensor = node.output[0]
        while True:
            claims.setdefault(tensor, set()).add(node.name)
            following = consumers.get(tensor, [])
            if len(following) != 1 or following[0].op_type not in FUSED_AFTER:
                break
            tensor = following[0].output[0]
    owner = {tensor: next(iter(layers)) for tensor, layers in claims.items() if len(layers) == 1}
    owner.update({node.name: node.name for node in proto.graph.node if node.op_type in PRUNABLE_OPS})
    return owner


def _microseconds(value: float) -> str:
    return f"{value:.0f} µs" if value >= 10 else f"{value:.1f} µs"


def _prepared(source: Path, target: Path) -> tuple[Path, str]:
    """(the model to quantize, what was done): `quant_pre_process` with optimisation, else without.

    Symbolic shape inference is left out (it serves transformer graphs and fails on some
    exports); where onnxruntime's optimisation fails on a graph, shape inference alone is tried,
    and where that fails too the model is quantized as it is, and the report says so.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    attempts = (
        ("BatchNormalization folded, shapes inferred (quant_pre_process)", {}),
        ("shapes inferred; onnxruntime's optimisation failed on this graph", {"skip_optimization": True}),
    )
    for done, skipped in attempts:
        try:
            quant_pre_process(str(source), str(target), skip_symbolic_shape=True, **skipped)
            return target, done
        except Exception:  # noqa: BLE001 - any failure of the optional preparation: try less of it
            continue
    return source, "not pre-processed: quant_pre_process failed on this graph"


def integer_kernels(path: str | os.PathLike) -> KernelCount:
    """The compute nodes of the graph onnxruntime's CPU provider runs for `path`, integer or float."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as folder:
        optimized = Path(folder) / "optimized.onnx"
        options = ort.SessionOptions()
        options.log_severity_level = 4  # the "hardware specific optimizations" warning of saving the graph
        options.optimized_model_filepath = str(optimized)
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(str(optimized), load_external_data=False).graph
    count = KernelCount()
    for node in graph.node:
        label = f"{node.name or node.output[0]} ({node.op_type})"
        if node.op_type in INTEGER_OPS:
            count.integer.append(label)
        elif node.op_type in FLOAT_COMPUTE_OPS:
            count.float.append(label)
        elif node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            count.conversions += 1
    return count


def _time_against_float(model: Model, output: Path, batches: tuple[int, ...], report: QuantizeReport) -> None:
    """Time float and int8 side by side (`onnxprune.workbench.timing`); a note when int8 is not faster."""
    from onnxprune.workbench.timing import time_side_by_side

    float_timed, int8_timed = time_side_by_side([model, load(output)], batches)
    report.speedup = {
        batch: float_timed.latency_ms[batch]["median"] / timing["median"]
        for batch, timing in int8_timed.latency_ms.items()
        if batch in float_timed.latency_ms
    }
    slower = {batch: ratio for batch, ratio in report.speedup.items() if ratio < 1.0}
    if slower:
        shown = ", ".join(f"{ratio:.2f}x at batch {batch}" for batch, ratio in slower.items())
        why = report.kernels.why_not_faster() if report.kernels else ""
        report.notes.append(
            f"the int8 model is not faster than the float one here ({shown})"
            + (
                f": {why}"
                if why
                else ": every compute node is integer; the quantize/dequantize at the edges and "
                "the per-call overhead outweigh the arithmetic saved on a model this small"
            )
        )


def _float_copy(model: Model, conversion_copy: Callable[[onnx.ModelProto], onnx.ModelProto]) -> onnx.ModelProto:
    """The model at opset >= 13 with its weights (the conversion copy holds only stand-ins)."""
    copy = conversion_copy(model.proto)
    originals = {tensor.name: tensor for tensor in model.proto.graph.initializer}
    for tensor in copy.graph.initializer:
        if tensor.name in originals and tensor.data_location == onnx.TensorProto.EXTERNAL:
            tensor.CopyFrom(originals[tensor.name])
    return copy


def _calibration_batches(model: Model, data: Dataset, preprocess: Preprocess | None, count: int) -> list[np.ndarray]:
    if preprocess is None:
        from onnxprune.workbench.data import preprocess_for

        preprocess = preprocess_for(model)
    from onnxprune.workbench.data import stratified_sample

    indices = stratified_sample(data.labels, min(count, len(data)), seed=0)  # every class's ranges
    inputs = preprocess(data, np.sort(indices))
    size = 1 if model.input.fixed_batch else 32
    return [inputs[start : start + size] for start in range(0, inputs.shape[0], size)]


def _weight_zeros(proto: onnx.ModelProto, float_only: bool) -> int:
    """Weights of Conv / Gemm / MatMul layers that are (or dequantize to) exactly zero.

    A quantized weight q with zero point z dequantizes to (q - z) x scale: it is zero when q == z.
    With `float_only` False, the float weights of layers left float count too.
    """
    values = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    zeros = 0
    for node in proto.graph.node:
        if node.op_type in PRUNABLE_OPS:
            weight = values.get(node.input[1]) if len(node.input) > 1 else None
            if weight is not None and weight.ndim >= 2 and weight.dtype.kind == "f":
                zeros += int(np.sum(weight == 0))
        elif node.op_type == "DequantizeLinear" and not float_only and node.input[0] in values:
            weight = values[node.input[0]]
            if weight.ndim >= 2:
                axis = attribute(node, "axis", 1)
                point = values.get(node.input[2]) if len(node.input) > 2 else None
                zeros += int(np.sum(weight == _broadcast(point, weight, axis)))
        elif node.op_type in ("MatMulInteger", "ConvInteger") and not float_only and node.input[1] in values:
            weight = values[node.input[1]]
            point = values.get(node.input[3]) if len(node.input) > 3 else None
            zeros += int(np.sum(weight == _broadcast(point, weight, 1 if node.op_type == "MatMulInteger" else 0)))
    return zeros


def _broadcast(point: np.ndarray | None, weight: np.ndarray, axis: int) -> np.ndarray | int:
    if point is None:
        return 0
    point = np.asarray(point)
    if point.ndim == 0 or point.size == 1:
        return point.reshape(()).astype(weight.dtype)
    shape = [1] * weight.ndim
    shape[axis % weight.ndim] = -1
    return point.reshape(shape).astype(weight.dtype)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """Silence onnxruntime.quantization's "pre-process" advice (on the root logger) while it runs.

    The root logger's level is given back after: the MATLAB bridge's Python lives on.
    """
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)
