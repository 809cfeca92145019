"""Time `onnxprune prune` end to end on a full-size AlexNet-shaped model (61M parameters).

Builds the model from random weights (MATLAB-style: opset 8, mean-image Sub, LRN, grouped
convolutions, Gemm(transB=1)), then measures:

1. each phase in this process: load, convert (onnx2torch), select (score + threshold), write
   back, save (serialise + onnx.checker + onnxruntime + compare with torch);
2. the whole CLI command in a child process: wall time and peak resident memory.

Usage:  .venv/bin/python benchmarks/prune_alexnet.py [--sparsity 0.9] [--scope global]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def child_peak_mb(argv: list[str]) -> float:
    completed = subprocess.run(argv, capture_output=True, text=True)
    if completed.returncode not in (0, None):
        raise SystemExit(completed.stderr)
    kilobytes = [line.split()[1] for line in completed.stderr.splitlines() if line.startswith("PEAK_KB")]
    return int(kilobytes[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--scope", default="global")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        source = folder / "alexnet.onnx"
        # Built in a child: Linux children inherit the parent's peak RSS (ru_maxrss) at fork, so
        # this process stays small until every child has been measured.
        build = (
            f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); import fixtures, onnx; "
            f"onnx.save_model(fixtures.matlab_alexnet(opset=8, full=True), {str(source)!r})"
        )
        subprocess.run([sys.executable, "-c", build], check=True)
        size_mb = source.stat().st_size / 2**20

        # 2. the whole command, in a fresh process (its peak memory is not mixed with ours)
        command = [
            "onnxprune",
            "prune",
            str(source),
            "--sparsity",
            str(args.sparsity),
            "--scope",
            args.scope,
            "-o",
            str(folder / "cli.onnx"),
        ]
        # Each child reports its own VmHWM (peak resident set) from /proc at exit: after execve a
        # process starts a new address space, whereas ru_maxrss of children is the largest child
        # (the model builder above) and is inherited across fork.
        report_peak = (
            "import atexit, sys; atexit.register(lambda: print('PEAK_KB', [l.split()[1] for l in "
            "open('/proc/self/status') if l.startswith('VmHWM')][0], file=sys.stderr)); "
        )
        imports = (
            "import onnxprune.cli, onnxprune.workbench.convert, onnxruntime; "
            "onnxprune.workbench.convert.import_onnx2torch()"
        )
        imports_mb = child_peak_mb([sys.executable, "-c", report_peak + imports])
        cli = f"import sys; from onnxprune.cli import main; sys.argv = {command!r}; main()"
        started = time.perf_counter()
        command_peak_mb = child_peak_mb([sys.executable, "-c", report_peak + cli])
        command_seconds = time.perf_counter() - started

        # 1. the phases, in this process
        import onnxprune
        from onnxprune.graph.storage import write_back
        from onnxprune.workbench.convert import to_torch

        phases = {}
        started = time.perf_counter()
        model = onnxprune.load(source)
        phases["load"] = time.perf_counter() - started
        started = time.perf_counter()
        converted = to_torch(model)
        phases["convert"] = time.perf_counter() - started
        started = time.perf_counter()
        result = onnxprune.prune(model, args.sparsity, scope=args.scope, torch_model=converted, keep_masks=False)
        phases["prune (select + mask + write back)"] = time.perf_counter() - started
        phases["select"] = result.selection_seconds
        weights = {e.layer.weight: e.to_onnx() for e in converted.params.values()}
        started = time.perf_counter()
        write_back(model, weights)
        phases["write back alone"] = time.perf_counter() - started
        del weights
        started = time.perf_counter()
        onnxprune.save(result, folder / "api.onnx")
        phases["save (serialise + verify)"] = time.perf_counter() - started

    figures = {
        "model": "AlexNet-shaped, MATLAB style, opset 8, random weights",
        "parameters": sum(layer.numel for layer in model.layers),
        "file_mb": round(size_mb, 1),
        "sparsity": args.sparsity,
        "scope": args.scope,
        "achieved": round(result.prunable_sparsity, 6),
        "command_seconds": round(command_seconds, 2),
        "command_peak_rss_mb": round(command_peak_mb),
        "command_peak_over_file": round(command_peak_mb / size_mb, 2),
        "imports_alone_mb": round(imports_mb),
        "command_peak_above_imports_over_file": round((command_peak_mb - imports_mb) / size_mb, 2),
        "phases_seconds": {k: round(v, 3) for k, v in phases.items()},
        "machine": f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}".strip(),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
