"""Internal errors (issue 30): one line naming the stage, the node and the debug log; the traceback in the log.

A handler, a sanitise step or a check is made to raise an exception with an empty message (what
two `compact` runs of the issue met) and the command is run as a user runs it.
"""

from __future__ import annotations

import hashlib

import pytest
from typer.testing import CliRunner

from onnxprune.cli import app
from onnxprune.errors import ConfigError, InternalError, at_node, stage
from onnxprune.graph.channels.handlers import OPS, Handler


@pytest.fixture
def log(tmp_path, monkeypatch):
    """A debug log of the test's own."""
    path = tmp_path / "cache" / "debug.log"
    monkeypatch.setenv("ONNXPRUNE_LOG", str(path))
    monkeypatch.delenv("ONNXPRUNE_DEBUG", raising=False)
    return path


@pytest.fixture
def alexnet(fixture_model, tmp_path):
    """A private copy of the AlexNet-shaped fixture, so a test may check it is unchanged."""
    path = tmp_path / "alexnet.onnx"
    path.write_bytes(fixture_model("matlab_alexnet_opset8").read_bytes())
    return path


class RaisingTrace(Handler):
    """A handler whose analysis fails without a message."""

    def trace(self, ctx, node, inputs, where):
        raise ValueError()


def raising_patch():
    """The Relu handler, but its compaction step fails without a message."""

    class RaisingPatch(type(OPS["Relu"])):
        def patch(self, ctx, node, index):
            raise ValueError()

    return RaisingPatch()


