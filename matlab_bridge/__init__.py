"""MATLAB-friendly entry points to onnxprune: `py.matlab_bridge.prune(...)` or a .mat file transport.

Every function takes MATLAB's name-value style (`Sparsity=0.9`, or `sparsity=0.9`: names are
matched ignoring case and underscores), accepts numbers that arrive as floats where integers are
meant, arrays through the buffer protocol, and returns only what MATLAB converts cleanly: str,
float, bool, 1-D float64 arrays, lists of str, and flat dicts of these. Importing this module
is instant: torch and onnxruntime are imported inside the functions.

Errors are raised as `BridgeError`, whose message starts with a MATLAB error identifier
(`onnxprune:badInput: ...`); the MATLAB wrappers turn it into `error(id, message)`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["BridgeError", "bench", "evaluate", "inspect", "prune", "sweep"]


class BridgeError(Exception):
    """An error for MATLAB: the message is 'identifier: text'."""

    def __init__(self, identifier: str, message: str):
        super().__init__(f"{identifier}: {message}")
        self.identifier = identifier
        self.text = message


def _normalise(name: str) -> str:
    return name.replace("_", "").lower()


def _options(given: dict, allowed: dict[str, object]) -> dict:
    """Match MATLAB-style names to the allowed ones; unknown names are an error listing the valid ones."""
    by_key = {_normalise(name): name for name in allowed}
    result = dict(allowed)
    for name, value in given.items():
        key = by_key.get(_normalise(name))
        if key is None:
            valid = ", ".join(_matlab_name(n) for n in allowed)
            raise BridgeError("onnxprune:badArgument", f"unknown argument '{name}'; valid names: {valid}")
        result[key] = value
    return result


def _matlab_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _text(value, what: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode()
    if not isinstance(value, str):
        value = str(value)
    return value


def _integer(value, what: str) -> int:
    """MATLAB passes doubles: accept 3.0 for 3, refuse 3.5."""
    number = float(value)
    if not number.is_integer():
        raise BridgeError("onnxprune:badInput", f"{what} must be a whole number, got {number}")
    return int(number)


def _path(value, what: str, must_exist: bool = True) -> Path:
    text = _text(value, what)
    if not text:
        raise BridgeError("onnxprune:badInput", f"{what} is required")
    path = Path(text).expanduser()
    if must_exist and not path.exists():
        raise BridgeError("onnxprune:fileNotFound", f"{what} '{text}' does not exist (relative to {os.getcwd()})")
    return path


def _vector(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1)


def _clean(result: dict) -> dict:
    """Only str, float, bool, 1-D float64 arrays and lists of str (what MATLAB converts cleanly)."""
    clean = {}
    for key, value in result.items():
        if isinstance(value, (bool, np.bool_)):
            clean[key] = bool(value)
        elif isinstance(value, (int, float, np.integer, np.floating)):
            clean[key] = float(value)
        elif value is None:
            clean[key] = float("nan")
        elif isinstance(value, (str, Path)):
            clean[key] = str(value)
        elif isinstance(value, np.ndarray):
            clean[key] = value.astype(np.float64).reshape(-1)
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            clean[key] = [str(v) for v in value]
        elif isinstance(value, (list, tuple)):
            clean[key] = np.asarray(value, dtype=np.float64).reshape(-1)
        else:
            raise TypeError(f"result field {key} has type {type(value).__name__}")
    return clean


def _guarded(function: Callable) -> Callable:
    """Turn onnxprune's errors into BridgeError with an identifier."""
    import functools

    @functools.wraps(function)
    def call(*args, **kwargs):
        try:
            return _clean(function(*args, **kwargs))
        except BridgeError:
            raise
        except Exception as exc:
            from onnxprune.errors import ConfigError, DataError, ModelLoadError, OnnxpruneError

            identifier = {
                ModelLoadError: "onnxprune:badModel",
                DataError: "onnxprune:badData",
                ConfigError: "onnxprune:badInput",
            }.get(type(exc), "onnxprune:error" if isinstance(exc, OnnxpruneError) else "onnxprune:internal")
            raise BridgeError(identifier, str(exc)) from None

    return call


