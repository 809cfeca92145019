"""Benchmarks, compact storage, quantization, and data-parallel fine-tuning."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import fixtures
import numpy as np
import onnx
import pytest
from conftest import REPO
from onnx import numpy_helper
from typer.testing import CliRunner

import onnxprune
from onnxprune.cli import app
from onnxprune.errors import ConfigError
from onnxprune.graph.model import is_quantized
from onnxprune.graph.storage import pack, unpack
from onnxprune.measure import bench
from onnxprune.measure.quantize import quantize
from onnxprune.workbench.data import Dataset, preprocess_for
from onnxprune.workbench.timing import MIN_ROUNDS


@pytest.fixture
def pair(fixture_model, tmp_path):
    dense = fixture_model("vgg_bn_torchscript")
    pruned = tmp_path / "pruned.onnx"
    onnxprune.save(onnxprune.prune(onnxprune.load(dense), 0.9, scope="global"), pruned)
    return dense, pruned


def test_bench_two_models_well_formed(pair, tmp_path):
    results = bench.bench(list(pair), batches=[1, 4], runs=5)
    assert [r.name for r in results] == [pair[0].name, "pruned.onnx"]
    for result in results:
        assert set(result.latency_ms) == {"1", "4"}
        assert all(v["median"] > 0 and v["p99"] >= v["median"] for v in result.latency_ms.values())
        assert result.throughput["4"] > 0 and result.session_seconds > 0
        assert result.bytes > 0 and 0 < result.zipped_bytes and result.values_mask_bytes > 0
    assert results[0].speedup == {"1": 1.0, "4": 1.0} and results[0].size_ratio == 1.0
    assert results[1].nonzero < 0.2 * results[0].nonzero and results[1].macs == results[0].macs
    assert results[1].values_mask_bytes < 0.3 * results[0].values_mask_bytes
    out = tmp_path / "b"
    cli = CliRunner().invoke(app, ["bench", *map(str, pair), "--batch-size", "1", "--runs", "3", "--out-dir", str(out)])
    assert cli.exit_code == 0, cli.output
    assert len(json.loads((out / "bench.json").read_text())) == 2 and (out / "bench.png").exists()


def test_provider_cuda_without_gpu_is_one_line(pair):
    result = CliRunner().invoke(app, ["bench", str(pair[0]), "--provider", "cuda"])
    assert result.exit_code == 2 and "no CUDA provider" in result.stderr and result.stderr.count("\n") == 1


def test_package_round_trips_exactly_and_is_near_the_bound(pair, tmp_path):
    model = onnxprune.load(pair[1])
    report = pack(model, tmp_path / "m.onnxz")
    restored = unpack(tmp_path / "m.onnxz")
    onnx.checker.check_model(restored)
    original = {t.name: numpy_helper.to_array(t) for t in model.proto.graph.initializer}
    for tensor in restored.graph.initializer:
        np.testing.assert_array_equal(numpy_helper.to_array(tensor), original[tensor.name])
    assert report["bytes"] < 1.2 * bench.values_mask_bytes(model) + 4096  # graph and zip overhead on a tiny model


def test_quantization_keeps_zeros_and_reports_accuracy(pair, tmp_path):
    model = onnxprune.load(pair[1])
    pixels, labels = fixtures.class_images(32, size=16, classes=10)
    data = Dataset(pixels, labels, [str(i) for i in range(10)], "synthetic")
    root_level = logging.getLogger().level
    report = quantize(model, tmp_path / "q.onnx", "static", data, preprocess_for(model), 32, evaluate_data=data)
    assert logging.getLogger().level == root_level, "the root logger is silenced only while quantizing"
    assert is_quantized(onnx.load(str(tmp_path / "q.onnx")))
    assert report.zeros_after >= report.zeros_before > 0
    assert report.top1_before is not None and report.top1_after is not None
    assert report.bytes_after < report.bytes_before
    with pytest.raises(ConfigError, match="quantized"):
        onnxprune.prune(onnxprune.load(tmp_path / "q.onnx"), 0.5)
    dynamic = quantize(model, tmp_path / "d.onnx", "dynamic")
    assert dynamic.zeros_after >= dynamic.zeros_before
    with pytest.raises(ConfigError, match="calibrates on data"):
        quantize(model, tmp_path / "s.onnx", "static")


def free_port() -> int:
    """A port nothing listens on now (a fixed one may be taken, or in TIME_WAIT from an earlier run)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_matches_one_process(fixture_model, tmp_path):
    model = str(fixture_model("matmul_mlp"))
    worker = str(REPO / "tests" / "ddp_worker.py")
    single = subprocess.run([sys.executable, worker, model, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
              f"--master_port={free_port()}", worker, model, str(tmp_path)]  # fmt: skip
    parallel = subprocess.run(
        launch, capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", **__import__("os").environ}
    )
    assert parallel.returncode == 0, parallel.stderr[-2000:]
    one = np.load(tmp_path / "weights_world1_rank0.npz")
    ranks = [np.load(tmp_path / f"weights_world2_rank{r}.npz") for r in (0, 1)]
    pruned = onnxprune.prune(onnxprune.load(model), 0.5).weights
    for name in one.files:
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name])  # the ranks agree exactly
        np.testing.assert_allclose(ranks[0][name], one[name], rtol=1e-4, atol=1e-5)
        layer_weight = [w for w in pruned if w.startswith(name.split("_MatMul")[0])][0]
        assert np.all(ranks[0][name][pruned[layer_weight] == 0] == 0), "a pruned weight came back"


