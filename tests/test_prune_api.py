"""The Python API: prune options, masks through torch.nn.utils.prune, sparse storage, inspect."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from typer.testing import CliRunner

import onnxprune
from onnxprune.cli import app
from onnxprune.graph.storage import to_sparse_storage
from onnxprune.workbench.convert import BoundWeight, to_torch


def test_param_map_matches_initializers_and_binds_matmul(fixture_model):
    model = onnxprune.load(fixture_model("matmul_mlp"))
    converted = to_torch(model)
    assert list(converted.params) == ["fc_1_MatMul", "fc_2_MatMul", "fc_3_MatMul"]
    for entry in converted.params.values():
        assert isinstance(entry.module, BoundWeight)
        assert isinstance(entry.module.weight, torch.nn.Parameter)
        np.testing.assert_array_equal(entry.to_onnx(), model.weight_array(entry.layer))


def test_gemm_transb_mapping(fixture_model):
    model = onnxprune.load(fixture_model("matlab_alexnet_opset8"))
    entry = to_torch(model).params["fc6"]
    assert isinstance(entry.module, torch.nn.Linear) and not entry.transpose
    np.testing.assert_array_equal(entry.to_onnx(), model.weight_array(entry.layer))


def test_masks_hold_through_training(fixture_model):
    """Masks are torch.nn.utils.prune masks: gradients are zero where pruned, weights stay zero."""
    model = onnxprune.load(fixture_model("matmul_mlp"))
    result = onnxprune.prune(model, 0.8, scope="layer")
    module = result.torch_model.module.train()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        module(torch.randn(8, 20)).square().mean().backward()
        optimizer.step()
    for entry in result.torch_model.params.values():
        zeros = int((entry.parameter == 0).sum())
        assert zeros == round(0.8 * entry.parameter.numel())
        assert hasattr(entry.module, "weight_mask")


def test_skip_first_and_last_leave_layers_dense(fixture_model):
    model = onnxprune.load(fixture_model("matlab_alexnet_opset13"))
    result = onnxprune.prune(model, 0.9, scope="layer", skip_first=True, skip_last=True)
    by_name = {layer.name: layer for layer in result.layers}
    assert by_name["conv1"].zeros == 0 and by_name["fc8"].zeros == 0
    assert by_name["conv3"].sparsity == pytest.approx(0.9, abs=1e-3)
    assert any("conv1" in note for note in result.notes)


def test_config_pins_named_layers_and_defaults_the_rest(fixture_model, tmp_path):
    config = tmp_path / "ratios.yaml"
    config.write_text("default: 0.6\nconv1: 0.25\nfc8_W: 0.0\n")
    model = onnxprune.load(fixture_model("matlab_alexnet_opset13"))
    result = onnxprune.prune(model, 0.9, scope="layer", config=config)
    sparsity = {layer.name: layer.sparsity for layer in result.layers}
    assert sparsity["conv1"] == pytest.approx(0.25, abs=1 / 1200)
    assert sparsity["fc8"] == 0.0
    assert sparsity["fc6"] == pytest.approx(0.6, abs=1e-3)


def test_biases_untouched(fixture_model):
    model = onnxprune.load(fixture_model("matlab_alexnet_opset13"))
    result = onnxprune.prune(model, 0.9)
    for layer in model.layers:
        np.testing.assert_array_equal(
            numpy_helper.to_array(result.model.initializer(layer.bias)),
            numpy_helper.to_array(model.initializer(layer.bias)),
        )


def test_sparse_storage_round_trips_and_only_where_smaller(fixture_model, tmp_path):
    model = onnxprune.load(fixture_model("matlab_alexnet_opset8"))
    dense_path, sparse_path = tmp_path / "dense.onnx", tmp_path / "sparse.onnx"
    result = onnxprune.prune(model, 0.9, scope="global")
    onnxprune.save(result, dense_path)
    onnxprune.save(result, sparse_path, sparse_storage=True)
    sparse = onnx.load(str(sparse_path))
    onnx.checker.check_model(sparse)
    assert sparse_path.stat().st_size < 0.5 * dense_path.stat().st_size
    dense = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(dense_path)).graph.initializer}
    for tensor in sparse.graph.sparse_initializer:
        assert tensor.indices.data_type == onnx.TensorProto.INT64
        restored = np.zeros(int(np.prod(tensor.dims)), np.float32)
        restored[numpy_helper.to_array(tensor.indices)] = numpy_helper.to_array(tensor.values)
        np.testing.assert_array_equal(restored.reshape(tuple(tensor.dims)), dense[tensor.values.name])

    half = onnxprune.prune(onnxprune.load(fixture_model("matlab_alexnet_opset8")), 0.5)
    assert to_sparse_storage(half.model.proto, [layer.weight for layer in half.model.layers]) == []


def test_inspect_json_counts_macs(fixture_model):
    result = CliRunner().invoke(app, ["inspect", str(fixture_model("matlab_alexnet_opset8")), "--json"])
    assert result.exit_code == 0, result.output
    description = json.loads(result.stdout)
    assert description["producer"].startswith("MATLAB")
    assert description["opset"] == 8
    assert description["input"] == {"name": "data", "shape": [1, 3, 35, 35], "layout": "NCHW", "elem_type": "FLOAT"}
    layers = {layer["name"]: layer for layer in description["layers"]}
    # conv1: 16 output channels of 16x16, each a 3x5x5 dot product
    assert layers["conv1"]["macs"] == 16 * 16 * 16 * 3 * 5 * 5
    # conv2 is grouped: each output sees 16/2 input channels of 3x3
    assert layers["conv2"]["groups"] == 2 and layers["conv2"]["macs"] == 24 * 7 * 7 * 8 * 3 * 3
    assert layers["fc6"]["macs"] == 64 * 144


def test_prune_cli_prints_table_and_writes(fixture_model, tmp_path):
    output = tmp_path / "out.onnx"
    result = CliRunner().invoke(
        app, ["prune", str(fixture_model("tf2onnx_nhwc")), "--sparsity", "0.5", "-o", str(output)]
    )
    assert result.exit_code == 0, result.output
    assert "dense/MatMul" in result.stdout and "verified in onnxruntime" in result.stdout
    assert output.exists()
    assert list(tmp_path.iterdir()) == [output], "no temporary file may be left behind"


def test_prune_cli_json(fixture_model, tmp_path):
    output = tmp_path / "out.onnx"
    args = [
        "prune",
        str(fixture_model("matmul_mlp")),
        "--sparsity",
        "0.7",
        "--scope",
        "global",
        "-o",
        str(output),
        "--json",
    ]
    result = CliRunner().invoke(app, args)
    summary = json.loads(result.stdout)
    assert summary["prunable_sparsity"] == pytest.approx(0.7, abs=1e-3)
    assert summary["bytes"] == output.stat().st_size


def _initializers(path) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in onnx.load(str(path)).graph.initializer}


@pytest.mark.parametrize(
    ("fixture", "cli_options", "api_options"),
    [
        ("matlab_alexnet_opset8", [], {}),  # the measured default scope (LAMP) on both paths
        ("vgg_bn_torchscript", ["--method", "l1-filter"], {"method": "l1-filter"}),  # rounding, compaction
    ],
)
def test_the_api_and_the_cli_write_identical_weights(fixture_model, tmp_path, fixture, cli_options, api_options):
    """Issue 26: `onnxprune prune m.onnx --sparsity 0.9` and `onnxprune.prune(model, 0.9)` give one model."""
    source = fixture_model(fixture)
    result = CliRunner().invoke(
        app, ["prune", str(source), "--sparsity", "0.6", "-o", str(tmp_path / "cli.onnx"), *cli_options]
    )
    assert result.exit_code == 0, result.output
    pruned = onnxprune.prune(onnxprune.load(source), 0.6, **api_options)
    onnxprune.save(pruned, tmp_path / "api.onnx")
    from_cli, from_api = _initializers(tmp_path / "cli.onnx"), _initializers(tmp_path / "api.onnx")
    assert sorted(from_cli) == sorted(from_api)
    for name, value in from_cli.items():
        np.testing.assert_array_equal(value, from_api[name], err_msg=name)
    if not api_options:
        assert pruned.scope == "lamp" and "scope lamp: the default measured on reference models" in pruned.notes[0]


def test_prune_refuses_an_unknown_option_naming_the_known_ones(fixture_model):
    known = "unknown option 'sparsty'; the options are: bench_batch_size, config, "
    with pytest.raises(onnxprune.OnnxpruneError, match=known):
        onnxprune.prune(onnxprune.load(fixture_model("matmul_mlp")), 0.5, sparsty=0.4)
