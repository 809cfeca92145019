"""One schema for every run's results, written as results.json, results.csv and results.mat.

A `ResultTable` is a list of rows (one per sparsity level, round or run) with the same fields
everywhere: `sparsity`, `accuracy`, `loss`, `num_nonzero`, `method`, `scope`, the per-layer
sparsity (`layer_names` x `layer_sparsity`), `baseline_accuracy` and `units` (what `sparsity`
counts: "weights" or "channels"). In the .mat file numbers are column vectors of doubles and
names are cell arrays of strings, so MATLAB's `load` gives types `plot` and `table` take.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from onnxprune.errors import DataError
from onnxprune.files import save_atomic

SCHEMA = "onnxprune.results/1"


@dataclass
class ResultRow:
    """One measured point."""

    sparsity: float
    accuracy: float | None
    loss: float | None
    num_nonzero: int
    method: str
    scope: str
    layer_sparsity: list[float] = field(default_factory=list)


@dataclass
class ResultTable:
    """A run's results: rows plus what they refer to."""

    kind: str  # "sweep", "schedule", "sensitivity", "comparison"
    model: str
    layer_names: list[str]
    baseline_accuracy: float | None
    units: str = "weights"
    rows: list[ResultRow] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def column(self, name: str) -> np.ndarray:
        """A numeric column as float64 (None becomes NaN)."""
        return np.array([np.nan if getattr(r, name) is None else getattr(r, name) for r in self.rows], float)

    def methods(self) -> list[str]:
        """Distinct (method, scope) labels in order of appearance."""
        return list(dict.fromkeys(f"{r.method} ({r.scope})" for r in self.rows))


def write(table: ResultTable, folder: str | os.PathLike, stem: str = "results") -> dict[str, Path]:
    """Write results.json, results.csv and results.mat into `folder` (atomically). Returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {suffix: folder / f"{stem}.{suffix}" for suffix in ("json", "csv", "mat")}
    document = {"schema": SCHEMA, **asdict(table)}
    save_atomic(lambda path: Path(path).write_text(json.dumps(document, indent=2)), paths["json"])
    save_atomic(lambda path: _write_csv(table, path), paths["csv"])
    save_atomic(lambda path: _write_mat(table, path), paths["mat"])
    return paths


def _write_csv(table: ResultTable, path: str | os.PathLike) -> None:
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["method", "scope", "sparsity", "accuracy", "loss", "num_nonzero", "units"] + table.layer_names)
        for row in table.rows:
            fields = [row.method, row.scope, row.sparsity, row.accuracy, row.loss, row.num_nonzero, table.units]
            writer.writerow(fields + list(row.layer_sparsity))


def _write_mat(table: ResultTable, path: str | os.PathLike) -> None:
    import scipy.io

    def cell(names: list[str]) -> np.ndarray:
        array = np.empty((len(names), 1), dtype=object)
        for index, name in enumerate(names):
            array[index, 0] = name
        return array

    layers = np.array([row.layer_sparsity for row in table.rows], dtype=float).reshape(len(table.rows), -1)
    content = {
        "sparsity": table.column("sparsity").reshape(-1, 1),
        "accuracy": table.column("accuracy").reshape(-1, 1),
        "loss": table.column("loss").reshape(-1, 1),
        "num_nonzero": table.column("num_nonzero").reshape(-1, 1),
        "method": cell([row.method for row in table.rows]),
        "scope": cell([row.scope for row in table.rows]),
        "layer_names": cell(table.layer_names),
        "layer_sparsity": layers,
        "baseline_accuracy": np.array([[np.nan if table.baseline_accuracy is None else table.baseline_accuracy]]),
        "units": table.units,
        "kind": table.kind,
        "model": table.model,
        "schema": SCHEMA,
    }
    with open(path, "wb") as stream:
        scipy.io.savemat(stream, content, oned_as="column")


def read(path: str | os.PathLike) -> ResultTable:
    """Read a results.json (or the folder holding one) written by this schema version.

    Raises:
        DataError: a missing file, or a file from another schema (an older onnxprune, or
            another tool) with what it is.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise DataError(f"{path}: no results file; run `onnxprune sweep` (or prune with --data) first")
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise DataError(f"{path}: not a JSON results file") from None
    schema = document.get("schema") if isinstance(document, dict) else None
    if schema != SCHEMA:
        raise DataError(
            f"{path}: results of schema {schema or 'unknown'} (an older or different run); "
            f"this onnxprune reads {SCHEMA}: rerun the sweep or prune to regenerate it"
        )
    rows = [ResultRow(**row) for row in document.pop("rows")]
    document.pop("schema")
    return ResultTable(**document, rows=rows)
