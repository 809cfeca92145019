"""What pruning really buys: latency, throughput, size and accuracy in onnxruntime, side by side.

Each model gets its own onnxruntime session; only one computes at any moment (sessions that
compute at once on few cores distort each other), and the models take turns in rounds so that
slow drifts of the machine hit all of them alike: session creation time, a warm-up, then rounds
of timed calls until the spread is small (`_time_round_robin`): latency median, interquartile
range, p90 and p99, and throughput at each batch size, the intra-op thread count recorded; file
size raw and zipped, the size of its weights' values plus mask, parameters, non-zeros, MACs, and
accuracy when data is given. Ratios (speedups) are of medians against the first model.

A model whose graph fixes the batch at 1 (most MATLAB and VNN-COMP exports) is timed at larger
batch sizes on a copy whose batch is symbolic, as `evaluate` runs it (one batched call, not a
loop of single samples), and a note says so; where the graph itself hard-codes the batch (a
Reshape to 1 x N), that batch size is left out ("-").

Latencies are shown to three significant digits, in microseconds where a whole column is under
1 ms (`latency_unit`, `three_digits`): 23.0 µs beside 18.2 µs must not read as "0.02 / 0.02 ms".
"""

from __future__ import annotations

import io
import math
import os
import time
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from onnxprune.errors import ConfigError
from onnxprune.graph.model import is_quantized, load, model_file_size
from onnxprune.workbench.timing import (
    BUDGET,
    QUICK_BUDGET,
    available_cores,
    batch_sessions,
    time_round_robin,
    timing_session,
)

if TYPE_CHECKING:
    from onnxruntime import InferenceSession

    from onnxprune.graph.model import InputSpec, Model
    from onnxprune.workbench.data import Dataset, Preprocess

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


@dataclass
class ModelBench:
    """Everything measured for one model."""

    name: str
    path: str
    bytes: int
    zipped_bytes: int
    values_mask_bytes: int
    params: int | None  # None for an int8 model: its weights are not float layers, not counted
    nonzero: int | None
    macs: int | None
    session_seconds: float
    threads: int = 0  # onnxruntime intra-op threads the model was timed with
    # batch -> median, p25, p75, iqr, p90, p99 (ms), calls, rounds, stable (the spread fell below SPREAD)
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    throughput: dict[str, float] = field(default_factory=dict)  # batch -> samples per second
    top1: float | None = None
    speedup: dict[str, float] = field(default_factory=dict)
    size_ratio: float = 1.0
    notes: list[str] = field(default_factory=list)
    # the graph fixes batch 1: batch sizes above 1 were timed on a copy with a symbolic batch
    batched_on_copy: bool = False


def latency_unit(values_ms: Sequence[float]) -> tuple[str, float]:
    """The unit a column of latencies is shown in: ("µs", 1000.0) when every one is under 1 ms, else ("ms", 1.0).

    One unit per column, so that a column reads down without unit changes: 8.19 µs beside 0.0230
    ms would hide that they differ 3x.
    """
    finite = [value for value in values_ms if math.isfinite(value)]
    return ("µs", 1000.0) if finite and max(finite) < 1.0 else ("ms", 1.0)


def significant_decimals(value: float, digits: int = 3) -> int:
    """Decimals that show `value` to `digits` significant digits: 2 for 8.18, 4 for 0.0230, 0 for 123."""
    if not math.isfinite(value) or value <= 0:
        return 0
    return max(0, digits - 1 - math.floor(math.log10(value)))


def three_digits(value: float, decimals: int | None = None) -> str:
    """A latency to three significant digits (0.0230, 0.156, 8.18, 72.4, 123), or to `decimals`.

    Args:
        value: the latency, in the unit of its column (`latency_unit`).
        decimals: a fixed number of decimals instead: a spread shown at its median's precision.

    Example:
        >>> three_digits(23.04), three_digits(0.41, significant_decimals(23.04))
        ('23.0', '0.4')
    """
    return f"{value:.{significant_decimals(value) if decimals is None else decimals}f}"


