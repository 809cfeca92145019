"""Accuracy against sparsity without fine-tuning: sweeps, the trade-off, and per-layer sensitivity.

A sweep ranks the weights once per method (`onnxprune.pruning.levels.RankedModel`) and sets
every level from that ranking, so a level costs one mask update and one evaluation; the data is
preprocessed once and held in memory. The masks are the ones `prune` would choose at that level
(same counts, same tie-breaking), so a sweep point equals `prune` then `evaluate` exactly (with
reconstruction: when both reconstruct on the same samples with the same seed; the sweep's is 0).
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import yaml

from onnxprune.errors import ConfigError, UnreachableLevel
from onnxprune.graph.model import Model
from onnxprune.options import DEFAULT_MAX_LAYER_SPARSITY, check_scope
from onnxprune.pruning.levels import RankedModel
from onnxprune.pruning.methods import sparsity_units
from onnxprune.results import ResultRow, ResultTable
from onnxprune.workbench.data import Dataset, Preprocess
from onnxprune.workbench.evaluate import metrics_over, onnxruntime_runner, torch_runner
from onnxprune.workbench.metrics import sampling_noise

Progress = Callable[[dict], None]


def parse_levels(text: str) -> list[float]:
    """Sparsity levels from MATLAB-style ranges: "0:0.1:0.9,0.9:0.02:0.98" or "0.5,0.8,0.9".

    `a:s:b` is start:step:stop, stop included (within rounding). The result must be non-empty,
    strictly increasing, and every level in [0, 1).
    """
    levels: list[float] = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        if re.fullmatch(r"[^:]+:[^:]+:[^:]+", part):
            start, step, stop = (_number(x, text) for x in part.split(":"))
            if step <= 0:
                raise ConfigError(f"sparsity range '{part}': the step must be positive (start:step:stop)")
            count = int(np.floor((stop - start) / step + 1e-9)) + 1
            levels += [round(start + i * step, 10) for i in range(max(count, 0))]
        else:
            levels.append(_number(part, text))
    return check_levels(levels, text)


def grid(start: float, stop: float, step: float) -> list[float]:
    """--from/--to/--step as a level list."""
    return parse_levels(f"{start}:{step}:{stop}")


def _number(text: str, whole: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"sparsity grid '{whole}': '{text}' is not a number") from None


def check_levels(levels: list[float], what: str = "sparsity grid") -> list[float]:
    """Non-empty, strictly increasing (after dropping exact repeats at range joins), each in [0, 1)."""
    unique = list(dict.fromkeys(levels))
    if not unique:
        raise ConfigError(f"{what}: no sparsity levels; write e.g. 0:0.1:0.9")
    for level in unique:
        if not 0.0 <= level < 1.0:
            raise ConfigError(f"{what}: level {level} is outside [0, 1) (1.0 would remove every weight)")
    if any(b <= a for a, b in zip(unique, unique[1:], strict=False)):
        raise ConfigError(f"{what}: levels must increase, got {', '.join(f'{x:g}' for x in unique[:6])}...")
    return unique


class Sweeper:
    """Evaluates a model at many sparsity levels, ranking each method once (`onnxprune.pruning.levels`).

    Args:
        model: the model to sweep.
        data: the evaluation samples (preprocessed once here).
        preprocess: how they become the model's input.
        batch_size: samples per forward pass.
        engine: "torch", "onnxruntime", or "auto": time both on the dense model and keep the
            faster (onnxruntime rebuilds a session per level, ~10 ms for a CIFAR-size model).
        calibration: samples to reconstruct every level's kept weights on
            (`onnxprune.pruning.reconstruct`); None evaluates the pruned weights as they are.
    """

    def __init__(
        self,
        model: Model,
        data: Dataset,
        preprocess: Preprocess,
        batch_size: int = 500,
        engine: str = "auto",
        calibration: Dataset | None = None,
    ) -> None:
        self.model = model
        self.data = data
        self.levels = RankedModel(
            model, calibration=None if calibration is None else torch.from_numpy(preprocess(calibration))
        )
        self.torch_model = self.levels.torch_model
        self.inputs = torch.from_numpy(preprocess(data))
        self.labels = data.labels
        self.batch_size = batch_size
        self.probabilities = model.final_softmax is not None
        self.engine = engine if engine != "auto" else self._faster_engine()

    def _faster_engine(self) -> str:
        timings = {}
        for engine in ("torch", "onnxruntime"):
            self.engine = engine
            started = time.perf_counter()
            self.evaluate()
            timings[engine] = time.perf_counter() - started
        return min(timings, key=timings.get)

    def evaluate(self) -> tuple[float, float]:
        """(top-1, loss) of the model as it stands, on the held data, in the chosen engine."""
        if self.engine == "onnxruntime":
            return self._evaluate_onnxruntime()
        return self._evaluate_torch()

    def _evaluate_onnxruntime(self) -> tuple[float, float]:
        from onnxprune.graph.storage import write_back

        proto = write_back(self.model, self.torch_model.initializer_values(self.model))
        return self._metrics(onnxruntime_runner(proto, ["CPUExecutionProvider"]), self.inputs.numpy())

    def _evaluate_torch(self) -> tuple[float, float]:
        return self._metrics(torch_runner(self.torch_model.module), self.inputs.numpy())

    def _metrics(self, run: Callable[[np.ndarray], np.ndarray], inputs: np.ndarray) -> tuple[float, float]:
        size = self.batch_size
        batches = ((inputs[s : s + size], self.labels[s : s + size]) for s in range(0, inputs.shape[0], size))
        top1, _, loss = metrics_over(run, batches, self.probabilities)
        return top1, loss

    def level(
        self, method: str, scope: str, sparsity: float, max_layer_sparsity: float = DEFAULT_MAX_LAYER_SPARSITY,
        reconstruct: bool = True,
    ) -> ResultRow:  # fmt: skip
        """Set the weights to `method`/`scope` at `sparsity` (from the stored ranking) and evaluate.

        With calibration samples, the level is reconstructed on them unless `reconstruct` is False.
        """
        self.levels.apply(method, scope, sparsity, max_layer_sparsity, solve=reconstruct)
        zeros = self.levels.zeros()
        top1, loss = self.evaluate()
        originals = self.levels.originals
        total = sum(originals[name].numel() for name in zeros)
        layer_sparsity = [zeros[name] / originals[name].numel() for name in self.torch_model.params]
        nonzero = total - sum(zeros.values())
        return ResultRow(sparsity, top1, loss, int(nonzero), method, scope, layer_sparsity)


def sweep(
    model: Model,
    data: Dataset,
    preprocess: Preprocess,
    levels: list[float],
    methods: list[str] = ("magnitude",),
    scopes: list[str] = ("layer",),
    max_layer_sparsity: float = DEFAULT_MAX_LAYER_SPARSITY,
    progress: Progress | None = None,
    engine: str = "auto",
    calibration: Dataset | None = None,
    checkpoint: Callable[[ResultTable], None] | None = None,
    done: ResultTable | None = None,
) -> ResultTable:
    """Accuracy and loss at every level, for every method and scope; the dense accuracy as baseline.

    `engine` is "auto" (the faster of torch and onnxruntime on this model), "torch" or
    "onnxruntime"; the table's `extra["engine"]` records which ran. With `calibration` samples
    (kept apart from `data`), every level's kept weights are reconstructed on them before it is
    evaluated (`extra["reconstructed_on"]` records how many).

    Measured work is never thrown away: a level the selection cannot reach (global scope above
    the layer cap) is recorded in `extra["unreachable"]` and the sweep goes on; `checkpoint` is
    called with the table after every level (to write it as it grows); the levels of `done` (an
    earlier, interrupted sweep of the same model and data) are taken from it, not measured again,
    and its engine is kept so that they compare.

    Returns:
        A `ResultTable` of kind "sweep" (one row per method, scope and reachable level).
    """
    levels = check_levels(list(levels))
    for scope in scopes:
        check_scope(scope)
    if done is not None:
        engine = done.extra.get("engine", engine)
    sweeper = Sweeper(model, data, preprocess, engine=engine, calibration=calibration)
    baseline, baseline_loss = sweeper.evaluate()
    units = {sparsity_units(m) for m in methods}
    table = ResultTable(
        kind="sweep",
        model=str(model.path or "model"),
        layer_names=list(sweeper.torch_model.params),
        baseline_accuracy=baseline,
        units={frozenset({"channels"}): "channels", frozenset({"weights"}): "weights"}.get(
            frozenset(units), "weights (unstructured) or channels (structured)"
        ),
        extra={
            "engine": sweeper.engine,
            "samples": len(data),  # every top-1 of the table is measured on these
            "baseline_loss": baseline_loss,
            **({"reconstructed_on": len(calibration)} if calibration is not None else {}),
        },  # fmt: skip
    )
    earlier = _Earlier.of(done)
    total = len(methods) * len(scopes) * len(levels)
    for finished, (method, scope, level) in enumerate(itertools.product(methods, scopes, levels), start=1):
        row = earlier.rows.get((method, scope, level))
        if row is None and (method, scope, level) not in earlier.unreachable:
            try:
                row = sweeper.level(method, scope, level, max_layer_sparsity)
            except UnreachableLevel as exc:  # recorded; the other levels are still measured
                earlier.unreachable[method, scope, level] = {"method": method, "scope": scope, "sparsity": level,
                                                             "reason": str(exc)}  # fmt: skip
        if row is None:
            table.extra.setdefault("unreachable", []).append(earlier.unreachable[method, scope, level])
        else:
            table.rows.append(row)
        if checkpoint:
            checkpoint(table)
        if progress and row is not None:
            progress({"done": finished, "total": total, "row": row})
    return table


@dataclass
class _Earlier:
    """What an interrupted sweep measured: its rows and its unreachable levels, by (method, scope, level)."""

    rows: dict[tuple[str, str, float], ResultRow]
    unreachable: dict[tuple[str, str, float], dict]

    @classmethod
    def of(cls, done: ResultTable | None) -> _Earlier:
        rows = {(r.method, r.scope, r.sparsity): r for r in done.rows} if done else {}
        records = done.extra.get("unreachable", []) if done else []
        return cls(rows, {(u["method"], u["scope"], u["sparsity"]): u for u in records})


def trade_off(table: ResultTable, max_drop: float, method: str | None = None, scope: str | None = None) -> dict:
    """The highest sparsity within `max_drop` (absolute, 0.01 = one point) of the dense accuracy, and the knee.

    Each curve (method and scope) is judged on its own, in `curves`. The top-level keys repeat the
    curve whose point within the budget has the highest sparsity, among the curves that count weights
    when the table mixes weights and channels (their sparsities are not comparable); with no level
    within the budget anywhere they give sparsity 0.0 and the dense accuracy, method and scope None.

    Returns:
        {"sparsity", "accuracy", "method", "scope", "units", "knee_sparsity", "knee_accuracy", "max_drop",
        "curves": [the same keys but max_drop, per curve, in the table's order; empty for an empty table]}.
    """
    if not 0 <= max_drop < 1:
        raise ConfigError(f"--max-drop must be in [0, 1) (0.01 is one point of accuracy), got {max_drop}")
    rows = [r for r in table.rows if (method is None or r.method == method) and (scope is None or r.scope == scope)]
    by_curve: dict[tuple[str, str], list[ResultRow]] = {}
    for row in rows:
        by_curve.setdefault((row.method, row.scope), []).append(row)
    floor = table.baseline_accuracy - max_drop
    curves = [_curve_trade_off(m, s, members, floor, table.baseline_accuracy) for (m, s), members in by_curve.items()]
    nothing = {"sparsity": 0.0, "accuracy": table.baseline_accuracy, "method": None, "scope": None,
               "units": None, "knee_sparsity": None, "knee_accuracy": None}  # fmt: skip
    units = "weights" if any(c["units"] == "weights" for c in curves) else "channels"
    comparable = [c for c in curves if c["units"] == units and c["sparsity"] > 0]
    best = max(comparable, key=lambda c: (c["sparsity"], c["accuracy"]), default=nothing)
    return {**best, "max_drop": max_drop, "curves": curves}


def repeated_levels(table: ResultTable) -> list[str]:
    """One note per run of levels of a curve that gave the same model (the same non-zero count).

    Structured methods remove whole channels, so near levels can round to the same counts
    (l1-filter at 10% and 15% of a 20-channel layer both remove 2, or one --round-to block):
    the identical rows are the same model, not a measurement error.
    """
    notes = []
    for method, scope in dict.fromkeys((row.method, row.scope) for row in table.rows):
        rows = sorted((r for r in table.rows if (r.method, r.scope) == (method, scope)), key=lambda r: r.sparsity)
        runs: list[list[ResultRow]] = []
        for row in rows:
            if runs and runs[-1][-1].num_nonzero == row.num_nonzero and row.sparsity > 0:
                runs[-1].append(row)
            else:
                runs.append([row])
        for same in (run for run in runs if len(run) > 1):
            why = (
                "each layer's count rounds to whole channels (and to --round-to blocks)"
                if sparsity_units(method) == "channels"
                else "the same weights remain (the caps or the layers' sizes allow no more)"
            )
            levels = ", ".join(f"{row.sparsity:.0%}" for row in same)
            notes.append(f"{method} ({scope}) at {levels}: the same model, {same[0].num_nonzero:,} weights kept: {why}")
    return notes


def _curve_trade_off(method: str, scope: str, rows: list[ResultRow], floor: float, baseline: float) -> dict:
    within = [r for r in rows if r.accuracy is not None and r.accuracy >= floor - 1e-12]
    best = max(within, key=lambda r: (r.sparsity, r.accuracy), default=None)
    knee = _knee(sorted(rows, key=lambda r: r.sparsity))
    return {
        "method": method,
        "scope": scope,
        "units": sparsity_units(method),
        "sparsity": best.sparsity if best else 0.0,
        "accuracy": best.accuracy if best else baseline,
        "knee_sparsity": knee.sparsity if knee else None,
        "knee_accuracy": knee.accuracy if knee else None,
    }


def _knee(rows: list[ResultRow]) -> ResultRow | None:
    """The point farthest above the chord from the first to the last point (Kneedle, simplified).

    None for a flat curve, and for one with no point above the chord (it falls from the start:
    an end point is no knee).
    """
    if len(rows) < 3:
        return None
    x = np.array([r.sparsity for r in rows])
    y = np.array([r.accuracy for r in rows])
    if not np.ptp(y):
        return None
    span_x, span_y = np.ptp(x) or 1.0, np.ptp(y) or 1.0
    xn, yn = (x - x[0]) / span_x, (y - y.min()) / span_y
    above = (yn - (yn[0] + (yn[-1] - yn[0]) * xn))[1:-1]
    if above.max() <= 1e-9:
        return None
    return rows[1 + int(np.argmax(above))]


def sensitivity(
    model: Model,
    data: Dataset,
    preprocess: Preprocess,
    levels: list[float],
    method: str = "magnitude",
    progress: Progress | None = None,
) -> ResultTable:
    """Prune one layer at a time over `levels` (the others dense): each layer's accuracy curve.

    Returns:
        A `ResultTable` of kind "sensitivity": one row per (layer, level); the row's `scope`
        names the layer.
    """
    levels = check_levels(list(levels))
    sweeper = Sweeper(model, data, preprocess)
    baseline, _ = sweeper.evaluate()
    layers = list(sweeper.torch_model.params)
    table = ResultTable("sensitivity", str(model.path or "model"), layers, baseline, extra={"samples": len(data)})
    total = len(table.layer_names) * len(levels)
    for name in sweeper.torch_model.params:
        for level in levels:
            count = sweeper.levels.apply_to_layer(method, name, level)
            top1, loss = sweeper.evaluate()
            layer_sparsity = [level if other == name else 0.0 for other in table.layer_names]
            nonzero = sum(e.layer.numel for e in sweeper.torch_model.params.values()) - count
            table.rows.append(ResultRow(level, top1, loss, int(nonzero), method, name, layer_sparsity))
            if progress:
                progress({"done": len(table.rows), "total": total, "row": table.rows[-1]})
    sweeper.levels.restore()
    return table


def ratios_for_target(table: ResultTable, model: Model, target: float, max_drop: float) -> dict[str, float]:
    """Per-layer ratios reaching `target` overall while each layer alone stays within the tightest drop possible.

    Finds the smallest per-layer accuracy drop t such that giving every layer the highest level
    whose drop (alone) is at most t reaches `target` of all prunable weights. Layers are then
    trimmed back so the overall sparsity is `target` (not more). If even `max_drop` per layer
    cannot reach the target, the ratios for `max_drop` are returned (the caller reports it).
    """
    sizes = {layer.name: layer.numel for layer in model.layers}
    curves: dict[str, list[tuple[float, float]]] = {}
    for row in table.rows:
        curves.setdefault(row.scope, []).append((row.sparsity, table.baseline_accuracy - row.accuracy))

    def ratios_at(tolerance: float) -> dict[str, float]:
        return {
            name: max((level for level, drop in curve if drop <= tolerance), default=0.0)
            for name, curve in curves.items()
        }

    def overall(ratios: dict[str, float]) -> float:
        return sum(ratios[name] * sizes[name] for name in ratios) / sum(sizes[name] for name in ratios)

    drops = sorted({max(0.0, drop) for curve in curves.values() for _, drop in curve if drop <= max_drop} | {0.0})
    chosen = ratios_at(max_drop)
    for tolerance in drops:
        candidate = ratios_at(tolerance)
        if overall(candidate) >= target:
            chosen = candidate
            break
    excess = overall(chosen) - target
    if excess > 0:  # trim the largest layers first, which overshoot the most per step
        total = sum(sizes[name] for name in chosen)
        for name in sorted(chosen, key=lambda n: -sizes[n]):
            reducible = min(chosen[name], excess * total / sizes[name])
            chosen[name] = round(chosen[name] - reducible, 6)
            excess -= reducible * sizes[name] / total
            if excess <= 1e-12:
                break
    return chosen


# the sensitivity allocation blended with global magnitude's, from all of it (1) to none (0)
MIXES = (1.0, 0.75, 0.5, 0.25, 0.0)


@dataclass
class Allocation:
    """Per-layer ratios whose combined accuracy was measured on samples the curves were not measured on.

    Attributes:
        ratios: layer -> sparsity (reaching the target overall).
        top1: the combined top-1 of these ratios on the held-out samples.
        baseline: the dense top-1 on them.
        samples: how many.
        mix: 1 is the sensitivity allocation as found, 0 global magnitude's allocation at the target.
        within_budget: the combined drop is at most the budget.
        candidates: every mix tried, {"mix", "top1"}.
    """

    ratios: dict[str, float]
    top1: float
    baseline: float
    samples: int
    mix: float
    within_budget: bool
    candidates: list[dict]


def checked_allocation(
    model: Model, table: ResultTable, held_out: Dataset, preprocess: Preprocess, target: float, max_drop: float,
    method: str = "magnitude",
) -> Allocation:  # fmt: skip
    """The sensitivity allocation, checked as a whole and corrected until its combined drop fits `max_drop`.

    Per-layer budgets add up: each layer alone within one point can lose many together. The
    allocation of `ratios_for_target` is measured as a whole on `held_out`; where its drop exceeds
    `max_drop`, it is blended with global magnitude's allocation at the same target (every blend
    reaches the target: overall sparsity is linear in the ratios) in the steps of `MIXES`, and the
    blend of best combined top-1 is kept when it beats global by more than the sampling noise,
    else global itself (`within_budget` says whether it fits): the result is never below global
    magnitude on these samples, and a lead inside the noise (cora_mnist_point: a blend 1 point
    ahead on 300 images, 1 point behind on 1,000 others) does not replace it.
    """
    sensitive = ratios_for_target(table, model, target, max_drop)
    sweeper = Sweeper(model, held_out, preprocess, engine="torch")
    baseline, _ = sweeper.evaluate()
    sweeper.levels.apply(method, "global", target)
    zeros = sweeper.levels.zeros()
    global_ratios = {name: zeros[name] / sweeper.levels.originals[name].numel() for name in sensitive}
    candidates, measured = [], {}
    for mix in MIXES:
        ratios = {name: round(mix * sensitive[name] + (1 - mix) * global_ratios[name], 6) for name in sensitive}
        sweeper.levels.apply_ratios(method, ratios)
        top1, _ = sweeper.evaluate()
        candidates.append({"mix": mix, "top1": top1})
        measured[mix] = (ratios, top1)
        if mix == 1.0 and baseline - top1 <= max_drop + 1e-12:
            break  # the allocation as found holds together: nothing to correct
    sweeper.levels.restore()
    # the best blend (on a tie the earlier: more of the sensitivity allocation); global itself
    # unless a blend beats it by more than the sampling noise of these samples
    mix = max(measured, key=lambda mix: (measured[mix][1], mix))
    if 0.0 in measured and measured[mix][1] - measured[0.0][1] <= sampling_noise(measured[0.0][1], len(held_out)):
        mix = 0.0
    ratios, top1 = measured[mix]
    within = baseline - top1 <= max_drop + 1e-12
    return Allocation(ratios, top1, baseline, len(held_out), mix, within, candidates)


def write_ratios(ratios: dict[str, float], path: str | os.PathLike, comment: str = "") -> None:
    """A ratio YAML that `onnxprune prune --config` reads."""
    from pathlib import Path

    from onnxprune.files import save_atomic

    text = (f"# {comment}\n" if comment else "") + yaml.safe_dump(
        {name: float(value) for name, value in ratios.items()}, sort_keys=False
    )
    save_atomic(lambda temp: Path(temp).write_text(text), Path(path))
