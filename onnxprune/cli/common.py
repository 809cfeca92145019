"""What every command shares: the console, one-line errors, the data options and progress bars."""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import logging
import os
import sys
import time
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console

from onnxprune.errors import ConfigError, InternalError, OnnxpruneError

if TYPE_CHECKING:
    from onnxprune.graph.model import Model
    from onnxprune.options import DataOptions
    from onnxprune.workbench.data import Dataset, Preprocess

T = TypeVar("T")


def debug_log_path() -> Path:
    """Where third-party warnings go: $ONNXPRUNE_LOG, else onnxprune/debug.log in the user's cache folder."""
    if os.environ.get("ONNXPRUNE_LOG"):
        return Path(os.environ["ONNXPRUNE_LOG"])
    cache = os.environ.get("XDG_CACHE_HOME") or os.environ.get("LOCALAPPDATA") or Path.home() / ".cache"
    return Path(cache) / "onnxprune" / "debug.log"


@contextlib.contextmanager
def captured_warnings() -> Iterator[None]:
    """While inside, Python warnings (onnx2torch's, torch's, onnx's) go to the debug log.

    Not between the tool's lines; the previous handling comes back on leaving (the MATLAB bridge's
    Python lives on). ONNXPRUNE_DEBUG=1 shows them on stderr as well. The log is opened only when a warning comes, and
    a log that cannot be written costs nothing but the warning.
    """
    logger = logging.getLogger("py.warnings")
    handlers = [_DebugLogHandler()] + ([logging.StreamHandler(sys.stderr)] if os.environ.get("ONNXPRUNE_DEBUG") else [])
    propagate, level = logger.propagate, logger.level
    logging.captureWarnings(True)
    logger.propagate = False
    logger.setLevel(logging.WARNING)  # whatever level the root logger was given
    for handler in handlers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
        logger.propagate, logger.level = propagate, level
        logging.captureWarnings(False)


DEBUG_LOG_BYTES = 1_000_000  # past this the log becomes debug.log.1 (the one before is dropped)


class _DebugLogHandler(logging.Handler):
    """Appends to `debug_log_path()` (`append_to_debug_log`), opened on the first record (never an empty file)."""

    def emit(self, record: logging.LogRecord) -> None:
        append_to_debug_log(record.getMessage(), record.created)  # a read-only home costs the warning, not the run


def append_to_debug_log(text: str, created: float | None = None) -> bool:
    """Append a timestamped entry to `debug_log_path()`; False if the log cannot be written.

    The log stays under about `DEBUG_LOG_BYTES`: when full it is moved to `<name>.1` first.
    """
    try:
        path = debug_log_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > DEBUG_LOG_BYTES:
            path.replace(path.with_name(path.name + ".1"))
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"{stamp} {text.strip()}\n")
    except OSError:
        return False
    return True


# the options of `data_options`: every command that reads data shows them in a "Data" panel
DATA_PANEL = dict.fromkeys(("limit", "first", "pixel_range", "mean", "std", "flatten"), "Data")


def help_panels(**panels: str) -> Callable:
    """Group a command's options into the panels of its --help: `name="Panel title"` per option.

    Options not named stay in typer's default "Options" panel. The annotations are resolved once
    here, so the `typer.Option` objects typer reads are the ones given a panel.
    """

    def decorate(command: Callable) -> Callable:
        original = inspect.unwrap(command)
        hints = typing.get_type_hints(original, include_extras=True)
        unknown = set(panels) - set(hints)
        if unknown:
            raise TypeError(f"help_panels names options {command.__name__} does not have: {sorted(unknown)}")
        for name, panel in panels.items():
            hint = hints[name]
            metadata = [copy.copy(item) for item in typing.get_args(hint)[1:]]
            for item in metadata:
                if isinstance(item, (typer.models.OptionInfo, typer.models.ArgumentInfo)):
                    item.rich_help_panel = panel
            hints[name] = Annotated[(typing.get_args(hint)[0], *metadata)]
        original.__annotations__ = command.__annotations__ = hints
        return command

    return decorate


