"""The support table: every zoo architecture x exporter through load, prune and compaction.

Two sources (`--source`): the torchvision architectures of `tests/zoo.py`, exported with torch's
default dynamo exporter and with the TorchScript exporter; or timm's whole registry, enumerated by
code (every family's smallest variant, `tests/zoo.py: timm_architecture`), exported by dynamo and
by TorchScript at opsets 13 and 17. Weights are seeded random, with non-trivial BatchNorm
statistics and norm scales. Every file goes through:

- **load**: `onnxprune inspect` (load + describe) and conversion to torch, whose output equals
  onnxruntime's on the dense file;
- **prune**: `prune --sparsity 0.5 --scope global` written and verified; the sparsity is counted
  in the written file;
- **compact**: a copy with 30% of the filters of every Conv zeroed (weights only, as another tool
  leaves them) compacts to the same outputs (relative difference <= 1e-5) with fewer parameters;
- **l1-filter**: `--method l1-filter --sparsity 0.3` writes a smaller model, verified.

Each model runs in its own process (a timeout or a crash is one row, not the end of the table).
Results go to a JSON file and a Markdown table for docs/formats.md.

A timm family none of whose variants builds, or whose smallest runs at no input side tried, is a
row too, with the reason; so is an export that fails, with the exporter's error.

Usage:  .venv/bin/python benchmarks/zoo_support.py [--source torchvision|timm] [--only NAME,...]
            [--exporters ...] [--out zoo_support.json] [--timeout 1200] [--jobs 1] [--retry-failed]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import zoo  # noqa: E402
from zoo import STAGE_FUNCTIONS, STAGES  # noqa: E402


def first_line(exc: Exception) -> str:
    """An exception's first line, without terminal colours, at most 300 characters."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return text.splitlines()[0][:300] if text else ""


def one(entry: zoo.Architecture, exporter: str, folder: Path, stages=STAGES, report=None) -> dict:
    """Export one model and run every stage on it; a failing stage is recorded, the next still runs.

    `report(row)` is called after the export and after every stage (the row so far).
    """
    report = report or (lambda row: None)
    row = {"model": entry.name, "exporter": exporter, "family": entry.family, "source": entry.source}
    if entry.source == "timm":
        row["side"] = entry.size
    started = time.perf_counter()
    try:
        path = zoo.export(entry, exporter, folder)
    except Exception as exc:  # an architecture the exporter cannot export is a row, not a crash
        row["export"] = {"ok": False, "error": f"{type(exc).__name__}: {first_line(exc)}"}
        report(row)
        return row
    row["export"] = {"ok": True, "seconds": round(time.perf_counter() - started, 1)}
    if path in zoo.EXPORT_NOTES:
        row["export"]["note"] = zoo.EXPORT_NOTES[path]
    report(row)
    for stage in stages:
        started = time.perf_counter()
        work = folder / stage
        work.mkdir(exist_ok=True)
        try:
            row[stage] = {"ok": True, **STAGE_FUNCTIONS[stage](path, work)}
        except Exception as exc:
            row[stage] = {"ok": False, "error": f"{type(exc).__name__}: {first_line(exc)}"}
            row[stage]["where"] = traceback.format_exc().strip().splitlines()[-3][:200]
        row[stage]["seconds"] = round(time.perf_counter() - started, 1)
        report(row)
    return row


def markdown(rows: list[dict]) -> str:
    """The support table of docs/formats.md: a line per architecture and exporter, then every "no" with its reason."""
    timm = any(row.get("source") == "timm" for row in rows)
    head = "| family | architecture (side) | exporter |" if timm else "| architecture | exporter |"
    lines = [
        head + " load | prune 0.5 global | compact 30% zeroed | l1-filter 0.3 |",
        "|---" * (head.count("|") + 3) + "|",
    ]
    reasons, notes = [], []
    for row in sorted(rows, key=lambda row: (row["family"], row["model"], row["exporter"])):
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
                cells.append(f"yes: params x{result['params_ratio']:.2f}" + _kept_note(result))
            elif stage == "prune":
                cells.append(f"yes: {result['sparsity']:.1%} zero")
            else:
                cells.append("yes")
        if not row["export"]["ok"]:
            reasons.append(f"- {row['model']}, {row['exporter']}, export: {row['export']['error'][:300]}")
        elif row["export"].get("note"):
            notes.append(f"- {row['model']}, {row['exporter']}: {row['export']['note']}")
        name = f"{row['model']} ({row['side']})" if row.get("side") else row["model"]
        prefix = f"| {row['family']} | {name} | {row['exporter']} |" if timm else f"| {name} | {row['exporter']} |"
        lines.append(prefix + " " + " | ".join(cells) + " |")
    lines += ["", summary(rows)]
    if reasons:
        lines += ["", "Every no, with the reason:", "", *reasons]
    if notes:
        lines += ["", "Exports that differ from the defaults:", "", *notes]
    return "\n".join(lines)


def _kept_note(result: dict) -> str:
    kept = result.get("kept_units", 0)
    return f" ({kept} channels kept whole)" if kept else ""


def summary(rows: list[dict]) -> str:
    """Each stage's passes over the files exported, and the exports over the files attempted."""
    exported = [row for row in rows if row["export"]["ok"]]
    parts = [f"exported: {len(exported)}/{len(rows)}"]
    for stage in STAGES:
        count = sum(bool(row.get(stage, {}).get("ok")) for row in exported)
        parts.append(f"{stage}: {count}/{len(exported)} ({count / max(1, len(exported)):.1%})")
    return ", ".join(parts)


