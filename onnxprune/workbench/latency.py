"""Per-layer latency tables: what one Conv or fully-connected layer costs in onnxruntime, on this machine.

Pruning to a speed (`onnxprune prune --speedup`) needs to know what removing channels buys, and
that is not proportional to the arithmetic: onnxruntime's kernels work on blocks of channels, so
a layer left 77 channels wide can run slower than one 80 wide. A `LayerShape` (the layer's kind,
input and output channels, input spatial size, kernel, stride, padding, dilation, groups and the
batch) is timed once as a one-node model in onnxruntime at the thread count asked for, and kept in
a table in the user's cache folder (`onnxprune.files.cache_root`/latency). The table's file is
named after the machine (CPU model, architecture), the onnxruntime version, the provider and the
thread count: on another machine, or after an onnxruntime upgrade, a new table is built.
"""

from __future__ import annotations

import hashlib
import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.files import cache_root, save_atomic
from onnxprune.graph.model import Model, PrunableLayer
from onnxprune.graph.proto import attribute, inferred_shapes
from onnxprune.workbench.timing import available_cores, timing_session

TABLE_VERSION = 1
# a layer is timed for at least this long (after a warm-up), in calls of which the median counts
LAYER_SECONDS = 0.03
MIN_CALLS = 5


@dataclass(frozen=True)
class LayerShape:
    """Everything a layer's latency depends on, and nothing else (the table's key)."""

    op: str  # "Conv", "Gemm" or "MatMul"
    cin: int
    cout: int
    batch: int
    spatial: tuple[int, ...] = ()  # the input's spatial size (Conv)
    kernel: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    groups: int = 1

    def key(self) -> str:
        """A stable text form (JSON keys are strings)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    def with_widths(self, cin: int, cout: int) -> LayerShape:
        """The same layer with `cin` inputs and `cout` outputs (a depthwise layer keeps one input per group)."""
        depthwise = self.groups > 1 and self.groups == self.cin == self.cout
        groups = cout if depthwise else self.groups
        return LayerShape(self.op, cout if depthwise else cin, cout, self.batch, self.spatial, self.kernel,
                          self.strides, self.pads, self.dilations, groups)  # fmt: skip


def layer_shapes(model: Model, batch: int) -> dict[str, LayerShape]:
    """Each prunable layer's `LayerShape` at `batch`; layers whose input shape is unknown are left out."""
    shapes = inferred_shapes(model.proto)
    graph_inputs = {value.name: value for value in model.proto.graph.input}
    nodes = {node.output[0]: node for node in model.proto.graph.node if node.output}
    result = {}
    for layer in model.layers:
        node = nodes.get(layer.output)
        if node is None:
            continue
        source = shapes.get(node.input[0])
        if source is None and node.input[0] in graph_inputs:
            source = tuple(d.dim_value for d in graph_inputs[node.input[0]].type.tensor_type.shape.dim)
        shape = _layer_shape(layer, node, source, batch)
        if shape is not None:
            result[layer.name] = shape
    return result


