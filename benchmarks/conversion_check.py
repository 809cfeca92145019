"""What the conversion check at load costs (issue 30): conversion alone vs the check, side by side.

For every model in ../shared/models and the fast subset of the torchvision zoo (tests/zoo.py,
exported by both of torch's exporters), one process: `to_torch` is timed with the check taken
out (`check_conversion` stubbed), then the check itself (`check_conversion` on the converted
module), three times each, medians; the ratio is what every command that converts pays once per
model. The check's verdict is printed too (`inspect --check`'s summary line).

Usage:  .venv/bin/python benchmarks/conversion_check.py [--zoo resnet18,mobilenet_v3_small,...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import zoo  # noqa: E402

import onnxprune  # noqa: E402
from onnxprune.workbench import convert, fidelity  # noqa: E402

SHARED = REPO.parent / "shared" / "models"


def median_seconds(work, repeats: int = 3) -> float:
    """The median wall time of `work()` over `repeats` calls."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(path: Path) -> dict:
    """Conversion time without the check, the check's time, and its verdict, for one file."""
    real_check = fidelity.check_conversion
    fidelity.check_conversion = lambda model, module, localise=True: fidelity.ConversionCheck(True, 0.0)
    try:
        conversion = median_seconds(lambda: convert.to_torch(onnxprune.load(path)))
    finally:
        fidelity.check_conversion = real_check
    model = onnxprune.load(path)
    module = convert.to_torch(model).module
    check = median_seconds(lambda: fidelity.check_conversion(model, module))
    return {"conversion_s": conversion, "check_s": check, "summary": fidelity.check_conversion(model, module).summary()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", default=",".join(zoo.FAST), help="torchvision zoo architectures (tests/zoo.py)")
    args = parser.parse_args()
    files = sorted(SHARED.glob("*/*.onnx"))
    with tempfile.TemporaryDirectory() as folder:
        for name in filter(None, args.zoo.split(",")):
            for exporter in zoo.EXPORTERS:
                files.append(zoo.export(name, exporter, Path(folder)))
        print("| model | conversion (s) | check (s) | check / conversion | verdict |")
        print("|---|---|---|---|---|")
        for path in files:
            row = measure(path)
            label = path.relative_to(SHARED) if path.is_relative_to(SHARED) else path.name
            ratio = row["check_s"] / row["conversion_s"]
            verdict = row["summary"].split(":")[0]
            cells = [str(label), f"{row['conversion_s']:.3f}", f"{row['check_s']:.3f}", f"{ratio:.2f}", verdict]
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
