"""The MATLAB bridge: its Python contract, the .mat file transport, and the +onnxprune package in GNU Octave."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
from conftest import REPO, shared_path

import matlab_bridge
from matlab_bridge import BridgeError

ALLOWED = (str, float, bool, np.ndarray, list)


def assert_matlab_types(result: dict):
    assert isinstance(result, dict)
    for key, value in result.items():
        assert isinstance(value, ALLOWED), (key, type(value))
        if isinstance(value, np.ndarray):
            assert value.ndim == 1 and value.dtype == np.float64, key
        if isinstance(value, list):
            assert all(isinstance(item, str) for item in value), key
        assert not isinstance(value, (np.generic, int)) or isinstance(value, bool), key


def test_import_is_instant_and_torch_free():
    code = "import sys, matlab_bridge; print('torch' in sys.modules, 'onnxruntime' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.split() == ["False", "False"]


def test_every_function_returns_only_matlab_types(fixture_model, tmp_path):
    model = str(fixture_model("matlab_alexnet_opset8"))
    assert_matlab_types(matlab_bridge.inspect(model))
    pruned = matlab_bridge.prune(model, Sparsity=0.5, Output=str(tmp_path / "p.onnx"))
    assert_matlab_types(pruned)
    assert pruned["opset"] == 8.0 and abs(pruned["sparsity"] - 0.5) < 1e-3
    assert_matlab_types(matlab_bridge.bench([model, pruned["output"]], Batch=1.0, Runs=3.0))
    images = np.random.default_rng(0).integers(0, 255, (35, 35, 3, 10)).astype(np.float64)  # H x W x C x N
    labels = np.arange(10) % 5
    evaluation = matlab_bridge.evaluate(model, Images=images, Labels=labels.astype(float))
    assert_matlab_types(evaluation)
    assert evaluation["samples"] == 10.0
    swept = matlab_bridge.sweep(model, Images=images, Labels=[str(x) for x in labels], Sparsities="0:0.5:0.5")
    assert_matlab_types(swept)
    assert swept["sparsity"].tolist() == [0.0, 0.5]


def test_evaluate_returns_the_notes_the_command_line_prints(fixture_model):
    images = np.random.default_rng(0).integers(0, 255, (35, 35, 3, 10)).astype(np.float64)  # H x W x C x N
    labels = (np.arange(10) % 5).astype(np.float64)
    evaluation = matlab_bridge.evaluate(str(fixture_model("matlab_alexnet_opset8")), Images=images, Labels=labels)
    assert_matlab_types(evaluation)
    notes = evaluation["notes"]
    assert any("raw 0-255 pixel values" in note for note in notes)  # how the samples were prepared
    assert any("near chance (20.0% for 5 classes)" in note for note in notes)  # random labels


def test_results_name_their_layers_once(fixture_model, tmp_path):
    model = str(fixture_model("matlab_alexnet_opset8"))
    results = {
        "inspect": matlab_bridge.inspect(model),
        "prune": matlab_bridge.prune(model, Sparsity=0.5, Output=str(tmp_path / "w.onnx")),
        "l1-filter": matlab_bridge.prune(model, Method="l1-filter", Sparsity=0.5, Output=str(tmp_path / "c.onnx")),
    }
    for name, result in results.items():
        assert not [key for key in result if key.startswith("layers_")], name
        assert len(result["layer_names"]) == 8, name
    assert len(results["prune"]["layer_sparsity"]) == len(results["prune"]["layer_params"]) == 8


def test_float_valued_integers_are_accepted_and_fractions_refused(fixture_model):
    model = str(fixture_model("matlab_alexnet_opset8"))
    assert matlab_bridge.bench(model, Batch=1.0, Runs=2.0)["batch"] == 1.0
    with pytest.raises(BridgeError, match="onnxprune:badInput: Runs must be a whole number"):
        matlab_bridge.bench(model, Runs=2.5)


def test_names_match_ignoring_case_and_underscores(fixture_model, tmp_path):
    model = str(fixture_model("matmul_mlp"))
    result = matlab_bridge.prune(model, sparsity=0.25, SKIP_FIRST=True, output=str(tmp_path / "x.onnx"))
    assert result["layer_sparsity"][0] == 0.0


@pytest.mark.parametrize(
    "call, identifier",
    [
        (lambda m: matlab_bridge.prune(m, Sparsiti=0.5), "onnxprune:badArgument: unknown argument 'Sparsiti'"),
        (lambda m: matlab_bridge.prune(m, Sparsity=1.5), "onnxprune:badInput: sparsity must be in"),
        (lambda m: matlab_bridge.prune("/nowhere/model.onnx"), "onnxprune:fileNotFound"),
        (
            lambda m: matlab_bridge.evaluate(m, Images=np.zeros((35, 35, 3, 2))),
            "onnxprune:badInput: Images need Labels",
        ),
        (
            lambda m: matlab_bridge.evaluate(m, Images=np.zeros((35, 35, 3, 2)), Labels=[0, 1, 2]),
            "do not match 3 labels",
        ),
    ],
)
def test_errors_come_back_as_one_readable_message(fixture_model, call, identifier):
    with pytest.raises(BridgeError) as caught:
        call(str(fixture_model("matlab_alexnet_opset8")))
    assert identifier in str(caught.value)
    assert "\n" not in str(caught.value)


def test_file_transport(fixture_model, tmp_path):
    model = str(fixture_model("matlab_alexnet_opset8"))
    scipy.io.savemat(tmp_path / "in.mat", {"Model": model, "Sparsity": 0.5, "Output": str(tmp_path / "o.onnx")})
    done = subprocess.run(
        [sys.executable, "-m", "matlab_bridge", "prune", str(tmp_path / "in.mat"), str(tmp_path / "out.mat")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = scipy.io.loadmat(tmp_path / "out.mat")
    assert out["ok"][0, 0] and out["layer_names"].dtype == object and out["layer_sparsity"].shape[1] == 1
    scipy.io.savemat(tmp_path / "bad.mat", {"Model": model, "Sparsity": 2.0})
    failed = subprocess.run(
        [sys.executable, "-m", "matlab_bridge", "prune", str(tmp_path / "bad.mat"), str(tmp_path / "err.mat")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert failed.returncode == 1
    error = scipy.io.loadmat(tmp_path / "err.mat")
    assert not error["ok"][0, 0] and str(error["error_identifier"][0]) == "onnxprune:badInput"


OCTAVE = shutil.which("octave-cli") or shutil.which("octave")


def need_octave():
    """Skip without GNU Octave, except in CI, which installs it."""
    if OCTAVE is None:
        if os.environ.get("CI"):
            pytest.fail("GNU Octave is not installed; .ci/run installs it")
        pytest.skip("GNU Octave is not installed (apt-get install octave-cli)")


def run_octave(script: str, folder, **environment) -> subprocess.CompletedProcess:
    """SCRIPT in a new Octave session in FOLDER, its preferences kept there (HOME), not in the user's."""
    command = [OCTAVE, "--no-gui", "--quiet", "--no-window-system", "--eval", script]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=folder,
                          env={**os.environ, "HOME": str(folder), **environment})  # fmt: skip


