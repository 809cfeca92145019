"""The support table: every zoo architecture x exporter through load, prune and compaction.

For each torchvision architecture of `tests/zoo.py` (seeded random weights, non-trivial BatchNorm
statistics), exported with torch's default dynamo exporter and with the TorchScript exporter:

- **load**: `onnxprune inspect` (load + describe) and conversion to torch, whose output equals
  onnxruntime's on the dense file;
- **prune**: `prune --sparsity 0.5 --scope global` written and verified; the sparsity is counted
  in the written file;
- **compact**: a copy with 30% of the filters of every Conv zeroed (weights only, as another tool
  leaves them) compacts to the same outputs (relative difference <= 1e-5) with fewer parameters;
- **l1-filter**: `--method l1-filter --sparsity 0.3` writes a smaller model, verified.

Each model runs in its own process (a timeout or a crash is one row, not the end of the table).
Results go to a JSON file and a Markdown table for docs/formats.md.

Usage:  .venv/bin/python benchmarks/zoo_support.py [--only resnet18,...] [--exporters dynamo,torchscript]
            [--out zoo_support.json] [--timeout 900]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import zoo  # noqa: E402
from zoo import STAGE_FUNCTIONS, STAGES  # noqa: E402


def one(name: str, exporter: str, folder: Path, stages=STAGES) -> dict:
    """Export one model and run every stage on it; a failing stage is recorded, the next still runs."""
    row = {"model": name, "exporter": exporter, "family": zoo.BY_NAME[name].family}
    started = time.perf_counter()
    try:
        path = zoo.export(name, exporter, folder)
    except Exception as exc:  # an architecture the exporter cannot export is a row, not a crash
        row["export"] = {"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
        return row
    row["export"] = {"ok": True, "seconds": round(time.perf_counter() - started, 1)}
    for stage in stages:
        started = time.perf_counter()
        work = folder / stage
        work.mkdir(exist_ok=True)
        try:
            row[stage] = {"ok": True, **STAGE_FUNCTIONS[stage](path, work)}
        except Exception as exc:
            message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            row[stage] = {"ok": False, "error": f"{type(exc).__name__}: {message}"}
            row[stage]["where"] = traceback.format_exc().strip().splitlines()[-3][:200]
        row[stage]["seconds"] = round(time.perf_counter() - started, 1)
    return row


def markdown(rows: list[dict]) -> str:
    """The support table of docs/formats.md: a line per architecture and exporter, then every "no" with its reason."""
    lines = [
        "| architecture | exporter | load | prune 0.5 global | compact 30% zeroed | l1-filter 0.3 |",
        "|---|---|---|---|---|---|",
    ]
    reasons = []
    for row in rows:
        cells = []
        for stage in STAGES:
            result = row.get(stage)
            if result is None:
                cells.append("no (export)" if not row["export"]["ok"] else "not run")
            elif not result["ok"]:
                cells.append("**no**")
                reasons.append(f"- {row['model']}, {row['exporter']}, {stage}: {result['error'][:300]}")
            elif stage == "compact":
                cells.append(f"yes: params x{result['params_ratio']:.2f}, diff {result['relative_difference']:.0e}")
            elif stage == "l1-filter":
                cells.append(f"yes: params x{result['params_ratio']:.2f}")
            elif stage == "prune":
                cells.append(f"yes: {result['sparsity']:.1%} zero")
            else:
                cells.append("yes")
        if not row["export"]["ok"]:
            reasons.append(f"- {row['model']}, {row['exporter']}, export: {row['export']['error'][:300]}")
        lines.append(f"| {row['model']} | {row['exporter']} | " + " | ".join(cells) + " |")
    counts = {stage: sum(bool(row.get(stage, {}).get("ok")) for row in rows) for stage in STAGES}
    lines += ["", ", ".join(f"{stage}: {count}/{len(rows)}" for stage, count in counts.items())]
    if reasons:
        lines += ["", "Every no, with the reason:", "", *reasons]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated architectures (default: the whole zoo)")
    parser.add_argument("--exporters", default=",".join(zoo.EXPORTERS))
    parser.add_argument("--out", type=Path, default=Path("zoo_support.json"))
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per model and exporter")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages to run")
    parser.add_argument("--table", action="store_true", help="print the Markdown table of --out and stop")
    parser.add_argument("--one", nargs=2, metavar=("NAME", "EXPORTER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as folder:
            print("ROW " + json.dumps(one(*args.one, Path(folder), args.stages.split(","))), flush=True)
        return
    if args.table:
        print(markdown(json.loads(args.out.read_text())))
        return
    names = [n for n in args.only.split(",") if n] or [a.name for a in zoo.ZOO]
    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    done = {(row["model"], row["exporter"]) for row in rows}
    for name in names:
        for exporter in args.exporters.split(","):
            if (name, exporter) in done:
                continue
            started = time.perf_counter()
            try:
                finished = subprocess.run(
                    [sys.executable, __file__, "--one", name, exporter, "--stages", args.stages],
                    capture_output=True, text=True,
                    timeout=args.timeout,
                )  # fmt: skip
                line = next((x for x in finished.stdout.splitlines() if x.startswith("ROW ")), None)
                row = json.loads(line[4:]) if line else {
                    "model": name, "exporter": exporter, "family": zoo.BY_NAME[name].family,
                    "export": {"ok": False, "error": f"process ended with {finished.returncode}: "
                               + (finished.stderr.strip().splitlines() or [""])[-1][:200]},
                }  # fmt: skip
            except subprocess.TimeoutExpired:
                row = {"model": name, "exporter": exporter, "family": zoo.BY_NAME[name].family,
                       "export": {"ok": False, "error": f"timed out after {args.timeout} s"}}  # fmt: skip
            rows.append(row)
            args.out.write_text(json.dumps(rows, indent=1))
            summary = " ".join(f"{stage}={'ok' if row.get(stage, {}).get('ok') else 'NO'}" for stage in STAGES)
            print(f"{name:22s} {exporter:11s} {summary}  ({time.perf_counter() - started:.0f} s)", flush=True)
            for stage in STAGES:
                if stage in row and not row[stage]["ok"]:
                    print(f"    {stage}: {row[stage]['error'][:240]}", flush=True)
            if "load" not in row:
                print(f"    export: {row['export'].get('error')}", flush=True)
    print(markdown(rows))


if __name__ == "__main__":
    main()
