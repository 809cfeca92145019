"""The `onnxprune` command line: parse, build options, call the library once, render.

Every `OnnxpruneError` becomes one line on stderr and exit code 2; anything unexpected becomes one
line naming the stage and node (`onnxprune.errors.InternalError`) and exit code 1, its traceback in
the debug log (ONNXPRUNE_DEBUG=1: on stderr). Usage errors are typer's (exit 2).
The commands live by room (graph, prune, measure, report, demo) and are registered here, in the
order `--help` lists them. Library modules are imported inside the commands: `onnxprune --help`
and every one-line error return without waiting for torch.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from typer._click import exceptions as usage  # typer's own copy of click: its usage errors are these

from onnxprune.cli import demo, graph, measure, prune, report


class OneLineErrors(typer.core.TyperGroup):
    """Usage errors (an unknown command, `--sparsity 90%`) as one `error:` line, like every other mistake.

    Typer draws them in a box under the usage text; the library's errors are one line on stderr and
    exit code 2 (`onnxprune.cli.common.reports_errors`): a user should meet one style, whatever they got wrong.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Run the command; in standalone mode a usage error is one line and exit code 2."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        given = list(args) if args is not None else sys.argv[1:]
        try:
            code = super().main(given, prog_name, complete_var, standalone_mode=False, **extra)
        except usage.NoArgsIsHelpError as error:  # `onnxprune` alone: the help, as before
            error.show()
            raise SystemExit(2) from None
        except usage.ClickException as error:
            from onnxprune.cli.common import print_error

            print_error(usage_error_line(error, given))
            raise SystemExit(error.exit_code) from None
        except typer.Abort:
            from onnxprune.cli.common import print_error

            print_error("aborted")
            raise SystemExit(1) from None
        raise SystemExit(code if isinstance(code, int) else 0)


def usage_error_line(error: usage.ClickException, given: list[str]) -> str:
    """The usage error in one line, with where to look (and the fraction a percentage meant)."""
    message = " ".join(error.format_message().split()).rstrip(".")
    if isinstance(error, typer.BadParameter) and any(str(arg).endswith("%") for arg in given):
        message += " (give a fraction: 0.9 for 90%)"
    context = getattr(error, "ctx", None)
    return message + (f"; `{context.command_path} --help` lists the options" if context is not None else "")


app = typer.Typer(
    cls=OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Prune ONNX classifiers exported by MATLAB or PyTorch, verified in onnxruntime.",
)


def _print_version(value: bool) -> None:
    if value:
        from onnxprune import __version__

        typer.echo(f"onnxprune {__version__}")
        raise typer.Exit()


@app.callback()
def _main_options(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit"),
    ] = None,
) -> None:
    """Prune ONNX classifiers exported by MATLAB or PyTorch, verified in onnxruntime."""


def _flags_without_type(command: typer.core.TyperGroup) -> None:
    """Show flags as flags in --help: typer labels every on/off option `<bool>`, inviting `--skip-first true`.

    --help itself and --version count too (the help option is made on demand: made here, then cached).
    """
    for each in [command, *getattr(command, "commands", {}).values()]:
        help_option = each.get_help_option(each.context_class(each))
        for parameter in [*each.params, *([help_option] if help_option else [])]:
            if getattr(parameter, "is_flag", False):
                parameter.metavar = " "


def main() -> None:
    """Console entry point; Ctrl-C at any moment is one line and exit code 130."""
    from onnxprune.cli.common import captured_warnings

    command = typer.main.get_command(app)
    _flags_without_type(command)
    try:
        with captured_warnings():
            command(prog_name="onnxprune")
    except KeyboardInterrupt:  # outside a command (typer's parsing); inside, reports_errors says it
        from onnxprune.cli.common import print_error

        print_error("interrupted; no output was written")
        raise SystemExit(130) from None


app.command()(graph.inspect)
app.command()(measure.evaluate)
app.command()(prune.finetune)
app.command()(prune.prune)
app.command()(measure.sweep)
app.command()(measure.sensitivity)
app.command()(report.plot)
app.command()(report.report)
app.command(name="bench")(measure.bench_command)
app.command()(measure.quantize)
app.command()(graph.pack)
app.command()(graph.unpack)
app.command()(graph.compact)
app.command()(demo.demo)


if __name__ == "__main__":
    main()