def console(stderr: bool = False) -> Console:
    """A rich console; wide when output goes to a file or pipe, so tables keep full layer names."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, width=None if stream.isatty() else 160, soft_wrap=True)


def model_size(path: Path) -> int:
    """Bytes of a written model, its external data file included."""
    from onnxprune.graph.model import model_file_size

    return model_file_size(path)


def human_size(size: int) -> str:
    """1536 -> '1.54 KB': decimal units (1 KB = 1000 bytes), the same as the figures and the HTML report."""
    for unit in ("B", "KB", "MB", "GB"):
        shown = f"{size:.0f}" if unit == "B" else f"{size:.2f}"
        if float(shown) < 1000 or unit == "GB":  # 999,999 bytes is 1.00 MB, not 1000.00 KB
            return f"{shown} {unit}"
        size /= 1000
    return f"{size:.2f} GB"


class _Callers:
    """Who runs the commands: the shell (errors become one line and an exit code) or the MATLAB bridge."""

    raise_errors = False  # the MATLAB bridge runs commands in-process and turns the exceptions into MATLAB errors


callers = _Callers()


def reports_errors(command: Callable) -> Callable:
    """Turn an `OnnxpruneError` into one line and exit code 2, anything else into one line and 1.

    Anything else is an internal error: its line names the stage and node it escaped from (an
    `InternalError`, see `onnxprune.errors.stage`) and the debug log, which receives the traceback.
    With `callers.raise_errors` (the MATLAB bridge) the exception goes to the caller unchanged.
    """

    @functools.wraps(command)
    def run(*args: object, **kwargs: object) -> object:
        if callers.raise_errors:
            return command(*args, **kwargs)
        try:
            return command(*args, **kwargs)
        except OnnxpruneError as exc:
            print_error(str(exc))
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            print_error("interrupted; no output was written")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            error = exc if isinstance(exc, InternalError) else InternalError(None, exc)
            logged = log_internal_error(error)
            if os.environ.get("ONNXPRUNE_DEBUG"):
                raise
            print_error(internal_error_line(error, logged))
            raise typer.Exit(1) from None

    return run


REPORT_ADVICE = "please report it with the model's opset and producer"


def internal_error_line(error: InternalError, logged: bool) -> str:
    """The one line of an internal error: what, where, where the traceback is, what to do."""
    if logged:
        return f"{error}; the traceback is in {debug_log_path()}; {REPORT_ADVICE} (ONNXPRUNE_DEBUG=1 prints it here)"
    return f"{error}; {REPORT_ADVICE}; {debug_log_path()} could not be written: ONNXPRUNE_DEBUG=1 prints the traceback"


def log_internal_error(error: InternalError) -> bool:
    """Write an internal error's traceback (the original exception's included) and the versions to the debug log.

    An error wrapped by the CLI (raised outside any stage) was never raised itself: its cause's traceback is logged.
    """
    import platform
    import traceback
    from importlib import metadata

    versions = []
    for package in ("onnxprune", "onnx", "onnxruntime", "torch", "onnx2torch"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} absent")
    return append_to_debug_log(
        f"{error}\ncommand: {' '.join(sys.argv)}\n{', '.join(versions)}, Python {platform.python_version()}\n"
        + "".join(traceback.format_exception(error if error.__traceback__ is not None else error.cause))
    )


DataOption = Annotated[
    Path | None, typer.Option("--data", help="images: class-subfolder folder or .zip, .mat, .npz or MNIST idx")
]


ValOption = Annotated[Path | None, typer.Option("--val", help="validation data (same formats); else --val-split")]


ValSplitOption = Annotated[
    float | None, typer.Option(help="fraction of --data held out for validation (default 0.2 when fine-tuning)")
]


LimitOption = Annotated[
    int | None, typer.Option(help="use N samples of each data source, drawn evenly from the classes (seeded)")
]
FirstOption = Annotated[int | None, typer.Option(help="use the first N samples of each data source, in file order")]


PixelRangeOption = Annotated[
    str | None, typer.Option(help="'0-255' or '0-1' (default: 0-255 for MATLAB exports with a mean-image Sub)")
]


MeanOption = Annotated[str | None, typer.Option(help="per-channel mean after scaling, e.g. 0.4914,0.4822,0.4465")]


StdOption = Annotated[str | None, typer.Option(help="per-channel std, e.g. 0.2470,0.2435,0.2616")]


FlattenOption = Annotated[
    str | None, typer.Option(help="for flat inputs: 'row' (numpy order, the default) or 'column' (MATLAB's X(:) order)")
]


SeedOption = Annotated[int, typer.Option(help="seed for splits, shuffling, augmentation and dropout")]


JsonOption = Annotated[bool, typer.Option("--json", help="print the result as JSON (for scripts and MATLAB)")]


def old_spelling(old_value: T | None, value: T | None, old: str, new: str, default: T) -> T:
    """The value of an option that also has an old, hidden spelling, with a note when the old one is used.

    Both options default to None in the command's signature, so that a value given explicitly is
    always seen, even one equal to the default.

    Args:
        old_value: what the old spelling received (None: not given).
        value: what the current spelling received (None: not given).
        old: the old spelling, for the messages.
        new: the current spelling, for the messages.
        default: the value when neither is given.

    Raises:
        ConfigError: both spellings were given.
    """
    if old_value is None:
        return default if value is None else value
    if value is not None:
        raise ConfigError(f"{old} and {new} are one option ({old} is its old spelling): give {new} only")
    console(stderr=True).print(f"note: {old} is deprecated; use {new} (the same option)", highlight=False)
    return old_value


def emit_json(summary: dict) -> None:
    """Print a command's result as JSON on stdout (paths as text)."""
    import json

    typer.echo(json.dumps(summary, indent=2, default=str))


