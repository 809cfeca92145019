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


@pytest.mark.slow
def test_octave_package_end_to_end(fixture_model, tmp_path):
    if OCTAVE is None:
        if os.environ.get("CI"):
            pytest.fail("GNU Octave is not installed; .ci/run installs it")
        pytest.skip("GNU Octave is not installed (apt-get install octave-cli)")
    from onnxprune.workbench.data import load_data

    mnist = load_data(shared_path("data/mnist")).subset(np.arange(300))
    scipy.io.savemat(tmp_path / "mnist.mat", {"X": mnist.images[..., 0].transpose(1, 2, 0), "Y": mnist.labels})
    shutil.copy(fixture_model("matlab_alexnet_opset8"), tmp_path / "fixture.onnx")
    environment = {
        **os.environ,
        "ONNXPRUNE_PYTHON": sys.executable,
        "BRIDGE_DIR": str(REPO / "matlab_bridge"),
        "WORK_DIR": str(tmp_path),
        "CORA": str(shared_path("models/matlab/cora_mnist_point.onnx")),
    }
    done = subprocess.run(
        [OCTAVE, "--no-gui", "--quiet", "--no-window-system", str(REPO / "tests" / "octave" / "test_bridge.m")],
        capture_output=True, text=True, timeout=600, env=environment, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OCTAVE TESTS PASSED" in done.stdout