def test_bench_baselines_add_the_int8_forms_of_the_first_model(fixture_model, tmp_path):
    import json

    from typer.testing import CliRunner

    from onnxprune.cli import app

    images = np.random.default_rng(0).integers(0, 255, (16, 35, 35, 3)).astype(np.uint8)
    np.savez(tmp_path / "d.npz", x=images, y=np.arange(16) % 5)
    model = fixture_model("matlab_alexnet_opset8")
    args = ["bench", str(model), "--baselines", "--runs", "2", "--batch-size", "1", "--json"]
    alone = CliRunner().invoke(app, args)
    assert alone.exit_code == 0, alone.output
    assert [row["name"] for row in json.loads(alone.stdout)][1:] == [f"{model.stem}_int8_dynamic.onnx"]
    calibrated = CliRunner().invoke(app, [*args, "--data", str(tmp_path / "d.npz"), "--out-dir", str(tmp_path / "b")])
    assert calibrated.exit_code == 0, calibrated.output
    rows = json.loads(calibrated.stdout)
    assert [row["name"] for row in rows][1:] == [f"{model.stem}_int8_dynamic.onnx", f"{model.stem}_int8_static.onnx"]
    assert all(row["bytes"] < rows[0]["bytes"] / 2 and row["top1"] is not None for row in rows[1:])
    assert rows[0]["macs"] > 0 and all(row["macs"] is None and row["nonzero"] is None for row in rows[1:]), (
        "int8 weights are not float layers: not counted (null, not 0)")  # fmt: skip
    assert (tmp_path / "b" / f"{model.stem}_int8_static.onnx").exists()


def test_bench_table_is_narrow_by_default_and_wide_on_request(fixture_model):
    from typer.testing import CliRunner

    from onnxprune.cli import app

    model = str(fixture_model("matlab_alexnet_opset8"))
    narrow = CliRunner().invoke(app, ["bench", model, "--runs", "2", "--batch-size", "1"])
    wide = CliRunner().invoke(app, ["bench", model, "--runs", "2", "--batch-size", "1", "--wide"])
    refused = CliRunner().invoke(app, ["bench", model, "--wide", "--json"])
    assert refused.exit_code == 2
    assert refused.stderr.strip() == "error: --wide has no effect with --json: the JSON holds every column already"
    assert narrow.exit_code == 0 and wide.exit_code == 0, narrow.output + wide.output
    assert "zipped" not in narrow.stdout and "p90" not in narrow.stdout
    assert "zipped" in wide.stdout and "IQR, p90)" in wide.stdout and "values+mask:" in wide.stdout
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 120


