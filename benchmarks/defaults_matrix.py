"""Do onnxprune's defaults hold on models nobody here chose? Default vs every scope, on real models.

For every model in ../shared/models that has data (flir_defect_r2020 ships none) and the two
references (VGG13 on CIFAR-10, the AlexNet-shaped spectrogram demo), a stratified 2 x N sample of
the test data is split in two: the *choice* half is the `--data` a user gives, the *evaluation*
half measures every result (never seen by any choice). Magnitude pruning, per model:

- no data, no fine-tuning, 50/80/90%: the default (the reference rule: LAMP) against global,
  layer and LAMP;
- data, no fine-tuning, 50/80/90%: the default (`onnxprune prune --data`: the scope measured on
  the choice half) against the three;
- data + 1 epoch of fine-tuning on the choice half, 80%: the default (the scope measured on the
  run's validation split before fine-tuning; the measured training defaults for every run alike)
  against the three;
- `--max-drop 0.01` (the sparsity chosen and its top-1), `sensitivity --target 0.8 --max-drop 0.02`
  then `prune --config` against global at 80%, and `l1-filter` at 30% of the filters.

    .venv/bin/python benchmarks/defaults_matrix.py --samples 1000 --out benchmarks/out/defaults_matrix.json

Prints a markdown table per part (docs/benchmarks.md) and writes every number to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

import onnxprune  # noqa: E402
from onnxprune.cli import app  # noqa: E402
from onnxprune.demo import spectrograms  # noqa: E402
from onnxprune.measure.sweep import Sweeper  # noqa: E402
from onnxprune.options import DataOptions  # noqa: E402
from onnxprune.workbench.data import prepare, split  # noqa: E402
from onnxprune.workbench.evaluate import evaluate  # noqa: E402

CIFAR = ["--mean", "0.4914,0.4822,0.4465", "--std", "0.2470,0.2435,0.2616"]
MODELS = {  # name: (model, data, the options that prepare it as in training)
    "nln_logsig_200_100_50 (MATLAB)": (SHARED / "models/matlab/nln_logsig_200_100_50.onnx", SHARED / "data/mnist", []),
    "cora_mnist_point (MATLAB)": (SHARED / "models/matlab/cora_mnist_point.onnx", SHARED / "data/mnist",
                                  ["--flatten", "column"]),
    "convnet_maxpool_mnist": (SHARED / "models/pytorch/convnet_maxpool_mnist.onnx", SHARED / "data/mnist",
                              ["--pixel-range", "0-1"]),
    "resnet_2b_cifar10": (SHARED / "models/pytorch/resnet_2b_cifar10.onnx", SHARED / "data/cifar10/test.zip", CIFAR),
    "oval21_cifar_base": (SHARED / "models/pytorch/oval21_cifar_base.onnx", SHARED / "data/cifar10/test.zip", CIFAR),
    "VGG13 reference": (ROOT / "models/vgg13_bn_w025_cifar10.onnx", SHARED / "data/cifar10/test.zip", CIFAR),
    "AlexNet-shaped demo": (ROOT / "models/alexnet_spectro.onnx", None, []),
}  # fmt: skip
SCOPES = ("global", "layer", "lamp")
LEVELS = (0.5, 0.8, 0.9)
runner = CliRunner()


def data_options(args: list[str], path: Path, limit: int | None = None) -> DataOptions:
    """The DataOptions a command line's data flags give."""
    flags = dict(zip(args[::2], args[1::2], strict=True))
    numbers = {key: tuple(float(x) for x in flags[key].split(",")) for key in ("--mean", "--std") if key in flags}
    return DataOptions(
        path=str(path), limit=limit, pixel_range=flags.get("--pixel-range"), mean=numbers.get("--mean"),
        std=numbers.get("--std"), flatten=flags.get("--flatten"),
    )  # fmt: skip


def halves(model: onnxprune.Model, data: Path, args: list[str], samples: int, folder: Path):
    """(preprocess, choice half written as .npz, evaluation half): a stratified sample split in two."""
    preprocess, dataset, _ = prepare(model, data_options(args, data, limit=2 * samples), 0.0)
    choice, evaluation = split(dataset, 0.5, seed=1)
    choice_file = folder / "choice.npz"
    np.savez(choice_file, x=choice.images, y=choice.labels)
    return preprocess, choice_file, evaluation


def cli(*args: str) -> dict:
    """Run an onnxprune command with --json; its summary."""
    result = runner.invoke(app, [*args, "--json"])
    if result.exit_code != 0:
        return {"error": (result.stderr or result.output).strip().splitlines()[-1]}
    return json.loads(result.stdout)


def top1(path: Path, evaluation, preprocess) -> float:
    return evaluate(onnxprune.load(path), evaluation, preprocess).top1


