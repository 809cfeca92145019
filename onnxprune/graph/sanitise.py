"""Make a conversion copy of an ONNX graph convertible by onnx2torch, without changing what it computes.

onnx2torch 1.5.15 picks a converter by the op's schema revision at the model's opset, and knows
revisions up to about opset 17. Users bring graphs from torch's default (dynamo) exporter at
opset 18-20, TorchScript exports whose identical tensors are stored once and fed through
`Identity` nodes, and Keras/CNTK/Caffe2 exports with `auto_pad="SAME_UPPER"`. This module rewrites
the *conversion copy* only (the written file keeps the original graph), in one place:

- newer revisions whose only change is wider element types get the older converter;
- newer revisions that moved an attribute to a constant input (Reduce* axes at 18, Split
  num_outputs at 18, Pad axes at 18) are lowered back: the constant becomes the attribute
  the known converter reads;
- new attributes at their default value (AveragePool dilations = 1 at 19; Resize antialias = 0
  and keep_aspect_ratio_policy = stretch at 18) are dropped;
- `Gelu` (opset 20, no converter) is written out as the `Erf` / `Tanh` formula it defines;
- `Identity` of an initializer or a Constant is resolved: its consumers read the source;
- `auto_pad` SAME_UPPER / SAME_LOWER becomes explicit pads from inferred shapes;
- asymmetric MaxPool / AveragePool pads become an explicit `Pad` before the pool;
- a LayerNormalization's recorded input shape gets the normalised dims of its scale;
- an `If` whose condition is constant (folded from shapes) becomes the nodes of its branch.

Where none of this applies, `check_convertible` names the op, its revision and the node.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import defs, helper, numpy_helper

from onnxprune.errors import ConversionError, at_node
from onnxprune.graph.proto import (
    attribute,
    constant_map,
    inferred_shapes,
    remove_attribute,
    set_attribute,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

# tensor name -> static shape (0 for an unknown dimension); tensor name -> constant value
ShapeMap = dict[str, tuple[int, ...]]
ValueMap = dict[str, np.ndarray]

# revision -> the older revision whose converter is exact for it (only element types changed)
TYPE_ONLY_REVISIONS = {
    "Reshape": ((19, 14), (21, 14), (23, 14), (24, 14)),
    "Constant": ((19, 13), (21, 13), (23, 13), (24, 13)),
    "Identity": ((19, 16), (21, 16), (23, 16), (24, 16)),
    "Shape": ((19, 15), (21, 15), (23, 15), (24, 15)),
    "Cast": ((19, 13), (21, 13), (23, 13), (24, 13)),
    "Flatten": ((21, 13), (23, 13), (24, 13)),
    "Transpose": ((21, 13), (23, 13), (24, 13)),
    "Squeeze": ((23, 21), (24, 21)),
    "Unsqueeze": ((21, 13), (23, 13), (24, 13)),
    "Conv": ((22, 11),),
    "MaxPool": ((22, 12),),
    "Dropout": ((22, 13),),
    "GlobalAveragePool": ((22, 1),),
    "LRN": ((22, 13),),
    "InstanceNormalization": ((22, 6),),
    "Pad": ((23, 13), (24, 13)),
    "ConstantOfShape": ((20, 9), (21, 9), (23, 9), (24, 9)),
    "Equal": ((19, 13),),
}
REDUCE_OPS = (
    "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
    "ReduceLogSumExp", "ReduceSumSquare",
)  # fmt: skip
# revision -> the older revision the lowering below turns it into
LOWERED_REVISIONS = {
    **{op: ((18, 13), (20, 13)) for op in REDUCE_OPS},
    "Split": ((18, 13),),
    "Pad": ((18, 13), (19, 13), (21, 13)),
    "AveragePool": ((19, 11), (22, 11)),
    "ScatterND": ((18, 16),),
    "Resize": ((18, 13), (19, 13)),
}


def register_known_revisions() -> None:
    """Register onnx2torch's converters for the revisions that are exact or lowered here."""
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription, add_converter

    for table in (TYPE_ONLY_REVISIONS, LOWERED_REVISIONS):
        for operation, revisions in table.items():
            for new_version, known_version in revisions:
                known = _CONVERTER_REGISTRY.get(OperationDescription("", operation, known_version))
                if known is not None and OperationDescription("", operation, new_version) not in _CONVERTER_REGISTRY:
                    add_converter(operation_type=operation, version=new_version)(known)