def entries(source: str, only: list[str], cache: Path) -> tuple[list[zoo.Architecture], list[dict]]:
    """The architectures to run, and a row for every timm family that yields none (with why).

    timm's choices (a family's smallest variant and its side) are kept in `cache`: finding them
    builds every registered model, minutes that a resumed run need not spend again.
    """
    if source == "torchvision":
        return [zoo.BY_NAME[name] for name in only] if only else list(zoo.ZOO), []
    known = json.loads(cache.read_text()) if cache.exists() else {}
    chosen, rows = [], []
    for family in only or zoo.timm_families():
        if family not in known:
            found = zoo.timm_architecture(family)
            known[family] = found if isinstance(found, str) else {"name": found.name, "side": found.size}
            cache.write_text(json.dumps(known, indent=1))
        entry = known[family] if isinstance(known[family], str) else zoo.timm_entry(
            known[family]["name"], known[family]["side"], family
        )  # fmt: skip
        if isinstance(entry, str):
            rows.append({"model": family, "exporter": "-", "family": family, "source": "timm",
                         "export": {"ok": False, "error": entry}})  # fmt: skip
            print(f"{family:22s} no model: {entry[:200]}", flush=True)
        else:
            chosen.append(entry)
            print(f"{family:22s} {entry.name} at {entry.size} px", flush=True)
    return chosen, rows


def run_one(entry: zoo.Architecture, exporter: str, args) -> dict:
    """One model and exporter in its own process: a timeout or a crash is one row."""
    command = [sys.executable, __file__, "--one", entry.name, exporter, "--stages", args.stages]
    if entry.source == "timm":
        command += ["--timm-side", str(entry.size), "--family", entry.family]
    base = {"model": entry.name, "exporter": exporter, "family": entry.family, "source": entry.source}
    try:
        finished = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
        output, ending = (
            finished.stdout,
            f"process ended with {finished.returncode}: " + ((finished.stderr.strip().splitlines() or [""])[-1][:200]),
        )
    except subprocess.TimeoutExpired as exc:  # the stages reported so far stay; the rest timed out
        output = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        ending = f"timed out after {args.timeout} s"
    lines = [x for x in output.splitlines() if x.startswith("ROW ")]
    if not lines:
        return {**base, "export": {"ok": False, "error": ending}}
    row = json.loads(lines[-1][4:])
    for stage in args.stages.split(","):
        if row["export"]["ok"] and stage not in row:
            row[stage] = {"ok": False, "error": ending}
            break
    return row


def timed(function, *args):
    """(function(*args), seconds it took)."""
    started = time.perf_counter()
    return function(*args), time.perf_counter() - started


def report(entry: zoo.Architecture, exporter: str, row: dict, seconds: float) -> None:
    """One line per file, and the reason of every stage that failed."""
    result = " ".join(f"{stage}={'ok' if row.get(stage, {}).get('ok') else 'NO'}" for stage in STAGES)
    print(f"{entry.name:28s} {exporter:13s} {result}  ({seconds:.0f} s)", flush=True)
    for stage in STAGES:
        if stage in row and not row[stage]["ok"]:
            print(f"    {stage}: {row[stage]['error'][:240]}", flush=True)
    if "load" not in row:
        print(f"    export: {row['export'].get('error')}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("torchvision", "timm"), default="torchvision")
    parser.add_argument("--only", default="", help="comma-separated architectures or timm families (default: all)")
    parser.add_argument("--exporters", default="", help="default: dynamo,torchscript; timm: dynamo,torchscript13,17")
    parser.add_argument("--out", type=Path, default=Path("zoo_support.json"))
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per model and exporter")
    parser.add_argument("--jobs", type=int, default=1, help="files run at once, each in its own process")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages to run")
    parser.add_argument("--table", action="store_true", help="print the Markdown table of --out and stop")
    parser.add_argument("--retry-failed", action="store_true", help="run again the rows of --out that failed")
    parser.add_argument("--one", nargs=2, metavar=("NAME", "EXPORTER"), help=argparse.SUPPRESS)
    parser.add_argument("--timm-side", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--family", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        name, exporter = args.one
        entry = zoo.timm_entry(name, args.timm_side, args.family) if args.timm_side else zoo.BY_NAME[name]
        with tempfile.TemporaryDirectory() as folder:
            one(
                entry,
                exporter,
                Path(folder),
                args.stages.split(","),
                lambda row: print("ROW " + json.dumps(row), flush=True),
            )
        return
    if args.table:
        print(markdown(json.loads(args.out.read_text())))
        return
    exporters = [e for e in args.exporters.split(",") if e] or list(
        zoo.TIMM_EXPORTERS if args.source == "timm" else zoo.EXPORTERS
    )
    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    if args.retry_failed:
        rows = [row for row in rows if row["export"]["ok"] and all(row.get(s, {}).get("ok") for s in STAGES)]
    # a family is done as a whole only where it yielded no model (its one row has exporter "-")
    done = {(row["model"], row["exporter"]) for row in rows} | {
        (row["family"], "-") for row in rows if row["exporter"] == "-"
    }
    only = [n for n in args.only.split(",") if n]
    if args.source == "timm":
        only = [f for f in (only or zoo.timm_families()) if (f, "-") not in done]
    chosen, missing = entries(args.source, only, args.out.with_suffix(".entries.json"))
    rows += [row for row in missing if (row["family"], "-") not in done]
    todo = [(entry, exporter) for entry in chosen for exporter in exporters if (entry.name, exporter) not in done]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each job is a process of its own
        futures = {pool.submit(timed, run_one, entry, exporter, args): (entry, exporter) for entry, exporter in todo}
        for future in as_completed(futures):
            entry, exporter = futures[future]
            row, seconds = future.result()
            rows.append(row)
            args.out.write_text(json.dumps(rows, indent=1))
            report(entry, exporter, row, seconds)
    args.out.write_text(json.dumps(rows, indent=1))
    print(markdown(rows))


if __name__ == "__main__":
    main()
