"""One self-contained HTML page for any folder onnxprune writes: headline numbers, tables, every figure.

`write_report(folder)` reads what it finds (run.json and results.json of a prune run, the results
of a sweep or of a sensitivity scan, bench.json, the demo's summary.json and comparison.json),
draws the figures a run with data leaves undrawn (training curves, sparsity per layer), embeds
every PNG as a data URI and writes `report.html`: no network, no framework; a few lines of script
sort a table when its header is clicked and mark a figure that fails to load.

Each section tells its run in the order it happened and puts its figures before its long tables
(a table of more than `LONG_TABLE` rows folds): a `prune --max-drop` run shows the sweep that chose
its sparsity (`CHOICE_FOLDER`) before its rounds, and every round that kept the pruned model over
its fine-tuned one; the headline cards are those of the run's kind (weights zeroed, or channels,
parameters and MACs removed).
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

# the sweep `prune --max-drop` chose its sparsity on, saved inside the run's folder and shown before its rounds
CHOICE_FOLDER = "max_drop_sweep"
# rows beyond which a table folds under its heading (the figure above it shows the same at a glance)
LONG_TABLE = 15

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.headline { display: flex; flex-wrap: wrap; gap: 1em; }
.headline div { background: #f4f6f8; border-radius: 6px; padding: 0.6em 1em; }
.headline b { display: block; font-size: 1.3em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f6f8; cursor: pointer; } td:first-child, th:first-child { text-align: left; }
tr.chosen td { background: #fff4cc; font-weight: bold; }
details > summary { cursor: pointer; margin: 0.6em 0; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #666; font-size: 0.85em; } .missing { color: #b00; }
code { background: #f4f6f8; padding: 0 0.3em; }
"""

SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function (th) {
  th.addEventListener('click', function () {
    var column = th.cellIndex, body = th.closest('table').tBodies[0], rows = Array.from(body.rows);
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
    """The folder's sections, then its subfolders'; its figures go before its first table."""
    sections = []
    summary = _json(folder / "summary.json")
    if summary is not None:
        sections.append(_demo(summary, folder))
    results = _json(folder / "results.json")
    bench = _json(folder / "bench.json")
    if results is not None and results.get("kind") == "schedule":
        _draw_run_figures(results, folder, (results.get("extra", {}).get("final") or {}).get("file"))
    figures = _figures(folder)
    if results is not None:
        sections.append(_results(results, folder, figures))
        figures = ""
    if bench is not None:
        sections.append(_bench(bench, figures))
        figures = ""
    if sections and figures:  # the demo's: its overview, before the sections of its runs
        sections.append("<section><h2>Figures</h2>" + figures + "</section>")
        figures = ""
    for child in sorted(p for p in folder.iterdir() if p.is_dir()):
        if child.name == CHOICE_FOLDER and results is not None:  # part of the run's own section
            continue
        if (child / "results.json").exists() or (child / "bench.json").exists():
            body = "".join(_sections(child))
            sections.append(f"<section><h2>{html.escape(child.name)}/</h2>{body}</section>")
    if sections and figures:  # a folder of runs' folders: its own figures after them
        sections.append("<section><h2>Figures</h2>" + figures + "</section>")
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


def _table(columns: list[str], rows: list[list], chosen: int | None = None) -> str:
    """A sortable table; the row at index `chosen` (the level a trade-off chose) is highlighted."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        ("<tr class='chosen'>" if index == chosen else "<tr>") + "".join(_cell(value) for value in row) + "</tr>"
        for index, row in enumerate(rows)
    )
    return f"<table class='sortable'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _titled(title: str, table: str, rows: int) -> str:
    """A table under its heading; one of more than `LONG_TABLE` rows folds, its heading the summary."""
    if rows > LONG_TABLE:
        return f"<details><summary><b>{html.escape(title)}</b> ({rows} rows: click to show)</summary>{table}</details>"
    return f"<h3>{html.escape(title)}</h3>{table}"


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


def _share(value: float | None) -> str:
    """A headline share: one decimal, "-" when unknown."""
    return "-" if value is None else f"{100 * value:.1f}%"


def _results(document: dict, folder: Path, figures: str) -> str:
    kind = document.get("kind", "results")
    parts = [f"<h2>{html.escape(kind)}: {html.escape(str(document.get('model', '')))}</h2>"]
    run = _json(folder / "run.json")
    if kind == "schedule":
        parts.append(_schedule(document, folder, run, figures))
    else:
        parts.append(_measured(document, figures))
    if run is not None:
        options = _table(["option", "value"], _flat(run.get("options", {})))
        parts.append(f"<details><summary>Every option of the run</summary>{options}</details>")
    return "<section>" + "".join(parts) + "</section>"


def _measured(document: dict, figures: str) -> str:
    """A sweep or a sensitivity scan: its trade-off, its figures, then its levels (folded when long)."""
    kind, extra = document.get("kind"), document.get("extra", {})
    choice = extra.get("trade_off") or {}
    parts = []
    if kind == "sweep" and choice.get("near_chance"):
        parts.append(f"<p>{html.escape(choice['near_chance'])}</p>")
    elif kind == "sweep" and choice:
        curve = f" ({choice['method']}, {choice.get('scope')})" if choice.get("method") else ""
        parts.append(_headline([("dense top-1", _percent(document.get("baseline_accuracy"))[0]),
                                ("samples", _text(extra.get("samples"))),
                                ("budget", f"{100 * choice['max_drop']:.1f} points below dense"),
                                ("highest sparsity within the budget", f"{_share(choice['sparsity'])}{curve}"),
                                ("its top-1", _percent(choice.get("accuracy"))[0])]))  # fmt: skip
    parts.append(figures)
    if kind == "sensitivity" and extra.get("ratios"):
        ratios = extra["ratios"]
        rows = [[name, _percent(value)] for name, value in ratios.items()]
        parts.append(_titled("Ratios reaching the target", _table(["layer", "ratio"], rows), len(rows)))
    parts.append(_levels(document))
    return "".join(parts)


def _levels(document: dict) -> str:
    """Every measured level; with a trade-off, how far below dense each is and which level was chosen."""
    rows, extra = document.get("rows", []), document.get("extra", {})
    choice = extra.get("trade_off") or {}
    baseline = document.get("baseline_accuracy")
    units = document.get("units")
    sparsity = f"sparsity (of {units})" if units in ("weights", "channels") else "sparsity"
    judged = baseline is not None and choice.get("max_drop") is not None and not choice.get("near_chance")
    columns = ["method", "scope", sparsity, "top-1", "loss", "non-zeros"]
    if judged:
        columns += ["below dense", "budget"]
    table, chosen = [], None
    for index, row in enumerate(rows):
        cells = [row.get("method"), row.get("scope"), _percent(row.get("sparsity")), _percent(row.get("accuracy")),
                 row.get("loss"), row.get("num_nonzero")]  # fmt: skip
        if judged:
            accuracy = row.get("accuracy")
            drop = None if accuracy is None else baseline - accuracy
            picked = (row.get("method"), row.get("scope"), row.get("sparsity")) == (
                choice.get("method"), choice.get("scope"), choice.get("sparsity"))  # fmt: skip
            chosen = index if picked else chosen
            within = drop is not None and drop <= choice["max_drop"] + 1e-12
            cells += [("-", 0) if drop is None else (f"{100 * drop:.2f} points", drop),
                      "chosen" if picked else "within" if within else "beyond"]  # fmt: skip
        table.append(cells)
    return _titled("Every level measured", _table(columns, table, chosen), len(table))


def _schedule(document: dict, folder: Path, run: dict | None, figures: str) -> str:
    """A run of rounds: headline, command, the sweep that chose its sparsity, the rounds and what each kept."""
    extra = document.get("extra", {})
    rounds = extra.get("rounds", [])
    final = extra.get("final") or {}
    last = rounds[-1] if rounds else {}
    removes = _removes_channels(document, run)
    items = [("dense top-1", _percent(document.get("baseline_accuracy"))[0]),  # "-" when not measured
             ("final top-1", _percent(final.get("top1"))[0]),
             ("validation images", _text(extra.get("val_samples"))),  # what every top-1 is measured on
             *_sparsity_cards(document, run, last),
             ("final model", final.get("file", "(unfinished: --resume continues)"))]  # fmt: skip
    parts = [_headline(items)]
    if run is not None and run.get("command"):
        parts.append(f"<p>Command: <code>{html.escape(run['command'])}</code></p>")
    if (folder / CHOICE_FOLDER / "results.json").exists():
        parts.append(_max_drop_choice(folder, _json(folder / CHOICE_FOLDER / "results.json") or {}))
    parts.append("<h3>Rounds</h3>" + _keep_decisions(rounds, extra.get("val_samples")) + figures)
    parts.append(_rounds_table(rounds, _units(document, run), removes))
    if last.get("layer_sparsity"):
        layers = [[name, _percent(value)] for name, value in last["layer_sparsity"].items()]
        title = f"Sparsity per layer, last round (of {_units(document, run)})"
        parts.append(_titled(title, _table(["layer", "sparsity"], layers), len(layers)))
    return "".join(parts)


def _kind(document: dict, run: dict | None) -> str:
    """The run's kind as run.json records it: "unstructured", "filter" or "hybrid"."""
    recorded = (run or {}).get("kind")
    return recorded or ("filter" if document.get("units") == "channels" else "unstructured")


def _removes_channels(document: dict, run: dict | None) -> bool:
    """Whether the run takes channels out of the file (parameters and MACs go); --mask-only zeroes them.

    What the rounds measured decides over the option: a round that removed parameters removed them.
    """
    if _kind(document, run) == "unstructured":
        return False
    mask_only = (run or {}).get("options", {}).get("prune", {}).get("mask_only", False)
    rounds = document.get("extra", {}).get("rounds", [])
    return not mask_only or any(r.get("params_removed") for r in rounds)


def _units(document: dict, run: dict | None) -> str:
    """What the run's sparsity counts, in words."""
    return {"filter": "channels", "hybrid": "weights, removed or zero"}.get(_kind(document, run), "weights")


def _sparsity_cards(document: dict, run: dict | None, last: dict) -> list[tuple[str, str]]:
    """The headline cards that apply to the run's kind: zeros for weights, removals for channels."""
    kind, sparsity = _kind(document, run), last.get("sparsity")
    if kind == "unstructured":
        nonzero = last.get("num_nonzero")
        zeros = "-"
        if nonzero and sparsity is not None and sparsity < 1:  # sparsity = zeros / prunable weights
            total = round(nonzero / (1 - sparsity))
            zeros = f"{total - nonzero:,} of {total:,}"
        return [("sparsity (of prunable weights)", _share(sparsity)), ("zero weights", zeros)]
    if not _removes_channels(document, run):  # --mask-only: the channels are zero, the file keeps its size
        return [("channels zeroed", _share(sparsity)), ("zero parameters", _share(last.get("sparsity_all")))]
    first = ("channels removed", _share(sparsity)) if kind == "filter" else (
        "sparsity (of weights, removed or zero)", _share(sparsity))  # fmt: skip
    return [first, ("parameters removed", _share(last.get("params_removed"))),
            ("MACs removed", _share(last.get("macs_removed")))]  # fmt: skip


def _rounds_table(rounds: list[dict], units: str, removes: bool) -> str:
    """A row per round; the pruned and fine-tuned top-1 and which was kept, when the run compared them."""
    compared = any(r.get("top1_pruned") is not None for r in rounds)
    accuracy = ["top-1 pruned", "top-1 fine-tuned", "kept"] if compared else ["top-1"]
    removed = ["params removed", "MACs removed"] if removes else []
    columns = ["round", "target", f"sparsity (of {units})", *accuracy, "top-5", "loss", *removed, "seconds"]
    table = []
    for r in rounds:
        measured = [_percent(r.get("top1_pruned")), _percent(_fine_tuned_top1(r)), r.get("kept")] if compared else [
            _percent(r.get("top1"))]  # fmt: skip
        shares = [_percent(r.get("params_removed")), _percent(r.get("macs_removed"))] if removes else []
        table.append([r["round"], _percent(r.get("target_sparsity")), _percent(r.get("sparsity")), *measured,
                      _percent(r.get("top5")), r.get("loss"), *shares, r.get("seconds")])  # fmt: skip
    return _table(columns, table)


def _fine_tuned_top1(record: dict) -> float | None:
    """Where fine-tuning ended: the round's top-1 when kept, else its last epoch's validation top-1."""
    if record.get("kept") != "pruned":
        return record.get("top1")
    history = record.get("train_history") or []
    return history[-1].get("val_top1") if history else None


def _keep_decisions(rounds: list[dict], val_samples: int | None) -> str:
    """The keep-the-better rule in words, and every round where the pruned model was kept, with the margin."""
    if not any(r.get("top1_pruned") is not None for r in rounds):
        return ""
    on = f"the {val_samples:,} validation images" if val_samples else "the validation images"
    lines = [
        f"Every top-1 is measured on {on}. A round keeps its fine-tuned weights unless fine-tuning ends below "
        f"the pruned model by more than the sampling noise of {on} (two standard errors: the margin)."
    ]
    kept = [r for r in rounds if r.get("kept") == "pruned"]
    for r in kept:
        ended = _fine_tuned_top1(r)
        at = f"at top-1 {100 * ended:.2f}%, " if ended is not None else ""
        lines.append(
            f"Round {r['round']}: fine-tuning ended {at}below the pruned model's {100 * r['top1_pruned']:.2f}% by "
            f"more than the margin of {100 * (r.get('keep_margin') or 0):.2f} points: the pruned model was kept "
            "(a lower --lr may help)."
        )
    if not kept:
        lines.append("Every round kept its fine-tuned weights.")
    return "".join(f"<p>{html.escape(line)}</p>" for line in lines)


def _max_drop_choice(folder: Path, sweep: dict) -> str:
    """The sweep `prune --max-drop` chose the sparsity on: budget, levels tried, the chosen level, its curve."""
    extra, rows = sweep.get("extra", {}), sweep.get("rows", [])
    choice = extra.get("trade_off") or {}
    if not choice.get("method") or not rows:
        return ""
    baseline, samples = sweep.get("baseline_accuracy"), extra.get("samples")
    levels = sorted({row["sparsity"] for row in rows})
    scopes = list(dict.fromkeys(row["scope"] for row in rows))
    budget = f"{100 * choice['max_drop']:.1f} points"
    items = [("images of --data", _text(samples)), ("dense top-1 on them", _percent(baseline)[0]),
             ("budget", f"{budget} below dense"), ("chosen", f"{_share(choice['sparsity'])} of the {choice['units']}"),
             ("its top-1", _percent(choice.get("accuracy"))[0]),
             ("levels tried", f"{len(levels)} x {len(scopes)} scope{'s' * (len(scopes) > 1)}")]  # fmt: skip
    solved = extra.get("reconstructed_on")
    story = (
        f"Before the rounds, the dense model was pruned with {choice['method']} at {len(levels)} levels "
        f"({_share(levels[0])} to {_share(levels[-1])}) in scope{'s' * (len(scopes) > 1)} {' and '.join(scopes)}, "
        "without fine-tuning"
        + (f", each level's layers solved again on {solved:,} other images" if solved else "")
        + f", and each level was measured on the same {_text(samples)} images of --data. The highest level whose "
        f"top-1 stays within {budget} of the dense {_percent(baseline)[0]} in the run's scope ({choice['scope']}): "
        f"{_share(choice['sparsity'])} of the {choice['units']} (top-1 {_percent(choice.get('accuracy'))[0]}); "
        "the rounds start from it."
    )
    other = choice.get("other") or {}
    if other.get("scope"):
        story += f" With --scope {other['scope']} the same sweep " + (
            f"reaches {_share(other['sparsity'])} (top-1 {_percent(other.get('accuracy'))[0]})."
            if other.get("method") else "keeps no level within the budget."
        )  # fmt: skip
    return (
        "<h3>How --max-drop chose the sparsity</h3>" + _headline(items) + f"<p>{html.escape(story)}</p>"
        + _figures(folder / CHOICE_FOLDER, folder) + _levels(sweep)
    )  # fmt: skip


def _draw_run_figures(document: dict, folder: Path, final_file: str | None) -> None:
    """The training curves and the final sparsity per layer, drawn once into the run's folder."""
    from onnxprune.graph.model import load
    from onnxprune.report import plots

    if not (folder / "training.png").exists() and document.get("extra", {}).get("rounds"):
        plots.training(document, folder / "training.png")
    if final_file and (folder / final_file).exists() and not (folder / "layers.png").exists():
        plots.layer_sparsity(load(folder / final_file), folder / "layers.png")


def _bench(rows: list[dict], figures: str) -> str:
    """bench.json's table: latencies as the terminal shows them (three significant digits, µs under 1 ms)."""
    from onnxprune.measure.bench import latency_unit, three_digits

    batches = list(rows[0].get("latency_ms", {})) if rows else []
    units = {b: latency_unit([r["latency_ms"][b]["median"] for r in rows if b in r.get("latency_ms", {})])
             for b in batches}  # fmt: skip

    def latency(row: dict, batch: str) -> tuple[str, float] | None:
        median = row["latency_ms"].get(batch, {}).get("median")
        return None if median is None else (three_digits(median * units[batch][1]), median)  # shown, sorted by

    columns = ["model", *[f"batch {b} {units[b][0]}" for b in batches], *[f"batch {b} speedup" for b in batches],
               "size", "non-zeros", "MACs", "top-1"]  # fmt: skip
    table = [[r["name"], *[latency(r, b) for b in batches],
              *[_times(r.get("speedup", {}).get(b)) for b in batches], (f"{r['bytes'] / 1e6:.2f} MB", r["bytes"]),
              r.get("nonzero"), r.get("macs"), _percent(r.get("top1"))] for r in rows]  # fmt: skip
    return "<section><h2>Latency and size in onnxruntime</h2>" + figures + _table(columns, table) + "</section>"


def _times(ratio: float | None) -> tuple[str, float] | None:
    """A speedup as the terminal shows it (1.26x), sorted by its value."""
    return None if ratio is None else (f"{ratio:.2f}x", ratio)


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


def _figures(folder: Path, relative_to: Path | None = None) -> str:
    """Every PNG of `folder`, embedded (a subfolder's are in its own section).

    Captions are paths relative to `relative_to` (default: the folder).
    """
    figures = []
    for image in sorted(folder.glob("*.png")):
        data = base64.b64encode(image.read_bytes()).decode()
        name = html.escape(str(image.relative_to(relative_to or folder)))
        figures.append(f"<figure><img src='data:image/png;base64,{data}' alt='{name}'><figcaption>{name}</figcaption>"
                       "</figure>")  # fmt: skip
    return "".join(figures)


def _flat(options: dict, prefix: str = "") -> list[list]:
    rows = []
    for key, value in options.items():
        if isinstance(value, dict):
            rows.extend(_flat(value, f"{prefix}{key}."))
        else:
            rows.append([f"{prefix}{key}", json.dumps(value) if isinstance(value, (list, bool)) or value is None
                         else value])  # fmt: skip
    return rows