def test_int8_runs_integer_convolutions_once_batchnorm_is_folded(fixture_model, tmp_path, monkeypatch):
    """Issue 28: unfolded, 10 float BatchNormalization nodes sat between DequantizeLinear and QuantizeLinear."""
    from onnxprune.measure import quantize as quantize_module

    model = onnxprune.load(fixture_model("vgg_bn_torchscript"))
    assert any(node.op_type == "BatchNormalization" for node in model.proto.graph.node)
    pixels, labels = fixtures.class_images(20, size=16, classes=10)
    data = Dataset(pixels, labels, [str(i) for i in range(10)], "synthetic")
    report = quantize(model, tmp_path / "q.onnx", "static", data, preprocess_for(model), 20, keep_float="none")
    assert report.prepared.startswith("BatchNormalization folded")
    kernels = quantize_module.integer_kernels(tmp_path / "q.onnx")
    assert kernels.float == [] and kernels.why_not_faster() == ""
    assert sum("(QLinearConv)" in node for node in kernels.integer) == 3, "every convolution runs in integers"

    monkeypatch.setattr(quantize_module, "_prepared", lambda source, target: (source, "not pre-processed"))
    quantize(model, tmp_path / "raw.onnx", "static", data, preprocess_for(model), 20)
    unfolded = quantize_module.integer_kernels(tmp_path / "raw.onnx")
    assert any("(BatchNormalization)" in node for node in unfolded.float)
    assert "stayed float" in unfolded.why_not_faster() and "BatchNormalization" in unfolded.why_not_faster()


def test_an_int8_model_slower_than_its_float_one_gets_a_note_naming_the_float_nodes(fixture_model, tmp_path,
                                                                                    monkeypatch):  # fmt: skip
    from onnxprune.measure import quantize as quantize_module

    model = onnxprune.load(fixture_model("vgg_bn_torchscript"))
    pixels, labels = fixtures.class_images(20, size=16, classes=10)
    data = Dataset(pixels, labels, [str(i) for i in range(10)], "synthetic")
    monkeypatch.setattr(quantize_module, "_prepared", lambda source, target: (source, "not pre-processed"))
    quantize(model, tmp_path / "raw.onnx", "static", data, preprocess_for(model), 20)
    dense = bench.ModelBench("dense.onnx", str(model.path), 1, 1, 1, 10, 10, 100, 0.0, speedup={"1": 1.0})
    slow = bench.ModelBench("raw.onnx", str(tmp_path / "raw.onnx"), 1, 1, 1, None, None, None, 0.0,
                            speedup={"1": 0.6, "32": 1.2})  # fmt: skip
    bench._explain_slow_int8([dense, slow])
    (note,) = bench.bench_notes([dense, slow])
    assert note.startswith("raw.onnx (int8) is not faster than dense.onnx (0.60x at batch 1)")
    assert "(BatchNormalization)" in note and "quantize/dequantize conversions" in note

    from onnxprune.workbench import timing

    def fake_timing(models, batches, threads=None, budget=0.0):
        float_timed, int8_timed = timing.TimedModel(), timing.TimedModel()
        float_timed.latency_ms = {"1": {"median": 0.6}, "32": {"median": 1.2}}
        int8_timed.latency_ms = {"1": {"median": 1.0}, "32": {"median": 1.0}}
        return [float_timed, int8_timed]

    monkeypatch.setattr(timing, "time_side_by_side", fake_timing)
    report = quantize(model, tmp_path / "q.onnx", "static", data, preprocess_for(model), 20, time_batches=(1, 32),
                      keep_float="none")  # fmt: skip
    assert report.speedup == pytest.approx({"1": 0.6, "32": 1.2})
    assert report.notes == [report.notes[0]] and "not faster than the float one here (0.60x at batch 1)" in (
        report.notes[0])  # fmt: skip


