"""No option is silently ignored: every option of `prune`, mode by mode, changes the result or is refused.

The options are read from the CLI's own definition, so a new option without a probe here fails
the test. Each probe runs in the two modes of `prune` (one-shot without data; a schedule with
data and fine-tuning) against the same run without it: the written model, the files produced or
the printed form must change, or the command must refuse in one line that names the option.
"""

from __future__ import annotations

import hashlib
import json

import fixtures
import numpy as np
import onnx
import pytest
import typer
from test_cli_errors import run

from onnxprune.cli import app

MODES = ("one-shot", "schedule")

# option -> arguments that give it (probes replace nothing in the base command unless they say so)
PROBES = {
    "--sparsity": ["--sparsity", "0.7"],
    "--output": ["--output", "{tmp}/elsewhere.onnx"],
    "--method": ["--method", "l1-filter"],
    "--scope": ["--scope", "global"],
    "--config": ["--config", "{tmp}/ratios.yaml"],
    "--skip-first": ["--skip-first"],
    "--skip-last": ["--skip-last"],
    "--max-layer-sparsity": ["--max-layer-sparsity", "0.6"],
    "--sparse-storage": ["--sparse-storage"],
    "--json": ["--json"],
    "--data": ["--data", "{tmp}/other.npz"],
    "--val": ["--val", "{tmp}/other.npz"],
    "--val-split": ["--val-split", "0.5"],
    "--finetune-epochs": ["--finetune-epochs", "2"],
    "--iterations": ["--iterations", "2"],
    "--schedule": ["--schedule", "cubic"],
    "--rewind": ["--rewind"],
    "--out-dir": ["--out-dir", "{tmp}/other_run"],
    "--batch-size": ["--batch-size", "4"],
    "--lr": ["--lr", "0.05"],
    "--weight-decay": ["--weight-decay", "0.01"],
    "--label-smoothing": ["--label-smoothing", "0.2"],
    "--device": ["--device", "cuda"],
    "--limit": ["--limit", "16"],
    "--first": ["--first", "16"],
    "--pixel-range": ["--pixel-range", "0-1"],
    "--mean": ["--mean", "100,110,120"],
    "--std": ["--std", "50,60,70"],
    "--flatten": ["--flatten", "column"],
    "--seed": ["--seed", "3"],
    "--mask-only": ["--mask-only"],
    "--batches-per-round": ["--batches-per-round", "3"],
    "--max-per-round": ["--max-per-round", "3"],
    "--round-to": ["--round-to", "1"],
    "--max-drop": ["--max-drop", "0.05"],
    "--bn-l1": ["--bn-l1", "0.001"],
    "--sparsity-epochs": ["--sparsity-epochs", "1"],
    "--sparsities": ["--sparsities", "0.3,0.6"],
    "--distill-weight": ["--distill-weight", "0.5"],
    "--lr-schedule": ["--lr-schedule", "continue"],
    "--optimizer": ["--optimizer", "sgd"],  # the fixture takes raw 0-255 pixels: adam is its default
    "--distill-temperature": ["--distill-temperature", "2"],
    "--reconstruct": ["--reconstruct"],
    "--no-reconstruct": ["--no-reconstruct"],
    # with the base command's magnitude these are refused; with a filter method tests/test_budget.py
    "--speedup": ["--speedup", "1.5"],
    "--target-macs": ["--target-macs", "0.5"],
    "--bench-batch-size": ["--bench-batch-size", "4"],
    "--threads": ["--threads", "1"],
}
# options whose effect needs a state no single run has; each is tested where named
ELSEWHERE = {
    "--resume": "tests/test_train.py::test_resume_gives_the_same_model (an interrupted run continued)",
    "--help": "typer's own",
}
# a probe that conflicts with the base command drops these base arguments
DROPS = {"--max-drop": ["--sparsity"]}


def option_names(command: str) -> list[str]:
    click_command = typer.main.get_command(app).commands[command]
    return [param.opts[0] for param in click_command.params if param.param_type_name == "option"]


