"""Faults of the process and of the machine, in real processes: kill -9, Ctrl-C, a full disk, a
read-only folder, two runs in one folder. Nothing is lost, nothing half-written, the input untouched.

A fault is injected into a real `onnxprune` process at a chosen point: a small launcher patches
one library function to send the process a real signal (SIGKILL, SIGINT) when it is reached, then
runs the command line as a user would. Disk full is a file-size limit (RLIMIT_FSIZE: writes past
it fail with EFBIG, as they fail with ENOSPC on a full disk).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import fixtures
import pytest

# Runs `onnxprune ARGS` after patching MODULE.ATTRIBUTE (a function, or Class.method) so that its CALL-th
# call sends SIGNAL to the process, BEFORE or AFTER running. argv: module attribute call signal when -- args
LAUNCHER = """
import importlib, os, signal, sys
module_name, attribute, call, signal_name, when = sys.argv[1:6]
owner = importlib.import_module(module_name)
*path, name = attribute.split(".")
for part in path:
    owner = getattr(owner, part)
original = getattr(owner, name)
calls = [0]
def patched(*args, **kwargs):
    calls[0] += 1
    hit = calls[0] == int(call)
    if hit and when == "before":
        os.kill(os.getpid(), getattr(signal, signal_name))
    result = original(*args, **kwargs)
    if hit and when == "after":
        os.kill(os.getpid(), getattr(signal, signal_name))
    return result
setattr(owner, name, patched)
from onnxprune.cli import main
sys.argv = ["onnxprune", *sys.argv[7:]]
main()
"""


def onnxprune(*args, fault=None, limit_bytes=None, timeout=300):
    """Run the CLI in a new process; `fault` = (module, attribute, call, signal name, "before" or "after")."""
    preexec = None
    if limit_bytes is not None:

        def preexec():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    if fault is None:
        command = [sys.executable, "-m", "onnxprune", *map(str, args)]
    else:
        command = [sys.executable, "-c", LAUNCHER, *map(str, fault), "--", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, preexec_fn=preexec)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line(done, *fragments, code=2):
    """Exit `code` and one error line, the last on stderr (progress lines may come before it), no traceback."""
    assert done.returncode == code, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], done.stderr
    lines = errors
    assert "Traceback" not in done.stdout + done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def leftovers(folder: Path) -> list[str]:
    """Temporary files a write left behind (there must be none)."""
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A MATLAB-style model and an image folder to fine-tune it on."""
    root = tmp_path_factory.mktemp("lab")
    model = fixtures.save(fixtures.matlab_alexnet(opset=8), root / "model.onnx")
    data = fixtures.image_folder(root / "images", classes=("a", "b", "c", "d", "e"), per_class=12, size=(35, 35))
    return model, data


IMP = ("--sparsity", "0.8", "--finetune-epochs", "2", "--iterations", "3", "--batch-size", "8", "--seed", "0")


