"""What pruning really buys: latency, throughput, size and accuracy in onnxruntime, side by side.

Each model gets its own onnxruntime session; only one computes at any moment (sessions that
compute at once on few cores distort each other), and the models take turns in rounds so that
slow drifts of the machine hit all of them alike: session creation time, a warm-up, then the
latency of repeated calls (median, p90, p99) and throughput at each batch size; file size raw
and zipped, the size of its weights' values plus mask, parameters, non-zeros, MACs, and accuracy
when data is given. Ratios are against the first model.
"""

from __future__ import annotations

import io
import os
import statistics
import time
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from onnxprune.errors import ConfigError
from onnxprune.graph.model import is_quantized, load, model_file_size

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
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # batch -> median, p90, p99
    throughput: dict[str, float] = field(default_factory=dict)  # batch -> samples per second
    top1: float | None = None
    speedup: dict[str, float] = field(default_factory=dict)
    size_ratio: float = 1.0


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

    The cheap alternative to pruning for speed and size, to be timed beside the pruned models.
    Returns the files written in `folder` (`<stem>_int8_dynamic.onnx`, `<stem>_int8_static.onnx`).
    """
    from onnxprune.measure.quantize import quantize

    reference = Path(reference)
    model = load(reference)
    written = []
    for method in ("dynamic", "static") if data is not None else ("dynamic",):
        target = Path(folder) / f"{reference.stem}_int8_{method}.onnx"
        quantize(model, target, method, data, preprocess)
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
) -> list[ModelBench]:
    """Measure each model; see the module docstring.

    Args:
        paths: .onnx files; the first is the reference for ratios.
        batches: batch sizes to time (models with a fixed batch of 1 run batch 1 only).
        provider: "cpu" or "cuda".
        threads: onnxruntime intra-op threads (default: onnxruntime's choice).
        runs: timed calls per batch size (default: about 2 s worth, at least 10).
        data: a `Dataset` to measure top-1 on (optional).
        preprocess_options: overrides for `preprocess_for` (pixel_range, mean, std, flatten_order).
    """
    provider_name = check_provider(provider)
    if not paths:
        raise ConfigError("bench needs at least one model")
    prepared = [_prepare(Path(p), provider_name, threads) for p in paths]
    _time_round_robin(prepared, batches, runs)
    results = [item[0] for item in prepared]
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
    return results


def _prepare(path: Path, provider: str, threads: int | None) -> tuple[ModelBench, InferenceSession, InputSpec]:
    """(ModelBench with the static figures, its session, its input spec)."""
    import onnxruntime as ort

    from onnxprune.graph.inspection import describe

    model = load(path)
    totals = describe(model)["totals"]
    quantized = is_quantized(model.proto)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    started = time.perf_counter()
    session = ort.InferenceSession(str(path), options, providers=[provider])
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
    )
    return result, session, model.input


def _time_round_robin(
    prepared: list[tuple[ModelBench, InferenceSession, InputSpec]],
    batches: Sequence[int],
    runs: int | None,
    rounds: int = 5,
) -> None:
    """Time every model at every batch size, the models taking turns in `rounds` rounds.

    Only one session computes at any moment; turns spread slow drifts of the machine (clock
    speed, other load) over all models instead of penalising whichever ran first.
    """
    from onnxprune.graph.verify import random_batch

    for batch in batches:
        feeds, counts, times = [], [], []
        for _result, session, spec in prepared:
            if spec.fixed_batch and spec.shape[0] != batch:
                feeds.append(None)
                counts.append(0)
                times.append([])
                continue
            feed = {session.get_inputs()[0].name: random_batch(spec, batch)}
            feeds.append(feed)
            counts.append(_call_count(session, feed, runs))
            times.append([])
        for _ in range(rounds):
            for index, (_, session, _) in enumerate(prepared):
                if feeds[index] is None:
                    continue
                for _ in range(max(1, counts[index] // rounds)):
                    started = time.perf_counter()
                    session.run(None, feeds[index])
                    times[index].append(time.perf_counter() - started)
        for (result, _, _), measured in zip(prepared, times, strict=True):
            if measured:
                median = statistics.median(measured)
                result.latency_ms[str(batch)] = {
                    "median": median * 1000,
                    "p90": float(np.percentile(measured, 90)) * 1000,
                    "p99": float(np.percentile(measured, 99)) * 1000,
                }
                result.throughput[str(batch)] = batch / median


def _call_count(session: InferenceSession, feed: dict[str, np.ndarray], runs: int | None) -> int:
    """Warm the session up; how many timed calls make about 2 s (or `runs`)."""
    for _ in range(3):
        session.run(None, feed)
    started = time.perf_counter()
    session.run(None, feed)
    once = time.perf_counter() - started
    return runs or int(min(500, max(10, 2.0 / max(once, 1e-6))))


def as_dicts(results: list[ModelBench]) -> list[dict]:
    """Plain dicts, for bench.json."""
    return [asdict(result) for result in results]