def test_every_prune_option_has_a_probe():
    assert sorted(set(option_names("prune")) - set(PROBES) - set(ELSEWHERE)) == []


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, fixture_model):
    folder = tmp_path_factory.mktemp("options")
    model = folder / "alexnet.onnx"
    model.write_bytes(fixture_model("matlab_alexnet_opset8").read_bytes())
    for name, seed in (("d.npz", 0), ("other.npz", 1)):
        images, labels = fixtures.class_images(32, size=35, classes=5, seed=seed)
        np.savez(folder / name, x=images, y=labels)
    (folder / "ratios.yaml").write_text("default: 0.3\n")
    return folder


def base_args(mode: str, tmp) -> list[str]:
    args = ["prune", f"{tmp}/alexnet.onnx", "--sparsity", "0.8", "-o", f"{tmp}/out.onnx"]
    if mode == "schedule":
        args += ["--data", f"{tmp}/d.npz", "--finetune-epochs", "1", "--batch-size", "8", "--out-dir", f"{tmp}/run"]
    return args


INPUTS = ("alexnet.onnx", "d.npz", "other.npz", "ratios.yaml")


def outcome(args: list[str], tmp) -> tuple:
    """What a run produced: exit code, the weights written, the files made, whether it printed JSON."""
    result = run(*args)
    made = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file() and p.name not in INPUTS)
    weights = hashlib.sha256()
    for name in made:
        if name.endswith(".onnx"):
            model = onnx.load(str(tmp / name))
            for tensor in [*model.graph.initializer, *model.graph.sparse_initializer]:
                weights.update(tensor.SerializeToString())
    try:
        json.loads(result.stdout)
        printed_json = True
    except ValueError:
        printed_json = False
    return result, (result.exit_code, weights.hexdigest(), tuple(made), printed_json)


def clean(tmp) -> None:
    for path in sorted(tmp.rglob("*"), reverse=True):
        if path.name in INPUTS:
            continue
        path.rmdir() if path.is_dir() else path.unlink()


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_every_prune_option_changes_the_result_or_is_refused(mode, workspace):
    tmp = workspace
    clean(tmp)
    base = base_args(mode, tmp)
    result, reference = outcome(base, tmp)
    assert result.exit_code == 0, result.output
    silent = []
    for option, probe in PROBES.items():
        clean(tmp)
        args = list(base)
        for dropped in DROPS.get(option, []):
            position = args.index(dropped)
            del args[position : position + 2]
        if option in ("--output",):
            position = args.index("-o")
            del args[position : position + 2]
        args += [part.replace("{tmp}", str(tmp)) for part in probe]
        result, got = outcome(args, tmp)
        if result.exit_code == 2:
            lines = [line for line in result.stderr.splitlines() if line.strip()]  # progress lines may come first
            errors = [line for line in lines if line.startswith("error: ")]
            assert len(errors) == 1 and lines[-1] == errors[0], (option, result.stderr)
            assert option in errors[0] or option == "--device", (option, errors[0])  # cuda: "no CUDA GPU"
            continue
        assert result.exit_code == 0, (option, mode, result.output)
        if got == reference:
            silent.append(option)
    assert silent == [], f"accepted in {mode} mode without any effect: {silent}"