@pytest.mark.slow
@pytest.mark.parametrize(
    "where, fault",
    [
        ("during fine-tuning", ("onnxprune.workbench.train", "_train_epoch", 3, "SIGKILL", "before")),
        # round 2's checkpoint is written to its temporary file, not yet renamed into place
        ("during a checkpoint write", ("onnxprune.graph.storage", "write_model", 2, "SIGKILL", "after")),
    ],
)
def test_kill_9_then_resume_gives_the_identical_model(lab, tmp_path, where, fault):
    model, data = lab
    before = digest(model)
    reference = onnxprune("prune", model, "--data", data, *IMP, "--out-dir", tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr
    killed = onnxprune("prune", model, "--data", data, *IMP, "--out-dir", tmp_path / "run", fault=fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert len(results["extra"]["rounds"]) == 1 and results["extra"].get("final") is None, "round 1 only"
    resumed = onnxprune("prune", model, "--data", data, *IMP, "--out-dir", tmp_path / "run", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    final = json.loads((tmp_path / "run" / "results.json").read_text())["extra"]["final"]["file"]
    expected = json.loads((tmp_path / "reference" / "results.json").read_text())["extra"]["final"]["file"]
    assert final == expected
    assert digest(tmp_path / "run" / final) == digest(tmp_path / "reference" / expected), f"killed {where}"
    assert leftovers(tmp_path) == [], "resume removes what the killed write left"
    assert digest(model) == before


@pytest.mark.slow
@pytest.mark.parametrize(
    "command, fault",
    [
        (("prune", "--sparsity", "0.5", "--finetune-epochs", "3", "--batch-size", "8"),
         ("onnxprune.workbench.train", "_train_epoch", 2, "SIGINT", "before")),
        (("prune", "--sparsity", "0.5"), ("onnxprune.graph.storage", "write_model", 1, "SIGINT", "after")),
        (("finetune", "--epochs", "3", "--batch-size", "8"),
         ("onnxprune.workbench.train", "_train_epoch", 2, "SIGINT", "before")),
        (("sweep", "--sparsities", "0:0.1:0.9"), ("onnxprune.measure.sweep", "trade_off", 1, "SIGINT", "before")),
        (("quantize",), ("onnxprune.measure.quantize", "_Calibration.get_next", 2, "SIGINT", "before")),
    ],
    ids=["prune-finetuning", "prune-writing", "finetune", "sweep", "quantize"],
)  # fmt: skip
def test_ctrl_c_is_one_line_exit_130_nothing_half_written(lab, tmp_path, command, fault):
    model, data = lab
    before = digest(model)
    output = tmp_path / "out" / "result.onnx"
    output.parent.mkdir()
    name, *options = command
    arguments = [name, model, "--data", data, *options]
    arguments += ["--out-dir", output.parent / "sweep"] if name == "sweep" else ["-o", output]
    done = onnxprune(*arguments, fault=fault)
    one_line(done, "interrupted", code=130)
    assert not output.exists() and leftovers(tmp_path) == []
    if name == "sweep":  # issue 27: the measured levels are kept, whole files, for --resume
        assert "10 of 10 levels written" in done.stderr and "--resume" in done.stderr
        assert len(json.loads((output.parent / "sweep" / "results.json").read_text())["rows"]) == 10
    else:
        assert not (output.parent / "sweep").exists()
    assert digest(model) == before


@pytest.mark.slow
def test_disk_full_while_writing_is_one_line_and_leaves_nothing(tmp_path):
    model = Path(__file__).resolve().parents[1] / "models" / "vgg13_bn_w025_cifar10.onnx"  # 2.4 MB
    output = tmp_path / "pruned.onnx"
    done = onnxprune("prune", model, "--sparsity", "0.5", "-o", output, limit_bytes=1_000_000)
    one_line(done, "cannot write", "File too large", "nothing was written")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_read_only_output_folder_is_one_line(lab, tmp_path):
    model, _ = lab
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # root ignores permissions: /sys is a folder nobody may create files in
        folder = Path("/sys")
    done = onnxprune("prune", model, "--sparsity", "0.5", "-o", folder / "pruned.onnx")
    one_line(done, "cannot write", str(folder / "pruned.onnx"))
    assert not (folder / "pruned.onnx").exists()


def test_output_that_is_a_folder_is_one_line(lab, tmp_path):
    model, _ = lab
    done = onnxprune("prune", model, "--sparsity", "0.5", "-o", tmp_path)
    one_line(done, "is a folder")


@pytest.mark.slow
def test_a_second_run_in_the_same_out_dir_is_refused_and_the_first_finishes(lab, tmp_path):
    model, data = lab
    folder = tmp_path / "run"
    arguments = [sys.executable, "-m", "onnxprune", "prune", str(model), "--data", str(data), "--sparsity", "0.5",
                 "--finetune-epochs", "40", "--batch-size", "8", "--out-dir", str(folder)]  # fmt: skip
    first = subprocess.Popen(arguments, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / ".run.lock"
    deadline = time.monotonic() + 120
    while not (folder / "run.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert lock.exists(), "the running run holds the folder's lock"
    second = onnxprune("prune", model, "--data", data, "--sparsity", "0.5", "--finetune-epochs", "40",
                       "--batch-size", "8", "--out-dir", folder, "--resume")  # fmt: skip
    one_line(second, "is in use by another run", f"process {first.pid}")
    _, errors = first.communicate(timeout=600)
    assert first.returncode == 0, errors
    assert json.loads((folder / "results.json").read_text())["extra"]["final"]["file"].startswith("omp_")
    assert not lock.exists()


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path):
    from onnxprune.workflow.schedule import run_lock

    folder = tmp_path / "run"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".run.lock").write_text(str(dead.pid))  # a process that no longer exists
    with run_lock(folder):
        assert (tmp_path / ".run.lock").read_text() == str(os.getpid())
    assert not (tmp_path / ".run.lock").exists()


@pytest.mark.slow
def test_a_model_over_2_gb_with_external_data_is_read_pruned_and_written_with_external_data(tmp_path):
    """Protobuf cannot serialize 2 GB: torch's exporter writes such models with an .onnx.data file."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import onnxprune

    size = 16500  # two 16500 x 16500 float32 layers: 1.09 GB each, 2.18 GB in all
    tensors = []
    for name in ("fc1", "fc2"):
        weight = np.empty((size, size), dtype=np.float32)
        weight.reshape(-1)[:] = np.tile(np.linspace(-0.01, 0.01, 9973, dtype=np.float32), size * size // 9973 + 1)[
            : size * size
        ]  # cheap to make, every magnitude present
        tensors += [numpy_helper.from_array(weight, f"{name}_W"), numpy_helper.from_array(np.zeros(size, np.float32),
                                                                                          f"{name}_B")]  # fmt: skip
        del weight
    nodes = [helper.make_node("Gemm", ["x", "fc1_W", "fc1_B"], ["h"], name="fc1", transB=1),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "fc2_W", "fc2_B"], ["y"], name="fc2", transB=1)]  # fmt: skip
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", size])])  # fmt: skip
    graph.initializer.extend(tensors)
    del tensors
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    source = tmp_path / "big.onnx"
    onnx.save_model(model, str(source), save_as_external_data=True, location="big.onnx.data")
    del model, graph
    assert (tmp_path / "big.onnx.data").stat().st_size > 2**31
    pruned = onnxprune.prune(onnxprune.load(source), 0.5, keep_masks=False)
    onnxprune.save(pruned, tmp_path / "out.onnx", release=True)
    assert (tmp_path / "out.onnx.data").stat().st_size > 2**31, "the output keeps its weights in a data file"
    assert (tmp_path / "out.onnx").stat().st_size < 10_000
    written = onnxprune.load(tmp_path / "out.onnx")
    for layer in written.layers:
        assert float((written.weight_array(layer) == 0).mean()) == pytest.approx(0.5, abs=1e-6)
    assert leftovers(tmp_path) == []
