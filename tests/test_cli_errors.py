"""Bad input: one line, exit code 2, no traceback, input unchanged, no partial output."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from onnxprune.cli import app


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def alexnet(fixture_model, tmp_path):
    """A private copy of a fixture, so a test may check it is unchanged."""
    path = tmp_path / "alexnet.onnx"
    path.write_bytes(fixture_model("matlab_alexnet_opset8").read_bytes())
    return path


def only_files(folder, *expected):
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected)


def test_missing_file(tmp_path):
    result = run("prune", tmp_path / "absent.onnx", "-o", tmp_path / "out.onnx")
    assert_one_line_error(result, "absent.onnx", "no such file")
    only_files(tmp_path)


def test_missing_file_inspect(tmp_path):
    assert_one_line_error(run("inspect", tmp_path / "absent.onnx"), "no such file")


def test_text_file_named_onnx(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("these are my notes, not a network\n" * 20)
    result = run("prune", path, "-o", tmp_path / "out.onnx")
    assert_one_line_error(result, "notes.onnx")
    only_files(tmp_path, "notes.onnx")


def test_truncated_onnx(alexnet, tmp_path):
    data = alexnet.read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    result = run("prune", truncated, "-o", tmp_path / "out.onnx")
    assert_one_line_error(result, "truncated.onnx", "truncated")
    only_files(tmp_path, "alexnet.onnx", "truncated.onnx")


def _with_node(node, opset_imports, tmp_path, name):
    weight = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "conv_W")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "conv_W"], ["conv"], name="conv"), node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=opset_imports)
    path = tmp_path / name
    onnx.save_model(model, str(path))
    return path


def test_matlab_placeholder_op_is_named(tmp_path):
    node = helper.make_node("Placeholder", ["conv"], ["y"], name="customLayer_1", domain="com.mathworks")
    opsets = [helper.make_opsetid("", 13), helper.make_opsetid("com.mathworks", 1)]
    path = _with_node(node, opsets, tmp_path, "custom.onnx")
    result = run("prune", path, "-o", tmp_path / "out.onnx")
    assert_one_line_error(result, "customLayer_1", "com.mathworks::Placeholder")
    only_files(tmp_path, "custom.onnx")


def test_standard_op_without_converter_is_named(tmp_path):
    node = helper.make_node("Hardmax", ["conv"], ["y"], name="hardmax_node", axis=1)
    path = _with_node(node, [helper.make_opsetid("", 13)], tmp_path, "hardmax.onnx")
    assert_one_line_error(run("prune", path, "-o", tmp_path / "out.onnx"), "hardmax_node", "Hardmax")


def test_model_without_prunable_layer(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Softmax", ["r"], ["y"], name="sm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
    )
    path = tmp_path / "plain.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    assert_one_line_error(run("prune", path, "-o", tmp_path / "out.onnx"), "no prunable layer")
    only_files(tmp_path, "plain.onnx")


@pytest.mark.parametrize("sparsity", ["1.5", "1.0", "-0.1", "nan"])
def test_sparsity_out_of_range(alexnet, tmp_path, sparsity):
    before = alexnet.read_bytes()
    result = run("prune", alexnet, "--sparsity", sparsity, "-o", tmp_path / "out.onnx")
    assert_one_line_error(result, "sparsity must be in [0, 1)")
    assert alexnet.read_bytes() == before
    only_files(tmp_path, "alexnet.onnx")


def test_output_equal_to_input(alexnet, tmp_path):
    before = alexnet.read_bytes()
    result = run("prune", alexnet, "--sparsity", "0.5", "-o", alexnet)
    assert_one_line_error(result, "is the input file")
    assert alexnet.read_bytes() == before
    only_files(tmp_path, "alexnet.onnx")


def test_output_in_missing_folder(alexnet, tmp_path):
    result = run("prune", alexnet, "-o", tmp_path / "nowhere" / "out.onnx")
    assert_one_line_error(result, "does not exist")


def test_yaml_with_unknown_layer_lists_valid_ones(alexnet, tmp_path):
    config = tmp_path / "ratios.yaml"
    config.write_text("conv1: 0.5\nconv9: 0.7\n")
    before = alexnet.read_bytes()
    result = run("prune", alexnet, "--config", config, "-o", tmp_path / "out.onnx")
    assert_one_line_error(result, "conv9", "conv1, conv2, conv3, conv4, conv5, fc6, fc7, fc8")
    assert alexnet.read_bytes() == before
    only_files(tmp_path, "alexnet.onnx", "ratios.yaml")


@pytest.mark.parametrize(
    "content, fragment",
    [("conv1: 1.2\n", "sparsity of 'conv1'"), ("- conv1\n", "expected a mapping"), ("conv1: [\n", "not valid YAML")],
)
def test_bad_yaml_values(alexnet, tmp_path, content, fragment):
    config = tmp_path / "ratios.yaml"
    config.write_text(content)
    assert_one_line_error(run("prune", alexnet, "--config", config, "-o", tmp_path / "out.onnx"), fragment)


def test_unknown_scope_and_method(alexnet, tmp_path):
    assert_one_line_error(run("prune", alexnet, "--scope", "planet", "-o", tmp_path / "o.onnx"), "scope must be one of")
    assert_one_line_error(
        run("prune", alexnet, "--method", "dice", "-o", tmp_path / "o.onnx"),
        "known methods: greedy, l1-filter, l2-filter, magnitude, neuron, slimming, sss, synflow, taylor",
    )


def test_data_driven_methods_bad_input(alexnet, fixture_model, tmp_path):
    # issue 9: slimming without BatchNorm, a lambda <= 0, a recipe naming an unknown method
    out = tmp_path / "out"
    out.mkdir()
    assert_one_line_error(
        run("prune", alexnet, "--method", "slimming", "-o", out / "o.onnx"), "has no BatchNormalization"
    )
    vgg = fixture_model("vgg_bn_torchscript")
    for bad in ("0", "-0.001"):
        assert_one_line_error(
            run("prune", vgg, "--method", "slimming", "--sparsity-epochs", 2, "--bn-l1", bad, "-o", out / "o.onnx"),
            "lambda",
            "> 0",
        )
    assert_one_line_error(
        run("prune", alexnet, "--method", "l1-filter:0.3,dice:0.8", "-o", out / "o.onnx"),
        "unknown pruning method 'dice'",
    )
    only_files(out)


def test_sample_options_without_data_are_refused_in_every_command(alexnet, tmp_path):
    """--limit, --first and the other data options act only on --data: without it, one line names them."""
    out = tmp_path / "out"
    out.mkdir()
    assert_one_line_error(run("quantize", alexnet, "--method", "dynamic", "--limit", 10, "-o", out / "q.onnx"),
                          "--limit has no effect without --data")  # fmt: skip
    assert_one_line_error(run("bench", alexnet, "--first", 5, "--runs", 2), "--first has no effect without --data")
    assert_one_line_error(run("bench", alexnet, "--pixel-range", "0-1", "--runs", 2), "--pixel-range")
    only_files(out)


def test_a_quantized_model_is_refused_by_prune(alexnet, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    quantized = run("quantize", alexnet, "--method", "dynamic", "-o", out / "int8.onnx")
    assert quantized.exit_code == 0, quantized.output
    before = (out / "int8.onnx").read_bytes()
    result = run("prune", out / "int8.onnx", "--sparsity", "0.5", "-o", out / "pruned.onnx")
    assert_one_line_error(result, "is quantized", "prune the float model, then quantize the result")
    assert (out / "int8.onnx").read_bytes() == before
    only_files(out, "int8.onnx")


def test_resume_with_other_options_names_the_difference(alexnet, tmp_path):
    images = np.random.default_rng(0).integers(0, 255, (10, 35, 35, 3)).astype(np.uint8)
    np.savez(tmp_path / "d.npz", x=images, y=np.arange(10) % 5)
    base = ["prune", alexnet, "--sparsity", "0.5", "--data", tmp_path / "d.npz", "--out-dir", tmp_path / "o"]
    assert run(*base).exit_code == 0
    result = run(*base, "--resume", "--seed", "3")
    assert_one_line_error(result, "--resume", "was started with", "(now 3)")


def test_sparse_storage_says_what_it_saved_and_why_nothing(alexnet, tmp_path):
    low = run("prune", alexnet, "--sparsity", "0.5", "--sparse-storage", "-o", tmp_path / "low.onnx", "--json")
    assert low.exit_code == 0, low.output
    assert any("stored no weight sparse" in note and "~67%" in note for note in json.loads(low.stdout)["notes"])
    high = run("prune", alexnet, "--sparsity", "0.95", "--sparse-storage", "-o", tmp_path / "high.onnx", "--json")
    notes = json.loads(high.stdout)["notes"]
    assert any("stored sparse" in note and "->" in note for note in notes), notes


def test_compact_says_when_there_is_nothing_to_remove(alexnet, tmp_path):
    result = run("compact", alexnet, "-o", tmp_path / "same.onnx", "--json")
    assert result.exit_code == 0, result.output
    assert any("no filter or neuron is all zero" in note for note in json.loads(result.stdout)["notes"])


def _nearest_resize_model(path):
    """Conv, Resize (ONNX's default nearest mode: onnx2torch warns twice, the output is still exact), MatMul."""
    rng = np.random.default_rng(0)
    initializers = [numpy_helper.from_array(rng.normal(size=(4, 1, 3, 3)).astype(np.float32), "conv_w"),
                    numpy_helper.from_array(rng.normal(size=(256, 3)).astype(np.float32), "fc_w"),
                    numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "conv_w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Resize", ["c", "", "scales"], ["r"], name="up", mode="nearest"),
        helper.make_node("Flatten", ["r"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "fc_w"], ["y"], name="fc"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])]
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_third_party_warnings_go_to_the_debug_log_not_the_output(tmp_path):
    """Issue 19: an onnx2torch UserWarning leaked between the tool's lines."""
    import os
    import subprocess
    import sys

    model = _nearest_resize_model(tmp_path / "resize.onnx")
    env = {k: v for k, v in os.environ.items() if k not in ("ONNXPRUNE_LOG", "ONNXPRUNE_DEBUG")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    command = [sys.executable, "-m", "onnxprune", "prune", str(model), "--sparsity", "0.5", "-o"]
    quiet = subprocess.run([*command, str(tmp_path / "p.onnx")], capture_output=True, text=True, env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert "Warning" not in quiet.stdout + quiet.stderr and "verified in onnxruntime" in quiet.stdout
    log = (tmp_path / "cache" / "onnxprune" / "debug.log").read_text()
    assert log.count("UserWarning: Pytorch's nearest neighbor") == 2, log
    debug = {**env, "ONNXPRUNE_DEBUG": "1", "ONNXPRUNE_LOG": str(tmp_path / "other.log")}
    shown = subprocess.run([*command, str(tmp_path / "q.onnx")], capture_output=True, text=True, env=debug)
    assert shown.returncode == 0 and "UserWarning: Pytorch's nearest neighbor" in shown.stderr
    assert (tmp_path / "other.log").read_text().count("UserWarning") == 2


def test_the_debug_log_stays_small(tmp_path, monkeypatch):
    import warnings

    from onnxprune.cli import common

    log = tmp_path / "debug.log"
    monkeypatch.setenv("ONNXPRUNE_LOG", str(log))
    monkeypatch.setattr(common, "DEBUG_LOG_BYTES", 1000)
    log.write_text("x" * 1500)
    with common.captured_warnings(), warnings.catch_warnings():
        warnings.simplefilter("always")  # whatever filters earlier tests left behind
        warnings.warn("from a library", UserWarning, stacklevel=1)
    assert (tmp_path / "debug.log.1").stat().st_size == 1500
    assert "UserWarning: from a library" in log.read_text() and log.stat().st_size < 1000


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("prune", "m.onnx", "--sparsity", "90%"), ("Invalid value for '--sparsity'", "0.9 for 90%", "--help")),
        (("prun",), ("No such command 'prun'", "Did you mean 'prune'")),
        (("prune", "m.onnx", "--bogus"), ("No such option: --bogus", "`onnxprune prune --help`")),
        (("prune",), ("Missing argument 'MODEL'",)),
    ],
)
def test_parse_failures_are_one_line_like_every_other_error(args, fragments):
    """Issue 29, 11: `--sparsity 90%` drew typer's box where `--sparsity 90` gets one `error:` line."""
    result = CliRunner().invoke(app, list(args), prog_name="onnxprune")
    assert_one_line_error(result, *fragments)
    assert "╭" not in result.output


def test_a_mean_with_the_wrong_number_of_values_is_one_line(alexnet, tmp_path):
    """Issue 29, 3: two --mean values for an RGB model were an internal error (numpy broadcasting)."""
    import fixtures

    images, labels = fixtures.class_images(4, size=35, classes=2)
    np.savez(tmp_path / "d.npz", x=images, y=labels)
    result = run("evaluate", alexnet, "--data", tmp_path / "d.npz", "--mean", "0.4914,0.4822")
    assert_one_line_error(result, "--mean has 2 values (0.4914,0.4822)", "3 (one per input channel) or 1")
    result = run("prune", alexnet, "--data", tmp_path / "d.npz", "--std", "0.2,0.2", "-o", tmp_path / "o.onnx")
    assert_one_line_error(result, "--std has 2 values")
    only_files(tmp_path, "alexnet.onnx", "d.npz")
