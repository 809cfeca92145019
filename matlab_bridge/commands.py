"""Every `onnxprune` command as a MATLAB function, with the command line's own options.

A bridge function runs the CLI command in this process: MATLAB's name-value arguments are matched
(ignoring case and underscores) to the command's options as the CLI defines them, turned into its
arguments, parsed and checked by the CLI itself, and the command's `--json` result comes back
flattened into what MATLAB converts cleanly. There is one definition of the options, the CLI's,
so the bridge cannot fall behind it: `options_of(name)` lists what it accepts.

MATLAB arrays stand in for files: `Images` + `Labels` become the `--data` of the command (and
`ValImages` + `ValLabels` its `--val`), written to a temporary .npz that is removed afterwards.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

# bridge-only arguments: MATLAB arrays that become a data file option of the command
ARRAY_ARGUMENTS = {"images": ("labels", "data"), "valimages": ("vallabels", "val")}
_SKIPPED = {"as_json", "help"}


def _normalise(name: str) -> str:
    return str(name).replace("_", "").replace("-", "").lower()


def matlab_name(name: str) -> str:
    """'finetune_epochs' -> 'FinetuneEpochs' (names are matched ignoring case and underscores)."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[_-]", name) if part)


def cli_command(name: str):
    """The click command behind `onnxprune NAME`."""
    import typer.main

    from onnxprune.cli import app

    return typer.main.get_command(app).commands[name]


def _options(name: str) -> list:
    """The command's options (typer parameters), without --json and --help."""
    return [
        parameter
        for parameter in cli_command(name).params
        if parameter.param_type_name == "option" and parameter.name not in _SKIPPED
    ]


def _value_type(parameter) -> type:
    """int, float, bool, str or Path: what the option takes (`int | None` -> int, `list[str]` -> str)."""
    import typing

    annotation = parameter.type_descriptor.annotation
    while typing.get_args(annotation):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def _usage_error() -> type:
    try:
        from typer._click.exceptions import UsageError  # typer 0.29 and later carry their own click
    except ImportError:
        from click.exceptions import UsageError
    return UsageError


def options_of(name: str) -> dict[str, object]:
    """The command's options by normalised name (the Python name and the long flag): typer parameters."""
    options = {}
    for parameter in _options(name):
        options[_normalise(parameter.name)] = parameter
        for flag in parameter.opts:
            if flag.startswith("--"):
                options[_normalise(flag)] = parameter
    return options


def accepted_names(name: str) -> list[str]:
    """The MATLAB names a bridge function accepts for command NAME (the CLI's options, MATLAB-cased).

    Old spellings (hidden options) are still accepted, with the CLI's deprecation note, but not listed.
    """
    names = [matlab_name(parameter.name) for parameter in _options(name) if not parameter.hidden]
    known = options_of(name)
    if "data" in known:
        names += ["Images", "Labels"]
    if "val" in known:
        names += ["ValImages", "ValLabels"]
    return names


def run(name: str, arguments: list[str], options: dict) -> object:
    """Run `onnxprune NAME ARGUMENTS --json` with MATLAB's name-value `options`; its JSON result.

    Raises:
        BridgeError: an unknown name, a value of the wrong kind, or the CLI's usage errors;
            onnxprune's own errors propagate unchanged (the caller maps them to identifiers).
    """
    from matlab_bridge import BridgeError
    from onnxprune.cli.common import callers, captured_warnings

    known = options_of(name)
    with tempfile.TemporaryDirectory(prefix="onnxprune-matlab-") as folder:
        options = _arrays_to_files(name, dict(options), Path(folder), known)
        argv = [str(a) for a in arguments]
        for given, value in options.items():
            parameter = known.get(_normalise(given))
            if parameter is None:
                valid = ", ".join(accepted_names(name))
                raise BridgeError("onnxprune:badArgument", f"unknown argument '{given}'; valid names: {valid}")
            argv += _command_line(parameter, value, given)
        output = io.StringIO()
        callers.raise_errors = True
        try:  # third-party warnings to the debug log while the command runs, as in the shell
            with contextlib.redirect_stdout(output), _progress_to(sys.__stdout__), captured_warnings():
                cli_command(name).main(args=[*argv, "--json"], prog_name=f"onnxprune {name}", standalone_mode=False)
        except _usage_error() as exc:
            raise BridgeError("onnxprune:badArgument", exc.format_message().replace("\n", " ")) from None
        finally:
            callers.raise_errors = False
    return json.loads(output.getvalue())


@contextlib.contextmanager
def _progress_to(stream):
    """Progress and notes (the CLI's stderr) go to the caller's window: the file transport's stdout."""
    if stream is None or getattr(stream, "closed", False):
        yield
        return
    with contextlib.redirect_stderr(stream):
        yield


