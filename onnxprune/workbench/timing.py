"""Timing onnxruntime sessions fairly: one computing at a time, in turns, until the spread settles.

Shared by `onnxprune.measure.bench` (models side by side), the latency tables of
`onnxprune.workbench.latency` and pruning to a measured speedup (`onnxprune.pruning.budget`).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from onnxruntime import InferenceSession

    from onnxprune.graph.model import InputSpec, Model


class Timed(Protocol):
    """What a timing is recorded in (`onnxprune.measure.bench.ModelBench`, `TimedModel`)."""

    latency_ms: dict[str, dict[str, float]]
    throughput: dict[str, float]


class TimedModel:
    """A bare record of one model's timings (`time_round_robin` fills it)."""

    def __init__(self) -> None:
        self.latency_ms: dict[str, dict[str, float]] = {}
        self.throughput: dict[str, float] = {}


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity), onnxprune's default thread count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def timing_session(
    source: str | os.PathLike | bytes, threads: int, provider: str = "CPUExecutionProvider"
) -> InferenceSession:
    """An onnxruntime session for timing: `threads` intra-op threads, one inter-op, log silenced."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    return ort.InferenceSession(source if isinstance(source, bytes) else str(source), options, providers=[provider])


# a batch size's timing ends when its round medians agree within SPREAD (relative interquartile
# range), after MIN_ROUNDS, or when BUDGET seconds (all models together) are spent
SPREAD = 0.05
MIN_ROUNDS = 5
BUDGET = 20.0
QUICK_BUDGET = 5.0
ROUND_SECONDS = 0.2  # each model's share of one round
# onnxruntime's worker threads spin for a while after a call (session.intra_op.allow_spinning, on by
# default: it is what deployments get); a session started while another's threads still spin
# shares the cores with them. VGG13 at batch 32 on 2 cores, alternating with another session:
# 3.96 ms median, interquartile range 4.0 ms with no pause, 3.90 ms and 0.05 ms with 50 ms.
SWITCH_PAUSE = 0.05


def time_round_robin(
    prepared: list[tuple[Timed, dict[int, InferenceSession], InputSpec]],
    batches: Sequence[int],
    runs: int | None,
    budget: float = BUDGET,
) -> None:
    """Time every model at every batch size, the models taking turns in rounds.

    Only one session computes at any moment; turns spread slow drifts of the machine (clock
    speed, other load) over all models instead of penalising whichever ran first. After a
    warm-up, rounds go on until every model's round medians agree within `SPREAD` (at least
    `MIN_ROUNDS`), or the budget is spent (then `stable` is False in the result), or, with
    `runs`, until each model made that many timed calls.
    """
    for batch in batches:
        entries = []
        for result, sessions, spec in prepared:
            time.sleep(SWITCH_PAUSE if len(prepared) > 1 else 0)
            entries.append(_timing_entry(result, sessions, spec, batch, runs))
        timed = [entry for entry in entries if entry is not None]
        started = time.perf_counter()
        while timed:
            for entry in timed:
                if len(timed) > 1:
                    time.sleep(SWITCH_PAUSE)
                entry.round()
            if runs is not None:
                if all(len(entry.times) >= runs for entry in timed):
                    break
            elif len(timed[0].rounds) >= MIN_ROUNDS and (
                all(entry.spread() <= SPREAD for entry in timed) or time.perf_counter() - started > budget
            ):
                break
        for entry in timed:
            entry.record(batch, stable=runs is not None or entry.spread() <= SPREAD)


class _TimingEntry:
    """One model's timed calls at one batch size, in rounds."""

    def __init__(self, result: Timed, session: InferenceSession, feed: dict, calls: int) -> None:
        self.result, self.session, self.feed, self.calls = result, session, feed, calls
        self.times: list[float] = []
        self.rounds: list[float] = []  # the median of each round

    def round(self) -> None:
        this = []
        for _ in range(self.calls):
            started = time.perf_counter()
            self.session.run(None, self.feed)
            this.append(time.perf_counter() - started)
        self.times += this
        self.rounds.append(statistics.median(this))

    def spread(self) -> float:
        """Interquartile range of the round medians over their median (inf before 4 rounds)."""
        if len(self.rounds) < 4:
            return float("inf")
        q1, q3 = np.percentile(self.rounds[-MIN_ROUNDS:], [25, 75])
        return float((q3 - q1) / statistics.median(self.rounds[-MIN_ROUNDS:]))

    def record(self, batch: int, stable: bool) -> None:
        median = statistics.median(self.times)
        p25, p75, p90, p99 = (float(v) * 1000 for v in np.percentile(self.times, [25, 75, 90, 99]))
        self.result.latency_ms[str(batch)] = {
            "median": median * 1000, "p25": p25, "p75": p75, "iqr": p75 - p25, "p90": p90, "p99": p99,
            "calls": len(self.times), "rounds": len(self.rounds), "stable": stable,
        }  # fmt: skip
        self.result.throughput[str(batch)] = batch / median


