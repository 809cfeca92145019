"""One self-contained HTML page for any folder onnxprune writes: headline numbers, tables, every figure.

`write_report(folder)` reads what it finds (run.json and results.json of a prune run, the results
of a sweep or of a sensitivity scan, bench.json, the demo's summary.json and comparison.json),
draws the figures a run with data leaves undrawn (training curves, sparsity per layer), embeds
every PNG as a data URI and writes `report.html`: no network, no framework; a few lines of script
sort a table when its header is clicked and mark a figure that fails to load.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import os
from pathlib import Path
from typing import Any

from onnxprune.errors import ConfigError
from onnxprune.files import save_atomic

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.headline { display: flex; flex-wrap: wrap; gap: 1em; }
.headline div { background: #f4f6f8; border-radius: 6px; padding: 0.6em 1em; }
.headline b { display: block; font-size: 1.3em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f6f8; cursor: pointer; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #666; font-size: 0.85em; } .missing { color: #b00; }
code { background: #f4f6f8; padding: 0 0.3em; }
"""

SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function (th, column) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0], rows = Array.from(body.rows);
    var ascending = th.dataset.order !== 'ascending'; th.dataset.order = ascending ? 'ascending' : 'descending';
    rows.sort(function (a, b) {
      var x = a.cells[column].dataset.value || a.cells[column].textContent;
      var y = b.cells[column].dataset.value || b.cells[column].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var order = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
document.querySelectorAll('figure img').forEach(function (image) {
  image.addEventListener('error', function () { image.closest('figure').classList.add('missing'); });
});
window.addEventListener('load', function () {
  var images = Array.from(document.querySelectorAll('figure img'));
  var shown = images.filter(function (image) { return image.complete && image.naturalWidth > 0; });
  document.body.dataset.figuresShown = shown.length + '/' + images.length;
});
"""


def write_report(folder: str | os.PathLike, output: str | os.PathLike | None = None) -> Path:
    """Write the HTML report of a run folder (default `FOLDER/report.html`); returns its path.

    Raises:
        ConfigError: the folder does not exist or holds nothing onnxprune wrote.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder; give a run folder (--out-dir of prune, sweep, ...)")
    sections = _sections(folder)
    if not sections:
        raise ConfigError(
            f"{folder} holds no onnxprune results (results.json, bench.json or summary.json); "
            "give the folder a run wrote (--out-dir)"
        )
    output = Path(output) if output is not None else folder / "report.html"
    page = _page(f"onnxprune report: {folder.resolve().name}", sections)
    save_atomic(lambda path: Path(path).write_text(page, encoding="utf-8"), output)
    return output


def _sections(folder: Path) -> list[str]:
    sections = []
    summary = _json(folder / "summary.json")
    if summary is not None:
        sections.append(_demo(summary, folder))
    results = _json(folder / "results.json")
    if results is not None:
        sections.append(_results(results, folder))
    bench = _json(folder / "bench.json")
    if bench is not None:
        sections.append(_bench(bench))
    for child in sorted(p for p in folder.iterdir() if p.is_dir()):
        if (child / "results.json").exists() or (child / "bench.json").exists():
            body = "".join(_sections(child))
            sections.append(f"<section><h2>{html.escape(child.name)}/</h2>{body}</section>")
    if sections:
        sections.append(_figures(folder))
    return sections


def _json(path: Path) -> Any:
    """The parsed JSON document (a dict, or a list for bench.json), None when missing or unreadable."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _page(title: str, sections: list[str]) -> str:
    made = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    from onnxprune import __version__

    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>Written by onnxprune {__version__} on {made}.</p>{''.join(sections)}"
        f"<script>{SCRIPT}</script></body></html>"
    )


def _headline(items: list[tuple[str, str]]) -> str:
    cells = "".join(f"<div>{html.escape(label)}<b>{html.escape(value)}</b></div>" for label, value in items)
    return f"<div class='headline'>{cells}</div>"


def _table(columns: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(value) for value in row) + "</tr>" for row in rows)
    return f"<table class='sortable'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: object) -> str:
    if isinstance(value, tuple):  # (shown text, value to sort by)
        text, key = value
        return f"<td data-value='{html.escape(str(key))}'>{html.escape(text)}</td>"
    return f"<td>{html.escape(_text(value))}</td>"


def _text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _percent(value: float | None) -> tuple[str, float] | str:
    return "-" if value is None else (f"{100 * value:.2f}%", value)


def _results(document: dict, folder: Path) -> str:
    kind = document.get("kind", "results")
    extra = document.get("extra", {})
    parts = [f"<h2>{html.escape(kind)}: {html.escape(str(document.get('model', '')))}</h2>"]
    run = _json(folder / "run.json")
    if kind == "schedule":
        parts.append(_schedule(document, extra, folder, run))
    else:
        rows = document.get("rows", [])
        if kind == "sweep" and extra.get("trade_off", {}).get("near_chance"):
            parts.append(f"<p>{html.escape(extra['trade_off']['near_chance'])}</p>")
        elif kind == "sweep" and extra.get("trade_off"):
            choice = extra["trade_off"]
            curve = f" ({choice['method']}, {choice.get('scope')})" if choice.get("method") else ""
            chosen = f"{100 * choice['sparsity']:.1f}%{curve}"
            parts.append(_headline([("dense top-1", _percent(document.get("baseline_accuracy"))[0]),
                                    ("samples", str(extra.get("samples") or "-")),
                                    ("highest sparsity within the budget", chosen),
                                    ("its top-1", _percent(choice.get("accuracy"))[0])]))  # fmt: skip
        if kind == "sensitivity" and extra.get("ratios"):
            ratios = extra["ratios"]
            parts.append("<h3>Ratios reaching the target</h3>" + _table(
                ["layer", "ratio"], [[name, _percent(value)] for name, value in ratios.items()]))  # fmt: skip
        parts.append(_table(
            ["method", "scope", "sparsity", "top-1", "loss", "non-zeros"],
            [[row.get("method"), row.get("scope"), _percent(row.get("sparsity")), _percent(row.get("accuracy")),
              row.get("loss"), row.get("num_nonzero")] for row in rows],
        ))  # fmt: skip
    if run is not None:
        options = _table(["option", "value"], _flat(run.get("options", {})))
        parts.append(f"<details><summary>Every option of the run</summary>{options}</details>")
    return "<section>" + "".join(parts) + "</section>"


def _schedule(document: dict, extra: dict, folder: Path, run: dict | None) -> str:
    rounds = extra.get("rounds", [])
    final = extra.get("final") or {}
    last = rounds[-1] if rounds else {}
    items = [("dense top-1", _percent(document.get("baseline_accuracy"))[0]),  # "-" when not measured
             ("final top-1", _percent(final.get("top1"))[0]),
             ("validation images", str(extra.get("val_samples") or "-")),  # what every top-1 is measured on
             ("sparsity", f"{100 * last.get('sparsity', 0):.1f}%"),
             ("parameters removed", f"{100 * last.get('params_removed', 0):.1f}%"),
             ("MACs removed", f"{100 * last.get('macs_removed', 0):.1f}%"),
             ("final model", final.get("file", "(unfinished: --resume continues)"))]  # fmt: skip
    parts = [_headline(items)]
    if run is not None and run.get("command"):
        parts.append(f"<p>Command: <code>{html.escape(run['command'])}</code></p>")
    parts.append("<h3>Rounds</h3>" + _table(
        ["round", "target", "sparsity", "top-1", "top-5", "loss", "params removed", "MACs removed", "seconds"],
        [[r["round"], _percent(r.get("target_sparsity")), _percent(r.get("sparsity")), _percent(r.get("top1")),
          _percent(r.get("top5")), r.get("loss"), _percent(r.get("params_removed")), _percent(r.get("macs_removed")),
          r.get("seconds")] for r in rounds],
    ))  # fmt: skip
    if last.get("layer_sparsity"):
        layers = [[name, _percent(value)] for name, value in last["layer_sparsity"].items()]
        parts.append("<h3>Sparsity per layer (last round)</h3>" + _table(["layer", "sparsity"], layers))
    _draw_run_figures(document, folder, final.get("file"))
    return "".join(parts)


def _draw_run_figures(document: dict, folder: Path, final_file: str | None) -> None:
    """The training curves and the final sparsity per layer, drawn once into the run's folder."""
    from onnxprune.graph.model import load
    from onnxprune.report import plots

    if not (folder / "training.png").exists() and document.get("extra", {}).get("rounds"):
        plots.training(document, folder / "training.png")
    if final_file and (folder / final_file).exists() and not (folder / "layers.png").exists():
        plots.layer_sparsity(load(folder / final_file), folder / "layers.png")


def _bench(rows: list[dict]) -> str:
    batches = list(rows[0].get("latency_ms", {})) if rows else []
    columns = ["model", *[f"batch {b} ms" for b in batches], *[f"batch {b} speedup" for b in batches],
               "size", "non-zeros", "MACs", "top-1"]  # fmt: skip
    table = [[r["name"], *[r["latency_ms"].get(b, {}).get("median") for b in batches],
              *[r.get("speedup", {}).get(b) for b in batches], (f"{r['bytes'] / 1e6:.2f} MB", r["bytes"]),
              r.get("nonzero"), r.get("macs"), _percent(r.get("top1"))] for r in rows]  # fmt: skip
    return "<section><h2>Latency and size in onnxruntime</h2>" + _table(columns, table) + "</section>"


def _demo(summary: dict, folder: Path) -> str:
    items = []
    for key, value in summary.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        shown = f"{100 * value:.2f}%" if ("top1" in key or "sparsity" in key) else f"{value:.1f} s"
        items.append((key.replace("_", " ").replace("top1", "top-1"), shown))
    paths = "".join(f"<li>{html.escape(key)}: <code>{html.escape(str(summary[key]))}</code></li>"
                    for key in ("model", "data", "pruned_model") if summary.get(key))  # fmt: skip
    parts = ["<section><h2>The demo</h2>", _headline(items), f"<ul>{paths}</ul>"]
    comparison = summary.get("comparison")
    if isinstance(comparison, dict) and comparison:
        columns = sorted({key for row in comparison.values() for key in row})
        rows = [[name, *[row.get(c) for c in columns]] for name, row in comparison.items()]
        parts.append("<h3>Dense vs pruned in onnxruntime</h3>" + _table(["model", *columns], rows))
    return "".join(parts) + "</section>"


def _figures(folder: Path) -> str:
    images = sorted(folder.glob("*.png"))  # a subfolder's figures are in its own section
    figures = []
    for image in images:
        data = base64.b64encode(image.read_bytes()).decode()
        name = html.escape(str(image.relative_to(folder)))
        figures.append(f"<figure><img src='data:image/png;base64,{data}' alt='{name}'><figcaption>{name}</figcaption>"
                       "</figure>")  # fmt: skip
    return "<section><h2>Figures</h2>" + "".join(figures) + "</section>" if figures else ""


def _flat(options: dict, prefix: str = "") -> list[list]:
    rows = []
    for key, value in options.items():
        if isinstance(value, dict):
            rows.extend(_flat(value, f"{prefix}{key}."))
        else:
            rows.append([f"{prefix}{key}", json.dumps(value) if isinstance(value, (list, bool)) or value is None
                         else value])  # fmt: skip
    return rows
