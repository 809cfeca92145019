"""How fast `onnxprune --help` starts: this tree against another checkout, side by side.

`python -X importtime -m onnxprune --help` run alternately in both trees (the machine's noise
falls on both alike); reports the median wall time, the median cumulative import time of the
`onnxprune` modules (from -X importtime) and whether torch was imported (it must not be).

    .venv/bin/python benchmarks/startup.py --other /tmp/old-checkout --runs 15
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def one_run(tree: Path) -> tuple[float, float, bool]:
    """(wall seconds, cumulative import seconds of onnxprune's own top-level import, torch imported)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "onnxprune", "--help"],
        cwd=tree, capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin", "COLUMNS": "100"},
    )  # fmt: skip
    wall = time.perf_counter() - started
    cumulative = 0
    torch_seen = False
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumul, name = line.removeprefix("import time:").split("|")
        cumul = cumul.strip()
        if not cumul.isdigit():
            continue  # the header
        if name.strip().split(".")[0] == "torch":
            torch_seen = True
        if not name[1:].startswith(" ") and name.strip().split(".")[0] == "onnxprune":
            cumulative += int(cumul)  # a top-level entry: its cumulative time holds what it imported
    return wall, cumulative / 1e6, torch_seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", type=Path, required=True, help="another checkout of onnxprune to compare with")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    trees = {"this tree": HERE, "other": args.other.resolve()}
    for tree in trees.values():
        one_run(tree)  # warm the file cache and the .pyc files
    results = {name: [] for name in trees}
    for _ in range(args.runs):
        for name, tree in trees.items():
            results[name].append(one_run(tree))
    print("| tree | median wall (s) | median onnxprune import, cumulative (s) | torch imported |")
    print("|---|---|---|---|")
    for name, runs in results.items():
        wall = statistics.median(run[0] for run in runs)
        imports = statistics.median(run[1] for run in runs)
        print(f"| {name} ({trees[name]}) | {wall:.3f} | {imports:.3f} | {any(run[2] for run in runs)} |")
    ratio = statistics.median(r[0] for r in results["this tree"]) / statistics.median(r[0] for r in results["other"])
    print(f"\nwall time, this tree / other: {ratio:.2f}")


if __name__ == "__main__":
    main()