def _timing_entry(
    result: Timed, sessions: dict[int, InferenceSession], spec: InputSpec, batch: int, runs: int | None
) -> _TimingEntry | None:
    """The model's timing at `batch` after a warm-up, or None where its graph cannot take that batch."""
    session = sessions[0]
    if spec.fixed_batch and spec.shape[0] != batch:
        session = sessions.get(-1)
        if session is None:
            return None
    dtype = np.float64 if spec.elem_type == "DOUBLE" else np.float32
    feed = {session.get_inputs()[0].name: np.random.default_rng(0).random(spec.concrete_shape(batch)).astype(dtype)}
    try:
        once = _warm_up(session, feed)
    except Exception:  # noqa: BLE001 - a graph that hard-codes its batch fails on the symbolic copy
        return None
    calls = max(1, int(ROUND_SECONDS / max(once, 1e-7)))
    if runs is not None:
        calls = max(1, min(calls, runs // MIN_ROUNDS or 1))
    return _TimingEntry(result, session, feed, calls)


def _warm_up(session: InferenceSession, feed: dict[str, np.ndarray]) -> float:
    """Run until two consecutive calls agree (first calls allocate and tune); the last call's seconds."""
    last = float("inf")
    for _ in range(20):
        started = time.perf_counter()
        session.run(None, feed)
        this = time.perf_counter() - started
        if abs(this - last) <= 0.2 * this:
            return this
        last = this
    return last


def batch_sessions(
    model: Model, session: InferenceSession, threads: int, provider: str = "CPUExecutionProvider"
) -> dict[int, InferenceSession]:
    """{0: the session as written, -1: one on a symbolic-batch copy where the graph fixes batch 1}."""
    sessions = {0: session}
    if model.input.fixed_batch and model.input.shape[0] == 1:
        from onnxprune.graph.model import with_symbolic_batch

        sessions[-1] = timing_session(with_symbolic_batch(model.proto).SerializeToString(), threads, provider)
    return sessions


def time_side_by_side(
    models: list[Model], batches: Sequence[int], threads: int | None = None, budget: float = QUICK_BUDGET
) -> list[TimedModel]:
    """Median latencies of `models` (in memory or on disk) timed in turns, as `onnxprune bench` does.

    The quick check of `quantize` (int8 against float) and of pruning to a speedup
    (`onnxprune.pruning.budget`): ratios of the returned medians are speedups.
    """
    threads = threads or available_cores()
    prepared = []
    for model in models:
        source = str(model.path) if model.path is not None else model.proto.SerializeToString()
        session = timing_session(source, threads)
        prepared.append((TimedModel(), batch_sessions(model, session, threads), model.input))
    time_round_robin(prepared, batches, None, budget=budget)
    return [timed for timed, _, _ in prepared]


# the profile of `node_times`: calls until this many seconds are spent (at least PROFILE_MIN_CALLS)
PROFILE_SECONDS = 1.0
PROFILE_MIN_CALLS = 5
PROFILE_MAX_CALLS = 2000  # a 10 µs model would make 100,000 calls: onnxruntime's profile caps its events


def node_times(model: Model, batch: int, threads: int | None = None) -> dict[str, tuple[str, float]]:
    """{node of onnxruntime's optimized graph: (its op, mean kernel microseconds per call)}.

    onnxruntime's own profiler (`SessionOptions.enable_profiling`) on `model` at `batch` after a
    warm-up: what each kernel of the graph onnxruntime actually runs costs, fused nodes under
    the names onnxruntime gives them. Fixed-batch exports are profiled on a symbolic-batch copy.
    Empty where the graph cannot run that batch.
    """
    import json
    import tempfile

    import onnxruntime as ort

    threads = threads or available_cores()
    proto = model.proto
    if model.input.fixed_batch and model.input.shape[0] != batch:
        from onnxprune.graph.model import with_symbolic_batch

        proto = with_symbolic_batch(proto)
    source = str(model.path) if model.path is not None and proto is model.proto else proto.SerializeToString()
    dtype = np.float64 if model.input.elem_type == "DOUBLE" else np.float32
    feed_array = np.random.default_rng(0).random(model.input.concrete_shape(batch)).astype(dtype)
    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "profile")
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: feed_array}
        try:
            once = _warm_up(session, feed)
            calls = min(PROFILE_MAX_CALLS, max(PROFILE_MIN_CALLS, int(PROFILE_SECONDS / max(once, 1e-7))))
            for _ in range(calls):
                session.run(None, feed)
        except Exception:  # noqa: BLE001 - a graph that hard-codes its batch fails on the symbolic copy
            return {}
        finally:
            events = json.loads(Path(session.end_profiling()).read_text())
    # the profile holds the warm-up calls too: count only the nodes inside the last `calls` runs
    runs = sorted(event["ts"] for event in events if event.get("cat") == "Session" and event["name"] == "model_run")
    calls = min(calls, len(runs))
    if not calls:
        return {}
    since = runs[-calls]
    totals: dict[str, tuple[str, float]] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= since:
            name = event["name"].removesuffix("_kernel_time")
            op, total = totals.get(name, (event["args"]["op_name"], 0.0))
            totals[name] = (op, total + event["dur"])
    return {name: (op, total / calls) for name, (op, total) in totals.items()}
