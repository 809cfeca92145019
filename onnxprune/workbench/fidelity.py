"""Is the torch model onnx2torch built the model onnxruntime runs? Checked once at load, localised when not.

Everything torch does for onnxprune (scores from gradients, fine-tuning, reconstruction, the
reference every written file is verified against) is only as right as the conversion. So
`check_conversion` runs the converted module and onnxruntime on the same seeded batch and
compares their outputs with the tolerance of `onnxprune.graph.verify`. When they differ, each
engine runs the batch again (a graph whose outputs change from one run to the next is
nondeterministic, not wrongly converted), and `first_departure` compares every intermediate value
in topological order (onnxruntime returns any value as an extra graph output of a copy; each
onnx2torch module records the ONNX node outputs it computes) to name the first node whose torch
value leaves onnxruntime's: its op, the revision of the op the file's opset selects, its shapes and
the difference. The same localisation names the layer whose rewrite changed a written model
(`onnxprune.pruning.oneshot.save`), and `onnxprune inspect --check` prints the whole report.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import torch

from onnxprune.errors import ConversionError
from onnxprune.graph.verify import ATOL, RTOL, random_batch, torch_outputs

if TYPE_CHECKING:
    from onnxprune.graph.model import Model

# what still works when the conversion is wrong, and what does not (every message says both)
STILL_WORKS = (
    "evaluate, bench and quantize run in onnxruntime; magnitude, LAMP and filter-norm pruning without data need "
    "only the weights and are verified against the input model in onnxruntime"
)
NEEDS_TORCH = "data-driven methods, SynFlow, --reconstruct, fine-tuning and --engine torch need the torch model"


@dataclass(frozen=True)
class NodeDifference:
    """One node's value in the two engines: the first that differs, or any in `compare_nodes`'s list.

    Attributes:
        node: its name (or `<op>_<index>` for an unnamed node).
        op: its op type (with the domain when not the default one).
        revision: the version of the op's definition the file's opset selects (`since_version`).
        value: the output compared.
        input_shapes: the shapes of its inputs, as onnxruntime computed them.
        shape: the output's shape.
        max_abs_diff: the largest difference on that output.
        atol: the absolute tolerance it was held to.
        agrees: within it (`compare_nodes` lists the nodes that agree too).
    """

    node: str
    op: str
    revision: int | None
    value: str
    input_shapes: tuple[str, ...]
    shape: str
    max_abs_diff: float
    atol: float
    agrees: bool = False

    def describe(self) -> str:
        """`node 'x' (Relu, revision 14; inputs 2x8x16x16 -> 2x8x16x16) differs by up to 0.5`."""
        revision = f", revision {self.revision}" if self.revision else ""
        inputs = ", ".join(self.input_shapes) or "-"
        return (
            f"node '{self.node}' ({self.op}{revision}; inputs {inputs} -> {self.shape}) differs by up to "
            f"{self.max_abs_diff:.3g} (tolerance {self.atol:.2g})"
        )


@dataclass(frozen=True)
class ConversionCheck:
    """The outcome of `check_conversion`.

    Attributes:
        exact: torch and onnxruntime agree within the verification tolerance.
        max_abs_diff: the largest output difference.
        first: where they part, when they do (None when exact, or when no intermediate value
            differs: the difference is then in how outputs are gathered).
        nondeterministic: the engine whose outputs changed between two runs of the same batch
            (None when both repeat themselves): differences are then not the conversion's fault.
        compared: the intermediate values compared while localising.
        nodes: the graph's nodes.
        unchecked: why nothing was compared (onnxruntime cannot run the input model), else None.
    """

    exact: bool
    max_abs_diff: float
    first: NodeDifference | None = None
    nondeterministic: str | None = None
    compared: int = 0
    nodes: int = 0
    unchecked: str | None = None

    @property
    def usable(self) -> bool:
        """Whether torch may stand in for onnxruntime: exact, differing only by nondeterminism, or not checkable."""
        return self.exact or self.nondeterministic is not None or self.unchecked is not None

    def summary(self) -> str:
        """One line: exact, nondeterministic, not checked, or where the conversion departs."""
        if self.unchecked:
            return f"conversion not checked: onnxruntime cannot run the input model ({self.unchecked})"
        if self.exact:
            return f"conversion exact: torch equals onnxruntime within tolerance (max |diff| {self.max_abs_diff:.2e})"
        if self.nondeterministic:
            return (
                f"outputs differ by up to {self.max_abs_diff:.3g}, but {self.nondeterministic} gives different "
                "outputs for the same input from one run to the next: the graph is nondeterministic"
            )
        where = self.first.describe() if self.first else "no single node differs (the outputs are gathered differently)"
        return f"conversion differs: outputs by up to {self.max_abs_diff:.3g}; first {where}"


class ConversionMismatch(ConversionError):
    """The converted torch model computes something else than onnxruntime does on the input graph.

    `torch_model` and `check` travel with the error: a caller that needs only the weights (selection
    by magnitude) may go on with them, verifying against onnxruntime instead of torch.
    """

    def __init__(self, message: str, torch_model: object, check: ConversionCheck) -> None:
        super().__init__(message)
        self.torch_model = torch_model
        self.check = check


def mismatch_message(check: ConversionCheck, purpose: str | None = None) -> str:
    """The one line for a conversion that differs: where, what still works, what to do."""
    where = check.first.describe() if check.first else f"the outputs differ by up to {check.max_abs_diff:.3g}"
    refused = f"{purpose} needs the torch model, which is wrong here" if purpose else NEEDS_TORCH
    op = f" of {check.first.op}" if check.first else ""
    return (
        f"the conversion to torch (onnx2torch) differs from onnxruntime: {where}; {refused}. "
        f"What still works: {STILL_WORKS}. `onnxprune inspect --check MODEL` shows the report to file with "
        f"onnx2torch (its converter{op})"
    )


def check_conversion(model: Model, module: torch.nn.Module, localise: bool = True) -> ConversionCheck:
    """Run the converted `module` and onnxruntime on one seeded batch and compare (see the module docstring)."""
    inputs = random_batch(model.input, 2, seed=0)
    try:
        expected = _onnxruntime_outputs(model.proto, inputs, model.path)
    except Exception as exc:  # onnxruntime cannot run the input: nothing to compare with (the written file is checked)
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        return ConversionCheck(False, float("nan"), nodes=len(model.proto.graph.node), unchecked=reason)
    actual = _torch_outputs(module, inputs)
    worst, agree = _compare(expected, actual)
    nodes = len(model.proto.graph.node)
    if agree:
        return ConversionCheck(True, worst, nodes=nodes)
    varies = _nondeterministic(model.proto, module, inputs, expected, actual, model.path)
    if varies:
        return ConversionCheck(False, worst, nondeterministic=varies, nodes=nodes)
    first, compared = first_departure(model.proto, module, inputs) if localise else (None, 0)
    return ConversionCheck(False, worst, first=first, compared=compared, nodes=nodes)


def first_departure(
    proto: onnx.ModelProto, module: torch.nn.Module, inputs: np.ndarray
) -> tuple[NodeDifference | None, int]:
    """The first node of `proto` (in topological order) whose onnxruntime value leaves torch's; and the count compared.

    `module` is a torch model whose onnx2torch modules name the ONNX outputs they compute (the
    converted model, or the pruned one a written file must reproduce). Values compared must have
    the same number of elements; those only one engine computes (folded, fused or added by the
    conversion copy) are skipped.
    """
    compared = compare_nodes(proto, module, inputs, stop_at_first=True)
    first = next((node for node in compared if not node.agrees), None)
    return first, len(compared)


def compare_nodes(
    proto: onnx.ModelProto, module: torch.nn.Module, inputs: np.ndarray, stop_at_first: bool = False
) -> list[NodeDifference]:
    """Every node value both engines compute, in topological order, with its difference (`first_departure`)."""
    with _recorded(module) as torch_values:
        _torch_outputs(module, inputs)
    produced = [output for node in proto.graph.node for output in node.output if output]
    ort_values = _onnxruntime_values(proto, inputs, [name for name in produced if name in torch_values])
    compared = []
    for index, node in enumerate(proto.graph.node):
        for output in node.output:
            want, got = ort_values.get(output), torch_values.get(output)
            if want is None or got is None or np.size(want) != np.size(got) or not np.size(want):
                continue
            worst, agree = _compare([want], [got])
            compared.append(_difference(proto, index, node, output, ort_values, want, worst, agree))
            if stop_at_first and not agree:
                return compared
    return compared


def _difference(
    proto: onnx.ModelProto, index: int, node: onnx.NodeProto, output: str, values: dict, want: np.ndarray,
    worst: float, agrees: bool,
) -> NodeDifference:  # fmt: skip
    initializers = {tensor.name: tuple(tensor.dims) for tensor in proto.graph.initializer}
    shapes = []
    for name in node.input:
        if name in values:
            shapes.append(_shape(np.shape(values[name])))
        elif name in initializers:
            shapes.append(_shape(initializers[name]))
        elif name:
            shapes.append("input")
    op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
    return NodeDifference(
        node=node.name or f"{node.op_type}_{index}", op=op, revision=_revision(proto, node), value=output,
        input_shapes=tuple(shapes), shape=_shape(np.shape(want)), max_abs_diff=worst, atol=_atol(want), agrees=agrees,
    )  # fmt: skip


def _revision(proto: onnx.ModelProto, node: onnx.NodeProto) -> int | None:
    """The since_version of the op's definition that the file's opset for its domain selects."""
    versions = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in proto.opset_import}
    domain = "" if node.domain == "ai.onnx" else node.domain
    version = versions.get(domain)
    if version is None:
        return None
    try:
        return onnx.defs.get_schema(node.op_type, version, domain).since_version
    except Exception:  # an op of a custom domain: no schema to read
        return None


def _shape(dims) -> str:
    return "x".join(str(int(d)) for d in dims) or "scalar"


def _atol(want: np.ndarray) -> float:
    return ATOL * max(1.0, float(np.max(np.abs(want)))) if np.size(want) else ATOL


def _compare(expected: list[np.ndarray], actual: list[np.ndarray]) -> tuple[float, bool]:
    """(largest difference, whether every pair agrees within `verify`'s tolerance)."""
    worst, agree = 0.0, len(expected) == len(actual)
    for want, got in zip(expected, actual, strict=False):
        want = np.asarray(want, dtype=np.float64)
        got = np.asarray(got, dtype=np.float64)
        if want.size != got.size:
            return float("inf"), False
        got = got.reshape(want.shape)
        finite = np.isfinite(want) & np.isfinite(got)
        if not np.array_equal(np.isfinite(want), np.isfinite(got)) or not np.array_equal(want[~finite], got[~finite]):
            return float("inf"), False  # a NaN or an infinity on one side only
        difference = float(np.max(np.abs(want[finite] - got[finite]))) if finite.any() else 0.0
        worst = max(worst, difference)
        agree = agree and bool(np.allclose(got[finite], want[finite], rtol=RTOL, atol=_atol(want[finite])))
    return worst, agree


def _nondeterministic(
    proto: onnx.ModelProto, module: torch.nn.Module, inputs: np.ndarray, expected: list, actual: list, path=None
) -> str | None:
    """Which engine, if either, gives other outputs for the same batch a second time."""
    if not _compare(expected, _onnxruntime_outputs(proto, inputs, path))[1]:
        return "onnxruntime"
    if not _compare(actual, _torch_outputs(module, inputs))[1]:
        return "torch"
    return None


def _torch_outputs(module: torch.nn.Module, inputs: np.ndarray) -> list[np.ndarray]:
    try:
        return torch_outputs(module.eval(), inputs)
    except Exception as exc:  # the converted module cannot run the graph's own input shape
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(
            f"the torch model onnx2torch built fails on an input of the model's shape: {message}; {STILL_WORKS}"
        ) from None


def _onnxruntime_outputs(proto: onnx.ModelProto, inputs: np.ndarray, path=None) -> list[np.ndarray]:
    ort_session = onnxruntime_session(proto, path)
    return ort_session.run(None, {ort_session.get_inputs()[0].name: inputs})


def onnxruntime_session(proto: onnx.ModelProto, path=None):
    """An onnxruntime session of `proto`: from `path` (the file `proto` was read from) when given, else its bytes.

    A proto over protobuf's 2 GB limit cannot be serialised: it is written to a temporary folder
    with external data and loaded from there.
    """
    import tempfile

    from google.protobuf.message import EncodeError

    from onnxprune.graph.proto import session

    if path is not None:
        return session(Path(path))
    try:
        return session(proto.SerializeToString())
    except (EncodeError, ValueError):
        with tempfile.TemporaryDirectory(prefix="onnxprune-check-") as folder:
            copy = onnx.ModelProto()
            copy.CopyFrom(proto)
            onnx.save_model(copy, f"{folder}/model.onnx", save_as_external_data=True, location="model.onnx.data")
            del copy
            return session(Path(folder) / "model.onnx")


def _onnxruntime_values(proto: onnx.ModelProto, inputs: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """Every value in `names` as onnxruntime computes it: a copy of `proto` lists them as outputs."""
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    present = {value.name for value in copy.graph.output}
    for name in names:
        if name not in present:
            copy.graph.output.append(onnx.ValueInfoProto(name=name))
    ort_session = onnxruntime_session(copy)
    outputs = [output.name for output in ort_session.get_outputs()]
    return dict(zip(outputs, ort_session.run(None, {ort_session.get_inputs()[0].name: inputs}), strict=True))


@contextmanager
def _recorded(module: torch.nn.Module) -> Iterator[dict[str, np.ndarray]]:
    """While inside, every onnx2torch module's outputs, by the ONNX value names they compute."""
    values: dict[str, np.ndarray] = {}
    handles = []

    def record(names: tuple[str, ...]):
        def hook(_module: torch.nn.Module, _args: tuple, output: object) -> None:
            outputs = output if isinstance(output, (tuple, list)) else (output,)
            for name, tensor in zip(names, outputs, strict=False):
                if isinstance(tensor, torch.Tensor):
                    values[name] = tensor.detach().cpu().numpy()

        return hook

    for submodule in module.modules():
        mapping = getattr(submodule, "onnx_mapping", None)
        names = tuple(getattr(mapping, "outputs", ()) or ())
        if names:
            handles.append(submodule.register_forward_hook(record(names)))
    try:
        yield values
    finally:
        for handle in handles:
            handle.remove()
