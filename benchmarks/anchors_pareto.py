"""The Pareto figure of issue 15: onnxprune's rows against torch.nn.utils.prune's and Torch-Pruning's.

The accuracies are the measured rows of docs/benchmarks.md ("onnxprune against the tools users have",
from `benchmarks/versus_anchors.py` and `benchmarks/vgg_followup.py`); this script computes what
each row's model removes (the fraction of prunable parameters: zeros for unstructured rows, removed
for the compacted channel rows, recomputed here from the same selections) and draws one panel per
model, anchors grey, onnxprune in colour, the frontier of each panel in black.

Usage:  .venv/bin/python benchmarks/anchors_pareto.py [--out docs/images/versus_anchors.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import versus_anchors as anchors  # noqa: E402

import onnxprune  # noqa: E402
from onnxprune.report import plots  # noqa: E402

OUT = anchors.ROOT / "docs/images/versus_anchors.png"

# (label, anchor?, what it removes: a weight fraction or a channel selection, top-1 after fine-tuning)
VGG = [
    ("torch.nn.utils.prune global L1, 80%", True, 0.8, 0.8489),
    ("Torch-Pruning MetaPruner L1, 40% of channels", True, "torch-pruning", 0.7601),
    ("onnxprune defaults, 80% (mean of 4 seeds)", False, 0.8, 0.8540),
    ("onnxprune global, distillation, batch 64, 80%", False, 0.8, 0.8525),
    ("onnxprune defaults, l1-filter 40.7% of channels", False, ("l1-filter", "layer", 0.407), 0.7807),
    ("onnxprune l1-filter global 39.9%, distillation", False, ("l1-filter", "global", 0.399), 0.7628),
]
MLP = [
    ("torch.nn.utils.prune global L1, IMP 3 x 3 (SGD or Adam)", True, 0.9, 0.1150),
    ("onnxprune defaults, one-shot + 9 epochs", False, 0.9, 0.9655),
    ("onnxprune defaults, IMP 3 x 3", False, 0.9, 0.9600),
    ("onnxprune --scope global, IMP 3 x 3, Adam", False, 0.9, 0.9135),
]
ALEXNET = [
    ("torch.nn.utils.prune global L1, 3 epochs, SGD 1e-4", True, 0.9, 0.7833),
    ("torch.nn.utils.prune global L1, 3 epochs, Adam 1e-3", True, 0.9, 0.9267),
    ("onnxprune defaults, 3 epochs", False, 0.9, 0.9133),
    ("onnxprune --scope lamp, Adam, no distillation", False, 0.9, 0.9433),
]


def removed_fraction(dense, selection) -> float:
    """The fraction of the dense model's prunable parameters a channel selection removes once compacted."""
    if selection == "torch-pruning":
        with tempfile.TemporaryDirectory() as folder:
            small = onnxprune.load(anchors.torch_pruning_vgg(dense, Path(folder)))
            return 1 - small.layer_total("numel") / dense.layer_total("numel")
    method, scope, sparsity = selection
    small = onnxprune.prune(dense, sparsity, method=method, scope=scope).model
    return 1 - small.layer_total("numel") / dense.layer_total("numel")


def points_of(panel: str, rows, dense=None) -> list[dict]:
    """The rows as points of `plots.pareto_frontier`, what each removes computed."""
    points = []
    for label, is_anchor, removes, top1 in rows:
        fraction = removes if isinstance(removes, float) else removed_fraction(dense, removes)
        channels = not isinstance(removes, float)
        points.append({"label": label, "anchor": is_anchor, "sparsity": fraction, "accuracy": top1,
                       "units": "channels" if channels else "weights"})  # fmt: skip
        anchors.emit(panel=panel, row=label, params_removed=round(fraction, 4), top1=top1)
    return points


def draw(panels: dict[str, list[dict]], path: Path) -> Path:
    """One panel per model; points that share a sparsity are spread sideways so that none hides another."""
    figure, axes = plots._figure(1, len(panels), squeeze=False, figsize=(4.4 * len(panels), 5.6))
    for axis, (title, points) in zip(axes[0], panels.items(), strict=True):
        shared = len({p["sparsity"] for p in points}) == 1
        for index, point in enumerate(points):
            colour = "0.45" if point["anchor"] else f"C{index % 10}"
            marker = "s" if point["units"] == "channels" else ("^" if point["anchor"] else "o")
            x = 100 * point["sparsity"] + ((index - (len(points) - 1) / 2) * 0.4 if shared else 0.0)
            axis.scatter(x, 100 * point["accuracy"], color=colour, marker=marker, s=40, zorder=3,
                         label=("anchor: " if point["anchor"] else "") + point["label"])  # fmt: skip
        axis.set_title(title, fontsize=9)
        if shared:  # one sparsity: one tick, the points beside it
            level = 100 * points[0]["sparsity"]
            axis.set_xticks([level])
            axis.set_xlim(level - 0.4 * len(points), level + 0.4 * len(points))
        axis.set_xlabel("prunable parameters removed (%)" + (" (spread sideways)" if shared else ""))
        axis.grid(alpha=0.3)
        axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), borderaxespad=0.0, fontsize=6.5, ncol=1)
    axes[0][0].set_ylabel("top-1 after fine-tuning (%)")
    figure.suptitle(plots._wrapped("onnxprune against torch.nn.utils.prune and Torch-Pruning at equal budgets "
                                   "(grey: the anchors; squares: channels removed)"))  # fmt: skip
    return plots.save_checked(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    dense = onnxprune.load(anchors.VGG)
    panels = {
        "VGG13 reference, CIFAR-10, 1 epoch": points_of("vgg", VGG, dense),
        "MATLAB MLP (nln_logsig), MNIST, 90%": points_of("mlp", MLP),
        "AlexNet-shaped spectrograms, 90%": points_of("alexnet", ALEXNET),
    }
    anchors.emit(figure=str(draw(panels, args.out)))


if __name__ == "__main__":
    main()