def test_with_data_output_sparse_storage_and_json_all_act(workspace, tmp_path):
    """Issue 14: with --data, -o was ignored, and --sparse-storage and --json with it."""
    output = tmp_path / "pruned.onnx"
    args = ["prune", workspace / "alexnet.onnx", "--sparsity", "0.8", "--data", workspace / "d.npz",
            "--finetune-epochs", "1", "--batch-size", "8", "--out-dir", tmp_path / "run", "-o", output,
            "--sparse-storage", "--json"]  # fmt: skip
    result = run(*args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["mode"] == "schedule" and summary["output"] == str(output)
    assert output.exists() and summary["sparse_initializers"], "the final model, stored sparse, at -o"
    final = next((tmp_path / "run").glob("omp_unstructured_0.80_acc_*.onnx"))
    assert output.stat().st_size < final.stat().st_size
    assert len(onnx.load(str(output)).graph.sparse_initializer) == len(summary["sparse_initializers"])


def test_hybrid_recipe_honours_the_options_it_accepts_and_refuses_the_rest(workspace, tmp_path):
    """Issue 14: a recipe ignored --config, --skip-first/--skip-last, --max-layer-sparsity and --mask-only."""
    import onnxprune

    recipe = ["prune", workspace / "alexnet.onnx", "--method", "l1-filter:0.3,magnitude:0.8"]
    plain = run(*recipe, "-o", tmp_path / "plain.onnx", "--json")
    skipped = run(*recipe, "-o", tmp_path / "skip.onnx", "--skip-first", "--json")
    assert plain.exit_code == 0 and skipped.exit_code == 0, plain.output + skipped.output
    first_plain = onnxprune.load(tmp_path / "plain.onnx").layers[0]
    first_skipped = onnxprune.load(tmp_path / "skip.onnx").layers[0]
    assert first_plain.shape[0] < 16 and first_skipped.shape[0] == 16, "the first layer kept whole"
    weights = onnxprune.load(tmp_path / "skip.onnx").weight_array(first_skipped)
    assert np.count_nonzero(weights) == weights.size, "and dense"
    free = run(*recipe, "--scope", "global", "-o", tmp_path / "free.onnx", "--json")
    capped = run(*recipe, "--scope", "global", "--max-layer-sparsity", "0.85", "-o", tmp_path / "cap.onnx", "--json")
    assert free.exit_code == 0 and capped.exit_code == 0, free.output + capped.output
    assert max(layer["sparsity"] for layer in json.loads(free.stdout)["layers"]) > 0.85
    assert max(layer["sparsity"] for layer in json.loads(capped.stdout)["layers"]) <= 0.85 + 1e-6
    refused = run(*recipe, "--config", workspace / "ratios.yaml", "-o", tmp_path / "cfg.onnx")
    assert refused.exit_code == 2 and "--config has no effect here: a hybrid recipe" in refused.stderr


def test_hybrid_recipe_runs_with_data(workspace, tmp_path):
    """Issue 14: with --data a recipe was refused as 'unknown pruning method'."""
    output = tmp_path / "hybrid.onnx"
    result = run("prune", workspace / "alexnet.onnx", "--method", "l1-filter:0.3,magnitude:0.8", "--data",
                 workspace / "d.npz", "--finetune-epochs", "1", "--batch-size", "8", "--out-dir", tmp_path / "run",
                 "-o", output, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert output.exists() and next((tmp_path / "run").glob("omp_hybrid_*.onnx"))
    assert summary["rounds"][0]["sparsity"] > 0.8, "filters removed, then 80% of the weights left"
    iterative = run("prune", workspace / "alexnet.onnx", "--method", "l1-filter:0.3,magnitude:0.8", "--data",
                    workspace / "d.npz", "--iterations", "3", "-o", tmp_path / "x.onnx")  # fmt: skip
    assert iterative.exit_code == 2 and "--iterations: a hybrid recipe runs its stages once" in iterative.stderr


def test_a_run_has_one_sparsity_number_in_its_names(workspace, tmp_path):
    """Issue 19: the folder was named after the target (..._omp_0.40), the file after the weights removed (0.37)."""
    result = run("prune", workspace / "alexnet.onnx", "--method", "l1-filter", "--sparsity", "0.4", "--data",
                 workspace / "d.npz", "--finetune-epochs", "1", "--batch-size", "8",
                 "-o", tmp_path / "f.onnx")  # fmt: skip
    assert result.exit_code == 0, result.output
    folder = tmp_path / "alexnet_omp_0.40"
    assert [p.name.split("_acc_")[0] for p in folder.glob("omp_*.onnx")] == ["omp_filter_0.40"]