def numbers(text: str | None, what: str) -> tuple[float, ...] | None:
    """'0.5,0.4' -> (0.5, 0.4); a one-line error naming the option `what` otherwise."""
    if text is None:
        return None
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated numbers, got '{text}'") from None


def pick(given: dict, *names: str, **renamed: str) -> dict:
    """The options among `names` that were given (not None), as keyword arguments of an options dataclass.

    `renamed` maps a field to the command's name for it (epochs="finetune_epochs"). What was not
    given is left out, so the dataclass's own default applies: defaults are written once, there.
    """
    chosen = {name: given[name] for name in names if given.get(name) is not None}
    chosen.update({field: given[name] for field, name in renamed.items() if given.get(name) is not None})
    return chosen


def data_options(
    data: Path | None, val: Path | None = None, val_split: float | None = None, limit: int | None = None,
    pixel_range: str | None = None, mean: str | None = None, std: str | None = None, flatten: str | None = None,
    seed: int = 0, first: int | None = None,
) -> DataOptions:  # fmt: skip
    """The data options of a command, or None without --data."""
    from onnxprune.options import DataOptions

    return DataOptions(
        path=str(data) if data is not None else None, val=str(val) if val is not None else None,
        val_split=val_split, limit=limit, first=first, pixel_range=pixel_range, mean=numbers(mean, "--mean"),
        std=numbers(std, "--std"), flatten=flatten, seed=seed,
    )  # fmt: skip


def prepare_data(
    model: Model, data: Path | None, val: Path | None, val_split: float | None, limit: int | None,
    pixel_range: str | None, mean: str | None, std: str | None, flatten: str | None, seed: int, default_split: float,
    first: int | None = None,
) -> tuple[Preprocess, Dataset | None, Dataset | None]:  # fmt: skip
    """(preprocess, train set or None, validation set or None) for a model and the data options."""
    from onnxprune.workbench.data import prepare

    options = data_options(data, val, val_split, limit, pixel_range, mean, std, flatten, seed, first)
    return prepare(model, options, default_split)


def evaluation_data(
    model: Model, data: Path | None, limit: int | None, pixel_range: str | None, mean: str | None, std: str | None,
    flatten: str | None, first: int | None = None,
) -> tuple[Preprocess, Dataset]:  # fmt: skip
    """(preprocess, dataset) for commands that only measure: all of --data, no split."""
    preprocess, dataset, _ = prepare_data(
        model, data, None, None, limit, pixel_range, mean, std, flatten, 0, 0.0, first=first
    )
    return preprocess, dataset