def one_model(name: str, path: Path, data: Path | None, args: list[str], samples: int, folder: Path) -> dict:
    model = onnxprune.load(path)
    if data is None:  # the demo's spectrograms
        data = spectrograms.generate() / "test"
    preprocess, choice, evaluation = halves(model, data, args, samples, folder)
    given = ["--data", str(choice), *args]
    row: dict = {"model": name, "dense": evaluate(model, evaluation, preprocess).top1, "samples": len(evaluation)}
    sweeper = Sweeper(model, evaluation, preprocess, engine="torch")
    row["no_ft"] = {f"{level:g}": {scope: sweeper.level("magnitude", scope, level).accuracy for scope in SCOPES}
                    for level in LEVELS}  # fmt: skip
    row["default_no_data"] = {level: cells["lamp"] for level, cells in row["no_ft"].items()}  # the reference rule
    row["default_with_data"], row["measured_note"] = {}, {}
    for level in LEVELS:
        out = folder / f"default_{level:g}.onnx"
        summary = cli("prune", str(path), "--sparsity", str(level), *given, "-o", str(out), "--out-dir",
                      str(folder / f"run_{level:g}"))  # fmt: skip
        row["default_with_data"][f"{level:g}"] = top1(out, evaluation, preprocess) if out.exists() else None
        row["measured_note"][f"{level:g}"] = next((n for n in summary.get("notes", []) if "scope" in n), summary)
    row["ft_0.8"] = {}
    for scope in (*SCOPES, None):
        out = folder / f"ft_{scope}.onnx"
        chosen = ["--scope", scope] if scope else []
        summary = cli("prune", str(path), "--sparsity", "0.8", *given, "--finetune-epochs", "1", *chosen, "-o",
                      str(out), "--out-dir", str(folder / f"ft_{scope}"))  # fmt: skip
        row["ft_0.8"][scope or "default"] = top1(out, evaluation, preprocess) if out.exists() else None
    row["ft_note"] = next((n for n in summary.get("notes", []) if n.startswith("scope")), summary)
    out = folder / "max_drop.onnx"
    summary = cli("prune", str(path), "--max-drop", "0.01", *given, "-o", str(out))
    row["max_drop"] = {"error": summary["error"]} if "error" in summary else {
        "sparsity": summary["chosen"]["sparsity"], "top1": top1(out, evaluation, preprocess)}  # fmt: skip
    ratios = folder / "ratios.yaml"
    summary = cli("sensitivity", str(path), *given, "--target", "0.8", "--max-drop", "0.02", "-o", str(ratios),
                  "--out-dir", str(folder / "sens"))  # fmt: skip
    out = folder / "sensitivity.onnx"
    if ratios.exists():
        cli("prune", str(path), "--config", str(ratios), "--scope", "layer", "-o", str(out))
    row["sensitivity_0.8"] = {"top1": top1(out, evaluation, preprocess) if out.exists() else None,
                              "combined_on_choice": summary.get("combined", {}).get("top1"),
                              "global_0.8": row["no_ft"]["0.8"]["global"]}  # fmt: skip
    out = folder / "l1.onnx"
    summary = cli("prune", str(path), "--method", "l1-filter", "--sparsity", "0.3", "-o", str(out))
    row["l1_filter_0.3"] = summary.get("error") or top1(out, evaluation, preprocess)
    return row


def gap(cells: dict, chosen: float | None) -> float | None:
    """Points the default is below the best single scope (0 when it is the best)."""
    best = max(value for value in cells.values() if value is not None)
    return None if chosen is None else 100 * (best - chosen)


def tables(rows: list[dict]) -> str:
    def pct(value) -> str:
        return "-" if value is None else f"{100 * value:.2f}%"

    lines = ["| model (dense) | sparsity | global | layer | LAMP | default, no data (gap) | default, data (gap) |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        for level in (f"{x:g}" for x in LEVELS):
            cells, with_data = row["no_ft"][level], row["default_with_data"][level]
            no_data = row["default_no_data"][level]
            lines.append(
                f"| {row['model']} ({pct(row['dense'])}) | {level} | {pct(cells['global'])} | {pct(cells['layer'])} | "
                f"{pct(cells['lamp'])} | {pct(no_data)} ({gap(cells, no_data):.2f}) | {pct(with_data)} "
                f"({gap(cells, with_data):.2f}) |"
            )
    lines += ["", "| model | global +1 epoch | layer +1 epoch | LAMP +1 epoch | default +1 epoch (gap) |",
              "|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        cells = row["ft_0.8"]
        scoped = {scope: cells[scope] for scope in SCOPES if cells[scope] is not None}
        gap_text = f"{gap(scoped, cells['default']):.2f}" if scoped and cells["default"] is not None else "-"
        lines.append(f"| {row['model']} | {pct(cells['global'])} | {pct(cells['layer'])} | {pct(cells['lamp'])} | "
                     f"{pct(cells['default'])} ({gap_text}) |")  # fmt: skip
    lines += ["", "| model | --max-drop 0.01: sparsity, top-1 | sensitivity 0.8 -> --config | global 0.8 | "
              "l1-filter 0.3 |", "|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        drop = row["max_drop"]
        chosen = drop["error"] if "error" in drop else f"{100 * drop['sparsity']:.0f}%, {pct(drop['top1'])}"
        sens = row["sensitivity_0.8"]
        l1 = row["l1_filter_0.3"]
        lines.append(f"| {row['model']} | {chosen} | {pct(sens['top1'])} | {pct(sens['global_0.8'])} | "
                     f"{l1 if isinstance(l1, str) else pct(l1)} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000, help="samples in each half (choice, evaluation)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/out/defaults_matrix.json")
    parser.add_argument("--models", default=None, help="comma-separated names (default: all)")
    args = parser.parse_args()
    chosen = [name for name in MODELS if args.models is None or any(part in name for part in args.models.split(","))]
    rows = []
    for name in chosen:
        path, data, flags = MODELS[name]
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            rows.append(one_model(name, path, data, flags, args.samples, Path(folder)))
        rows[-1]["seconds"] = time.perf_counter() - started
        print(f"{name}: {rows[-1]['seconds']:.0f} s", file=sys.stderr, flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2, default=str))
    print(tables(rows))


if __name__ == "__main__":
    main()