def _layer_shape(layer: PrunableLayer, node: onnx.NodeProto, source: tuple | None, batch: int) -> LayerShape | None:
    cout, cin = layer.shape[layer.out_axis], layer.shape[layer.in_axis]
    if layer.op_type != "Conv":
        return LayerShape(layer.op_type, cin, cout, batch)
    if not source or len(source) < 3 or any(d <= 0 for d in source[2:]):
        return None
    rank = len(layer.shape) - 2
    groups = int(attribute(node, "group", 1))
    auto_pad = attribute(node, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    # SAME padding is marked -1: the single-layer model keeps the auto_pad; VALID and NOTSET give pads
    pads = [-1] * (2 * rank) if auto_pad.startswith("SAME") else attribute(node, "pads", [0] * (2 * rank))
    return LayerShape(
        "Conv", cin * groups, cout, batch, tuple(int(d) for d in source[2:]), tuple(layer.shape[2:]),
        tuple(attribute(node, "strides", [1] * rank)), tuple(int(p) for p in pads),
        tuple(attribute(node, "dilations", [1] * rank)), groups,
    )  # fmt: skip


def single_layer_model(shape: LayerShape) -> onnx.ModelProto:
    """A one-node model computing a layer of `shape` on random weights (latency does not depend on them)."""
    rng = np.random.default_rng(0)
    if shape.op == "Conv":
        weight = rng.standard_normal((shape.cout, shape.cin // shape.groups, *shape.kernel)).astype(np.float32)
        attributes = {"group": shape.groups, "strides": list(shape.strides), "dilations": list(shape.dilations)}
        if shape.pads and shape.pads[0] < 0:
            attributes["auto_pad"] = "SAME_UPPER"
        else:
            attributes["pads"] = list(shape.pads)
        node = helper.make_node("Conv", ["x", "w", "b"], ["y"], **attributes)
        x_shape = [shape.batch, shape.cin, *shape.spatial]
    elif shape.op == "Gemm":
        weight = rng.standard_normal((shape.cout, shape.cin)).astype(np.float32)
        node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
        x_shape = [shape.batch, shape.cin]
    else:
        weight = rng.standard_normal((shape.cin, shape.cout)).astype(np.float32)
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
        x_shape = [shape.batch, shape.cin]
    initializers = [numpy_helper.from_array(weight, "w")]
    if shape.op != "MatMul":
        initializers.append(numpy_helper.from_array(np.zeros(shape.cout, np.float32), "b"))
    graph = helper.make_graph(
        [node], "layer", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], initializers,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def machine() -> dict:
    """What a latency table is valid for: this CPU, this onnxruntime, provider and thread count go with it."""
    import onnxruntime

    return {"cpu": _cpu_model(), "arch": platform.machine(), "onnxruntime": onnxruntime.__version__,
            "version": TABLE_VERSION}  # fmt: skip


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class LatencyTable:
    """Milliseconds per `LayerShape` on this machine, measured on first use and kept in the cache folder."""

    def __init__(self, threads: int | None = None, provider: str = "CPUExecutionProvider") -> None:
        self.threads = threads or available_cores()
        self.provider = provider
        self.identity = {**machine(), "threads": self.threads, "provider": provider}
        digest = hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()[:16]
        self.path = cache_root() / "latency" / f"{digest}.json"
        self.entries: dict[str, float] = {}
        self.measured = 0  # layers timed in this run (the rest came from the table)
        if self.path.is_file():
            try:
                stored = json.loads(self.path.read_text())
                if stored.get("identity") == self.identity:
                    self.entries = {key: float(value) for key, value in stored.get("entries", {}).items()}
            except (OSError, ValueError):  # a damaged table is measured again, not trusted
                self.entries = {}

    def milliseconds(self, shape: LayerShape) -> float:
        """The layer's median latency, from the table or measured now."""
        key = shape.key()
        if key not in self.entries:
            self.entries[key] = self._measure(shape)
            self.measured += 1
        return self.entries[key]

    def save(self) -> Path:
        """Write the table (atomically: two runs at once never leave half a file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"identity": self.identity, "entries": self.entries}, indent=0, sort_keys=True)
        save_atomic(lambda temp: Path(temp).write_text(text), self.path)
        return self.path

    def _measure(self, shape: LayerShape) -> float:
        session = timing_session(single_layer_model(shape).SerializeToString(), self.threads, self.provider)
        dims = [shape.batch, shape.cin, *shape.spatial] if shape.op == "Conv" else [shape.batch, shape.cin]
        feed = {"x": np.random.default_rng(0).random(dims, dtype=np.float32)}
        for _ in range(2):
            session.run(None, feed)
        times: list[float] = []
        started = time.perf_counter()
        while len(times) < MIN_CALLS or time.perf_counter() - started < LAYER_SECONDS:
            before = time.perf_counter()
            session.run(None, feed)
            times.append(time.perf_counter() - before)
        return statistics.median(times) * 1000