def _int8_fixture(fixture_model, tmp_path):
    """A pruned convnet (zeros to keep), 20 images, its Conv and Gemm layers."""
    onnxprune.save(onnxprune.prune(onnxprune.load(fixture_model("vgg_bn_torchscript")), 0.5), tmp_path / "m.onnx")
    model = onnxprune.load(tmp_path / "m.onnx")
    pixels, labels = fixtures.class_images(20, size=16, classes=10)
    convolutions = [node.name for node in model.proto.graph.node if node.op_type in ("Conv", "Gemm")]
    return model, Dataset(pixels, labels, [str(i) for i in range(10)], "synthetic"), convolutions


def test_layer_kernel_times_trace_every_fused_kernel_back_to_its_layer(fixture_model, tmp_path):
    """onnxruntime renames what it fuses (`_nchwc`, `_token_N`): every convolution is found in both graphs."""
    from onnxprune.measure import quantize as quantize_module

    model, data, convolutions = _int8_fixture(fixture_model, tmp_path)
    quantize(model, tmp_path / "q.onnx", "static", data, preprocess_for(model), 20, keep_float="none")
    times = quantize_module._layer_kernel_times(model, onnxprune.load(tmp_path / "q.onnx"), 8)
    assert set(times) == set(convolutions)
    assert all(float_us > 0 and int8_us > 0 for float_us, int8_us in times.values())
    quantize(model, tmp_path / "d.onnx", "dynamic", keep_float="none")  # ConvInteger with its Muls, Cast, bias Add
    dynamic = quantize_module._layer_kernel_times(model, onnxprune.load(tmp_path / "d.onnx"), 8)
    assert set(dynamic) == set(convolutions)


def test_keep_float_by_name_leaves_those_layers_float_and_refuses_unknown_names(fixture_model, tmp_path):
    from onnxprune.measure import quantize as quantize_module

    model, data, convolutions = _int8_fixture(fixture_model, tmp_path)
    report = quantize(model, tmp_path / "q.onnx", "static", data, preprocess_for(model), 20, keep_float=convolutions[0])
    assert [layer.node for layer in report.kept_float] == [convolutions[0]]
    kernels = quantize_module.integer_kernels(tmp_path / "q.onnx")
    assert len(kernels.float) == 1 and sum("(QLinearConv)" in node for node in kernels.integer) == 2
    assert report.zeros_after >= report.zeros_before > 0
    with pytest.raises(ConfigError, match="--keep-float names 'nope', which is not a Conv, Gemm or MatMul node"):
        quantize(model, tmp_path / "n.onnx", "static", data, preprocess_for(model), 20, keep_float="nope")
    assert not (tmp_path / "n.onnx").exists()
    result = CliRunner().invoke(app, ["quantize", str(model.path), "-o", str(tmp_path / "c.onnx"), "--method",
                                      "dynamic", "--keep-float", "conv9", "--no-time"])  # fmt: skip
    assert result.exit_code != 0 and result.stderr.startswith("error: --keep-float names 'conv9'")
    assert result.stderr.count("\n") == 1 and not (tmp_path / "c.onnx").exists()
    named = CliRunner().invoke(app, ["quantize", str(model.path), "-o", str(tmp_path / "c.onnx"), "--method",
                                     "dynamic", "--keep-float", convolutions[1], "--no-time", "--json"])  # fmt: skip
    assert named.exit_code == 0, named.output
    assert json.loads(named.stdout)["kept_float"] == [convolutions[1]], "names, so MATLAB gets a cellstr"