def revision(op_type: str, opset: int, domain: str = "") -> int:
    """The schema revision of `op_type` in force at `opset` (the opset itself when unknown)."""
    try:
        return defs.get_schema(op_type, max_inclusive_version=opset, domain=domain).since_version
    except Exception:  # an op onnx does not know (custom domains)
        return opset


def sanitise(copy: onnx.ModelProto) -> None:
    """Rewrite the conversion copy in place so that onnx2torch converts it (see the module docstring)."""
    opset = next((o.version for o in copy.opset_import if o.domain in ("", "ai.onnx")), 0)
    _resolve_identities(copy)
    _inline_decided_branches(copy)
    constants = constant_map(copy)
    shapes = _shapes(copy)
    nodes = []
    for index, node in enumerate(copy.graph.node):
        if node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        with at_node(node, index):
            nodes.extend(_sanitise_node(copy, node, index, opset, constants, shapes))
    del copy.graph.node[:]
    copy.graph.node.extend(nodes)
    _unique_module_names(copy)


def _inline_decided_branches(copy: onnx.ModelProto) -> None:
    """An `If` whose condition is a constant (a shape test folded by `graph.measured`) -> its branch's nodes.

    TorchScript keeps Python's `if H % window:` (Hiera, SAM2) as an If node, which onnx2torch does
    not convert; on the image size the model was exported for, the condition is known.
    """
    while True:
        values = {t.name: t for t in copy.graph.initializer}
        position = next(
            (i for i, n in enumerate(copy.graph.node) if n.op_type == "If" and n.input[0] in values), None
        )  # fmt: skip
        if position is None:
            return
        node = copy.graph.node[position]
        taken = bool(numpy_helper.to_array(values[node.input[0]]).reshape(-1)[0])
        branch = attribute(node, "then_branch" if taken else "else_branch")
        copy.graph.initializer.extend(branch.initializer)
        nodes = list(branch.node) + [
            helper.make_node("Identity", [inner.name], [outer], name=f"{node.name or outer}_branch_{k}")
            for k, (inner, outer) in enumerate(zip(branch.output, node.output, strict=True))
        ]
        del copy.graph.node[position]
        for offset, inner in enumerate(nodes):
            copy.graph.node.insert(position + offset, inner)


def _unique_module_names(copy: onnx.ModelProto) -> None:
    """Make node names unique as onnx2torch spells them, renaming only where two would collide.

    onnx2torch names a module after its node ('.' -> '/', the leading '/' dropped, the op type
    for an unnamed node, '_1', '_2' for repeats): TorchScript's top-level '/Add_1' and a second
    unnamed Add both become 'Add_1', and one module silently replaces the other. A name that is
    an attribute of torch's Module ('double', 'train', 'float') cannot be a module's name at all.
    """
    import torch

    used: set[str] = set(dir(torch.nn.Module))
    for index, node in enumerate(copy.graph.node):
        spelled = (f"{node.domain}/" + (node.name.replace(".", "/") or node.op_type)).lstrip("/")
        if spelled in used or spelled.split("/")[0] in used or not node.name:
            node.name = f"{node.name or node.op_type}__{index}"
            spelled = (f"{node.domain}/" + node.name.replace(".", "/")).lstrip("/")
        used.add(spelled)


def _sanitise_node(
    copy: onnx.ModelProto, node: onnx.NodeProto, index: int, opset: int, constants: ValueMap, shapes: ShapeMap
) -> list[onnx.NodeProto]:
    """The node rewritten for onnx2torch, with any nodes it needs in front of it."""
    where = f"node '{node.name or f'#{index}'}' ({node.op_type})"
    version = revision(node.op_type, opset)
    op = node.op_type
    if op in REDUCE_OPS and version >= 18:
        return _lower_reduce(node, constants, where)
    if op == "Split" and version >= 18:
        _lower_split(copy, node, shapes)
    elif op == "Pad" and version >= 18:
        _lower_pad(copy, node, constants, shapes, where)
    elif op == "AveragePool" and version >= 19:
        if any(d != 1 for d in attribute(node, "dilations", [])):
            raise ConversionError(f"{where}: dilated average pooling has no torch equivalent onnxprune can convert")
        remove_attribute(node, "dilations")
    elif op == "ScatterND" and version >= 18:
        reduction = attribute(node, "reduction")
        if reduction in (b"max", b"min"):
            raise ConversionError(f"{where}: ScatterND with reduction={reduction.decode()} has no converter")
    elif op == "Resize" and version >= 18:
        _lower_resize(node, where)
    elif op == "Gelu":
        return _expand_gelu(copy, node)
    if op == "LayerNormalization":
        _known_normalised_shape(copy, node, shapes)
    if op in ("Conv", "MaxPool", "AveragePool", "LpPool"):
        _explicit_pads(node, shapes, where)
        if op in ("MaxPool", "AveragePool"):
            return _pool_pads_in_front(copy, node)
    return [node]


