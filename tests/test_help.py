"""--help as users read it: flags shown as flags."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def test_flags_are_shown_without_a_type_in_help():
    shown = subprocess.run([sys.executable, "-m", "onnxprune", "prune", "--help"], capture_output=True, text=True,
                           env={"COLUMNS": "120", "TERM": "dumb", "PATH": ""})  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    flags = [line for line in shown.stdout.splitlines() if "--skip-first" in line or "--resume" in line]
    assert len(flags) == 2 and not any("<bool>" in line for line in flags), flags
    assert "<float>" in shown.stdout, "valued options keep their type"


def test_no_flag_of_any_command_shows_a_type():
    """--help and --version are flags too, at the top and in every command."""
    for name in ["", *_commands()]:
        command = [sys.executable, "-m", "onnxprune", *([name] if name else []), "--help"]
        shown = subprocess.run(command, capture_output=True, text=True, env={"COLUMNS": "120", "TERM": "dumb"})
        assert shown.returncode == 0 and "--help" in shown.stdout, (name, shown.stderr)
        assert "<bool>" not in shown.stdout, (name, [line for line in shown.stdout.splitlines() if "<bool>" in line])


def _commands():
    import typer.main

    from onnxprune.cli import app

    return typer.main.get_command(app).commands


def test_one_option_vocabulary_across_commands():
    """-o names the main output of every command that writes one; --out-dir every run folder; one spelling each."""
    for name, command in _commands().items():
        options = [p for p in command.params if p.param_type_name == "option" and not p.hidden]
        spelled = {flag: p for p in options for flag in p.opts}
        assert not {"--out", "--outdir", "--output-dir", "--batch"} & set(spelled), (name, sorted(spelled))
        folders = [p for p in options if "dir" in p.name]
        assert all(p.opts[0] == "--out-dir" for p in folders), (name, [p.opts for p in folders])
        files = [p for p in options if p.name == "output"]
        assert all(p.opts == ["--output", "-o"] for p in files), (name, [p.opts for p in files])
        if folders and not files:  # the folder is the main output: -o names it
            assert "-o" in folders[0].opts, name
        writes = files or folders
        assert bool(writes) == (name not in ("inspect", "evaluate")), name
        batches = [p for p in options if "batch" in p.name and "round" not in p.name]
        # prune trains at --batch-size and times --speedup at --bench-batch-size (bench's --batch-size)
        assert all(p.opts in (["--batch-size"], ["--bench-batch-size"]) for p in batches), (
            name, [p.opts for p in batches])  # fmt: skip


def test_old_spellings_are_accepted_with_a_note(fixture_model, tmp_path):
    from typer.testing import CliRunner

    from onnxprune.cli import app

    model = str(fixture_model("matmul_mlp"))
    old = CliRunner().invoke(app, ["bench", model, "--batch", "1", "--runs", "2", "--json"])
    assert old.exit_code == 0, old.output
    assert "note: --batch is deprecated; use --batch-size (the same option)" in old.stderr
    assert json.loads(old.stdout)[0]["latency_ms"].keys() == {"1"}
    both = CliRunner().invoke(app, ["bench", model, "--batch", "1", "--batch-size", "8"])
    assert both.exit_code == 2
    assert "--batch and --batch-size are one option (--batch is its old spelling): give --batch-size" in both.output
    default = CliRunner().invoke(app, ["bench", model, "--batch-size", "1,32", "--batch", "8"])
    assert default.exit_code == 2, "a new spelling given its default value still counts as given"
    demo = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "a"), "-o", str(tmp_path / "b")])
    assert demo.exit_code == 2 and "--out and --out-dir are one option" in demo.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_prune_help_groups_its_options_into_panels():
    from test_cli_errors import run

    result = run("prune", "--help")
    assert result.exit_code == 0
    panels = ["Selection", "Data", "Fine-tuning", "Schedule", "Structured methods", "Output"]
    positions = [result.output.find(f"─ {panel} ─") for panel in panels]
    assert all(position > 0 for position in positions), result.output
    data = result.output[positions[1] :]
    assert "--val-split" in data.split("─ Fine-tuning ─")[0], "each option under its panel"


def test_help_panels_refuse_an_option_the_command_does_not_have():

    from onnxprune.cli.common import help_panels

    def command(sparsity: float = 0.5) -> None:
        """A command."""

    with pytest.raises(TypeError, match=r"does not have: \['sparsty'\]"):
        help_panels(sparsty="Selection")(command)


@pytest.mark.parametrize(
    "command, panels",
    [("finetune", ["Data", "Fine-tuning"]), ("sweep", ["Data", "Levels"]), ("sensitivity", ["Data"]),
     ("bench", ["Data", "Timing"])],
)  # fmt: skip
def test_commands_of_many_options_group_them(command, panels):
    from test_cli_errors import run

    result = run(command, "--help")
    assert result.exit_code == 0
    assert all(f"─ {panel} ─" in result.output for panel in panels), result.output
    assert "--pixel-range" in result.output.split("─ Data ─")[1]


def test_help_shows_the_defaults_of_the_options_dataclasses():
    """The defaults --help states are read from onnxprune.options (written once), and are shown at all.

    rich took "[default: 0.99]" for markup and dropped it; the defaults read "(default: ...)" now.
    """
    from onnxprune.options import SLIMMING_BN_L1, PruneOptions, TrainOptions

    shown = subprocess.run([sys.executable, "-m", "onnxprune", "prune", "--help"], capture_output=True, text=True,
                           env={"COLUMNS": "250", "TERM": "dumb", "PATH": ""})  # fmt: skip
    lines = {line.split()[1]: line for line in shown.stdout.splitlines() if line.startswith("│ --")}
    defaults = {
        "--sparsity": PruneOptions().sparsity,
        "--max-layer-sparsity": PruneOptions().max_layer_sparsity,
        "--round-to": PruneOptions().round_to,
        "--batch-size": TrainOptions().batch_size,
        "--weight-decay": f"{TrainOptions().weight_decay:g}",
        "--bn-l1": f"{SLIMMING_BN_L1:g}",
    }
    for option, value in defaults.items():
        assert f"(default: {value})" in lines[option], lines[option]