def test_a_kernel_after_a_residual_add_is_credited_to_no_layer():
    """onnxruntime names a fused Conv+Add+Relu after its output: which of the two convolutions it fused is unknown."""
    from onnx import TensorProto, helper

    from onnxprune.measure.quantize import _layer_of_tensor

    weights = [numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), name) for name in ("w1", "w2")]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="conv"),
        helper.make_node("Conv", ["x", "w2"], ["b"], name="shortcut"),
        helper.make_node("Add", ["a", "b"], ["sum"], name="add"),
        helper.make_node("Relu", ["sum"], ["y"], name="relu"),
    ]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "residual", [value("x", TensorProto.FLOAT, [1, 4, 2, 2])],
                              [value("y", TensorProto.FLOAT, [1, 4, 2, 2])], weights)  # fmt: skip
    owner = _layer_of_tensor(helper.make_model(graph))
    assert owner == {"conv": "conv", "shortcut": "shortcut", "a": "conv", "b": "shortcut"}


def test_keep_float_names_survive_the_pre_processing_that_renames_them(tmp_path):
    """quant_pre_process fuses MatMul + Add into a Gemm named '<MatMul>/MatMulAddFusion': it stays float."""
    from onnx import TensorProto, helper

    from onnxprune.measure import quantize as quantize_module

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("w1", (8, 16)), ("b1", (16,)), ("w2", (16, 4)), ("b2", (4,)))]  # fmt: skip
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="/fc1/MatMul"),
        helper.make_node("Add", ["h", "b1"], ["hb"], name="/fc1/Add"),
        helper.make_node("Relu", ["hb"], ["r"], name="/relu"),
        helper.make_node("MatMul", ["r", "w2"], ["o"], name="/fc2/MatMul"),
        helper.make_node("Add", ["o", "b2"], ["y"], name="/fc2/Add"),
    ]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], weights)  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "mlp.onnx"))
    model = onnxprune.load(tmp_path / "mlp.onnx")
    data = Dataset(rng.random((20, 8)).astype(np.float32), np.arange(20) % 4, list("abcd"), "synthetic")
    report = quantize(model, tmp_path / "q.onnx", "static", data, preprocess_for(model), 20, keep_float="/fc1/MatMul")
    assert [layer.node for layer in report.kept_float] == ["/fc1/MatMul"], "reported under the user's name"
    kernels = quantize_module.integer_kernels(tmp_path / "q.onnx")
    assert len(kernels.float) == 1 and "/fc1/MatMul" in kernels.float[0], kernels
    assert len(kernels.integer) == 1 and "/fc2/MatMul" in kernels.integer[0], kernels
    with pytest.raises(ConfigError, match="--keep-float names '', which is not"):
        quantize(model, tmp_path / "e.onnx", "static", data, preprocess_for(model), 20, keep_float=",")


@pytest.mark.parametrize("mixed_faster", [True, False])
def test_auto_keeps_slower_layers_float_only_when_the_whole_model_is_faster(fixture_model, tmp_path, monkeypatch,
                                                                             mixed_faster):  # fmt: skip
    """A layer whose integer kernel loses (a 3-channel first convolution) stays float, if the model gains."""
    from onnxprune.measure import quantize as quantize_module
    from onnxprune.workbench import timing

    model, data, convolutions = _int8_fixture(fixture_model, tmp_path)
    measured = {convolutions[0]: (100.0, 300.0), convolutions[1]: (200.0, 90.0)}
    monkeypatch.setattr(quantize_module, "_layer_kernel_times", lambda *args: measured)
    timed_models = []

    def fake_timing(models, batches, threads=None, budget=0.0):
        timed_models.append(models)
        all_int8, mixed = timing.TimedModel(), timing.TimedModel()
        all_int8.latency_ms = {"32": {"median": 1.0}}
        mixed.latency_ms = {"32": {"median": 0.8 if mixed_faster else 1.1}}
        return [all_int8, mixed]

    monkeypatch.setattr(timing, "time_side_by_side", fake_timing)
    report = quantize(model, tmp_path / "q.onnx", "static", data, preprocess_for(model), 20)
    assert len(timed_models) == 1 and len(timed_models[0]) == 2, "all-int8 and mixed, side by side, once"
    kernels = quantize_module.integer_kernels(tmp_path / "q.onnx")
    (note,) = report.notes
    if mixed_faster:
        assert [layer.node for layer in report.kept_float] == [convolutions[0]] and len(kernels.float) == 1
        kept = f"kept 1 layer(s) float, faster than their integer kernels at batch 32: {convolutions[0]}"
        assert note.startswith(kept + " (100 µs float, 300 µs int8); the model is 1.25x faster")
    else:
        assert report.kept_float == [] and kernels.float == []
        assert note.startswith(f"every layer is int8: {convolutions[0]} (100 µs float, 300 µs int8) ran slower")
        assert "0.91x the all-int8 one" in note
    assert report.zeros_after >= report.zeros_before > 0, "a layer left float keeps its zeros, and they are counted"