def _command_line(parameter, value, given: str) -> list[str]:
    """One option's arguments on the command line, from a MATLAB value."""
    from matlab_bridge import BridgeError, _integer, _text

    flag = next(f for f in parameter.opts if f.startswith("--"))
    if parameter.is_flag:
        if _truth(value):
            return [flag]
        return [parameter.secondary_opts[0]] if parameter.secondary_opts else []
    values = list(value) if parameter.multiple and isinstance(value, (list, tuple)) else [value]
    result = []
    for item in values:
        kind = _value_type(parameter)
        if kind is int:
            text = str(_integer(item, matlab_name(given)))
        elif kind is float:
            try:
                text = repr(float(item))
            except (TypeError, ValueError):
                raise BridgeError("onnxprune:badInput", f"{given} must be a number, got {item!r}") from None
        elif isinstance(item, (np.ndarray, list, tuple)) and not isinstance(item, str):
            text = ",".join(_number_text(v) for v in np.asarray(item, dtype=float).reshape(-1))  # 0.1,0.2 lists
        elif isinstance(item, (int, float, np.number)) and not isinstance(item, bool):
            text = _number_text(item)
        else:
            text = _text(item, given)
        result += [flag, text]
    return result


def _truth(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "on", "yes", "1")
    return bool(np.asarray(value).reshape(-1)[0]) if np.size(value) else False


def _number_text(value) -> str:
    """3.0 -> '3', 0.25 -> '0.25' (MATLAB sends doubles)."""
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


def _arrays_to_files(name: str, options: dict, folder: Path, known: dict) -> dict:
    """Images + Labels (and ValImages + ValLabels) -> a temporary .npz given as --data (--val)."""
    from matlab_bridge import BridgeError, _dataset

    by_key = {_normalise(k): k for k in options}
    for images_key, (labels_key, option) in ARRAY_ARGUMENTS.items():
        if images_key not in by_key and labels_key not in by_key:
            continue
        if option not in known:
            raise BridgeError("onnxprune:badArgument", f"{name} takes no data: it has no --{option}")
        images = options.pop(by_key[images_key], None) if images_key in by_key else None
        labels = options.pop(by_key[labels_key], None) if labels_key in by_key else None
        if option in by_key:
            raise BridgeError("onnxprune:badArgument", f"give {matlab_name(option)} (a file) or arrays, not both")
        dataset = _dataset({"images": images, "labels": labels})
        path = folder / f"{option}.npz"
        np.savez(path, x=dataset.images, y=dataset.labels)
        options[option] = str(path)
    return options


def flatten(value, prefix: str = "") -> dict:
    """A JSON result as MATLAB struct fields: nested objects joined by '_', tables as column vectors.

    A list of objects (rounds, rows) becomes one column per scalar field (`rounds_top1`); numbers
    become doubles, text char, lists of text cellstr (a list of texts per row, like a round's notes,
    one text joined by '; '); null becomes NaN. A table of layers gives `layer_names` and
    `layer_<field>` (`layer_sparsity`, `layer_ratio`): the names inspect, prune and results.mat use,
    so no struct carries a layer's name under two fields.
    """
    if isinstance(value, dict):
        fields = {}
        for key, item in value.items():
            fields.update(flatten(item, f"{prefix}_{key}" if prefix else str(key)))
        return fields
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        columns = {}
        keys = dict.fromkeys(key for item in value for key in item)
        for key in keys:
            cells = [item.get(key) for item in value]
            name = _column(prefix, key)
            if all(isinstance(c, str) for c in cells):
                columns[name] = cells
            elif all(isinstance(c, list) and all(isinstance(t, str) for t in c) for c in cells):
                columns[name] = ["; ".join(c) for c in cells]  # a round's notes: one text each
            elif all(c is None or (isinstance(c, (int, float)) and not isinstance(c, bool)) or isinstance(c, bool)
                     for c in cells):  # fmt: skip
                columns[name] = np.array([np.nan if c is None else float(c) for c in cells])
        return columns
    return {_field(prefix): _scalar(value)}


def _column(table: str, key: str) -> str:
    """The field of column KEY of TABLE: `rounds_top1`; for a table of layers `layer_names`, `layer_sparsity`."""
    if table == "layers" or table.endswith("_layers"):
        table = table[: -len("layers")] + "layer"
        key = "names" if key == "name" else key
    return _field(f"{table}_{key}")


def _scalar(value):
    if value is None:
        return float("nan")
    if isinstance(value, list):
        if all(isinstance(v, str) for v in value):
            return [str(v) for v in value]
        return np.array([np.nan if v is None else float(v) for v in value if not isinstance(v, (list, dict))])
    return value


def _field(name: str) -> str:
    """A valid MATLAB struct field name (letters, digits, underscores; a letter first; 63 characters)."""
    name = re.sub(r"\W", "_", name).strip("_") or "value"
    if not name[0].isalpha():
        name = f"x{name}"
    return name[:63]
