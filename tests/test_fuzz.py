"""Hostile input, fuzzed (hypothesis): mutated and truncated ONNX files, ratio YAML files, .mat and .npz
data. Whatever the bytes, onnxprune answers with its own one-line error (an `OnnxpruneError`) or
works; never another exception, never a hang (each example has a deadline), never a changed input.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import fixtures
import numpy as np
import pytest
import scipy.io
from conftest import shared_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import onnxprune
from onnxprune.errors import OnnxpruneError
from onnxprune.pruning import select
from onnxprune.workbench.data import load_data

DEEPER = os.environ.get("ONNXPRUNE_FUZZ_EXAMPLES")  # a longer random run: ONNXPRUNE_FUZZ_EXAMPLES=5000 pytest ...
EXAMPLES = settings(
    max_examples=int(DEEPER or 500),
    deadline=10_000,
    derandomize=DEEPER is None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)  # CI: derandomized, no example database: the same 500 examples every run; 10 s each at most: no hang


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, Path]:
    """A MATLAB export from the shared models, and the AlexNet-shaped fixture."""
    folder = tmp_path_factory.mktemp("fuzz")
    alexnet = fixtures.save(fixtures.matlab_alexnet(opset=8), folder / "alexnet.onnx")
    return {"matlab": shared_path("models/matlab/nln_logsig_200_100_50.onnx"), "fixture": alexnet}


def load_or_refuse(path: Path) -> None:
    """Load and prune a file: success, or onnxprune's own error; the file never changes."""
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        model = onnxprune.load(path)
        onnxprune.prune(model, 0.5, keep_masks=False)
    except OnnxpruneError as error:
        assert "\n" not in str(error).strip(), "one line"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


@EXAMPLES
@given(
    source=st.sampled_from(["matlab", "fixture"]),
    edits=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)
def test_mutated_and_truncated_onnx_files(model_files, tmp_path_factory, source, edits, cut):
    data = bytearray(model_files[source].read_bytes())
    for where, value in edits:  # overwrite bytes anywhere: headers, dims, types, weights
        data[min(int(where * len(data)), len(data) - 1)] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    path = tmp_path_factory.mktemp("onnx") / "mutated.onnx"
    path.write_bytes(bytes(data))
    load_or_refuse(path)


@EXAMPLES
@given(
    text=st.one_of(
        st.text(max_size=200),
        st.dictionaries(
            st.one_of(st.sampled_from(["default", "conv1", "fc8", "fc8_W", "relu1"]), st.text(max_size=10)),
            st.one_of(st.floats(allow_nan=True), st.integers(-5, 5), st.text(max_size=5), st.none(),
                      st.lists(st.floats(), max_size=2)),
            max_size=6,
        ).map(lambda d: "\n".join(f"{k!r}: {v!r}" for k, v in d.items())),
    )
)  # fmt: skip
def test_ratio_yaml_files(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("yaml") / "ratios.yaml"
    path.write_text(text)
    names = ["conv1", "conv2", "fc6", "fc7", "fc8"]
    try:
        ratios, default = select.read_ratios(path, names, {"fc8_W": "fc8"})
    except OnnxpruneError as error:
        assert "\n" not in str(error).strip()
        return
    assert set(ratios) <= set(names) and all(0 <= r < 1 for r in ratios.values())
    assert default is None or 0 <= default < 1


ARRAYS = st.one_of(
    st.builds(lambda shape, kind: np.zeros(shape, dtype=kind),
              st.lists(st.integers(0, 6), min_size=0, max_size=5).map(tuple),
              st.sampled_from([np.uint8, np.float32, np.float64, np.int64, np.bool_, np.complex64])),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=20).map(np.array),
    st.lists(st.text(max_size=3), max_size=5).map(np.array),
)  # fmt: skip


@EXAMPLES
@given(
    keys=st.lists(st.sampled_from(["x", "y", "images", "labels", "X", "Y", "data", "junk"]), min_size=0, max_size=3,
                  unique=True),
    arrays=st.lists(ARRAYS, min_size=3, max_size=3),
    form=st.sampled_from([".npz", ".mat"]),
    garbage=st.booleans(),
)  # fmt: skip
def test_npz_and_mat_data_files(tmp_path_factory, keys, arrays, form, garbage):
    path = tmp_path_factory.mktemp("data") / f"data{form}"
    content = dict(zip(keys, arrays, strict=False))
    if garbage:
        path.write_bytes(b"not an array file" * 7)
    elif form == ".npz":
        np.savez(path, **content)
    else:
        buffer = io.BytesIO()
        try:
            scipy.io.savemat(buffer, content)
        except Exception:  # a value .mat cannot hold: nothing to test
            return
        path.write_bytes(buffer.getvalue())
    before = path.read_bytes()
    try:
        dataset = load_data(path)
    except OnnxpruneError as error:
        assert "\n" not in str(error).strip()
    else:
        assert len(dataset) == len(dataset.labels) > 0
    assert path.read_bytes() == before


def _hostile(kind: str):
    import copy

    from onnx import numpy_helper

    proto = copy.deepcopy(fixtures.matlab_alexnet(opset=8))
    tensors = {tensor.name: tensor for tensor in proto.graph.initializer}

    def set_value(name, change):
        array = numpy_helper.to_array(tensors[name]).copy()
        tensors[name].CopyFrom(numpy_helper.from_array(change(array), name))

    if kind == "nan weight":
        set_value("conv1_W", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 0, np.nan, a).astype(a.dtype))
    elif kind == "infinite weight":
        set_value("fc6_W", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 3, np.inf, a).astype(a.dtype))
    elif kind == "integer weight":
        set_value("fc7_W", lambda a: a.astype(np.int32))
    elif kind == "missing initializer":
        kept = [t for t in proto.graph.initializer if t.name != "conv2_W"]
        del proto.graph.initializer[:]
        proto.graph.initializer.extend(kept)
    elif kind == "cyclic graph":
        proto.graph.node[1].input[0] = proto.graph.node[3].output[0]
    elif kind == "huge declared dims":
        for dim in proto.graph.input[0].type.tensor_type.shape.dim[2:]:
            dim.dim_value = 10**6
    return proto.SerializeToString()


@pytest.mark.parametrize(
    "kind, fragment",
    [
        ("nan weight", "holds NaN or infinite values"),
        ("infinite weight", "holds NaN or infinite values"),
        ("integer weight", ""),
        ("missing initializer", "not a valid ONNX model"),
        ("cyclic graph", "not a valid ONNX model"),
        ("huge declared dims", ""),
    ],
)
def test_hostile_models_get_onnxprunes_own_error(tmp_path, kind, fragment):
    path = tmp_path / "hostile.onnx"
    path.write_bytes(_hostile(kind))
    with pytest.raises(OnnxpruneError, match=fragment):
        model = onnxprune.load(path)
        onnxprune.save(onnxprune.prune(model, 0.5, keep_masks=False), tmp_path / "out.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.onnx"], "no output, no temporary file"