def _dataset(options: dict, model):
    """A Dataset from `Data` (a path) or `Images` + `Labels` (MATLAB arrays)."""
    from onnxprune.workbench.data import Dataset, load_data

    if options.get("data") is not None:
        return load_data(_path(options["data"], "Data"), size=None)
    if options.get("images") is None:
        raise BridgeError("onnxprune:badInput", "give Data (a folder, .zip, .mat, .npz) or Images and Labels")
    images = np.asarray(options["images"])
    labels_in = options.get("labels")
    if labels_in is None:
        raise BridgeError("onnxprune:badInput", "Images need Labels (numeric, or a cell array of class names)")
    labels_array = np.asarray(labels_in if not isinstance(labels_in, (list, tuple)) else list(labels_in))
    if labels_array.dtype.kind in "OUS":
        names = [str(v) for v in labels_array.reshape(-1)]
        classes = sorted(set(names))
        labels = np.array([classes.index(n) for n in names], dtype=np.int64)
    else:
        numbers = labels_array.astype(np.float64).reshape(-1)
        if not np.all(numbers == np.round(numbers)) or numbers.min() < 0:
            raise BridgeError("onnxprune:badInput", "Labels must be whole numbers >= 0 or class names")
        labels = numbers.astype(np.int64)
        classes = [str(i) for i in range(int(labels.max()) + 1)]
    if images.ndim == 4 and images.shape[3] == labels.size:  # MATLAB's H x W x C x N
        images = images.transpose(3, 0, 1, 2)
    elif images.ndim == 3 and images.shape[2] == labels.size:  # H x W x N
        images = images.transpose(2, 0, 1)[..., None]
    elif images.ndim == 2 and images.shape[1] == labels.size:  # D x N features
        images = images.T
    if images.shape[0] != labels.size:
        raise BridgeError(
            "onnxprune:badInput",
            f"Images of size {'x'.join(map(str, images.shape))} do not match {labels.size} labels; "
            "pass H x W x C x N (or D x N) and one label per image",
        )
    value_range = "0-255" if images.dtype == np.uint8 or float(images.max()) > 1.0 else "0-1"
    return Dataset(images, labels, classes, "MATLAB arrays", value_range, images.ndim == 2)


def _preprocess(model, options: dict):
    from onnxprune.workbench.data import preprocess_for

    def numbers(value):
        return None if value is None else tuple(float(v) for v in np.asarray(value, dtype=float).reshape(-1))

    return preprocess_for(
        model,
        _text(options.get("pixel_range"), "PixelRange"),
        numbers(options.get("mean")),
        numbers(options.get("std")),
        _text(options.get("flatten"), "Flatten") or "row",
    )


DATA_OPTIONS = {
    "data": None,
    "images": None,
    "labels": None,
    "pixel_range": None,
    "mean": None,
    "std": None,
    "flatten": "row",
}


@_guarded
def inspect(model, **options) -> dict:
    """Producer, opset, input, and every prunable layer (names, parameters, zeros, MACs)."""
    from onnxprune.graph.inspection import describe
    from onnxprune.graph.model import load

    _options(options, {})
    description = describe(load(_path(model, "Model")))
    layers = description["layers"]
    return {
        "file": description["file"],
        "producer": description["producer"],
        "opset": description["opset"],
        "input_name": description["input"]["name"],
        "input_shape": [float(d) if isinstance(d, int) else float("nan") for d in description["input"]["shape"]],
        "input_layout": description["input"]["layout"],
        "layer_names": [layer["name"] for layer in layers],
        "layer_types": [layer["op_type"] for layer in layers],
        "layer_params": [layer["params"] for layer in layers],
        "layer_zeros": [layer["zeros"] for layer in layers],
        "layer_macs": [layer["macs"] for layer in layers],
        "prunable_params": description["totals"]["prunable_params"],
        "all_params": description["totals"]["all_params"],
        "macs": description["totals"]["macs"],
    }


@_guarded
def prune(model, **options) -> dict:
    """Prune a model and write it; the output keeps MATLAB's dense initializers, opset and names.

    Name-value arguments are the fields of `onnxprune.options.PruneOptions` (Sparsity, Method,
    Scope, Config, SkipFirst, SkipLast, MaxLayerSparsity, MaskOnly, RoundTo, Seed), plus Output
    (default beside the input) and SparseStorage: the same options, with the same checks, as
    `onnxprune prune`.
    """
    from dataclasses import fields

    from onnxprune.options import PruneOptions, ScheduleOptions
    from onnxprune.pruning.pipeline import RunOptions, run

    defaults = {field.name: field.default for field in fields(PruneOptions) if field.name != "settings"}
    settings = _options(options, {**defaults, "output": None, "sparse_storage": False})
    path = _path(model, "Model")
    prune_options = PruneOptions(
        sparsity=float(settings["sparsity"]), method=_text(settings["method"], "Method"),
        scope=_text(settings["scope"], "Scope"),
        config=str(_path(settings["config"], "Config")) if settings["config"] else None,
        skip_first=bool(settings["skip_first"]), skip_last=bool(settings["skip_last"]),
        max_layer_sparsity=float(settings["max_layer_sparsity"]), mask_only=bool(settings["mask_only"]),
        round_to=_integer(settings["round_to"], "RoundTo"), seed=_integer(settings["seed"], "Seed"),
    )  # fmt: skip
    output = _path(settings["output"], "Output", False) if settings["output"] else None
    report = run(
        path,
        RunOptions(ScheduleOptions(prune_options), output=output, sparse_storage=bool(settings["sparse_storage"])),
    )  # dense initializers unless asked: what importNetworkFromONNX reads
    result = report.result
    return {
        "output": str(report.output),
        "method": result.method,
        "scope": result.scope,
        "sparsity": result.prunable_sparsity if result.granularity == "weight" else result.channel_sparsity,
        "total_sparsity": result.total_sparsity,
        "layer_names": [layer.name for layer in result.layers],
        "layer_sparsity": [layer.sparsity for layer in result.layers],
        "max_abs_diff": report.max_abs_diff,
        "opset": float(_opset(report.output)),
    }


