"""Every figure users ask for, as PNG files (matplotlib, Agg backend: no screen needed).

Each function takes results or models, writes one PNG and returns its path; `onnxprune plot`
reaches each of them from saved results. Axes are in percent, titles say what was measured.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from onnxprune.errors import ConfigError  # noqa: E402
from onnxprune.graph.model import Model  # noqa: E402
from onnxprune.report.results import ResultTable  # noqa: E402

SIZE = (8, 5)
DPI = 100  # 800 x 500 pixels


def _save(figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def accuracy_vs_sparsity(tables: Sequence[ResultTable], path, title: str | None = None) -> Path:
    """One curve per method and scope (and per table), and the dense accuracy as a line."""
    figure, axis = plt.subplots(figsize=SIZE)
    for table in tables:
        for label in table.methods():
            rows = [r for r in table.rows if f"{r.method} ({r.scope})" == label]
            prefix = f"{Path(table.model).stem}: " if len(tables) > 1 else ""
            x, y = [100 * r.sparsity for r in rows], [100 * r.accuracy for r in rows]
            axis.plot(x, y, marker=".", label=prefix + label)
        if table.baseline_accuracy is not None:
            axis.axhline(100 * table.baseline_accuracy, color="gray", linestyle="--", linewidth=1, label="dense")
    units = tables[0].units if tables else "weights"
    axis.set_xlabel(f"sparsity (% of prunable {units} removed)")
    axis.set_ylabel("top-1 accuracy (%)")
    axis.set_title(title or f"Accuracy vs sparsity: {Path(tables[0].model).name}, no fine-tuning")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return _save(figure, path)


def pareto(points: Sequence[dict], path, title: str = "Accuracy vs sparsity across runs and methods") -> Path:
    """Every (sparsity, accuracy, label) point; the non-dominated frontier highlighted.

    The point with the best score mean(accuracy, sparsity) is annotated.
    """
    if not points:
        raise ConfigError("no points to plot: give results files that hold accuracy and sparsity")
    figure, axis = plt.subplots(figsize=SIZE)
    labels = list(dict.fromkeys(p["label"] for p in points))
    for label in labels:
        chosen = [p for p in points if p["label"] == label]
        axis.scatter([100 * p["sparsity"] for p in chosen], [100 * p["accuracy"] for p in chosen], label=label, s=20)
    frontier = pareto_frontier(points)
    axis.plot(
        [100 * p["sparsity"] for p in frontier],
        [100 * p["accuracy"] for p in frontier],
        color="black",
        linewidth=1.5,
        label="Pareto frontier",
    )
    best = max(points, key=lambda p: (p["accuracy"] + p["sparsity"]) / 2)
    score = (best["accuracy"] + best["sparsity"]) / 2
    axis.annotate(
        f"best mean(acc, sparsity) = {score:.3f}\n{best['label']}",
        (100 * best["sparsity"], 100 * best["accuracy"]),
        xytext=(10, -30),
        textcoords="offset points",
        arrowprops={"arrowstyle": "->"},
        fontsize=8,
    )
    axis.set_xlabel("sparsity (%)")
    axis.set_ylabel("top-1 accuracy (%)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
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


def mask(model: Model, path, layer: str | None = None) -> Path:
    """Kept and pruned weights of one layer (or every layer): a row per filter, C x kH x kW columns."""
    layers = [model.layer(layer)] if layer else model.layers
    columns = min(len(layers), 3)
    rows = int(np.ceil(len(layers) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=SIZE, squeeze=False)
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


def layer_sparsity(model: Model, path, title: str | None = None) -> Path:
    """Sparsity of every prunable layer (bars) and of every block of layers."""
    names, values, sizes = [], [], []
    for item in model.layers:
        weight = model.weight_array(item)
        names.append(item.name)
        values.append(100 * float(np.mean(weight == 0)))
        sizes.append(item.numel)
    blocks: dict[str, list[int]] = {}
    for index, item in enumerate(model.layers):
        blocks.setdefault(_block_of(item.weight, item.name), []).append(index)
    figure, (left, right) = plt.subplots(1, 2, figsize=SIZE, gridspec_kw={"width_ratios": [3, 2]})
    left.bar(range(len(names)), values, color="#1f77b4")
    left.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    left.set_ylabel("weights pruned (%)")
    left.set_ylim(0, 100)
    left.set_title("per layer", fontsize=10)
    block_names = list(blocks)
    block_values = [
        100 * sum(values[i] / 100 * sizes[i] for i in members) / sum(sizes[i] for i in members)
        for members in blocks.values()
    ]
    right.bar(range(len(block_names)), block_values, color="#ff7f0e")
    right.set_xticks(range(len(block_names)), block_names, rotation=60, ha="right", fontsize=7)
    right.set_ylim(0, 100)
    right.set_title("per block", fontsize=10)
    figure.suptitle(title or f"Sparsity per layer: {Path(str(model.path or 'model')).name}")
    return _save(figure, path)


def _block_of(weight_name: str, layer_name: str) -> str:
    """'layer1.0.conv1.weight' -> 'layer1.0'; names without dots are their own block."""
    parts = weight_name.split(".")
    return ".".join(parts[:-2]) if len(parts) > 2 else layer_name


def filters_per_layer(before: Model, after: Model, path, title: str | None = None) -> Path:
    """Output channels of every layer before and after structured pruning."""
    kept = {item.name: item.shape[item.out_axis] for item in after.layers}
    names = [item.name for item in before.layers]
    original = [item.shape[item.out_axis] for item in before.layers]
    now = [kept.get(name, 0) for name in names]
    figure, axis = plt.subplots(figsize=SIZE)
    positions = np.arange(len(names))
    axis.bar(positions - 0.2, original, width=0.4, label="before")
    axis.bar(positions + 0.2, now, width=0.4, label="after")
    axis.set_xticks(positions, names, rotation=60, ha="right", fontsize=7)
    axis.set_ylabel("filters / neurons")
    axis.set_title(title or f"Filters per layer: {sum(original):,} -> {sum(now):,}")
    axis.legend()
    return _save(figure, path)


def training(run: dict, path) -> Path:
    """Loss and accuracy per epoch across rounds, and sparsity per round (from a run's results.json)."""
    rounds = run["extra"]["rounds"] if "extra" in run else run["rounds"]
    figure, (loss_axis, accuracy_axis, sparsity_axis) = plt.subplots(1, 3, figsize=SIZE)
    step = 0
    for record in rounds:
        history = record.get("train_history") or []
        epochs = np.arange(step + 1, step + len(history) + 1)
        loss_axis.plot(epochs, [h["train_loss"] for h in history], marker=".", label=f"round {record['round']}")
        accuracy_axis.plot(epochs, [100 * h["train_top1"] for h in history], marker=".", color="#1f77b4")
        val = [h["val_top1"] for h in history if h.get("val_top1") is not None]
        if val:
            accuracy_axis.plot(epochs[: len(val)], [100 * v for v in val], marker="x", color="#ff7f0e")
        step += len(history)
    loss_axis.set_title("training loss per epoch", fontsize=9)
    loss_axis.set_xlabel("epoch")
    accuracy_axis.set_title("accuracy (%): train o, validation x", fontsize=9)
    accuracy_axis.set_xlabel("epoch")
    sparsity_axis.plot(
        [r["round"] for r in rounds], [100 * r["sparsity"] for r in rounds], marker="o", label="sparsity"
    )
    accuracy = [100 * r["top1"] for r in rounds if r.get("top1") is not None]
    if accuracy:
        sparsity_axis.plot([r["round"] for r in rounds][: len(accuracy)], accuracy, marker="s", label="top-1")
    sparsity_axis.set_title("per round (%)", fontsize=9)
    sparsity_axis.set_xlabel("round")
    sparsity_axis.legend(fontsize=7)
    for axis in (loss_axis, accuracy_axis, sparsity_axis):  # epochs and rounds are whole numbers
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(rounds) > 1:
        loss_axis.legend(fontsize=7)
    return _save(figure, path)


def taylor_rounds(history: Sequence[dict], path) -> Path:
    """MATLAB's three Taylor plots: mini-batch loss, validation accuracy, filters left, per round."""
    figure, axes = plt.subplots(1, 3, figsize=SIZE)
    rounds = [h["round"] for h in history]
    axes[0].plot(rounds, [h["loss"] for h in history], marker=".")
    axes[0].set_title("mini-batch loss", fontsize=9)
    axes[1].plot(rounds, [100 * (h["val_top1"] or 0) for h in history], marker=".")
    axes[1].set_title("validation accuracy (%)", fontsize=9)
    axes[2].plot(rounds, [h["filters"] for h in history], marker=".")
    axes[2].set_title("filters left", fontsize=9)
    for axis in axes:
        axis.set_xlabel("pruning round")
    return _save(figure, path)


def batchnorm_scales(models: Sequence[Model], path, labels: Sequence[str] | None = None, bins: int = 50) -> Path:
    """Histogram of |gamma| (BatchNorm scale factors) of each model, overlaid."""
    from onnx import numpy_helper

    figure, axis = plt.subplots(figsize=SIZE)
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
    axis.legend(fontsize=8)
    return _save(figure, path)


def sensitivity(table: ResultTable, path) -> Path:
    """One accuracy curve per layer, each pruned alone."""
    figure, axis = plt.subplots(figsize=SIZE)
    for name in table.layer_names:
        rows = [r for r in table.rows if r.scope == name]
        axis.plot([100 * r.sparsity for r in rows], [100 * r.accuracy for r in rows], marker=".", label=name)
    if table.baseline_accuracy is not None:
        axis.axhline(100 * table.baseline_accuracy, color="gray", linestyle="--", linewidth=1, label="dense")
    axis.set_xlabel("sparsity of that layer alone (%)")
    axis.set_ylabel("top-1 accuracy (%)")
    axis.set_title(f"Sensitivity per layer: {Path(table.model).name}")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, ncol=2)
    return _save(figure, path)


def bench_figure(results, path) -> Path:
    """Bars of median latency per batch size and of file size, per model."""
    batches = sorted({b for r in results for b in r.latency_ms}, key=int)
    fig, (left, right) = plt.subplots(1, 2, figsize=SIZE)
    width = 0.8 / max(1, len(results))
    for index, result in enumerate(results):
        positions = np.arange(len(batches)) + index * width
        left.bar(positions, [result.latency_ms.get(b, {}).get("median", 0) for b in batches], width, label=result.name)
    left.set_xticks(np.arange(len(batches)) + width * (len(results) - 1) / 2, [f"batch {b}" for b in batches])
    left.set_ylabel("median latency (ms)")
    left.legend(fontsize=7)
    right.bar(range(len(results)), [r.bytes / 1e6 for r in results], color="#1f77b4", label="file")
    right.bar(range(len(results)), [r.zipped_bytes / 1e6 for r in results], color="#ff7f0e", width=0.5, label="zipped")
    right.set_xticks(range(len(results)), [r.name for r in results], rotation=30, ha="right", fontsize=7)
    right.set_ylabel("MB")
    right.legend(fontsize=7)
    fig.suptitle("onnxruntime: latency and size")
    return _save(fig, path)
