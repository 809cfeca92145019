"""Every figure users ask for, as PNG files (matplotlib, Agg backend: no screen needed).

Each function takes results or models, writes one PNG and returns its path; `onnxprune plot`
reaches each of them from saved results. Axes are in percent, titles say what was measured.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from onnxprune.errors import ConfigError  # noqa: E402
from onnxprune.graph.model import Model  # noqa: E402
from onnxprune.results import ResultTable  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.axis import Axis
    from matplotlib.backend_bases import RendererBase
    from matplotlib.figure import Figure
    from matplotlib.legend import Legend
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    from onnxprune.measure.bench import ModelBench

SIZE = (8, 5)
DPI = 100  # 800 x 500 pixels
DENSE_STYLE = {"color": "gray", "linestyle": "--", "linewidth": 1}
DENSE_LINES = ("--", ":", "-.")  # one dash pattern per model when several share a figure
TITLE_WIDTH = 70  # characters of a title line at the default size
LEGEND_ROWS = 18  # entries per legend column before a second column starts


def _figure(*grid: int, **options: Any) -> tuple[Figure, Any]:
    """A figure whose layout matplotlib keeps free of overlaps (constrained layout, legends included).

    The second item is what `plt.subplots` gives: one `Axes`, or an array of them for a grid.
    """
    return plt.subplots(*grid, figsize=options.pop("figsize", SIZE), layout="constrained", **options)


def _save(figure: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def _legend_outside(axis: Axes, fontsize: float = 8, **options: Any) -> None:
    """The legend to the right of the axes, never over the data; more columns when it is long."""
    handles, labels = axis.get_legend_handles_labels()
    if handles:
        columns = -(-len(handles) // LEGEND_ROWS)
        axis.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=fontsize,
                    ncol=columns, **options)  # fmt: skip


def _figure_legend(figure: Figure, axes: Sequence[Axes], fontsize: float = 7) -> None:
    """One legend for all panels, below them (an entry drawn in several panels, like "dense", once)."""
    entries = {}
    for axis in axes:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    if entries:  # below the panels: to their right it would run into a long title
        figure.legend(list(entries.values()), list(entries), loc="outside lower center", fontsize=fontsize,
                      ncol=min(3, len(entries)))  # fmt: skip


def _legend_below(axis: Axes, fontsize: float = 7) -> None:
    """The legend under the axes (panels side by side leave no room to their right)."""
    handles, _ = axis.get_legend_handles_labels()
    if handles:
        axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), borderaxespad=0.0, fontsize=fontsize,
                    ncol=min(2, len(handles)))  # fmt: skip


def _whole_number_ticks(axis: Axes, values: Sequence[int]) -> None:
    """Epochs and rounds are whole numbers: a tick at each when few, else whole-number ticks only."""
    if 0 < len(values) <= 12:
        axis.set_xticks(list(values))
    else:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))


def _wrapped(title: str) -> str:
    """A title broken into lines that fit the figure (long file names are common)."""
    import textwrap

    return "\n".join(textwrap.wrap(title, TITLE_WIDTH, break_on_hyphens=False)) or title


def _model_names(tables: Sequence[ResultTable]) -> str:
    return ", ".join(dict.fromkeys(Path(table.model).name for table in tables))


def save_checked(figure: Figure, path: str | os.PathLike) -> Path:
    """Save a figure drawn outside this module (benchmarks) once `layout_problems` finds nothing in it."""
    problems = layout_problems(figure)
    if problems:
        plt.close(figure)
        raise ValueError(f"figure layout: {problems}")
    return _save(figure, path)


def layout_problems(figure: Figure) -> list[str]:
    """What would make a drawn figure hard to read, in words (an empty list: nothing).

    Looked for: text cut off by the figure's edge, a legend over the data, a text or another
    panel, panels that overlap, a legend entry repeated, an empty panel.

    The figure tests call it on every figure the tool draws, from real results.
    """
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    canvas = figure.bbox
    problems = []
    panels = [axis for axis in figure.axes if axis.get_visible() and axis.axison]
    texts = [(text, text.get_window_extent(renderer)) for text in _texts(figure)]
    for text, box in texts:
        if box.x0 < canvas.x0 - 1 or box.y0 < canvas.y0 - 1 or box.x1 > canvas.x1 + 1 or box.y1 > canvas.y1 + 1:
            problems.append(f"text {text.get_text()[:40]!r} is cut off by the figure's edge")
    for axis in panels:
        legend = axis.get_legend()
        if legend is not None:
            problems += _legend_problems(axis, legend, renderer, panels)
        if not _has_data(axis) and not axis.get_title().startswith("no "):  # "no validation data: ..." says why
            problems.append(f"panel {_name(axis)} is empty")
    for legend in figure.legends:
        box = legend.get_window_extent(renderer)
        if any(_overlap(box, axis.bbox) for axis in panels):
            problems.append("the figure's legend covers a panel")
    legends = [axis.get_legend() for axis in panels if axis.get_legend() is not None] + list(figure.legends)
    for legend in legends:
        box, own = legend.get_window_extent(renderer), set(map(id, legend.get_texts()))
        for text, text_box in texts:
            if id(text) not in own and _overlap(box, text_box):
                problems.append(f"a legend covers the text {text.get_text()[:40]!r}")
    problems += [problem for axis in panels for problem in _fractional_ticks(axis)]
    tight = [(axis, axis.get_tightbbox(renderer)) for axis in panels]
    for index, (first, one) in enumerate(tight):
        for second, other in tight[index + 1 :]:
            shared = first.bbox.bounds == second.bbox.bounds  # twin axes share their place on purpose
            if not shared and _overlap(one.padded(-1), other.padded(-1)):
                problems.append(f"panels {_name(first)} and {_name(second)} overlap")
    return problems


def _has_data(axis: Axes) -> bool:
    """Whether the panel shows anything: a line with a finite point, a bar, a marker or an image."""
    finite = any(np.isfinite(np.asarray(line.get_ydata(), dtype=float)).any() for line in axis.lines)
    return finite or bool(axis.patches or axis.collections or axis.images)


def _fractional_ticks(axis: Axes) -> list[str]:
    """Epoch and round axes tick on whole numbers only."""
    label = axis.get_xlabel()
    if not label.startswith(("epoch", "round", "pruning round")):
        return []
    ticks = [t.get_text().replace("\u2212", "-") for t in _drawn_tick_labels(axis.xaxis, axis.get_xlim())]
    if all(t.lstrip("-").isdigit() for t in ticks if t):
        return []
    return [f"the {label.split()[0]} axis of {_name(axis)} has ticks between whole numbers: {ticks}"]


def _name(axis: Axes) -> str:
    return repr(axis.get_title()[:40])


def _texts(figure: Figure) -> list[Text]:
    texts = [t for t in figure.texts if t.get_text()]  # the suptitle included
    for axis in figure.axes:
        if not (axis.get_visible() and axis.axison):
            continue
        texts += [axis.title, axis._left_title, axis._right_title, axis.xaxis.label, axis.yaxis.label]
        texts += list(axis.texts)
        texts += _drawn_tick_labels(axis.xaxis, axis.get_xlim()) + _drawn_tick_labels(axis.yaxis, axis.get_ylim())
        if axis.get_legend() is not None:
            texts += list(axis.get_legend().get_texts())
    for legend in figure.legends:
        texts += list(legend.get_texts())
    return [t for t in texts if t.get_visible() and t.get_text()]


def _drawn_tick_labels(axis: Axis, limits: tuple[float, float]) -> list[Text]:
    """The tick labels matplotlib draws: those of ticks within the view (the others exist but stay hidden)."""
    low, high = sorted(limits)
    span = (high - low) * 1e-9
    return [label for location, label in zip(axis.get_majorticklocs(), axis.get_majorticklabels(), strict=False)
            if low - span <= location <= high + span]  # fmt: skip


def _legend_problems(axis: Axes, legend: Legend, renderer: RendererBase, panels: Sequence[Axes]) -> list[str]:
    problems = []
    labels = [t.get_text() for t in legend.get_texts()]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        problems.append(f"legend of {_name(axis)} repeats {repeated}")
    box = legend.get_window_extent(renderer)
    if any(_overlap(box, other.bbox) for other in panels if other.bbox.bounds != axis.bbox.bounds):
        problems.append(f"legend of {_name(axis)} covers another panel")
    if _overlap(box, axis.bbox) and _covers_data(axis, box):
        problems.append(f"legend of {_name(axis)} covers its data")
    return problems


def _covers_data(axis: Axes, box: Bbox) -> bool:
    """Whether any plotted point, bar or marker of `axis` lies under `box` (display coordinates)."""
    for line in axis.lines:
        points = line.get_transform().transform(np.column_stack(line.get_data()).astype(float))
        if line.get_linestyle() not in ("None", "") and len(points) > 1 and box.overlaps(line.get_window_extent()):
            if _segments_cross(points, box):
                return True
        if any(box.contains(x, y) for x, y in points):
            return True
    for patch in axis.patches:
        empty_bar = hasattr(patch, "get_height") and not patch.get_height()  # a zero bar draws nothing
        if not empty_bar and _overlap(box, patch.get_window_extent()):
            return True
    for collection in axis.collections:
        offsets = collection.get_offset_transform().transform(collection.get_offsets())
        if any(box.contains(x, y) for x, y in offsets):
            return True
    return False


def _segments_cross(points: np.ndarray, box: Bbox) -> bool:
    """Whether the polyline through `points` passes through `box` (sampled finely along each segment)."""
    for start, end in zip(points[:-1], points[1:], strict=True):
        for t in np.linspace(0.0, 1.0, 50):
            x, y = start + t * (end - start)
            if box.contains(x, y):
                return True
    return False


def _overlap(one: Bbox, other: Bbox) -> bool:
    return one.x0 < other.x1 and other.x0 < one.x1 and one.y0 < other.y1 and other.y0 < one.y1


def accuracy_vs_sparsity(tables: Sequence[ResultTable], path: str | os.PathLike, title: str | None = None) -> Path:
    """One curve per method and scope (and per table), the dense accuracy as a dashed line.

    Sparsities of weights and of channels do not share an axis: a sweep of both gets two panels.
    """
    from onnxprune.pruning.methods import sparsity_units

    curves = []  # (table, label, what its sparsity counts, its rows)
    for table in tables:
        for label in table.methods():
            rows = [r for r in table.rows if f"{r.method} ({r.scope})" == label]
            curves.append((table, label, sparsity_units(rows[0].method), rows))
    units = list(dict.fromkeys(unit for _, _, unit, _ in curves)) or ["weights"]
    figure, axes = _figure(1, len(units), squeeze=False, sharey=True)
    several = len({table.model for table in tables}) > 1  # curves are named after their model
    for axis, unit in zip(axes[0], units, strict=True):
        for index, (table, label, curve_unit, rows) in enumerate(curves):  # a colour per curve across the panels
            if curve_unit != unit:
                continue
            prefix = f"{Path(table.model).stem}: " if several else ""
            suffix = ", reconstructed" if table.extra.get("reconstructed_on") else ""  # --reconstruct
            x, y = [100 * r.sparsity for r in rows], [100 * r.accuracy for r in rows]
            axis.plot(x, y, marker=".", color=f"C{index % 10}", label=prefix + label + suffix)
        baselines = {(t.model, t.baseline_accuracy) for t in tables if t.baseline_accuracy is not None}
        drawn = set()  # one dense line per model and measured value (tables of one model on one set share it)
        for table in tables:
            key = (table.model, table.baseline_accuracy)
            if table.baseline_accuracy is not None and key not in drawn:
                drawn.add(key)
                name = f"dense {Path(table.model).stem}" if several else "dense"
                if sum(model == table.model for model, _ in baselines) > 1:  # measured on different samples
                    name += f" ({100 * table.baseline_accuracy:.2f}%)"
                style = {**DENSE_STYLE, "linestyle": DENSE_LINES[(len(drawn) - 1) % len(DENSE_LINES)]}
                axis.axhline(100 * table.baseline_accuracy, label=name, **style)
        if len(tables) == 1:
            _draw_trade_off(axis, tables[0], unit)
        axis.set_xlabel(f"sparsity{chr(10) if len(units) > 1 else ' '}(% of prunable {unit} removed)")
        if len(units) > 1:
            axis.set_title({"weights": "unstructured", "channels": "filters and neurons"}[unit], fontsize=10)
        axis.grid(alpha=0.3)
    _figure_legend(figure, axes[0])
    axes[0][0].set_ylabel("top-1 accuracy (%)")
    figure.suptitle(_wrapped(title or f"Accuracy vs sparsity, no fine-tuning: {_model_names(tables)}"))
    return _save(figure, path)


def _draw_trade_off(axis: Axes, table: ResultTable, unit: str) -> None:
    """A sweep's `--max-drop` budget (a dotted line below the dense one) and the level chosen within it, ringed."""
    choice = table.extra.get("trade_off") or {}
    if choice.get("near_chance") or choice.get("max_drop") is None or table.baseline_accuracy is None:
        return
    floor = 100 * (table.baseline_accuracy - choice["max_drop"])
    axis.axhline(floor, color="tab:red", linestyle=":", linewidth=1,
                 label=f"budget: dense - {100 * choice['max_drop']:.1f} points")  # fmt: skip
    if choice.get("method") is not None and choice.get("units") == unit:
        label = f"chosen: {100 * choice['sparsity']:.1f}% ({choice['method']}, {choice['scope']})"
        axis.plot([100 * choice["sparsity"]], [100 * choice["accuracy"]], marker="o", markersize=12,
                  markerfacecolor="none", markeredgecolor="black", linestyle="none", label=label)  # fmt: skip