def _opset(path: Path) -> int:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


@_guarded
def evaluate(model, **options) -> dict:
    """Top-1, top-5 and loss on Data (a path) or Images + Labels (arrays); Engine "onnxruntime" or "torch"."""
    from onnxprune.graph.model import load
    from onnxprune.measure.evaluate import evaluate as evaluate_model
    from onnxprune.workbench.data import check_labels

    settings = _options(options, {**DATA_OPTIONS, "engine": "onnxruntime", "batch_size": 256})
    loaded = load(_path(model, "Model"))
    dataset = _dataset(settings, loaded)
    check_labels(dataset, loaded.num_classes or int(dataset.labels.max()) + 1)
    result = evaluate_model(
        loaded, dataset, _preprocess(loaded, settings), engine=_text(settings["engine"], "Engine"),
        batch_size=_integer(settings["batch_size"], "BatchSize"),
    )  # fmt: skip
    return {"top1": result.top1, "top5": result.top5, "loss": result.loss, "samples": result.samples,
            "engine": result.engine}  # fmt: skip


@_guarded
def sweep(model, **options) -> dict:
    """Accuracy at each sparsity (Sparsities "0:0.1:0.9" or a vector), one Method and Scope; the trade-off."""
    from onnxprune.graph.model import load
    from onnxprune.measure.sweep import check_levels, parse_levels, trade_off
    from onnxprune.measure.sweep import sweep as sweep_model
    from onnxprune.report.results import write

    settings = _options(
        options, {**DATA_OPTIONS, "sparsities": "0:0.1:0.9", "method": "magnitude", "scope": "layer",
                  "max_drop": 0.01, "results": None},
    )  # fmt: skip
    loaded = load(_path(model, "Model"))
    levels = settings["sparsities"]
    if isinstance(levels, (str, bytes)):
        levels = parse_levels(_text(levels, "Sparsities"))
    else:
        levels = check_levels([float(v) for v in np.asarray(levels, dtype=float).reshape(-1)])
    dataset = _dataset(settings, loaded)
    method, scope = _text(settings["method"], "Method"), _text(settings["scope"], "Scope")
    table = sweep_model(loaded, dataset, _preprocess(loaded, settings), levels, [method], [scope])
    choice = trade_off(table, float(settings["max_drop"]))
    if settings["results"]:
        write(table, _path(settings["results"], "Results", must_exist=False))
    return {
        "sparsity": table.column("sparsity"),
        "accuracy": table.column("accuracy"),
        "loss": table.column("loss"),
        "num_nonzero": table.column("num_nonzero"),
        "baseline_accuracy": table.baseline_accuracy,
        "trade_off_sparsity": choice["sparsity"],
        "trade_off_accuracy": choice["accuracy"],
        "method": method,
        "scope": scope,
    }


@_guarded
def bench(models, **options) -> dict:
    """Median onnxruntime latency (batch Batch, Runs calls, one session at a time) and file size of each model."""
    settings = _options(options, {"batch": 1, "runs": 50})
    paths = [models] if isinstance(models, (str, bytes, Path)) else list(models)
    batch, runs = _integer(settings["batch"], "Batch"), _integer(settings["runs"], "Runs")
    from onnxprune.measure.bench import bench as measure

    names = [str(_path(value, "Model")) for value in paths]
    measured = measure(names, batches=[batch], runs=runs)  # the CLI's latency loop, one session at a time
    latencies = [result.latency_ms[str(batch)]["median"] for result in measured]
    sizes = [result.bytes for result in measured]
    return {"models": names, "latency_ms": latencies, "bytes": sizes, "batch": batch}


FUNCTIONS = {"inspect": inspect, "prune": prune, "evaluate": evaluate, "sweep": sweep, "bench": bench}
