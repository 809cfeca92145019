"""int8 quantization through onnxruntime.quantization.

Quantization (`quantize`): static QDQ int8 with calibration batches from the user's data (the
default), or dynamic int8 (weights only; fully-connected models). Weights are quantized
symmetrically, so a pruned zero stays exactly zero. The float model is upgraded to opset 13 on
a copy first (per-channel QDQ needs it; MATLAB exports are opset 8).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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


@dataclass
class QuantizeReport:
    """Sizes, zeros kept, and accuracy before and after."""

    output: str
    method: str
    bytes_before: int
    bytes_after: int
    zeros_before: int
    zeros_after: int
    top1_before: float | None = None
    top1_after: float | None = None


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
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    from onnxprune.graph.model import check_output_path, conversion_copy
    from onnxprune.graph.storage import save_model_file

    if method not in METHODS:
        raise ConfigError(f"--method must be static or dynamic, got '{method}'")
    if is_quantized(model.proto):
        raise ConfigError("this model is already quantized; quantize its float version")
    if method == "static" and data is None:
        raise ConfigError("static quantization calibrates on data: give --data (or use --method dynamic)")
    output = check_output_path(model, output)
    float_copy = _float_copy(model, conversion_copy)
    with _quiet_root_logger(), tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "float.onnx"
        onnx.save_model(float_copy, str(source))
        target = Path(folder) / "int8.onnx"
        if method == "static":
            reader = _Calibration(_calibration_batches(model, data, preprocess, calibration_samples), model.input.name)
            quantize_static(
                str(source), str(target), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
            )  # fmt: skip
        else:
            quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=False)
        quantized = onnx.load(str(target))
    save_model_file(output, quantized, external_data=model.external_data)
    report = QuantizeReport(
        output=str(output),
        method=method,
        bytes_before=model_file_size(model.path) if model.path else model.proto.ByteSize(),
        bytes_after=model_file_size(output),
        zeros_before=_weight_zeros(model.proto, float_only=True),
        zeros_after=_weight_zeros(quantized, float_only=False),
    )
    if evaluate_data is not None:
        from onnxprune.workbench.evaluate import evaluate

        report.top1_before = evaluate(model, evaluate_data, preprocess).top1
        report.top1_after = evaluate(load(output), evaluate_data, preprocess).top1
    return report


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
    indices = np.random.default_rng(0).permutation(len(data))[: min(count, len(data))]
    inputs = preprocess(data, np.sort(indices))
    size = 1 if model.input.fixed_batch else 32
    return [inputs[start : start + size] for start in range(0, inputs.shape[0], size)]


def _weight_zeros(proto: onnx.ModelProto, float_only: bool) -> int:
    """Weights of Conv / Gemm / MatMul layers that are (or dequantize to) exactly zero.

    A quantized weight q with zero point z dequantizes to (q - z) x scale: it is zero when q == z.
    """
    values = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    zeros = 0
    for node in proto.graph.node:
        if node.op_type in PRUNABLE_OPS and float_only:
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
