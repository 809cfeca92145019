"""Issue 25's failure classes, end to end through the command line, with both exporters.

Each network of tests/blocks.py carries one construct that once stopped a user: a graph that did
not load (SAME padding computed at run time, BatchNorm on tokens and pooling whose rank inference
lost, weight standardisation computed in the graph), a structured prune refused for one group
(GroupNorm as Reshape + InstanceNormalization, a reshape of the channel axis in a block), or a
wrong compacted model (unequal Split -> mixed depthwise kernels -> Concat). Every one must load
with torch equal to onnxruntime, prune 50% globally (verified, sparsity counted in the file),
compact an externally zeroed 30% of filters exactly, and take `l1-filter 0.3` to a smaller
verified model, naming the groups it keeps.
"""

from __future__ import annotations

import blocks
import numpy as np
import pytest
import zoo
from onnx import numpy_helper
from test_cli_errors import run

import onnxprune

pytestmark = pytest.mark.slow

# the blocks whose construct cannot lose channels: l1-filter keeps those groups whole and says which node
KEPT = {
    "group_norm": "reshapes the channel axis",
    "radix_reshape": "reshapes the channel axis",
    "weight_standardised": {"torchscript13": "cannot follow channels through Conv"},
    "token_batchnorm": {"torchscript13": "reads the channel count"},
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("blocks")
    paths = {}

    def get(name: str, exporter: str):
        if (name, exporter) not in paths:
            paths[name, exporter] = blocks.export(name, exporter, folder)
        return paths[name, exporter]

    return get


def kept_reason(name: str, exporter: str) -> str | None:
    reason = KEPT.get(name)
    return reason.get(exporter) if isinstance(reason, dict) else reason


@pytest.mark.parametrize("exporter", blocks.EXPORTERS)
@pytest.mark.parametrize("name", list(blocks.BLOCKS))
def test_block_loads_prunes_and_compacts(name, exporter, exported, tmp_path):
    source = exported(name, exporter)
    loaded = zoo.stage_load(source, tmp_path)
    assert loaded["torch_vs_ort"] <= 1e-4

    pruned = tmp_path / "pruned.onnx"
    result = run("prune", source, "--sparsity", "0.5", "--scope", "global", "-o", pruned)
    assert result.exit_code == 0, result.output
    assert "verified in onnxruntime" in result.output
    written = onnxprune.load(pruned)
    weights = [written.weight_array(layer) for layer in written.layers]
    assert sum(w.size - np.count_nonzero(w) for w in weights) / sum(w.size for w in weights) == pytest.approx(
        0.5, abs=0.01
    )

    compacted = zoo.stage_compact(source, tmp_path)
    assert compacted["params_ratio"] < 1 and compacted["relative_difference"] <= zoo.COMPACT_RTOL

    smaller = tmp_path / "l1.onnx"
    result = run("prune", source, "--method", "l1-filter", "--sparsity", "0.3", "-o", smaller)
    assert result.exit_code == 0, result.output
    assert "verified in onnxruntime" in result.output
    assert onnxprune.load(smaller).layer_total("numel") < onnxprune.load(source).layer_total("numel")
    reason = kept_reason(name, exporter)
    if reason:
        notes = [line for line in result.output.splitlines() if "kept whole" in line]
        assert notes and reason in notes[0] and "node '" in notes[0], result.output


def test_mixed_depthwise_keeps_unequal_groups_apart(exported, tmp_path):
    """The Split sizes follow the channels each group keeps, and the depthwise groups their channels."""
    source = exported("mixed_depthwise", "dynamo")
    output = tmp_path / "l1.onnx"
    assert run("prune", source, "--method", "l1-filter", "--sparsity", "0.3", "-o", output).exit_code == 0
    written = onnxprune.load(output)
    split = next(n for n in written.proto.graph.node if n.op_type == "Split")
    sizes = numpy_helper.to_array(written.initializer(split.input[1])).tolist()
    depthwise = [layer for layer in written.layers if layer.groups > 1]
    assert sizes == [layer.shape[0] for layer in depthwise] == [layer.groups for layer in depthwise]
    assert sizes != [8, 5, 3], "every group lost channels"


def test_json_counts_the_groups_kept_whole(exported, tmp_path):
    import json

    source = exported("group_norm", "torchscript13")
    result = run("prune", source, "--method", "l1-filter", "--sparsity", "0.3", "-o", tmp_path / "g.onnx", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["channels_kept_whole"] == 16, "the GroupNorm'd convolution's channels"
    assert summary["channel_sparsity"] == pytest.approx(0.3, abs=0.02), "30% of all, the kept ones counted"


@pytest.mark.parametrize("exporter", blocks.EXPORTERS)
def test_token_batchnorm_channels_are_followed_through_the_flattened_tokens(exporter, exported, tmp_path):
    """LeViT's LinearNorm: [B, N, C] -> [B*N, C] -> BatchNorm -> [B, N, C], here with N == C == 16. The
    channels were read as flattened features (then as attention heads) and every one kept."""
    source = exported("token_batchnorm", exporter)
    result = onnxprune.prune(onnxprune.load(source), 0.3, method="l1-filter")
    token_linear = next(layer for layer in result.source.layers if layer.op_type == "MatMul")
    if exporter == "dynamo":
        assert result.compaction.removed[token_linear.name] > 0
    else:  # TorchScript reshapes the tokens back to the stem's channel count, read at run time: kept, and said
        assert any("reads the channel count" in note for note in result.notes), result.notes