def internal_error_line(result, log, *fragments) -> str:
    """The one line of an internal error: exit code 1, no traceback, the log's path; the log has the traceback."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: internal error") and "Traceback" not in result.output
    assert f"the traceback is in {log}; please report it with the model's opset and producer" in line, line
    for fragment in fragments:
        assert fragment in line, line
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and line.removeprefix("error: ").split(";")[0] in text
    return line


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_compaction_names_the_stage_the_node_and_the_log(alexnet, tmp_path, log, monkeypatch):
    monkeypatch.setitem(OPS, "Relu", raising_patch())
    before = digest(alexnet)
    result = run("compact", alexnet, "-o", tmp_path / "small.onnx")
    internal_error_line(
        result, log, "internal error in compaction at node 'relu_conv1' (Relu): ValueError with an empty message"
    )
    assert digest(alexnet) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alexnet.onnx", "cache"]  # no output, no temporary file
    assert "in patch\n    raise ValueError()" in log.read_text()  # the original exception's frame


def test_structured_prune_names_the_analysis_stage_and_node(alexnet, tmp_path, log, monkeypatch):
    monkeypatch.setitem(OPS, "Relu", RaisingTrace())
    before = digest(alexnet)
    result = run("prune", alexnet, "--method", "l1-filter", "--sparsity", "0.3", "-o", tmp_path / "p.onnx")
    internal_error_line(result, log, "internal error in channel analysis at node 'relu_conv1' (Relu): ValueError")
    assert digest(alexnet) == before
    assert not (tmp_path / "p.onnx").exists()


def test_conversion_names_the_node_being_sanitised(alexnet, tmp_path, log, monkeypatch):
    from onnxprune.graph import sanitise

    def fails_on_gemm(copy, node, *rest):
        if node.op_type == "Gemm":
            raise KeyError("")
        return [node]

    monkeypatch.setattr(sanitise, "_sanitise_node", fails_on_gemm)
    result = run("prune", alexnet, "--sparsity", "0.5", "-o", tmp_path / "p.onnx")
    internal_error_line(result, log, "internal error in conversion to torch at node 'fc6' (Gemm): KeyError: ''")
    assert not (tmp_path / "p.onnx").exists()


def test_verification_of_the_written_file_is_a_stage(alexnet, tmp_path, log, monkeypatch):
    from onnxprune.graph import verify

    def fails(*args, **kwargs):
        raise RuntimeError("onnxruntime went away")

    monkeypatch.setattr(verify, "verify", fails)
    result = run("compact", alexnet, "-o", tmp_path / "small.onnx")
    internal_error_line(result, log, "internal error in verification: RuntimeError: onnxruntime went away")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alexnet.onnx", "cache"]


def test_an_error_outside_any_stage_still_gets_the_log(alexnet, log, monkeypatch):
    from onnxprune.graph import inspection

    def fails(*args, **kwargs):
        raise IndexError()

    monkeypatch.setattr(inspection, "describe", fails)
    internal_error_line(run("inspect", alexnet), log, "error: internal error: IndexError with an empty message")


def test_onnxprune_debug_raises_the_error_and_logs_it(alexnet, tmp_path, log, monkeypatch):
    monkeypatch.setenv("ONNXPRUNE_DEBUG", "1")
    monkeypatch.setitem(OPS, "Relu", raising_patch())
    result = run("compact", alexnet, "-o", tmp_path / "small.onnx")
    assert isinstance(result.exception, InternalError) and result.exception.node == "relu_conv1"
    assert "Traceback (most recent call last)" in log.read_text()


def test_an_unwritable_log_still_gives_one_line(alexnet, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("ONNXPRUNE_LOG", str(tmp_path / "file" / "debug.log"))  # under a file: cannot be created
    monkeypatch.setitem(OPS, "Relu", raising_patch())
    result = run("compact", alexnet, "-o", tmp_path / "small.onnx")
    assert result.exit_code == 1
    assert result.stderr.strip().endswith("could not be written: ONNXPRUNE_DEBUG=1 prints the traceback")


def test_the_matlab_bridge_gets_the_context(alexnet, log, monkeypatch):
    import matlab_bridge
    from onnxprune.graph import model

    def fails(*args):
        raise ValueError()

    monkeypatch.setattr(model, "_check_finite_weights", fails)
    with pytest.raises(matlab_bridge.BridgeError, match="onnxprune:internal: internal error in load: ValueError"):
        matlab_bridge.inspect(str(alexnet))


# --- the mechanism ------------------------------------------------------------------------------


class Node:
    """The two fields of an onnx.NodeProto that `at_node` reads."""

    def __init__(self, name: str, op_type: str = "Add", output: str = "y") -> None:
        self.name, self.op_type, self.output = name, op_type, [output]


def test_the_innermost_stage_and_node_name_the_error():
    with pytest.raises(InternalError) as caught, stage("selection"), stage("compaction"), at_node(Node("Add_12")):
        raise ZeroDivisionError("division by zero")
    error = caught.value
    assert (error.stage, error.node, error.op) == ("compaction", "Add_12", "Add")
    assert isinstance(error.cause, ZeroDivisionError) and error.__cause__ is error.cause
    assert str(error) == "internal error in compaction at node 'Add_12' (Add): ZeroDivisionError: division by zero"


def test_an_unnamed_node_is_named_by_its_position():
    with pytest.raises(InternalError, match=r"at node '#3' \(Relu\): AssertionError with an empty message"):
        with stage("channel analysis"), at_node(Node("", "Relu"), 3):
            raise AssertionError


def test_onnxprunes_own_errors_and_interrupts_pass_unchanged():
    for exception in (ConfigError("give --data"), KeyboardInterrupt()):
        with pytest.raises(type(exception)) as caught, stage("training"), at_node(Node("n")):
            raise exception
        assert caught.value is exception


def test_a_stage_as_a_decorator_and_the_stage_left_behind():
    @stage("evaluation")
    def evaluate():
        """Fails."""
        raise TypeError("bad operand")

    assert evaluate.__doc__ == "Fails."
    with pytest.raises(InternalError, match="^internal error in evaluation: TypeError: bad operand$"):
        evaluate()
    with pytest.raises(InternalError, match="^internal error at node 'n' "):  # no stage around it any more
        with at_node(Node("n")):
            raise OSError("disk")