def pareto(
    points: Sequence[dict], path: str | os.PathLike, title: str = "Accuracy vs sparsity across runs and methods"
) -> Path:
    """Every (sparsity, accuracy, label) point; the non-dominated frontier highlighted.

    A point may say what its sparsity counts ("units": weights or channels): channel points are
    squares and their labels say so. The point with the best score mean(accuracy, sparsity) is
    ringed, and named in the legend.
    """
    if not points:
        raise ConfigError("no points to plot: give results files that hold accuracy and sparsity")
    figure, axis = _figure()
    mixed = len({p.get("units", "weights") for p in points}) > 1
    labels = list(dict.fromkeys(p["label"] for p in points))
    for label in labels:
        chosen = [p for p in points if p["label"] == label]
        channels = chosen[0].get("units") == "channels"
        shown = f"{label} [channels]" if mixed and channels else label
        axis.scatter([100 * p["sparsity"] for p in chosen], [100 * p["accuracy"] for p in chosen], label=shown, s=20,
                     marker="s" if channels else "o")  # fmt: skip
    frontier = pareto_frontier(points)
    x, y = [100 * p["sparsity"] for p in frontier], [100 * p["accuracy"] for p in frontier]
    axis.plot(x, y, color="black", linewidth=1.5, label="Pareto frontier")
    best = max(points, key=lambda p: (p["accuracy"] + p["sparsity"]) / 2)
    score = (best["accuracy"] + best["sparsity"]) / 2
    axis.scatter([100 * best["sparsity"]], [100 * best["accuracy"]], s=160, facecolors="none", edgecolors="red",
                 label=f"best mean(accuracy, sparsity) = {score:.3f}: {best['label']}")  # fmt: skip
    axis.set_xlabel("sparsity (% of prunable weights removed;\nof channels for [channels] entries)" if mixed
                    else f"sparsity (% of prunable {points[0].get('units', 'weights')} removed)")  # fmt: skip
    axis.set_ylabel("top-1 accuracy (%)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    _legend_outside(axis)
    return _save(figure, path)


def pareto_frontier(points: Sequence[dict]) -> list[dict]:
    """Points no other point beats in both sparsity and accuracy, by increasing sparsity."""
    ordered = sorted(points, key=lambda p: (-p["sparsity"], -p["accuracy"]))
    frontier, best_accuracy = [], -np.inf
    for point in ordered:
        if point["accuracy"] > best_accuracy:
            frontier.append(point)
            best_accuracy = point["accuracy"]
    return sorted(frontier, key=lambda p: p["sparsity"])


def mask(model: Model, path: str | os.PathLike, layer: str | None = None) -> Path:
    """Kept and pruned weights of one layer (or every layer): a row per filter, C x kH x kW columns."""
    layers = [model.layer(layer)] if layer else model.layers
    columns = min(len(layers), 3)
    rows = int(np.ceil(len(layers) / columns))
    figure, axes = _figure(rows, columns, squeeze=False)
    colours = matplotlib.colors.ListedColormap(["#d62728", "#1f77b4"])
    for axis, item in zip(axes.flat, layers, strict=False):
        weight = np.moveaxis(model.weight_array(item), item.out_axis, 0)
        kept = (weight.reshape(weight.shape[0], -1) != 0).astype(float)
        axis.imshow(kept, aspect="auto", interpolation="nearest", cmap=colours, vmin=0, vmax=1)
        axis.set_title(f"{item.name}: {1 - kept.mean():.0%} pruned", fontsize=9)
        axis.set_ylabel("filter / neuron", fontsize=8)
        axis.set_xlabel("C x kH x kW" if item.op_type == "Conv" else "input", fontsize=8)
    for axis in list(axes.flat)[len(layers) :]:
        axis.axis("off")
    figure.suptitle(f"Masks of {Path(str(model.path or 'model')).name} (blue kept, red pruned)")
    return _save(figure, path)


def layer_sparsity(model: Model, path: str | os.PathLike, title: str | None = None) -> Path:
    """Sparsity of every prunable layer (bars) and, when layers group into blocks, of every block."""
    names, values, sizes = [], [], []
    for item in model.layers:
        weight = model.weight_array(item)
        names.append(item.name)
        values.append(100 * float(np.mean(weight == 0)))
        sizes.append(item.numel)
    blocks: dict[str, list[int]] = {}
    for index, item in enumerate(model.layers):
        blocks.setdefault(_block_of(item.weight, item.name), []).append(index)
    grouped = len(blocks) < len(names)  # a block panel of one layer per block would repeat the layer panel
    if grouped:
        figure, (left, right) = _figure(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    else:
        figure, left = _figure()
    left.bar(range(len(names)), values, color="#1f77b4")
    left.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    left.set_ylabel("weights pruned (%)")
    left.set_ylim(0, 100)
    left.set_title("per layer", fontsize=10)
    if grouped:
        block_values = [
            100 * sum(values[i] / 100 * sizes[i] for i in members) / sum(sizes[i] for i in members)
            for members in blocks.values()
        ]
        right.bar(range(len(blocks)), block_values, color="#ff7f0e")
        right.set_xticks(range(len(blocks)), list(blocks), rotation=60, ha="right", fontsize=7)
        right.set_ylim(0, 100)
        right.set_title("per block (weighted by size)", fontsize=10)
    figure.suptitle(title or f"Sparsity per layer: {Path(str(model.path or 'model')).name}")
    return _save(figure, path)


def _block_of(weight_name: str, layer_name: str) -> str:
    """'layer1.0.conv1.weight' -> 'layer1.0'; names without dots are their own block."""
    parts = weight_name.split(".")
    return ".".join(parts[:-2]) if len(parts) > 2 else layer_name


def filters_per_layer(before: Model, after: Model, path: str | os.PathLike, title: str | None = None) -> Path:
    """Output channels of every layer before and after structured pruning."""
    kept = {item.name: item.shape[item.out_axis] for item in after.layers}
    names = [item.name for item in before.layers]
    original = [item.shape[item.out_axis] for item in before.layers]
    now = [kept.get(name, 0) for name in names]
    figure, axis = _figure()
    positions = np.arange(len(names))
    axis.bar(positions - 0.2, original, width=0.4, label="before")
    axis.bar(positions + 0.2, now, width=0.4, label="after")
    axis.set_xticks(positions, names, rotation=60, ha="right", fontsize=7)
    axis.set_ylabel("filters / neurons")
    axis.set_title(title or f"Filters per layer: {sum(original):,} -> {sum(now):,}")
    _legend_outside(axis)
    return _save(figure, path)


def training(run: dict, path: str | os.PathLike) -> Path:
    """A run's training, from its results.json, in four panels with their own axes.

    Loss and top-1 per epoch through all rounds (a dotted line where a round ends); per round the
    sparsity, and the top-1 after pruning and after fine-tuning.
    """
    rounds = run["extra"]["rounds"] if "extra" in run else run["rounds"]
    figure, ((loss_axis, accuracy_axis), (sparsity_axis, top1_axis)) = _figure(2, 2, figsize=(9, 6))
    epochs, losses, train_top1, val_top1, boundaries = [], [], [], [], []
    count = 0  # epochs so far; a NaN point at each round's end breaks the lines there (a new pruning came)
    for record in rounds:
        history = record.get("train_history") or []
        for entry in history:
            count += 1
            epochs.append(count)
            losses.append(entry["train_loss"])
            train_top1.append(100 * entry["train_top1"])
            val_top1.append(100 * entry["val_top1"] if entry.get("val_top1") is not None else np.nan)
        boundaries.append(count + 0.5)
        epochs.append(count + 0.5)
        for values in (losses, train_top1, val_top1):
            values.append(np.nan)
    loss_axis.plot(epochs, losses, marker=".", color="#1f77b4")
    loss_axis.set_ylim(bottom=0)  # from zero: noise should look like noise
    accuracy_axis.plot(epochs, train_top1, marker=".", label="train")
    if not np.all(np.isnan(val_top1)):
        accuracy_axis.plot(epochs, val_top1, marker="x", label="validation")
    for axis in (loss_axis, accuracy_axis):
        for boundary in boundaries[:-1]:  # where a round ends and the next pruning comes
            axis.axvline(boundary, color="gray", linestyle=":", linewidth=1)
        axis.set_xlabel("epoch (dotted: a new round)" if len(rounds) > 1 else "epoch")
    loss_axis.set_title("training loss per epoch", fontsize=9)
    accuracy_axis.set_title("top-1 per epoch (%)", fontsize=9)
    _legend_outside(accuracy_axis, fontsize=7)
    numbers = [r["round"] for r in rounds]
    sparsity_axis.plot(numbers, [100 * r["sparsity"] for r in rounds], marker="o", color="#2ca02c")
    units = run.get("units", "weights")  # filter runs count channels
    sparsity_axis.set_title(f"sparsity after each round (% of prunable {units})", fontsize=9)
    sparsity_axis.set_ylim(0, 100)
    pruned = [100 * r["top1_pruned"] if r.get("top1_pruned") is not None else np.nan for r in rounds]
    tuned = [100 * r["top1"] if r.get("top1") is not None else np.nan for r in rounds]
    if not np.all(np.isnan(pruned)):
        top1_axis.plot(numbers, pruned, marker="v", label="after pruning")
    if not np.all(np.isnan(tuned)):
        top1_axis.plot(numbers, tuned, marker="s", label="after fine-tuning" if epochs else "top-1")
    measured = not (np.all(np.isnan(pruned)) and np.all(np.isnan(tuned)))
    top1_axis.set_title("top-1 on validation per round (%)" if measured else "no validation data: no top-1", fontsize=9)
    _legend_outside(top1_axis, fontsize=7)
    whole_epochs = list(range(1, count + 1))
    for axis, counts in ((loss_axis, whole_epochs), (accuracy_axis, whole_epochs), (sparsity_axis, numbers),
                         (top1_axis, numbers)):  # fmt: skip
        _whole_number_ticks(axis, counts)
        axis.grid(alpha=0.3)
    for axis in (accuracy_axis, top1_axis):  # a percentage: the margins matplotlib adds stop at 0 and 100
        low, high = axis.get_ylim()
        axis.set_ylim(max(low, 0), min(high, 100))
    for axis in (sparsity_axis, top1_axis):
        axis.set_xlabel("round")
    return _save(figure, path)


def taylor_rounds(history: Sequence[dict], path: str | os.PathLike) -> Path:
    """MATLAB's three Taylor plots: mini-batch loss, validation accuracy, filters left, per round."""
    figure, axes = _figure(1, 3)
    rounds = [h["round"] for h in history]
    axes[0].plot(rounds, [h["loss"] for h in history], marker=".")
    axes[0].set_title("mini-batch loss", fontsize=9)
    axes[1].plot(rounds, [100 * (h["val_top1"] or 0) for h in history], marker=".")
    axes[1].set_title("validation accuracy (%)", fontsize=9)
    axes[2].plot(rounds, [h["filters"] for h in history], marker=".")
    axes[2].set_title("filters left", fontsize=9)
    for axis in axes:
        axis.set_xlabel("pruning round")
        _whole_number_ticks(axis, rounds)
    return _save(figure, path)


def batchnorm_scales(
    models: Sequence[Model], path: str | os.PathLike, labels: Sequence[str] | None = None, bins: int = 50
) -> Path:
    """Histogram of |gamma| (BatchNorm scale factors) of each model, overlaid."""
    from onnx import numpy_helper

    figure, axis = _figure()
    every = []
    for model in models:
        scales = [
            numpy_helper.to_array(model.initializer(node.input[1]))
            for node in model.proto.graph.node
            if node.op_type == "BatchNormalization" and node.input[1] in model._initializers
        ]
        if not scales:
            raise ConfigError(f"{model.path or 'model'}: has no BatchNormalization layer; no scale factors to plot")
        every.append(np.abs(np.concatenate([s.reshape(-1) for s in scales])))
    edges = np.linspace(0.0, max(float(v.max()) for v in every) or 1.0, bins + 1)  # one set of bins for all
    for index, (model, values) in enumerate(zip(models, every, strict=True)):
        label = labels[index] if labels and index < len(labels) else Path(str(model.path or f"model {index}")).name
        near_zero = float(np.mean(values < 1e-2))
        axis.hist(values, bins=edges, alpha=0.5, label=f"{label} ({values.size} channels, {near_zero:.0%} < 0.01)")
    axis.set_xlabel("|gamma| (BatchNorm scale)")
    axis.set_ylabel("channels")
    axis.set_title("BatchNorm scale factors")
    _legend_below(axis, fontsize=8)
    return _save(figure, path)


def sensitivity(table: ResultTable, path: str | os.PathLike) -> Path:
    """One accuracy curve per layer, each pruned alone."""
    figure, axis = _figure()
    for name in table.layer_names:
        rows = [r for r in table.rows if r.scope == name]
        axis.plot([100 * r.sparsity for r in rows], [100 * r.accuracy for r in rows], marker=".", label=name)
    if table.baseline_accuracy is not None:
        axis.axhline(100 * table.baseline_accuracy, label="dense", **DENSE_STYLE)
    axis.set_xlabel("sparsity of that layer alone (% of its weights)")
    axis.set_ylabel("top-1 accuracy (%)")
    axis.set_title(f"Sensitivity per layer: {Path(table.model).name}")
    axis.grid(alpha=0.3)
    _legend_outside(axis, fontsize=7)
    return _save(figure, path)


def bench_figure(results: Sequence[ModelBench], path: str | os.PathLike) -> Path:
    """Median latency, one panel per batch size, and file size (decimal kB or MB, as the tables), per model.

    Batch sizes get panels of their own: batch-1 bars of 0.02 ms beside a 72 ms batch-32 bar on one
    axis would be invisible. A panel whose bars still span 10x or more (an int8 model 8x slower, a
    tiny pruned one) is drawn on a log axis, said in its label. Bars are horizontal, the model names
    written once on the left, each bar's value at its end (three significant digits, in µs where
    the whole panel is under 1 ms): no legend,
    no rotated labels. A batch size a model's graph cannot take has no bar, and a fixed-batch model's
    larger batches ran on a symbolic-batch copy: notes under the panels say which models.
    """
    from onnxprune.measure.bench import latency_unit, three_digits

    batches = sorted({b for r in results for b in r.latency_ms}, key=int)
    colors = np.array([f"C{index % 10}" for index in range(len(results))])
    panels = len(batches) + 1
    figure, grid = _figure(1, panels, sharey=True, squeeze=False, figsize=(max(SIZE[0], 2.6 * panels), SIZE[1]))
    axes = grid[0]
    notes = []  # under the panels: a panel's title has no room for them
    for axis, batch in zip(axes, batches, strict=False):
        medians = np.array([r.latency_ms.get(batch, {}).get("median", np.nan) for r in results], dtype=float)
        unit, scale = latency_unit(medians)  # µs where the whole panel is under 1 ms, as the table
        log = _value_bars(axis, medians * scale, colors, three_digits)
        axis.set_xlabel(f"median latency ({unit}" + (", log scale)" if log else ")"), fontsize=8)
        copied = [r.name for r in results if r.batched_on_copy and batch in r.latency_ms and int(batch) != 1]
        axis.set_title(f"batch {batch}" + (" *" if copied else ""), fontsize=9)
        if copied:
            notes.append(f"* batch {batch} of graphs that fix batch 1 ({', '.join(copied)}): timed on a copy with "
                         "a symbolic batch")  # fmt: skip
        if not np.isfinite(medians).all():
            missing = [r.name for r in results if batch not in r.latency_ms]
            notes.append(f"no bar at batch {batch}: {', '.join(missing)} (a batch hard-coded in the graph)")
    sizes = axes[-1]
    unit, scale = ("kB", 1e3) if max(r.bytes for r in results) < 1e6 else ("MB", 1e6)
    files, zipped = (np.array([getattr(r, key) / scale for r in results]) for key in ("bytes", "zipped_bytes"))
    log = _value_bars(sizes, files, np.full(len(results), "#bbbbbb"), lambda size: f"{size:.3g}", also=zipped)
    low = sizes.get_xlim()[0] if log else 0.0
    sizes.barh(np.arange(len(results)), zipped - low, left=low, height=0.4, color="#555555")
    sizes.set_xlabel(f"{unit} (10^{int(np.log10(scale))} bytes" + (", log scale)" if log else ")"), fontsize=8)
    sizes.set_title("size: file (light),\nzipped (dark)", fontsize=9)
    first = axes[0]
    first.set_yticks(np.arange(len(results)), [r.name for r in results], fontsize=7)
    first.invert_yaxis()  # the reference, first on the command line, at the top
    for tick, color in zip(first.get_yticklabels(), colors, strict=True):
        tick.set_color(color)
    figure.suptitle("onnxruntime: latency per batch size, and size")
    if notes:
        figure.supxlabel("\n".join(_wrapped(note) for note in notes), fontsize=8, x=0.02, ha="left")
    return _save(figure, path)


def _value_bars(
    axis: Axes, values: np.ndarray, colors: np.ndarray, shown: Callable[[float], str], also: np.ndarray | None = None
) -> bool:
    """Horizontal bars, one row per model (NaN: none), each value written at its end.

    Values spanning 10x or more go on a log axis, so that the small ones stay visible (the bars
    start at the decade below the smallest, of `values` and of the bars to be drawn over them,
    `also`); returns whether it is log.
    """
    drawn = np.isfinite(values) & (values > 0)
    if not drawn.any():
        axis.set_xlim(0, 1)
        return False
    every = np.concatenate([values[drawn], [] if also is None else also[np.isfinite(also) & (also > 0)]])
    smallest, largest = every.min(), every.max()
    log = bool(largest >= 10 * smallest)
    low = 10 ** np.floor(np.log10(smallest)) if log else 0.0
    bars = axis.barh(np.flatnonzero(drawn), values[drawn] - low, left=low, height=0.8, color=colors[drawn])
    axis.bar_label(bars, [shown(value) for value in values[drawn]], padding=2, fontsize=7)
    if log:
        axis.set_xscale("log")
        axis.set_xlim(low, largest * 8)  # room for the largest bar's value
        axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # 0.01, not 10^-2
    else:
        axis.set_xlim(0, largest * 1.35)
    return log
