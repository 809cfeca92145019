"""The architectures PyTorch users bring, exported as they export them (tests/zoo.py).

CI runs a fast subset of the torchvision zoo, one model of each structure compaction must follow,
through both exporters, and a seeded sample of timm's registry (families drawn at random, not
chosen) through its three exporters; `benchmarks/zoo_support.py` runs both zoos whole and writes
the support tables of docs/formats.md.
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest
import zoo
from test_cli_errors import run

import onnxprune

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo")


@pytest.fixture(scope="module")
def exported(zoo_dir):
    """Export (once per module) and return the path of a zoo model."""
    paths = {}

    def get(name: str, exporter: str):
        if (name, exporter) not in paths:
            paths[name, exporter] = zoo.export(name, exporter, zoo_dir)
        return paths[name, exporter]

    return get


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_dynamo_resnet18_with_external_data_prunes_end_to_end(exported, tmp_path):
    source = exported("resnet18", "dynamo")
    data = source.with_name(source.name + ".data")
    assert data.exists(), "torch's default exporter keeps the weights beside the model"
    before = (digest(source), digest(data))
    output = tmp_path / "resnet18_pruned.onnx"
    result = run("prune", source, "--sparsity", "0.5", "--scope", "global", "-o", output)
    assert result.exit_code == 0, result.output
    assert (digest(source), digest(data)) == before, "the input files are never changed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resnet18_pruned.onnx", "resnet18_pruned.onnx.data"]
    written = onnxprune.load(output)
    assert written.external_data
    weights = [written.weight_array(layer) for layer in written.layers]
    sparsity = sum(int(w.size - np.count_nonzero(w)) for w in weights) / sum(w.size for w in weights)
    assert sparsity == pytest.approx(0.5, abs=1e-3)
    original = onnx.load(str(source), load_external_data=False)
    pruned = onnx.load(str(output), load_external_data=False)
    assert [n.op_type for n in pruned.graph.node] == [n.op_type for n in original.graph.node]
    assert pruned.opset_import == original.opset_import


def test_dynamo_resnet18_structured_keeps_external_data(exported, tmp_path):
    output = tmp_path / "resnet18_l1.onnx"
    result = run("prune", exported("resnet18", "dynamo"), "--method", "l1-filter", "--sparsity", "0.3", "-o", output)
    assert result.exit_code == 0, result.output
    assert output.with_name("resnet18_l1.onnx.data").exists()
    assert onnxprune.load(output).layer_total("numel") < onnxprune.load(exported("resnet18", "dynamo")).layer_total(
        "numel"
    )


@pytest.mark.parametrize("exporter", zoo.EXPORTERS)
@pytest.mark.parametrize("name", zoo.FAST)
@pytest.mark.parametrize("stage", zoo.STAGES)
def test_zoo_stage(stage, name, exporter, exported, tmp_path):
    """Every stage of the support table on the fast subset; each raises with its reason on failure."""
    outcome = zoo.STAGE_FUNCTIONS[stage](exported(name, exporter), tmp_path)
    if stage in ("compact", "l1-filter"):
        assert outcome["params_ratio"] < 1.0
    if stage == "prune":
        assert outcome["sparsity"] == pytest.approx(0.5, abs=1e-3)


# timm families drawn at random with this seed (families over TIMM_SAMPLE_PARAMS parameters are
# passed over to keep CI within minutes; the whole registry is the benchmark's)
TIMM_SAMPLE, TIMM_SAMPLE_SEED, TIMM_SAMPLE_PARAMS = 3, 25, 4_000_000


@pytest.fixture(scope="module")
def timm_sample():
    return zoo.timm_sample(TIMM_SAMPLE, TIMM_SAMPLE_SEED, TIMM_SAMPLE_PARAMS)


@pytest.mark.parametrize("exporter", zoo.TIMM_EXPORTERS)
@pytest.mark.parametrize("index", range(TIMM_SAMPLE))
def test_timm_sample(index, exporter, timm_sample, zoo_dir, tmp_path):
    """Every stage on a timm family drawn at random; a failing stage raises with its reason."""
    assert len(timm_sample) == TIMM_SAMPLE, "the sample draws its families from the whole registry"
    entry = timm_sample[index]
    path = zoo.export(entry, exporter, zoo_dir)
    outcomes = {stage: zoo.STAGE_FUNCTIONS[stage](path, tmp_path) for stage in zoo.STAGES}
    assert outcomes["prune"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert outcomes["compact"]["params_ratio"] < 1.0 and outcomes["l1-filter"]["params_ratio"] < 1.0