def _set_ints(node: onnx.NodeProto, name: str, values: Iterable[int]) -> None:
    set_attribute(node, name, [int(v) for v in values])


def _resolve_identities(copy: onnx.ModelProto) -> None:
    """Feed the consumers of `Identity(initializer)` from the initializer itself.

    The TorchScript exporter stores identical tensors once (zero biases of equal length, say) and
    gives every other user an Identity of it; onnx2torch reads weights only from initializers.
    """
    sources = {t.name for t in copy.graph.initializer}
    sources |= {n.output[0] for n in copy.graph.node if n.op_type == "Constant"}
    outputs = {o.name for o in copy.graph.output}
    alias = {}
    for node in copy.graph.node:
        if node.op_type == "Identity" and node.input[0] in sources and node.output[0] not in outputs:
            alias[node.output[0]] = node.input[0]
    if not alias:
        return
    kept = [n for n in copy.graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for node in kept:
        for position, name in enumerate(node.input):
            if name in alias:
                node.input[position] = alias[name]
    del copy.graph.node[:]
    copy.graph.node.extend(kept)


def _shapes(copy: onnx.ModelProto) -> ShapeMap:
    """Inferred shapes (0 for unknown dimensions), and every initializer's; only those where inference fails."""
    shapes = inferred_shapes(copy)
    shapes.update({tensor.name: tuple(tensor.dims) for tensor in copy.graph.initializer})
    return shapes


def _constant_input(
    node: onnx.NodeProto, position: int, constants: ValueMap, where: str, what: str
) -> np.ndarray | None:
    if len(node.input) <= position or not node.input[position]:
        return None
    value = constants.get(node.input[position])
    if value is None:
        raise ConversionError(
            f"{where}: its {what} are computed at run time; onnxprune needs them constant to convert the model"
        )
    return value


def _lower_reduce(node: onnx.NodeProto, constants: ValueMap, where: str) -> list[onnx.NodeProto]:
    """Reduce* revision 18: axes input -> attribute (revision 13)."""
    axes = _constant_input(node, 1, constants, where, "axes")
    noop = attribute(node, "noop_with_empty_axes", 0)
    remove_attribute(node, "noop_with_empty_axes")
    del node.input[1:]
    if axes is None or axes.size == 0:
        if noop:
            identity = helper.make_node("Identity", [node.input[0]], list(node.output), name=node.name)
            return [identity]
        return [node]  # no axes: every axis, as revision 13 reads it
    _set_ints(node, "axes", axes.reshape(-1))
    return [node]


def _lower_split(copy: onnx.ModelProto, node: onnx.NodeProto, shapes: ShapeMap) -> None:
    """Split revision 18: `num_outputs` -> explicit sizes (ceil-sized chunks, the last one smaller)."""
    count = attribute(node, "num_outputs")
    if count is None:
        return
    remove_attribute(node, "num_outputs")
    axis = attribute(node, "axis", 0)
    shape = shapes.get(node.input[0])
    if not shape or not shape[axis]:
        return  # equal chunks, as onnx2torch splits without sizes
    size = shape[axis]
    chunk = math.ceil(size / count)
    sizes = [min(chunk, size - chunk * i) for i in range(count)]
    name = f"{node.output[0]}_split_sizes"
    copy.graph.initializer.append(numpy_helper.from_array(np.array(sizes, np.int64), name))
    while len(node.input) < 2:
        node.input.append("")
    node.input[1] = name


def _lower_pad(copy: onnx.ModelProto, node: onnx.NodeProto, constants: ValueMap, shapes: ShapeMap, where: str) -> None:
    """Pad revision 18+: an `axes` input -> pads over every axis (revision 13)."""
    if attribute(node, "mode") == b"wrap":
        raise ConversionError(f"{where}: wrap padding has no torch equivalent onnxprune can convert")
    axes = _constant_input(node, 3, constants, where, "axes")
    if axes is None:
        return
    pads = _constant_input(node, 1, constants, where, "pads")
    rank = len(shapes.get(node.input[0], ()))
    if not rank:
        raise ConversionError(f"{where}: the rank of its input is unknown, so its axes cannot be expanded")
    full = np.zeros(2 * rank, np.int64)
    for position, axis in enumerate(axes.reshape(-1)):
        axis = int(axis) % rank
        full[axis] = pads[position]
        full[axis + rank] = pads[position + len(axes)]
    name = f"{node.output[0]}_pads_all_axes"
    copy.graph.initializer.append(numpy_helper.from_array(full, name))
    node.input[1] = name
    del node.input[3:]


def _lower_resize(node: onnx.NodeProto, where: str) -> None:
    """Resize revisions 18-19 -> 13: the attributes they added, at their defaults, dropped."""
    defaults = {"antialias": 0, "keep_aspect_ratio_policy": b"stretch"}
    for name, default in defaults.items():
        value = attribute(node, name)
        if value is not None and value != default:
            raise ConversionError(f"{where}: Resize with {name}={value!r} has no converter")
        remove_attribute(node, name)
    mode = attribute(node, "coordinate_transformation_mode")
    if attribute(node, "axes") is not None or mode == b"half_pixel_symmetric":
        raise ConversionError(f"{where}: Resize over listed axes or with half_pixel_symmetric has no converter")


def _expand_gelu(copy: onnx.ModelProto, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """Gelu (opset 20) as the formula its schema defines, in ops onnx2torch converts."""
    source, output = node.input[0], node.output[0]
    approximate = attribute(node, "approximate")
    prefix = f"{output}_gelu"

    def constant(name: str, value: float) -> str:
        copy.graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), f"{prefix}_{name}"))
        return f"{prefix}_{name}"

    half, one = constant("half", 0.5), constant("one", 1.0)
    if approximate == b"tanh":
        # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        nodes = [
            helper.make_node("Mul", [source, source], [f"{prefix}_x2"]),
            helper.make_node("Mul", [f"{prefix}_x2", source], [f"{prefix}_x3"]),
            helper.make_node("Mul", [f"{prefix}_x3", constant("c", 0.044715)], [f"{prefix}_cx3"]),
            helper.make_node("Add", [source, f"{prefix}_cx3"], [f"{prefix}_inner"]),
            helper.make_node("Mul", [f"{prefix}_inner", constant("k", math.sqrt(2 / math.pi))], [f"{prefix}_arg"]),
            helper.make_node("Tanh", [f"{prefix}_arg"], [f"{prefix}_t"]),
        ]
    else:  # 0.5 x (1 + erf(x / sqrt(2)))
        nodes = [
            helper.make_node("Div", [source, constant("sqrt2", math.sqrt(2))], [f"{prefix}_arg"]),
            helper.make_node("Erf", [f"{prefix}_arg"], [f"{prefix}_t"]),
        ]
    nodes += [
        helper.make_node("Add", [f"{prefix}_t", one], [f"{prefix}_1pt"]),
        helper.make_node("Mul", [source, f"{prefix}_1pt"], [f"{prefix}_x1pt"]),
        helper.make_node("Mul", [f"{prefix}_x1pt", half], [output], name=node.name),
    ]
    return nodes