def test_bench_settles_the_spread_records_threads_and_times_fixed_batch_exports_batched(fixture_model, tmp_path):
    """Issue 29: batch 32 was dropped for fixed-batch exports although `evaluate` batches them."""
    fixed = fixture_model("matlab_alexnet_opset8")
    assert onnxprune.load(fixed).input.fixed_batch
    (result,) = bench.bench([fixed], batches=[1, 4], threads=1)
    assert result.threads == 1 and set(result.latency_ms) == {"1", "4"}
    for timing in result.latency_ms.values():
        assert timing["p25"] <= timing["median"] <= timing["p75"] and timing["iqr"] == pytest.approx(
            timing["p75"] - timing["p25"])  # fmt: skip
        assert timing["rounds"] >= MIN_ROUNDS and timing["calls"] >= timing["rounds"]
        assert isinstance(timing["stable"], bool)
    (counted,) = bench.bench([fixed], batches=[1], runs=12)
    assert counted.latency_ms["1"]["calls"] >= 12 and counted.latency_ms["1"]["stable"]

    hard = tmp_path / "hard.onnx"  # a Reshape to 1 x 4 in the graph: no other batch can run
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Reshape", ["x", "shape"], ["y"])], "hard",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 2])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.array([1, 4], dtype=np.int64), "shape")],
    )  # fmt: skip
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)]), hard)
    (only_one,) = bench.bench([hard], batches=[1, 4], runs=5)
    assert set(only_one.latency_ms) == {"1"}, "the batch its graph hard-codes is left out, not an error"
    refused = CliRunner().invoke(app, ["bench", str(fixed), "--threads", "0"])
    assert refused.exit_code == 2 and refused.stderr.strip() == "error: --threads must be 1 or more, got 0"


def test_latencies_keep_three_significant_digits_in_one_unit_per_column():
    from onnxprune.measure.bench import latency_unit, significant_decimals, three_digits

    assert [three_digits(v) for v in (0.02304, 0.1562, 8.176, 72.43, 123.4, 0.004312)] == [
        "0.0230", "0.156", "8.18", "72.4", "123", "0.00431"]  # fmt: skip
    assert three_digits(0.00041, significant_decimals(0.02304)) == "0.0004", "a spread at its median's precision"
    assert latency_unit([0.0230, 0.0182, float("nan")]) == ("µs", 1000.0)
    assert latency_unit([0.0230, 72.4]) == ("ms", 1.0), "one unit down a column: 0.0230 ms beside 72.4 ms"


def fixed_batch_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its batch dimension fixed at 1, as MATLAB and VNN-COMP export it."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in [*fixed.graph.input, *fixed.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.checker.check_model(fixed)
    return fixed