def check_provider(provider: str) -> str:
    """The onnxruntime provider name; CUDA without onnxruntime-gpu or a GPU is one clear error."""
    if provider not in PROVIDERS:
        raise ConfigError(f"--provider must be cpu or cuda, got '{provider}'")
    import onnxruntime

    name = PROVIDERS[provider]
    if name not in onnxruntime.get_available_providers():
        raise ConfigError(
            "--provider cuda: onnxruntime has no CUDA provider here (no GPU, or the CPU package installed); "
            "install the gpu extra (pip install -e '.[gpu]') on a machine with an NVIDIA GPU"
        )
    return name


def values_mask_bytes(model: Model) -> int:
    """The weights' values+mask size: every non-zero value at its full width, plus the mask's entropy.

    For each float initializer with n values of which k are non-zero: k values of its width, plus
    n x H(k/n) bits to say where they are (0 when dense). Graph structure is not counted. A
    reference, not a limit: a format that compresses the values themselves (`pack` deflates them)
    goes below it.
    """
    from onnx import numpy_helper

    from onnxprune.graph.model import FLOAT_TYPES

    total_bits = 0.0
    for tensor in model.proto.graph.initializer:
        if tensor.data_type not in FLOAT_TYPES:
            continue
        array = numpy_helper.to_array(tensor)
        n, k = array.size, int(np.count_nonzero(array))
        p = k / n if n else 0.0
        entropy = 0.0 if p in (0.0, 1.0) else -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
        total_bits += k * array.itemsize * 8 + n * entropy
    return int(np.ceil(total_bits / 8))