class training_progress:
    """A rich progress bar fed by the library's progress callbacks."""

    def __enter__(self) -> Callable[[dict], None]:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
            TimeRemainingColumn(), console=console(stderr=True), transient=True,
        )  # fmt: skip
        self.live = self.bar.console.is_terminal  # elsewhere a live bar leaves only a blank line behind
        self.task = None
        self.started = False
        return self.update

    def update(self, event: dict) -> None:
        """Show one progress event of the library."""
        if not self.started:  # started on the first event, so an early error prints nothing else
            if self.live:
                self.bar.start()
            self.started = True
        if "phase" in event:
            description = f"round {event['round']}/{event['rounds']}: {event['phase']}"
            if not self.live:  # no live bar in a log or in MATLAB's window: one line per phase
                self.bar.console.print(description)
            if self.task is None:
                self.task = self.bar.add_task(description, total=None, status="")
            self.bar.update(self.task, description=description)
        elif "step" in event:
            if self.task is None:
                self.task = self.bar.add_task("", total=event["steps"], status="")
            self.bar.update(
                self.task,
                total=event["steps"],
                completed=event["step"],
                status=f"epoch {event['epoch']}  loss {event['loss']:.3f}  acc {event['top1']:.1%}",
            )
        elif "record" in event:
            record = event["record"]
            val = f"  val top-1 {record.val_top1:.2%}" if record.val_top1 is not None else ""
            self.bar.console.print(
                f"epoch {record.epoch}: loss {record.train_loss:.3f}  train top-1 {record.train_top1:.2%}{val}  "
                f"({record.images_per_second:,.0f} images/s)"
            )

    def __exit__(self, *exc_info: object) -> bool:
        if self.started and self.live:
            self.bar.stop()
        return False


class level_progress:
    """A progress bar over sweep levels, showing the level and its accuracy."""

    def __enter__(self) -> Callable[[dict], None]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=console(stderr=True), transient=True,
        )  # fmt: skip
        self.live = self.bar.console.is_terminal  # elsewhere a live bar leaves only a blank line behind
        self.task = None
        return self.update

    def update(self, event: dict) -> None:
        """Show one finished sweep level."""
        row = event["row"]
        if self.task is None:
            if self.live:
                self.bar.start()
            self.task = self.bar.add_task("", total=event["total"])
        label = f"{row.method} {row.scope} {row.sparsity:.1%}: top-1 {row.accuracy:.2%}"
        self.bar.update(self.task, completed=event["done"], description=label)

    def __exit__(self, *exc_info: object) -> bool:
        if self.task is not None and self.live:
            self.bar.stop()
        return False


def level_options(
    sparsities: str | None, start: float | None, stop: float | None, step: float | None, default: str
) -> list[float]:
    """The sparsity levels of --sparsities or --from/--to/--step (which go together), else `default`."""
    from onnxprune.measure.sweep import grid, parse_levels

    if start is not None or stop is not None or step is not None:
        if None in (start, stop, step):
            raise ConfigError("--from, --to and --step go together")
        return grid(start, stop, step)
    return parse_levels(sparsities or default)


SparsitiesOption = Annotated[
    str | None, typer.Option(help="levels: start:step:stop ranges and values, e.g. 0:0.1:0.9,0.9:0.02:0.98")
]


FromOption = Annotated[float | None, typer.Option("--from", help="first level (with --to and --step)")]


ToOption = Annotated[float | None, typer.Option("--to", help="last level")]


StepOption = Annotated[float | None, typer.Option("--step", help="level step")]


def percent(value: float | None) -> str:
    """0.25 -> '25.0%', None -> '-'."""
    return "-" if value is None else f"{value:.1%}"


def print_error(message: str) -> None:
    """One line on stderr: 'error: ...'."""
    console(stderr=True).print(f"error: {message}", markup=False)