def checkout(folder):
    """A checkout in FOLDER: a copy of matlab_bridge, and a .venv/bin/python that imports that copy."""
    shutil.copytree(REPO / "matlab_bridge", folder / "matlab_bridge", ignore=shutil.ignore_patterns("__pycache__"))
    python = folder / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nPYTHONPATH="{folder}" exec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    return python


@pytest.mark.skipif(os.name == "nt", reason="the checkouts' Pythons are shell scripts")
def test_octave_names_its_python_once_per_session(fixture_model, tmp_path):
    need_octave()
    shutil.copy(fixture_model("matlab_alexnet_opset8"), tmp_path / "fixture.onnx")
    here, other = tmp_path.resolve() / "here", tmp_path.resolve() / "other"
    here_python, other_python = checkout(here), checkout(other)

    def session(remembered: str) -> list[str]:
        """The bridge's lines (and warnings) over two calls in one session, with REMEMBERED in the preferences."""
        done = run_octave(
            f"addpath('{here / 'matlab_bridge'}'); setpref('onnxprune', 'python', '{remembered}'); "
            "onnxprune.inspect('fixture.onnx'); r = onnxprune.inspect('fixture.onnx'); disp(numel(r.layer_names))",
            tmp_path,
        )
        assert done.returncode == 0 and done.stdout.rstrip().endswith("8"), done.stdout + done.stderr
        return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith(("onnxprune", "warning"))]

    assert session(str(here_python)) == [
        f"onnxprune: using Python {here_python} (from preferences; onnxprune.setup changes it)"
    ]
    # remembered from another checkout: this checkout's .venv runs this checkout's code, and the line says why
    assert session(str(other_python)) == [
        f"onnxprune: using Python {here_python} (this checkout's .venv; the remembered {other_python} runs the "
        f"onnxprune of {other}; onnxprune.setup changes it)"
    ]
    shutil.rmtree(here / ".venv")
    assert session(str(other_python)) == [
        f"onnxprune: using Python {other_python} (from preferences; onnxprune.setup changes it)",
        f"warning: this Python runs the onnxprune of {other}, not that of this package ({here}): "
        "onnxprune.setup('Python', ...) with this checkout's Python",
    ]


