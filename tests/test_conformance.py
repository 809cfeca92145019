"""Every real model and every fixture: inspect, prune at 0.5 and 0.9, layer and global.

Checks the three invariants on the written file: sparsity counted in the file equals the
request, onnxruntime output equals torch output, and the graph outside the initializers is
unchanged.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import ALL_MODELS, shared_path
from onnx import numpy_helper

import onnxprune
from onnxprune.graph.proto import session
from onnxprune.graph.verify import random_batch, torch_outputs


def written_weights(path) -> dict[str, np.ndarray]:
    proto = onnx.load(str(path))
    weights = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for sparse in proto.graph.sparse_initializer:
        dense = np.zeros(int(np.prod(sparse.dims)), dtype=np.float32)
        dense[numpy_helper.to_array(sparse.indices)] = numpy_helper.to_array(sparse.values)
        weights[sparse.values.name] = dense.reshape(tuple(sparse.dims))
    return weights


def graph_without_weights(proto: onnx.ModelProto) -> onnx.ModelProto:
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(proto)
    del skeleton.graph.initializer[:]
    del skeleton.graph.sparse_initializer[:]
    return skeleton


@pytest.mark.parametrize("model_path", ALL_MODELS, indirect=True)
def test_inspect_describes_every_layer(model_path):
    model = onnxprune.load(model_path)
    description = onnxprune.describe(model)
    assert description["layers"], "every conformance model has prunable layers"
    assert description["input"]["name"] == model.input.name
    assert all(layer["params"] == int(np.prod(layer["shape"])) for layer in description["layers"])
    assert all(layer["macs"] > 0 for layer in description["layers"])


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("sparsity", [0.5, 0.9])
@pytest.mark.parametrize("model_path", ALL_MODELS, indirect=True)
def test_prune_reaches_target_verifies_and_keeps_graph(model_path, sparsity, scope, tmp_path):
    model = onnxprune.load(model_path)
    original_bytes = model_path.read_bytes()
    result = onnxprune.prune(model, sparsity, scope=scope)
    output = tmp_path / "pruned.onnx"
    onnxprune.save(result, output)

    # 1. sparsity counted in the written file
    weights = written_weights(output)
    counts = {layer.name: (int(np.sum(weights[layer.weight] == 0)), layer.numel) for layer in model.layers}
    if scope == "layer":
        for name, (zeros, numel) in counts.items():
            assert abs(zeros - round(sparsity * numel)) <= 1, name
    else:
        zeros = sum(z for z, _ in counts.values())
        numel = sum(n for _, n in counts.values())
        assert abs(zeros - round(sparsity * numel)) <= len(counts)
        assert all(zeros < numel for zeros, numel in counts.values()), "no layer may collapse"
    assert result.prunable_sparsity == pytest.approx(sparsity, abs=len(counts) / sum(n for _, n in counts.values()))

    # 2. onnxruntime on the written file equals the masked torch model, on a fresh batch
    inputs = random_batch(model.input, batch=3, seed=7)
    ort_session = session(output)
    actual = ort_session.run(None, {model.input.name: inputs})[0]
    expected = torch_outputs(result.torch_model.module, inputs)[0].reshape(actual.shape)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)

    # 3. the graph outside the initializers is unchanged; the input file too
    written = onnx.load(str(output))
    assert graph_without_weights(written) == graph_without_weights(model.proto)
    unchanged = {t.name for t in model.proto.graph.initializer} - {layer.weight for layer in model.layers}
    original_tensors = {t.name: t for t in model.proto.graph.initializer}
    for tensor in written.graph.initializer:
        if tensor.name in unchanged:
            assert tensor == original_tensors[tensor.name]
    assert model_path.read_bytes() == original_bytes


def test_inspect_calls_matlab_feature_vectors_flat():
    from onnxprune.graph.inspection import describe

    model = onnxprune.load(shared_path("models/matlab/nln_logsig_200_100_50.onnx"))  # input [1, 1, 1, 784]
    assert describe(model)["input"]["layout"] == "flat"
