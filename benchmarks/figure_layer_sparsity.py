"""Figure for the README: sparsity per layer of a real MATLAB export, layer vs global scope.

Usage:  .venv/bin/python benchmarks/figure_layer_sparsity.py [MODEL] [--sparsity 0.9]
Writes docs/images/layer_sparsity.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import onnxprune  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=str(ROOT.parent / "shared/models/pytorch/resnet_2b_cifar10.onnx"))
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--out", type=Path, default=ROOT / "docs/images/layer_sparsity.png")
    args = parser.parse_args()

    model = onnxprune.load(args.model)
    results = {
        scope: onnxprune.prune(model, args.sparsity, scope=scope, keep_masks=False) for scope in ("layer", "global")
    }
    names = [layer.name for layer in model.layers]
    positions = np.arange(len(names))
    figure, axis = plt.subplots(figsize=(9, 4.2), dpi=110)
    for offset, (scope, result) in zip((-0.2, 0.2), results.items(), strict=True):
        values = [100 * layer.sparsity for layer in result.layers]
        axis.bar(
            positions + offset,
            values,
            width=0.4,
            label=f"{scope} scope ({100 * result.prunable_sparsity:.1f}% overall)",
        )
    axis.axhline(100 * args.sparsity, color="black", linewidth=0.8, linestyle="--", label="requested")
    axis.set_xticks(
        positions, [f"{n}\n{layer.numel:,} w" for n, layer in zip(names, model.layers, strict=True)], fontsize=7
    )
    axis.set_ylabel("weights removed (%)")
    axis.set_ylim(0, 125)
    axis.set_title(f"Magnitude pruning to {args.sparsity:.0%}: {Path(args.model).name} ({model.producer})")
    axis.legend(loc="upper left", fontsize=8, ncol=3)
    figure.tight_layout()
    figure.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