@pytest.mark.slow
def test_octave_package_end_to_end(fixture_model, tmp_path):
    need_octave()
    from onnxprune.workbench.data import load_data

    mnist = load_data(shared_path("data/mnist")).subset(np.arange(300))
    scipy.io.savemat(tmp_path / "mnist.mat", {"X": mnist.images[..., 0].transpose(1, 2, 0), "Y": mnist.labels})
    shutil.copy(fixture_model("matlab_alexnet_opset8"), tmp_path / "fixture.onnx")
    environment = {
        **os.environ,
        "HOME": str(tmp_path),  # Octave keeps its preferences (onnxprune.setup's Python) here, not in the user's
        "ONNXPRUNE_PYTHON": sys.executable,
        "BRIDGE_DIR": str(REPO / "matlab_bridge"),
        "WORK_DIR": str(tmp_path),
        "CORA": str(shared_path("models/matlab/cora_mnist_point.onnx")),
        "NLN": str(shared_path("models/matlab/nln_logsig_200_100_50.onnx")),
    }
    done = subprocess.run(
        [OCTAVE, "--no-gui", "--quiet", "--no-window-system", str(REPO / "tests" / "octave" / "test_bridge.m")],
        capture_output=True, text=True, timeout=600, env=environment, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OCTAVE TESTS PASSED" in done.stdout
    # long work shows progress in the command window while it runs: a line per round and per epoch
    assert "round 2/2: finetune" in done.stdout and "epoch 1: loss" in done.stdout
    # the Python is named once in the session, with the path onnxprune.setup was given
    assert done.stdout.count("onnxprune: using Python") == 1
    assert f"onnxprune: using Python {sys.executable} (from preferences; onnxprune.setup changes it)" in done.stdout


def test_every_cli_command_has_its_bridge_function_accepting_every_option(fixture_model):
    from typer.main import get_command

    from matlab_bridge import commands
    from onnxprune.cli import app

    cli = get_command(app).commands
    assert set(cli) - {"demo"} == set(matlab_bridge.FUNCTIONS)
    for name in matlab_bridge.FUNCTIONS:
        accepted = {commands._normalise(n) for n in commands.accepted_names(name)}
        for parameter in cli[name].params:
            if parameter.param_type_name == "option" and parameter.name not in ("as_json", "help"):
                if parameter.hidden:  # an old spelling: accepted (with the CLI's note), not listed
                    assert commands._normalise(parameter.name) in commands.options_of(name)
                    assert commands._normalise(parameter.name) not in accepted
                    continue
                assert commands._normalise(parameter.name) in accepted, f"{name}: the bridge misses --{parameter.name}"
    with pytest.raises(BridgeError, match="unknown argument 'Epochz'; valid names: .*Epochs"):
        matlab_bridge.finetune(str(fixture_model("matlab_alexnet_opset8")), Epochz=1)


def test_flatten_gives_matlab_fields_and_column_tables():
    from matlab_bridge.commands import flatten

    fields = flatten({"rounds": [{"round": 1, "top1": 0.5, "layer_sparsity": {"a": 0.1}, "notes": ["a", "b"]},
                                 {"round": 2, "top1": None, "notes": []}],
                      "chosen": None, "trade_off": {"sparsity": 0.8}, "notes": ["x"], "0.5": 1})  # fmt: skip
    assert fields["rounds_round"].tolist() == [1.0, 2.0] and np.isnan(fields["rounds_top1"][1])
    assert fields["rounds_notes"] == ["a; b", ""]
    assert "rounds_layer_sparsity" not in fields and fields["trade_off_sparsity"] == 0.8
    assert fields["notes"] == ["x"] and np.isnan(fields["chosen"]) and fields["x0_5"] == 1
    layers = flatten({"layers": [{"name": "conv1", "ratio": 0.5}], "combined": {"layers": [{"name": "fc"}]}})
    assert sorted(layers) == ["combined_layer_names", "layer_names", "layer_ratio"]
    assert layers["layer_names"] == ["conv1"] and layers["layer_ratio"].tolist() == [0.5]


@pytest.fixture(scope="module")
def mnist_arrays():
    from onnxprune.workbench.data import load_data

    mnist = load_data(shared_path("data/mnist"))
    train = mnist.subset(np.arange(0, 10000, 25))  # 400 images, every class (MNIST's file is not grouped)
    return train.images[..., 0].transpose(1, 2, 0).astype(np.float64), train.labels.astype(np.float64)


@pytest.mark.slow
def test_imp_with_arrays_from_matlab_returns_the_round_table_and_figures(mnist_arrays, tmp_path):
    images, labels = mnist_arrays  # H x W x N, as MATLAB holds them
    model = str(shared_path("models/matlab/nln_logsig_200_100_50.onnx"))
    result = matlab_bridge.prune(
        model, Sparsity=0.8, Images=images, Labels=labels, FineTuneEpochs=1.0, Iterations=2.0,
        Scope="lamp", OutDir=str(tmp_path / "run"), Output=str(tmp_path / "pruned.onnx"),
    )  # fmt: skip
    assert_matlab_types(result)
    assert result["rounds_round"].tolist() == [1.0, 2.0]
    assert result["rounds_target_sparsity"][-1] == pytest.approx(0.8)
    assert result["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert 0.0 <= result["final_top1"] <= 1.0 and result["output"] == str(tmp_path / "pruned.onnx")
    assert all(os.path.exists(figure) for figure in result["figures"]) and len(result["figures"]) == 2
    written = matlab_bridge.inspect(result["output"])
    zeros = np.sum(written["layer_zeros"]) / np.sum(written["layer_params"])
    assert zeros == pytest.approx(0.8, abs=1e-3), "the sparsity counted in the written file"
    assert not list(tmp_path.glob("**/*.npz")) and not any("onnxprune-matlab-" in str(p) for p in tmp_path.iterdir())


@pytest.mark.slow
def test_taylor_compact_quantize_sensitivity_finetune_pack_plot_from_matlab(fixture_model, tmp_path):
    model = str(fixture_model("matlab_alexnet_opset8"))
    images = np.random.default_rng(0).integers(0, 255, (35, 35, 3, 40)).astype(np.float64)  # H x W x C x N
    labels = (np.arange(40) % 5).astype(np.float64)
    data = {"Images": images, "Labels": labels}
    taylor = matlab_bridge.prune(model, Method="taylor", Sparsity=0.3, **data, Output=str(tmp_path / "taylor.onnx"),
                                 BatchesPerRound=2.0, OutDir=str(tmp_path / "taylor"))  # fmt: skip
    assert_matlab_types(taylor)
    assert taylor["mode"] == "schedule" and taylor["sparsity"] > 0.2
    masked = matlab_bridge.prune(model, Method="l1-filter", Sparsity=0.5, Output=str(tmp_path / "l1.onnx"))
    compacted = matlab_bridge.compact(model, Output=str(tmp_path / "dense_compacted.onnx"))
    assert_matlab_types(compacted) and compacted["max_abs_diff"] < 1e-4
    quantized = matlab_bridge.quantize(masked["output"], Output=str(tmp_path / "int8.onnx"), **data)
    assert_matlab_types(quantized)
    assert (
        quantized["zeros_after"] >= quantized["zeros_before"] and quantized["bytes_after"] < quantized["bytes_before"]
    )
    assert matlab_bridge.inspect(quantized["output"])["quantized"] is True
    ratios = matlab_bridge.sensitivity(model, **data, Sparsities=[0.0, 0.5, 0.9], Target=0.5,
                                       OutDir=str(tmp_path / "sens"))  # fmt: skip
    assert_matlab_types(ratios)
    assert os.path.exists(ratios["ratios_file"]) and len(ratios["layer_names"]) == len(ratios["layer_ratio"]) == 8
    assert not [key for key in ratios if key.startswith("layers_")]
    tuned = matlab_bridge.finetune(masked["output"], **data, Epochs=1.0, Augment=False,
                                   Output=str(tmp_path / "ft.onnx"))  # fmt: skip
    assert_matlab_types(tuned)
    assert tuned["epochs_epoch"].tolist() == [1.0] and os.path.exists(tuned["output"])
    packed = matlab_bridge.pack(masked["output"], Output=str(tmp_path / "m.onnxz"))
    restored = matlab_bridge.unpack(packed["output"], Output=str(tmp_path / "back.onnx"))
    assert packed["bytes"] < packed["bytes_before"] and os.path.exists(restored["output"])
    figure = matlab_bridge.plot(masked["output"], Kind="layers", Output=str(tmp_path / "layers.png"))
    assert figure["figure"] == str(tmp_path / "layers.png") and os.path.exists(figure["figure"])
    with pytest.raises(BridgeError, match="onnxprune:badInput: --momentum has no effect here"):
        matlab_bridge.finetune(masked["output"], **data, Optimizer="adam", Momentum=0.9,
                               Output=str(tmp_path / "x.onnx"))  # fmt: skip
    assert not (tmp_path / "x.onnx").exists()
