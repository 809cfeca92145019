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

from matlab_bridge import commands

__all__ = [
    "BridgeError", "bench", "compact", "evaluate", "finetune", "inspect", "pack", "plot", "prune", "quantize",
    "report", "sensitivity", "sweep", "unpack",
]  # fmt: skip


class BridgeError(Exception):
    """An error for MATLAB: the message is 'identifier: text'."""

    def __init__(self, identifier: str, message: str):
        super().__init__(f"{identifier}: {message}")
        self.identifier = identifier
        self.text = message


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


def _dataset(options: dict):
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
        if not np.all(numbers == np.round(numbers)) or numbers.min() < 0 or numbers.max() >= 1_000_000:
            raise BridgeError("onnxprune:badInput", "Labels must be class indices (whole numbers 0 ... C-1) or names")
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


def _model_argument(model) -> str:
    return str(_path(model, "Model"))


@_guarded
def inspect(model, **options) -> dict:
    """Producer, opset, input, the file's form, and every prunable layer (names, parameters, zeros, MACs)."""
    description = commands.run("inspect", [_model_argument(model)], options)
    layers = description["layers"]
    return {
        "file": description["file"],
        "producer": description["producer"],
        "opset": description["opset"],
        "input_name": description["input"]["name"],
        "input_shape": [float(d) if isinstance(d, int) else float("nan") for d in description["input"]["shape"]],
        "input_layout": description["input"]["layout"],
        "quantized": description["form"]["quantized"],
        "sparse_initializers": description["form"]["sparse_initializers"],
        "external_data": description["form"]["external_data"],
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
    """`onnxprune prune` with every option of the command line.

    Data-free, or with Data / Images + Labels for fine-tuning, OMP/IMP rounds (Iterations),
    Taylor and the other data-driven methods.

    Returns the command's result flattened (rounds as column vectors `rounds_top1`, ...), plus
    `sparsity`, `layer_names`, `layer_sparsity`, `opset` and, for runs with data, `figures`: the
    training curves and the sparsity per layer drawn into the run's folder.
    """
    summary = commands.run("prune", [_model_argument(model)], options)
    result = commands.flatten(summary)
    output = Path(summary["output"])
    if summary["mode"] == "schedule":
        last = summary["rounds"][-1]
        layer_sparsity = last["layer_sparsity"]
        result.update(sparsity=last["sparsity"], total_sparsity=last["sparsity_all"],
                      figures=_run_figures(Path(summary["folder"]), output))  # fmt: skip
        result.update(layer_names=list(layer_sparsity), layer_sparsity=list(layer_sparsity.values()))
    else:
        weights = summary["granularity"] == "weight"  # layer_names, layer_sparsity: flattened from its layers
        result.update(sparsity=summary["prunable_sparsity"] if weights else summary["channel_sparsity"], figures=[])
    result["opset"] = float(_opset(output))
    return result


def _run_figures(folder: Path, output: Path) -> list[str]:
    """The figures of a run with data: loss and accuracy per epoch and round, and the final sparsity per layer."""
    import json

    from onnxprune.graph.model import load
    from onnxprune.report import plots

    document = json.loads((folder / "results.json").read_text())
    figures = [
        plots.training(document, folder / "training.png"),
        plots.layer_sparsity(load(output), folder / "layers.png"),
    ]
    return [str(figure) for figure in figures]


def _opset(path: Path) -> int:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


@_guarded
def evaluate(model, **options) -> dict:
    """`onnxprune evaluate`: top-1, top-5 and loss on Data (a path) or Images + Labels (arrays).

    `notes` (cellstr) says what the command line prints before its numbers: how the samples were
    prepared, and an accuracy near chance or a loss that points at inputs on another scale. With
    Engine "both", the fields of the second engine end in `_torch`.
    """
    results = commands.run("evaluate", [_model_argument(model)], options)
    first = results[0]
    shaped = {key: first[key] for key in ("top1", "top5", "loss", "samples", "engine", "notes")}
    for other in results[1:]:
        shaped.update({f"{key}_{other['engine']}": other[key] for key in ("top1", "top5", "loss")})
    return shaped


@_guarded
def sweep(model, **options) -> dict:
    """`onnxprune sweep`: accuracy at each sparsity (Sparsities "0:0.1:0.9" or a vector); the trade-off.

    Column vectors sparsity, accuracy, loss, num_nonzero (and method, scope per row), the dense
    accuracy, the trade-off within MaxDrop, and the paths of the results and figure (in OutDir).
    """
    summary = commands.run("sweep", [_model_argument(model)], options)
    rows = summary["rows"]
    result = commands.flatten({key: value for key, value in summary.items() if key != "rows"})
    result.update(
        sparsity=[row["sparsity"] for row in rows], accuracy=[row["accuracy"] for row in rows],
        loss=[row["loss"] for row in rows], num_nonzero=[row["num_nonzero"] for row in rows],
        methods=[row["method"] for row in rows], scopes=[row["scope"] for row in rows],
        baseline_accuracy=summary["baseline_top1"], method=rows[0]["method"], scope=rows[0]["scope"],
    )  # fmt: skip
    return result


@_guarded
def bench(models, **options) -> dict:
    """`onnxprune bench`: median latency per batch size, sizes and MACs of each model, one session at a time.

    `latency_ms` holds the first batch size's median per model; `latency_ms_b<N>` every batch size's.
    """
    paths = [models] if isinstance(models, (str, bytes, Path)) else list(models)
    names = [str(_path(value, "Model")) for value in paths]
    measured = commands.run("bench", names, options)
    batches = list(measured[0]["latency_ms"])
    result = {
        "models": names,
        "latency_ms": [entry["latency_ms"][batches[0]]["median"] for entry in measured],
        "bytes": [entry["bytes"] for entry in measured],
        "nonzero": [entry["nonzero"] for entry in measured],
        "macs": [entry["macs"] for entry in measured],
        "top1": [entry["top1"] for entry in measured],
        "batch": float(batches[0]),
    }
    for batch in batches:
        result[f"latency_ms_b{batch}"] = [entry["latency_ms"][batch]["median"] for entry in measured]
        result[f"speedup_b{batch}"] = [entry["speedup"].get(batch, float("nan")) for entry in measured]
    return result


def _flat_command(name: str, doc: str):
    """A bridge function whose result is the command's JSON, flattened."""

    @_guarded
    def function(model, **options) -> dict:
        return commands.flatten(commands.run(name, [_model_argument(model)], options))

    function.__name__ = function.__qualname__ = name
    function.__doc__ = doc
    return function


finetune = _flat_command("finetune", "`onnxprune finetune`: fine-tune with zeros held; epochs as column vectors.")
compact = _flat_command("compact", "`onnxprune compact`: remove all-zero filters and neurons for real.")
quantize = _flat_command("quantize", "`onnxprune quantize`: int8 with onnxruntime.quantization; zeros stay zero.")
sensitivity = _flat_command("sensitivity", "`onnxprune sensitivity`: per-layer ratios reaching Target.")
pack = _flat_command("pack", "`onnxprune pack`: the smallest lossless form of a pruned model.")
report = _flat_command("report", "`onnxprune report RUN_DIR`: one HTML page of a run folder; its path.")
unpack = _flat_command("unpack", "`onnxprune unpack`: the ONNX model a package holds.")


@_guarded
def plot(sources, **options) -> dict:
    """`onnxprune plot KIND SOURCES -o figure.png` with Kind=...: a figure from saved results or models; its path."""
    kind = next((options.pop(key) for key in list(options) if key.lower() == "kind"), None)
    if kind is None:
        raise BridgeError("onnxprune:badInput", "plot needs Kind: accuracy, pareto, mask, layers, filters, ...")
    paths = [sources] if isinstance(sources, (str, bytes, Path)) else list(sources)
    names = [str(_path(value, "Source")) for value in paths]
    return commands.flatten(commands.run("plot", [_text(kind, "Kind"), *names], options))


# MATLAB function -> the CLI command of the same name it runs (every command but `demo`, the
# CLI's own tour: a test holds the two sets equal)
FUNCTIONS = {
    "inspect": inspect, "prune": prune, "evaluate": evaluate, "sweep": sweep, "bench": bench,
    "finetune": finetune, "compact": compact, "quantize": quantize, "sensitivity": sensitivity, "plot": plot,
    "pack": pack, "unpack": unpack, "report": report,
}  # fmt: skip