def zipped_size(path: Path) -> int:
    """Bytes of the file deflated in a zip (what a download or a package costs)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.write(path, Path(path).name)
    return len(buffer.getvalue())


def int8_baselines(
    reference: str | os.PathLike,
    folder: str | os.PathLike,
    data: Dataset | None = None,
    preprocess: Preprocess | None = None,
) -> list[Path]:
    """The reference model quantized to int8 by onnxruntime: dynamic always, static (QDQ) with calibration `data`.

    The cheap alternative to pruning for speed and size, to be timed beside the pruned models:
    every layer quantized (`quantize`'s `keep_float="none"`), as onnxruntime.quantization gives it.
    Returns the files written in `folder` (`<stem>_int8_dynamic.onnx`, `<stem>_int8_static.onnx`).
    """
    from onnxprune.measure.quantize import quantize

    reference = Path(reference)
    model = load(reference)
    written = []
    for method in ("dynamic", "static") if data is not None else ("dynamic",):
        target = Path(folder) / f"{reference.stem}_int8_{method}.onnx"
        quantize(model, target, method, data, preprocess, keep_float="none")  # onnxruntime's plain int8
        written.append(target)
    return written


def bench(
    paths: list[str | os.PathLike],
    batches: Sequence[int] = (1, 32),
    provider: str = "cpu",
    threads: int | None = None,
    runs: int | None = None,
    data: Dataset | None = None,
    preprocess_options: dict | None = None,
    quick: bool = False,
) -> list[ModelBench]:
    """Measure each model; see the module docstring.

    Args:
        paths: .onnx files; the first is the reference for ratios.
        batches: batch sizes to time (a model whose graph fixes batch 1 runs the larger ones on a
            symbolic-batch copy; one whose graph hard-codes its batch skips them).
        provider: "cpu" or "cuda".
        threads: onnxruntime intra-op threads (default: the cores this process may use).
        runs: timed calls per batch size and model (default: rounds until the spread is small).
        data: a `Dataset` to measure top-1 on (optional).
        preprocess_options: overrides for `preprocess_for` (pixel_range, mean, std, flatten_order).
        quick: a short measurement (a quarter of the time budget; `quantize`'s check of its speed).
    """
    provider_name = check_provider(provider)
    if not paths:
        raise ConfigError("bench needs at least one model")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be 1 or more, got {threads}")
    threads = threads or available_cores()
    prepared = [_prepare(Path(p), provider_name, threads) for p in paths]
    time_round_robin(prepared, batches, runs, budget=QUICK_BUDGET if quick else BUDGET)
    results = [item[0] for item in prepared]
    for result, sessions, _ in prepared:  # -1: a symbolic-batch copy of a graph that fixes batch 1
        result.batched_on_copy = -1 in sessions and any(int(batch) != 1 for batch in result.latency_ms)
    if data is not None:
        from onnxprune.workbench.data import preprocess_for
        from onnxprune.workbench.evaluate import evaluate

        # every model takes the first one's input: a quantized or pruned copy keeps its meaning
        # even when its producer name changed (onnxruntime.quantization rewrites it)
        preprocess = preprocess_for(load(results[0].path), **(preprocess_options or {}))
        for result in results:
            result.top1 = evaluate(load(result.path), data, preprocess, providers=[provider_name]).top1
    reference = results[0]
    for result in results:
        result.size_ratio = result.bytes / reference.bytes
        for batch, latency in result.latency_ms.items():
            if batch in reference.latency_ms:
                result.speedup[batch] = reference.latency_ms[batch]["median"] / latency["median"]
    _explain_slow_int8(results)
    return results


def _explain_slow_int8(results: list[ModelBench]) -> None:
    """A note on every int8 model slower than a float reference: which compute nodes stayed float."""
    from onnxprune.measure.quantize import integer_kernels

    if results[0].macs is None:  # the reference itself is int8
        return
    for result in results[1:]:
        slower = {batch: ratio for batch, ratio in result.speedup.items() if ratio < 1.0}
        if result.macs is not None or not slower:
            continue
        why = integer_kernels(result.path).why_not_faster() or (
            "every compute node runs as an integer kernel: the conversions at its edges and the per-call "
            "overhead outweigh the arithmetic saved"
        )
        shown = ", ".join(f"{ratio:.2f}x at batch {batch}" for batch, ratio in slower.items())
        result.notes.append(f"{result.name} (int8) is not faster than {results[0].name} ({shown}): {why}")


def bench_notes(results: list[ModelBench]) -> list[str]:
    """What to know about the figures: fixed-batch models timed batched on a copy; int8 models not faster, and why."""
    copied = [result for result in results if result.batched_on_copy]
    larger = sorted({batch for result in copied for batch in result.latency_ms if int(batch) != 1}, key=int)
    batched = (
        [f"batch {', '.join(larger)} of graphs that fix batch 1 ({', '.join(r.name for r in copied)}): timed on a "
         "copy with a symbolic batch dimension, one batched call as evaluate runs it"]
        if copied else []
    )  # fmt: skip
    return batched + [note for result in results for note in result.notes]


def _prepare(path: Path, provider: str, threads: int) -> tuple[ModelBench, dict[int, InferenceSession], InputSpec]:
    """(ModelBench with the static figures, its sessions by batch (0: as written), its input spec)."""
    from onnxprune.graph.inspection import describe

    model = load(path)
    totals = describe(model)["totals"]
    quantized = is_quantized(model.proto)
    started = time.perf_counter()
    session = timing_session(path, threads, provider)
    result = ModelBench(
        name=path.name,
        path=str(path),
        bytes=model_file_size(path),
        zipped_bytes=zipped_size(path),
        values_mask_bytes=values_mask_bytes(model),
        params=None if quantized else totals["prunable_params"],
        nonzero=None if quantized else totals["prunable_params"] - totals["prunable_zeros"],
        macs=None if quantized else totals["macs"],
        session_seconds=time.perf_counter() - started,
        threads=threads,
    )
    return result, batch_sessions(model, session, threads, provider), model.input


def as_dicts(results: list[ModelBench]) -> list[dict]:
    """Plain dicts, for bench.json."""
    return [asdict(result) for result in results]