def _known_normalised_shape(copy: onnx.ModelProto, node: onnx.NodeProto, shapes: ShapeMap) -> None:
    """Record a LayerNormalization input's shape with the normalised dims its scale has.

    onnx2torch builds nn.LayerNorm from the input's inferred shape; a dimension inference leaves
    unknown (TorchScript's Swin) becomes 0 and the conversion fails. The scale's shape is the
    normalised shape by definition, so the copy records it (inference keeps recorded dims).
    """
    scale = next((t for t in copy.graph.initializer if len(node.input) > 1 and t.name == node.input[1]), None)
    shape = shapes.get(node.input[0])
    if scale is None or not shape or len(shape) < len(scale.dims):
        return
    known = [*shape[: len(shape) - len(scale.dims)], *scale.dims]
    dims = [size if size else None for size in known]
    existing = [value for value in copy.graph.value_info if value.name == node.input[0]]
    for value in existing:
        copy.graph.value_info.remove(value)
    copy.graph.value_info.append(helper.make_tensor_value_info(node.input[0], scale.data_type, dims))


def _explicit_pads(node: onnx.NodeProto, shapes: ShapeMap, where: str) -> None:
    """auto_pad SAME_UPPER / SAME_LOWER -> the explicit pads it means for the inferred input size."""
    auto_pad = attribute(node, "auto_pad")
    if auto_pad is None or auto_pad in (b"NOTSET", b""):
        return
    if auto_pad == b"VALID":
        remove_attribute(node, "auto_pad")
        return
    shape = shapes.get(node.input[0])
    kernel = attribute(node, "kernel_shape")
    if kernel is None and node.op_type == "Conv" and len(node.input) > 1 and shapes.get(node.input[1]):
        kernel = list(shapes[node.input[1]][2:])
    if not shape or kernel is None or any(d == 0 for d in shape[2:]):
        raise ConversionError(
            f"{where}: auto_pad={auto_pad.decode()} needs the input's spatial size, which shape inference "
            "could not find; export with explicit pads or a fixed input size"
        )
    spatial = shape[2:]
    strides = attribute(node, "strides", [1] * len(spatial))
    dilations = attribute(node, "dilations", [1] * len(spatial))
    begins, ends = [], []
    for size, k, stride, dilation in zip(spatial, kernel, strides, dilations, strict=True):
        total = max((math.ceil(size / stride) - 1) * stride + (k - 1) * dilation + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begin, end = (small, large) if auto_pad == b"SAME_UPPER" else (large, small)
        begins.append(begin)
        ends.append(end)
    remove_attribute(node, "auto_pad")
    _set_ints(node, "pads", begins + ends)


def _pool_pads_in_front(copy: onnx.ModelProto, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """Asymmetric pooling pads (torch pools pad symmetrically) -> a Pad node in front of the pool.

    MaxPool pads with -inf (a padded position never wins); AveragePool with zeros only where
    padded zeros are counted (count_include_pad=1): the other case has no exact rewrite.
    """
    pads = attribute(node, "pads")
    if pads is None:
        return [node]
    rank = len(pads) // 2
    if pads[:rank] == pads[rank:]:
        return [node]
    if node.op_type == "AveragePool":
        if not attribute(node, "count_include_pad", 0):
            raise ConversionError(
                f"node '{node.name}' (AveragePool): asymmetric pads that are not counted in the average have "
                "no torch equivalent; export with symmetric pads or count_include_pad=1"
            )
        value = 0.0
    else:
        value = -np.inf
    prefix = f"{node.output[0]}_pool_pad"
    full = [0, 0, *pads[:rank], 0, 0, *pads[rank:]]
    copy.graph.initializer.append(numpy_helper.from_array(np.array(full, np.int64), f"{prefix}_pads"))
    copy.graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), f"{prefix}_value"))
    pad = helper.make_node("Pad", [node.input[0], f"{prefix}_pads", f"{prefix}_value"], [f"{prefix}_out"])
    node.input[0] = f"{prefix}_out"
    _set_ints(node, "pads", [0] * (2 * rank))
    return [pad, node]


def check_convertible(copy: onnx.ModelProto) -> None:
    """Raise a one-line ConversionError naming the first node onnx2torch has no converter for."""
    from onnx2torch.node_converters import get_converter

    versions = {opset.domain or "": opset.version for opset in copy.opset_import}
    for index, node in enumerate(copy.graph.node):
        domain = node.domain if node.domain != "ai.onnx" else ""
        opset = versions.get(domain, 1)
        try:
            get_converter(domain=domain, operation_type=node.op_type, version=opset)
        except NotImplementedError:
            where = node.name or f"#{index}"
            qualified = f"{domain}::{node.op_type}" if domain else node.op_type
            raise ConversionError(
                f"node '{where}' uses op {qualified} revision {revision(node.op_type, opset, domain)} "
                f"(opset {opset}), which onnx2torch cannot convert; replace that layer before exporting, "
                "or export it as standard ONNX ops"
            ) from None