def test_bench_shows_digits_of_a_sub_millisecond_model_and_batch_32_of_a_fixed_batch_export(tmp_path):
    """Issue 29: '0.02 / 0.02 / 0.02 ms' beside 1.00x / 1.01x / 1.26x; batch 32 dropped for fixed-batch files."""
    import re

    mlp = fixtures.save(fixtures.matmul_mlp(), tmp_path / "mlp.onnx")  # about 10 µs a call
    fixed = fixtures.save(fixed_batch_copy(fixtures.matmul_mlp()), tmp_path / "mlp_fixed.onnx")
    assert onnxprune.load(fixed).input.fixed_batch
    shown = CliRunner().invoke(app, ["bench", str(mlp), str(fixed), "--runs", "20", "--out-dir", str(tmp_path / "b")])
    assert shown.exit_code == 0, shown.output
    assert "b1 µs (IQR)" in shown.stdout and "b32 µs (IQR)" in shown.stdout, shown.stdout
    rows = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]]
            for line in shown.stdout.splitlines() if line.startswith("│ mlp")}  # fmt: skip
    assert set(rows) == {"mlp.onnx", "mlp_fixed.onnx"}
    for cells in rows.values():
        for latency in cells[:2]:  # batch 1 and batch 32 of each, batch 32 of the fixed-batch file included
            median = re.fullmatch(r"(\d+\.?\d*) \((\d+\.?\d*)\)", latency)
            assert median, latency
            assert len(median[1].replace(".", "").lstrip("0")) == 3, f"three significant digits: {latency}"
    assert ("note: batch 32 of graphs that fix batch 1 (mlp_fixed.onnx): timed on a copy with a symbolic batch "
            "dimension, one batched call as evaluate runs it") in " ".join(shown.stdout.split())  # fmt: skip
    saved = {row["name"]: row for row in json.loads((tmp_path / "b" / "bench.json").read_text())}
    assert set(saved["mlp_fixed.onnx"]["latency_ms"]) == {"1", "32"} and saved["mlp_fixed.onnx"]["batched_on_copy"]
    assert not saved["mlp.onnx"]["batched_on_copy"]
    assert saved["mlp_fixed.onnx"]["throughput"]["32"] > saved["mlp_fixed.onnx"]["throughput"]["1"], (
        "one batched call of 32, not 32 calls")  # fmt: skip
    machine = json.loads(CliRunner().invoke(app, ["bench", str(mlp), str(fixed), "--runs", "5", "--json"]).stdout)
    assert all(any("timed on a copy with a symbolic batch" in note for note in entry["notes"]) for entry in machine)


def test_a_slow_dynamic_int8_model_is_explained_as_dynamic():
    from onnxprune.measure.quantize import KernelCount

    dynamic = KernelCount(integer=["conv1 (ConvInteger)", "fc (MatMulInteger)"])
    assert dynamic.why_not_faster().startswith("dynamic quantization: 2 node(s)")
    assert KernelCount(integer=["conv1 (QLinearConv)"]).why_not_faster() == ""
    mixed = KernelCount(integer=["conv1 (QLinearConv)"], float=["bn (BatchNormalization)"], conversions=4)
    why = mixed.why_not_faster()
    assert why.startswith("1 compute node(s) stayed float") and "4 quantize" in why


def test_the_report_shows_latencies_as_the_terminal_does(tmp_path):
    """Issue 29, 6: the HTML report showed 0.02304 (ms) where the table shows 23.0 µs."""
    from onnxprune.report.html import write_report

    rows = [{"name": name, "latency_ms": {"1": {"median": median}, "32": {"median": 30 * median}},
             "speedup": {"1": 1.0, "32": 1.0}, "bytes": 1000, "nonzero": 10, "macs": 10, "top1": None}
            for name, median in (("a.onnx", 0.02304), ("b.onnx", 0.0187))]  # fmt: skip
    (tmp_path / "bench.json").write_text(json.dumps(rows))
    page = write_report(tmp_path).read_text()
    assert "batch 1 µs" in page and "batch 32 µs" in page
    assert ">23.0<" in page and ">18.7<" in page and ">691<" in page and ">0.02304<" not in page
    assert ">1.00x<" in page
